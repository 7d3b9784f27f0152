"""Restarting a watcher whose processes use too much, or too little, CPU or memory.

Every ``loop_rate`` seconds the plugin reads the figures of one watcher's processes
(from circusd-stats's stream when circusd runs it, else with psutil when circusd runs on
this machine, else from circusd's ``stats``: option ``stats_source``) and compares them with the limits below. Each limit keeps its own count of checks
in a row that broke it; a check that keeps the limit sets that count back to zero. When
a count goes past ``max_count`` (so at the ``max_count + 1``-th bad check in a row, as in
circus), the watcher is restarted; with ``process_children``, a child process of the
watcher's processes that breaks a limit is sent ``child_signal`` instead.

Limits (each switched off by ``none``, ``off`` or an empty value; the ``max_*`` limits and
``health_threshold`` also by ``0``):

- ``max_cpu`` (default 90): the busiest process's CPU, in percent of one core;
- ``min_cpu`` (default off): the idlest process's CPU, in percent; a process at or below
  it breaks the limit;
- ``max_mem`` (default 90): the largest process's memory, in percent of the machine's
  when a plain number, in bytes when it has a unit (``250M``, ``1.5G``, ``512K``);
- ``min_mem`` (default off): the smallest process's memory, in percent or bytes;
- ``health_threshold`` (default 75): the average of the largest CPU and the largest
  memory percentages.

Example::

    [plugin:resources]
    use = circus_plugins.resource_watcher.ResourceWatcher
    watcher = web
    loop_rate = 10
    max_cpu = 80
    max_mem = 500M
    max_count = 2
"""

import logging
import operator
import re
import time
from typing import (Any, Container, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple,
                    Union)

from ._log import SayOnce
from ._stats import Process, human_to_bytes, processes
from .config import LARGEST, MAX_COUNT, signal_name, to_name, to_number, to_signum
from .errors import ConfigError
from .statsd import StreamObserver

#: Values that switch a limit off.
_OFF = {'', 'none', 'off', 'no', 'false'}
#: The limits: counter, option, figures judged, when broken, how a breach is said.
_RULES = (('over_cpu', 'max_cpu', 'cpu', operator.gt, 'above'),
          ('under_cpu', 'min_cpu', 'cpu', operator.le, 'at or below'),
          ('over_memory', 'max_mem', 'memory', operator.gt, 'above'),
          ('under_memory', 'min_mem', 'memory', operator.lt, 'below'),
          ('over_health', 'health_threshold', 'health', operator.gt, 'above'))
#: The counters of one watcher or child, in the order they are reported.
KINDS = tuple(rule[0] for rule in _RULES)
#: Key of the watcher's own counts; a child's counts are keyed by its pid.
_WATCHER = 'watcher'


class Limit(NamedTuple):
    """A limit: ``value`` in percent, or in bytes when ``percent`` is false."""
    value: float
    percent: bool = True

    def describe(self, value: float) -> str:
        """``value`` with this limit's unit, for logs."""
        return '%g %%' % value if self.percent else '%d bytes' % value


def to_limit(value: Any, option: str, *, sizes: bool = False,
             zero_is_off: bool = False) -> Optional[Limit]:
    """Read a limit: ``None`` when switched off, else a :class:`Limit` in percent (a plain
    number), or, with ``sizes``, in bytes when written with a unit (``250M``). A memory
    limit in percent is at most 100; in bytes, at most
    :data:`~circus_plugins.config.LARGEST`."""
    text = str(value).strip()
    if text.lower() in _OFF:
        return None
    if not sizes or re.fullmatch(r'[-+0-9.eE]+', text):  # a number: in percent
        limit = Limit(to_number(value, option, minimum=0, maximum=100 if sizes else None))
    else:
        try:
            size = human_to_bytes(text)
        except (ValueError, OverflowError):  # OverflowError: more digits than a float
            size = LARGEST + 1
        if size > LARGEST:
            raise ConfigError('option %r: %r is neither a percentage nor a size like 250M'
                              % (option, value))
        limit = Limit(size, percent=False)
    return None if zero_is_off and limit.value == 0 else limit


