"""Reading circusd's figures, typed: its ``stats`` replies and circusd-stats's stream.

circusd describes a watcher's processes as ``{pid: info}``, where ``info`` holds ``cpu``
and ``mem`` (percent), ``mem_info1`` (the resident set size, as ``'1.52M'``) and
``children`` (the same for each child), any of them ``'N/A'`` when psutil may not read
it; a process that ended meanwhile is a string (``'No such process (stopped?)'``).
:func:`processes` turns that into :class:`Process` tuples whose unknown figures are
``None``, for :class:`~circus_plugins.statsd.FullStats` and
:class:`~circus_plugins.resource_watcher.ResourceWatcher` alike.

circusd-stats (``[circus] statsd = True``) publishes the same figures about every second,
two frames each (see :meth:`~circus_plugins.CircusPlugin.handle_stats`):
``stat.<watcher>.<pid>`` for one process and ``stat.<watcher>`` for a watcher's totals;
``stat.circus...`` and ``stat.sockets...`` are about circus itself and are ignored, but
for circus's own watchers (``circusd-stats``, ``circushttpd``), read as watchers as
``stats`` reports them.
:func:`read_stat` types one message (:class:`ProcessStat` or :class:`WatcherTotals`) and
:class:`LatestFigures` keeps the latest figures of each process, for every plugin that
would otherwise poll ``stats``. In the stream ``mem_info1`` is rounded as circus writes it
(``'17.23M'``: two decimals of its unit, within 0.5 %) and ``children`` is always empty.

:func:`to_stats_source` reads option ``stats_source`` of every plugin that may take these
figures from more than one place.
"""
import json
import math
import re
import time
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Tuple, Union)

from .errors import ConfigError

#: The values of option ``stats_source``: ``auto`` (circusd-stats's stream while it is
#: live, else the plugin's other sources), ``stream`` (the stream only), ``psutil`` (read
#: the processes on this machine with psutil) and ``poll`` (no stream socket; circusd's
#: ``stats``, or for a plugin that always reads psutil, psutil).
STATS_SOURCES = ('auto', 'stream', 'psutil', 'poll')


def to_stats_source(value: Any, option: str = 'stats_source',
                    allowed: Tuple[str, ...] = STATS_SOURCES) -> str:
    """Read option ``stats_source``: one of ``allowed`` (a part of :data:`STATS_SOURCES`:
    a plugin refuses the values that mean nothing to it), else :class:`ConfigError`."""
    text = str(value).strip().lower()
    if text not in allowed:
        raise ConfigError('option %r: %r is not one of %s' % (option, value,
                                                              ', '.join(allowed)))
    return text


_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40, 'P': 1 << 50}


def human_to_bytes(text: object) -> int:
    """``'1.52M'`` -> bytes, as circusd writes memory sizes (``ValueError`` if it is
    not a size, ``OverflowError`` if it has more digits than a float)."""
    match = re.fullmatch(r'\s*([0-9.]+)\s*([KMGTP]?)B?\s*', str(text), re.IGNORECASE)
    if not match:
        raise ValueError('%r is not a size' % (text,))
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class Process(NamedTuple):
    """One process of a ``stats`` reply; ``None`` where circusd gave no usable figure."""
    pid: int
    cpu: Optional[float]  # percent of one core
    mem: Optional[float]  # percent of the machine's memory
    rss: Optional[int]  # resident set size, in bytes
    children: Tuple['Process', ...]


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):  # JSON's true is no figure
        return None
    if isinstance(value, int):
        return value
    try:
        figure = float(value)
    except (TypeError, ValueError, OverflowError):  # 'N/A'
        return None
    return figure if math.isfinite(figure) else None  # NaN is no figure either


def _pid(*candidates: Any) -> Optional[int]:
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
    return None


def _process(info: Any, key: Any = None) -> Optional[Process]:
    if not isinstance(info, Mapping):
        return None
    pid = _pid(info.get('pid'), key)
    if pid is None:
        return None
    try:
        rss: Optional[int] = human_to_bytes(info.get('mem_info1'))
    except (ValueError, OverflowError):
        rss = None
    children = info.get('children')
    children = [_process(child) for child in children] if isinstance(children, list) else []
    return Process(pid, _number(info.get('cpu')), _number(info.get('mem')), rss,
                   tuple(child for child in children if child is not None))


def processes(info: Any) -> Dict[int, Process]:
    """The live processes of one watcher's ``stats`` (``{pid: info}``), by pid."""
    found = {}
    if isinstance(info, Mapping):
        for key, value in info.items():
            process = _process(value, key)
            if process is not None:
                found[process.pid] = process
    return found


# -- circusd-stats's stream ----------------------------------------------------------------

#: Seconds after which a process not heard of in the stream is taken as gone (circusd-stats
#: speaks of each about every second; a loaded machine may delay it a little).
STALE_AFTER = 5.0

#: Topics of circus's own figures, not a watcher's.
_CIRCUS_TOPICS = ('circus', 'sockets')
#: Watchers that circusd-stats measures under ``stat.circus.<pid>``, with their name.
_CIRCUS_WATCHERS = ('circusd-stats', 'circushttpd')


class ProcessStat(NamedTuple):
    """The figures of one process of ``watcher``, from a ``stat.<watcher>.<pid>`` message."""
    watcher: str
    process: Process  # its children are always () in the stream


