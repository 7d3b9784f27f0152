"""The :class:`CircusPlugin` base class.

A plugin is a thread running its own tornado :class:`~tornado.ioloop.IOLoop`
(:attr:`CircusPlugin.loop`). That thread owns two ZeroMQ sockets: a SUB socket
subscribed to circusd's ``watcher.`` events, and a DEALER socket that sends commands to
circusd and receives the replies. No other thread touches them: :meth:`~CircusPlugin.call`,
:meth:`~CircusPlugin.cast` and :meth:`~CircusPlugin.stop` hand their work to the loop with
:meth:`IOLoop.add_callback <tornado.ioloop.IOLoop.add_callback>`.

Write a plugin by subclassing and implementing :meth:`~CircusPlugin.handle_recv`::

    from circus_plugins import CircusPlugin

    class Printer(CircusPlugin):
        name = 'printer'

        def handle_recv(self, data):
            watcher, action, msg = self.split_data(data)
            print(watcher, action, self.load_message(msg))
"""
import asyncio
import inspect
import json
import signal
import threading
import time
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import TimeoutError as ThreadTimeout
from typing import (TYPE_CHECKING, AbstractSet, Any, Callable, Dict, List, Optional, Tuple,
                    Type, Union, cast)

import zmq
from tornado.ioloop import IOLoop
from zmq.utils.monitor import recv_monitor_message
from tornado.platform.asyncio import BaseAsyncIOLoop

from ._client import Client, ThreadCaller, new_dealer
from . import _bus
from ._endpoint import check_endpoint, check_ssh_server, endpoint_option, endpoints_option
from ._log import plugin_logger
from ._stats_stream import StatsStream
from .config import MAX_SECONDS, to_bool, to_number
from .errors import CallError, CircusPluginError, ConfigError, MalformedEvent
from .events import PLUGIN_PREFIX, plugin_event, shorten

if TYPE_CHECKING:
    from ._shared import SharedAnswers

#: Seconds during which :meth:`CircusPlugin.change_state` asks a busy circusd again.
BUSY_RETRY = 30.0

#: Events handled in one wake-up of the loop before timers and replies get a turn.
_BURST = 512

_BASE_ARGS = ('endpoint', 'pubsub_endpoint', 'check_delay', 'ssh_server')

_MAKING_LOOP = threading.Lock()

#: Seconds given at stop to the tasks still pending, then again once they are cancelled.
_TASKS_AT_STOP = 0.5


def _asyncio_loop(loop: IOLoop) -> asyncio.AbstractEventLoop:
    """The asyncio loop under ``loop``."""
    # Since tornado 6 every IOLoop is a BaseAsyncIOLoop; IOLoop's hints do not say so.
    return cast(BaseAsyncIOLoop, loop).asyncio_loop


def _is_closed(loop: IOLoop) -> bool:
    asyncio_loop = getattr(loop, 'asyncio_loop', None)
    return asyncio_loop is not None and asyncio_loop.is_closed()


class _NotInCircusPlugins:
    """An attribute of circus 0.19's plugin that has no counterpart here.

    Reading it raises an :class:`AttributeError` that says what to use instead; a
    subclass may still assign it (an instance attribute hides this).
    """

    def __init__(self, instead: str) -> None:
        self.instead = instead

    def __set_name__(self, owner, name):
        self.attr = name

    def __get__(self, plugin, owner=None):
        if plugin is None:
            return self
        raise AttributeError('plugin %s: circus_plugins has no %r attribute (circus 0.19 '
                             'had one): %s' % (plugin.name, self.attr, self.instead))


class _Interrupted(BaseException):
    """Raised by our SIGTERM/SIGINT handler to end :meth:`CircusPlugin.start`'s wait."""


class _PluginMeta(type):
    """Lets both constructor styles work with every runner.

    circusd's runner calls ``Plugin(endpoint, pubsub, check_delay, ssh, **config)``; the
    seed's ``Logger.__init__(self, filename, **kwargs)`` cannot take that. When the
    arguments do not fit ``__init__``, the four base arguments are passed by keyword
    instead, and whatever still does not fit becomes a :class:`ConfigError`.
    """

    def __call__(cls: Type[Any], *args: Any, **kwargs: Any) -> Any:
        signature = inspect.signature(cls.__init__)
        try:
            signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            problem: Optional[TypeError] = exc
            if len(args) <= len(_BASE_ARGS):
                moved = dict(zip(_BASE_ARGS, args))
                if not moved.keys() & kwargs.keys():
                    try:
                        signature.bind(None, **moved, **kwargs)
                    except TypeError as exc2:
                        problem = exc2
                    else:
                        args, kwargs = (), {**moved, **kwargs}
                        problem = None
            if problem is not None:
                raise ConfigError('plugin %s: %s' % (cls.__name__, problem)) from None
        return super().__call__(*args, **kwargs)


