"""Helpers to test plugins against a real circusd, as this project's own tests do.

:class:`Circusd` writes a circus.ini on free loopback ports and runs circusd 0.19 on it
(``pip install circus-plugins[test]`` brings it); :func:`wait_for` waits on a condition
with a deadline instead of sleeping::

    with Circusd(tmp_path, watchers={'web': {'cmd': 'sleep 1000'}}) as circusd:
        circusd.call('incr', name='web')
        wait_for(lambda: len(circusd.call('list', name='web')['pids']) == 2)

:class:`PluginProcess` runs a plugin against a circusd as ``circus-plugin`` would.

Nothing here is thread-safe: use each object from one thread.
"""
import asyncio
import atexit
import collections
import concurrent.futures
import inspect
import json
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple,
                    TypeVar, Union)

import zmq
from tornado.ioloop import IOLoop

from ._client import is_busy
from .config import encode_config
from .plugin import CircusPlugin, _asyncio_loop

__all__ = ['Circusd', 'CommandCounter', 'EventPublisher', 'EventRecorder', 'PluginProcess',
           'ScriptedCircusd', 'UdpReceiver', 'free_port', 'run_on_loop', 'wait_connected',
           'wait_for']


def _ephemeral_ports() -> Tuple[int, int]:
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as ports:
            low, high = (int(n) for n in ports.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


_given: Set[int] = set()
#: Where processes using these helpers note the ports they were given (one file per
#: port, holding the pid), so that two test runs side by side never get the same port.
_NOTES = os.path.join(tempfile.gettempdir(), 'circus-plugins-ports-%d' % os.getuid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _note(port: int) -> bool:
    """Note ``port`` as this process's; ``False`` if another living process has it."""
    path = os.path.join(_NOTES, str(port))
    mine = str(os.getpid()).encode()
    try:
        os.makedirs(_NOTES, exist_ok=True)
        try:
            note = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path, 'rb') as owner:
                    pid = int(owner.read() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                return False
            note = os.open(path, os.O_WRONLY | os.O_TRUNC)  # its owner has ended
        try:
            os.write(note, mine)
        finally:
            os.close(note)
    except OSError:  # nowhere to note it: a collision stays as unlikely as it was
        pass
    return True


@atexit.register
def _forget_ports() -> None:
    mine = str(os.getpid()).encode()
    for port in _given:  # a forked child that exits has them too: only the notes it wrote
        path = os.path.join(_NOTES, str(port))
        try:
            with open(path, 'rb') as note:
                if note.read() == mine:
                    os.unlink(path)
        except OSError:
            pass


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing listens on right now, and not given before, in
    this process or in another that uses this function and still runs.

    It is taken below the kernel's ephemeral range: a port from that range (what binding
    port 0 gives) may be taken by any outgoing connection before the server binds it.
    A port is found free here and bound by its server later: another test run beside
    this one could find it free meanwhile, so each port given is noted in a file of a
    directory under the temporary one (removed at exit) that other runs skip.
    """
    low, _ = _ephemeral_ports()
    for _ in range(200):
        port = random.randint(10000, max(10001, low - 1))
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(('127.0.0.1', port))
            except OSError:
                continue
        if not _note(port):
            continue
        _given.add(port)
        return port
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01,
             what: str = 'condition') -> Any:
    """Return ``condition()``'s first true value, polling every ``interval`` seconds.

    Raises :class:`TimeoutError` naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError('timed out after %s s waiting for %s' % (timeout, what))
        time.sleep(interval)


def _read_text(path: str) -> str:
    """The text of ``path`` so far, or '' if it cannot be read (yet)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as text:
            return text.read()
    except OSError:
        return ''


def _section(name: str, options: Mapping[str, Any]) -> str:
    lines = ['[%s]' % name]
    lines += ['%s = %s' % (key, value) for key, value in options.items()]
    return '\n'.join(lines) + '\n\n'


class Circusd:
    """A circusd 0.19 process on free loopback ports, for tests.

    :param workdir: where the circus.ini and circusd's log go.
    :param watchers: ``{name: {option: value}}`` for ``[watcher:name]`` sections.
    :param plugins: ``{name: {option: value}}`` for ``[plugin:name]`` sections. Their logs
        go to circusd's, :meth:`log`.
    :param circus: extra ``[circus]`` options (``check_delay`` is 1 s unless given).
        ``{'statsd': True}`` runs circusd-stats, publishing on :attr:`stats_endpoint`.
    :param env: extra environment variables for circusd and so for its plugins.
    :param python: the Python that runs circusd, and so its plugins: by default this one;
        a virtualenv's ``bin/python`` to test what is installed there.
    """

    def __init__(self, workdir: Union[str, 'os.PathLike[str]'],
                 watchers: Optional[Dict[str, Dict[str, Any]]] = None,
                 plugins: Optional[Dict[str, Dict[str, Any]]] = None,
                 circus: Optional[Dict[str, Any]] = None,
                 env: Optional[Dict[str, str]] = None,
                 python: Optional[str] = None) -> None:
        self.workdir = str(workdir)
        self.python = python or sys.executable
        self.endpoint = 'tcp://127.0.0.1:%d' % free_port()
        self.pubsub_endpoint = 'tcp://127.0.0.1:%d' % free_port()
        #: Where circusd-stats publishes when ``circus={'statsd': True}``: a free port
        #: unless given there, never circus's default 5557, so that tests do not collide.
        self.stats_endpoint = 'tcp://127.0.0.1:%d' % free_port()
        self.ini_path = os.path.join(self.workdir, 'circus.ini')
        self.log_path = os.path.join(self.workdir, 'circusd.log')
        self.process: Optional[subprocess.Popen] = None
        self._env = env or {}
        settings = {'endpoint': self.endpoint, 'pubsub_endpoint': self.pubsub_endpoint,
                    # Empty: circusd would otherwise join a multicast group.
                    'multicast_endpoint': '', 'check_delay': 1,
                    # circusd passes this on to its plugins: their logs land here too.
                    'logoutput': self.log_path}
        settings.update(circus or {})
        # Only with statsd: circus 0.19 takes a stats_endpoint alone as statsd = True.
        if str(settings.get('statsd', '')).lower() in ('1', 'true', 'yes', 'on') \
                and 'stats_endpoint' not in settings:
            settings['stats_endpoint'] = self.stats_endpoint
        self.stats_endpoint = str(settings.get('stats_endpoint', self.stats_endpoint))
        text = _section('circus', settings)
        for name, options in (watchers or {}).items():
            text += _section('watcher:%s' % name, options)
        for name, options in (plugins or {}).items():
            text += _section('plugin:%s' % name, options)
        with open(self.ini_path, 'w', encoding='utf-8') as ini:
            ini.write(text)
        self._context = zmq.Context()
        self._socket: Optional[zmq.Socket] = None

    def start(self, timeout: float = 8.0) -> 'Circusd':
        """Start circusd and wait until it answers commands and has started its watchers.

        circusd answers commands before it has started its watchers: until it has, the
        events of their start (``spawn``, ``start``) may still come, and commands that
        change state are refused as busy.
        """
        env = dict(os.environ, **self._env)
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                [self.python, '-c', 'from circus.circusd import main; main()',
                 self.ini_path], stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=env,
                # A group of its own, so that stop() can end whatever circusd leaves.
                start_new_session=True)
        deadline = time.monotonic() + timeout
        wait_for(self._answers, timeout, interval=0.05, what='circusd to answer')
        wait_for(self._started, max(0.0, deadline - time.monotonic()), interval=0.02,
                 what='circusd to start its watchers')
        return self

    def _answers(self) -> bool:
        assert self.process is not None, 'start() has started it'
        if self.process.poll() is not None:
            raise RuntimeError('circusd exited with %s:\n%s'
                               % (self.process.returncode, self.log()))
        try:
            return self.call('list', timeout=0.5)['status'] == 'ok'
        except TimeoutError:
            return False

    def _started(self) -> bool:
        """Whether circusd has ended the start of its watchers, a command that holds its
        lock: adding a watcher under a name it has is refused as busy while a command
        holds the lock, and as a duplicate, changing nothing, once none does."""
        try:
            names = self.call('list', timeout=0.5)['watchers']
            if not names:
                return True
            reply = self._call_once('add', 0.5, {'name': names[0], 'cmd': 'true'})
        except TimeoutError:
            return False
        return not is_busy(reply)

    def call(self, command: str, timeout: float = 5.0, busy_retry: float = 5.0,
             **props: Any) -> Dict[str, Any]:
        """Send ``command`` and return circusd's reply; :class:`TimeoutError` if none.

        Refusals because circusd is busy with another command are retried for
        ``busy_retry`` seconds: tests want their commands to happen.
        """
        deadline = time.monotonic() + busy_retry
        while True:
            reply = self._call_once(command, timeout, props)
            if not is_busy(reply) or time.monotonic() > deadline:
                return reply
            time.sleep(0.02)

    def _call_once(self, command, timeout, props):
        if self._socket is None:
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.linger = 0
            self._socket.connect(self.endpoint)
        msg_id = uuid.uuid4().hex
        self._socket.send_json({'id': msg_id, 'command': command, 'properties': props})
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(int(remaining * 1000)):
                # A late reply would confuse the next call: start over with a new socket.
                self._socket.close()
                self._socket = None
                raise TimeoutError('circusd did not answer %r within %s s'
                                   % (command, timeout))
            reply = self._socket.recv_json()
            if isinstance(reply, dict) and reply.get('id') == msg_id:
                return reply

    def pids(self, watcher: str) -> List[int]:
        """The pids of ``watcher``'s processes."""
        return sorted(self.call('list', name=watcher).get('pids', []))

    def status(self, watcher: str) -> str:
        return self.call('status', name=watcher)['status']

    def log(self) -> str:
        """circusd's own log so far."""
        return _read_text(self.log_path)

    def stop(self, timeout: float = 8.0) -> None:
        """Ask circusd to quit (stopping its plugins) and wait; kill it if it hangs, and
        whatever it leaves behind."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.call('quit', timeout=2)
            except TimeoutError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()
        if self.process is not None:
            try:  # processes a killed circusd could not stop would run on forever
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        """Kill circusd and every process it runs at once (SIGKILL), as a crash would.

        :meth:`start` runs it again on the same endpoints; :meth:`stop` still ends it.
        """
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self._socket is not None:  # its replies, if any, died with circusd
            self._socket.close()
            self._socket = None

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._context.term()

    def __enter__(self) -> 'Circusd':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class PluginProcess:
    """A plugin run by ``python -m circus_plugins`` (what ``circus-plugin`` does) against a
    circusd, for tests; its log (stderr) goes to a file, :meth:`log`::

        with PluginProcess('mypackage.MyPlugin', circusd, config={'loop_rate': 1}) as plugin:
            wait_for(lambda: 'Starting' in plugin.log())
        assert plugin.returncode == 0

    :param plugin: the plugin class, as ``module.Class``; ``''`` when ``args`` say what
        to run (``--ini PATH --all``).
    :param circusd: the :class:`Circusd` to run against; its endpoints and workdir are the
        defaults of the next parameters.
    :param config: the plugin's options, given as one ``--config`` (:func:`encode_config`).
    :param args: more command-line arguments, before the plugin's name.
    :param endpoint: circusd's command endpoint.
    :param pubsub: circusd's event endpoint.
    :param log_path: the log file (default: a new ``plugin-N.log`` in circusd's workdir).
    :param env: extra environment variables.
    """

    def __init__(self, plugin: str, circusd: Optional[Circusd] = None, *,
                 config: Optional[Mapping[str, Any]] = None, args: Sequence[str] = (),
                 endpoint: Optional[str] = None, pubsub: Optional[str] = None,
                 log_path: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None) -> None:
        endpoint = endpoint or (circusd.endpoint if circusd else None)
        pubsub = pubsub or (circusd.pubsub_endpoint if circusd else None)
        if not (endpoint and pubsub):
            raise ValueError('PluginProcess needs a circusd or both endpoints')
        if log_path is None:
            if circusd is None:
                raise ValueError('PluginProcess needs a circusd or a log_path')
            log_path = self._new_log(circusd.workdir)
        self.log_path = str(log_path)
        self.cmd = [sys.executable, '-m', 'circus_plugins', '--endpoint', endpoint,
                    '--pubsub', pubsub]
        if config:
            self.cmd += ['--config', encode_config(config)]
        self.cmd += list(args) + ([plugin] if plugin else [])  # '': --ini in args
        self._env = env or {}
        self.process: Optional[subprocess.Popen] = None
        #: The exit status, once :meth:`stop` has seen it.
        self.returncode: Optional[int] = None

    @staticmethod
    def _new_log(workdir: str) -> str:
        n = 0
        while True:  # until a name is free
            n += 1
            path = os.path.join(workdir, 'plugin-%d.log' % n)
            try:
                open(path, 'x').close()  # taken now, not by the next PluginProcess
            except FileExistsError:
                continue
            return path

    def start(self) -> 'PluginProcess':
        """Start the plugin process (without waiting for anything)."""
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                self.cmd, stdout=subprocess.DEVNULL, stderr=log,
                env=dict(os.environ, **self._env))
        return self

    def _started(self) -> subprocess.Popen:
        if self.process is None:
            raise RuntimeError('PluginProcess: start() was not called')
        return self.process

    @property
    def pid(self) -> int:
        return self._started().pid

    def log(self) -> str:
        """The plugin's log so far."""
        return _read_text(self.log_path)

    def stop(self, timeout: float = 5.0) -> int:
        """Send SIGTERM and return the exit status; kill the process if it has not exited
        within ``timeout`` seconds (the status then says so). Later calls return it again."""
        if self.returncode is None:
            process = self._started()
            process.send_signal(signal.SIGTERM)
            try:
                self.returncode = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                self.returncode = process.wait()
        return self.returncode

    def __enter__(self) -> 'PluginProcess':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def run_on_loop(loop: IOLoop, function: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Run ``function()`` on the tornado IOLoop ``loop`` (a plugin's :attr:`loop`),
    after what is queued there, from any other thread; await what it returns if that is
    awaitable (``lambda: plugin.call_async('list')``). Return the result, or raise its
    exception, here, within ``timeout`` seconds.

    A plain function runs in a plain callback, not in a task of its own.
    """
    done: concurrent.futures.Future = concurrent.futures.Future()

    def finish(future):
        if future.cancelled():
            done.set_exception(asyncio.CancelledError())
        elif future.exception() is not None:
            done.set_exception(future.exception())
        else:
            done.set_result(future.result())

    def run():
        try:
            value = function()
        except BaseException as exc:
            done.set_exception(exc)
            return
        if inspect.isawaitable(value):
            asyncio.ensure_future(value).add_done_callback(finish)
        else:
            done.set_result(value)
    loop.add_callback(run)
    return done.result(timeout)


class _CallHandler(logging.Handler):
    """Hands each record to ``take``."""

    def __init__(self, take: Callable[[logging.LogRecord], None], level: int) -> None:
        super().__init__(level)
        self.take = take

    def emit(self, record: logging.LogRecord) -> None:
        self.take(record)


class ScriptedCircusd:
    """circusd's replies to one plugin, scripted: for tests of a plugin's rules.

    It stands in for circusd behind :meth:`~circus_plugins.CircusPlugin.call_async` (so
    behind :meth:`~circus_plugins.CircusPlugin.ask` and
    :meth:`~circus_plugins.CircusPlugin.change_state` too), records every command, feeds
    events to ``handle_recv`` on the plugin's loop, and waits until the plugin has
    handled what it was given::

        plugin = Flapping('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 0.0)
        with ScriptedCircusd(plugin, {'options': {'status': 'ok', 'options': {}}}) as circusd:
            circusd.feed('web', 'reap', process_pid=12, time=time.time())
            circusd.feed('web', 'reap', process_pid=13, time=time.time())
            assert circusd.next_command() == ('stop', {'name': 'web'})

    :param plugin: the plugin, not started; the endpoints need not answer.
    :param replies: ``{command: reply}``; a reply is a dict, or a function (plain or
        ``async``) called with the command's properties that returns one or raises
        :exc:`~circus_plugins.CallError` (no reply). Other commands get
        ``{'status': 'ok'}``. A busy refusal (errno 5) is asked again, as circusd would
        be, while the call's ``busy_retry`` lasts: a function may answer busy a few times
        before it answers ok.
    :param ignore: commands answered but not recorded: the questions (``options``,
        ``list``...) a test does not look at, so that :meth:`next_command` and
        :meth:`no_command` see only the others.

    :attr:`escaped` collects what a plugin must never let out: exceptions from
    ``handle_recv``, what reached the loop's exception handler, and the errors tornado
    logged on the plugin's thread (an exception in a callback, or in a coroutine given to
    ``add_callback``). Use it from one thread.
    """

    def __init__(self, plugin: CircusPlugin, replies: Optional[Mapping[str, Any]] = None,
                 ignore: Sequence[str] = ()) -> None:
        self.plugin = plugin
        self.replies = dict(replies or {})
        self.ignore = set(ignore)
        #: ``(command, properties)`` of each command, in order.
        self.commands: 'queue.Queue[Tuple[str, Dict[str, Any]]]' = queue.Queue()
        #: Exceptions, exception-handler contexts and tornado's log records that
        #: escaped the plugin.
        self.escaped: List[Any] = []
        self._tornado = _CallHandler(self._tornado_error, logging.ERROR)
        # The point: the plugin's calls are answered here, not by a circusd.
        plugin.call_async = self._answer  # type: ignore[method-assign]

    async def _answer(self, command: str, *, busy_retry: float = 0.0,
                      **props: Any) -> Dict[str, Any]:
        if command not in self.ignore:
            self.commands.put((command, props))
        deadline = time.monotonic() + busy_retry
        while True:
            reply = self.replies.get(command, {'status': 'ok'})
            if callable(reply):
                reply = reply(**props)
                if inspect.isawaitable(reply):
                    reply = await reply
            if not is_busy(reply) or time.monotonic() > deadline:
                return dict(reply)
            await asyncio.sleep(0.001)

    def start(self) -> 'ScriptedCircusd':
        """Start the plugin (``start_background()``)."""
        logging.getLogger('tornado').addHandler(self._tornado)
        try:
            self.plugin.start_background()
        except BaseException:
            self.stop()
            raise
        self.on_loop(lambda: _asyncio_loop(self.plugin.loop).set_exception_handler(
            lambda loop, context: self.escaped.append(context)))
        return self

    def stop(self) -> None:
        self.plugin.stop()
        logging.getLogger('tornado').removeHandler(self._tornado)

    def _tornado_error(self, record: logging.LogRecord) -> None:
        if record.threadName == 'plugin-%s' % self.plugin.name:
            self.escaped.append(record)

    def __enter__(self) -> 'ScriptedCircusd':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def on_loop(self, function: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``function()`` on the plugin's loop, after what is queued there; return
        its result or raise its exception here."""
        return run_on_loop(self.plugin.loop, function, timeout)

    def feed(self, watcher: str, action: str, **fields: Any) -> None:
        """Hand the plugin the event ``watcher.<watcher>.<action>`` with ``fields`` as
        its JSON body, on its loop, and wait until it has handled it (:meth:`settle`)."""
        self.feed_raw((('watcher.%s.%s' % (watcher, action)).encode(),
                       json.dumps(fields).encode()))

    def feed_raw(self, *events: Any) -> None:
        """Hand the plugin ``events`` as they are (for malformed ones), then
        :meth:`settle`."""
        def run():
            for data in events:
                try:
                    self.plugin.handle_recv(data)
                except Exception as exc:
                    self.escaped.append(exc)
        self.on_loop(run)
        self.settle()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the plugin's loop has run what was queued and every task it
        started has finished: after this, whatever the plugin was going to do about what
        it was given, it has done."""
        loop = _asyncio_loop(self.plugin.loop)

        def idle():
            return not [t for t in asyncio.all_tasks(loop) if not t.done()]
        wait_for(lambda: self.on_loop(idle) and self.on_loop(idle), timeout, interval=0,
                 what='the plugin to finish what it was given')

    def elapse(self, seconds: float) -> None:
        """Let ``seconds`` pass on the plugin's loop, then :meth:`settle`: every timer of
        the plugin due by then (a retry, a periodic check) has run, and what it started
        has finished. To show that a timer did *not* do something."""
        done = threading.Event()
        self.on_loop(lambda: self.plugin.loop.call_later(seconds, done.set))
        if not done.wait(seconds + 5.0):
            raise TimeoutError('the plugin loop did not get %s s further' % seconds)
        self.settle()

    def next_command(self, timeout: float = 3.0) -> Tuple[str, Dict[str, Any]]:
        """The next command sent, as ``(command, properties)``; waits up to ``timeout``
        seconds (:class:`queue.Empty` if none)."""
        return self.commands.get(timeout=timeout)

    def no_command(self) -> bool:
        """Once the plugin has settled: whether it sent no command that was not taken
        with :meth:`next_command`."""
        self.settle()
        return self.commands.empty()


_Own = TypeVar('_Own', bound='_OwnSocket')


class _OwnSocket:
    """A ZeroMQ socket with a context of its own, both closed by :meth:`close`; a context
    manager."""

    def __init__(self, kind: int) -> None:
        self._context = zmq.Context()
        self.socket = self._context.socket(kind)
        self.socket.linger = 0

    def close(self) -> None:
        self.socket.close()
        self._context.term()

    def __enter__(self: _Own) -> _Own:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class EventPublisher(_OwnSocket):
    """A PUB socket standing in for circusd's event stream: give a plugin its
    :attr:`endpoint` as ``pubsub_endpoint`` and :meth:`publish` events, as many and as
    fast as a test needs (it queues without limit rather than drop)::

        with EventPublisher() as events:
            plugin = MyPlugin('tcp://127.0.0.1:1', events.endpoint, 1.0)
            ...
            events.publish('web', 'spawn', process_pid=12, time=time.time())

    A plugin's subscription reaches the publisher a moment after it connects: what is
    published before that is lost, so wait until the plugin has seen one event.
    """

    def __init__(self) -> None:
        super().__init__(zmq.PUB)
        self.socket.sndhwm = 0
        port = self.socket.bind_to_random_port('tcp://127.0.0.1')
        self.endpoint = 'tcp://127.0.0.1:%d' % port

    def publish(self, watcher: str, action: str, **fields: Any) -> None:
        """Publish ``watcher.<watcher>.<action>`` with ``fields`` as its JSON body."""
        self.publish_raw(('watcher.%s.%s' % (watcher, action)).encode(),
                         json.dumps(fields).encode())

    def publish_raw(self, topic: bytes, body: bytes) -> None:
        """Publish two frames as they are."""
        self.socket.send_multipart([topic, body])


class EventRecorder(_OwnSocket):
    """A SUB socket on circusd's events, for tests to see what plugins see.

    Call :meth:`sync` before relying on it: a SUB socket's subscription takes a moment to
    reach the publisher, and events published before that are lost.
    """

    def __init__(self, pubsub_endpoint: str, topic: bytes = b'watcher.') -> None:
        super().__init__(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.socket.connect(pubsub_endpoint)
        self.events: List[tuple] = []

    def poll(self, timeout: float = 0.05) -> List[tuple]:
        """Receive what has arrived, waiting at most ``timeout`` seconds for the first."""
        new = []
        if self.socket.poll(int(timeout * 1000)):
            while True:
                try:
                    topic, message = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                new.append((topic, message))
        self.events.extend(new)
        return new

    def listen(self, seconds: float) -> List[tuple]:
        """Collect events for ``seconds``: to show that something does *not* happen."""
        deadline = time.monotonic() + seconds
        new = []
        while time.monotonic() < deadline:
            new += self.poll(max(0.0, deadline - time.monotonic()))
        return new

    def wait(self, topic: bytes, timeout: float = 5.0) -> tuple:
        """Wait for an event whose topic is ``topic`` (already seen ones count)."""
        def seen():
            self.poll()
            return next((e for e in self.events if e[0] == topic), None)
        return wait_for(seen, timeout, interval=0, what='event %r' % topic)

    def sync(self, circusd: Circusd, watcher: str, timeout: float = 5.0) -> None:
        """Make sure events flow: nudge ``watcher`` (incr then decr) until one arrives."""
        def arrived():
            circusd.call('incr', name=watcher)
            circusd.call('decr', name=watcher)
            return self.poll(0.1)
        wait_for(arrived, timeout, interval=0, what='events from circusd')


class CommandCounter:
    """A relay between plugins and circusd that counts the commands they send.

    Give a plugin :attr:`endpoint` instead of circusd's: every request is passed on to
    circusd unchanged and every reply back to its sender, and :attr:`counts` tells how
    many of each command went through (``{'list': 3, 'stats': 0, ...}``). It runs in a
    thread of its own from :meth:`start` to :meth:`stop` (or as a context manager)::

        with CommandCounter(circusd.endpoint) as counter:
            with PluginProcess('mypackage.MyPlugin', circusd,
                               endpoint=counter.endpoint):
                ...
            assert counter.counts['stats'] == 0

    :attr:`counts` and :meth:`total` may be read from any thread.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.endpoint = 'tcp://127.0.0.1:%d' % free_port()
        self.counts: Dict[str, int] = collections.Counter()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()

    def start(self) -> 'CommandCounter':
        self._thread = threading.Thread(target=self._relay, name='command-counter',
                                        daemon=True)
        self._thread.start()
        self._ready.wait(5)
        return self

    def total(self) -> int:
        """How many commands went through, of every kind."""
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> Dict[str, int]:
        """A copy of :attr:`counts`."""
        with self._lock:
            return dict(self.counts)

    def _relay(self) -> None:
        context = zmq.Context()
        front = context.socket(zmq.ROUTER)
        back = context.socket(zmq.DEALER)
        for sock in (front, back):
            sock.linger = 0
        front.bind(self.endpoint)
        back.connect(self.target)
        senders: Dict[Any, bytes] = {}  # request id -> the sender's routing id
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        self._ready.set()
        try:
            while not self._done.is_set():
                for sock, _ in poller.poll(50):
                    if sock is front:
                        frames = front.recv_multipart()
                        sender, payload = frames[0], frames[-1]
                        try:
                            request = json.loads(payload)
                            command = str(request.get('command'))
                            senders[request.get('id')] = sender
                        except (ValueError, AttributeError, TypeError):
                            command = '?'
                        with self._lock:
                            self.counts[command] += 1
                        back.send_multipart(frames[1:])
                    else:
                        frames = back.recv_multipart()
                        try:
                            to = senders.pop(json.loads(frames[-1]).get('id'), None)
                        except (ValueError, AttributeError):
                            to = None
                        if to is not None:
                            front.send_multipart([to] + frames)
        finally:
            front.close()
            back.close()
            context.term()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> 'CommandCounter':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def wait_connected(pid: int, endpoint: str, timeout: float = 5.0) -> None:
    """Wait until process ``pid`` has a TCP connection to ``endpoint`` (needs psutil).

    A plugin's SUB socket subscribes right after it connects; tests use this to know a
    plugin process is listening before they make events happen.
    """
    import psutil
    port = int(endpoint.rsplit(':', 1)[1])
    process = psutil.Process(pid)
    # net_connections() since psutil 6.0; connections() before it (deprecated since).
    connections = getattr(process, 'net_connections', None) or process.connections

    def connected():
        return any(c.raddr and c.raddr.port == port and c.status == 'ESTABLISHED'
                   for c in connections('tcp'))
    wait_for(connected, timeout, what='pid %d to connect to %s' % (pid, endpoint))


class UdpReceiver:
    """A UDP socket on 127.0.0.1 collecting datagrams, as a statsd server would.

    :attr:`datagrams` holds every datagram received so far; :meth:`lines` splits them into
    metric lines.
    """

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(('127.0.0.1', 0))
        self.port = self.socket.getsockname()[1]
        self.datagrams: List[bytes] = []

    def receive(self, timeout: float = 0.05) -> List[bytes]:
        """Collect what has arrived, waiting at most ``timeout`` seconds for the first."""
        new = []
        self.socket.settimeout(timeout)
        try:
            while True:
                new.append(self.socket.recv(65536))
                self.socket.settimeout(0)
        except (socket.timeout, BlockingIOError):
            pass
        self.datagrams.extend(new)
        return new

    def lines(self) -> List[str]:
        return [line for datagram in self.datagrams
                for line in datagram.decode('utf-8').split('\n')]

    def wait_lines(self, condition: Callable[[List[str]], Any], timeout: float = 5.0,
                   what: str = 'metrics') -> Any:
        """Wait until ``condition(self.lines())`` is true; return its value."""
        def check():
            self.receive()
            return condition(self.lines())
        return wait_for(check, timeout, interval=0, what=what)

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> 'UdpReceiver':
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
