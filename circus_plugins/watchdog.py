"""Killing processes that stop sending heartbeats.

Each watched process sends a UDP datagram to the plugin regularly, by default the text
``<pid>;<timestamp>``. When a process has sent nothing for ``max_count`` periods of
``loop_rate`` seconds, the plugin asks circusd to kill it with the ``kill`` command, and
circusd starts a new one in its place.

At start the plugin asks circusd for its watchers and their processes; from then on it
follows ``spawn``, ``reap`` and ``kill`` events. It never watches plugin watchers
(``plugin:NAME``), its own included.

Options:

- ``ip`` (default ``127.0.0.1``) and ``port`` (default 1664): where heartbeats arrive (UDP);
- ``msg_regex`` (default ``^(?P<pid>.*);(?P<timestamp>.*)$``): reads a heartbeat; its
  ``pid`` group gives the sender's pid (other groups are ignored);
- ``loop_rate`` (default 60): seconds between two checks;
- ``max_count`` (default 3): checks without a heartbeat before a process is killed;
- ``watchers_regex`` (default ``.*``): watchers whose name matches (from its start) are
  watched;
- ``watchers_stop_signal``: signal of the kill (name like ``SIGKILL`` or ``KILL``, or
  number), instead of the watcher's ``stop_signal``;
- ``watchers_graceful_timeout``: seconds circusd waits after that signal before sending
  SIGKILL, instead of the watcher's ``graceful_timeout``.

Example::

    [plugin:watchdog]
    use = circus_plugins.watchdog.WatchDog
    port = 1664
    loop_rate = 10
    max_count = 3
    watchers_regex = ^web
"""
import asyncio
import ipaddress
import logging
import os
import re
import signal
import socket
import time
from typing import Any, Dict, List, Optional, Pattern, Set, Tuple

from tornado.ioloop import IOLoop

from .config import MAX_COUNT, MAX_SECONDS, abandon, to_host, to_signum
from .errors import CallError, ConfigError
from .events import read_event, skip_event
from .periodic import PeriodicPlugin

log = logging.getLogger('circus_plugins')

DEFAULT_MSG_REGEX = r'^(?P<pid>.*);(?P<timestamp>.*)$'
#: Largest heartbeat read, in bytes; longer datagrams are truncated (and rarely match).
_MAX_DATAGRAM = 65535
#: Datagrams read in one wake-up of the loop before other work gets a turn.
_BURST = 256
#: Seconds between two warnings about the same kind of bad datagram.
_COMPLAINT_INTERVAL = 60.0
#: Unknown pids remembered, so that each one is reported once.
_MAX_UNKNOWN = 1024


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; the number itself for signals without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class _Process:
    """A watched process."""

    __slots__ = ('watcher', 'last_seen', 'killing')

    def __init__(self, watcher: str) -> None:
        self.watcher = watcher
        self.last_seen = time.monotonic()  # last heartbeat, or when we learnt of it
        self.killing = False


class _Complaints:
    """Warnings about bad input, at most one per kind every ``interval`` seconds."""

    def __init__(self, plugin: str, interval: float = _COMPLAINT_INTERVAL) -> None:
        self.plugin = plugin
        self.interval = interval
        self._kinds: Dict[str, List[float]] = {}  # kind: [last warning, ignored since]

    def __call__(self, kind: str, detail: str) -> None:
        now = time.monotonic()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return
        more = ''
        if state is not None and state[1]:
            more = ' (and %d more since the last warning)' % state[1]
        self._kinds[kind] = [now, 0]
        log.warning('plugin %s: ignored %s: %s%s; next such warning in %g s at the '
                    'soonest', self.plugin, kind, detail, more, self.interval)


