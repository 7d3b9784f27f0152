"""A record of every event: :class:`EventLogger` writes one JSON object a line.

Each of circusd's events, and each plugin-made event when it runs beside the plugins
that make them (a host, or ``events_subscribe``), becomes a line such as::

    {"time": "2026-12-03T08:06:20.123456+00:00", "host": "web1", "watcher": "web",
     "event": "reap", "pid": 4242, "wid": null, "exit_code": -11, "signal": "SIGSEGV",
     "exit": "crash", "plugin": null}

``exit`` is why a reaped process ended (``crash``, ``exit`` or ``stopped``:
:class:`~circus_plugins.events.Exits`); ``plugin`` names the plugin that made a
plugin-made event, whose other fields are under ``details``. The lines go to any of
three sinks at once: a file (``path``, rotated at ``max_bytes`` with ``backup_count``
old files, and opened again when logrotate has moved it away), syslog (``syslog``:
``/dev/log``, ``udp://host:port`` or ``tcp://host:port``; ``syslog_facility``) and
standard output (``stdout``). Writing happens in a thread of the standard library's
:class:`logging.handlers.QueueListener`, never on the plugin's loop; at stop, the events
on their way are still taken (:attr:`~circus_plugins.CircusPlugin.drain_on_stop`) and
everything queued is written before the plugin ends. A write that fails (a full disk, a
syslog server away) is counted and said once, never fatal.
"""
import datetime
import json
import logging
import logging.handlers
import math
import os
import queue
import re
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from ._log import SayOnce
from .config import MAX_COUNT, to_actions, to_matcher
from .errors import ConfigError
from .events import Exits, read_event
from .plugin import CircusPlugin

__all__ = ['EventLogger']

#: Records waiting to be written at most; beyond, new ones are counted as lost.
QUEUE_SIZE = 100000
#: Seconds a syslog server over TCP may take to take a record, and a stop to write what
#: is queued, before they count as failed: a server that stops reading holds nothing.
SEND_TIMEOUT = 10.0
_FACILITIES = logging.handlers.SysLogHandler.facility_names


_ZONES: Dict[int, datetime.timezone] = {}


def _iso(when: float) -> str:
    """``when`` (seconds since the epoch) in ISO 8601 with the local UTC offset of that
    moment (``astimezone()`` costs twice as much)."""
    offset = time.localtime(when).tm_gmtoff
    zone = _ZONES.get(offset)
    if zone is None:
        zone = _ZONES[offset] = datetime.timezone(datetime.timedelta(seconds=offset))
    return datetime.datetime.fromtimestamp(when, zone).isoformat(timespec='microseconds')


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as text: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _Losses:
    """Counts the records a sink could not write, and says so once a minute per kind
    of failure (thread-safe: sinks fail in the listener's thread)."""

    def __init__(self, log: logging.Logger) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._say = SayOnce(log, every=60.0, by_key=True)

    def lost(self, sink: str, why: Optional[BaseException]) -> None:
        with self._lock:
            self.count += 1
            self._say((sink, type(why).__name__), logging.ERROR,
                      'event records lost: %s failed (%s: %s); %d lost so far', sink,
                      type(why).__name__, why, self.count)


class _Sink:
    """What the sinks share: a failure is a counted loss, not a traceback on stderr."""

    sink_name = 'sink'
    losses: Optional[_Losses] = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's)
        if self.losses is not None:
            self.losses.lost(self.sink_name, sys.exc_info()[1])


class _FileSink(_Sink, logging.handlers.RotatingFileHandler):
    """Rotated at ``max_bytes``; opened again when the file was moved or removed (by
    logrotate), as :class:`logging.handlers.WatchedFileHandler` does."""

    sink_name = 'the file'

    def __init__(self, path: str, max_bytes: int, backup_count: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backup_count,
                         encoding='utf-8')
        self._id = self._identity()

    def _identity(self):
        if self.stream is None:
            return None
        stat = os.fstat(self.stream.fileno())
        return stat.st_dev, stat.st_ino

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stat = os.stat(self.baseFilename)
            here = stat.st_dev, stat.st_ino
        except FileNotFoundError:
            here = None
        if self.stream is not None and here != self._id:
            self.stream.close()
            self.stream = self._open()
            self._id = self._identity()
        super().emit(record)

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802
        # The standard one looks at the file on disk twice per line, even when it is
        # never to be rotated: half the cost of a line.
        return self.maxBytes > 0 and super().shouldRollover(record)

    def doRollover(self) -> None:  # noqa: N802 (logging's name)
        super().doRollover()
        self._id = self._identity()


