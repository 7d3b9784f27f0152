"""Reading circusd's events without trusting them.

circusd publishes each event as a topic, ``watcher.<name>.<action>``, and a JSON object.
Whatever arrives on the event socket is read as untrusted input all the same: a frame may
not be UTF-8, a body may not be JSON, a field may be missing, of the wrong type, huge,
``NaN``. The bundled plugins therefore read events through this module rather than
through :meth:`~circus_plugins.CircusPlugin.split_data` and
:meth:`~circus_plugins.CircusPlugin.load_message`::

    from circus_plugins.events import read_event, skip_event

    def handle_recv(self, data):
        event = read_event(self.log, data, fields=('reap',))
        if event is None:
            return                      # malformed: skipped, one warning logged
        if event.action == 'reap':
            pid = event.pid()
            if pid is None:
                skip_event(self.log, event, 'process_pid')
                return

:func:`parse_event` checks the topic (and, when asked, the body) and raises
:exc:`MalformedEvent`; :func:`read_event` logs that in one warning line and returns
``None``. The typed accessors of :class:`Event` (:meth:`~Event.pid`, :meth:`~Event.time`,
:meth:`~Event.exit_code`) return ``None`` for a value that is missing or unusable.
"""
import json
import logging
import math
import re
import time as _time
import types
from typing import Any, Container, Dict, Mapping, NamedTuple, Optional, Tuple, Union

from ._log import plugin_logger
from .errors import MalformedEvent


#: Longest topic accepted, in bytes (UTF-8): a watcher name is a short ``circus.ini`` name.
MAX_TOPIC = 1024
#: Longest body accepted, in bytes: circusd's bodies hold a few numbers. A cap keeps one
#: event from holding the loop while it is parsed.
MAX_BODY = 64 * 1024
#: Largest process id: ``pid_t`` is a signed 32-bit integer.
MAX_PID = 2 ** 31 - 1
#: Latest time stamp accepted, in seconds since the epoch: the end of year 9999.
MAX_TIME = 253402300799.0
#: Characters of a bad value shown in a log line.
SHOWN = 80

_ACTION = re.compile(r'[A-Za-z0-9_-]{1,64}')
_NO_FIELDS: Mapping[str, Any] = types.MappingProxyType({})
#: Topics read already: circusd repeats a few (watchers × actions), and a plugin that
#: reads only topics (StatsdEmitter) would otherwise spend most of its time here.
_topics: Dict[Union[bytes, str], Tuple[str, str]] = {}
_MAX_TOPICS = 4096


class Event(NamedTuple):
    """One event, read: the watcher's name, the action (``spawn``, ``reap``...) and the
    body's fields (a read-only mapping; empty when the body was not read)."""

    watcher: str
    action: str
    fields: Mapping[str, Any] = _NO_FIELDS

    def pid(self) -> Optional[int]:
        """``process_pid``: an integer from 1 to :data:`MAX_PID`, else ``None``."""
        return _integer(self.fields.get('process_pid'), 1, MAX_PID)

    def time(self) -> Optional[float]:
        """``time``, when circusd published the event, in seconds since the epoch: a
        finite number from 0 to :data:`MAX_TIME`, else ``None``."""
        value = self.fields.get('time')
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        # Compared before float(): an int too big for a float would raise OverflowError.
        ok = 0 <= value <= MAX_TIME and math.isfinite(value)
        return float(value) if ok else None

    def exit_code(self) -> Optional[int]:
        """``exit_code`` of a ``reap``: the exit status (0 to 255) or, negative, the
        signal that ended the process; else ``None``."""
        return _integer(self.fields.get('exit_code'), -255, 255)


def _integer(value: Any, low: int, high: int) -> Optional[int]:
    # JSON numbers only: True is an int to Python, and "12" or 12.0 are not what circusd
    # sends, so they say the publisher is not the circusd we know.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if low <= value <= high else None


