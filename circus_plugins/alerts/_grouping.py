"""Storm control for alerts: which messages are due, when. Pure logic, no I/O, no clock.

Feed a :class:`Grouper` what is worth an alert, ask it at the times it names what is due,
and send what it returns::

    grouper = Grouper(group_wait=10, group_interval=300)
    grouper.add(Item('web', 'crash', now, {'pid': 123, 'exit_code': 1}))
    grouper.resumed('web', now)          # circusd started it again (after a give-up)
    for message in grouper.due(now):     # a list of Message, oldest rules first
        send(message)
    wake = grouper.next_wakeup(now)      # one timer at this time (None: nothing to wait for)

Times are seconds on one monotonic clock (``time.monotonic()``), passed in, never read;
feed items and calls in time order. The rules, per watcher:

* An *episode* starts with the watcher's first item. Its first message is due
  ``group_wait`` seconds later, with every item of the watcher meanwhile; later items are
  folded into one message at most every ``group_interval`` seconds.
* A message lists at most ``max_events`` items and counts the rest (``left_out``); only
  that many items are kept per watcher, beyond them only counters.
* A watcher is *down* after an item whose kind is one of ``down_kinds`` (it is stopped:
  Flapping gave up, circusd stopped it) until :meth:`Grouper.resumed`. An alerted
  watcher with nothing new is repeated every ``repeat_interval`` seconds while unresolved.
* Once the watcher has run ``recovery_after`` seconds without a new item (and is not
  down), a recovery message says how long it was down and the counts of the episode; the
  watcher is then forgotten and its next item waits ``group_wait`` again.
* A watcher an operator stopped or restarted has an owner: :meth:`Grouper.ended` ends
  its episode once its pending items have gone out, with no repeat and no recovery; an
  item before then keeps the episode going. It does not end a down watcher's episode.
* A muted watcher sends nothing: its items are dropped, counted, and the count is told in
  its next message (``muted``). Muting ends its episode silently (no recovery notice).

Bound (proved in ``tests/test_grouping.py``): in any window of ``T`` seconds a watcher
gets at most ``1 + T // group_interval + 2 * R`` messages, ``R`` being the recoveries
among them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ['Item', 'Message', 'Grouper']


@dataclass(frozen=True)
class Item:
    """Something alert-worthy: ``kind`` is ``'crash'``, ``'flapping_giveup'``...,
    ``time`` in seconds (monotonic), ``facts`` what the senders show (pid, exit code...)."""
    watcher: str
    kind: str
    time: float
    facts: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """One message about one watcher, plain data for the senders to format.

    :ivar at: when it became due (s). :ivar items: the items listed, oldest first.
    :ivar left_out: items of this message not listed (beyond ``max_events``).
    :ivar counts: per kind, the items of this message (listed + left out).
    :ivar first, last: times of its first and last item (s); ``None`` without items.
    :ivar since: when the episode began (s). :ivar totals: per kind, the whole episode.
    :ivar repeat: a reminder of an unresolved problem, no new items.
    :ivar recovery: the watcher recovered; ``down_for`` seconds from ``since`` to when
        it ran again. :ivar muted: items dropped while muted, before this message.
    """
    watcher: str
    at: float
    items: Tuple[Item, ...] = ()
    left_out: int = 0
    counts: Dict[str, int] = field(default_factory=dict)
    first: Optional[float] = None
    last: Optional[float] = None
    since: float = 0.0
    totals: Dict[str, int] = field(default_factory=dict)
    repeat: bool = False
    recovery: bool = False
    down_for: Optional[float] = None
    muted: int = 0

    @property
    def kinds(self) -> Tuple[str, ...]:
        """The kinds this message is about, in the order they first came."""
        return tuple(self.counts or self.totals)


class _Episode:
    """A watcher's problem, from its first item to its recovery."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.items: List[Item] = []
        self.left_out = 0
        self.counts: Dict[str, int] = {}
        self.totals: Dict[str, int] = {}
        self.first = self.last = since
        self.sent: Optional[float] = None    # when the last message went out
        self.healthy: Optional[float] = None  # running without news since; None: down
        self.ending = False                   # ended(): forget once the news are out


