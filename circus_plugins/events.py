"""Reading circusd's events without trusting them, telling why processes died, and the
events plugins make.

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
:meth:`~Event.exit_code`, :meth:`~Event.signal`...) return ``None`` for a value that is
missing or unusable.

:class:`Exits` tells a crash from a clean exit and from a process circusd ended itself.
Plugins announce what they did with plugin-made events, topic
``plugin.<watcher>.<action>`` (:func:`plugin_event` makes one,
:meth:`~circus_plugins.CircusPlugin.emit` sends it); :func:`read_event` passes them over
unless asked for them. The documentation's page "The event model" tells it all.
"""
import json
import logging
import math
import time as _time
import types
from typing import Any, Callable, Container, Dict, Mapping, NamedTuple, Optional, Tuple, Union

from ._log import plugin_logger
from .config import ACTION as _ACTION, signal_name as _signal_name
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
#: Longest name of the plugin that made an event, in characters.
MAX_PLUGIN_NAME = 256

#: Topic prefix of plugin-made events: circusd publishes only ``watcher.`` topics.
PLUGIN_PREFIX = 'plugin'
_PLUGIN_TEXT = PLUGIN_PREFIX + '.'
_PLUGIN_BYTES = _PLUGIN_TEXT.encode()
_NO_FIELDS: Mapping[str, Any] = types.MappingProxyType({})
#: Topics read already: circusd repeats a few (watchers × actions), and a plugin that
#: reads only topics (StatsdEmitter) would otherwise spend most of its time here.
_topics: Dict[Union[bytes, str], Tuple[str, str, bool]] = {}
_MAX_TOPICS = 4096


class Event(NamedTuple):
    """One event, read: the watcher's name, the action (``spawn``, ``reap``...), the
    body's fields (a read-only mapping; empty when the body was not read) and, for a
    plugin-made event (topic ``plugin.<watcher>.<action>``), the name of the plugin that
    made it (``None`` for circusd's events)."""

    watcher: str
    action: str
    fields: Mapping[str, Any] = _NO_FIELDS
    plugin: Optional[str] = None

    def pid(self) -> Optional[int]:
        """``process_pid``: an integer from 1 to :data:`MAX_PID`, else ``None``."""
        return whole(self.fields.get('process_pid'), 1, MAX_PID)

    def time(self) -> Optional[float]:
        """``time``, when circusd published the event (when its plugin made a
        plugin-made one), in seconds since the epoch: a finite number from 0 to
        :data:`MAX_TIME`, else ``None``."""
        value = self.fields.get('time')
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        # Compared before float(): an int too big for a float would raise OverflowError.
        ok = 0 <= value <= MAX_TIME and math.isfinite(value)
        return float(value) if ok else None

    def exit_code(self) -> Optional[int]:
        """``exit_code`` of a ``reap``: the exit status (0 to 255) or, negative, the
        signal that ended the process; else ``None``."""
        return whole(self.fields.get('exit_code'), -255, 255)

    def signum(self) -> Optional[int]:
        """The number of the signal that ended the process (``exit_code`` is its
        negative in circusd 0.19); ``None`` when it exited by itself or the code is
        unusable."""
        code = self.exit_code()
        return -code if code is not None and code < 0 else None

    def signal(self) -> Optional[str]:
        """The name of the signal that ended the process (``SIGKILL``; the number as
        text for a signal without a name); ``None`` as for :meth:`signum`."""
        number = self.signum()
        return None if number is None else _signal_name(number)

    def wid(self) -> Optional[int]:
        """``wid``, the process's worker id within its watcher (from 1), where the body
        gives it (circusd 0.19's events do not); else ``None``."""
        return whole(self.fields.get('wid'), 1, MAX_PID)