class WatchDog(PeriodicPlugin):
    """Kills, with circusd's ``kill`` command, processes that stop sending heartbeats
    over UDP; circusd then replaces them.

    Every ``loop_rate`` seconds, a watched process that has sent no heartbeat for
    ``loop_rate`` × ``max_count`` seconds is killed. Heartbeats arrive on UDP
    ``ip``:``port`` and are read with ``msg_regex``; watchers matching
    ``watchers_regex`` are watched, plugin watchers never. ``watchers_stop_signal`` (a
    signal name or number) and ``watchers_graceful_timeout`` (seconds) override the
    watcher's own for the kill.
    """

    name = 'watchdog'
    default_loop_rate = 60.0

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server=None, **config):
        try:
            super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
            self._read_options()
        except ConfigError:
            abandon(self)  # this plugin will never run: close what the base class made
            raise
        #: The watched processes: ``{pid: process}``. Belongs to the plugin thread.
        self.processes: Dict[int, _Process] = {}
        #: Heartbeats received, kills done: counters for tests and curious users.
        self.heartbeats = 0
        self.kills = 0
        self.sock: Optional[socket.socket] = None
        self._discovered = False
        self._discovering = False
        self._gone: Set[int] = set()  # pids that ended while we were discovering
        self._unknown: Set[int] = set()
        self._complain = _Complaints(self.name)

    def _read_options(self) -> None:
        self.ip = self._option(to_host, 'ip', '127.0.0.1')
        self.port = self.option('port', 1664, int, minimum=1, maximum=65535)
        self._resolve()
        self.max_count = self.option('max_count', 3, int, minimum=1, maximum=MAX_COUNT)
        self.msg_regex = self._regex('msg_regex', DEFAULT_MSG_REGEX)
        if 'pid' not in self.msg_regex.groupindex:
            raise ConfigError('plugin %s: option %r: %r has no (?P<pid>...) group'
                              % (self.name, 'msg_regex', self.msg_regex.pattern))
        self.watchers_regex = self._regex('watchers_regex', '.*')
        self.stop_signal: Optional[int] = None
        if str(self.config.get('watchers_stop_signal') or '').strip():
            self.stop_signal = self._option(to_signum, 'watchers_stop_signal', '')
        self.graceful_timeout: Optional[float] = None
        if str(self.config.get('watchers_graceful_timeout') or '').strip():
            self.graceful_timeout = self.option('watchers_graceful_timeout', 0.0, float,
                                                minimum=0, maximum=MAX_SECONDS)

    def _option(self, convert, key, default):
        try:
            return convert(self.config.get(key, default), key)
        except ConfigError as exc:
            raise ConfigError('plugin %s: %s' % (self.name, exc)) from None

    def _resolve(self) -> None:
        """Refuse an ``ip`` that is a host name with no address (binding it, or not, is
        for the start)."""
        try:
            ipaddress.ip_address(self.ip)
            return
        except ValueError:
            pass
        try:
            socket.getaddrinfo(self.ip, self.port, 0, socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            raise ConfigError('plugin %s: option %r: %r does not resolve to an address: %s'
                              % (self.name, 'ip', self.ip, exc)) from None

    def _regex(self, key: str, default: str) -> Pattern:
        pattern = self.option(key, default)
        try:
            return re.compile(pattern)
        # OverflowError: a repeat count too large; RecursionError: nested too deep
        except (re.error, OverflowError, RecursionError) as exc:
            raise ConfigError('plugin %s: option %r: %r is not a regular expression: %s'
                              % (self.name, key, pattern, exc)) from None

    # -- life ------------------------------------------------------------------------------

    def handle_init(self):
        self.sock = self._bind()
        self.loop.add_handler(self.sock.fileno(), self._on_readable, IOLoop.READ)
        log.info('plugin %s: listening for heartbeats on UDP %s:%d; a process silent '
                 'for %g s is killed', self.name, self.ip, self.port,
                 self.loop_rate * self.max_count)
        super().handle_init()  # look_after every loop_rate seconds
        self.loop.add_callback(self._discover)

    def _bind(self) -> socket.socket:
        """The non-blocking UDP socket on ``ip``:``port``; :class:`ConfigError` if that
        address cannot be had."""
        where = '%s:%d' % (self.ip, self.port)
        try:
            family = (socket.AF_INET6 if ipaddress.ip_address(self.ip).version == 6
                      else socket.AF_INET)
        except ValueError:  # a host name
            family = socket.AF_INET
        try:
            infos = socket.getaddrinfo(self.ip, self.port, family, socket.SOCK_DGRAM)
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise ConfigError('plugin %s: cannot listen on UDP %s (options ip, port): %s'
                              % (self.name, where, exc)) from None
        try:
            sock.setblocking(False)
            sock.bind(infos[0][4])
        except OSError as exc:
            sock.close()
            raise ConfigError('plugin %s: cannot listen on UDP %s (options ip, port): %s'
                              % (self.name, where, exc)) from None
        return sock

    def handle_stop(self):
        # Runs in the stopping thread while the loop still turns: let the loop close
        # what it uses.
        super().handle_stop()
        self.loop.add_callback(self._close_udp)

    def _close_udp(self) -> None:
        if self.sock is not None:
            self.loop.remove_handler(self.sock.fileno())
            self.sock.close()
            self.sock = None

    # -- which processes -------------------------------------------------------------------

    def watches(self, watcher: str) -> bool:
        """Whether ``watcher``'s processes are watched: it matches ``watchers_regex``
        and is not a plugin."""
        return (not watcher.startswith('plugin:')
                and self.watchers_regex.match(watcher) is not None)

    def _add(self, pid: int, watcher: str, how: str) -> None:
        if pid == os.getpid():
            return
        self.processes[pid] = _Process(watcher)
        self._unknown.discard(pid)
        log.debug('plugin %s: %s: %s pid %d', self.name, watcher, how, pid)

    def _forget(self, pid: int, process: Optional[_Process] = None) -> None:
        """Stop watching ``pid`` (only if it is still ``process``, when given)."""
        if process is None or self.processes.get(pid) is process:
            self.processes.pop(pid, None)

    async def _discover(self) -> None:
        """Watch the processes that were there before the plugin: list the watchers,
        then their pids. Events keep the list up to date afterwards."""
        if self._discovered or self._discovering:
            return
        self._discovering = True
        self._gone.clear()
        try:
            reply = await self.call_async('list')
            if reply.get('status') != 'ok':
                raise CallError(reply.get('reason'))
            for watcher in reply.get('watchers', []):
                if not self.watches(watcher):
                    continue
                pids = await self.call_async('list', name=watcher)
                for pid in pids.get('pids', []):
                    if pid not in self.processes and pid not in self._gone:
                        self._add(pid, watcher, 'found')
            self._discovered = True
            log.info('plugin %s: watching %d processes', self.name, len(self.processes))
        except CallError as exc:
            log.error('plugin %s: cannot list the processes to watch (will try again in '
                      '%g s): %s', self.name, self.loop_rate, exc)
        except Exception:  # run by the loop at start: it must not see an exception
            log.exception('plugin %s: listing the processes to watch failed (will try '
                          'again in %g s)', self.name, self.loop_rate)
        finally:
            self._discovering = False
            self._gone.clear()

    def handle_recv(self, data):
        event = read_event(self.name, data, fields=('spawn', 'reap', 'kill'))
        if event is None:
            return
        watcher, action = event.watcher, event.action
        if action in ('stop', 'remove'):
            for pid, process in list(self.processes.items()):
                if process.watcher == watcher:
                    self._forget(pid)
            return
        if action not in ('spawn', 'reap', 'kill') or not self.watches(watcher):
            return
        pid = event.pid()
        if pid is None:
            skip_event(self.name, event, 'process_pid')
            return
        if action == 'spawn':
            self._add(pid, watcher, 'new')
        else:
            self._forget(pid)
            if self._discovering:
                self._gone.add(pid)

    # -- heartbeats ------------------------------------------------------------------------

    def _on_readable(self, fd, events) -> None:
        sock = self.sock
        for _ in range(_BURST):
            if sock is None:
                return
            try:
                data, sender = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                log.debug('plugin %s: UDP receive failed: %s', self.name, exc)
                return
            self.heartbeat(data, sender)
        # The socket is level-triggered: the loop calls again for what is left.

    def heartbeat(self, data: bytes, sender: Tuple = ('?', 0)) -> Optional[int]:
        """Read one datagram; return the pid it vouches for, or ``None`` if it is
        ignored (logged, a warning per kind at most every minute)."""
        origin = '%s:%s' % sender[:2]
        try:
            text = data.decode('utf-8')
        except UnicodeDecodeError:
            self._complain('a datagram that is not UTF-8', 'from %s: %r' % (origin, data[:80]))
            return None
        match = self.msg_regex.match(text.rstrip('\r\n'))
        if match is None:
            self._complain('a datagram that msg_regex does not match',
                           'from %s: %r' % (origin, text[:80]))
            return None
        try:
            pid = int(match.group('pid'))
            if pid <= 0:
                raise ValueError
        except (TypeError, ValueError):
            self._complain('a datagram whose pid is not a positive integer',
                           'from %s: %r' % (origin, text[:80]))
            return None
        process = self.processes.get(pid)
        if process is None:
            if pid not in self._unknown:
                if len(self._unknown) >= _MAX_UNKNOWN:
                    self._unknown.clear()
                self._unknown.add(pid)
                log.info('plugin %s: heartbeat from pid %d, which is not watched (not '
                         'yet, or not one of the watched watchers)', self.name, pid)
            return None
        process.last_seen = time.monotonic()
        self.heartbeats += 1
        return pid

    # -- the check -------------------------------------------------------------------------

    async def look_after(self) -> None:
        """Every ``loop_rate`` seconds: kill the processes silent for too long."""
        if not self._discovered:
            await self._discover()
        limit = self.loop_rate * self.max_count
        now = time.monotonic()
        silent = [(pid, process) for pid, process in self.processes.items()
                  if not process.killing and now - process.last_seen >= limit]
        if silent:
            await asyncio.gather(*(self._kill(pid, process, now - process.last_seen)
                                   for pid, process in silent))

    async def _kill(self, pid: int, process: _Process, silence: float) -> None:
        """Kill ``pid`` with circusd's ``kill`` command, once circusd confirms that it
        still belongs to its watcher; log the outcome. A failure is tried again at the
        next check."""
        watcher = process.watcher
        process.killing = True
        try:
            listed = await self.call_async('list', name=watcher)
            if listed.get('status') != 'ok' or pid not in listed.get('pids', []):
                log.debug('plugin %s: %s: pid %d is gone already', self.name, watcher, pid)
                self._forget(pid, process)
                return
            props: Dict[str, Any] = {'name': watcher, 'pid': pid}
            if self.stop_signal is not None:
                props['signum'] = self.stop_signal
            if self.graceful_timeout is not None:
                props['graceful_timeout'] = self.graceful_timeout
            reply = await self.change_state('kill', **props)
        except CallError as exc:
            reply = {'status': 'error', 'reason': str(exc)}
        finally:
            process.killing = False
        if reply.get('status') == 'ok':
            self.kills += 1
            self._forget(pid, process)
            how = ("the watcher's stop signal" if self.stop_signal is None
                   else 'signal %s' % signal_name(self.stop_signal))
            log.info('plugin %s: %s: pid %d sent no heartbeat for %.1f s: killed it (%s)',
                     self.name, watcher, pid, silence, how)
        else:
            log.error('plugin %s: %s: pid %d sent no heartbeat for %.1f s, but could not '
                      'kill it (trying again in %g s): %s', self.name, watcher, pid,
                      silence, self.loop_rate, reply.get('reason'))
