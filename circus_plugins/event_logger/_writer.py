"""A thread that writes lines to sinks many at a time: :class:`BatchWriter`.

The plugin's loop hands over items (:meth:`BatchWriter.put`: a counter and a
:class:`queue.SimpleQueue`, never a wait); the thread wakes, takes everything waiting,
turns each item into its line and gives the lines to each sink at once, so that a file
gets one system call for all of them. The busier the stream, the bigger the batches.
"""
import logging
import queue
import threading
import time
from typing import Any, Callable, List, Sequence

from ._sinks import Losses

#: Items taken at most in one go: bounds the text made at once (a line is ~200 bytes).
BATCH = 4096
#: Seconds between two log lines about items that could not be turned into lines.
_SAY_EVERY = 60.0

_STOP = object()


class BatchWriter:
    """Writes ``render(item)`` of each item :meth:`put` to every sink, in order, from a
    thread of its own.

    :param sinks: objects with ``sink_name``, ``write(lines)`` (a list of str without
        line ends; counts its own failures in ``losses``) and ``close()``.
    :param render: item -> line, called in the writer's thread. An exception there is
        logged (with its traceback, once a minute at most) and the item counted lost.
    :param losses: where lost items are counted.
    :param log: the plugin's logger.
    :param size: items taken and not yet written (or counted lost) at most: past it,
        :meth:`put` refuses.

    Thread-safety: :meth:`put` from one thread (the plugin's loop); :meth:`stop` once,
    from any thread, after the last :meth:`put`. :attr:`taken` and :attr:`done` may be
    read from any thread.
    """

    def __init__(self, sinks: Sequence[Any], render: Callable[[Any], str], losses: Losses,
                 log: logging.Logger, size: int, name: str = 'writer') -> None:
        self._sinks = list(sinks)
        self._render = render
        self._losses = losses
        self._log = log
        self._size = size
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        #: Items taken by :meth:`put` (only :meth:`put` adds to it).
        self.taken = 0
        #: Items written or counted lost (only the writer's thread adds to it); each
        #: counter has one writer, so neither needs a lock.
        self.done = 0
        self._abandoned = False
        self._said_at = -_SAY_EVERY
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> bool:
        """Take ``item`` to be written; ``False`` (nothing taken) when :attr:`taken`
        items are already waiting. Never blocks."""
        if self.taken - self.done >= self._size:
            return False
        self.taken += 1
        self._queue.put(item)
        return True

    def stop(self, timeout: float) -> int:
        """Write everything taken, then end the thread. Gives up when nothing was
        written for ``timeout`` seconds (a sink stuck), and then returns how many items
        were not written (the caller counts them); else 0."""
        self._queue.put(_STOP)
        while True:
            before = self.done
            self._thread.join(timeout)
            if not self._thread.is_alive():
                return 0
            if self.done == before:  # no progress: stuck
                self._abandoned = True
                return self.taken - self.done

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while not self._abandoned:
            items: List[Any] = [get()]
            try:
                while len(items) < BATCH:
                    items.append(get_nowait())
            except queue.Empty:
                pass
            stopping = items[-1] is _STOP  # put last, after every item
            if stopping:
                items.pop()
            if items:
                self._write(items)
            if stopping:
                return

    def _write(self, items: List[Any]) -> None:
        lines: List[str] = []
        render = self._render
        for item in items:
            try:
                lines.append(render(item))
            except Exception as exc:
                self._losses.lost('making the line', exc)
                now = time.monotonic()
                if now - self._said_at >= _SAY_EVERY:
                    self._said_at = now
                    self._log.exception('could not make the line of %r', item)
        if lines and not self._abandoned:
            for sink in self._sinks:
                try:
                    sink.write(lines)
                except Exception as exc:  # a sink's own bug: it counts OSErrors itself
                    self._losses.lost(sink.sink_name, exc, len(lines))
                    self._log.exception('%s failed', sink.sink_name)
        self.done += len(items)
