"""Requests to circusd over the plugin's DEALER socket.

:class:`Client` lives on the plugin thread and is the only user of its socket. Each request
carries a fresh ``id``; circusd echoes it in the reply, which is how a reply finds the
request that is waiting for it, whatever order replies come back in.
"""
import asyncio
import itertools
import json
import logging
import threading
import time
import uuid
from typing import Any, Dict, Optional

import zmq
from tornado.ioloop import IOLoop

from .errors import CallError

log = logging.getLogger('circus_plugins')

#: circusd's errno for "arbiter is already running <cmd> command".
BUSY_ERRNO = 5


def is_busy(reply: Dict[str, Any]) -> bool:
    """True if circusd refused a command because it is running another one."""
    return (reply.get('status') == 'error' and reply.get('errno') == BUSY_ERRNO
            and 'already running' in str(reply.get('reason', '')))


def _retry_delays():
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


def retry_busy(attempt, busy_retry: float) -> Dict[str, Any]:
    """Run ``attempt()`` until circusd is not busy or ``busy_retry`` seconds have passed,
    sleeping between tries: for blocking callers."""
    reply = attempt()
    if not busy_retry:
        return reply
    deadline = time.monotonic() + busy_retry
    for delay in _retry_delays():
        if not is_busy(reply) or time.monotonic() + delay > deadline:
            return reply
        time.sleep(delay)
        reply = attempt()


def _wait_reply(socket: zmq.Socket, msg_id: str, command: str, timeout: float,
                on_other=None) -> Dict[str, Any]:
    """Block until the reply to ``msg_id`` arrives on ``socket``; hand others to
    ``on_other`` (or drop them: late replies to calls that timed out)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise zmq.Again()
            # A receive timeout rather than poll-then-receive: one call fewer per reply.
            # Setting it costs too, so only when it changes by a millisecond or more.
            wait_ms = max(1, int(remaining * 1000))
            if abs(socket.getsockopt(zmq.RCVTIMEO) - wait_ms) > 1:
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


def _decode(frame: bytes) -> Optional[Dict[str, Any]]:
    try:
        reply = json.loads(frame)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        log.warning('ignored a reply that is not a JSON object: %r', frame[:200])
        return None
    return reply


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
        try:
            self.socket.send(_encode(msg_id, command, props), zmq.NOBLOCK)
        except zmq.Again:
            raise CallError('%r: circusd is not taking commands (send queue full)'
                            % command) from None
        return _wait_reply(self.socket, msg_id, command, timeout)

    def close(self) -> None:
        with self.lock:
            if self.socket is not None:
                self.socket.close(linger=0)
                self.socket = None


def _encode(msg_id: str, command: str, props: Dict[str, Any], cast: bool = False) -> bytes:
    message = {'id': msg_id, 'command': command, 'properties': props}
    if cast:
        message['msg_type'] = 'cast'
    return json.dumps(message).encode('utf-8')


class Client:
    """Sends commands on ``socket`` and routes replies; every method runs on ``loop``."""

    def __init__(self, socket: zmq.Socket, loop: IOLoop, label: str) -> None:
        self.socket = socket
        self.loop = loop
        self.label = label
        self._pending: Dict[str, tuple] = {}
        self._closed = False
        loop.add_handler(socket, self._on_ready, IOLoop.READ)

    def cast(self, command: str, props: Dict[str, Any]) -> None:
        """Send ``command`` with no reply expected. Errors are logged, not raised."""
        try:
            self._send(command, _encode(new_id(), command, props, cast=True))
        except CallError as exc:
            log.error('plugin %s: cast %r not sent: %s', self.label, command, exc)

    def start_request(self, command: str, props: Dict[str, Any], future,
                      timeout: float) -> None:
        """Send ``command``; resolve ``future`` with the reply, or :class:`CallError`
        after ``timeout`` seconds."""
        msg_id = new_id()
        try:
            self._send(command, _encode(msg_id, command, props))
        except CallError as exc:
            future.set_exception(exc)
            return
        expiry = self.loop.call_later(timeout, self._expire, msg_id, command, timeout)
        self._pending[msg_id] = (future, expiry)

    async def call(self, command: str, props: Dict[str, Any], timeout: float,
                   busy_retry: float = 0.0) -> Dict[str, Any]:
        """Send ``command`` and return circusd's reply, retrying busy refusals for
        ``busy_retry`` seconds."""
        deadline = time.monotonic() + busy_retry
        for delay in _retry_delays():
            future = asyncio.get_running_loop().create_future()
            self.start_request(command, props, future, timeout)
            reply = await future
            if not is_busy(reply) or time.monotonic() + delay > deadline:
                return reply
            log.debug('plugin %s: circusd busy (%s), retrying %r in %.2f s',
                      self.label, reply.get('reason'), command, delay)
            await asyncio.sleep(delay)

    def call_blocking(self, command: str, props: Dict[str, Any], timeout: float,
                      busy_retry: float = 0.0) -> Dict[str, Any]:
        """Like :meth:`call` but blocking the loop: for synchronous code on the loop thread.

        Replies to other requests that arrive meanwhile go to their futures.
        """
        def attempt():
            msg_id = new_id()
            self._send(command, _encode(msg_id, command, props))
            try:
                return _wait_reply(self.socket, msg_id, command, timeout, self._resolve)
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
        for future, expiry in pending.values():
            self.loop.remove_timeout(expiry)
            if not future.done():
                future.set_exception(CallError('plugin %s stopped before circusd '
                                               'answered' % self.label))

    def _send(self, command: str, payload: bytes) -> None:
        if self._closed:
            raise CallError('plugin %s is stopped' % self.label)
        try:
            self.socket.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            raise CallError('%r: circusd is not taking commands (send queue full)'
                            % command) from None
        # Sending processes the socket's pending commands and can swallow the fd's signal
        # for replies that are already queued.
        if self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
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
            reply = _decode(frames[-1])
            if reply is not None:
                self._resolve(reply)

    def _resolve(self, reply: Dict[str, Any]) -> None:
        entry = self._pending.pop(reply.get('id'), None)
        if entry is None:
            log.debug('plugin %s: dropped a late reply %r', self.label, reply.get('id'))
            return
        future, expiry = entry
        self.loop.remove_timeout(expiry)
        if not future.done():
            future.set_result(reply)

    def _expire(self, msg_id: str, command: str, timeout: float) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(CallError('%r: no reply from circusd within %s s'
                                             % (command, timeout)))
