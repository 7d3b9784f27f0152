"""A bounded, in-order delivery queue for alerts, on a tornado IOLoop.

:class:`Outbox` hands messages, one at a time and in the order they were put, to a sender
coroutine ``send(message, dropped)`` that returns once the message is delivered and raises
when it is not. A message that failed is sent again, before any later one, after a delay
that grows from ``retry_delay`` seconds, doubling at each failure up to ``max_retry_delay``
seconds; a sender that knows better (an HTTP 429 with ``Retry-After``) raises an exception
with a ``retry_after`` attribute (:exc:`SendError` has one) and that many seconds are waited
instead (at most ``max_retry_after``).

The queue holds at most ``size`` messages besides the one being sent: when a message is
put into a full queue, the oldest waiting one is dropped; a message that failed while the
queue filled up is dropped rather than put back. The number of messages dropped since a
message last went out is given to the sender as ``dropped`` with each attempt, so that the
next message delivered can say so; it is counted as told once ``send`` returns.

Nothing blocks the loop and nothing escapes to it: the sender's exceptions are logged
(masked by :mod:`circus_plugins._redact`, and with ``secrets`` given to the outbox masked
too), one line when the failure is new, at debug level while it repeats, one line when
messages flow again. :meth:`Outbox.close` stops it; what was left unsent is dropped and
logged in one line.

The outbox belongs to its loop: :meth:`~Outbox.put` and :meth:`~Outbox.take_dropped` are
called on the loop's thread (plugin code runs there); :meth:`~Outbox.close` may be called
from any thread.
"""
import asyncio
import collections
import logging
import traceback
from typing import Any, Awaitable, Callable, Deque, Iterable, Optional

from tornado.ioloop import IOLoop

from .._log import plugin_logger
from .._redact import redact_text
from ..errors import CircusPluginError
from ..plugin import _asyncio_loop

__all__ = ['Outbox', 'SendError']

#: ``send(message, dropped)``: deliver ``message`` (``dropped`` messages were dropped
#: since the last one delivered) or raise.
Sender = Callable[[Any, int], Awaitable[None]]


