"""Stopping watchers whose processes die too often ("flapping").

A watcher flaps when ``attempts`` of its processes die within ``window`` seconds (plus
``check_delay``, as circus counts: circusd only notices deaths every ``check_delay``). The
plugin then stops it, starts it again ``retry_in`` seconds later, and after ``max_retry``
such retries stops it for good. Each stop and start is confirmed by circusd (retried while
circusd is busy) and logged.

Options, each of which a watcher may override with a ``flapping.<option>`` key in its own
section:

- ``attempts`` (default 2): deaths within the window that make a watcher flap;
- ``window`` (default 1): the window, in seconds;
- ``retry_in`` (default 7): seconds before a flapping watcher is started again;
- ``max_retry`` (default 5): restarts before giving up; -1 retries forever;
- ``active`` (default true): false leaves the watcher (or, at plugin level, every
  watcher) alone.

Example::

    [plugin:flapping]
    use = circus_plugins.flapping.Flapping
    retry_in = 3
    max_retry = 2

    [watcher:web]
    cmd = ./web
    flapping.max_retry = 10
"""
import collections
import logging
import time
from typing import Any, Dict, List, Optional

from .config import MAX_COUNT, MAX_SECONDS, abandon, to_bool, to_number
from .errors import CallError, ConfigError
from .events import read_event, skip_event
from .plugin import CircusPlugin

log = logging.getLogger('circus_plugins')

INFINITE_RETRY = -1
#: Seconds during which change_state asks a busy circusd again (its default).
_BUSY_RETRY = 30.0
#: Seconds an event caused by our own stop or start is awaited (a stop of a stopped
#: watcher publishes none).
_EXPECT_FOR = _BUSY_RETRY + 10.0
#: Seconds a kill is remembered while its reap is awaited.
_KILL_MEMORY = 60.0
#: Kills remembered per watcher at most: a decr publishes kills and no reaps.
_MAX_KILLS = 4096

# name: (kind, default, minimum, maximum)
_OPTIONS = {
    'attempts': (int, 2, 1, MAX_COUNT),
    'window': (float, 1.0, 0, MAX_SECONDS),
    'retry_in': (float, 7.0, 0, MAX_SECONDS),
    'max_retry': (int, 5, -1, MAX_COUNT),
    'active': (bool, True, None, None),
}


class _Watch:
    """What the plugin knows of one watcher."""

    def __init__(self) -> None:
        self.deaths = collections.deque()  # times of reaps, as circusd stamped them
        self.tries = 0
        self.restarted = 0.0               # time of our last start
        self.options: Optional[Dict[str, Any]] = None
        self.retry = None                  # timeout handle of the pending restart
        self.acting = False                # a stop or start of ours is under way
        self.killed: Dict[int, float] = {}  # pid -> when circusd said it killed it
        self.expected: Dict[str, List[float]] = {'stop': [], 'start': []}
        # ^ deadlines of the stop/start events our own commands will cause

    def killed_on_purpose(self, pid: int, now: float) -> bool:
        """Forget ``pid``'s kill and say whether there was one. circusd publishes a kill
        before every process it kills (stop, restart, decr...) and, except for decr, a
        reap after: those deaths are no flapping."""
        self.forget_kills(now)
        return self.killed.pop(pid, None) is not None

    def forget_kills(self, now: float) -> None:
        """Drop kills older than _KILL_MEMORY and, past _MAX_KILLS, the oldest: decr
        publishes no reap, so its kills would otherwise stay forever."""
        for old in [p for p, when in self.killed.items() if now - when > _KILL_MEMORY]:
            del self.killed[old]
        for old in list(self.killed)[:len(self.killed) - _MAX_KILLS]:
            del self.killed[old]  # in the order they came

    def expect(self, action: str) -> None:
        self.expected[action].append(time.monotonic() + _EXPECT_FOR)

    def expected_event(self, action: str) -> bool:
        """Consume an expectation of ``action``, if one is still due."""
        now = time.monotonic()
        pending = [t for t in self.expected[action] if t > now]
        self.expected[action] = pending[1:]
        return bool(pending)


