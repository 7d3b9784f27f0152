"""A record of every event: :class:`EventLogger` writes one JSON object a line.

Each of circusd's events, and each plugin-made event when it runs beside the plugins
that make them (a host, or ``events_subscribe``), becomes a line such as::

    {"time": "2026-12-03T08:06:20.123456+00:00", "host": "web1", "watcher": "web",
     "event": "reap", "pid": 4242, "wid": null, "exit_code": -11, "signal": "SIGSEGV",
     "exit": "crash", "plugin": null}

``exit`` is why a reaped process ended (``crash``, ``exit`` or ``stopped``:
:class:`~circus_plugins.events.Exits`); ``plugin`` names the plugin that made a
plugin-made event, whose other fields are under ``details``. The lines go to any of
three sinks at once: a file (``path``, rotated at ``max_bytes`` with ``backup_count``
old files, and opened again when logrotate has moved it away), syslog (``syslog``:
``/dev/log``, ``udp://host:port`` or ``tcp://host:port``; ``syslog_facility``) and
standard output (``stdout``).

The plugin's loop only reads each event, tells why a process ended and queues the
event; a writer thread of its own (:mod:`circus_plugins.event_logger._writer`) makes the lines and
writes everything waiting at once (one system call for the file). At stop, the events
on their way are still taken (:attr:`~circus_plugins.CircusPlugin.drain_on_stop`) and
everything queued is written before the plugin ends. A write that fails (a full disk, a
syslog server away) is counted and said once, never fatal.
"""
import datetime
import json
import math
import queue
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ..config import MAX_COUNT, signal_name, to_actions, to_matcher
from ..errors import ConfigError
from ..events import Event, Exits, read_event
from ..plugin import CircusPlugin
from ._sinks import (FACILITIES as _FACILITIES, SEND_TIMEOUT, FileSink, Losses,
                     StdoutSink, SyslogSink, syslog_address)
from ._writer import BatchWriter

__all__ = ['EventLogger']

#: Records taken and not yet written at most; beyond, new ones are counted as lost.
QUEUE_SIZE = 100000
#: Entries of the caches kept per watcher and action at most (many names: junk).
_MAX_CACHED = 4096

# -- times -------------------------------------------------------------------------------

#: second since the epoch -> (its local date and time to the second, its UTC offset).
_SECONDS: Dict[int, Tuple[str, str]] = {}
_zone_names: Any = None  # time.tzname when _SECONDS was filled: tzset() makes a new one


def _iso(when: float) -> str:
    """``when`` (seconds since the epoch) in ISO 8601 with microseconds and the local UTC
    offset of that moment, as ``datetime.fromtimestamp(when).astimezone().isoformat()``
    says it, at a fraction of the cost: the part down to the second is made once a
    second. Thread-safe."""
    global _zone_names
    if time.tzname is not _zone_names:
        _SECONDS.clear()
        _zone_names = time.tzname
    # Rounded as datetime rounds a timestamp: to the microsecond, half to even.
    fraction, whole = math.modf(when)
    micro = round(fraction * 1e6)
    if micro >= 1000000:
        micro -= 1000000
        whole += 1
    elif micro < 0:
        micro += 1000000
        whole -= 1
    second = int(whole)
    parts = _SECONDS.get(second)
    if parts is None:
        offset = time.localtime(second).tm_gmtoff
        zone = datetime.timezone(datetime.timedelta(seconds=offset))
        text = datetime.datetime.fromtimestamp(second, zone).isoformat(
            timespec='microseconds')
        parts = text[:19], text[26:]  # 2026-12-03T09:28:32 .000000 +01:00
        if len(_SECONDS) >= _MAX_CACHED:
            _SECONDS.clear()
        _SECONDS[second] = parts
    return '%s.%06d%s' % (parts[0], micro, parts[1])


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as text: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _text(line: str) -> str:
    """``line`` with any lone surrogate (an escape in an event's JSON) as that escape
    again, so that every sink can write it in UTF-8 and it still reads back the same."""
    try:
        line.encode('utf-8')
        return line
    except UnicodeEncodeError:
        return line.encode('utf-8', 'backslashreplace').decode('utf-8')


#: The text of a JSON value, as json.dumps writes it in a record.
_dumps = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False).encode
_EXITS = {why: _dumps(why) for why in (None, 'crash', 'exit', 'stopped')}


_SIGNAL_TEXTS: Dict[int, str] = {}


def _signal_text(code: int) -> str:
    """The ``signal`` field's JSON for a negative exit code (the signal's name)."""
    text = _SIGNAL_TEXTS.get(code)
    if text is None:
        text = _SIGNAL_TEXTS[code] = _dumps(signal_name(-code))  # 255 at most
    return text