class Grouper:
    """Groups a watcher's items into few messages (see the module's rules).

    :param group_wait: seconds from a watcher's first item to its first message.
    :param group_interval: least seconds between two messages with new items.
    :param repeat_interval: seconds between reminders of an unresolved problem, at least
        ``group_interval``. :param recovery_after: seconds of running without news that
        make a recovery. :param max_events: most items listed (and kept) per message.
    :param down_kinds: kinds after which the watcher is down until :meth:`resumed`.
    """

    def __init__(self, group_wait: float = 10, group_interval: float = 300,
                 repeat_interval: float = 4 * 3600, recovery_after: float = 60,
                 max_events: int = 50,
                 down_kinds: frozenset = frozenset({'flapping_giveup', 'stopped'})) -> None:
        if not (0 <= group_wait and 0 < group_interval <= repeat_interval
                and 0 <= recovery_after and max_events >= 1):
            raise ValueError('need group_wait >= 0, 0 < group_interval <= repeat_interval, '
                             'recovery_after >= 0 and max_events >= 1')
        self.group_wait, self.group_interval = group_wait, group_interval
        self.repeat_interval, self.recovery_after = repeat_interval, recovery_after
        self.max_events, self.down_kinds = max_events, down_kinds
        self._episodes: Dict[str, _Episode] = {}
        self._mutes: Dict[str, float] = {}   # watcher -> muted until (s), inf: for ever
        self._muted: Dict[str, int] = {}     # watcher -> items dropped, not yet told

    def add(self, item: Item) -> None:
        """Take an item: into the watcher's next message, or dropped if it is muted."""
        w = item.watcher
        if self.is_muted(w, item.time):
            self._muted[w] = self._muted.get(w, 0) + 1
            return
        ep = self._episodes.get(w)
        if ep is None:
            ep = self._episodes[w] = _Episode(item.time)
        if not ep.items and not ep.left_out:
            ep.first = item.time
        ep.last = item.time
        if len(ep.items) < self.max_events:
            ep.items.append(item)
        else:
            ep.left_out += 1
        ep.counts[item.kind] = ep.counts.get(item.kind, 0) + 1
        ep.totals[item.kind] = ep.totals.get(item.kind, 0) + 1
        ep.healthy = None if item.kind in self.down_kinds else item.time
        ep.ending = False

    def resumed(self, watcher: str, time: float) -> None:
        """The watcher runs again (circusd started it): a down watcher may recover."""
        ep = self._episodes.get(watcher)
        if ep is not None and ep.healthy is None:
            ep.healthy = time

    def ended(self, watcher: str, time: float) -> None:
        """An operator took the watcher over (stopped or restarted it): send what is
        pending, then forget its episode without a repeat or a recovery notice. A down
        watcher is left alone: the stop is that of whoever put it down."""
        ep = self._episodes.get(watcher)
        if ep is not None and ep.healthy is not None:
            ep.ending = True

    def mute(self, watcher: str, until: float = math.inf) -> None:
        """Send nothing about ``watcher`` before ``until`` (s; default: until unmuted).
        Its pending items count as muted and its episode ends without a message."""
        self._mutes[watcher] = until
        ep = self._episodes.pop(watcher, None)
        if ep is not None:
            dropped = len(ep.items) + ep.left_out
            self._muted[watcher] = self._muted.get(watcher, 0) + dropped

    def unmute(self, watcher: str) -> None:
        """End a mute now."""
        self._mutes.pop(watcher, None)

    def is_muted(self, watcher: str, now: float) -> bool:
        """Whether ``watcher`` is muted at ``now`` (s); forgets a mute that is over."""
        until = self._mutes.get(watcher)
        if until is not None and now >= until:
            del self._mutes[watcher]
            until = None
        return until is not None

    def untold(self, watcher: str) -> int:
        """Items of ``watcher`` dropped while muted that no message has told yet."""
        return self._muted.get(watcher, 0)

    def _next(self, ep: _Episode) -> Tuple[float, str]:
        if ep.items or ep.left_out:
            if ep.sent is None:
                return ep.since + self.group_wait, 'news'
            return ep.sent + self.group_interval, 'news'
        if ep.ending:
            return -math.inf, 'end'
        # An episode with nothing new has sent its first message: items come with it.
        assert ep.sent is not None
        repeat = ep.sent + self.repeat_interval
        if ep.healthy is not None:
            recover = max(ep.healthy + self.recovery_after, ep.sent)
            if recover <= repeat:
                return recover, 'recovery'
        return repeat, 'repeat'

    def next_wakeup(self, now: float) -> Optional[float]:
        """When :meth:`due` next has something (s; may be ``<= now``), or ``None``."""
        times = [self._next(ep)[0] for ep in self._episodes.values()]
        return min(times) if times else None

    def due(self, now: float) -> List[Message]:
        """The messages due at ``now`` (s), by watcher; each is then taken as sent."""
        out = []
        for w in sorted(self._episodes):
            ep = self._episodes[w]
            while w in self._episodes:
                when, what = self._next(ep)
                if when > now:
                    break
                message = self._message(w, ep, now, what)
                if message is not None:
                    out.append(message)
        return out

    def _message(self, w: str, ep: _Episode, now: float, what: str) -> Optional[Message]:
        if what == 'end':
            del self._episodes[w]
            return None
        common: Dict[str, Any] = dict(watcher=w, at=now, since=ep.since,
                                      totals=dict(ep.totals), muted=self._muted.pop(w, 0))
        if what == 'recovery':
            del self._episodes[w]
            assert ep.healthy is not None  # _next makes only a healthy watcher recover
            return Message(recovery=True, down_for=ep.healthy - ep.since, **common)
        ep.sent = now
        if what == 'repeat':
            return Message(repeat=True, **common)
        msg = Message(items=tuple(ep.items), left_out=ep.left_out, counts=ep.counts,
                      first=ep.first, last=ep.last, **common)
        ep.items, ep.left_out, ep.counts = [], 0, {}
        return msg
