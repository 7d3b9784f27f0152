"""Killing processes that stop sending heartbeats.

Each watched process sends a UDP datagram to the plugin regularly, by default the text
``<pid>;<timestamp>``. When a process has sent nothing for ``max_count`` periods of
``loop_rate`` seconds, the plugin asks circusd to kill it with the ``kill`` command, and
circusd starts a new one in its place. At start the plugin asks circusd for its watchers and
their processes; from then on it follows ``spawn``, ``reap`` and ``kill`` events. It never
watches plugin watchers (``plugin:NAME``), its own included::

    [plugin:watchdog]
    use = circus_plugins.watchdog.WatchDog
    port = 1664
    loop_rate = 10
    watchers_regex = ^web
"""
import asyncio
import functools
import logging
import os
import socket
import time
from typing import Any, Callable, Dict, Optional, Set, Tuple

from tornado.ioloop import IOLoop

from ._log import SayOnce
from .config import (MAX_COUNT, MAX_SECONDS, signal_name, to_host, to_number, to_regex,
                     to_signum)
from .errors import ConfigError
from .events import read_event, skip_event
from .periodic import PeriodicPlugin

DEFAULT_MSG_REGEX = r'^(?P<pid>.*);(?P<timestamp>.*)$'
#: Largest heartbeat read, in bytes; longer datagrams are truncated (and rarely match).
_MAX_DATAGRAM = 65535
#: Datagrams read in one wake-up of the loop before other work gets a turn.
_BURST = 256
#: Seconds between two warnings about the same kind of bad datagram.
_COMPLAINT_INTERVAL = 60.0
#: Unknown pids remembered, so that each one is reported once.
_MAX_UNKNOWN = 1024


