"""A statsd client: :class:`StatsdClient` and its batches, :class:`Pipeline`.

It speaks statsd's UDP line protocol, ``name:value|type[|@rate]``, and knows nothing of
circus: any program may use it. The plugins reach it through
:class:`~circus_plugins.statsd_plugin.StatsdPlugin`.
"""
import logging
import random
import re
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

from ._log import SayOnce

#: Datagrams stay under this size (bytes) unless told otherwise: safe on any network.
MAX_DATAGRAM = 512
#: Bucket names whose prefixed form a client remembers.
_MAX_HEADS = 10000
#: Seconds before a failed name lookup is tried again.
_RESOLVE_RETRY = 30.0
#: What statsd reads as separators, so that a bucket may not hold them.
_RESERVED = re.compile(r'[:|@\s]')


class _Metrics:
    """The metric methods, shared by the client (sends at once) and its pipelines."""

    prefix: Optional[str]
    sample_rate: float
    _heads: Dict[str, str]

    def send(self, bucket: str, value: str, sample_rate: Optional[float] = None) -> None:
        """Send one metric: ``value`` is the part after the colon, like ``'1|c'``.

        With a sample rate below 1, the metric is sent only that fraction of the time,
        marked ``|@rate`` so that statsd scales it back up.
        """
        rate = self.sample_rate if sample_rate is None else sample_rate
        if rate < 1:
            if random.random() >= rate:
                return
            value = '%s|@%s' % (value, rate)
        head = self._heads.get(bucket)
        if head is None:  # the prefixed, cleaned name: worked out once per bucket
            name = '%s.%s' % (self.prefix, bucket) if self.prefix else bucket
            head = _RESERVED.sub('_', name) + ':'
            if len(self._heads) < _MAX_HEADS:
                self._heads[bucket] = head
        self._emit(head + value)

    def increment(self, bucket: str, delta: int = 1,
                  sample_rate: Optional[float] = None) -> None:
        """Add ``delta`` to counter ``bucket``."""
        self.send(bucket, '%d|c' % delta, sample_rate)

    def decrement(self, bucket: str, delta: int = 1,
                  sample_rate: Optional[float] = None) -> None:
        """Subtract ``delta`` from counter ``bucket``."""
        self.send(bucket, '%d|c' % -abs(delta), sample_rate)

    def gauge(self, bucket: str, value: float, sample_rate: Optional[float] = None) -> None:
        """Set gauge ``bucket`` to ``value``."""
        self.send(bucket, '%s|g' % value, sample_rate)

    def timed(self, bucket: str, value: float, sample_rate: Optional[float] = None) -> None:
        """Record a duration of ``value`` milliseconds in timer ``bucket``."""
        self.send(bucket, '%s|ms' % value, sample_rate)

    def set(self, bucket: str, value: Any, sample_rate: Optional[float] = None) -> None:
        """Add ``value`` to set ``bucket`` (statsd counts distinct values)."""
        self.send(bucket, '%s|s' % value, sample_rate)

    def _emit(self, line: str) -> None:
        raise NotImplementedError


