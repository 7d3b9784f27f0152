"""Scaling watchers up and down with the CPU their processes use: :class:`Autoscaler`.

Every ``loop_rate`` seconds the plugin reads, with psutil, the CPU seconds that each
process of an autoscaled watcher has used (its children's included), and works out the
average CPU per process since the last reading, in percent of one core. When that average
has stayed above ``cpu_high`` for ``up_after`` seconds it adds ``step`` processes
(circusd's ``incr``); when it has stayed below ``cpu_low`` for ``down_after`` seconds it
takes ``step`` away (``decr``); never beyond ``min`` and ``max``, and never within
``cooldown`` seconds of its last change. Each option may be set per watcher, as
``autoscale.<option>`` in the watcher's section.

It leaves alone a watcher that is not active (stopped, stopping, starting), one whose
processes crashed lately and one that the flapping plugin stopped lately; with the
memory guard on, it adds no process when the machine has not the memory for it. Each
decision is logged with its reason and announced as a plugin-made event,
``plugin.<watcher>.autoscale``. It needs psutil: ``pip install circus-plugins[autoscale]``.

What it knows of circusd comes from events as far as they tell, so that a check costs
circusd one ``status`` when nothing happened: the pids of the processes from ``spawn``,
``reap`` and ``kill`` (:class:`~circus_plugins._processes.Processes`; ``list`` of an
autoscaled watcher only when it is new or its events could not be followed, and after a
change of ours); a watcher's options (its ``autoscale.*`` and numprocesses) once, then
again after an ``add``, ``updated`` or ``start`` of it, a ``kill`` or a ``spawn`` beyond its
numprocesses (``incr`` and ``decr`` by others). Both are read again for every watcher at
start, a moment after the SUB socket reconnected and after circusd did not answer, and
for each watcher once every :data:`~circus_plugins.periodic.SAFETY_REFRESH` seconds,
spread over that time (``reloadconfig`` publishes no ``updated``).
"""
import asyncio
import logging
import math
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._log import SayOnce
from .._processes import Processes, pids_of
from .._usage import Usage, UsageReader, import_psutil
from ..config import MAX_COUNT, MAX_SECONDS, to_bool, to_matcher, to_number
from ..errors import ConfigError
from ..events import CRASH, Event, Exits, read_event, shorten, whole
from ..periodic import PeriodicPlugin
from ._scaling import Decision, Settings, Trend, decide

__all__ = ['Autoscaler', 'Settings', 'Trend', 'decide']

#: The prefix of a watcher's own options, whatever the plugin's section is named.
PREFIX = 'autoscale.'
#: Seconds a watcher is left alone after the flapping plugin stopped it.
FLAPPING_MEMORY = 600.0
#: Largest ``cpu_high``/``cpu_low``, in percent of one core (a process and its children
#: may use many cores).
MAX_CPU = 1000000.0
#: Watchers remembered at most for their crashes and flappings.
_MOST_WATCHERS = 4096
#: Seconds between two questions while a change is being confirmed.
_CONFIRM_EVERY = 0.05

_count = partial(to_number, minimum=1, maximum=MAX_COUNT, integer=True)
_seconds = partial(to_number, minimum=0, maximum=MAX_SECONDS)
_percent = partial(to_number, minimum=0, maximum=MAX_CPU)

#: ``{option: (default, converter)}``: the converter reads the plugin's option (through
#: :meth:`~circus_plugins.CircusPlugin.option`) and a watcher's ``autoscale.<option>``
#: alike.
OPTIONS: Dict[str, Tuple[Any, Callable[..., Any]]] = {
    'min': (1, _count),
    'max': (4, _count),
    'step': (1, _count),
    'cpu_high': (70.0, _percent),
    'cpu_low': (20.0, _percent),
    'up_after': (30.0, _seconds),
    'down_after': (120.0, _seconds),
    'cooldown': (60.0, _seconds),
    'memory_guard': (True, to_bool),
    'dry_run': (False, to_bool),
}
#: A watcher's own options beyond those: ``autoscale.active = false`` exempts it.
WATCHER_ONLY = {'active': (True, to_bool)}


def _described(s: Settings) -> str:
    """Settings in words, for a log line."""
    return ('%d to %d processes, %d at a time; up above %g%% CPU for %g s, down below '
            '%g%% for %g s; cooldown %g s%s%s' % (
                s.min, s.max, s.step, s.cpu_high, s.up_after, s.cpu_low, s.down_after,
                s.cooldown, '' if s.memory_guard else '; no memory guard',
                '; dry run' if s.dry_run else ''))