class WatcherTotals(NamedTuple):
    """A ``stat.<watcher>`` message: the watcher's totals; ``None`` where unusable."""
    watcher: str
    pids: Tuple[int, ...]
    cpu: Optional[float]  # mean of its processes, percent of one core
    mem: Optional[float]  # sum of its processes, percent of the machine's memory
    age: Optional[float]  # seconds, its oldest process


Stat = Union[ProcessStat, WatcherTotals]


def read_stat(data: Tuple[Any, Any]) -> Optional[Stat]:
    """Type one circusd-stats message ``(topic, body)`` (bytes or str); ``None`` for what
    is about circus itself or is not a figure of a watcher (junk of any kind: every field
    is untrusted). Never raises."""
    try:
        topic, body = data
        if isinstance(topic, bytes):
            topic = topic.decode('utf-8')
        if isinstance(body, bytes):
            body = body.decode('utf-8')
        if not isinstance(topic, str) or not isinstance(body, str):
            return None
        message = json.loads(body)
    except (TypeError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not topic.startswith('stat.') or not isinstance(message, dict):
        return None
    rest = topic[len('stat.'):]
    # Watcher names may hold dots: a process's topic ends with the pid that its
    # 'subtopic' repeats; a watcher's totals carry a list of pids.
    subtopic = _pid(message.get('subtopic'))
    if subtopic is not None and rest == 'circus.%d' % subtopic \
            and message.get('name') in _CIRCUS_WATCHERS:
        # circus's own watchers are measured with circusd, and named: ``stats`` reports
        # them as watchers, so they are watchers here too.
        rest = '%s.%d' % (message['name'], subtopic)
    elif not rest or rest.split('.', 1)[0] in _CIRCUS_TOPICS:
        return None
    if subtopic is not None and rest.endswith('.%d' % subtopic):
        watcher = rest[:-len('.%d' % subtopic)]
        process = _process(dict(message, children=None), subtopic)
        if not watcher or process is None or process.pid != subtopic:
            return None
        return ProcessStat(watcher, process)
    pids = message.get('pid')
    if not isinstance(pids, list):
        return None
    found = tuple(pid for pid in (_pid(item) for item in pids) if pid is not None)
    age = _number(message.get('age'))
    return WatcherTotals(rest, found, _number(message.get('cpu')), _number(message.get('mem')),
                         age)


class LatestFigures:
    """The latest figures circusd-stats gave of each process, by watcher.

    Feed it with :meth:`take` (from :meth:`~circus_plugins.CircusPlugin.handle_stats`);
    read :meth:`processes`. A process not heard of for ``stale_after`` seconds is left
    out (and dropped), so a watcher stopped or removed empties within that time; call
    :meth:`forget` at a ``reap`` event to drop a process at once, and
    :meth:`forget_watcher` at ``stop``/``remove``. ``clock`` gives seconds (monotonic).
    Not thread-safe: use it from the plugin thread.
    """

    def __init__(self, stale_after: float = STALE_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self._clock = clock
        self._figures: Dict[str, Dict[int, Tuple[Process, float]]] = {}

    def take(self, data: Tuple[Any, Any]) -> Optional[Stat]:
        """Read one stream message (as :func:`read_stat`), keep a process's figures, and
        return what was read (``None`` for junk or circus's own figures)."""
        stat = read_stat(data)
        if isinstance(stat, ProcessStat):
            self._figures.setdefault(stat.watcher, {})[stat.process.pid] = (
                stat.process, self._clock())
        return stat

    def processes(self, watcher: str) -> Dict[int, Process]:
        """The processes of ``watcher`` heard of within ``stale_after`` seconds, by pid
        (as :func:`processes` reads a ``stats`` reply, children always empty)."""
        kept = self._figures.get(watcher)
        if not kept:
            return {}
        oldest = self._clock() - self.stale_after
        for pid in [pid for pid, (_, when) in kept.items() if when < oldest]:
            del kept[pid]
        if not kept:
            del self._figures[watcher]
            return {}
        return {pid: process for pid, (process, _) in kept.items()}

    def watchers(self) -> List[str]:
        """The watchers with processes heard of within ``stale_after`` seconds."""
        return [name for name in list(self._figures) if self.processes(name)]

    def arrival(self, watcher: str, pid: int) -> Optional[float]:
        """When (by ``clock``) the figures of process ``pid`` of ``watcher`` came, if kept."""
        kept = self._figures.get(watcher, {}).get(pid)
        return None if kept is None else kept[1]

    def forget(self, watcher: str, pid: Any) -> None:
        """Drop process ``pid`` of ``watcher`` (at its ``reap``); unknown ones are fine."""
        kept = self._figures.get(watcher)
        if kept is not None and isinstance(pid, int):
            kept.pop(pid, None)

    def forget_watcher(self, watcher: str) -> None:
        """Drop every process of ``watcher`` (at its ``stop`` or ``remove``)."""
        self._figures.pop(watcher, None)

    def forget_all(self) -> None:
        """Drop everything (the stream went away)."""
        self._figures.clear()

    def handle_event(self, watcher: str, action: str, pid: Any = None) -> None:
        """Apply a circusd event: ``reap`` and ``kill`` drop ``pid`` (circusd-stats stops
        measuring a process at its kill), ``stop`` and ``remove`` drop the watcher; other
        actions change nothing."""
        if action in ('reap', 'kill'):
            self.forget(watcher, pid)
        elif action in ('stop', 'remove'):
            self.forget_watcher(watcher)