class CircusPlugin(metaclass=_PluginMeta):
    """Base class of plugins: subscribes to circusd's events and sends it commands.

    :param endpoint: circusd's command endpoint (ROUTER), e.g. ``tcp://127.0.0.1:5555``.
    :param pubsub_endpoint: circusd's event endpoint (PUB), e.g. ``tcp://127.0.0.1:5556``.
    :param check_delay: circusd's check delay, in seconds.
    :param ssh_server: ``user@host:port`` to reach the endpoints through an SSH tunnel.
    :param config: the plugin's options, as strings. Known to the base class: ``active``
        (boolean, default true; an inactive plugin connects to nothing and waits to be
        stopped) and ``call_timeout`` (seconds, default 5).

    Thread-safety: :meth:`call`, :meth:`cast`, :meth:`stop` and :meth:`start_background`
    may be called from any thread. Everything else runs on, or belongs to, the plugin
    thread, which runs :attr:`loop`.
    """

    #: The plugin's name, used in logs.
    name = ''
    # Made by the first read of `loop` (see there); a class default, so that a subclass
    # may even touch the loop before calling this class's constructor.
    __loop: Optional[IOLoop] = None
    __tasks_before_stop: AbstractSet[asyncio.Task] = frozenset()
    # Set by a host before the start: read-only questions answered once for its plugins.
    _shared_answers: Optional['SharedAnswers'] = None
    # time.monotonic() of the last circusd event received: no shared answer older.
    __event_at = float('-inf')

    #: Seconds: at stop, events already on their way are still handled, until none has
    #: come for this long (and for at most half of ``call_timeout`` in all); 0, the
    #: default, stops at once. A plugin that keeps a record of events sets it.
    drain_on_stop = 0.0

    # circus 0.19's sockets, which a plugin ported from it may reach for: the DEALER is
    # shared by concurrent requests here, and events need no stream.
    client = _NotInCircusPlugins('send commands with call(), call_async() or cast()')
    substream = _NotInCircusPlugins('events reach handle_recv() without a stream')

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        self.config = config
        if not self.name:
            self.name = str(config.get('name') or type(self).__name__)
        self.endpoint = endpoint
        self.pubsub_endpoint = pubsub_endpoint
        self.ssh_server = ssh_server
        #: The plugin's logger, ``circus_plugins.<name>``.
        self.log = plugin_logger(self.name)
        self.check_delay = self.__convert('check_delay', check_delay, float, minimum=0,
                                          maximum=MAX_SECONDS)
        self.active = self.option('active', True, bool)
        self.call_timeout = self.option('call_timeout', 5.0, float, minimum=0.001,
                                        maximum=MAX_SECONDS)
        #: Where this plugin publishes the events it emits (a PUB socket bound there), and
        #: where it also receives other processes' plugin-made events (its SUB connects).
        self.events_publish = self.option('events_publish', None, endpoint_option)
        self.events_subscribe = self.option('events_subscribe', [], endpoints_option)
        #: circusd-stats's endpoint when given as an option; else circusd is asked
        #: (only by plugins overriding :meth:`handle_stats`).
        self.stats_endpoint = self.option('stats_endpoint', None, endpoint_option)
        self.running = False
        #: The plugin's ZeroMQ context while it runs, as in circus 0.19: sockets a plugin
        #: makes from it on the plugin thread are closed when the plugin stops.
        self.context: Optional[zmq.Context] = None
        #: The SUB socket receiving circusd's events while the plugin runs (plugin
        #: thread only).
        self.sub_socket: Optional[zmq.Socket] = None
        #: The SUB socket receiving circusd-stats's messages while the plugin runs, for
        #: a plugin overriding :meth:`handle_stats`; ``None`` otherwise (plugin thread only).
        self.stats_socket: Optional[zmq.Socket] = None
        self.__stats: Optional[StatsStream] = None
        self.__thread: Optional[threading.Thread] = None
        self.__context: Optional[zmq.Context] = None
        self.__sockets: list = []  # every socket made by __open, closed by __close
        self.__sub: Optional[zmq.Socket] = None
        self.__monitor: Optional[zmq.Socket] = None  # the SUB's connection events
        self.__lost = False  # the SUB lost its connection to circusd's pubsub endpoint
        self.__publisher: Optional[zmq.Socket] = None
        self.__shared_context: Optional[zmq.Context] = None
        self.__client: Optional[Client] = None
        self.__callers: Dict[threading.Thread, ThreadCaller] = {}
        self.__lock = threading.Lock()
        self.__started = False
        self.__stopping = False
        self.__stopped = threading.Event()
        self.__paused = False
        self.__ready: ThreadFuture = ThreadFuture()  # the start's outcome

    @property
    def loop(self) -> IOLoop:
        """The plugin's tornado :class:`~tornado.ioloop.IOLoop`, there from construction.

        As in circus 0.19, code may use it before :meth:`start`: add timers and callbacks
        (``plugin.loop.add_timeout(deadline, plugin.stop)``), or drive a coroutine with
        ``plugin.loop.run_sync(...)`` on a plugin never started. It is made at its first
        read, so a plugin nobody touches opens nothing. :meth:`start` and
        :meth:`start_background` run this very loop in the plugin thread, where it is the
        current loop before :meth:`handle_init` runs, so timers and callbacks added before
        the start are kept and fire there. It is closed when the plugin stops; a loop
        closed before the start means the plugin cannot start (:meth:`start` raises
        :class:`CircusPluginError`). Reading it is thread-safe.
        """
        loop = self.__loop
        if loop is None:
            with _MAKING_LOOP:  # two threads reading it first get the same loop
                if self.__loop is None:
                    self.__loop = IOLoop(make_current=False)
                loop = self.__loop
        return loop

    @loop.setter
    def loop(self, loop: IOLoop) -> None:
        if getattr(self, '_CircusPlugin__thread', None) is not None:
            raise RuntimeError('plugin %s: its loop cannot change once started' % self.name)
        self.__loop = loop

    def option(self, key: str, default: Any, kind: Callable = str, *,
               minimum: Optional[float] = None, maximum: Optional[float] = None,
               **convert_args: Any) -> Any:
        """Read option ``key`` of :attr:`config` as ``kind``, or ``default`` if absent.

        ``kind`` is ``str``, ``int``, ``float`` or ``bool`` (booleans read as circus reads
        them: ``true``, ``yes``, ``1``, ``on``...), or a converter called as
        ``kind(value, key, **convert_args)`` that returns the value or raises
        :class:`ConfigError` (:func:`~circus_plugins.config.to_signum`,
        :func:`~circus_plugins.config.to_host`, a regex compiler...). A ``default`` of
        ``None`` is returned as it is when the option is absent. A value that does not
        convert, or is outside ``minimum``..``maximum``, raises :class:`ConfigError`
        naming the plugin, option and value. Thread-safe (it only reads).
        """
        if default is None and key not in self.config:
            return None
        return self.__convert(key, self.config.get(key, default), kind, minimum, maximum,
                              convert_args)

    def __convert(self, key, value, kind, minimum=None, maximum=None, convert_args=None):
        try:
            if kind is bool:
                return to_bool(value, key)
            if kind in (int, float):
                return to_number(value, key, minimum=minimum, maximum=maximum,
                                 integer=kind is int)
            if kind is str:
                return str(value)
            return kind(value, key, **(convert_args or {}))
        except ConfigError as exc:
            raise ConfigError('plugin %s: %s' % (self.name, exc)) from None

    def __check_endpoints(self) -> None:
        # Checked at start, not in the constructor: tests build plugins with dummy
        # endpoints to call their handlers directly.
        try:
            check_endpoint(self.endpoint, 'endpoint')
            check_endpoint(self.pubsub_endpoint, 'pubsub_endpoint')
            check_ssh_server(self.ssh_server, 'ssh_server')
        except ConfigError as exc:
            raise ConfigError('plugin %s: %s' % (self.name, exc)) from None

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the plugin; return once it has stopped.

        Called in the main thread, SIGTERM and SIGINT stop the plugin gracefully (with
        :meth:`handle_stop`) and the previous handlers are put back afterwards. Raises
        whatever :meth:`handle_init` raised.
        """
        # A signal during start_background() is only noted: raised there, it could leave
        # between the start of the plugin thread and start_background() noting it, and
        # stop() would not know the thread. The wait afterwards is ended by raising.
        got: List[int] = []  # the first signal
        waiting = [False]

        def interrupt(signum, frame):
            if not got:
                got.append(signum)
                if waiting[0]:
                    raise _Interrupted(signum)

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, interrupt)
        try:
            try:
                self.start_background()
                waiting[0] = True
                if not got:
                    self.__stopped.wait()
            except _Interrupted:
                pass
            finally:
                waiting[0] = False
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if got:
            self.log.info('got %s, stopping', signal.Signals(got[0]).name)
        self.stop()

    def start_background(self, *, context: Optional[zmq.Context] = None) -> 'CircusPlugin':
        """Start the plugin thread and return once events flow (thread-safe).

        :param context: a ZeroMQ context to make the sockets from, shared with other
            plugins of the process (a host's); the plugin then leaves it open at stop.

        :meth:`handle_init` and :meth:`initialize` have run when this returns; their
        exception, or a failure to connect, is raised here, and then nothing of the plugin
        is left running. Stop the plugin with :meth:`stop`; if :meth:`stop` came first,
        this returns without starting anything. The plugin is also a context manager
        doing both.

        :raises ConfigError: an endpoint or the SSH server is malformed; nothing started.
        """
        if self.active:
            self.__check_endpoints()
        with self.__lock:  # stop() decides under the same lock: no half-started thread
            if self.__started:
                raise RuntimeError('plugin %s was already started' % self.name)
            self.__started = True
            if self.__stopping:
                self.log.debug('stopped before it started')
                return self
            if not self.active:
                self.log.info('not active: waiting to be stopped')
                return self
            if _is_closed(self.loop):
                self.__stopping = True
                self.__stopped.set()
                raise CircusPluginError('plugin %s cannot start: its loop was closed '
                                        'before the start' % self.name)
            self.__shared_context = context
            thread = threading.Thread(target=self.__run, name='plugin-%s' % self.name,
                                      daemon=True)
            thread.start()
            self.__thread = thread
        try:
            self.__ready.result()
        except Exception:  # the start failed, and the thread is ending
            thread.join()
            with self.__lock:
                self.__stopping = True
            self.__stopped.set()
            raise
        return self

    def stop(self) -> None:
        """Stop the plugin: :meth:`handle_stop`, then end and join the plugin thread.

        Idempotent, thread-safe, never raises. Called from the plugin thread itself (say,
        from :meth:`handle_recv`), it schedules the end and returns without joining.
        """
        with self.__lock:
            first = not self.__stopping
            self.__stopping = True
            thread = self.__thread
        if first and thread is None:  # never started, or inactive: nothing runs
            self.__close_unstarted_loop()
            self.__stopped.set()
        elif first and self.__started_fine():
            _bus.leave(self)
            self.__pause_events()
            try:
                self.handle_stop()
            except Exception:
                self.log.exception('handle_stop failed')
            try:
                self.loop.add_callback(self.__shutdown)
            except RuntimeError:
                pass  # the loop has closed already
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.running = False

    def __close_unstarted_loop(self) -> None:
        # A loop read before a start that will now never come: free its descriptors,
        # unless code is running it right now (run_sync of a coroutine that stops us).
        loop = self.__loop
        if loop is not None and not _is_closed(loop) and not _asyncio_loop(loop).is_running():
            loop.close(all_fds=False)

    def __started_fine(self) -> bool:
        """Whether the start succeeded; from another thread, waits for its outcome
        (a stop during handle_init lets it finish first)."""
        if self.in_plugin_thread():
            return True
        try:
            self.__ready.result()
        except BaseException:
            return False
        return True

    def __pause_events(self) -> None:
        """Stop delivering events, so handle_stop never runs beside handle_recv.

        Waits for the loop to finish the event it is handling (at most call_timeout
        seconds, in case a handler is stuck); commands keep working.
        """
        if self.in_plugin_thread():
            self.__paused = True
            self.__note_tasks_before_stop()
            return
        done: ThreadFuture = ThreadFuture()

        def pause():
            try:
                self.__drain_before_stop()
            finally:
                self.__paused = True
                self.__note_tasks_before_stop()
                done.set_result(None)
        try:
            self.loop.add_callback(pause)
            done.result(timeout=self.call_timeout)
        except (RuntimeError, ThreadTimeout):
            self.log.warning('still busy in a handler; stopping anyway')

    def __note_tasks_before_stop(self) -> None:
        # On the loop: what runs now is the plugin's ordinary work, which the stop ends;
        # tasks begun from here on (in handle_stop) are its closing work.
        self.__tasks_before_stop = asyncio.all_tasks(_asyncio_loop(self.loop))

    def __drain_before_stop(self) -> None:
        """Handle the events that reach the SUB socket within :attr:`drain_on_stop`
        seconds of each other (on the plugin thread, at stop)."""
        sub, quiet = self.__sub, self.drain_on_stop
        if sub is None or quiet <= 0:
            return
        deadline = time.monotonic() + self.call_timeout / 2
        while time.monotonic() < deadline and sub.poll(int(quiet * 1000)):
            self.__drain_events(again=False)

    def __enter__(self) -> 'CircusPlugin':
        return self.start_background()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __run(self) -> None:
        asyncio.set_event_loop(_asyncio_loop(self.loop))
        try:
            self.__open()
            self.handle_init()
            self.initialize()
        except BaseException as exc:
            self.__close()
            self.__ready.set_exception(exc)
            return
        self.running = True
        _bus.join(self)
        self.__ready.set_result(None)
        try:
            self.loop.start()
            self.__end_tasks()
        except Exception:
            self.log.exception('the event loop failed')
        finally:
            self.running = False
            _bus.leave(self)
            self.__close()
            self.__stopped.set()

    def __end_tasks(self) -> None:
        """End the tasks still pending on the stopped loop, so that none is destroyed
        pending, as :func:`asyncio.run` does. Those that ran before the stop (a periodic
        look waiting on a call that the closed client just failed) are cancelled at once:
        resumed, they would take their own stop for a failure. Those begun by
        :meth:`handle_stop` (closing a client) get :data:`_TASKS_AT_STOP` seconds to end,
        then are cancelled too."""
        loop = _asyncio_loop(self.loop)

        def wait(tasks):  # a task may refuse to end: never wait for ever
            if not tasks:
                return tasks
            return loop.run_until_complete(asyncio.wait(tasks, timeout=_TASKS_AT_STOP))[1]
        pending = asyncio.all_tasks(loop)
        for task in pending & self.__tasks_before_stop:
            task.cancel()
        pending = wait(pending)
        for task in pending:
            task.cancel()
        pending = wait(pending)
        if pending:
            names = {getattr(task.get_coro(), '__qualname__', '?') for task in pending}
            self.log.warning('%d task(s) still running at stop: %s', len(pending),
                             ', '.join(sorted(names)))

    def __open(self) -> None:
        self.__context = self.context = self.__shared_context or zmq.Context()
        self.__sub = self.sub_socket = self.__socket(zmq.SUB)
        self.__sub.setsockopt(zmq.SUBSCRIBE, b'watcher.')
        if self.ssh_server is None:  # through a tunnel, the monitor would see only it
            self.__monitor = self.__sub.get_monitor_socket(
                zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            self.__monitor.linger = 0
            self.__sockets.append(self.__monitor)
            self.loop.add_handler(self.__monitor, self.__on_monitor_ready, IOLoop.READ)
        self.__connect(self.__sub, self.pubsub_endpoint, 'pubsub_endpoint')
        if self.events_subscribe:
            self.__sub.setsockopt(zmq.SUBSCRIBE, PLUGIN_PREFIX.encode() + b'.')
            for endpoint in self.events_subscribe:
                self.__connect(self.__sub, endpoint, 'events_subscribe')
        if self.events_publish:
            self.__publisher = self.__socket(zmq.PUB)
            try:
                self.__publisher.bind(self.events_publish)
            except zmq.ZMQError as exc:
                raise ConfigError('plugin %s: events_publish %r: %s'
                                  % (self.name, self.events_publish, exc)) from None
        dealer = self.__socket(zmq.DEALER)
        # Long enough for a last cast to leave, short enough not to hang with circusd gone.
        dealer.linger = 1000
        self.__connect(dealer, self.endpoint, 'endpoint')
        self.__client = Client(dealer, self.loop, self.log)
        self.loop.add_handler(self.__sub, self.__on_sub_ready, IOLoop.READ)
        # Events may already be queued and the socket's fd only signals changes.
        self.loop.add_callback(self.__drain_events)
        if self.__monitor is not None:  # as for the SUB socket: its fd signals changes
            self.loop.add_callback(self.__on_monitor_ready, None, None)
        if self.wants_stats():
            self.__open_stats()

    # -- circusd-stats ---------------------------------------------------------------------

    def wants_stats(self) -> bool:
        """Whether the plugin takes circusd-stats's stream, asked once at start: by
        default, when its class overrides :meth:`handle_stats`. A plugin whose options
        say not to read the stream returns false (no socket is opened)."""
        return type(self).handle_stats is not CircusPlugin.handle_stats

    def __open_stats(self) -> None:
        stream = self.__stats = StatsStream(
            self.loop, self.log, lambda: self.__socket(zmq.SUB), self.__connect, self.ask,
            self.handle_stats, lambda: self.__paused, self.stats_endpoint)
        self.stats_socket = stream.socket
        stream.start()

    @property
    def stats_live(self) -> bool:
        """Whether circusd-stats's messages are coming: one came within the last few
        seconds (:data:`~circus_plugins._stats_stream.LIVE_FOR`). Always false for a
        plugin that does not override :meth:`handle_stats`. Read it on the plugin
        thread, to choose between the stream and asking circusd."""
        stats = self.__stats
        return stats is not None and stats.live

    def __socket(self, kind: int) -> zmq.Socket:
        context = self.__context
        assert context is not None, 'made by __open before any socket'
        socket = new_dealer(context) if kind == zmq.DEALER else context.socket(kind)
        socket.linger = 0
        self.__sockets.append(socket)
        return socket

    def __connect(self, socket: zmq.Socket, endpoint: str, what: str) -> None:
        try:
            if self.ssh_server is None:
                socket.connect(endpoint)
            else:
                from zmq import ssh
                # pyzmq hints the socket as a standard library socket.socket; it is
                # a zmq socket that tunnel_connection connects.
                ssh.tunnel_connection(socket, endpoint,  # type: ignore[call-overload]
                                      self.ssh_server)
        except zmq.ZMQError as exc:
            raise ConfigError('plugin %s: %s %r: %s' % (self.name, what, endpoint, exc)) \
                from None

    def __shutdown(self) -> None:
        if self.__sub is not None:
            self.loop.remove_handler(self.__sub)
        if self.__monitor is not None:
            self.loop.remove_handler(self.__monitor)
            if self.__sub is not None:
                self.__sub.disable_monitor()
        if self.__stats is not None:
            self.__stats.close()
        if self.__client is not None:
            self.__client.close()
        self.loop.stop()

    def __close(self) -> None:
        with self.__lock:  # no new thread caller after this
            callers, self.__callers = list(self.__callers.values()), {}
            context, self.__context = self.__context, None
        for caller in callers:
            caller.close()
        for sock in self.__sockets:
            if not sock.closed:
                sock.close()
        self.__sockets = []
        self.__sub = self.__client = self.__publisher = self.__stats = None
        self.__monitor = None
        self.sub_socket = self.stats_socket = None
        if context is not None and context is not self.__shared_context:
            # Also closes sockets a plugin made from self.context and left open, which
            # would otherwise keep term() waiting forever.
            context.destroy(linger=0)
        self.loop.close(all_fds=False)

    # -- events ----------------------------------------------------------------------------

    def __on_sub_ready(self, fd, events) -> None:
        self.__drain_events()

    def __drain_events(self, again: bool = True) -> None:
        sub = self.__sub
        if sub is None or self.__paused:
            return
        recv = sub.recv_multipart
        handle = self.handle_recv
        for _ in range(_BURST):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.__event_at = time.monotonic()
            if len(frames) != 2:
                self.log.warning('ignored an event of %d frames', len(frames))
                continue
            try:
                handle((frames[0], frames[1]))
            except Exception:
                self.log.exception('handle_recv failed on %s', shorten(frames[0]))
            if self.__paused:  # stop() called from the handler
                return
        # More may be queued, and the fd will not signal them again: come back after
        # whatever else is waiting on the loop.
        if again:
            self.loop.add_callback(self.__drain_events)

    def __on_monitor_ready(self, fd, events) -> None:
        """Read the SUB socket's connection events; after a disconnection from circusd's
        pubsub endpoint, its next connection calls :meth:`handle_reconnect`."""
        monitor = self.__monitor
        while monitor is not None and not monitor.closed:
            try:
                message = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except Exception:  # a malformed message: never fatal
                self.log.exception('cannot read a socket monitor message')
                continue
            raw = message.get('endpoint', b'')
            endpoint = raw.decode('utf-8', 'replace') if isinstance(raw, bytes) else str(raw)
            # The same SUB socket connects to events_subscribe too: not circusd.
            if endpoint in self.events_subscribe:
                continue
            if message.get('event') == zmq.EVENT_DISCONNECTED:
                self.__lost = True
            elif message.get('event') == zmq.EVENT_CONNECTED and self.__lost:
                self.__lost = False
                if self.__paused:
                    continue
                self.log.info('connected again to circusd\'s events at %s: events '
                              'published meanwhile were lost', endpoint)
                try:
                    self.handle_reconnect()
                except Exception:
                    self.log.exception('handle_reconnect failed')

    # -- commands --------------------------------------------------------------------------

    def call(self, command: str, **props: Any) -> Dict[str, Any]:
        """Send ``command`` to circusd and return its reply (thread-safe).

        :param busy_retry: seconds (default 0) during which a refusal because circusd is
            busy running another command (errno 5) is retried; see :meth:`call_async`.
        :raises CallError: no reply within :attr:`call_timeout` seconds.

        From the plugin thread (e.g. in :meth:`handle_recv`) this blocks the loop until the
        reply comes; in a coroutine, prefer ``await`` :meth:`call_async`.
        """
        busy_retry = props.pop('busy_retry', 0)
        if busy_retry:
            busy_retry = to_number(busy_retry, 'busy_retry', minimum=0)
        if self.in_plugin_thread():
            client = self.__require_client(command)
            return client.call_blocking(command, props, self.call_timeout, busy_retry)
        return self.__thread_caller(command).call(command, props, self.call_timeout,
                                                 busy_retry)

    def __thread_caller(self, command: str) -> ThreadCaller:
        me = threading.current_thread()
        with self.__lock:
            if self.__context is None:
                raise CallError('%r: plugin %s is not running' % (command, self.name))
            caller = self.__callers.get(me)
            if caller is None:
                for thread in [t for t in self.__callers if not t.is_alive()]:
                    self.__callers.pop(thread).close()
                socket = new_dealer(self.__context)
                self.__connect(socket, self.endpoint, 'endpoint')
                caller = self.__callers[me] = ThreadCaller(socket)
        return caller

    async def call_async(self, command: str, *, busy_retry: float = 0.0,
                         **props: Any) -> Dict[str, Any]:
        """Send ``command`` to circusd and return its reply; for coroutines on :attr:`loop`.

        :param busy_retry: seconds during which circusd's "arbiter is already running ...
            command" refusal (errno 5) is retried, with a backoff from 20 to 250 ms.
            State-changing commands (``stop``, ``start``, ``restart``, ``kill`` ...) sent in
            reaction to events need it: circusd is often busy reaping at that moment. If
            circusd is still busy at the deadline, its last refusal is returned.
        :raises CallError: no reply within :attr:`call_timeout` seconds.

        In a :class:`~circus_plugins.host.PluginHost`, a read-only question (``list``,
        ``stats``...) that another plugin of the host asks at the same time gets one
        request's answer (:mod:`circus_plugins._shared`).
        """
        client = self.__require_client(command)
        shared = self._shared_answers
        if shared is not None and not busy_retry:
            return await shared.ask(
                command, props,
                lambda: client.call(command, props, self.call_timeout, busy_retry),
                timeout=self.call_timeout, events_at=self.__event_at)
        return await client.call(command, props, self.call_timeout, busy_retry)

    async def ask(self, command: str, *, busy_retry: float = 0.0,
                  **props: Any) -> Dict[str, Any]:
        """Send ``command`` and return circusd's reply; for coroutines on :attr:`loop`.

        It never raises: no reply comes back as ``{'status': 'error', 'reason': ...}``,
        so the caller checks ``status`` once and logs what happened. ``busy_retry`` is
        as for :meth:`call_async`.
        """
        try:
            return await self.call_async(command, busy_retry=busy_retry, **props)
        except CallError as exc:
            return {'status': 'error', 'reason': str(exc)}

    async def change_state(self, command: str, *, busy_retry: float = BUSY_RETRY,
                           **props: Any) -> Dict[str, Any]:
        """:meth:`ask` for a command that must happen (``stop``, ``start``, ``restart``,
        ``kill``, ``signal``...): while circusd is busy with another command it is asked
        again, for up to ``busy_retry`` seconds (default :data:`BUSY_RETRY`)."""
        return await self.ask(command, busy_retry=busy_retry, **props)

    def cast(self, command: str, **props: Any) -> None:
        """Send ``command`` to circusd without waiting for a reply (thread-safe).

        circusd never says whether a cast worked: use :meth:`call_async` with
        ``busy_retry`` for anything that must happen.
        """
        client = self.__require_client(command)
        if self.in_plugin_thread():
            client.cast(command, props, self.call_timeout)
        else:
            self.loop.add_callback(client.cast, command, props, self.call_timeout)

    def __require_client(self, command: str) -> Client:
        client = self.__client
        if client is None:
            raise CallError('%r: plugin %s is not running' % (command, self.name))
        return client

    # -- plugin-made events ----------------------------------------------------------------

    def emit(self, watcher: str, action: str, /, **details: Any) -> None:
        """Announce what the plugin did: ``action`` about ``watcher``, with ``details``
        (JSON-serialisable; others are sent as text). Thread-safe.

        The event, topic ``plugin.<watcher>.<action>`` and a JSON body with ``plugin``
        (this plugin's name), ``time`` and the details, reaches every other plugin
        running in this process through its :meth:`handle_recv`, and other processes
        when the ``events_publish`` option names an endpoint to publish on. circusd never
        publishes a ``plugin.`` topic; see :mod:`circus_plugins.events`. It never raises:
        an event that cannot be made (a bad name, too big) is logged and dropped.
        """
        try:
            data = plugin_event(self.name, watcher, action, **details)
        except MalformedEvent as exc:
            self.log.error('event %r about %s not emitted: %s', action, shorten(watcher),
                           exc)
            return
        _bus.deliver(self, data)
        if self.events_publish:
            self._publish_event(data)

    def _publish_event(self, data: Tuple[bytes, bytes]) -> None:
        """Send a plugin-made event on the ``events_publish`` socket (thread-safe; for
        plugins that relay the events of others, such as a host)."""
        if not self.in_plugin_thread():
            self.__call_soon(self._publish_event, data)
            return
        if self.__publisher is not None:
            try:
                self.__publisher.send_multipart(data, zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # a full queue: PUB drops what no one takes
                self.log.debug('plugin event not published: %s', exc)

    def _take_plugin_event(self, data: Tuple[bytes, bytes]) -> None:
        # Called by _bus from the emitting plugin's thread.
        self.__call_soon(self.__handle_plugin_event, data)

    def __call_soon(self, function, *args) -> None:
        loop = self.__loop
        if loop is not None:
            try:
                loop.add_callback(function, *args)
            except RuntimeError:
                pass  # the loop has closed: the plugin is gone

    def __handle_plugin_event(self, data: Tuple[bytes, bytes]) -> None:
        if self.__paused or not self.running:
            return
        try:
            self.handle_recv(data)
        except Exception:
            self.log.exception('handle_recv failed on %s', shorten(data[0]))

    def in_plugin_thread(self) -> bool:
        """True when called on the plugin thread, the one running :attr:`loop`."""
        return threading.current_thread() is self.__thread

    # -- to override -----------------------------------------------------------------------

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        """Receive one event: ``data`` is ``(topic, message)``, both bytes.

        ``topic`` is like ``b'watcher.web.spawn'`` and ``message`` is JSON; see
        :meth:`split_data` and :meth:`load_message`. Runs on the plugin thread. Must be
        implemented.
        """
        raise NotImplementedError()

    def handle_stats(self, data: Tuple[bytes, bytes]) -> None:
        """Receive one message of circusd-stats (``[circus] statsd = True``): ``data`` is
        ``(topic, message)``, both bytes, topic ``stat.<watcher>.<pid>`` (one process) or
        ``stat.<watcher>`` (its totals), or circus's own ``stat.circus...`` and
        ``stat.sockets...``; message JSON. Runs on the plugin thread;
        :func:`circus_plugins._stats.read_stat` types it.

        Only a plugin that overrides it gets the stream, from a SUB socket of its own
        (:attr:`stats_socket`) connected to option ``stats_endpoint`` or else to what
        circusd's ``globaloptions`` says, asked without holding up the start. Without
        circusd-stats the plugin logs so once and goes on; see :attr:`stats_live`.
        """

    def handle_reconnect(self) -> None:
        """Called on the plugin thread when the SUB socket connects again to circusd's
        pubsub endpoint after losing it (circusd restarted, the network failed): the
        events published meanwhile were lost, so a plugin keeping a picture of circusd
        from events reads it again. The subscription reaches circusd a moment after
        this call. An exception is logged. Not called through an ``ssh_server`` tunnel
        (the SUB sees only the tunnel) nor for ``events_subscribe`` endpoints."""

    def handle_init(self) -> None:
        """Called in the plugin thread, before events flow; the sockets are ready."""

    def initialize(self) -> None:
        """Called in the plugin thread right after :meth:`handle_init`, before events flow.

        circus 0.19 made its sockets here; plugins written for it override this, call
        ``super().initialize()`` and then start their timers. Here the sockets already
        exist, so the base method does nothing and overriding it is optional.
        """

    def handle_stop(self) -> None:
        """Called once, in the thread calling :meth:`stop`, before the plugin thread ends."""

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def split_data(data: Tuple[Union[bytes, str], Any]) -> Tuple[str, str, Any]:
        """Split an event into ``(watcher_name, action, message)``.

        Watcher names may contain dots; the action is the last part of the topic.
        """
        topic, message = data
        if isinstance(topic, bytes):
            topic = topic.decode('utf-8', 'replace')
        _, _, rest = topic.partition('.')
        watcher, _, action = rest.rpartition('.')
        return watcher, action, message

    @staticmethod
    def load_message(message: Union[bytes, str]) -> Dict[str, Any]:
        """Decode an event's JSON message into a dict."""
        return json.loads(message)