class EventLogger(CircusPlugin):
    """Writes every event as a JSON line to a file, syslog and/or standard output; its
    options are described in the plugin's documentation page."""

    name = 'event_logger'
    #: Events already on their way at stop are written too.
    drain_on_stop = 0.2

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        o = self.option
        self.path = o('path', '')
        self.max_bytes = o('max_bytes', 0, int, minimum=0, maximum=2 ** 62)
        self.backup_count = o('backup_count', 5, int, minimum=0, maximum=MAX_COUNT)
        self.syslog = o('syslog', '')
        self.facility = o('syslog_facility', 'daemon').lower()
        if self.facility not in _FACILITIES:
            raise ConfigError('plugin %s: option %r: %r is not a syslog facility (%s)'
                              % (self.name, 'syslog_facility', self.facility,
                                 ', '.join(sorted(_FACILITIES))))
        self.stdout = o('stdout', False, bool)
        self.watchers = o('watchers', '*', to_matcher)
        self.events = o('events', '*', to_actions)
        self.hostname = o('hostname', socket.gethostname())
        if not (self.path or self.syslog or self.stdout):
            raise ConfigError('plugin %s: nowhere to write: set path, syslog or stdout'
                              % self.name)
        if self.syslog:
            try:
                self._syslog_address = syslog_address(self.syslog, 'syslog')
            except ConfigError as exc:
                raise ConfigError('plugin %s: %s' % (self.name, exc)) from None
        if self.path:
            self._check_path()
        self.exits = Exits()
        #: Records lost (queue full, or a sink failed), counted from any thread.
        self.losses = Losses(self.log)
        self._writer: Optional[BatchWriter] = None
        self._sinks: List[Any] = []
        self._all_events = '*' in self.events
        # (watcher, action) -> whether the filters keep it; -> its line's template.
        self._kept: Dict[Tuple[str, str], bool] = {}
        self._templates: Dict[Tuple[str, str], str] = {}

    @property
    def taken(self) -> int:
        """Records taken to be written (queued); read from any thread."""
        writer = self._writer
        return 0 if writer is None else writer.taken

    def _check_path(self) -> None:
        """An unwritable path is a clear error at start, not a loss later."""
        try:
            with open(self.path, 'a', encoding='utf-8'):
                pass
        except OSError as exc:
            raise ConfigError('plugin %s: option %r: cannot write to %r: %s'
                              % (self.name, 'path', self.path, exc.strerror or exc)) from None

    # -- life ------------------------------------------------------------------------------

    def handle_init(self) -> None:
        sinks: List[Any] = []
        opening = self.path
        try:
            if self.path:
                sinks.append(FileSink(self.path, self.max_bytes, self.backup_count,
                                      self.losses))
            if self.syslog:
                opening = self.syslog
                address, kind = self._syslog_address
                sinks.append(SyslogSink(address, _FACILITIES[self.facility], kind,
                                        self.losses))
            if self.stdout:
                sinks.append(StdoutSink(sys.stdout, self.losses))
        except OSError as exc:
            for sink in sinks:
                sink.close()
            raise ConfigError('plugin %s: cannot open %s: %s' % (
                self.name, opening, exc.strerror or exc)) from None
        self._sinks = sinks
        self._writer = BatchWriter(sinks, self._line, self.losses, self.log, QUEUE_SIZE,
                                   name='%s-writer' % self.name)

    def handle_stop(self) -> None:
        writer = self._writer
        if writer is not None:
            left = writer.stop(SEND_TIMEOUT)
            self.losses.lost('the stop (not written in time)', None, left)
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:
                self.losses.lost(sink.sink_name, exc)
        if self.losses.count:
            self.log.warning('%d event records were lost in all', self.losses.count)

    # -- events, on the loop -----------------------------------------------------------------

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        # Only what must happen in order of arrival happens here; the line is made by
        # the writer's thread.
        event = read_event(self.log, data, plugin_events=True)
        if event is None:
            return
        why = self.exits.see(event)
        key = event.watcher, event.action
        kept = self._kept.get(key)
        if kept is None:
            kept = self.watchers(event.watcher) and (
                self._all_events or event.action in self.events)
            if len(self._kept) >= _MAX_CACHED:
                self._kept.clear()
            self._kept[key] = kept
        if kept and self._writer is not None:
            # The moment read, for an event without a usable time of its own.
            if not self._writer.put((event, why, time.time())):
                self.losses.lost('the queue (%d records waiting)' % QUEUE_SIZE,
                                 queue.Full())

    # -- lines, in the writer's thread ---------------------------------------------------------

    def record(self, event: Event, why: Optional[str],
               now: Optional[float] = None) -> Dict[str, Any]:
        """The JSON object of ``event`` (``why``: its process's end, for a reap; ``now``:
        when it was read, seconds since the epoch, for an event without a time)."""
        when = event.time()
        if when is None:
            when = time.time() if now is None else now
        record = {'time': _iso(when), 'host': self.hostname,
                  'watcher': event.watcher, 'event': event.action, 'pid': event.pid(),
                  'wid': event.wid(), 'exit_code': event.exit_code(),
                  'signal': event.signal(), 'exit': why, 'plugin': event.plugin}
        if event.plugin is not None:
            record['details'] = _finite({k: v for k, v in event.fields.items()
                                         if k not in ('plugin', 'time')})
        return record

    def _line(self, item: Tuple[Event, Optional[str], float]) -> str:
        """The JSON line of ``(event, why, now)``: ``json.dumps(self.record(...))``,
        character for character. For circusd's events, a template per watcher and
        action holds what repeats; only the numbers and the time are made each time."""
        event, why, now = item
        if event.plugin is not None:
            return _text(_dumps(self.record(event, why, now)))
        key = event.watcher, event.action
        template = self._templates.get(key)
        if template is None:
            template = self._template(*key)
        when = event.time()
        pid, wid, code = event.pid(), event.wid(), event.exit_code()
        return template % (
            _iso(now if when is None else when),
            'null' if pid is None else pid, 'null' if wid is None else wid,
            'null' if code is None else code,
            'null' if code is None or code >= 0 else _signal_text(code), _EXITS[why])

    def _template(self, watcher: str, action: str) -> str:
        def text(value: str) -> str:
            return _text(_dumps(value)).replace('%', '%%')
        template = ('{"time": "%%s", "host": %s, "watcher": %s, "event": %s, "pid": %%s, '
                    '"wid": %%s, "exit_code": %%s, "signal": %%s, "exit": %%s, '
                    '"plugin": null}' % (text(self.hostname), text(watcher), text(action)))
        if len(self._templates) >= _MAX_CACHED:
            self._templates.clear()
        self._templates[(watcher, action)] = template
        return template
