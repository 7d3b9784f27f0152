"""Requests to circusd over the plugin's DEALER socket.

:class:`Client` lives on the plugin thread and is the only user of its socket. Each request
carries a fresh ``id``; circusd echoes it in the reply, which is how a reply finds the
request that is waiting for it, whatever order replies come back in.
"""
import asyncio
import json
import logging
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
    delay = 0.05
    while True:
        yield delay
        delay = min(delay * 2, 1.0)


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
        message = {'id': uuid.uuid4().hex, 'command': command, 'properties': props,
                   'msg_type': 'cast'}
        try:
            self._send(message)
        except CallError as exc:
            log.error('plugin %s: cast %r not sent: %s', self.label, command, exc)

    def start_request(self, command: str, props: Dict[str, Any], future,
                      timeout: float) -> None:
        """Send ``command``; resolve ``future`` with the reply, or :class:`CallError`
        after ``timeout`` seconds. ``future`` may be an asyncio or a concurrent future."""
        msg_id = uuid.uuid4().hex
        try:
            self._send({'id': msg_id, 'command': command, 'properties': props})
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
        """Like :meth:`call` but blocking the loop: for synchronous code on the loop thread."""
        deadline = time.monotonic() + busy_retry
        for delay in _retry_delays():
            reply = self._call_blocking_once(command, props, timeout)
            if not is_busy(reply) or time.monotonic() + delay > deadline:
                return reply
            time.sleep(delay)

    def _call_blocking_once(self, command, props, timeout):
        msg_id = uuid.uuid4().hex
        self._send({'id': msg_id, 'command': command, 'properties': props})
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(remaining * 1000, zmq.POLLIN):
                raise CallError('%r: no reply from circusd within %s s' % (command, timeout))
            reply = self._drain(want=msg_id)
            if reply is not None:
                return reply

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

    def _send(self, message: Dict[str, Any]) -> None:
        if self._closed:
            raise CallError('plugin %s is stopped' % self.label)
        try:
            self.socket.send(json.dumps(message).encode('utf-8'), zmq.NOBLOCK)
        except zmq.Again:
            raise CallError('%r: circusd is not taking commands (send queue full)'
                            % message['command']) from None
        # Sending processes the socket's pending commands and can swallow the fd's signal
        # for replies that are already queued.
        if self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.loop.add_callback(self._drain)

    def _on_ready(self, fd, events) -> None:
        self._drain()

    def _drain(self, want: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """Route every queued reply; return the one whose id is ``want``, if it comes."""
        while not self._closed:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            try:
                reply = json.loads(frames[-1])
                msg_id = reply.get('id')
            except (ValueError, AttributeError):
                log.warning('plugin %s: ignored a reply that is not a JSON object: %r',
                            self.label, frames[-1][:200])
                continue
            if want is not None and msg_id == want:
                self.loop.add_callback(self._drain)
                return reply
            entry = self._pending.pop(msg_id, None)
            if entry is None:
                log.debug('plugin %s: dropped a late reply %r', self.label, msg_id)
                continue
            future, expiry = entry
            self.loop.remove_timeout(expiry)
            if not future.done():
                future.set_result(reply)
        return None

    def _expire(self, msg_id: str, command: str, timeout: float) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(CallError('%r: no reply from circusd within %s s'
                                             % (command, timeout)))
