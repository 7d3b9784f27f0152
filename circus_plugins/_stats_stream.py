"""A plugin's subscription to circusd-stats's stream, for plugins overriding ``handle_stats``.

:class:`StatsStream` belongs to one plugin and runs on its loop (not thread-safe: plugin
thread only). It finds the stream's endpoint (the plugin's ``stats_endpoint`` option, or
else circusd's ``globaloptions``, asked in a task so that the start never waits for
circusd), connects a SUB socket of the plugin's subscribed to ``stat.``, and hands each
message to the plugin's ``handle_stats`` in bursts, as events reach ``handle_recv``.

Without circusd-stats (``statsd`` off, or no message within :data:`QUIET` seconds) it
says so once, at info, and the plugin works as before; when messages come (again) it
says so too. circusd respawns a killed circusd-stats on the same endpoint and ZeroMQ
reconnects the SUB socket by itself.
"""
import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

import zmq
from tornado.ioloop import IOLoop

from ._log import SayOnce
from .events import shorten

#: Seconds: the stream counts as live while its last message is younger than this
#: (circusd-stats speaks about every second).
LIVE_FOR = 5.0

#: Seconds without a message after which the plugin says it works without the stream.
QUIET = 10.0

#: The watcher circusd runs circusd-stats as.
STATS_WATCHER = 'circusd-stats'

#: Messages handled in one wake-up of the loop before timers and replies get a turn.
_BURST = 512

#: Seconds before asking circusd again when it did not answer (doubling up to
#: _RETRY_MAX).
_FIRST_RETRY = 1.0
_RETRY_MAX = 60.0
#: Seconds between two questions to a circusd that runs no circusd-stats (a restart of
#: circusd may switch it on): periodic.SAFETY_REFRESH's value, which cannot be imported
#: here (periodic imports plugin, which imports this module).
_ASK_AGAIN = 300.0