def shorten(value: Any, limit: int = SHOWN) -> str:
    """``repr(value)``, cut to about ``limit`` characters, for a log line."""
    if isinstance(value, (bytes, str)) and len(value) > limit:
        return '%r... (%d in all)' % (value[:limit], len(value))
    text = repr(value)
    return text if len(text) <= limit else '%s... (%d characters)' % (text[:limit],
                                                                      len(text))


def parse_event(data: Any, *, fields: Union[bool, Container[str]] = True) -> Event:
    """Read ``data``, the ``(topic, message)`` pair given to ``handle_recv``.

    :param fields: whether to read the body too: ``True``, ``False``, or the actions
        whose body is read (a body that is not read is not checked).
    :raises MalformedEvent: the topic is not ``watcher.<name>.<action>`` in UTF-8 of at
        most :data:`MAX_TOPIC` bytes, with a printable name and an action of letters,
        digits, ``_`` and ``-``; or a body to read is not a JSON object of at most
        :data:`MAX_BODY` bytes in UTF-8.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise MalformedEvent('not a (topic, message) pair but a %s' % type(data).__name__)
    topic, body = data
    try:
        watcher, action = _topics[topic]
    except (KeyError, TypeError):  # TypeError: a topic that cannot be a key
        watcher, action = _parse_topic(topic)
        if len(_topics) >= _MAX_TOPICS:
            _topics.clear()  # many names: junk, most likely
        _topics[topic] = watcher, action
    if isinstance(fields, str):  # one action, not the letters of one
        fields = (fields,)
    wanted = fields if isinstance(fields, bool) else action in fields
    if not wanted:
        return Event(watcher, action)
    return Event(watcher, action, types.MappingProxyType(_parse_body(body)))


def _parse_topic(topic: Any) -> Tuple[str, str]:
    if isinstance(topic, str):  # circus's own plugins may be handed str frames
        try:
            raw = topic.encode('utf-8')
        except UnicodeEncodeError:
            raise MalformedEvent('topic %s is not valid Unicode' % shorten(topic)) from None
    elif isinstance(topic, bytes):
        raw = topic
    else:
        raise MalformedEvent('topic is a %s, not bytes' % type(topic).__name__)
    if len(raw) > MAX_TOPIC:
        raise MalformedEvent('topic %s is longer than %d bytes' % (shorten(raw), MAX_TOPIC))
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise MalformedEvent('topic %s is not UTF-8' % shorten(raw)) from None
    prefix, _, rest = text.partition('.')
    watcher, _, action = rest.rpartition('.')  # watcher names may contain dots
    if prefix != 'watcher' or not watcher or not watcher.isprintable():
        raise MalformedEvent('topic %s is not watcher.<name>.<action>' % shorten(text))
    if not _ACTION.fullmatch(action):
        raise MalformedEvent('topic %s has no valid action' % shorten(text))
    return watcher, action


def _parse_body(body: Any) -> dict:
    if isinstance(body, str):
        body = body.encode('utf-8', 'surrogatepass')
    elif not isinstance(body, bytes):
        raise MalformedEvent('message is a %s, not bytes' % type(body).__name__)
    if len(body) > MAX_BODY:
        raise MalformedEvent('message of %d bytes is longer than %d'
                             % (len(body), MAX_BODY))
    try:
        # Decoded here: json.loads would guess UTF-16 or UTF-32 from the first bytes.
        value = json.loads(body.decode('utf-8'))
    except UnicodeDecodeError:
        raise MalformedEvent('message %s is not UTF-8' % shorten(body)) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: bad JSON, or an integer of more digits than Python converts;
        # RecursionError: arrays nested too deep.
        raise MalformedEvent('message %s is not JSON (%s)'
                             % (shorten(body), shorten(str(exc)))) from None
    if not isinstance(value, dict):
        raise MalformedEvent('message is a JSON %s, not an object: %s'
                             % (type(value).__name__, shorten(body)))
    return value


def _logger(plugin: Union[logging.Logger, str]) -> logging.Logger:
    return plugin if isinstance(plugin, logging.Logger) else plugin_logger(plugin)


def read_event(plugin: Union[logging.Logger, str], data: Any, *,
               fields: Union[bool, Container[str]] = True) -> Optional[Event]:
    """:func:`parse_event`, or ``None`` after one warning saying what was wrong.

    :param plugin: the plugin's logger (``self.log``), or its name.
    """
    try:
        return parse_event(data, fields=fields)
    except MalformedEvent as exc:
        _logger(plugin).warning('skipped a malformed event: %s', exc)
        return None


def skip_event(plugin: Union[logging.Logger, str], event: Event, *keys: str) -> None:
    """Log, in one warning on ``plugin`` (a logger, or a plugin's name), that ``event``
    is skipped because its fields ``keys`` are missing or unusable (their values are
    shown, shortened)."""
    shown = ', '.join('%s=%s' % (key, shorten(event.fields[key]) if key in event.fields
                                 else '(missing)') for key in keys)
    _logger(plugin).warning('skipped %s event of watcher %s: unusable %s',
                            event.action, shorten(event.watcher), shown)


#: Topic prefix of plugin-made events: circusd publishes only ``watcher.`` topics.
PLUGIN_PREFIX = 'plugin'
#: Body keys that :func:`plugin_event` sets itself and a detail may not take.
RESERVED = frozenset(('plugin', 'time'))
#: Depth beyond which a detail's nested value is sent as its ``str()``.
_MAX_DEPTH = 16


def plugin_event(plugin_name: str, watcher: str, action: str,
                 **details: Any) -> Tuple[bytes, bytes]:
    """Make a plugin-made event: the two frames ``(topic, body)`` to deliver or publish.

    The topic is ``plugin.<watcher>.<action>``; the body a JSON object of ``details`` plus
    ``"plugin"`` (``plugin_name``) and ``"time"`` (now, in seconds since the epoch). A
    detail that JSON cannot hold (an object, a set, ``NaN``, a non-string key...) is sent
    as its ``str()``; tuples and sets become lists.

    :param plugin_name: the emitting plugin's name (``Flapping.name``...).
    :param watcher: the watcher the event is about.
    :param action: what was done: letters, digits, ``_`` and ``-``, 64 at most.
    :raises MalformedEvent: a name or action that :func:`parse_event` would refuse, a
        detail named ``plugin`` or ``time``, or frames longer than :data:`MAX_TOPIC` or
        :data:`MAX_BODY` bytes.
    """
    if not isinstance(plugin_name, str) or not plugin_name or not plugin_name.isprintable():
        raise MalformedEvent('plugin name %s is not a printable name' % shorten(plugin_name))
    if not isinstance(watcher, str) or not watcher or not watcher.isprintable():
        raise MalformedEvent('watcher %s is not a printable name' % shorten(watcher))
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise MalformedEvent('action %s is not 1 to 64 letters, digits, _ or -'
                             % shorten(action))
    taken = RESERVED.intersection(details)
    if taken:
        raise MalformedEvent('detail %s is reserved' % ', '.join(sorted(taken)))
    body = {key: _plain(value, 0) for key, value in details.items()}
    body['plugin'] = plugin_name
    body['time'] = _time.time()
    topic = ('%s.%s.%s' % (PLUGIN_PREFIX, watcher, action)).encode('utf-8')
    # ASCII: a lone surrogate in a detail travels as an escape, not as bad UTF-8.
    raw = json.dumps(body, allow_nan=False).encode('ascii')
    if len(topic) > MAX_TOPIC:
        raise MalformedEvent('topic %s is longer than %d bytes' % (shorten(topic), MAX_TOPIC))
    if len(raw) > MAX_BODY:
        raise MalformedEvent('body of %d bytes is longer than %d' % (len(raw), MAX_BODY))
    return topic, raw


def _plain(value: Any, depth: int) -> Any:
    """``value`` as JSON holds it: what it cannot hold becomes its ``str()``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {key if isinstance(key, str) else str(key): _plain(item, depth + 1)
                    for key, item in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_plain(item, depth + 1) for item in value]
    return str(value)
