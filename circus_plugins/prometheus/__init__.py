"""A Prometheus exporter for circusd: :class:`PrometheusExporter`.

It serves ``/metrics`` over HTTP from the plugin's own loop, in the text format that
Prometheus and OpenMetrics parsers read (the format and gzip negotiated from the
request's ``Accept`` and ``Accept-Encoding`` as ``prometheus_client`` does). A scrape
never waits on circusd: it reads a :class:`~circus_plugins.prometheus._metrics.Snapshot` that the
plugin keeps up to date from circusd's events (spawns, exits, kills, and plugin-made
events of plugins running beside it) and from a poll every ``loop_rate`` seconds. The poll
costs circusd one ``status`` when nothing happened: the pids of each watcher are kept from
its ``spawn``/``reap``/``kill`` events (:class:`~circus_plugins._processes.Processes`);
``list`` of a watcher is asked only when it is new or its events could not be followed,
``get numprocesses`` when an event says it may have changed (``add``, ``updated``,
``kill``, a ``spawn`` beyond numprocesses), ``stats`` of each new process once (its wid and
start), and all of them again at start, a moment after the SUB socket reconnected and
after circusd did not answer, and each watcher once every
:data:`~circus_plugins.periodic.SAFETY_REFRESH` seconds, spread over that time. The CPU time and memory of each process are
read with psutil, off the loop (that costs circusd nothing). When circusd-stats runs
(``stats_source``: ``auto``, the default, while its stream is live; ``stream``; never with
``poll``), the resident memory of each process is its figure in the stream (rounded, as
circus writes it) and the safety refresh asks no ``list`` of a watcher whose processes the
stream names as the events did; the CPU seconds still come from psutil (the stream has
percents). A page is rendered once per change of the snapshot.

It needs ``prometheus_client`` and ``psutil``: ``pip install circus-plugins[prometheus]``.
"""
import asyncio
import base64
import binascii
import hmac
import math
import ssl
import time
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from .._processes import Processes
from .._redact import add_secret
from .._stats import LatestFigures, to_stats_source
from .._usage import Usage, UsageReader
from ..config import MAX_COUNT, to_host
from ..errors import ConfigError, PluginLoadError
from ..events import EXIT, Event, Exits, read_event, whole
from ..periodic import PeriodicPlugin
from ._metrics import Snapshot, process_infos, start_time
from ._pages import Pages

__all__ = ['PrometheusExporter']

#: Seconds from a change of the snapshot to the rendering of the pages scrapers ask for.
RENDER_DELAY = 0.1


def _import_prometheus(plugin: str) -> Tuple[Any, Any]:
    """``(prometheus_client.exposition, psutil)``, or one line saying what to install."""
    try:
        import psutil
        from prometheus_client import exposition
    except ImportError as exc:
        raise PluginLoadError('plugin %s needs prometheus_client and psutil (%s): pip '
                              'install circus-plugins[prometheus]' % (plugin, exc)) from None
    return exposition, psutil


class _MetricsHandler(RequestHandler):
    """``GET`` (and ``HEAD``) of the metrics page."""

    def initialize(self, exporter: 'PrometheusExporter') -> None:
        self.exporter = exporter

    def get(self) -> None:
        exporter = self.exporter
        if not exporter.authorized(self.request.headers.get('Authorization')):
            self.set_status(401)
            self.set_header('WWW-Authenticate', 'Basic realm="circus"')
            self.finish('unauthorized\n')
            return
        body, content_type, gzipped = exporter.pages.page(
            self.request.headers.get('Accept', ''),
            self.request.headers.get('Accept-Encoding', ''), self.get_arguments('name[]'))
        self.set_header('Content-Type', content_type)
        if gzipped:
            self.set_header('Content-Encoding', 'gzip')
        self.finish(body)

    head = get

    def log_exception(self, typ, value, tb) -> None:
        self.exporter.log.error('scrape failed', exc_info=(typ, value, tb))


