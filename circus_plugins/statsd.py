"""Sending circusd's events and statistics to statsd.

:class:`StatsdEmitter` counts every event circusd publishes as
``circus.<application_name>.watcher.<watcher>.<action>``; :class:`BaseObserver` runs
:meth:`~BaseObserver.look_after` every ``loop_rate`` seconds, and :class:`FullStats` uses
it to send per-watcher CPU and memory gauges. All three are built on
:class:`~circus_plugins.statsd_plugin.StatsdPlugin`; the client, :class:`StatsdClient`,
lives in :mod:`circus_plugins.statsd_client` and is importable from here too, as in
circus 0.19.

Example ``circus.ini`` section::

    [plugin:statsd]
    use = circus_plugins.statsd.StatsdEmitter
    host = 127.0.0.1
    port = 8125
    application_name = web
"""
from typing import Any, Dict, Optional, Set, Tuple

from ._stats import LatestFigures, Process, ProcessStat, WatcherTotals, processes
from .errors import ConfigError
from .events import Event, read_event
from .periodic import PeriodicPlugin
from .statsd_client import Pipeline, StatsdClient
from .statsd_plugin import StatsdPlugin

__all__ = ['StatsdClient', 'Pipeline', 'StatsdEmitter', 'BaseObserver', 'FullStats']


class StatsdEmitter(StatsdPlugin):
    """Counts every circusd event in statsd as ``<prefix>.<watcher>.<action>``.

    Options: those of :class:`~circus_plugins.statsd_plugin.StatsdPlugin` (``host``,
    ``port``, ``application_name``, ``prefix``, ``sample_rate``). Events arriving
    together go out together, batched into datagrams of at most 512 bytes.
    """

    name = 'statsd'

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        # Every event counts, whatever its body: only the topic is read (and checked).
        event = read_event(self.log, data, fields=False)
        if event is not None:
            self.metrics.increment('%s.%s' % (event.watcher, event.action))


class BaseObserver(StatsdPlugin, PeriodicPlugin):
    """A statsd plugin that calls :meth:`look_after` every ``loop_rate`` seconds (default
    60) on the plugin's loop; see :class:`~circus_plugins.periodic.PeriodicPlugin`.
    Events are ignored."""

    async def restart(self, watcher: str, because: Optional[str] = None,
                      action: Optional[str] = None, **details: Any) -> bool:
        """Restart ``watcher`` with :meth:`~circus_plugins.CircusPlugin.change_state` and
        log the outcome: ``web: restarted, as <because>``, or, as an error, ``web: could
        not restart it: <reason>``. Once circusd confirmed it, ``action`` (if given) is
        emitted about ``watcher`` with ``details`` (:meth:`~circus_plugins.CircusPlugin.emit`;
        no secret in them). Returns whether circusd confirmed the restart."""
        reply = await self.change_state('restart', name=watcher)
        if reply.get('status') != 'ok':
            self.log.error('%s: could not restart it: %s', watcher, reply.get('reason'))
            return False
        self.log.info('%s: restarted%s', watcher, ', as %s' % because if because else '')
        if action:
            self.emit(watcher, action, **details)
        return True


#: Values of option ``stats_source``.
STATS_SOURCES = ('auto', 'stream', 'poll')


def _to_source(value: Any, option: str) -> str:
    text = str(value).strip().lower()
    if text not in STATS_SOURCES:
        raise ConfigError('option %r: %r is not one of %s' % (option, value,
                                                              ', '.join(STATS_SOURCES)))
    return text


