"""Requests to circusd over the plugin's DEALER socket.

:class:`Client` lives on the plugin thread and is the only user of its socket. Each request
carries a fresh ``id``; circusd echoes it in the reply, which is how a reply finds the
request that is waiting for it, whatever order replies come back in.

A request whose caller was told "no reply" must never run later. So every DEALER here is
made with :func:`new_dealer`, which sets ``ZMQ_IMMEDIATE``: a message is queued only to a
connected circusd, and what is queued to a circusd that goes away is dropped with the
connection instead of being delivered to the next circusd on that endpoint. While circusd
is absent a send waits for it (polling), never past the request's own deadline; what was
not sent by then is never sent.
"""
import asyncio
import itertools
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, Optional, cast

import zmq
from tornado.ioloop import IOLoop

from .errors import CallError

_log = logging.getLogger('circus_plugins')

#: circusd's errno for "arbiter is already running <cmd> command".
BUSY_ERRNO = 5

#: Seconds between tries to send while circusd is not connected.
_SEND_RETRY = 0.02


def new_dealer(context: zmq.Context) -> zmq.Socket:
    """A DEALER socket for commands: queues only to a connected circusd, drops on close."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IMMEDIATE, 1)
    socket.linger = 0
    return socket


def is_busy(reply: Dict[str, Any]) -> bool:
    """True if circusd refused a command because it is running another one."""
    return (reply.get('status') == 'error' and reply.get('errno') == BUSY_ERRNO
            and 'already running' in str(reply.get('reason', '')))


def _retry_delays() -> Iterator[float]:
    # circusd is busy in bursts (a crashing watcher keeps it managing watchers nearly
    # all the time): short waits find the gaps; a refusal costs circusd little.
    delay = 0.02
    while True:
        yield delay
        delay = min(delay * 2, 0.25)


_ids = itertools.count()
_id_prefix = uuid.uuid4().hex[:12]


def new_id() -> str:
    """A request id unique in this process and, in practice, across processes."""
    return '%s-%d' % (_id_prefix, next(_ids))


def retry_busy(attempt: Callable[[], Dict[str, Any]], busy_retry: float) -> Dict[str, Any]:
    """Run ``attempt()`` until circusd is not busy or ``busy_retry`` seconds have passed,
    sleeping between tries: for blocking callers."""
    reply = attempt()
    if not busy_retry:
        return reply
    deadline = time.monotonic() + busy_retry
    delays = _retry_delays()
    while True:  # the delays never end: a plain for loop would seem to fall through
        delay = next(delays)
        if not is_busy(reply) or time.monotonic() + delay > deadline:
            return reply
        time.sleep(delay)
        reply = attempt()


def _send_blocking(socket: zmq.Socket, payload: bytes, command: str,
                   deadline: float, timeout: float) -> None:
    """Send ``payload`` once circusd is connected, waiting until ``deadline``
    (:func:`time.monotonic`); ``timeout`` is for the message."""
    while True:
        try:  # first without a poll: connected is the common case, and a poll costs
            socket.send(payload, zmq.NOBLOCK)
            return
        except zmq.Again:  # not connected (yet, or any more)
            pass
        wait_ms = int((deadline - time.monotonic()) * 1000)
        if wait_ms <= 0 or not socket.poll(wait_ms, zmq.POLLOUT):
            break
    raise CallError('%r: not sent, circusd is not connected (waited %s s)'
                    % (command, timeout))


def _wait_reply(socket: zmq.Socket, msg_id: str, command: str, deadline: float,
                timeout: float, on_other=None) -> Dict[str, Any]:
    """Block until the reply to ``msg_id`` arrives on ``socket`` or ``deadline`` passes;
    hand other replies to ``on_other`` (or drop them: late replies to calls that timed
    out)."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise zmq.Again()
            # A receive timeout rather than poll-then-receive: one call fewer per reply.
            # Setting it costs too, so only when it changes by a millisecond or more.
            wait_ms = max(1, int(remaining * 1000))
            # RCVTIMEO is an int option (pyzmq's hint also covers bytes options).
            if abs(cast(int, socket.getsockopt(zmq.RCVTIMEO)) - wait_ms) > 1:
                socket.setsockopt(zmq.RCVTIMEO, wait_ms)
            frame = socket.recv()
        except zmq.Again:
            raise CallError('%r: no reply from circusd within %s s'
                            % (command, timeout)) from None
        reply = _decode(frame)
        if reply is None:
            continue
        if reply.get('id') == msg_id:
            return reply
        if on_other is not None:
            on_other(reply)