def whole(value: Any, low: int, high: int) -> Optional[int]:
    """``value`` if it is an integer from ``low`` to ``high`` (a number circusd sent: in
    an event, or a reply), else ``None``."""
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
    """Read ``data``, the ``(topic, message)`` pair given to ``handle_recv``: one of
    circusd's events or a plugin-made one.

    :param fields: whether to read the body too: ``True``, ``False``, or the actions
        whose body is read (a body that is not read is not checked). A plugin-made
        event's body is always read: it names the plugin.
    :raises MalformedEvent: the topic is not ``watcher.<name>.<action>`` or
        ``plugin.<name>.<action>`` in UTF-8 of at most :data:`MAX_TOPIC` bytes, with a
        printable name and an action of letters, digits, ``_`` and ``-``; or a body to
        read is not a JSON object of at most :data:`MAX_BODY` bytes in UTF-8; or a
        plugin-made event's body has no ``plugin`` name (a printable string of 1 to
        :data:`MAX_PLUGIN_NAME` characters).
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise MalformedEvent('not a (topic, message) pair but a %s' % type(data).__name__)
    topic, body = data
    try:
        watcher, action, made = _topics[topic]
    except (KeyError, TypeError):  # TypeError: a topic that cannot be a key
        watcher, action, made = _parse_topic(topic)
        if len(_topics) >= _MAX_TOPICS:
            _topics.clear()  # many names: junk, most likely
        _topics[topic] = watcher, action, made
    if made:
        values = _parse_body(body)
        name = values.get('plugin')
        if not (isinstance(name, str) and 0 < len(name) <= MAX_PLUGIN_NAME
                and name.isprintable()):
            raise MalformedEvent('plugin-made event %s names no plugin: plugin=%s' % (
                shorten('%s.%s.%s' % (PLUGIN_PREFIX, watcher, action)), shorten(name)))
        return Event(watcher, action, types.MappingProxyType(values), name)
    if isinstance(fields, str):  # one action, not the letters of one
        fields = (fields,)
    wanted = fields if isinstance(fields, bool) else action in fields
    if not wanted:
        return Event(watcher, action)
    return Event(watcher, action, types.MappingProxyType(_parse_body(body)))


def _parse_topic(topic: Any) -> Tuple[str, str, bool]:
    """``(watcher, action, made by a plugin)`` from a topic."""
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
    if prefix not in ('watcher', PLUGIN_PREFIX) or not watcher or not watcher.isprintable():
        raise MalformedEvent('topic %s is not watcher.<name>.<action> (nor '
                             'plugin.<name>.<action>)' % shorten(text))
    if not _ACTION.fullmatch(action):
        raise MalformedEvent('topic %s has no valid action' % shorten(text))
    return watcher, action, prefix == PLUGIN_PREFIX


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
               fields: Union[bool, Container[str]] = True,
               plugin_events: bool = False) -> Optional[Event]:
    """:func:`parse_event`, or ``None`` after one warning saying what was wrong.

    :param plugin: the plugin's logger (``self.log``), or its name.
    :param plugin_events: whether to read plugin-made events (topic ``plugin.``) too.
        When false, the default, they are ``None`` without a word, unread: a plugin that
        acts on circusd's events never takes one of them for circusd's.
    """
    if not plugin_events and is_plugin_made(data):
        return None
    try:
        return parse_event(data, fields=fields)
    except MalformedEvent as exc:
        _logger(plugin).warning('skipped a malformed event: %s', exc)
        return None


def is_plugin_made(data: Any) -> bool:
    """Whether ``data``, a ``(topic, message)`` pair, has a plugin-made event's topic
    (``plugin.`` in bytes or str); nothing else is checked."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    topic = data[0]
    if isinstance(topic, bytes):
        return topic.startswith(_PLUGIN_BYTES)
    return isinstance(topic, str) and topic.startswith(_PLUGIN_TEXT)


def skip_event(plugin: Union[logging.Logger, str], event: Event, *keys: str) -> None:
    """Log, in one warning on ``plugin`` (a logger, or a plugin's name), that ``event``
    is skipped because its fields ``keys`` are missing or unusable (their values are
    shown, shortened)."""
    shown = ', '.join('%s=%s' % (key, shorten(event.fields[key]) if key in event.fields
                                 else '(missing)') for key in keys)
    _logger(plugin).warning('skipped %s event of watcher %s: unusable %s',
                            event.action, shorten(event.watcher), shown)


#: Body keys that :func:`plugin_event` sets itself and a detail may not take.
RESERVED = frozenset(('plugin', 'time'))
#: Depth beyond which a detail's nested value is sent as its ``str()``.
_MAX_DEPTH = 16


