"""Where :class:`~circus_plugins.event_logger.EventLogger` writes its lines: a file, syslog
and standard output, each taking many lines at once, and :class:`Losses`, the count of
the lines they could not write.

Every sink has ``sink_name`` (for a log line), ``write(lines)`` (a list of str without
line ends; a failure is a counted loss, never an exception) and ``close()``. Sinks are
used by one thread at a time: the writer's thread, then the one that closes them.
"""
import logging
import logging.handlers
import os
import re
import socket
import stat
import sys
import threading
from socket import SocketKind, socket as _Socket
from typing import List, Optional, Tuple, Union

from .._log import SayOnce
from ..errors import ConfigError

#: Seconds a syslog server over TCP may take to take a line before it counts as failed.
SEND_TIMEOUT = 10.0
FACILITIES = logging.handlers.SysLogHandler.facility_names


def encode(text: str) -> bytes:
    """``text`` in UTF-8. A lone surrogate (a ``\\ud800`` escape in an event's JSON) is
    written as that same escape: it stands inside a JSON string, where it reads back as
    it came, rather than failing the whole write."""
    return text.encode('utf-8', 'backslashreplace')


class Losses:
    """Counts the lines a sink could not write, and says so once a minute per kind of
    failure. Thread-safe: the writer's thread and the plugin's loop both count."""

    def __init__(self, log: logging.Logger) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._say = SayOnce(log, every=60.0, by_key=True)

    def lost(self, sink: str, why: Optional[BaseException], count: int = 1) -> None:
        """Count ``count`` lines that ``sink`` failed to write because of ``why``."""
        if count <= 0:
            return
        with self._lock:
            self.count += count
            self._say((sink, type(why).__name__), logging.ERROR,
                      'event records lost: %s failed (%s: %s); %d lost so far', sink,
                      type(why).__name__, why, self.count)


class FileSink:
    """Appends lines to ``path`` with one system call a batch. Rotated at ``max_bytes``
    (bytes; 0 never) with ``backup_count`` old files, as the standard library's
    :class:`~logging.handlers.RotatingFileHandler` names them (``path.1`` the newest);
    opened again when ``path`` is no longer the file it has open (logrotate moved it
    away), as :class:`~logging.handlers.WatchedFileHandler` does. Opening fails at
    construction with :exc:`OSError`."""

    sink_name = 'the file'

    def __init__(self, path: str, max_bytes: int, backup_count: int,
                 losses: Losses) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.losses = losses
        self._fd: Optional[int] = None
        self._id: Optional[Tuple[int, int]] = None
        self._size = 0
        self._rotates = False
        self._open()

    def _open(self) -> None:
        # O_APPEND: each write lands at the end, also after someone else wrote there.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o666)
        info = os.fstat(fd)
        self._fd, self._id, self._size = fd, (info.st_dev, info.st_ino), info.st_size
        # Only a regular file is rotated: renaming /dev/stdout would not do.
        self._rotates = (self.max_bytes > 0 and self.backup_count > 0
                         and stat.S_ISREG(info.st_mode))

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def write(self, lines: List[str]) -> None:
        """Write ``lines``; what fails is counted in :attr:`losses`."""
        try:
            self._follow()
        except OSError as exc:
            self.losses.lost(self.sink_name, exc, len(lines))
            return
        if self._rotates:
            self._write_rotating(lines)
        else:
            self._write(encode('\n'.join(lines) + '\n'), len(lines))

    def _follow(self) -> None:
        """Open ``path`` again if it is not the file open (once a batch: a ``stat``)."""
        try:
            info = os.stat(self.path)
            here: Optional[Tuple[int, int]] = (info.st_dev, info.st_ino)
        except FileNotFoundError:
            here = None
        if self._fd is None or here != self._id:
            self._close_fd()
            self._open()

    def _write(self, data: bytes, count: int) -> None:
        """Write ``data``, ``count`` whole lines; those not written whole are counted."""
        fd = self._fd
        assert fd is not None, 'write() opened it, or returned on a failure to'
        view, done = memoryview(data), 0
        try:
            while done < len(data):  # a write may take part of it (a disk filling up)
                done += os.write(fd, view[done:])
        except OSError as exc:
            # The lines written whole are kept; a line cut short counts as lost.
            self.losses.lost(self.sink_name, exc, count - data.count(b'\n', 0, done))
        finally:
            self._size += done

    def _write_rotating(self, lines: List[str]) -> None:
        """Write ``lines``, rotating before a line would take the file past
        ``max_bytes`` (a file holds one line at least, however long)."""
        chunk: List[bytes] = []
        size = self._size
        for index, line in enumerate(lines):
            data = encode(line + '\n')
            if size > 0 and size + len(data) > self.max_bytes:
                self._write(b''.join(chunk), len(chunk))  # a failure is counted there
                chunk = []
                try:
                    self._rotate()
                except OSError as exc:
                    self.losses.lost(self.sink_name, exc, len(lines) - index)
                    return
                size = self._size
            chunk.append(data)
            size += len(data)
        self._write(b''.join(chunk), len(chunk))

    def _rotate(self) -> None:
        self._close_fd()
        for number in range(self.backup_count, 0, -1):
            older = '%s.%d' % (self.path, number)
            newer = '%s.%d' % (self.path, number - 1) if number > 1 else self.path
            try:
                os.replace(newer, older)  # path.N, the oldest, is replaced
            except FileNotFoundError:
                pass
        self._open()

    def close(self) -> None:
        self._close_fd()


