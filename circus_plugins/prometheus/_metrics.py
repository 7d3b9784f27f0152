"""What the Prometheus exporter knows of circusd between two scrapes, and its metrics.

:class:`Snapshot` is plain state, fed on the exporter's loop by events (:meth:`~Snapshot.
spawned`, :meth:`~Snapshot.exited`, :meth:`~Snapshot.plugin_action`) and by each poll of
circusd (:meth:`~Snapshot.polled`, :meth:`~Snapshot.down`); :meth:`Snapshot.collect` turns
it into ``prometheus_client`` metric families, so that a scrape reads it and never asks
circusd anything. Its counters are the exporter's own and never go backwards: not when
circusd restarts (the exporter keeps counting), not when a watcher is removed and added
again (its counts are kept while it is away; its series are not shown meanwhile), not
when a process ends (its CPU time stays in its watcher's total).
"""
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from .._usage import Usage

__all__ = ['Snapshot', 'Usage', 'STATES', 'REASONS', 'process_infos', 'start_time']

#: The states a watcher can be in; one 0/1 series each.
STATES = ('active', 'starting', 'stopping', 'stopped')
#: Why processes ended (:class:`~circus_plugins.events.Exits`): crashed, exited with 0,
#: or ended by circusd.
REASONS = ('crash', 'exit', 'stopped')
#: Distinct ``(plugin, action, watcher)`` counted at most; beyond, new ones are not.
MOST_ACTIONS = 10000
#: Watchers remembered at most, present or removed (removed ones go first).
MOST_WATCHERS = 10000


class _Watcher:
    def __init__(self) -> None:
        self.present = False
        self.state: Optional[str] = None
        self.desired: Optional[float] = None
        self.spawns = 0
        self.exits = dict.fromkeys(REASONS, 0)
        self.cpu_gone = 0.0            # CPU seconds of processes that have ended
        self.cpu_last = 0.0            # the total last shown: never shown lower
        self.cpu: Dict[Tuple[int, float], float] = {}  # (pid, started) -> seconds
        self.rss = 0
        self.processes: List[Tuple[str, float]] = []   # (wid, start time) live
        self.running: Optional[float] = None  # processes circusd listed, known or not yet

    def shown(self) -> Tuple[Any, ...]:
        """What a poll may change of what a page shows."""
        return (self.present, self.state, self.desired, self.rss, self.cpu_gone, self.running,
                tuple(self.processes), tuple(self.cpu.values()))


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return value if value == value and abs(value) != float('inf') else None


