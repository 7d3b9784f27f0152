"""One request for the same question of several plugins: :class:`SharedAnswers`.

The plugins of a :class:`~circus_plugins.host.PluginHost` often ask circusd the same
read-only question at about the same time (``list``, ``stats``...), and circusd is
single-threaded: each request costs it. A host gives its plugins one
:class:`SharedAnswers`; when a plugin asks one of :data:`SHARED_COMMANDS`, with the same
properties as a request that another plugin has in flight, or whose answer came back less
than :data:`WINDOW` seconds ago, it gets that request's answer instead of sending its own.

An answer is shared only with a plugin that has received no circusd event since its
request was sent: a plugin asking because an event said something changed never gets an
answer from before that change. An error reply, or no reply, reaches only the plugins
waiting for that request; the next one asks again. Commands that change state are never
shared.

Thread-safety: one table serves plugins running on different threads and loops; each
plugin sends on its own client, in its own thread, and the others wait on a
:class:`concurrent.futures.Future` wrapped for their own loop.
"""
import asyncio
import copy
import json
import threading
import time
from concurrent.futures import Future
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Tuple

from .errors import CallError

#: Seconds during which an answer is given again to plugins asking the same question.
WINDOW = 0.5
#: The commands whose answers are shared: those that only read.
SHARED_COMMANDS = frozenset(['list', 'status', 'get', 'options', 'stats', 'numprocesses',
                             'globaloptions'])

_Key = Tuple[str, str]


class _Request:
    """One request sent for several plugins: its answer, when it was sent and when its
    answer came (``time.monotonic()``; ``None`` while it is in flight)."""

    def __init__(self, sent: float) -> None:
        self.future: 'Future[Dict[str, Any]]' = Future()
        # Running: a waiter's cancellation cannot cancel it for the others.
        self.future.set_running_or_notify_cancel()
        self.sent = sent
        self.answered: Optional[float] = None


class SharedAnswers:
    """The table of requests in flight and of recent answers, for one host.

    :param window: seconds (default :data:`WINDOW`) during which an answer is shared.
    :param clock: the time in seconds, ``time.monotonic`` (tests give another).
    """

    def __init__(self, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._requests: Dict[_Key, _Request] = {}
        #: How many asks got another's answer (for tests and benchmarks).
        self.shared = 0

    async def ask(self, command: str, props: Mapping[str, Any],
                  send: Callable[[], Awaitable[Dict[str, Any]]], *, timeout: float,
                  events_at: float = float('-inf')) -> Dict[str, Any]:
        """circusd's reply to ``command`` with ``props``: another plugin's, or that of
        ``send()`` (on the caller's loop).

        :param timeout: seconds to wait for another plugin's request before
            :exc:`CallError`.
        :param events_at: ``time.monotonic()`` when the asker last received a circusd
            event: an older request is not shared with it.
        :raises CallError: as ``send()`` does, for the plugins waiting on its request.
        """
        key = _key(command, props)
        if key is None:
            return await send()
        with self._lock:
            now = self.clock()
            self._expire(now)
            request = self._requests.get(key)
            mine = request is None or request.sent <= events_at
            if mine:
                request = self._requests[key] = _Request(now)
            else:
                self.shared += 1
        assert request is not None
        if mine:
            return await self._send(key, request, send)
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(request.future), timeout)
        except asyncio.TimeoutError:
            raise CallError('%r: no reply within %g s' % (command, timeout)) from None
        return copy.deepcopy(answer)  # the plugins may change their replies

    async def _send(self, key: _Key, request: _Request,
                    send: Callable[[], Awaitable[Dict[str, Any]]]) -> Dict[str, Any]:
        try:
            reply = await send()
        except BaseException as exc:  # CallError, or the asker's task cancelled
            self._drop(key, request)
            request.future.set_exception(
                exc if isinstance(exc, Exception) else CallError('%r: not asked' % key[0]))
            raise
        if isinstance(reply, dict) and reply.get('status') == 'ok':
            with self._lock:
                request.answered = self.clock()
            request.future.set_result(copy.deepcopy(reply))
        else:  # an error is given to those waiting now only
            self._drop(key, request)
            request.future.set_result(copy.deepcopy(reply))
        return reply

    def _drop(self, key: _Key, request: _Request) -> None:
        with self._lock:
            if self._requests.get(key) is request:
                del self._requests[key]

    def _expire(self, now: float) -> None:
        # Under the lock. Few keys: a host's plugins ask a handful of questions.
        for key in [key for key, request in self._requests.items()
                    if request.answered is not None and now - request.answered >= self.window]:
            del self._requests[key]


def _key(command: str, props: Mapping[str, Any]) -> Optional[_Key]:
    """What identifies a question, or ``None`` for one that is not shared."""
    if command not in SHARED_COMMANDS:
        return None
    try:
        return command, json.dumps(props, sort_keys=True)
    except (TypeError, ValueError):
        return None