def plugin_event(plugin_name: str, watcher: str, action: str, /,
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


#: What :meth:`Exits.see` says of a ``reap``: the process died by itself, with a non-zero
#: code or a signal circusd did not send (or an exit code circusd did not give).
CRASH = 'crash'
#: What :meth:`Exits.see` says of a ``reap``: the process exited by itself with code 0.
EXIT = 'exit'
#: What :meth:`Exits.see` says of a ``reap``: circusd ended the process (a ``kill`` of it
#: came first: a stop, restart, reloadconfig, quit, rm...).
STOPPED = 'stopped'
#: Seconds a ``kill`` is remembered while its ``reap`` is awaited (a stop waits up to the
#: watcher's ``graceful_timeout``, 30 s by default, then kills again and publishes another
#: ``kill``).
KILL_MEMORY = 60.0
#: Kills remembered per watcher at most: a ``decr`` or a ``kill`` command publishes kills
#: and no reaps.
MAX_KILLS = 4096
#: Kills remembered in all, over every watcher.
MAX_ALL_KILLS = 16384


class Exits:
    """Tells, for each ``reap``, whether the process crashed, exited cleanly or was
    ended by circusd. Feed it every event (:meth:`see`); one tracker per plugin.

    circusd 0.19 publishes a ``kill`` of a process before every process it ends itself
    (stop, restart, reloadconfig, rm, quit, decr, the ``kill`` command) and, except for
    ``decr``, ``reload`` and the ``kill`` command, a ``reap`` after it. So a ``reap`` whose
    process was killed in the last ``memory`` seconds is :data:`STOPPED`; any other is a
    :data:`CRASH`, or an :data:`EXIT` when its exit code is 0. A ``spawn`` of a pid forgets
    a kill of that pid (the pid was used again).

    :param memory: seconds a kill is remembered (:data:`KILL_MEMORY` if ``None``).
    :param most: kills remembered per watcher (:data:`MAX_KILLS` if ``None``); past it,
        the watcher's oldest is forgotten.
    :param most_in_all: kills remembered in all (:data:`MAX_ALL_KILLS` if ``None``);
        past it, the oldest kill of the watcher killed longest ago is forgotten.
    :param clock: the clock kills are timed with, in seconds.
    """

    def __init__(self, memory: Optional[float] = None, most: Optional[int] = None,
                 most_in_all: Optional[int] = None,
                 clock: Callable[[], float] = _time.monotonic) -> None:
        self.memory = KILL_MEMORY if memory is None else memory
        self.most = MAX_KILLS if most is None else most
        self.most_in_all = MAX_ALL_KILLS if most_in_all is None else most_in_all
        self._clock = clock
        # watcher -> {pid: when killed}; watchers in the order of their latest kill,
        # pids in the order of their kills: the oldest come first in both.
        self._kills: Dict[str, Dict[int, float]] = {}
        self._count = 0

    def __len__(self) -> int:
        """The number of kills remembered."""
        return self._count

    def see(self, event: Event) -> Optional[str]:
        """Take ``event`` into account; for a ``reap``, say why the process died:
        :data:`CRASH`, :data:`EXIT` or :data:`STOPPED`.

        :returns: ``None`` for any other event, for a ``reap`` without a usable
            ``process_pid`` and for plugin-made events (ignored).
        """
        action = event.action
        if event.plugin is not None or action not in ('kill', 'reap', 'spawn'):
            return None
        pid = event.pid()
        if pid is None:
            return None
        now = self._clock()
        self._expire(now)
        if action == 'kill':
            self._remember(event.watcher, pid, now)
            return None
        killed = self._forget(event.watcher, pid, now)
        if action == 'spawn':
            return None
        if killed:
            return STOPPED
        return EXIT if event.exit_code() == 0 else CRASH

    def _expire(self, now: float) -> None:
        """Forget the watchers whose latest kill is older than :attr:`memory`."""
        while self._kills:
            watcher, kills = next(iter(self._kills.items()))
            if now - next(reversed(kills.values())) <= self.memory:
                return
            self._count -= len(kills)
            del self._kills[watcher]

    def _remember(self, watcher: str, pid: int, now: float) -> None:
        kills = self._kills.pop(watcher, {})  # put back last: its kill is the latest
        self._count -= len(kills)
        kills.pop(pid, None)  # killed again (a stop's SIGKILL): last
        kills[pid] = now
        while len(kills) > 1 and now - next(iter(kills.values())) > self.memory:
            del kills[next(iter(kills))]
        while len(kills) > self.most:
            del kills[next(iter(kills))]
        self._kills[watcher] = kills
        self._count += len(kills)
        while self._count > self.most_in_all:
            oldest, theirs = next(iter(self._kills.items()))
            del theirs[next(iter(theirs))]
            self._count -= 1
            if not theirs:
                del self._kills[oldest]

    def _forget(self, watcher: str, pid: int, now: float) -> bool:
        """Forget ``pid``'s kill; say whether there was one in the last :attr:`memory`
        seconds."""
        kills = self._kills.get(watcher)
        if not kills:
            return False
        when = kills.pop(pid, None)
        if when is None:
            return False
        self._count -= 1
        if not kills:
            del self._kills[watcher]
        return now - when <= self.memory