class _SyslogSink(_Sink, logging.handlers.SysLogHandler):
    """Over TCP, a connection that failed is made again at the next record (the
    standard handler would keep writing to the broken one)."""

    sink_name = 'syslog'

    def emit(self, record: logging.LogRecord) -> None:
        if (self.socket is None and not self.unixsocket
                and self.socktype == socket.SOCK_STREAM):
            try:  # the standard handler makes it again only from Python 3.11 on
                self.socket = socket.create_connection(self.address, SEND_TIMEOUT)
            except OSError:
                self.handleError(record)
                return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's)
        if not self.unixsocket and self.socktype == socket.SOCK_STREAM and self.socket:
            try:
                self.socket.close()
            except OSError:
                pass
            self.socket = None
        super().handleError(record)


class _StdoutSink(_Sink, logging.StreamHandler):
    sink_name = 'standard output'


def _syslog_address(value: str, option: str):
    """``(address, socket type)`` for ``/dev/log``, ``udp://h:p`` or ``tcp://h:p``."""
    match = re.fullmatch(r'(udp|tcp)://(\[[^\]]+\]|[^:/]+):(\d{1,5})', value.strip())
    if match:
        host, port = match.group(2).strip('[]'), int(match.group(3))
        if not 0 < port < 65536:
            raise ConfigError('option %r: %r: no such port' % (option, value))
        kind = socket.SOCK_DGRAM if match.group(1) == 'udp' else socket.SOCK_STREAM
        return (host, port), kind
    if value.startswith('/'):
        return value, None
    raise ConfigError('option %r: %r is not /path/to/socket, udp://host:port or '
                      'tcp://host:port' % (option, value))


