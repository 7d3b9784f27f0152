"""Sending circusd's events and statistics to statsd.

:class:`StatsdClient` speaks statsd's UDP line protocol, ``name:value|type[|@rate]``, and
can batch lines into datagrams of at most 512 bytes with :meth:`StatsdClient.pipeline`.
:class:`StatsdEmitter` counts every event circusd publishes as
``circus.<application_name>.watcher.<watcher>.<action>``; :class:`BaseObserver` runs
:meth:`~BaseObserver.look_after` every ``loop_rate`` seconds, and :class:`FullStats` uses
it to send per-watcher CPU and memory gauges.

Example ``circus.ini`` section::

    [plugin:statsd]
    use = circus_plugins.statsd.StatsdEmitter
    host = 127.0.0.1
    port = 8125
    application_name = web
"""
import logging
import random
import re
import socket
import time
from typing import Any, Dict, List, Optional

from .config import abandon, to_host
from .errors import ConfigError
from .events import read_event
from .periodic import PeriodicPlugin
from .plugin import CircusPlugin

log = logging.getLogger('circus_plugins')

#: Datagrams stay under this size (bytes) unless told otherwise: safe on any network.
MAX_DATAGRAM = 512
#: Bucket names whose prefixed form a client remembers.
_MAX_HEADS = 10000
#: Seconds before a failed name lookup is tried again.
_RESOLVE_RETRY = 30.0


_RESERVED = re.compile(r'[:|@\s]')


def _clean(bucket: str) -> str:
    """``bucket`` with each ``:``, ``|``, ``@`` and white space character replaced by
    ``_``: statsd reads them as separators, so a bucket named after the watcher
    ``plugin:flapping`` would otherwise become a bad line. circus 0.19 sends them as they
    are."""
    return _RESERVED.sub('_', bucket)


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
            head = _clean('%s.%s' % (self.prefix, bucket) if self.prefix else bucket) + ':'
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

    Bucket names are cleaned: each ``:``, ``|``, ``@`` and white space character of the
    prefixed name becomes ``_`` (``plugin:statsd.spawn`` is sent as
    ``plugin_statsd.spawn``), since statsd would read them as separators and misparse the
    line. circus 0.19's client sends names unchanged.

    Sending never raises: a failed lookup or send is counted in :attr:`errors` and logged
    once per kind of error. Not thread-safe: use it from one thread (the plugin's).
    """

    def __init__(self, host: str = 'localhost', port: int = 8125,
                 prefix: Optional[str] = None, sample_rate: float = 1,
                 max_size: int = MAX_DATAGRAM) -> None:
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
        self._address = None
        self._next_lookup = 0.0
        self._logged = set()
        self._socket: Optional[socket.socket] = None  # opened at the first send
        # Look the host up now, before any loop runs: a lookup may block.
        self._lookup()

    def pipeline(self) -> 'Pipeline':
        """A buffer of metrics sent together, packed into few datagrams, by
        :meth:`Pipeline.send` or at the end of a ``with`` block."""
        return Pipeline(self)

    def stop(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _emit(self, line: str) -> None:
        self._send_datagram(line.encode('utf-8'))

    def send_lines(self, lines: List[str]) -> None:
        """Send ``lines``, joined by newlines into datagrams of at most ``max_size`` bytes.

        A line longer than ``max_size`` goes alone in its own datagram.
        """
        batch, size = [], 0
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

    def _lookup(self):
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
        kind = (doing, type(exc), getattr(exc, 'errno', None))
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning('statsd: %s failed: %s (counted, not logged again)', doing, exc)


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
        send everything buffered and empty the buffer."""
        if bucket is not None:
            return super().send(bucket, value, sample_rate)
        lines, self.lines = self.lines, []
        if lines:
            self.client.send_lines(lines)

    def __enter__(self) -> 'Pipeline':
        return self

    def __exit__(self, *exc_info) -> None:
        self.send()


class StatsdEmitter(CircusPlugin):
    """Counts every circusd event in statsd as ``<prefix>.<watcher>.<action>``.

    Options: ``host`` (default ``localhost``), ``port`` (8125), ``application_name``
    (``app``), ``prefix`` (default ``circus.<application_name>.watcher``), ``sample_rate``
    (1.0, from 0 to 1). Events arriving together go out together, batched into datagrams
    of at most 512 bytes.
    """

    name = 'statsd'
    default_app_name = 'app'

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server=None, **config):
        try:
            super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
            self.app = self._bucket_part('application_name', self.default_app_name)
            self.prefix = self._bucket_part('prefix', 'circus.%s.watcher' % self.app,
                                            empty=True)
            rate = self.option('sample_rate', 1.0, float, minimum=0, maximum=1)
            host = self._option(to_host, 'host', 'localhost', ipv6=False)
            port = self.option('port', 8125, int, minimum=1, maximum=65535)
        except ConfigError:
            abandon(self)  # this plugin will never run: close what the base class made
            raise
        #: The client the built-in metrics go to. It may be replaced, even after the
        #: plugin has started: each metric goes to the client in place when it is given
        #: (see :attr:`metrics`).
        self.statsd = StatsdClient(host=host, port=port, prefix=self.prefix,
                                   sample_rate=rate)
        self._batch: Optional[Pipeline] = None  # made for the client in place
        self._flush_scheduled = False

    def _option(self, convert, key, default, **kwargs):
        """Option ``key`` read with ``convert(value, key, **kwargs)``, its error naming
        the plugin."""
        try:
            return convert(self.config.get(key, default), key, **kwargs)
        except ConfigError as exc:
            raise ConfigError('plugin %s: %s' % (self.name, exc)) from None

    def _bucket_part(self, key: str, default: str, empty: bool = False) -> str:
        """A part of the metric names (``prefix``, ``application_name``): no control
        characters, no empty part between dots; ``''`` only if ``empty``."""
        value = self.option(key, default)
        text = value.strip()
        problem = None
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            problem = 'contains control characters'
        elif not text and not empty:
            problem = 'is empty'
        elif text and '' in text.split('.'):
            problem = 'has an empty part between dots'
        if problem:
            raise ConfigError('plugin %s: option %r: %r %s' % (self.name, key, value,
                                                                problem))
        return text

    @property
    def metrics(self) -> _Metrics:
        """Where the plugin thread puts metrics: for the :class:`StatsdClient` in
        :attr:`statsd` when it is read, a batch of that client, sent once the loop has
        handled what is waiting (a burst of events, say). Any other object put in
        :attr:`statsd` (a test's recorder, as circus 0.19's tests do) is returned itself:
        its ``increment``, ``gauge`` and ``timed`` get the names without the prefix."""
        client = self.statsd
        if not isinstance(client, StatsdClient):
            return client
        batch = self._batch
        if batch is None or batch.client is not client:
            if batch is not None:  # the client was replaced: the old one gets its lines
                batch.send()
            batch = self._batch = client.pipeline()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.add_callback(self._flush)
        return batch

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._batch is not None:
            self._batch.send()

    def handle_recv(self, data):
        # Every event counts, whatever its body: only the topic is read (and checked).
        event = read_event(self.name, data, fields=False)
        if event is not None:
            self.metrics.increment('%s.%s' % (event.watcher, event.action))

    def handle_stop(self):
        # Runs in the stopping thread once events have paused: hand the last batch to
        # the loop, which is still running, and close the socket after it.
        super().handle_stop()
        self.loop.add_callback(self._close_statsd)

    def _close_statsd(self):
        self._flush()
        stop = getattr(self.statsd, 'stop', None)  # a stand-in may have none
        if stop is not None:
            stop()