class SyslogSink(logging.handlers.SysLogHandler):
    """The standard library's syslog handler, one message a line; over TCP, a
    connection that failed is made again at the next line (the standard handler would
    keep writing to the broken one before Python 3.11)."""

    sink_name = 'syslog'
    # Set by the standard handler, whose hints do not say so; None while a TCP
    # connection that failed is not made again (handleError drops it).
    socket: Optional[_Socket]

    def __init__(self, address: Union[str, Tuple[str, int]], facility: int,
                 socktype: Optional[SocketKind], losses: Losses) -> None:
        super().__init__(address, facility, socktype)
        self.losses = losses
        self.ident = 'circus: '
        if self.socket is not None and not self.unixsocket:
            self.socket.settimeout(SEND_TIMEOUT)
        # One record, its message replaced line after line: a LogRecord costs more
        # than formatting the line it carries.
        self._record = logging.LogRecord('circus_plugins.events', logging.INFO, __file__,
                                         0, '', None, None)

    def write(self, lines: List[str]) -> None:
        record = self._record
        for line in lines:
            record.msg = line
            self.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        if (self.socket is None and isinstance(self.address, tuple)  # not a unix socket
                and self.socktype == socket.SOCK_STREAM):
            try:  # the standard handler makes it again only from Python 3.11 on
                self.socket = socket.create_connection(self.address, SEND_TIMEOUT)
            except OSError:
                self.handleError(record)
                return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's)
        # A counted loss, not a traceback on stderr.
        if not self.unixsocket and self.socktype == socket.SOCK_STREAM and self.socket:
            try:
                self.socket.close()
            except OSError:
                pass
            self.socket = None
        self.losses.lost(self.sink_name, sys.exc_info()[1])


class StdoutSink:
    """Writes lines to a text stream (standard output), flushed once a batch; the
    stream is left open at close."""

    sink_name = 'standard output'

    def __init__(self, stream, losses: Losses) -> None:
        self.stream = stream
        self.losses = losses

    def write(self, lines: List[str]) -> None:
        written = 0
        for line in lines:
            try:
                self.stream.write(line + '\n')
                written += 1
            except (OSError, ValueError) as exc:  # ValueError: closed, or not encodable
                self.losses.lost(self.sink_name, exc)
        try:
            self.stream.flush()
        except (OSError, ValueError) as exc:
            self.losses.lost(self.sink_name, exc, written)

    def close(self) -> None:
        self.stream.flush()


def syslog_address(value: str, option: str):
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