def _processes(count: int) -> str:
    return '1 process' if count == 1 else '%d processes' % count


def _megabytes(size: float) -> str:
    return '%.1f MB' % (size / 2 ** 20)


class _Watch:
    """What the plugin knows of one watcher."""

    def __init__(self) -> None:
        self.read_at = -math.inf          # clock time its options were last read
        self.read_error: Optional[str] = None  # why the last reading failed
        self.autoscaled = False
        self.settings = Settings()
        self.problem: Optional[str] = None  # why its settings cannot be used
        self.wanted: Optional[int] = None   # its numprocesses option
        self.trend = Trend(self.settings.cpu_high, self.settings.cpu_low)
        self.readings: Optional[Tuple[float, Dict[int, float]]] = None  # when, pid -> CPU s
        self.rss: Optional[float] = None    # average resident memory of a process
        self.changed_at = -math.inf         # clock time of our last decision
        self.acting = False                 # a change of ours is under way
        self.skipped: Optional[str] = None  # the kind of reason it is left alone
        self.said: set = set()              # its keys in the plugin's SayOnce

    def forget_load(self) -> None:
        """Forget the readings: the next ones start afresh."""
        self.trend.clear()
        self.readings = None


class Autoscaler(PeriodicPlugin):
    """Adds processes to watchers that are busy and removes them from idle ones, from the
    CPU their processes use. Every option is described in the plugin's documentation
    page."""

    name = 'autoscaler'
    default_loop_rate = 5.0
    look_at_start = True

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.psutil = import_psutil(self.name, 'autoscale')
        self.defaults = Settings(**{key: self.option(key, default, convert)
                                    for key, (default, convert) in OPTIONS.items()})
        problem = self.defaults.problem()
        if problem:
            raise ConfigError('plugin %s: options %s' % (self.name, problem))
        #: Which watchers are autoscaled without ``autoscale.*`` options of their own
        #: (``None``: none).
        self.watchers: Optional[Callable[[str], bool]] = self.option('watchers', None,
                                                                      to_matcher)
        #: Reads the CPU seconds and memory of processes, children included.
        self.usage = UsageReader(self.psutil, children=True)
        #: The clock of every decision, in seconds (monotonic).
        self.clock: Callable[[], float] = time.monotonic
        self.exits = Exits()
        self._watches: Dict[str, _Watch] = {}
        #: The pids of each watcher's processes, kept from events.
        self.processes = Processes()
        self._crashed: Dict[str, float] = {}   # watcher -> clock time of its last crash
        self._flapped: Dict[str, float] = {}   # watcher -> clock time Flapping stopped it
        self._tasks: set = set()
        self._say = SayOnce(self.log)

    # -- events ----------------------------------------------------------------------------

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, fields=('kill', 'reap', 'spawn'),
                           plugin_events=True)
        if event is None:
            return
        if event.plugin is not None:
            if event.action in ('flapping', 'flapping_giveup'):
                self._remember(self._flapped, event.watcher)
            return
        if self.exits.see(event) == CRASH:
            self._remember(self._crashed, event.watcher)
        self.processes.see(event)
        watch = self._watches.get(event.watcher)
        if watch is not None and self._options_changed(event, watch):
            watch.read_at = -math.inf  # read them again at the next check

    def _options_changed(self, event: Event, watch: _Watch) -> bool:
        """Whether ``event`` says a watcher's options may have changed: ``set`` publishes
        ``updated``, ``incr`` spawns, ``decr`` only kills. A respawn after a crash changes
        nothing, and a crash loop must not make a question each time."""
        if event.action in ('add', 'updated', 'start', 'kill'):
            return True
        if event.action == 'spawn':
            count = self.processes.count(event.watcher)
            return count is None or watch.wanted is None or count > watch.wanted
        return False

    def _remember(self, times: Dict[str, float], watcher: str) -> None:
        times.pop(watcher, None)  # last in, as the latest
        times[watcher] = self.clock()
        while len(times) > _MOST_WATCHERS:
            del times[next(iter(times))]

    # -- the periodic check ----------------------------------------------------------------

    async def look_after(self) -> None:
        reply = await self.ask('status')
        statuses = reply.get('statuses')
        if reply.get('status') != 'ok' or not isinstance(statuses, dict):
            self._say('status', logging.ERROR, "cannot read the watchers' states from "
                      'circusd: %s', shorten(reply.get('reason', reply)))
            for known in self._watches.values():
                known.forget_load()
            self.refresh_everything()  # events may be missed meanwhile
            return
        if self._say.forget('status'):
            self.log.info("reading the watchers' states from circusd again")
        names = [name for name in statuses if isinstance(name, str) and name
                 and not name.startswith('plugin:') and name.isprintable()]
        for gone in set(self._watches) - set(names):
            self._forget(gone)
        self.processes.keep(names)
        now = self.clock()
        for name in names:
            self._watches.setdefault(name, _Watch())
        # The safety net for events missed: the pids and options of a few watchers each
        # time, each one every SAFETY_REFRESH seconds, all of them after a reconnection.
        for name in self.refresh_due(names, now):
            self.processes.stale(name)
            self._watches[name].read_at = -math.inf
        stale = [name for name in names if self._stale(self._watches[name])]
        await asyncio.gather(*(self._read_options(name) for name in stale))
        now = self.clock()
        measured = []
        for name in names:
            watch = self._watches.get(name)
            if watch is None or not watch.autoscaled:
                continue
            try:
                reason = self._why_not(name, watch, statuses[name], now)
            except Exception:  # never let one watcher stop the others
                self.log.exception('%s: checking it failed', shorten(name))
                continue
            if reason is None:
                measured.append(name)
            elif reason[0] != 'acting':
                watch.forget_load()
        if measured:
            await self._measure(measured)

    def _stale(self, watch: _Watch) -> bool:
        # -inf: never read, or an event or the safety refresh (refresh_due) said so.
        return watch.read_at == -math.inf

    def _forget(self, name: str) -> None:
        for key in self._watches.pop(name).said:
            self._say.forget(key)

    def _say_about(self, name: str, watch: _Watch, what: str, level: int, msg: str,
                   *args: Any) -> None:
        """Log ``msg`` about watcher ``name`` once (:class:`SayOnce`), ``what`` telling
        apart the problems of one watcher."""
        key = (name, what)
        watch.said.add(key)
        self._say(key, level, '%s: ' + msg, shorten(name), *args)

    def _unsay(self, name: str, watch: _Watch, what: str) -> None:
        watch.said.discard((name, what))
        self._say.forget((name, what))

    async def _read_options(self, name: str) -> None:
        reply = await self.ask('options', name=name)
        watch = self._watches.get(name)
        if watch is None:
            return  # removed meanwhile
        options = reply.get('options')
        if reply.get('status') != 'ok' or not isinstance(options, dict):
            watch.read_error = 'cannot read its options from circusd: %s' % shorten(
                reply.get('reason', reply))
            return
        watch.read_error = None
        watch.read_at = self.clock()
        try:
            self._take_options(name, watch, options)
        except Exception:
            self.log.exception('%s: reading its options failed', shorten(name))
            watch.problem = 'its options could not be read'

    def _take_options(self, name: str, watch: _Watch, options: Dict[str, Any]) -> None:
        own = {key[len(PREFIX):]: value for key, value in options.items()
               if isinstance(key, str) and key.startswith(PREFIX)}
        values = self.defaults._asdict()
        active = True
        for option, value in own.items():
            if option in OPTIONS:
                convert = OPTIONS[option][1]
            elif option in WATCHER_ONLY:
                convert = WATCHER_ONLY[option][1]
            else:
                self._say_about(name, watch, 'unknown ' + option, logging.WARNING,
                                'unknown option %s ignored', shorten(PREFIX + option))
                continue
            try:
                converted = convert(value, PREFIX + option)
            except ConfigError as exc:
                self._say_about(name, watch, option, logging.ERROR, 'ignored: %s', exc)
                continue
            self._unsay(name, watch, option)
            if option == 'active':
                active = converted
            elif option == 'dry_run':
                values['dry_run'] = self.defaults.dry_run or converted  # a plugin's wins
            else:
                values[option] = converted
        matched = self.watchers is not None and self.watchers(name)
        autoscaled = bool(own or matched) and active
        settings = Settings(**values)
        if autoscaled and (settings != watch.settings or not watch.autoscaled):
            self.log.info('%s: autoscaled: %s', shorten(name), _described(settings))
        elif watch.autoscaled and not autoscaled:
            self.log.info('%s: no longer autoscaled', shorten(name))
            watch.skipped = None
        watch.autoscaled = autoscaled
        if (settings.cpu_high, settings.cpu_low) != (watch.trend.high, watch.trend.low):
            watch.trend = Trend(settings.cpu_high, settings.cpu_low)
        watch.settings = settings
        watch.problem = settings.problem()
        if watch.problem is None and options.get('singleton') is True:
            watch.problem = 'it is a singleton'
        watch.wanted = whole(options.get('numprocesses'), 0, MAX_COUNT)

    def _why_not(self, name: str, watch: _Watch, status: Any,
                 now: float) -> Optional[Tuple[str, str]]:
        """Why ``watch`` is not to be scaled now, as ``(kind, text)``, logged once per
        kind; or ``None``."""
        reason = self._reason(name, watch, status, now)
        kind = None if reason is None else reason[0]
        if kind != watch.skipped and kind != 'acting':
            if reason is None:
                self.log.info('%s: autoscaled again', shorten(name))
            else:
                self.log.info('%s: left alone: %s', shorten(name), reason[1])
            watch.skipped = kind
        return reason

    def _reason(self, name: str, watch: _Watch, status: Any,
                now: float) -> Optional[Tuple[str, str]]:
        if watch.acting:
            return 'acting', 'a change is under way'
        if watch.read_error is not None:
            return 'options', watch.read_error
        if watch.problem is not None:
            return 'settings', watch.problem
        if status != 'active':
            return 'status', 'it is %s' % (status if isinstance(status, str) and
                                           status.isprintable() else shorten(status))
        if watch.wanted is None:
            return 'numprocesses', 'circusd does not say how many processes it wants'
        crashed = now - self._crashed.get(name, -math.inf)
        if crashed <= watch.settings.crash_memory():
            return 'crash', 'a process of it crashed %.1f s ago' % crashed
        flapped = now - self._flapped.get(name, -math.inf)
        if flapped <= FLAPPING_MEMORY:
            return 'flapping', 'the flapping plugin stopped it %.0f s ago' % flapped
        return None

    async def _measure(self, names: List[str]) -> None:
        replies = await self.processes.refresh(self.ask, names)
        pids: Dict[str, List[int]] = {}
        for name in names:
            watch = self._watches.get(name)
            reply = replies.get(name)
            if watch is None:
                continue
            if reply is not None and pids_of(reply) is None:
                self._say_about(name, watch, 'list', logging.ERROR,
                                'cannot list its processes: %s',
                                shorten(reply.get('reason', reply)))
                watch.forget_load()
                continue
            known = self.processes.pids(name)
            if known is None:
                continue  # not known yet: asked again at the next check
            if reply is not None:
                self._unsay(name, watch, 'list')
            pids[name] = sorted(known)
        keys = [(pid, 0.0) for found in pids.values() for pid in found]
        try:
            when, usage, available = await self.loop.run_in_executor(None, self._read, keys)
        except Exception as exc:
            self._say('psutil', logging.ERROR, 'cannot read the CPU use of processes: %s',
                      exc)
            for name in pids:
                self._watches[name].forget_load()
            return
        self._say.forget('psutil')
        self.processes.ended((name, pid) for name, found in pids.items() for pid in found
                             if (pid, 0.0) in self.usage.gone)
        for name, found in pids.items():
            watch = self._watches.get(name)
            if watch is None:
                continue
            try:
                self._judge(name, watch, when, {pid: usage[(pid, 0.0)] for pid in found
                                                if (pid, 0.0) in usage}, available)
            except Exception:
                self.log.exception('%s: judging its load failed', shorten(name))
                watch.forget_load()

    def _read(self, keys) -> Tuple[float, Dict[Any, Usage], Optional[float]]:
        """In a worker thread: when, the usage of each process, and the memory
        available (``None`` if psutil cannot tell)."""
        usage = self.usage.read(keys)
        when = self.clock()
        try:
            available = float(self.psutil.virtual_memory().available)
        except Exception:
            available = None
        return when, usage, available

    def _judge(self, name: str, watch: _Watch, when: float, usage: Dict[int, Usage],
               available: Optional[float]) -> None:
        previous = watch.readings
        watch.readings = (when, {pid: got.cpu for pid, got in usage.items()})
        watch.rss = (sum(got.rss for got in usage.values()) / len(usage)) if usage else None
        if previous is None:
            return
        since, before = previous
        elapsed = when - since
        deltas = [got.cpu - before[pid] for pid, got in usage.items() if pid in before]
        deltas = [delta for delta in deltas if delta >= 0]  # a pid used again: dropped
        if elapsed <= 0 or not deltas:
            watch.trend.clear()  # nothing measured: the runs are broken
            return
        cpu = sum(deltas) / elapsed / len(deltas) * 100
        watch.trend.add(since, when, cpu)
        self.log.debug('%s: %s at %.1f%% CPU each over %.2f s', shorten(name),
                       _processes(len(deltas)), cpu, elapsed)
        if self.clock() - watch.changed_at < watch.settings.cooldown:
            return
        assert watch.wanted is not None, 'only a watcher whose count is known is measured'
        decision = decide(watch.trend, watch.wanted, watch.settings)
        if decision is not None:
            self._start(name, watch, decision, available)

    # -- acting ----------------------------------------------------------------------------

    def _start(self, name: str, watch: _Watch, decision: Decision,
               available: Optional[float]) -> None:
        watch.acting = True
        task = asyncio.ensure_future(self._act(name, watch, decision, available))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _act(self, name: str, watch: _Watch, d: Decision,
                   available: Optional[float]) -> None:
        try:
            await self._carry_out(name, watch, d, available)
        except Exception:
            self.log.exception('%s: scaling %s failed', shorten(name), d.direction)
        finally:
            watch.acting = False
            watch.changed_at = self.clock()
            watch.forget_load()
            self.processes.stale(name)  # ours: one ``list`` rather than trust the events

    async def _carry_out(self, name: str, watch: _Watch, d: Decision,
                         available: Optional[float]) -> None:
        s, shown = watch.settings, shorten(name)
        added = d.after - d.before
        what = 'from %d to %s' % (d.before, _processes(d.after))
        event = dict(direction=d.direction, before=d.before, after=d.after,
                     cpu=round(d.cpu, 1), window=round(d.seconds, 1), dry_run=False,
                     held=False)
        if (d.direction == 'up' and s.memory_guard and available is not None
                and watch.rss is not None and available < watch.rss * added):
            reason = 'memory guard: %s available, less than %d x %s per process (%s)' % (
                _megabytes(available), added, _megabytes(watch.rss), d.reason)
            self.log.warning('%s: not scaling up %s: %s', shown, what, reason)
            self.emit(name, 'autoscale', reason=reason, **dict(event, held=True))
            return
        if s.dry_run:
            self.log.info('%s: dry run: would scale %s %s: %s', shown, d.direction, what,
                          d.reason)
            self.emit(name, 'autoscale', reason=d.reason, **dict(event, dry_run=True))
            return
        self.log.info('%s: scaling %s %s: %s', shown, d.direction, what, d.reason)
        command = 'incr' if d.direction == 'up' else 'decr'
        reply = await self.change_state(command, name=name, nb=abs(added))
        if reply.get('status') != 'ok':
            self.log.error('%s: could not scale %s %s: circusd said %s', shown, d.direction,
                           what, shorten(reply.get('reason', reply)))
            return
        after = whole(reply.get('numprocesses'), 0, MAX_COUNT)
        if after is None:
            after = d.after
        watch.wanted = after
        self.emit(name, 'autoscale', reason=d.reason, **dict(event, after=after))
        await self._confirm(name, after)

    async def _confirm(self, name: str, wanted: int) -> bool:
        """Ask circusd how many processes ``name`` runs until it runs ``wanted``, for
        ``call_timeout`` seconds at most; log the outcome."""
        deadline = self.loop.time() + self.call_timeout  # circusd's time, not the clock's
        running = None
        while True:
            reply = await self.ask('numprocesses', name=name)
            running = whole(reply.get('numprocesses'), 0, MAX_COUNT)
            if running == wanted:
                self.log.info('%s: %s running', shorten(name), _processes(running))
                return True
            if self.loop.time() >= deadline:
                break
            await asyncio.sleep(_CONFIRM_EVERY)
        self.log.warning('%s: %s running %g s after the change to %d',
                         shorten(name), 'an unknown number of processes' if running is None
                         else _processes(running), self.call_timeout, wanted)
        return False
