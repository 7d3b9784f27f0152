"""Watching a Redis server: its INFO figures as statsd gauges, and a restart when it is gone.

Every ``loop_rate`` seconds the plugin asks Redis for ``INFO`` with redis-py's asyncio
client, on the plugin's loop, and sends each field of :data:`OBSERVE` that the server
reports as the gauge ``redis_stats.<field>``. Fields this server does not report are
skipped (Redis 5 and later no longer have ``client_biggest_input_buf`` and
``client_longest_output_list``). A failed ``INFO`` counts ``redis_stats.error``; when
Redis cannot be reached or does not answer within ``timeout`` seconds and
``restart_on_timeout`` names a watcher, that watcher is restarted, and each restart
circusd confirms counts ``redis_stats.restart_on_error``.

It needs redis-py >= 4.2: ``pip install circus-plugins[redis]``.

Example::

    [plugin:redis_observer]
    use = circus_plugins.redis_observer.RedisObserver
    redis_url = redis://127.0.0.1:6379/0
    timeout = 2
    loop_rate = 10
    restart_on_timeout = redis
"""
import asyncio
import concurrent.futures
import logging
import re
from typing import Any, Optional
from urllib.parse import urlsplit

from ._log import SayOnce
from .config import MAX_SECONDS, redact_error, redact_url, to_name, to_url
from .errors import PluginLoadError
from .plugin import _asyncio_loop
from .statsd import BaseObserver

#: The INFO fields sent as gauges: circus 0.19's list.
OBSERVE = ('pubsub_channels', 'connected_slaves', 'lru_clock', 'connected_clients',
           'keyspace_misses', 'used_memory', 'used_memory_peak',
           'total_commands_processed', 'used_memory_rss', 'total_connections_received',
           'pubsub_patterns', 'used_cpu_sys', 'used_cpu_sys_children', 'blocked_clients',
           'used_cpu_user', 'client_biggest_input_buf', 'mem_fragmentation_ratio',
           'expired_keys', 'evicted_keys', 'client_longest_output_list',
           'uptime_in_seconds', 'keyspace_hits')


def _import_redis(plugin: str) -> Any:
    """redis-py and the parts of its asyncio client we use, imported only when a
    RedisObserver is made."""
    try:
        import redis.asyncio.connection
        import redis.asyncio.retry
        import redis.backoff
    except ImportError as exc:
        raise PluginLoadError('plugin %s needs redis-py >= 4.2 (%s): pip install '
                              'circus-plugins[redis]' % (plugin, exc)) from None
    return redis


class RedisObserver(BaseObserver):
    """Sends Redis's INFO figures as gauges every ``loop_rate`` seconds; restarts the
    ``restart_on_timeout`` watcher when Redis does not answer.

    Options: ``redis_url`` (default ``redis://localhost:6379/0``), ``timeout`` (seconds to
    connect and to wait for an answer, default 5), ``restart_on_timeout`` (a watcher name,
    default none), and those of :class:`~circus_plugins.statsd.BaseObserver`.

    :raises PluginLoadError: redis-py is not installed.
    """

    name = 'redis_observer'
    default_app_name = 'redis_observer'
    OBSERVE = OBSERVE

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self._redis = _import_redis(self.name)
        self.redis_url = self.option('redis_url', 'redis://localhost:6379/0', to_url,
                                     check=self._check_url)
        self.timeout = self.option('timeout', 5.0, float, minimum=0.001,
                                   maximum=MAX_SECONDS)
        self.restart_on_timeout = self.option('restart_on_timeout', '', to_name) or None
        #: ``redis_url`` as logs show it: without its password or secret parameters.
        self.shown_url = redact_url(self.redis_url)
        self.redis: Any = None
        self._say_once = SayOnce(self.log)

    def _check_url(self, url: str) -> None:
        """redis-py's own check, and what it lets through but gets wrong: a port of 0 (it
        connects to 6379) and a database that is not one number (``/notadb`` is db 0,
        ``/0/1`` db 1)."""
        try:
            self._redis.asyncio.connection.parse_url(url)
            parts = urlsplit(url)
            if parts.scheme in ('redis', 'rediss'):
                if parts.port == 0:
                    raise ValueError('port 0')
                if not re.fullmatch('/?[0-9]*', parts.path):
                    raise ValueError('the database (the path) is not a number')
        except (ValueError, TypeError) as exc:
            raise ValueError('is not a Redis URL: %s' % exc) from None

    def handle_init(self) -> None:
        # On the plugin thread, whose current loop is self.loop: the client belongs to it.
        # One immediate retry on a fresh connection: a pooled connection may have died
        # with a Redis restart. So a check takes at most about twice the timeout.
        redis = self._redis
        self.redis = redis.asyncio.from_url(
            self.redis_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
            retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 1))
        super().handle_init()

    def handle_stop(self) -> None:
        super().handle_stop()
        client, self.redis = self.redis, None
        if client is None:
            return
        close = getattr(client, 'aclose', None) or client.close  # redis-py < 5: close()
        try:  # on the loop, which still runs; waited for, so no connection outlives us
            closing = asyncio.run_coroutine_threadsafe(close(), _asyncio_loop(self.loop))
            if not self.in_plugin_thread():  # (the plugin thread cannot wait for itself)
                closing.result(self.timeout)
        except (concurrent.futures.TimeoutError, RuntimeError, OSError,
                self._redis.exceptions.RedisError) as exc:
            self.log.debug('closing the Redis client: %s',
                           redact_error(exc, self.redis_url))

    async def look_after(self) -> None:
        """Send INFO's gauges once, or count the failure (a coroutine, on the loop)."""
        client = self.redis
        if client is None:  # stopping
            return
        errors = self._redis.exceptions
        try:
            info = await client.info()
        except (errors.RedisError, OSError, asyncio.TimeoutError) as exc:
            if self.redis is None:  # the plugin stopped meanwhile: not a failure
                return
            error = '%s: %s' % (type(exc).__name__, redact_error(exc, self.redis_url))
            self.log.warning('INFO from %s failed: %s', self.shown_url, error)
            self.metrics.increment('redis_stats.error')
            unreachable = (isinstance(exc, (errors.ConnectionError, errors.TimeoutError,
                                            OSError, asyncio.TimeoutError))
                           and not isinstance(exc, errors.AuthenticationError))
            if unreachable and self.restart_on_timeout and await self.restart(
                    self.restart_on_timeout, 'Redis did not answer', 'redis_restart',
                    url=self.shown_url, error=error):
                self.metrics.increment('redis_stats.restart_on_error')
            return
        missing = []
        for field in self.OBSERVE:
            value = info.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.metrics.gauge('redis_stats.%s' % field, value)
            else:
                missing.append(field)
        if missing:
            self._say_once('missing', logging.INFO,
                           'this Redis does not report %s: not sent', ', '.join(missing))