def _to_address(value: Any, option: str) -> str:
    """A host (:func:`~circus_plugins.config.to_host`) that resolves to an address;
    whether it can be bound is for the start."""
    host = to_host(value, option)
    try:
        socket.getaddrinfo(host, None, 0, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError('option %r: %r does not resolve to an address: %s'
                          % (option, value, exc)) from None
    return host


def _unless_blank(convert: Callable) -> Callable:
    """``convert``, for an option whose blank value means "not set" (``None``)."""
    return lambda value, option: convert(value, option) if str(value).strip() else None


class _Process:
    """A watched process."""

    __slots__ = ('watcher', 'last_seen', 'killing')

    def __init__(self, watcher: str) -> None:
        self.watcher = watcher
        self.last_seen = time.monotonic()  # last heartbeat, or when we learnt of it
        self.killing = False


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
    look_at_start = True  # the first look finds the processes that are there already

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.ip = self.option('ip', '127.0.0.1', _to_address)
        self.port = self.option('port', 1664, int, minimum=1, maximum=65535)
        self.max_count = self.option('max_count', 3, int, minimum=1, maximum=MAX_COUNT)
        self.msg_regex = self.option('msg_regex', DEFAULT_MSG_REGEX, to_regex, groups=['pid'])
        self.watchers_regex = self.option('watchers_regex', '.*', to_regex)
        self.stop_signal: Optional[int] = self.option(
            'watchers_stop_signal', None, _unless_blank(to_signum))
        self.graceful_timeout: Optional[float] = self.option(
            'watchers_graceful_timeout', None, _unless_blank(
                functools.partial(to_number, minimum=0, maximum=MAX_SECONDS)))
        #: The watched processes: ``{pid: process}``. Belongs to the plugin thread.
        self.processes: Dict[int, _Process] = {}
        #: Heartbeats received, kills done: counters for tests and curious users.
        self.heartbeats = 0
        self.kills = 0
        self.sock: Optional[socket.socket] = None
        self._discovered = False
        self._gone: Optional[Set[int]] = None  # while discovering: pids that ended
        self._unknown: Set[int] = set()
        self._complaints = SayOnce(self.log, every=_COMPLAINT_INTERVAL, by_key=True)
        self._held: Dict[str, int] = {}  # complaints held back since the last one said

    # -- life ------------------------------------------------------------------------------

    def handle_init(self) -> None:
        self.sock = self._bind()
        self.loop.add_handler(self.sock.fileno(), self._on_readable, IOLoop.READ)
        self.log.info('listening for heartbeats on UDP %s:%d; a process silent for %g s is '
                      'killed', self.ip, self.port, self.loop_rate * self.max_count)
        super().handle_init()  # look_after now, then every loop_rate seconds

    def _bind(self) -> socket.socket:
        """The non-blocking UDP socket on ``ip``:``port``; :class:`ConfigError` if that
        address cannot be had."""
        family = socket.AF_INET6 if ':' in self.ip else socket.AF_INET  # a host name: v4
        sock = None
        try:
            infos = socket.getaddrinfo(self.ip, self.port, family, socket.SOCK_DGRAM)
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(infos[0][4])
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise ConfigError('plugin %s: cannot listen on UDP %s:%d (options ip, port): %s'
                              % (self.name, self.ip, self.port, exc)) from None
        return sock

    def handle_stop(self) -> None:
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
        self.log.debug('%s: %s pid %d', watcher, how, pid)

    def _forget(self, pid: int, process: Optional[_Process] = None) -> None:
        """Stop watching ``pid`` (only if it is still ``process``, when given)."""
        if process is None or self.processes.get(pid) is process:
            self.processes.pop(pid, None)

    async def _discover(self) -> None:
        """Watch the processes that were there before the plugin: list the watchers,
        then their pids. Events keep the list up to date afterwards."""
        self._gone = set()
        found: Dict[int, str] = {}
        try:
            reply = await self.ask('list')
            for watcher in [w for w in reply.get('watchers', []) if self.watches(w)]:
                listed = await self.ask('list', name=watcher)
                if listed.get('status') != 'ok':
                    reply = listed
                    break
                found.update(dict.fromkeys(listed.get('pids', []), watcher))
        finally:
            gone, self._gone = self._gone, None
        if reply.get('status') != 'ok':
            self.log.error('cannot list the processes to watch (will try again in %g s): '
                           '%s', self.loop_rate, reply.get('reason'))
            return
        for pid, watcher in found.items():
            if pid not in self.processes and pid not in gone:
                self._add(pid, watcher, 'found')
        self._discovered = True
        self.log.info('watching %d processes', len(self.processes))

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, fields=('spawn', 'reap', 'kill'))
        if event is None:
            return
        watcher, action = event.watcher, event.action
        if action in ('stop', 'remove'):
            for known, process in list(self.processes.items()):
                if process.watcher == watcher:
                    self._forget(known)
            return
        if action not in ('spawn', 'reap', 'kill') or not self.watches(watcher):
            return
        pid = event.pid()
        if pid is None:
            skip_event(self.log, event, 'process_pid')
        elif action == 'spawn':
            self._add(pid, watcher, 'new')
        else:
            self._forget(pid)
            if self._gone is not None:
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
                self.log.debug('UDP receive failed: %s', exc)
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
            self._complain('a datagram that is not UTF-8', origin, data)
            return None
        match = self.msg_regex.match(text.rstrip('\r\n'))
        if match is None:
            self._complain('a datagram that msg_regex does not match', origin, text)
            return None
        try:
            pid = int(match.group('pid'))
            if pid <= 0:
                raise ValueError
        except (TypeError, ValueError):
            self._complain('a datagram whose pid is not a positive integer', origin, text)
            return None
        process = self.processes.get(pid)
        if process is None:
            if pid not in self._unknown:
                if len(self._unknown) >= _MAX_UNKNOWN:
                    self._unknown.clear()
                self._unknown.add(pid)
                self.log.info('heartbeat from pid %d, which is not watched (not yet, or not '
                              'one of the watched watchers)', pid)
            return None
        process.last_seen = time.monotonic()
        self.heartbeats += 1
        return pid

    def _complain(self, kind: str, origin: str, datagram: Any) -> None:
        """Warn about an ignored datagram, at most once per kind every
        ``_COMPLAINT_INTERVAL`` seconds, counting those held back meanwhile."""
        held = self._held.get(kind, 0)
        more = ' (and %d more since the last warning)' % held if held else ''
        said = self._complaints(kind, logging.WARNING, 'ignored %s: from %s: %r%s; next such '
                                'warning in %g s at the soonest', kind, origin,
                                datagram[:80], more, self._complaints.every)
        self._held[kind] = 0 if said else held + 1

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
            reply = await self.ask('list', name=watcher)
            if (reply.get('status') == 'ok' and pid not in reply.get('pids', [])
                    or 'not found' in str(reply.get('reason'))):
                self.log.debug('%s: pid %d is gone already', watcher, pid)
                self._forget(pid, process)
                return
            if reply.get('status') == 'ok':
                options = {'signum': self.stop_signal, 'graceful_timeout': self.graceful_timeout}
                reply = await self.change_state('kill', name=watcher, pid=pid, **{
                    key: value for key, value in options.items() if value is not None})
        finally:
            process.killing = False
        if reply.get('status') == 'ok':
            self.kills += 1
            self._forget(pid, process)
            how = ("the watcher's stop signal" if self.stop_signal is None
                   else 'signal %s' % signal_name(self.stop_signal))
            self.log.info('%s: pid %d sent no heartbeat for %.1f s: killed it (%s)',
                          watcher, pid, silence, how)
            self.emit(watcher, 'watchdog_kill', pid=pid, silent_for=round(silence, 3),
                      signal=self.stop_signal and signal_name(self.stop_signal))
        else:
            self.log.error('%s: pid %d sent no heartbeat for %.1f s, but could not kill it '
                           '(trying again in %g s): %s', watcher, pid, silence,
                           self.loop_rate, reply.get('reason'))