class StatsdClient(_Metrics):
    """A statsd client over UDP.

    :param host: statsd's host name or address.
    :param port: statsd's UDP port.
    :param prefix: prepended, with a dot, to every bucket.
    :param sample_rate: default rate, from 0 to 1, at which metrics are sent.
    :param max_size: largest datagram, in bytes, that :meth:`pipeline` sends.
    :param logger: where failures are logged (default: this module's logger).

    Bucket names are cleaned: each ``:``, ``|``, ``@`` and white space character of the
    prefixed name becomes ``_`` (``plugin:statsd.spawn`` is sent as
    ``plugin_statsd.spawn``), since statsd would read them as separators and misparse the
    line. circus 0.19's client sends names unchanged.

    Sending never raises: a failed lookup or send is counted in :attr:`errors` and logged
    once per kind of error. The host is looked up at once, and the socket opened at the
    first send. Not thread-safe: use it from one thread (the plugin's).
    """

    def __init__(self, host: str = 'localhost', port: int = 8125,
                 prefix: Optional[str] = None, sample_rate: float = 1,
                 max_size: int = MAX_DATAGRAM,
                 logger: Optional[logging.Logger] = None) -> None:
        self.host = host
        self.port = int(port)
        self.prefix = prefix
        self.sample_rate = float(sample_rate)
        self.max_size = max_size
        self._heads: Dict[str, str] = {}
        #: Datagrams that could not be sent, and lookups that failed.
        self.errors = 0
        #: Datagrams sent.
        self.sent = 0
        self._address: Optional[Tuple[Any, ...]] = None  # as getaddrinfo gives it
        self._next_lookup = 0.0
        self._say_once = SayOnce(logger or logging.getLogger(__name__), by_key=True)
        self._socket: Optional[socket.socket] = None
        self._lookup()  # now, before any loop runs: a lookup may block

    def pipeline(self) -> 'Pipeline':
        """A buffer of metrics sent together, packed into few datagrams, by
        :meth:`Pipeline.send` or at the end of a ``with`` block."""
        return Pipeline(self)

    def stop(self) -> None:
        """Close the socket, if a send opened it."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _emit(self, line: str) -> None:
        self._send_datagram(line.encode('utf-8'))

    def send_lines(self, lines: List[str]) -> None:
        """Send ``lines``, joined by newlines into datagrams of at most ``max_size`` bytes.

        A line longer than ``max_size`` goes alone in its own datagram.
        """
        batch: List[str] = []
        size = 0
        for line in lines:
            length = len(line) if line.isascii() else len(line.encode('utf-8'))
            if batch and size + 1 + length > self.max_size:
                self._send_datagram('\n'.join(batch).encode('utf-8'))
                batch, size = [], 0
            size += length + (1 if batch else 0)
            batch.append(line)
        if batch:
            self._send_datagram('\n'.join(batch).encode('utf-8'))

    def _send_datagram(self, data: bytes) -> None:
        address = self._address or self._lookup()
        if address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(data, address)
            self.sent += 1
        except OSError as exc:
            self._failed('sending to %s:%s' % (self.host, self.port), exc)

    def _lookup(self) -> Optional[Tuple[Any, ...]]:
        now = time.monotonic()
        if now < self._next_lookup:
            self.errors += 1
            return None
        try:
            info = socket.getaddrinfo(self.host, self.port, socket.AF_INET,
                                      socket.SOCK_DGRAM)
            self._address = info[0][4]
        except (OSError, UnicodeError) as exc:  # UnicodeError: 'a..b', a label too long
            self._next_lookup = now + _RESOLVE_RETRY
            self._failed('looking up %r' % self.host, exc)
        return self._address

    def _failed(self, doing: str, exc: Exception) -> None:
        self.errors += 1
        self._say_once((doing, type(exc), getattr(exc, 'errno', None)), logging.WARNING,
                       'statsd: %s failed: %s (counted, not logged again)', doing, exc)


class Pipeline(_Metrics):
    """Metrics buffered for one send; made by :meth:`StatsdClient.pipeline`.

    Not thread-safe.
    """

    def __init__(self, client: StatsdClient) -> None:
        self.client = client
        self.prefix = client.prefix
        self.sample_rate = client.sample_rate
        self._heads = client._heads
        self.lines: List[str] = []

    def _emit(self, line: str) -> None:
        self.lines.append(line)

    def send(self, bucket: Optional[str] = None, value: Optional[str] = None,
             sample_rate: Optional[float] = None) -> None:
        """With arguments, buffer one metric (as :meth:`StatsdClient.send`); without,
        send everything buffered and empty the buffer. A bucket without a value is a
        :exc:`TypeError`."""
        if bucket is not None:
            if value is None:  # it would go out as 'bucket:None' when sampled
                raise TypeError('Pipeline.send: bucket %r needs a value' % bucket)
            return super().send(bucket, value, sample_rate)
        lines, self.lines = self.lines, []
        if lines:
            self.client.send_lines(lines)

    def __enter__(self) -> 'Pipeline':
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.send()