class Snapshot:
    """The exporter's picture of circusd. Use it from one thread (the plugin's loop)."""

    def __init__(self) -> None:
        self.up = False
        self.watchers: Dict[str, _Watcher] = {}
        self.actions: Dict[Tuple[str, str, str], int] = {}
        #: Bumped at every change (not at a poll that changed nothing): a rendered page
        #: is good while it stays the same.
        self.version = 0

    def _watcher(self, name: str) -> _Watcher:
        watcher = self.watchers.get(name)
        if watcher is None:
            if len(self.watchers) >= MOST_WATCHERS:
                gone = next((n for n, w in self.watchers.items() if not w.present),
                            next(iter(self.watchers)))
                del self.watchers[gone]
            watcher = self.watchers[name] = _Watcher()
        return watcher

    # -- events ----------------------------------------------------------------------------

    def spawned(self, name: str) -> None:
        self._watcher(name).spawns += 1
        self.version += 1

    def exited(self, name: str, reason: str) -> None:
        """A process of ``name`` ended: ``reason`` is one of :data:`REASONS`."""
        watcher = self._watcher(name)
        watcher.exits[reason] = watcher.exits.get(reason, 0) + 1
        self.version += 1

    def plugin_action(self, plugin: str, action: str, watcher: str) -> None:
        key = (plugin, action, watcher)
        if key in self.actions or len(self.actions) < MOST_ACTIONS:
            self.actions[key] = self.actions.get(key, 0) + 1
            self.version += 1

    # -- polls -----------------------------------------------------------------------------

    def down(self) -> None:
        """circusd did not answer the last poll."""
        if self.up:
            self.up = False
            self.version += 1

    def polled(self, statuses: Mapping[str, Any], infos: Mapping[str, Any],
               desired: Mapping[str, Optional[int]],
               usage: Mapping[Tuple[int, float], Usage],
               running: Optional[Mapping[str, Optional[int]]] = None) -> None:
        """circusd answered: ``statuses`` (``status``'s ``{watcher: state}``), ``infos``
        (``stats``'s ``{watcher: {pid: info}}``), ``desired`` (``{watcher: numprocesses}``)
        and the ``usage`` of each process, by ``(pid, start time)``. Watchers missing
        from ``statuses`` are taken as removed; a watcher missing from ``infos`` keeps
        the processes it had (``stats`` failed, or the watcher came meanwhile).
        ``running`` (``{watcher: count}``) counts processes circusd listed whose details
        are not in ``infos`` yet; without it, those of ``infos`` are counted."""
        changed = not self.up
        self.up = True
        for name, watcher in self.watchers.items():
            if name not in statuses and watcher.present:
                watcher.present, changed = False, True
        for name, state in statuses.items():
            watcher = self._watcher(name)
            before = watcher.shown()
            watcher.present = True
            watcher.state = state if state in STATES else None
            if name in desired:
                watcher.desired = _number(desired[name])
            self._processes(watcher, infos.get(name), usage)
            watcher.running = _number((running or {}).get(name))
            changed = changed or watcher.shown() != before
        if changed:  # a page rendered before is still good otherwise
            self.version += 1

    def _processes(self, watcher: _Watcher, info: Any,
                   usage: Mapping[Tuple[int, float], Usage]) -> None:
        if not isinstance(info, Mapping):
            return  # circusd did not say (stats failed): keep what was known
        live: Dict[Tuple[int, float], float] = {}
        watcher.processes, watcher.rss = [], 0
        for pid, about in process_infos(info):
            started = start_time(about)
            wid = about.get('wid')
            wid = str(wid) if isinstance(wid, int) and not isinstance(wid, bool) else ''
            watcher.processes.append((wid, started))
            used = usage.get((pid, started))
            if used is not None:
                live[(pid, started)] = used.cpu
                watcher.rss += used.rss
            elif (pid, started) in watcher.cpu:  # not read this time: keep what we had
                live[(pid, started)] = watcher.cpu[(pid, started)]
        for key, seconds in watcher.cpu.items():
            if key not in live:
                watcher.cpu_gone += seconds  # ended (or its pid used again)
        watcher.cpu = live

    # -- metrics ---------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """The metric families (``prometheus_client.core``), for a registry."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        present = sorted((n, w) for n, w in self.watchers.items() if w.present)
        yield GaugeMetricFamily('circus_up', 'Whether circusd answered the last poll '
                                '(1) or not (0).', value=1 if self.up else 0)

        def gauge(name, text, labels=('watcher',)):
            return GaugeMetricFamily(name, text, labels=list(labels))

        def counter(name, text, labels=('watcher',)):
            return CounterMetricFamily(name, text, labels=list(labels))

        processes = gauge('circus_watcher_processes', 'Processes the watcher runs.')
        desired = gauge('circus_watcher_desired_processes',
                        'Processes the watcher is configured to run (numprocesses).')
        state = gauge('circus_watcher_state', 'The watcher\'s state: 1 for the one it is '
                      'in, 0 for the others.', ('watcher', 'state'))
        spawns = counter('circus_watcher_spawns', 'Processes the watcher spawned.')
        exits = counter('circus_watcher_exits', 'Processes of the watcher that ended, by '
                        'reason: crash, exit (status 0) or stopped (by circusd).',
                        ('watcher', 'reason'))
        cpu = counter('circus_watcher_cpu_seconds', 'CPU time used by the watcher\'s '
                      'processes, user and system, in seconds.')
        rss = gauge('circus_watcher_resident_memory_bytes', 'Resident memory of the '
                    'watcher\'s processes, in bytes.')
        started = gauge('circus_process_start_time_seconds', 'When each process of the '
                        'watcher started, in seconds since the epoch.', ('watcher', 'wid'))
        for name, w in present:
            processes.add_metric([name], len(w.processes) if w.running is None
                                 else max(w.running, len(w.processes)))
            if w.desired is not None:
                desired.add_metric([name], w.desired)
            for one in STATES:
                state.add_metric([name, one], 1 if w.state == one else 0)
            spawns.add_metric([name], w.spawns)
            for reason in REASONS:
                exits.add_metric([name, reason], w.exits.get(reason, 0))
            w.cpu_last = max(w.cpu_last, w.cpu_gone + sum(w.cpu.values()))
            cpu.add_metric([name], w.cpu_last)
            rss.add_metric([name], w.rss)
            for wid, when in sorted(w.processes):
                if wid:
                    started.add_metric([name, wid], when)
        yield from (processes, desired, state, spawns, exits, cpu, rss, started)
        if self.actions:
            actions = counter('circus_plugin_actions', 'What plugins running beside the '
                              'exporter did (their plugin-made events).',
                              ('plugin', 'action', 'watcher'))
            for (plugin, action, watcher), count in sorted(self.actions.items()):
                actions.add_metric([plugin, action, watcher], count)
            yield actions


def start_time(about: Mapping[str, Any]) -> float:
    """When a process of a ``stats`` reply started (``started``, seconds since the
    epoch), ``0.0`` when circusd gave no usable number: with its pid, what tells a
    process from a later one that got the same pid."""
    return _number(about.get('started')) or 0.0


def process_infos(info: Any) -> Iterator[Tuple[int, Mapping[str, Any]]]:
    """``(pid, info)`` of each process in a watcher's ``stats`` reply, skipping what is
    not a process (a process that ended meanwhile is a string)."""
    if not isinstance(info, Mapping):
        return
    for key, about in info.items():
        try:
            pid = int(key)
        except (TypeError, ValueError):
            continue
        if isinstance(about, Mapping) and 0 < pid < 2 ** 31:
            yield pid, about