class EventLogger(CircusPlugin):
    """Writes every event as a JSON line to a file, syslog and/or standard output; its
    options are described in the plugin's documentation page."""

    name = 'event_logger'
    #: Events already on their way at stop are written too.
    drain_on_stop = 0.2

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server=None, **config):
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        o = self.option
        self.path = o('path', '')
        self.max_bytes = o('max_bytes', 0, int, minimum=0, maximum=2 ** 62)
        self.backup_count = o('backup_count', 5, int, minimum=0, maximum=MAX_COUNT)
        self.syslog = o('syslog', '')
        self.facility = o('syslog_facility', 'daemon').lower()
        if self.facility not in _FACILITIES:
            raise ConfigError('plugin %s: option %r: %r is not a syslog facility (%s)'
                              % (self.name, 'syslog_facility', self.facility,
                                 ', '.join(sorted(_FACILITIES))))
        self.stdout = o('stdout', False, bool)
        self.watchers = o('watchers', '*', to_matcher)
        self.events = o('events', '*', to_actions)
        self.hostname = o('hostname', socket.gethostname())
        if not (self.path or self.syslog or self.stdout):
            raise ConfigError('plugin %s: nowhere to write: set path, syslog or stdout'
                              % self.name)
        if self.syslog:
            try:
                self._syslog_address = _syslog_address(self.syslog, 'syslog')
            except ConfigError as exc:
                raise ConfigError('plugin %s: %s' % (self.name, exc)) from None
        if self.path:
            self._check_path()
        self.exits = Exits()
        #: Records taken (queued to be written) and records lost (queue full, or a sink
        #: failed); read from any thread.
        self.taken = 0
        self.losses = _Losses(self.log)
        self._queue: Optional[queue.Queue] = None
        self._listener: Optional[logging.handlers.QueueListener] = None
        self._sinks: List[logging.Handler] = []

    def _check_path(self) -> None:
        """An unwritable path is a clear error at start, not a loss later."""
        try:
            with open(self.path, 'a', encoding='utf-8'):
                pass
        except OSError as exc:
            raise ConfigError('plugin %s: option %r: cannot write to %r: %s'
                              % (self.name, 'path', self.path, exc.strerror or exc)) from None

    # -- life ------------------------------------------------------------------------------

    def handle_init(self) -> None:
        sinks: List[logging.Handler] = []
        opening = self.path
        try:
            if self.path:
                sinks.append(_FileSink(self.path, self.max_bytes, self.backup_count))
            if self.syslog:
                opening = self.syslog
                address, kind = self._syslog_address
                sinks.append(_SyslogSink(address, _FACILITIES[self.facility], kind))
            if self.stdout:
                sinks.append(_StdoutSink(sys.stdout))
        except OSError as exc:
            for sink in sinks:
                sink.close()
            raise ConfigError('plugin %s: cannot open %s: %s' % (
                self.name, opening, exc.strerror or exc)) from None
        for sink in sinks:
            sink.losses = self.losses
            if isinstance(sink, _SyslogSink):
                sink.ident = 'circus: '
                if sink.socket is not None and not sink.unixsocket:
                    sink.socket.settimeout(SEND_TIMEOUT)
        self._sinks = sinks
        self._queue = queue.Queue(QUEUE_SIZE)
        self._listener = logging.handlers.QueueListener(self._queue, *sinks)
        self._listener.start()

    def handle_stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not self._write_queued(listener):
            left = self._queue.qsize()
            for _ in range(left):
                self.losses.lost('the stop (not written in time)', None)
        for sink in self._sinks:
            try:
                sink.close()  # a file flushes: a full disk fails here too
            except Exception as exc:
                self.losses.lost(getattr(sink, 'sink_name', 'a sink'), exc)
        if self.losses.count:
            self.log.warning('%d event records were lost in all', self.losses.count)

    def _write_queued(self, listener: logging.handlers.QueueListener) -> bool:
        """Let the listener write what is queued, then end its thread, within
        :data:`SEND_TIMEOUT` seconds of no progress; whether it did."""
        while True:
            try:  # QueueListener.stop() would give up at once on a full queue
                self._queue.put(listener._sentinel, timeout=SEND_TIMEOUT)
                break
            except queue.Full:
                if self._queue.full():  # nothing was taken for SEND_TIMEOUT s: stuck
                    return False
        listener._thread.join(SEND_TIMEOUT + self._queue.qsize() * 0.01)
        return not listener._thread.is_alive()

    # -- events ----------------------------------------------------------------------------

    def handle_recv(self, data) -> None:
        event = read_event(self.log, data, plugin_events=True)
        if event is None:
            return
        why = self.exits.see(event)
        if not self.watchers(event.watcher) or not (
                '*' in self.events or event.action in self.events):
            return
        self.write(self.record(event, why))

    def record(self, event, why: Optional[str]) -> Dict[str, Any]:
        """The JSON object of ``event`` (``why``: its process's end, for a reap)."""
        when = event.time()
        record = {'time': _iso(time.time() if when is None else when), 'host': self.hostname,
                  'watcher': event.watcher, 'event': event.action, 'pid': event.pid(),
                  'wid': event.wid(), 'exit_code': event.exit_code(),
                  'signal': event.signal(), 'exit': why, 'plugin': event.plugin}
        if event.plugin is not None:
            record['details'] = _finite({k: v for k, v in event.fields.items()
                                         if k not in ('plugin', 'time')})
        return record

    def write(self, record: Dict[str, Any]) -> None:
        """Queue ``record`` to be written by every sink; never blocks. On the loop."""
        if self._queue is None:
            return
        line = json.dumps(record, ensure_ascii=False, default=str, allow_nan=False)
        entry = logging.LogRecord('circus_plugins.events', logging.INFO, __file__, 0,
                                  line, None, None)
        try:
            self._queue.put_nowait(entry)
        except queue.Full as exc:
            self.losses.lost('the queue (%d records waiting)' % QUEUE_SIZE, exc)
            return
        self.taken += 1
