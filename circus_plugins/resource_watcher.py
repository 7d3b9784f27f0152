"""Restarting a watcher whose processes use too much, or too little, CPU or memory.

Every ``loop_rate`` seconds the plugin reads circusd's ``stats`` for one watcher and
compares its processes with the limits below. Each limit keeps its own count of checks
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
import re
import signal
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from .config import LARGEST, MAX_COUNT, abandon, to_name, to_signum
from .errors import CallError, ConfigError
from .statsd import BaseObserver, human_to_bytes

log = logging.getLogger('circus_plugins')

#: Seconds during which a restart or signal refused by a busy circusd is tried again.
_BUSY_RETRY = 30.0
#: Values that switch a limit off.
_OFF = {'', 'none', 'off', 'no', 'false'}
#: The counters of one watcher or child, in the order they are reported.
KINDS = ('over_cpu', 'under_cpu', 'over_memory', 'under_memory', 'over_health')
#: Key of the watcher's own counts; a child's counts are keyed by its pid.
_WATCHER = 'watcher'


class Limit:
    """A limit: ``value`` in percent, or in bytes when ``percent`` is false."""

    def __init__(self, value: float, percent: bool = True) -> None:
        self.value = value
        self.percent = percent

    def __repr__(self) -> str:
        return 'Limit(%r, percent=%r)' % (self.value, self.percent)

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, Limit) and
                (self.value, self.percent) == (other.value, other.percent))

    def describe(self, value: float) -> str:
        """``value`` with this limit's unit, for logs."""
        return '%g %%' % value if self.percent else '%d bytes' % value


class _Sample:
    """The figures of the processes judged together: CPU and memory in percent, memory
    in bytes (resident set size). Unknown figures are left out."""

    def __init__(self) -> None:
        self.cpus: List[float] = []
        self.mems: List[float] = []
        self.sizes: List[int] = []

    def add(self, info: Dict[str, Any], with_cpu: bool) -> None:
        """Add one process of a ``stats`` reply; its CPU only if ``with_cpu``."""
        cpu = _percent(info.get('cpu')) if with_cpu else None
        mem = _percent(info.get('mem'))
        if cpu is not None:
            self.cpus.append(cpu)
        if mem is not None:
            self.mems.append(mem)
        try:
            self.sizes.append(human_to_bytes(info.get('mem_info1')))
        except ValueError:  # 'N/A': circusd could not read it
            pass

    def memory(self, limit: Limit) -> List[float]:
        return self.mems if limit.percent else self.sizes


def _percent(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):  # 'N/A'
        return None