def _decode(frame: bytes, log: logging.Logger = _log) -> Optional[Dict[str, Any]]:
    try:
        reply = json.loads(frame)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        log.warning('ignored a reply that is not a JSON object: %r', frame[:200])
        return None
    return reply


def _encode(msg_id: str, command: str, props: Dict[str, Any], cast: bool = False) -> bytes:
    message = {'id': msg_id, 'command': command, 'properties': props}
    if cast:
        message['msg_type'] = 'cast'
    return json.dumps(message).encode('utf-8')


class ThreadCaller:
    """A DEALER socket that belongs to one thread calling circusd synchronously.

    Handing each call to the loop thread and back costs two thread wake-ups, a third of
    a ``list`` round trip; a socket of the caller's own avoids both. ``lock`` is held
    while the socket is in use, so that :meth:`close` from the stopping thread never
    overlaps a call (a zmq socket may change threads only across such a barrier).
    """

    def __init__(self, socket: zmq.Socket) -> None:
        self.socket: Optional[zmq.Socket] = socket
        self.lock = threading.Lock()

    def call(self, command: str, props: Dict[str, Any], timeout: float,
             busy_retry: float) -> Dict[str, Any]:
        with self.lock:
            return retry_busy(lambda: self._once(command, props, timeout), busy_retry)

    def _once(self, command, props, timeout):
        if self.socket is None:
            raise CallError('%r: the plugin is stopped' % command)
        msg_id = new_id()
        deadline = time.monotonic() + timeout
        _send_blocking(self.socket, _encode(msg_id, command, props), command, deadline,
                       timeout)
        return _wait_reply(self.socket, msg_id, command, deadline, timeout)

    def close(self) -> None:
        with self.lock:
            if self.socket is not None:
                self.socket.close(linger=0)
                self.socket = None


class _Request:
    """A request on its way: sent once circusd is connected, unless its time is up."""

    __slots__ = ('command', 'payload', 'future', 'expiry', 'sent')

    def __init__(self, command: str, payload: bytes,
                 future: Optional[asyncio.Future]) -> None:
        self.command = command
        self.payload = payload
        self.future = future  # None for a cast
        self.expiry: Optional[object] = None  # the loop's handle of the deadline
        self.sent = False