class SendError(CircusPluginError):
    """A message was not delivered; it should be sent again.

    :param message: why, safe to log (no credentials).
    :param retry_after: seconds the receiver asked us to wait before sending again
        (``Retry-After``), or ``None`` to let the outbox's growing delay decide.
    """

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Outbox:
    """Sends messages through ``send`` in order, one at a time, retrying failures.

    :param send: the sender coroutine function, ``async send(message, dropped: int)``;
        it must give up by itself in a bounded time (the webhook sender has timeouts), or
        set ``send_timeout``.
    :param loop: the IOLoop it runs on (a plugin's :attr:`loop`).
    :param size: messages waiting at most (at least 1); the oldest are dropped beyond.
    :param retry_delay: seconds before the first retry of a failed message.
    :param max_retry_delay: seconds between retries at most; the delay doubles up to it.
    :param max_retry_after: seconds a receiver's ``retry_after`` may make us wait at most.
    :param send_timeout: seconds one attempt may take before it counts as failed (it is
        cancelled), or ``None`` for no limit.
    :param name: what log lines call this outbox (``"webhook https://hooks.example/***"``):
        already safe to show.
    :param logger: where to log (default ``circus_plugins.outbox``).
    :param secrets: strings masked in whatever the outbox logs (besides those declared
        with :func:`~circus_plugins._redact.add_secret`).
    """

    def __init__(self, send: Sender, loop: IOLoop, *, size: int = 100,
                 retry_delay: float = 1.0, max_retry_delay: float = 300.0,
                 max_retry_after: float = 3600.0, send_timeout: Optional[float] = None,
                 name: str = 'outbox', logger: Optional[logging.Logger] = None,
                 secrets: Iterable[str] = ()) -> None:
        if size < 1:
            raise ValueError('size must be at least 1, not %r' % (size,))
        if retry_delay <= 0 or max_retry_delay < retry_delay:
            raise ValueError('need 0 < retry_delay <= max_retry_delay')
        self.send = send
        self.loop = loop
        self.size = size
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.max_retry_after = max_retry_after
        self.send_timeout = send_timeout
        self.name = name
        self.log = logger or plugin_logger('outbox')
        self.secrets = tuple(secrets)
        #: Messages delivered so far.
        self.sent = 0
        #: Messages dropped so far (overflow and close), told or not.
        self.dropped_total = 0
        #: Failed attempts so far.
        self.failures = 0
        self._queue: Deque[Any] = collections.deque()
        self._untold = 0          # dropped since the last delivery, not yet told
        self._busy = False        # a message is out of the queue, being sent
        self._failing = 0         # consecutive failures of the current message(s)
        self._worker: Optional['asyncio.Future[None]'] = None
        self._closed = False
        self._said: Optional[str] = None  # the failure last logged above debug

    def __len__(self) -> int:
        """Messages not yet delivered (waiting, or being sent)."""
        return len(self._queue) + self._busy

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, message: Any) -> bool:
        """Queue ``message`` to be sent after those already queued; drop the oldest
        waiting one if the queue is full. On the loop's thread; never blocks. Returns
        ``False`` (and drops ``message``) once the outbox is closed."""
        if self._closed:
            self._drop(1, 'the outbox is closed')
            return False
        if len(self._queue) >= self.size:
            self._queue.popleft()
            self._drop(1, 'the queue is full (%d)' % self.size)
        self._queue.append(message)
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._run())
        return True

    def take_dropped(self) -> int:
        """The number of messages dropped and not yet told, now counted as told: for a
        caller that says it in a message of its own rather than through ``send``."""
        untold, self._untold = self._untold, 0
        return untold

    def _drop(self, count: int, why: str) -> None:
        self._untold += count
        self.dropped_total += count
        self.log.debug('%s: dropped %d message(s): %s', self.name, count, why)

    async def _run(self) -> None:
        """Send what is queued, in order, until the queue is empty or the outbox closed.
        Catches everything: nothing reaches the loop."""
        try:
            while self._queue and not self._closed:
                message = self._queue.popleft()
                self._busy = True
                delay = await self._attempt(message)
                self._busy = False
                if delay is None:
                    continue
                if len(self._queue) >= self.size:  # filled up meantime: it is the oldest
                    self._drop(1, 'the queue filled up while it was retried')
                else:
                    self._queue.appendleft(message)
                await asyncio.sleep(delay)  # close() cancels it
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug of ours: say it, keep the loop alive
            self.log.exception('%s: stopped sending', self.name)
        finally:
            self._busy = False
            self._worker = None
            if self._queue and not self._closed:  # put() during the last await
                self._worker = asyncio.ensure_future(self._run())

    async def _attempt(self, message: Any) -> Optional[float]:
        """Send ``message`` once; ``None`` if delivered, or the seconds to wait before
        sending it again."""
        told = self._untold
        try:
            attempt = self.send(message, told)
            if self.send_timeout is not None:
                await asyncio.wait_for(attempt, self.send_timeout)
            else:
                await attempt
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failed(exc)
        self._untold -= min(told, self._untold)
        self.sent += 1
        if self._failing:
            self.log.info('%s: delivering again after %d failed attempt(s)', self.name,
                          self._failing)
            self._failing = 0
            self._said = None
        return None

    def _failed(self, exc: BaseException) -> float:
        self.failures += 1
        self._failing += 1
        retry_after = getattr(exc, 'retry_after', None)
        if isinstance(retry_after, (int, float)) and retry_after >= 0:
            delay = min(float(retry_after), self.max_retry_after)
        else:
            delay = min(self.retry_delay * 2 ** min(self._failing - 1, 64),
                        self.max_retry_delay)
        if isinstance(exc, asyncio.TimeoutError):
            why = 'no answer within %s s' % self.send_timeout
        else:
            why = redact_text('%s: %s' % (type(exc).__name__, exc), self.secrets)
        expected = isinstance(exc, (SendError, OSError, asyncio.TimeoutError))
        if why != self._said:  # new: say it (where it came from if a sender's bug)
            self._said = why
            if expected:
                self.log.warning('%s: sending failed (%s); again in %.3g s', self.name,
                                 why, delay)
            else:  # the traceback, masked here: the log filter knows not our secrets
                trace = redact_text(''.join(traceback.format_exception(
                    type(exc), exc, exc.__traceback__)), self.secrets)
                self.log.error('%s: sending failed (%s); again in %.3g s\n%s', self.name,
                               why, delay, trace.rstrip())
        else:
            self.log.debug('%s: sending failed again (%s); again in %.3g s', self.name,
                           why, delay)
        return delay

    def close(self) -> None:
        """Stop sending: cancel the attempt in progress, drop what is left (logged in one
        line). From any thread; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        left = len(self._queue) + self._busy
        self._queue.clear()
        if left:
            self._untold += left
            self.dropped_total += left
            self.log.warning('%s: closed with %d message(s) not sent: dropped', self.name,
                             left)
        # Not IOLoop.current(): on Python 3.12 and 3.13, asked in the main thread with no
        # event loop set, it warns (DeprecationWarning) and makes one there.
        try:
            on_loop = asyncio.get_running_loop() is _asyncio_loop(self.loop)
        except RuntimeError:  # no loop runs in this thread
            on_loop = False
        if on_loop:
            self._stop_worker()
        else:
            try:
                self.loop.add_callback(self._stop_worker)
            except RuntimeError:  # the loop is closed: nothing runs on it any more
                pass

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
