"""Watching an HTTP URL, timing its answers and restarting a watcher when it fails.

Every ``loop_rate`` seconds the plugin fetches ``check_url`` with tornado's asynchronous
HTTP client, on the plugin's loop. An answer with a 2xx status (after redirects) sends
its duration as the statsd timer ``http_stats.request_time``, in milliseconds. Any other
outcome counts ``http_stats.error`` and ``http_stats.error.<code>``, where ``<code>`` is
the HTTP status, or 599 when no answer came (connection refused, timeout...), as tornado
names those. With ``restart_on_error``, the named watcher is then restarted; each restart
circusd confirms counts ``http_stats.restart_on_error``.

Metrics go to statsd under ``circus.<application_name>.watcher`` (application_name
``http_observer`` by default), as with every :class:`~circus_plugins.statsd.BaseObserver`.

Example::

    [plugin:http_observer]
    use = circus_plugins.http_observer.HttpObserver
    check_url = http://127.0.0.1:8080/health
    timeout = 2
    loop_rate = 10
    restart_on_error = web
"""
from typing import Any, Optional

from .config import MAX_SECONDS, redact_error, redact_url, to_name, to_url
from .statsd import BaseObserver

#: The code counted when no HTTP answer came at all (tornado's name for it).
NO_ANSWER = 599


class HttpObserver(BaseObserver):
    """Fetches ``check_url`` every ``loop_rate`` seconds; times it, counts failures and
    restarts the ``restart_on_error`` watcher when it fails.

    Options: ``check_url`` (default ``http://localhost/``), ``timeout`` (seconds for the
    whole request, default 10), ``restart_on_error`` (a watcher name, default none), and
    those of :class:`~circus_plugins.statsd.BaseObserver` (``loop_rate`` in seconds,
    ``host``, ``port``, ``application_name``...).
    """

    name = 'http_observer'
    default_app_name = 'http_observer'

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.check_url = self.option('check_url', 'http://localhost/', to_url)
        self.timeout = self.option('timeout', 10.0, float, minimum=0.001,
                                   maximum=MAX_SECONDS)
        self.restart_on_error = self.option('restart_on_error', '', to_name) or None
        #: ``check_url`` as logs show it: without its password or secret parameters.
        self.shown_url = redact_url(self.check_url)
        #: tornado's AsyncHTTPClient while the plugin runs.
        self.http_client: Any = None

    def handle_init(self) -> None:
        # Imported at start, not with the module: tornado's HTTP client (with the
        # http.client and email modules it brings) weighs about 1 MiB, which a process
        # that never starts this plugin (a host leaving out a bad section) need not carry.
        from tornado.httpclient import AsyncHTTPClient
        # On the plugin thread, whose current loop is self.loop: the client belongs to it.
        self.http_client = AsyncHTTPClient(force_instance=True)
        super().handle_init()

    def handle_stop(self) -> None:
        super().handle_stop()
        self.loop.add_callback(self._close_client)

    def _close_client(self) -> None:
        client, self.http_client = self.http_client, None
        if client is not None:
            client.close()

    async def look_after(self) -> None:
        """Fetch ``check_url`` once and report the outcome (a coroutine, on the loop)."""
        client = self.http_client
        if client is None:  # stopping
            return
        from tornado.httpclient import HTTPClientError  # imported at start: a look-up
        try:
            response = await client.fetch(self.check_url, raise_error=False,
                                          request_timeout=self.timeout)
        except HTTPClientError as exc:  # no answer: timeout (599)
            code, reason = exc.code, str(exc)
        except Exception as exc:  # no answer: refused, reset, DNS, TLS...
            code, reason = NO_ANSWER, '%s: %s' % (type(exc).__name__, exc)
        else:
            if response.error is None:
                self.metrics.timed('http_stats.request_time',
                                   round(response.request_time * 1000, 3))
                return
            code, reason = response.code, str(response.error)
        if self.http_client is None:  # the plugin stopped meanwhile: not a failure
            return
        reason = redact_error(reason, self.check_url)
        self.log.warning('%s failed: %s', self.shown_url, reason)
        self.metrics.increment('http_stats.error')
        self.metrics.increment('http_stats.error.%s' % code)
        if self.restart_on_error and await self.restart(
                self.restart_on_error, '%s failed' % self.shown_url, 'http_restart',
                url=self.shown_url, status=code, error=reason):
            self.metrics.increment('http_stats.restart_on_error')