class Client:
    """Sends commands on ``socket`` and routes replies; every method runs on ``loop``.
    ``log`` is the plugin's logger."""

    def __init__(self, socket: zmq.Socket, loop: IOLoop, log: logging.Logger) -> None:
        self.socket = socket
        self.loop = loop
        self.log = log
        self._pending: Dict[str, _Request] = {}
        self._closed = False
        loop.add_handler(socket, self._on_ready, IOLoop.READ)

    def cast(self, command: str, props: Dict[str, Any], timeout: float) -> None:
        """Send ``command`` with no reply expected, if circusd is connected within
        ``timeout`` seconds. Errors are logged, not raised."""
        msg_id = new_id()
        self._submit(msg_id, _Request(command, _encode(msg_id, command, props, True), None),
                     timeout)

    def start_request(self, command: str, props: Dict[str, Any], future: asyncio.Future,
                      timeout: float) -> None:
        """Send ``command``; resolve ``future`` with the reply, or :class:`CallError`
        after ``timeout`` seconds."""
        msg_id = new_id()
        self._submit(msg_id, _Request(command, _encode(msg_id, command, props), future),
                     timeout)

    async def call(self, command: str, props: Dict[str, Any], timeout: float,
                   busy_retry: float = 0.0) -> Dict[str, Any]:
        """Send ``command`` and return circusd's reply, retrying busy refusals for
        ``busy_retry`` seconds."""
        deadline = time.monotonic() + busy_retry
        delays = _retry_delays()
        while True:  # the delays never end: a plain for loop would seem to fall through
            delay = next(delays)
            future = asyncio.get_running_loop().create_future()
            self.start_request(command, props, future, timeout)
            reply = await future
            if not is_busy(reply) or time.monotonic() + delay > deadline:
                return reply
            self.log.debug('circusd busy (%s), retrying %r in %.2f s',
                           reply.get('reason'), command, delay)
            await asyncio.sleep(delay)

    def call_blocking(self, command: str, props: Dict[str, Any], timeout: float,
                      busy_retry: float = 0.0) -> Dict[str, Any]:
        """Like :meth:`call` but blocking the loop: for synchronous code on the loop thread.

        Replies to other requests that arrive meanwhile go to their futures.
        """
        def attempt():
            if self._closed:
                raise CallError('%r: the plugin is stopped' % command)
            msg_id = new_id()
            deadline = time.monotonic() + timeout
            _send_blocking(self.socket, _encode(msg_id, command, props), command,
                           deadline, timeout)
            try:
                return _wait_reply(self.socket, msg_id, command, deadline, timeout,
                                   self._resolve)
            finally:
                # Our reads may have swallowed the fd's signal for replies still queued.
                self.loop.add_callback(self._drain)
        return retry_busy(attempt, busy_retry)

    def close(self) -> None:
        """Stop taking requests and fail the pending ones with :class:`CallError`."""
        if self._closed:
            return
        self._closed = True
        self.loop.remove_handler(self.socket)
        pending, self._pending = self._pending, {}
        for request in pending.values():
            self.loop.remove_timeout(request.expiry)
            if request.future is not None and not request.future.done():
                request.future.set_exception(CallError(
                    '%r: the plugin stopped before circusd answered' % request.command))

    def _submit(self, msg_id: str, request: _Request, timeout: float) -> None:
        if self._closed:
            exc = CallError('%r: the plugin is stopped' % request.command)
            if request.future is None:
                self.log.error('cast not sent: %s', exc)
            else:
                request.future.set_exception(exc)
            return
        request.expiry = self.loop.call_later(timeout, self._expire, msg_id, timeout)
        self._pending[msg_id] = request
        self._try_send(msg_id)

    def _try_send(self, msg_id: str) -> None:
        request = self._pending.get(msg_id)
        if request is None or self._closed:
            return  # expired or stopped meanwhile: it must never leave now
        try:
            self.socket.send(request.payload, zmq.NOBLOCK)
        except zmq.Again:  # circusd is not connected (yet, or any more)
            self.loop.call_later(_SEND_RETRY, self._try_send, msg_id)
            return
        request.sent = True
        if request.future is None:  # a cast is done once it has left
            self._pending.pop(msg_id)
            self.loop.remove_timeout(request.expiry)
        # Sending processes the socket's pending commands and can swallow the fd's signal
        # for replies that are already queued.
        if cast(int, self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # an int option
            self.loop.add_callback(self._drain)

    def _on_ready(self, fd, events) -> None:
        self._drain()

    def _drain(self) -> None:
        """Route every queued reply to the request waiting for it."""
        while not self._closed:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = _decode(frames[-1], self.log)
            if reply is not None:
                self._resolve(reply)

    def _resolve(self, reply: Dict[str, Any]) -> None:
        msg_id = reply.get('id')
        request = self._pending.get(msg_id) if isinstance(msg_id, str) else None
        if request is None or request.future is None:
            self.log.debug('dropped a late reply %r', msg_id)
            return
        del self._pending[reply['id']]
        self.loop.remove_timeout(request.expiry)
        if not request.future.done():
            request.future.set_result(reply)

    def _expire(self, msg_id: str, timeout: float) -> None:
        request = self._pending.pop(msg_id, None)
        if request is None:
            return
        if not request.sent:
            problem = 'not sent, circusd is not connected (waited %s s)' % timeout
        else:
            problem = 'no reply from circusd within %s s' % timeout
        if request.future is None:
            self.log.error('cast %r %s', request.command, problem)
        elif not request.future.done():
            request.future.set_exception(CallError('%r: %s' % (request.command, problem)))
