"""Stopping watchers whose processes die too often ("flapping").

A watcher flaps when ``attempts`` of its processes die within ``window`` + ``check_delay``
seconds (circusd notices deaths every ``check_delay``). The plugin then stops it, starts it
again ``retry_in`` seconds later and, after ``max_retry`` such retries, stops it for good.
A watcher may override each option with a ``flapping.<option>`` key of its own section
(``flapping.max_retry = 10``): see the plugin's page in the documentation.

It announces what it does with plugin-made events (:meth:`~circus_plugins.CircusPlugin.emit`):
``plugin.<watcher>.flapping`` when it has stopped a watcher and will start it again
(``retry_in`` seconds, ``attempt``, ``max_retry``), ``plugin.<watcher>.flapping_giveup``
when it has stopped one for good (``attempts``, ``max_retry``).
"""
import collections
import time
from functools import partial
from typing import Any, Awaitable, Callable, Deque, Dict, Optional, Tuple

from .config import MAX_COUNT, MAX_SECONDS, to_bool, to_number
from .errors import ConfigError
from .events import STOPPED, Exits, read_event, skip_event
from .plugin import BUSY_RETRY, CircusPlugin

INFINITE_RETRY = -1
#: Seconds an event caused by our own stop or start is awaited (a stop of a stopped
#: watcher publishes none).
_EXPECT_FOR = BUSY_RETRY + 10.0

#: ``{option: (default, converter)}``: the converter reads the plugin's option (through
#: :meth:`~circus_plugins.CircusPlugin.option`) and a watcher's ``flapping.<option>`` alike.
_OPTIONS: Dict[str, Tuple[Any, Callable[..., Any]]] = {
    'attempts': (2, partial(to_number, minimum=1, maximum=MAX_COUNT, integer=True)),
    'window': (1.0, partial(to_number, minimum=0, maximum=MAX_SECONDS)),
    'retry_in': (7.0, partial(to_number, minimum=0, maximum=MAX_SECONDS)),
    'max_retry': (5, partial(to_number, minimum=INFINITE_RETRY, maximum=MAX_COUNT,
                             integer=True)),
    'active': (True, to_bool),
}


class _Watch:
    """What the plugin knows of one watcher."""

    def __init__(self) -> None:
        self.deaths: Deque[float] = collections.deque()  # reap times, as circusd stamped them
        self.tries = 0
        self.restarted = 0.0               # time of our last start
        self.options: Optional[Dict[str, Any]] = None
        self.retry: Optional[object] = None  # timeout handle of the pending restart
        self.acting = False                # a stop or start of ours is under way
        # action -> until when the event of our own stop or start is awaited
        self.expected: Dict[str, float] = {}

    def expected_event(self, action: str) -> bool:
        """Consume the expectation of ``action``; say whether it was still due."""
        return self.expected.pop(action, 0.0) > time.monotonic()