class ResourceWatcher(BaseObserver):
    """Restarts watcher ``watcher`` when its processes stay beyond a CPU, memory or
    health limit for more than ``max_count`` checks in a row, one check every
    ``loop_rate`` seconds (default 60).

    Limits: ``max_cpu`` (default 90) and ``min_cpu`` (off) in percent of one core;
    ``max_mem`` (90) and ``min_mem`` (off) in percent of the machine's memory, or in bytes
    when written with a unit (``250M``); ``health_threshold`` (75), in percent. Other
    options: ``watcher`` (required; ``service`` is a deprecated alias), ``max_count``
    (3), ``process_children`` (false: when true, each child of the watcher's processes is
    judged too, on memory only, and sent ``child_signal`` instead of a restart),
    ``child_signal`` (``SIGTERM``, a name or a number), and those of
    :class:`~circus_plugins.statsd.BaseObserver`.

    Sends the statsd counters ``_resource_watcher.<watcher>.over_cpu``, ``under_cpu``,
    ``over_memory``, ``under_memory``, ``over_health`` (once per bad check),
    ``restarting`` (once per restart or child signal) and ``error`` (failed ``stats``,
    refused restart or signal).
    """

    name = 'resource_watcher'

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server=None, **config):
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        try:
            self._read_options()
        except ConfigError:
            self.statsd.stop()
            abandon(self)
            raise
        #: Counts of bad checks in a row: ``{'watcher' or child pid: {kind: count}}``.
        self.counts: Dict[Union[str, int], Dict[str, int]] = {}
        self._known: Set[int] = set()  # the watcher's pids at the previous check
        self._replaced: Set[int] = set()  # pids we restarted, maybe still stopping
        self._failing: Optional[str] = None  # the reason of the last failed stats

    def _read_options(self) -> None:
        watcher = self._option(to_name, 'watcher', '')
        service = self._option(to_name, 'service', '')
        if service:
            log.warning('plugin %s: option "service" is deprecated: use "watcher"',
                        self.name)
        self.watcher = watcher or service
        if not self.watcher and 'watcher' in self.config:
            raise ConfigError('plugin %s: option %r: %r is empty: the name of the watcher '
                              'to look after is required'
                              % (self.name, 'watcher', self.config['watcher']))
        if not self.watcher:
            raise ConfigError('plugin %s: option %r is required: the name of the watcher '
                              'to look after' % (self.name, 'watcher'))
        self.max_cpu = self._limit('max_cpu', 90, zero_is_off=True)
        self.min_cpu = self._limit('min_cpu', None)
        self.max_mem = self._limit('max_mem', 90, sizes=True, zero_is_off=True)
        self.min_mem = self._limit('min_mem', None, sizes=True)
        self.health_threshold = self._limit('health_threshold', 75, zero_is_off=True)
        self.max_count = self.option('max_count', 3, int, minimum=0, maximum=MAX_COUNT)
        self.process_children = self.option('process_children', False, bool)
        self.child_signal = self._option(to_signum, 'child_signal', 'SIGTERM')

    def _limit(self, key: str, default: Optional[float], sizes: bool = False,
               zero_is_off: bool = False) -> Optional[Limit]:
        """Read limit ``key``: ``None`` when switched off, else a :class:`Limit`.

        A memory limit (``sizes``) in percent is at most 100; in bytes, at most
        :data:`~circus_plugins.config.LARGEST`.
        """
        raw = self.config.get(key, default)
        if raw is None or str(raw).strip().lower() in _OFF:
            return None
        text = str(raw).strip()
        if not sizes or re.fullmatch(r'[-+0-9.eE]+', text):  # a number: in percent
            limit = Limit(self.option(key, default, float, minimum=0,
                                      maximum=100 if sizes else None))
        else:
            try:
                size = human_to_bytes(text)
            except (ValueError, OverflowError):  # OverflowError: more digits than a float
                size = None
            if size is None or size > LARGEST:
                raise ConfigError('plugin %s: option %r: %r is neither a percentage nor '
                                  'a size like 250M' % (self.name, key, raw))
            limit = Limit(size, percent=False)
        if zero_is_off and limit.value == 0:
            return None
        return limit

    # -- the checks ------------------------------------------------------------------------

    async def look_after(self) -> None:
        """Read the watcher's stats, count the limits broken, act past ``max_count``."""
        try:
            reply = await self.call_async('stats', name=self.watcher)
        except CallError as exc:
            reply = {'status': 'error', 'reason': str(exc)}
        if reply.get('status') != 'ok':
            self._stats_failed(str(reply.get('reason')))
            return
        if self._failing is not None:
            log.info('%s: stats work again', self.watcher)
            self._failing = None
        processes = {}
        for key, info in (reply.get('info') or {}).items():
            if isinstance(info, dict):  # not "No such process (stopped?)"
                try:
                    processes[int(info.get('pid', key))] = info
                except (TypeError, ValueError):
                    continue
        # circusd answers a restart at once; the old processes may take a while to go.
        self._replaced &= set(processes)
        for pid in self._replaced:
            del processes[pid]
        # circusd's first CPU reading of a process is always 0.0: psutil needs two.
        known, self._known = self._known, set(processes)
        if processes:
            sample = _Sample()
            for pid, info in processes.items():
                sample.add(info, with_cpu=pid in known)
            broken = self._count(_WATCHER, self._breaches(sample))
            if broken is not None:
                await self._restart(broken, set(processes))
                return
        else:
            self.counts.pop(_WATCHER, None)  # stopped: nothing to judge
        if self.process_children:
            await self._look_after_children(processes)

    async def _look_after_children(self, processes: Dict[int, Dict[str, Any]]) -> None:
        present = set()
        for pid, info in processes.items():
            for child in info.get('children') or []:
                child_pid = child.get('pid') if isinstance(child, dict) else None
                if not isinstance(child_pid, int) or isinstance(child_pid, bool):
                    continue
                present.add(child_pid)
                sample = _Sample()
                # circusd 0.19 measures a child's CPU afresh each time: always 0.0.
                sample.add(child, with_cpu=False)
                broken = self._count(child_pid, self._breaches(sample))
                if broken is not None:
                    await self._signal_child(pid, child_pid, broken)
        for key in [k for k in self.counts if k != _WATCHER and k not in present]:
            del self.counts[key]

    def _breaches(self, sample: _Sample) -> Dict[str, str]:
        """The limits ``sample`` breaks: ``{kind: what was seen}``."""
        found = {}
        cpus = sample.cpus
        if self.max_cpu is not None and cpus and max(cpus) > self.max_cpu.value:
            found['over_cpu'] = 'cpu %g %% above max_cpu %g %%' % (
                max(cpus), self.max_cpu.value)
        if self.min_cpu is not None and cpus and min(cpus) <= self.min_cpu.value:
            found['under_cpu'] = 'cpu %g %% at or below min_cpu %g %%' % (
                min(cpus), self.min_cpu.value)
        limit = self.max_mem
        if limit is not None and sample.memory(limit):
            value = max(sample.memory(limit))
            if value > limit.value:
                found['over_memory'] = 'memory %s above max_mem %s' % (
                    limit.describe(value), limit.describe(limit.value))
        limit = self.min_mem
        if limit is not None and sample.memory(limit):
            value = min(sample.memory(limit))
            if value < limit.value:
                found['under_memory'] = 'memory %s below min_mem %s' % (
                    limit.describe(value), limit.describe(limit.value))
        if self.health_threshold is not None and cpus and sample.mems:
            health = (max(cpus) + max(sample.mems)) / 2
            if health > self.health_threshold.value:
                found['over_health'] = 'health %g %% above health_threshold %g %%' % (
                    health, self.health_threshold.value)
        return found

    def _count(self, key: Union[str, int],
               breaches: Dict[str, str]) -> Optional[Tuple[int, str]]:
        """Count the breaches of watcher or child ``key`` and send their counters.

        Returns ``(checks in a row, what was seen)`` when a count goes past
        ``max_count``, else ``None``.
        """
        counts = self.counts.setdefault(key, dict.fromkeys(KINDS, 0))
        for kind in KINDS:
            if kind in breaches:
                counts[kind] += 1
                self.metrics.increment('_resource_watcher.%s.%s' % (self.watcher, kind))
            else:
                counts[kind] = 0
        if breaches:
            log.debug('%s: %s: %s', self.watcher, 'watcher' if key == _WATCHER
                      else 'child %s' % key, ', '.join(breaches.values()))
        worst = max(KINDS, key=counts.__getitem__)
        if counts[worst] > self.max_count:
            return counts[worst], breaches[worst]
        return None

    # -- the actions -----------------------------------------------------------------------

    async def _restart(self, broken: Tuple[int, str], pids: Set[int]) -> None:
        checks, seen = broken
        log.info('%s: %s at %d checks in a row: restarting the watcher',
                 self.watcher, seen, checks)
        self.metrics.increment('_resource_watcher.%s.restarting' % self.watcher)
        try:
            reply = await self.call_async('restart', name=self.watcher,
                                          busy_retry=_BUSY_RETRY)
        except CallError as exc:
            log.warning('%s: restart sent, but not confirmed: %s', self.watcher, exc)
        else:
            if reply.get('status') != 'ok':
                log.error('%s: could not restart it: %s', self.watcher,
                          reply.get('reason'))
                self.metrics.increment('_resource_watcher.%s.error' % self.watcher)
                return  # counts kept: the next bad check tries again
            log.info('%s: restarted', self.watcher)
        self.counts.clear()
        self._known = set()
        self._replaced = pids

    async def _signal_child(self, pid: int, child_pid: int,
                            broken: Tuple[int, str]) -> None:
        checks, seen = broken
        signame = _signal_name(self.child_signal)
        log.info('%s: child %d of process %d: %s at %d checks in a row: sending it %s',
                 self.watcher, child_pid, pid, seen, checks, signame)
        self.metrics.increment('_resource_watcher.%s.restarting' % self.watcher)
        reply = await self.change_state('signal', name=self.watcher, pid=pid,
                                        childpid=child_pid, signum=self.child_signal)
        if reply.get('status') != 'ok':
            log.error('%s: could not signal child %d: %s', self.watcher, child_pid,
                      reply.get('reason'))
            self.metrics.increment('_resource_watcher.%s.error' % self.watcher)
            return
        log.info('%s: sent %s to child %d', self.watcher, signame, child_pid)
        self.counts.pop(child_pid, None)

    def _stats_failed(self, reason: str) -> None:
        self.metrics.increment('_resource_watcher.%s.error' % self.watcher)
        if reason != self._failing:  # logged once until it changes or works again
            log.warning('%s: cannot read its stats: %s', self.watcher, reason)
            self._failing = reason


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return 'signal %d' % signum