class StatsStream:
    """circusd-stats's messages for one plugin.

    :param loop: the plugin's loop.
    :param log: the plugin's logger.
    :param socket: makes a SUB socket that the plugin closes at its stop.
    :param connect: ``connect(socket, endpoint, what)`` as the plugin connects its own
        (through its SSH tunnel if any).
    :param ask: the plugin's :meth:`~circus_plugins.CircusPlugin.ask`.
    :param handle: the plugin's ``handle_stats``.
    :param paused: whether the plugin has stopped taking messages (it is stopping).
    :param endpoint: the ``stats_endpoint`` option, or ``None`` to ask circusd.
    """

    def __init__(self, loop: IOLoop, log: logging.Logger,
                 socket: Callable[[], zmq.Socket],
                 connect: Callable[[zmq.Socket, str, str], None],
                 ask: Callable[..., Awaitable[Dict[str, Any]]],
                 handle: Callable[[Tuple[bytes, bytes]], None],
                 paused: Callable[[], bool], endpoint: Optional[str]) -> None:
        self._loop = loop
        self._log = log
        self._ask = ask
        self._handle = handle
        self._paused = paused
        self._connect = connect
        self._say = SayOnce(log)
        #: The endpoint once known (from the option or circusd).
        self.endpoint = endpoint
        #: ``time.monotonic()`` of the last message, or ``None``.
        self.last_message: Optional[float] = None
        self.socket = socket()
        self.socket.setsockopt(zmq.SUBSCRIBE, b'stat.')
        self._connected = False
        self._closed = False
        self._task: Optional[asyncio.Task] = None
        self._timer: Any = None  # the next question to circusd, or the quiet check
        self._delay = _FIRST_RETRY

    def start(self) -> None:
        """Connect now if the endpoint is known, else ask circusd in a task (loop only)."""
        if self.endpoint is not None:
            self._connect_to(self.endpoint)
        else:
            # Not the task itself: the plugin's start may still fail before the loop
            # runs, and a task never run is a coroutine never awaited.
            self._timer = self._loop.call_later(0, self._ask_soon)

    @property
    def live(self) -> bool:
        """Whether a message came within the last :data:`LIVE_FOR` seconds."""
        last = self.last_message
        return last is not None and time.monotonic() - last < LIVE_FOR

    def _ask_soon(self) -> None:
        # A task per question, none waiting between them: the loop is idle meanwhile.
        self._timer = None
        if not self._closed:
            self._task = asyncio.ensure_future(self._find_endpoint())

    async def _find_endpoint(self) -> None:
        endpoint, why = await self._ask_circusd()
        if self._closed:
            return
        if endpoint is not None:
            self._connect_to(endpoint)
            return
        if why is not None:
            self._say('endpoint', logging.INFO, 'no circusd-stats (%s): working without '
                      'it', why)
            delay = _ASK_AGAIN  # it may be switched on by a restart of circusd
        else:  # circusd did not answer (not started yet?): soon, then less and less often
            delay, self._delay = self._delay, min(self._delay * 2, _RETRY_MAX)
        self._timer = self._loop.call_later(delay, self._ask_soon)

    async def _ask_circusd(self) -> Tuple[Optional[str], Optional[str]]:
        """``(endpoint, None)`` when circusd runs circusd-stats; ``(None, why)`` when it
        does not; ``(None, None)`` when circusd did not answer (ask again later)."""
        reply = await self._ask('globaloptions')
        if reply.get('status') != 'ok':
            self._log.debug('globaloptions: %s', reply.get('reason'))
            return None, None
        options = reply.get('options')
        endpoint = options.get('stats_endpoint') if isinstance(options, dict) else None
        # circusd answers a stats_endpoint (its default) even when statsd is off: only
        # the circusd-stats watcher says whether the stream exists.
        reply = await self._ask('list', name=STATS_WATCHER)
        if reply.get('status') != 'ok':
            if 'errno' not in reply:  # no answer, not a refusal
                return None, None
            return None, 'statsd is off: circusd has no watcher %s' % STATS_WATCHER
        if not isinstance(endpoint, str) or not endpoint:
            return None, 'globaloptions gave no stats_endpoint: %s' % shorten(endpoint)
        return endpoint, None

    def _connect_to(self, endpoint: str) -> None:
        if self._closed or self._connected:
            return
        try:
            self._connect(self.socket, endpoint, 'stats_endpoint')
        except Exception as exc:  # circusd's answer is untrusted: a bad endpoint
            self._say('endpoint', logging.INFO, 'no circusd-stats (%s): working without '
                      'it', exc)
            return
        self.endpoint = endpoint
        self._connected = True
        self._loop.add_handler(self.socket, self._on_ready, IOLoop.READ)
        self._loop.add_callback(self.drain)
        self._timer = self._loop.call_later(QUIET, self._check_quiet)

    def _check_quiet(self) -> None:
        self._timer = None
        if self._closed:
            return
        if not self.live:
            self._say('quiet', logging.INFO, 'no circusd-stats message on %s for %g s: '
                      'working without it', self.endpoint, QUIET)
        self._timer = self._loop.call_later(LIVE_FOR, self._check_quiet)

    def _on_ready(self, fd: Any, events: int) -> None:
        self.drain()

    def drain(self, again: bool = True) -> None:
        """Hand the queued messages to ``handle_stats``, a burst at a time."""
        if self._closed or self._paused():
            return
        recv = self.socket.recv_multipart
        for _ in range(_BURST):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if self.last_message is None or not self.live:
                if self._say.forget('quiet') or self.last_message is None:
                    self._log.info('circusd-stats stream on %s', self.endpoint)
            self.last_message = time.monotonic()
            if len(frames) != 2:
                self._log.warning('ignored a circusd-stats message of %d frames',
                                  len(frames))
                continue
            try:
                self._handle((frames[0], frames[1]))
            except Exception:
                self._log.exception('handle_stats failed on %s', shorten(frames[0]))
            if self._paused() or self._closed:
                return
        if again:  # more may be queued, and the fd will not signal them again
            self._loop.add_callback(self.drain)

    def close(self) -> None:
        """Stop taking messages (loop only); the plugin closes the socket."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._timer is not None:
            self._loop.remove_timeout(self._timer)
        if self._connected:
            self._loop.remove_handler(self.socket)