class Flapping(CircusPlugin):
    """Stops watchers that flap, retries them, and gives up after ``max_retry``."""

    name = 'flapping'

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server=None, **config):
        try:
            super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
            self.defaults = {key: self.option(key, default, kind, minimum=minimum,
                                              maximum=maximum)
                             for key, (kind, default, minimum, maximum) in _OPTIONS.items()}
        except ConfigError:
            abandon(self)  # this plugin will never run: close what the base class made
            raise
        for key, value in self.defaults.items():
            setattr(self, key, value)
        self.watches: Dict[str, _Watch] = {}

    def handle_recv(self, data):
        event = read_event(self.name, data, fields=('kill', 'reap'))
        if event is None:
            return
        watcher, action = event.watcher, event.action
        if action in ('kill', 'reap'):
            self._death(event)
            return
        watch = self.watches.get(watcher)
        if watch is None:
            return  # nothing counted yet: nothing to forget
        if action == 'updated':
            watch.options = None  # read again at the next death
        elif action == 'remove':
            self._by_someone_else(watcher, watch, action)
            del self.watches[watcher]
        elif action in ('stop', 'start') and not watch.expected_event(action):
            self._by_someone_else(watcher, watch, action)

    def _death(self, event) -> None:
        """A kill (remembered: its reap is no flapping) or a reap (counted)."""
        pid, now = event.pid(), time.time()
        if event.action == 'kill':
            if pid is None:
                skip_event(self.name, event, 'process_pid')
                return
            watch = self.watches.setdefault(event.watcher, _Watch())
            watch.killed[pid] = now
            if len(watch.killed) > _MAX_KILLS:
                watch.forget_kills(now)
            return
        # circusd always stamps a reap; a stamp from the future (another clock, or junk)
        # counts as now, or it would hold the window open.
        died = event.time() if 'time' in event.fields else now
        if pid is None or died is None:
            skip_event(self.name, event, 'process_pid', 'time')
            return
        watch = self.watches.setdefault(event.watcher, _Watch())
        if watch.killed_on_purpose(pid, now):
            return
        if not watch.acting and watch.retry is None:
            watch.deaths.append(min(died, now))
            self.loop.add_callback(self._check, event.watcher, watch)

    def handle_stop(self):
        self.loop.add_callback(self._cancel_retries)

    def _cancel_retries(self):
        for watch in self.watches.values():
            if watch.retry is not None:
                self.loop.remove_timeout(watch.retry)
                watch.retry = None

    def _by_someone_else(self, watcher: str, watch: _Watch, action: str) -> None:
        """An operator (or another plugin) stopped or started the watcher: forget the
        deaths and tries we counted, and drop our pending restart."""
        if watch.retry is not None:
            self.loop.remove_timeout(watch.retry)
            watch.retry = None
            log.info('%s: %s by someone else: cancelled our restart', watcher, action)
        watch.deaths.clear()
        watch.tries = 0
        watch.options = None  # a reloadconfig publishes no "updated": read them again

    async def options_for(self, watcher: str, watch: _Watch) -> Dict[str, Any]:
        """The plugin's options overridden by the watcher's ``flapping.*`` options."""
        if watch.options is not None:
            return watch.options
        options = dict(self.defaults)
        reply = await self.call_async('options', name=watcher)
        prefix = self.name + '.'
        for key, value in reply.get('options', {}).items():
            option = key[len(prefix):] if key.startswith(prefix) else None
            if option in _OPTIONS:
                kind, _, minimum, maximum = _OPTIONS[option]
                try:
                    options[option] = (to_bool(value, key) if kind is bool else
                                       to_number(value, key, minimum=minimum,
                                                 maximum=maximum, integer=kind is int))
                except ConfigError as exc:
                    log.error('%s: ignored: %s', watcher, exc)
        if not to_bool(reply.get('options', {}).get('check_flapping', True)):
            options['active'] = False
        watch.options = options
        return options

    async def _check(self, watcher: str, watch: _Watch) -> None:
        # Run by the loop, where an exception would reach tornado's handler, not ours.
        try:
            await self._judge(watcher, watch)
        except Exception:
            log.exception('plugin %s: %s: checking for flapping failed', self.name, watcher)

    async def _judge(self, watcher: str, watch: _Watch) -> None:
        try:
            options = await self.options_for(watcher, watch)
        except CallError as exc:
            log.error('%s: cannot read its options: %s', watcher, exc)
            return
        # circusd notices deaths when it checks its processes, every check_delay
        # seconds, so deaths that close together can be up to check_delay further apart.
        span = options['window'] + self.check_delay
        # Reaps may come out of order (stamps from circusd): keep those in the window
        # that ends with the latest, whatever their order.
        latest = max(watch.deaths, default=time.time())
        recent = [died for died in watch.deaths if latest - died <= span]
        watch.deaths = collections.deque(recent)
        if not options['active'] or watch.acting or watch.retry is not None:
            return
        if len(watch.deaths) == 1 and latest - watch.restarted > span:
            watch.tries = 0  # it had run a whole window without dying: stable again
        if len(watch.deaths) < options['attempts']:
            return
        watch.deaths.clear()
        max_retry = options['max_retry']
        if watch.tries < max_retry or max_retry == INFINITE_RETRY:
            watch.tries += 1
            log.info('%s: flapping detected: retry in %g s (attempt number %d)',
                     watcher, options['retry_in'], watch.tries)
            if await self._command('stop', watcher, watch):
                watch.retry = self.loop.call_later(options['retry_in'], self._restart,
                                                   watcher, watch)
        else:
            log.info('%s: flapping detected: reached max retry limit (%d): stopping it '
                     'for good', watcher, max_retry)
            watch.tries = 0
            await self._command('stop', watcher, watch)

    async def _restart(self, watcher: str, watch: _Watch) -> None:
        watch.retry = None
        try:  # a timer's callback: nothing may escape to the loop
            if await self._command('start', watcher, watch):
                watch.restarted = time.time()
        except Exception:
            log.exception('plugin %s: %s: the restart failed', self.name, watcher)

    async def _command(self, command: str, watcher: str, watch: _Watch) -> bool:
        """Send ``command`` for ``watcher`` until circusd takes it; log the outcome."""
        watch.acting = True
        watch.expect(command)
        try:
            reply = await self.change_state(command, name=watcher)
        finally:
            watch.acting = False
        if reply.get('status') == 'ok':
            log.info('%s: %s', watcher, 'stopped' if command == 'stop' else 'started')
            return True
        watch.expected[command].pop()
        log.error('%s: could not %s it: %s', watcher, command, reply.get('reason'))
        return False