class ResourceWatcher(StreamObserver):
    """Restarts watcher ``watcher`` when its processes stay beyond a CPU, memory or
    health limit for more than ``max_count`` checks in a row, one check every
    ``loop_rate`` seconds (default 60).

    Limits: ``max_cpu`` (default 90) and ``min_cpu`` (off) in percent of one core;
    ``max_mem`` (90) and ``min_mem`` (off) in percent of the machine's memory, or in bytes
    when written with a unit (``250M``); ``health_threshold`` (75), in percent. Other
    options: ``watcher`` (required; ``service`` is a deprecated alias), ``max_count``
    (3), ``process_children`` (false: when true, each child of the watcher's processes is
    judged too, on memory only, and sent ``child_signal`` instead of a restart),
    ``child_signal`` (``SIGTERM``, a name or a number), ``stats_source`` (``auto``: the
    figures of circusd-stats's stream while it is live, else psutil's when circusd runs
    on this machine, else circusd's ``stats``; ``stream``; ``psutil``; ``poll``; see
    :class:`~circus_plugins.statsd.StreamObserver`; children are not in the stream, so
    ``process_children`` reads psutil or asks ``stats``), and those of
    :class:`~circus_plugins.statsd.BaseObserver`.

    Sends the statsd counters ``_resource_watcher.<watcher>.over_cpu``, ``under_cpu``,
    ``over_memory``, ``under_memory``, ``over_health`` (once per bad check),
    ``restarting`` (once per restart or child signal) and ``error`` (failed ``stats`` or
    ``list``, refused restart or signal).
    """

    name = 'resource_watcher'

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.process_children = self.children_wanted()
        service = self.option('service', '', to_name)
        if service:
            self.log.warning('option "service" is deprecated: use "watcher"')
        self.watcher = self.option('watcher', service or None, to_name) or service
        if not self.watcher and 'watcher' in config:
            raise ConfigError("plugin %s: option 'watcher': %r is empty: the name of the "
                              "watcher to look after is required" % (self.name,
                                                                     config['watcher']))
        if not self.watcher:
            raise ConfigError("plugin %s: option 'watcher' is required: the name of the "
                              "watcher to look after" % self.name)
        self.max_cpu = self.option('max_cpu', 90, to_limit, zero_is_off=True)
        self.min_cpu = self.option('min_cpu', None, to_limit)
        self.max_mem = self.option('max_mem', 90, to_limit, sizes=True, zero_is_off=True)
        self.min_mem = self.option('min_mem', None, to_limit, sizes=True)
        self.health_threshold = self.option('health_threshold', 75, to_limit,
                                            zero_is_off=True)
        self.max_count = self.option('max_count', 3, int, minimum=0, maximum=MAX_COUNT)
        self.child_signal = self.option('child_signal', 'SIGTERM', to_signum)
        if self.process_children:
            # circusd-stats's figures never list children: psutil or ``stats`` has them.
            if self.stats_source == 'stream':
                raise ConfigError("plugin %s: option 'stats_source': 'stream' has no "
                                  "child processes, which process_children judges: use "
                                  "'auto', 'psutil' or 'poll'" % self.name)
            if self.stats_source == 'auto':
                self.stats_source = 'psutil' if self.reads_here() else 'poll'
        #: Counts of bad checks in a row: ``{'watcher' or child pid: {kind: count}}``.
        self.counts: Dict[Union[str, int], Dict[str, int]] = {}
        self._known: Set[int] = set()  # the watcher's pids at the previous check
        self._replaced: Set[int] = set()  # pids we restarted, maybe still stopping
        self._say_once = SayOnce(self.log)

    def children_wanted(self) -> bool:
        return bool(self.option('process_children', False, bool))

    def _count_metric(self, kind: str) -> None:
        self.metrics.increment('_resource_watcher.%s.%s' % (self.watcher, kind))

    # -- the checks ------------------------------------------------------------------------

    async def look_after(self) -> None:
        """Read the watcher's stats, count the limits broken, act past ``max_count``."""
        found = await self._processes()
        if found is None:
            return
        # circusd answers a restart at once; the old processes may take a while to go.
        self._replaced &= set(found)
        for pid in self._replaced:
            del found[pid]
        # circusd's first CPU reading of a process is always 0.0: psutil needs two.
        known, self._known = self._known, set(found)
        if found:
            broken = self._count(_WATCHER, self._breaches(found.values(), known))
            if broken is not None:
                await self._restart(broken, set(found))
                return
        else:
            self.counts.pop(_WATCHER, None)  # stopped: nothing to judge
        if self.process_children:
            await self._look_after_children(found)

    async def _processes(self) -> Optional[Dict[int, Process]]:
        """The watcher's processes, from the stream or ``stats``; ``None`` (counted and
        logged) when circusd did not tell."""
        if self.use_stream():
            return self.figures.processes(self.watcher)
        if self.use_psutil():
            due = self.refresh_due([self.watcher], time.monotonic())
            found = (await self.read_processes([self.watcher], due))[self.watcher]
            if found is None:
                self._count_metric('error')
                self._say_once('stats', logging.WARNING, '%s: cannot list its processes',
                               self.watcher)
            elif self._say_once.forget('stats'):
                self.log.info('%s: its processes are read again', self.watcher)
            return found
        reply = await self.ask('stats', name=self.watcher)
        if reply.get('status') != 'ok':
            self._count_metric('error')
            self._say_once('stats', logging.WARNING, '%s: cannot read its stats: %s',
                           self.watcher, reply.get('reason'))
            return None
        if self._say_once.forget('stats'):
            self.log.info('%s: stats work again', self.watcher)
        return processes(reply.get('info'))

    async def _look_after_children(self, found: Dict[int, Process]) -> None:
        present = set()
        for process in found.values():
            for child in process.children:
                present.add(child.pid)
                # circusd 0.19 measures a child's CPU afresh each time: always 0.0.
                broken = self._count(child.pid, self._breaches([child], cpu_of=()))
                if broken is not None:
                    await self._signal_child(process.pid, child.pid, broken)
        for key in [k for k in self.counts if k != _WATCHER and k not in present]:
            del self.counts[key]

    def _breaches(self, judged: Iterable[Process],
                  cpu_of: Container[int]) -> Dict[str, Tuple[str, float, Limit, str]]:
        """The limits the processes ``judged`` together break, the CPU of the pids in
        ``cpu_of`` only counting: ``{kind: (option, figure, limit, what was seen)}``."""
        judged = list(judged)
        cpus = [p.cpu for p in judged if p.pid in cpu_of and p.cpu is not None]
        mems = [p.mem for p in judged if p.mem is not None]
        health = [(max(cpus) + max(mems)) / 2] if cpus and mems else []
        figures: Dict[Tuple[str, bool], List[float]] = {
            ('cpu', True): cpus, ('health', True): health, ('memory', True): mems,
            ('memory', False): [p.rss for p in judged if p.rss is not None]}
        breaches = {}
        for kind, option, what, broken, said in _RULES:
            limit = getattr(self, option)
            values = [] if limit is None else figures[what, limit.percent]
            if not values:
                continue
            value = max(values) if broken is operator.gt else min(values)
            if broken(value, limit.value):
                breaches[kind] = (option, value, limit, '%s %s %s %s %s' % (
                    what, limit.describe(value), said, option, limit.describe(limit.value)))
        return breaches

    def _count(self, key: Union[str, int],
               breaches: Dict[str, Tuple]) -> Optional[Dict[str, Any]]:
        """Count the breaches of watcher or child ``key`` and send their counters.

        When a count goes past ``max_count``, returns the details of the event to emit
        (``reason``, ``reasons``, ``option``, ``value``, ``limit``, ``unit``, ``checks``)
        and ``seen`` (what was seen, for logs); else ``None``.
        """
        counts = self.counts.setdefault(key, dict.fromkeys(KINDS, 0))
        for kind in KINDS:
            if kind in breaches:
                counts[kind] += 1
                self._count_metric(kind)
            else:
                counts[kind] = 0
        if breaches:
            self.log.debug('%s: %s: %s', self.watcher, 'watcher' if key == _WATCHER
                           else 'child %s' % key, ', '.join(b[3] for b in breaches.values()))
        worst = max(KINDS, key=counts.__getitem__)
        if counts[worst] <= self.max_count:
            return None
        option, value, limit, seen = breaches[worst]
        return {'reason': worst, 'option': option, 'value': value, 'limit': limit.value,
                'unit': 'percent' if limit.percent else 'bytes', 'checks': counts[worst],
                'reasons': [k for k in KINDS if counts[k] > self.max_count], 'seen': seen}

    # -- the actions -----------------------------------------------------------------------

    async def _restart(self, broken: Dict[str, Any], pids: Set[int]) -> None:
        self.log.info('%s: %s at %d checks in a row: restarting the watcher', self.watcher,
                      broken['seen'], broken['checks'])
        self._count_metric('restarting')
        if not await self.restart(self.watcher, None, 'resource_restart', **broken):
            self._count_metric('error')
            return  # counts kept: the next bad check tries again
        self.counts.clear()
        self._known = set()
        self._replaced = pids

    async def _signal_child(self, pid: int, child_pid: int,
                            broken: Dict[str, Any]) -> None:
        signame = signal_name(self.child_signal)
        self.log.info('%s: child %d of process %d: %s at %d checks in a row: sending it %s',
                      self.watcher, child_pid, pid, broken['seen'], broken['checks'],
                      signame)
        self._count_metric('restarting')
        reply = await self.change_state('signal', name=self.watcher, pid=pid,
                                        childpid=child_pid, signum=self.child_signal)
        if reply.get('status') != 'ok':
            self.log.error('%s: could not signal child %d: %s', self.watcher, child_pid,
                           reply.get('reason'))
            self._count_metric('error')
            return
        self.log.info('%s: sent %s to child %d', self.watcher, signame, child_pid)
        self.emit(self.watcher, 'resource_signal', pid=pid, child_pid=child_pid,
                  signal=signame, **broken)
        self.counts.pop(child_pid, None)
