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
import time
from typing import Any, Dict, Iterable, Optional, Set, Tuple

from ._processes import Processes
from ._stats import (LatestFigures, Process, ProcessStat, WatcherTotals, processes,
                     to_stats_source)
from ._usage import UsageReader, runs_here
from .errors import ConfigError, MalformedEvent
from .events import MAX_TOPIC, Event, is_plugin_made, parse_event, read_event
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


class StreamObserver(BaseObserver):
    """A :class:`BaseObserver` that reads processes' figures from circusd-stats's stream
    when it can, else with psutil on this machine, else by asking circusd's ``stats``.

    Option ``stats_source`` (:func:`~circus_plugins._stats.to_stats_source`): ``auto``
    (default: the stream while it is live, see :attr:`~circus_plugins.CircusPlugin.
    stats_live`; else psutil when circusd runs here, :func:`~circus_plugins._usage.
    runs_here`, and psutil imports; else ``stats``), ``stream`` (the stream only; never
    ``stats``), ``psutil`` (psutil only; circusd must run here) or ``poll`` (``stats``
    only, as circus 0.19; no stream socket). :attr:`figures` keeps the stream's latest
    figures, following circusd's ``reap``, ``kill``, ``stop`` and ``remove`` events;
    :attr:`processes` the pids psutil reads, from events and one ``list`` of each
    watcher (again at its safety refresh, :meth:`~circus_plugins.periodic.
    PeriodicPlugin.refresh_due`).
    Plugin thread only.
    """

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.stats_source = self.option('stats_source', 'auto', to_stats_source)
        #: The stream's latest figures of each process, by watcher.
        self.figures = LatestFigures()
        #: The pids of the watchers read with psutil, kept from events.
        self.processes = Processes()
        self._usage: Optional[UsageReader] = None
        here = runs_here(endpoint, ssh_server)
        if self.stats_source == 'psutil' and not here:
            raise ConfigError('plugin %s: option %r: %r reads the processes on this '
                              'machine, but circusd is at %s%s' % (
                                  self.name, 'stats_source', 'psutil', endpoint,
                                  ' through ssh' if ssh_server else ''))
        if self.stats_source in ('auto', 'psutil') and here:
            try:
                import psutil
            except ImportError as exc:
                if self.stats_source == 'psutil':
                    raise ConfigError('plugin %s: option %r: %r needs psutil (%s)' % (
                        self.name, 'stats_source', 'psutil', exc)) from None
                self.log.info('psutil is missing (%s): figures from circusd\'s stats '
                              'when circusd-stats is not running', exc)
            else:
                self._usage = UsageReader(psutil, children=self.children_wanted())

    def children_wanted(self) -> bool:
        """Whether psutil reads each process's children too; ``False`` by default."""
        return False

    def wants_stats(self) -> bool:
        return self.stats_source in ('auto', 'stream')

    def use_stream(self) -> bool:
        """Whether this check reads :attr:`figures` rather than asking ``stats``."""
        return self.stats_source == 'stream' or (self.stats_source == 'auto'
                                                 and self.stats_live)

    def reads_here(self) -> bool:
        """Whether psutil may read circusd's processes (circusd runs here, psutil
        imports, ``stats_source`` allows it)."""
        return self._usage is not None

    def use_psutil(self) -> bool:
        """Whether this check reads the processes with psutil (:meth:`read_processes`)."""
        return self._usage is not None and not self.use_stream()

    async def read_processes(self, names: Iterable[str], due: Iterable[str] = (),
                             ) -> Dict[str, Optional[Dict[int, Process]]]:
        """The figures of the processes of watchers ``names``, read with psutil in a
        worker thread: ``{name: {pid: Process}}``, ``None`` for a watcher whose pids
        circusd did not tell. Asks ``list`` only of the watchers whose pids are not
        known from events, and of those in ``due`` (their safety refresh, from
        :meth:`~circus_plugins.periodic.PeriodicPlugin.refresh_due`). Only when
        :meth:`use_psutil`; on the loop."""
        assert self._usage is not None
        names = list(names)
        self.processes.keep(names)
        for name in due:
            self.processes.stale(name)
        await self.processes.refresh(self.ask, names)
        pids = {name: self.processes.pids(name) for name in names}
        every = set().union(*(found for found in pids.values() if found))
        usage = self._usage
        read = await self.loop.run_in_executor(None, usage.figures, every)
        # A process psutil finds ended that no reap or kill took away: events missed?
        gone = {pid for pid, _ in usage.gone}
        self.processes.ended((name, pid) for name, found in pids.items()
                             for pid in (found or ()) if pid in gone)
        return {name: None if found is None else
                {pid: read[pid] for pid in found if pid in read}
                for name, found in pids.items()}

    def handle_stats(self, data: Tuple[bytes, bytes]) -> None:
        self.took_stat(self.figures.take(data))

    def took_stat(self, stat: Optional[Any]) -> None:
        """Called with each stream message read (a :class:`~circus_plugins._stats.ProcessStat`,
        a :class:`~circus_plugins._stats.WatcherTotals` or ``None``); nothing by default."""

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        if is_plugin_made(data):
            return
        try:
            event: Optional[Event] = parse_event(data, fields=('reap', 'kill', 'spawn'))
        except MalformedEvent as exc:
            # A body that does not read still says, by its topic, that the watcher spawned
            # (FullStats counts it) and that its processes changed (no pid: listed again).
            event = read_event(self.log, data, fields=False)  # warns of a bad topic
            if event is not None:  # circus 0.19's FullStats never read bodies: no warning
                self.log.debug('read only the topic of an event: %s', exc)
        if event is not None:
            self.processes.see(event)
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
    ``_stats.error`` counts failed ``stats`` calls (and ``list`` calls, with psutil).
    Plugins are skipped. The figures come from circusd-stats's stream, psutil or
    circusd's ``stats``, as option ``stats_source`` says (see :class:`StreamObserver`);
    with psutil, the watchers are learnt from one ``list`` (again at its safety refresh)
    and ``add``/``remove`` events.
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
        if self.use_psutil():
            await self._look_locally()
            return
        reply = await self.ask('stats')
        if reply.get('status') != 'ok':
            self.log.warning('stats failed: %s', reply.get('reason'))
            self.metrics.increment('_stats.error')
            return
        for watcher, infos in (reply.get('infos') or {}).items():
            if not watcher.startswith('plugin:') and isinstance(infos, dict):
                self._gauge_watcher(watcher, infos)

    async def _look_locally(self) -> None:
        names = sorted(name for name in self._names if not name.startswith('plugin:'))
        # '' (no watcher's name): the safety refresh of the watchers' names themselves.
        due = self.refresh_due([''] + names, time.monotonic())
        if '' in due:
            reply = await self.ask('list')
            found = reply.get('watchers') if reply.get('status') == 'ok' else None
            if not isinstance(found, list):
                self.log.warning('list failed: %s', reply.get('reason'))
                self.metrics.increment('_stats.error')
                self.refresh_everything()  # events may be missed: all again next time
                return
            self._names = {name for name in found if isinstance(name, str)
                           and 0 < len(name) <= MAX_TOPIC}
            names = sorted(name for name in self._names if not name.startswith('plugin:'))
        for watcher, found in (await self.read_processes(names, due)).items():
            if found is None:
                self.metrics.increment('_stats.error')
            else:
                self._gauge_processes(watcher, found, None)

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