class StreamObserver(BaseObserver):
    """A :class:`BaseObserver` that reads processes' figures from circusd-stats's stream
    when it can, and asks circusd's ``stats`` when it cannot.

    Option ``stats_source``: ``auto`` (default: the stream while it is live, see
    :attr:`~circus_plugins.CircusPlugin.stats_live`, else ``stats``), ``stream`` (the
    stream only; never ``stats``) or ``poll`` (``stats`` only, as circus 0.19; no stream
    socket). :attr:`figures` keeps the stream's latest figures, following circusd's
    ``reap``, ``kill``, ``stop`` and ``remove`` events. Plugin thread only.
    """

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.stats_source = self.option('stats_source', 'auto', _to_source)
        #: The stream's latest figures of each process, by watcher.
        self.figures = LatestFigures()

    def wants_stats(self) -> bool:
        return self.stats_source != 'poll'

    def use_stream(self) -> bool:
        """Whether this check reads :attr:`figures` rather than asking ``stats``."""
        return self.stats_source == 'stream' or (self.stats_source == 'auto'
                                                 and self.stats_live)

    def handle_stats(self, data: Tuple[bytes, bytes]) -> None:
        self.took_stat(self.figures.take(data))

    def took_stat(self, stat: Optional[Any]) -> None:
        """Called with each stream message read (a :class:`~circus_plugins._stats.ProcessStat`,
        a :class:`~circus_plugins._stats.WatcherTotals` or ``None``); nothing by default."""

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, fields=('reap', 'kill'))
        if event is not None:
            self.figures.handle_event(event.watcher, event.action,
                                      event.pid() if event.action in ('reap', 'kill')
                                      else None)
            self.took_event(event)

    def took_event(self, event: Event) -> None:
        """Called with each circusd event after :attr:`figures` followed it; nothing by
        default."""


class FullStats(StreamObserver):
    """Every ``loop_rate`` seconds, sends gauges for each watcher: ``_stats.<watcher>.cpu_max``,
    ``cpu_sum`` (percent), ``mem_pct_max``, ``mem_pct_sum`` (percent), ``mem_max``,
    ``mem_sum`` (bytes), ``watchers_num`` (live processes) and ``spawn_count``;
    ``_stats.error`` counts failed ``stats`` calls. Plugins are skipped. The figures come
    from circusd-stats's stream or circusd's ``stats``, as option ``stats_source`` says
    (see :class:`StreamObserver`).
    """

    name = 'full_stats'

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self._spawns: Dict[str, int] = {}
        # The watchers the stream spoke of, or events: circusd-stats says nothing of a
        # stopped watcher, which ``stats`` reports with no process.
        self._names: Set[str] = set()

    def took_event(self, event: Event) -> None:
        if event.action == 'remove':
            self._names.discard(event.watcher)
        elif event.action in ('add', 'start', 'spawn'):
            self._names.add(event.watcher)
        if event.action == 'spawn':
            self._spawns[event.watcher] = self._spawns.get(event.watcher, 0) + 1

    def took_stat(self, stat: Optional[Any]) -> None:
        if isinstance(stat, (ProcessStat, WatcherTotals)):
            self._names.add(stat.watcher)

    async def look_after(self) -> None:
        if self.use_stream():
            for watcher in sorted(self._names):
                if not watcher.startswith('plugin:'):
                    self._gauge_processes(watcher, self.figures.processes(watcher), None)
            return
        reply = await self.ask('stats')
        if reply.get('status') != 'ok':
            self.log.warning('stats failed: %s', reply.get('reason'))
            self.metrics.increment('_stats.error')
            return
        for watcher, infos in (reply.get('infos') or {}).items():
            if not watcher.startswith('plugin:') and isinstance(infos, dict):
                self._gauge_watcher(watcher, infos)

    def _gauge_watcher(self, watcher: str, infos: Dict[str, Any]) -> None:
        self._gauge_processes(watcher, processes(infos), infos.get('spawn_count'))

    def _gauge_processes(self, watcher: str, found_by_pid: Dict[int, Process],
                         spawn_count: Any) -> None:
        metrics = self.metrics
        found = found_by_pid.values()
        if spawn_count is None:
            spawn_count = self._spawns.get(watcher)
        if spawn_count is not None:
            metrics.gauge('_stats.%s.spawn_count' % watcher, spawn_count)
        metrics.gauge('_stats.%s.watchers_num' % watcher, len(found))
        for name, column in (('cpu', [p.cpu for p in found]),
                             ('mem_pct', [p.mem for p in found]),
                             ('mem', [p.rss for p in found])):
            figures = [figure for figure in column if figure is not None]
            if figures:
                metrics.gauge('_stats.%s.%s_max' % (watcher, name), max(figures))
                metrics.gauge('_stats.%s.%s_sum' % (watcher, name), sum(figures))