class Flapping(CircusPlugin):
    """Stops watchers that flap, retries them, and gives up after ``max_retry``."""

    name = 'flapping'

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.defaults = {key: self.option(key, default, convert)
                         for key, (default, convert) in _OPTIONS.items()}
        vars(self).update(self.defaults)  # self.attempts, self.window...
        self.watches: Dict[str, _Watch] = {}
        #: Why each process died: the reaps of processes circusd ended are no flapping.
        self.exits = Exits()

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, fields=('kill', 'reap', 'spawn'))
        if event is None:
            return
        watcher, action = event.watcher, event.action
        if action in ('kill', 'reap'):
            self._death(event)
            return
        if action == 'spawn':
            self.exits.see(event)  # a pid used again is no longer the one killed
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
        """A kill (remembered by :attr:`exits`) or a reap (counted unless circusd ended
        the process, or we are stopping or restarting the watcher)."""
        pid, now = event.pid(), time.time()
        reap = event.action == 'reap'
        # A reap's stamp from the future (another clock, junk) would hold the window open.
        died = event.time() if reap and 'time' in event.fields else now
        if pid is None or died is None:
            skip_event(self.log, event, 'process_pid', *(['time'] if reap else []))
            return
        if self.exits.see(event) == STOPPED or not reap:
            return
        watch = self.watches.setdefault(event.watcher, _Watch())
        if not (watch.acting or watch.retry is not None):
            watch.deaths.append(min(died, now))
            self.loop.add_callback(self._safely, event.watcher, 'checking for flapping',
                                   partial(self._judge, event.watcher, watch))

    def _by_someone_else(self, watcher: str, watch: _Watch, action: str) -> None:
        """An operator (or another plugin) stopped or started the watcher: forget the
        deaths and tries we counted, and drop our pending restart."""
        if watch.retry is not None:
            self.loop.remove_timeout(watch.retry)
            watch.retry = None
            self.log.info('%s: %s by someone else: cancelled our restart', watcher, action)
        watch.deaths.clear()
        watch.tries = 0
        watch.options = None  # a reloadconfig publishes no "updated": read them again

    async def options_for(self, watcher: str, watch: _Watch) -> Optional[Dict[str, Any]]:
        """The plugin's options overridden by the watcher's ``flapping.*`` options (and
        ``check_flapping``); ``None`` (logged) if circusd does not tell them."""
        if watch.options is not None:
            return watch.options
        reply = await self.ask('options', name=watcher)
        if reply.get('status') != 'ok':
            self.log.error('%s: cannot read its options: %s', watcher, reply.get('reason'))
            return None
        keys = {'%s.%s' % (self.name, key): (key, convert)
                for key, (_, convert) in _OPTIONS.items()}
        keys['check_flapping'] = ('check_flapping', to_bool)
        options = dict(self.defaults, check_flapping=True)
        for key, value in reply.get('options', {}).items():
            if key in keys:
                option, convert = keys[key]
                try:
                    options[option] = convert(value, key)
                except ConfigError as exc:
                    self.log.error('%s: ignored: %s', watcher, exc)
        options['active'] = options.pop('check_flapping') and options['active']
        watch.options = options
        return options

    async def _safely(self, watcher: str, what: str, job: Callable[[], Awaitable]) -> None:
        """Await ``job()`` for the loop, logging an exception as tornado would not."""
        try:
            await job()
        except Exception:
            self.log.exception('%s: %s failed', watcher, what)

    async def _judge(self, watcher: str, watch: _Watch) -> None:
        options = await self.options_for(watcher, watch)
        if options is None:
            return
        span = options['window'] + self.check_delay  # circusd sees deaths that late
        # Reaps may come out of order: keep those in the window that ends with the latest.
        latest = max(watch.deaths, default=time.time())
        watch.deaths = collections.deque(d for d in watch.deaths if latest - d <= span)
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
            self.log.info('%s: flapping detected: retry in %g s (attempt number %d)',
                          watcher, options['retry_in'], watch.tries)
            if await self._command('stop', watcher, watch):
                watch.retry = self.loop.call_later(
                    options['retry_in'], self._safely, watcher, 'the restart',
                    partial(self._restart, watcher, watch))
                self.emit(watcher, 'flapping', retry_in=options['retry_in'],
                          attempt=watch.tries, max_retry=max_retry)
        else:
            self.log.info('%s: flapping detected: reached max retry limit (%d): stopping '
                          'it for good', watcher, max_retry)
            attempts, watch.tries = watch.tries, 0
            if await self._command('stop', watcher, watch):
                self.emit(watcher, 'flapping_giveup', attempts=attempts, max_retry=max_retry)

    async def _restart(self, watcher: str, watch: _Watch) -> None:
        watch.retry = None
        if await self._command('start', watcher, watch):
            watch.restarted = time.time()

    async def _command(self, command: str, watcher: str, watch: _Watch) -> bool:
        """Ask for ``command`` on ``watcher`` until circusd takes it; log the outcome."""
        watch.acting = True
        watch.expected[command] = time.monotonic() + _EXPECT_FOR
        try:
            reply = await self.change_state(command, name=watcher)
        finally:
            watch.acting = False
        if reply.get('status') == 'ok':
            self.log.info('%s: %s', watcher, 'stopped' if command == 'stop' else 'started')
            return True
        watch.expected.pop(command, None)
        self.log.error('%s: could not %s it: %s', watcher, command, reply.get('reason'))
        return False
