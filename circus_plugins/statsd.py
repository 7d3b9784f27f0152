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
from typing import Any, Dict, Optional, Tuple

from ._stats import processes
from .events import read_event
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


class FullStats(BaseObserver):
    """Every ``loop_rate`` seconds, sends gauges for each watcher from circusd's ``stats``:
    ``_stats.<watcher>.cpu_max``, ``cpu_sum`` (percent), ``mem_pct_max``, ``mem_pct_sum``
    (percent), ``mem_max``, ``mem_sum`` (bytes), ``watchers_num`` (live processes) and
    ``spawn_count``; ``_stats.error`` counts failed ``stats`` calls. Plugins are skipped.
    """

    name = 'full_stats'

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self._spawns: Dict[str, int] = {}

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, fields=False)
        if event is not None and event.action == 'spawn':
            self._spawns[event.watcher] = self._spawns.get(event.watcher, 0) + 1

    async def look_after(self) -> None:
        reply = await self.ask('stats')
        if reply.get('status') != 'ok':
            self.log.warning('stats failed: %s', reply.get('reason'))
            self.metrics.increment('_stats.error')
            return
        for watcher, infos in (reply.get('infos') or {}).items():
            if not watcher.startswith('plugin:') and isinstance(infos, dict):
                self._gauge_watcher(watcher, infos)

    def _gauge_watcher(self, watcher: str, infos: Dict[str, Any]) -> None:
        metrics = self.metrics
        found = processes(infos).values()
        spawn_count = infos.get('spawn_count', self._spawns.get(watcher))
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
