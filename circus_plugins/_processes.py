"""The pids of each watcher's processes, kept from circusd's events: :class:`Processes`.

circusd publishes ``spawn``, ``reap`` and ``kill`` with the pid of the process, so a
plugin that needs the pids of watchers need not ask ``list`` of each at every look: it
asks once (a watcher it has not seen yet, or one marked stale), then follows the
events. A ``list`` asked while events about the watcher arrive may answer before or
after them: such an answer is not trusted, and the watcher is asked again at the next
look. What the events miss (the SUB socket reconnecting, circusd restarted) is caught
by the caller marking everything stale now and then (:data:`~circus_plugins.periodic.
SAFETY_REFRESH`).

Use it from one thread, the plugin's loop.
"""
import asyncio
from typing import (Any, Awaitable, Callable, Dict, FrozenSet, Iterable, List, Optional, Set,
                    Tuple)

from .events import MAX_PID, Event, whole

__all__ = ['Processes', 'pids_of']

#: Pids kept at most for one watcher; beyond, the watcher is asked again with ``list``
#: (events with made-up pids must not grow memory without bound).
MOST_PIDS = 100000

Ask = Callable[..., Awaitable[Dict[str, Any]]]


def pids_of(reply: Any) -> Optional[List[int]]:
    """The pids of a ``list`` reply; ``None`` when circusd did not tell them."""
    found = reply.get('pids') if isinstance(reply, dict) and reply.get(
        'status') == 'ok' else None
    if not isinstance(found, list):
        return None
    return [pid for pid in found if whole(pid, 1, MAX_PID) is not None]


class _Watcher:
    def __init__(self) -> None:
        self.pids: Optional[Set[int]] = None  # None: not known (yet)
        self.events = 0                       # events seen about it, a generation
        self.stale = True


class Processes:
    """Which processes each watcher runs, from one ``list`` and then its events."""

    def __init__(self) -> None:
        self._watchers: Dict[str, _Watcher] = {}
        self._ended: Set[Tuple[str, int]] = set()     # found ended at the last reading
        self._relisted: Set[Tuple[str, int]] = set()  # of those, the ones made stale

    def keep(self, names: Iterable[str]) -> None:
        """The watchers circusd has now (e.g. from ``status``): new ones are to be
        asked, those gone are forgotten."""
        names = set(names)
        for gone in set(self._watchers) - names:
            del self._watchers[gone]
        for name in names:
            self._watchers.setdefault(name, _Watcher())

    def see(self, event: Event) -> bool:
        """Follow one of circusd's events; whether it changed the pids of a watcher kept.
        ``spawn`` adds its pid, ``reap`` and ``kill`` take it away (``decr`` publishes
        only ``kill``); an event without a usable pid makes the watcher stale."""
        watcher = self._watchers.get(event.watcher)
        if watcher is None or event.action not in ('spawn', 'reap', 'kill'):
            return False
        watcher.events += 1
        pid = event.pid()
        if pid is None or watcher.pids is None:
            watcher.stale = True
            return False
        if event.action == 'spawn':
            if len(watcher.pids) >= MOST_PIDS:
                watcher.stale = True
                return False
            watcher.pids.add(pid)
        else:
            watcher.pids.discard(pid)
        return True

    def stale(self, name: Optional[str] = None) -> None:
        """Have watcher ``name`` (every watcher when ``None``) asked again."""
        for key, watcher in self._watchers.items():
            if name is None or key == name:
                watcher.stale = True

    def ended(self, found: Iterable[Tuple[str, int]]) -> None:
        """``(watcher, pid)`` of the processes that a reading (psutil's) found ended, at
        each reading. Those found at the previous one and still kept (no ``reap`` or
        ``kill`` came in between: missed while circusd restarted?) make their watcher
        stale, once for each process, not again while circusd goes on listing it."""
        suspects = {(name, pid) for name, pid in self._ended
                    if pid in (self.pids(name) or ())}
        for name, _ in suspects - self._relisted:
            self.stale(name)
        self._relisted = suspects
        self._ended = set(found)

    def pids(self, name: str) -> Optional[FrozenSet[int]]:
        """The pids of watcher ``name``; ``None`` when they are not known."""
        watcher = self._watchers.get(name)
        return None if watcher is None or watcher.pids is None else frozenset(watcher.pids)

    def count(self, name: str) -> Optional[int]:
        """How many processes watcher ``name`` runs; ``None`` when not known."""
        watcher = self._watchers.get(name)
        return None if watcher is None or watcher.pids is None else len(watcher.pids)

    async def refresh(self, ask: Ask,
                      names: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
        """Ask ``list`` of the stale watchers among ``names`` (all kept when ``None``),
        all at once; return ``{name: reply}`` of those asked. A watcher whose ``list``
        failed keeps the pids it had and stays stale."""
        chosen = [name for name in (self._watchers if names is None else names)
                  if name in self._watchers and self._watchers[name].stale]
        before = {name: self._watchers[name].events for name in chosen}
        for name in chosen:
            self._watchers[name].stale = False  # events from now on make it stale again
        replies = await asyncio.gather(*(ask('list', name=name) for name in chosen))
        for name, reply in zip(chosen, replies):
            watcher = self._watchers.get(name)
            if watcher is None:
                continue  # forgotten meanwhile
            found = pids_of(reply)
            if found is None or watcher.events != before[name]:
                # Events came while the question was out: the answer may be older or
                # newer than they are. Take it only if none is kept, and ask again.
                if found is not None and watcher.pids is None:
                    watcher.pids = set(found[:MOST_PIDS])
                watcher.stale = True
                continue
            watcher.pids = set(found[:MOST_PIDS])
        return dict(zip(chosen, replies))