class BaseObserver(StatsdEmitter, PeriodicPlugin):
    """A statsd plugin that calls :meth:`look_after` every ``loop_rate`` seconds (default
    60) on the plugin's loop; see :class:`~circus_plugins.periodic.PeriodicPlugin`.
    Events are ignored."""

    handle_recv = PeriodicPlugin.handle_recv


_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40, 'P': 1 << 50}


def human_to_bytes(text: str) -> int:
    """``'1.52M'`` -> bytes, as circusd writes memory sizes in its ``stats`` replies."""
    match = re.fullmatch(r'\s*([0-9.]+)\s*([KMGTP]?)B?\s*', str(text), re.IGNORECASE)
    if not match:
        raise ValueError('%r is not a size' % (text,))
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class FullStats(BaseObserver):
    """Every ``loop_rate`` seconds, sends gauges for each watcher from circusd's ``stats``:
    ``_stats.<watcher>.cpu_max``, ``cpu_sum`` (percent), ``mem_pct_max``, ``mem_pct_sum``
    (percent), ``mem_max``, ``mem_sum`` (bytes), ``watchers_num`` (live processes) and
    ``spawn_count``; ``_stats.error`` counts failed ``stats`` calls. Plugins are skipped.
    """

    name = 'full_stats'

    def __init__(self, *args, **config):
        super().__init__(*args, **config)
        self._spawns: Dict[str, int] = {}

    def handle_recv(self, data):
        event = read_event(self.name, data, fields=False)
        if event is not None and event.action == 'spawn':
            self._spawns[event.watcher] = self._spawns.get(event.watcher, 0) + 1

    async def look_after(self):
        try:
            reply = await self.call_async('stats')
        except Exception as exc:
            reply = {'status': 'error', 'reason': str(exc)}
        if reply.get('status') != 'ok':
            log.warning('plugin %s: stats failed: %s', self.name, reply.get('reason'))
            self.metrics.increment('_stats.error')
            return
        for watcher, infos in reply.get('infos', {}).items():
            if not watcher.startswith('plugin:'):
                self._gauge_watcher(watcher, infos)

    def _gauge_watcher(self, watcher: str, infos: Dict[str, Any]) -> None:
        metrics = self.metrics
        processes = [info for info in infos.values() if isinstance(info, dict)]
        spawn_count = infos.get('spawn_count', self._spawns.get(watcher))
        if spawn_count is not None:
            metrics.gauge('_stats.%s.spawn_count' % watcher, spawn_count)
        metrics.gauge('_stats.%s.watchers_num' % watcher, len(processes))
        if not processes:
            return
        # psutil reports "N/A" for what it may not read.
        cpus = [p['cpu'] for p in processes if isinstance(p.get('cpu'), (int, float))]
        mems = [p['mem'] for p in processes if isinstance(p.get('mem'), (int, float))]
        sizes = []
        for process in processes:
            try:
                sizes.append(human_to_bytes(process.get('mem_info1', 0)))
            except ValueError:
                continue
        if cpus:
            metrics.gauge('_stats.%s.cpu_max' % watcher, max(cpus))
            metrics.gauge('_stats.%s.cpu_sum' % watcher, sum(cpus))
        if mems:
            metrics.gauge('_stats.%s.mem_pct_max' % watcher, max(mems))
            metrics.gauge('_stats.%s.mem_pct_sum' % watcher, sum(mems))
        if sizes:
            metrics.gauge('_stats.%s.mem_max' % watcher, max(sizes))
            metrics.gauge('_stats.%s.mem_sum' % watcher, sum(sizes))