class PrometheusExporter(PeriodicPlugin):
    """Serves circusd's metrics to Prometheus; every option and metric is described in
    the plugin's documentation page."""

    name = 'prometheus'
    default_loop_rate = 5.0
    look_at_start = True

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.exposition, self._psutil = _import_prometheus(self.name)
        o = self.option
        self.host = o('host', '127.0.0.1', to_host)
        self.port = o('port', 9753, int, minimum=0, maximum=65535)
        self.path = o('path', '/metrics')
        if not self.path.startswith('/') or any(c in self.path for c in '?#\\ '):
            raise ConfigError('plugin %s: option %r: %r is not a URL path'
                              % (self.name, 'path', self.path))
        self.children = o('children', False, bool)
        #: Where resident memory comes from: circusd-stats's stream or psutil (the CPU
        #: seconds always from psutil: the stream has percents).
        # (no 'psutil': its figures other than the stream's come from psutil anyway)
        self.stats_source = o('stats_source', 'auto', to_stats_source,
                              allowed=('auto', 'stream', 'poll'))
        self.user = o('basic_auth_user', '')
        self._password = o('basic_auth_password', '')
        if bool(self.user) != bool(self._password):
            raise ConfigError('plugin %s: options basic_auth_user and basic_auth_password '
                              'go together' % self.name)
        if self._password:
            add_secret(self._password)
        self._tls = self._tls_context()
        self.snapshot = Snapshot()
        self.exits = Exits()
        #: The pages served, rendered again soon after the snapshot changes.
        self.pages = Pages(self.snapshot, self.exposition)
        self._refresh: Any = None  # the timeout handle of the next refresh
        #: Reads CPU and memory in a worker thread, one poll at a time.
        self.usage = UsageReader(self._psutil, self.children)
        # (watcher, pid) -> {'wid', 'started'} of the processes seen, from their stats
        self._known: Dict[Tuple[str, int], Dict[str, Any]] = {}
        #: The pids of each watcher, kept from events.
        self.processes = Processes()
        #: The latest figures of circusd-stats's stream, by watcher and pid.
        self.figures = LatestFigures()
        self._desired: Dict[str, int] = {}    # watcher -> numprocesses, from ``get``
        self._ask_desired: Set[str] = set()   # watchers whose numprocesses may have changed
        self._server: Optional[HTTPServer] = None
        #: The port the server listens on (``port``, or the one chosen for ``port = 0``).
        self.bound_port: Optional[int] = None

    def _tls_context(self) -> Optional[ssl.SSLContext]:
        """The server's TLS context from prometheus_client's server options: ``certfile``
        and ``keyfile``; ``client_cafile``/``client_capath`` to verify clients, required
        with ``client_auth_required``."""
        o = self.option
        certfile, keyfile = o('certfile', ''), o('keyfile', '')
        cafile, capath = o('client_cafile', '') or None, o('client_capath', '') or None
        required = o('client_auth_required', False, bool)
        if not (certfile or keyfile):
            if cafile or capath or required:
                raise ConfigError('plugin %s: client certificates need certfile and keyfile'
                                  % self.name)
            return None
        if not (certfile and keyfile):
            raise ConfigError('plugin %s: options certfile and keyfile go together'
                              % self.name)
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            if cafile or capath:
                context.load_verify_locations(cafile=cafile, capath=capath)
                context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
            elif required:
                raise ConfigError('plugin %s: client_auth_required needs client_cafile or '
                                  'client_capath' % self.name)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError('plugin %s: cannot use certfile %r, keyfile %r: %s'
                              % (self.name, certfile, keyfile, exc)) from None
        return context

    # -- life ------------------------------------------------------------------------------

    def handle_init(self) -> None:
        app = Application([(self.path, _MetricsHandler, {'exporter': self})],
                          log_function=lambda handler: None)
        try:
            sockets = bind_sockets(self.port, self.host)
        except OSError as exc:
            raise ConfigError('plugin %s: cannot listen on %s:%d: %s'
                              % (self.name, self.host, self.port, exc.strerror or exc)
                              ) from None
        self._server = HTTPServer(app, ssl_options=self._tls)
        self._server.add_sockets(sockets)
        self.bound_port = sockets[0].getsockname()[1]
        self.log.info('serving metrics on %s://%s:%s%s', 'https' if self._tls else 'http',
                      self.host, self.bound_port, self.path)
        super().handle_init()

    def handle_stop(self) -> None:
        server = self._server
        if server is not None:
            self.loop.add_callback(server.stop)
        super().handle_stop()

    # -- events ----------------------------------------------------------------------------

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, plugin_events=True)
        if event is None:
            return
        if event.plugin is not None:
            self.snapshot.plugin_action(event.plugin, event.action, event.watcher)
        else:
            why = self.exits.see(event)
            self._follow(event)
            self.figures.handle_event(event.watcher, event.action, event.pid())
            if event.action == 'spawn':
                self.snapshot.spawned(event.watcher)
                pid = event.pid()
                if pid is not None:
                    self._known.pop((event.watcher, pid), None)  # a pid used again
            elif event.action == 'reap' and why is not None:
                self.snapshot.exited(event.watcher, 'exit' if why == EXIT else why)
        self._render_soon()

    def _follow(self, event: Event) -> None:
        """Keep the pids and the numprocesses of the watchers from an event, marking
        what the event does not tell to be asked at the next poll."""
        name, action = event.watcher, event.action
        self.processes.see(event)
        if action == 'add':
            self.processes.stale(name)
            self._ask_desired.add(name)
        elif action == 'updated' or action == 'kill':
            # ``set`` publishes ``updated``; ``decr`` publishes only ``kill``.
            self._ask_desired.add(name)
        elif action == 'spawn':
            # ``incr`` publishes spawns; a respawn after a crash does not change
            # numprocesses, and a crash loop must not make a question each time.
            count, desired = self.processes.count(name), self._desired.get(name)
            if count is None or desired is None or count > desired:
                self._ask_desired.add(name)

    # -- circusd-stats's stream ------------------------------------------------------------

    def wants_stats(self) -> bool:
        """The stream, unless ``stats_source = poll`` (then no socket is opened for it)."""
        return self.stats_source != 'poll'

    def handle_stats(self, data: Tuple[bytes, bytes]) -> None:
        self.figures.take(data)

    def _from_stream(self) -> bool:
        """Whether figures are taken from circusd-stats's stream at this poll."""
        return self.stats_source == 'stream' or (self.stats_source == 'auto'
                                                 and self.stats_live)

    def _streamed(self, usage: Dict[Tuple[int, float], Usage],
                  keys: Dict[Tuple[int, float], str]) -> Dict[Tuple[int, float], Usage]:
        """``usage`` with the resident memory of circusd-stats where it has a figure of
        the process (rounded as circus writes it: ``'17.2M'``); not with ``children``,
        which the stream never counts."""
        if self.children:
            return usage
        latest: Dict[str, Dict[int, Any]] = {}
        for key, used in list(usage.items()):
            name = keys[key]
            if name not in latest:
                latest[name] = self.figures.processes(name)
            process = latest[name].get(key[0])
            if process is not None and process.rss is not None:
                usage[key] = Usage(used.cpu, process.rss)
        return usage

    def _stream_agrees(self, names: List[str]) -> List[str]:
        """The watchers whose pids the stream confirms (a ``list`` of each is not needed at
        the safety refresh): circusd-stats names the same processes as the events did."""
        agree = []
        for name in names:
            streamed = set(self.figures.processes(name))
            if streamed and streamed == self.processes.pids(name):
                agree.append(name)
        return agree

    # -- the poll --------------------------------------------------------------------------

    async def look_after(self) -> None:
        status = await self.ask('status')
        statuses = status.get('statuses')
        if status.get('status') != 'ok' or not isinstance(statuses, Mapping):
            self.snapshot.down()
            self.refresh_everything()  # events were missed meanwhile: ask everything
            self._render_soon()
            return
        statuses = {str(k): v for k, v in statuses.items()}
        names = list(statuses)
        now = time.monotonic()
        self.processes.keep(names)
        due = self.refresh_due(names, now)  # the safety net: a few watchers each time
        if due:
            confirmed = set(self._stream_agrees(due)) if self._from_stream() else set()
            for name in due:
                if name not in confirmed:
                    self.processes.stale(name)
            self._ask_desired.update(due)
        for gone in set(self._desired) - set(names):
            del self._desired[gone]
        # Not the ``stats`` of every watcher: circusd 0.19 scans all of /proc for each
        # process's children there, seconds with hundreds of processes. The pids come from
        # events (``list`` of a watcher only when they cannot tell); a new process's wid
        # and start from its own ``stats``, once; numprocesses from ``get``, when an
        # event says it may have changed.
        asked = [name for name in names
                 if name in self._ask_desired or name not in self._desired]
        self._ask_desired.difference_update(asked)  # events from now on: asked again
        await asyncio.gather(self.processes.refresh(self.ask, names),
                             *(self._read_desired(name) for name in asked))
        pids = {name: self.processes.pids(name) for name in names}
        await self._learn([(name, pid) for name, found in pids.items()
                           for pid in sorted(found or ()) if (name, pid) not in self._known])
        current = {(name, pid) for name, found in pids.items() for pid in found or ()}
        for key in set(self._known) - current:
            del self._known[key]
        infos = {name: {str(pid): self._known[(name, pid)] for pid in found
                        if (name, pid) in self._known}
                 for name, found in pids.items() if found is not None}
        keys = {(pid, start_time(about)): name for name in infos
                for pid, about in process_infos(infos[name])}
        usage = await self.loop.run_in_executor(None, self.usage.read, list(keys))
        self.processes.ended((keys[ended], ended[0]) for ended in self.usage.gone)
        if self._from_stream():
            usage = self._streamed(usage, keys)
        running = {name: len(found) for name, found in pids.items() if found is not None}
        desired = {name: self._desired.get(name) for name in names}
        self.snapshot.polled(statuses, infos, desired, usage, running)
        self._render_now()  # before the next scrape comes, not RENDER_DELAY later

    async def _read_desired(self, name: str) -> None:
        reply = await self.ask('get', name=name, keys=['numprocesses'])
        count = _count(reply)
        if count is None:
            self._ask_desired.add(name)  # not told: ask again at the next poll
        else:
            self._desired[name] = count

    async def _learn(self, new: List[Tuple[str, int]]) -> None:
        """Ask the ``stats`` of new processes, one at a time, for half of
        ``min(call_timeout, loop_rate)`` at most: each costs circusd a scan of /proc
        (about 10 ms with 400 processes), and hundreds asked at once would hold it for
        seconds. Those left are asked at the next polls."""
        budget = time.monotonic() + min(self.call_timeout, self.loop_rate) / 2
        for done, (name, pid) in enumerate(new):
            if time.monotonic() > budget:
                self.log.debug('%d new processes left for the next poll', len(new) - done)
                return
            reply = await self.ask('stats', name=name, process=pid)
            info = reply.get('info') if reply.get('status') == 'ok' else None
            if isinstance(info, Mapping):
                self._known[(name, pid)] = {'wid': info.get('wid'),
                                            'started': info.get('started')}

    def _render_soon(self) -> None:
        """Render the pages scrapers ask for again, shortly (a burst of events makes
        one render), so that a scrape finds its page ready."""
        if self._refresh is None and self.pages.stale():
            self._refresh = self.loop.call_later(RENDER_DELAY, self._render_now)

    def _render_now(self) -> None:
        """Render one stale page, then the next on a later turn of the loop: a scrape
        that comes meanwhile does not wait for all of them."""
        if self._refresh is not None:
            self.loop.remove_timeout(self._refresh)
        self._refresh = None
        try:
            more = self.pages.refresh_one()
        except Exception:
            self.log.exception('rendering the metrics page failed')
            return
        if more:
            self._refresh = self.loop.call_later(0, self._render_now)

    # -- serving ---------------------------------------------------------------------------

    def authorized(self, header: Optional[str]) -> bool:
        """Whether a request with this ``Authorization`` header may scrape."""
        if not self.user:
            return True
        scheme, _, token = (header or '').partition(' ')
        if scheme.lower() != 'basic':
            return False
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode(
                'utf-8').partition(':')
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (hmac.compare_digest(user.encode(), self.user.encode())
                & hmac.compare_digest(password.encode(), self._password.encode()))


def _count(reply: Mapping[str, Any]) -> Optional[int]:
    options = reply.get('options') if reply.get('status') == 'ok' else None
    value = options.get('numprocesses') if isinstance(options, Mapping) else None
    return whole(value, 0, MAX_COUNT)

