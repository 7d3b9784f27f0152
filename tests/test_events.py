"""Untrusted events: the parser's properties, and every bundled plugin fuzzed with hostile
events, then still acting on valid ones."""
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circus_plugins import command_reloader
from circus_plugins.command_reloader import CommandReloader
from circus_plugins import events as events_module
from circus_plugins.events import (CRASH, EXIT, MAX_BODY, MAX_PID, MAX_PLUGIN_NAME, MAX_TIME,
                                   MAX_TOPIC, STOPPED, Event, Exits, MalformedEvent,
                                   is_plugin_made, parse_event, plugin_event, read_event,
                                   skip_event)
from circus_plugins.flapping import Flapping
from circus_plugins.statsd import FullStats, StatsdEmitter
from circus_plugins.testing import EventRecorder, ScriptedCircusd, free_port, wait_for
from circus_plugins.watchdog import WatchDog

NOWHERE = ('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2')  # zmq connects lazily: never used
ACTIONS = ['spawn', 'reap', 'kill', 'start', 'stop', 'reload', 'updated', 'add', 'remove',
           'hook_success', 'hook_failure']
_FIELD_NAMES = ['process_pid', 'time', 'exit_code', 'wid', 'plugin']
_TOPIC_ACTION = re.compile(r'[A-Za-z0-9_-]{1,64}')

# -- hostile input ----------------------------------------------------------------------------

#: Numbers at and beyond every edge a field has, and then some.
edge_numbers = st.sampled_from([0, -1, 1, MAX_PID, MAX_PID + 1, 2 ** 63, -2 ** 63, 10 ** 400,
                                MAX_TIME, MAX_TIME * 2, 1e308, -0.0, 255, 256, -256,
                                float('nan'), float('inf'), float('-inf')])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), edge_numbers,
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
#: What circusd's fields could be instead of what they should be.
field_values = st.one_of(json_values, st.floats(0, MAX_TIME), st.integers(1, MAX_PID))
fields = st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=8), field_values,
                         max_size=4)
#: Bodies with circusd's keys, and values that are often usable but not always right.
circusd_like = st.fixed_dictionaries({}, optional=dict.fromkeys(_FIELD_NAMES, field_values))


def dumps(value):
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    fields.map(dumps),                                   # the right keys, any values
    json_values.map(dumps),                              # any JSON at all
    st.binary(max_size=40),                              # not JSON, not even UTF-8
    st.sampled_from([b'', b'{', b'[' * 5000, b'1' * 5000, b'{"time": 1' + b'0' * 5000 + b'}',
                     b'\xff\xfe{\x00}\x00', b' ' * (MAX_BODY + 1),
                     b'{"time": "1700000000", "process_pid": "12"}']),
    st.text(max_size=20),                                # a str, possibly with surrogates
    st.none(), st.integers(), st.lists(st.binary(max_size=4), max_size=2))
names = st.one_of(st.sampled_from(['web', 'plugin:flapping', 'a.b.c']), st.text(max_size=12))
actions = st.one_of(st.sampled_from(ACTIONS), st.text(max_size=8))


def topic_of(name, action, prefix='watcher'):
    return ('%s.%s.%s' % (prefix, name, action)).encode('utf-8', 'surrogatepass')


topics = st.one_of(
    st.builds(topic_of, names, actions),
    st.builds(topic_of, names, actions, st.just('plugin')),  # plugin-made
    st.binary(max_size=40),
    st.just(b'watcher.' + b'x' * MAX_TOPIC + b'.spawn'),
    st.text(max_size=20).map(lambda text: 'watcher.%s.spawn' % text),  # a str topic
    st.none(), st.integers())
#: Anything at all as handle_recv's ``data``: mostly pairs, some not.
frames = st.one_of(st.tuples(topics, bodies), st.lists(st.binary(max_size=8), max_size=3),
                   st.none(), st.binary(max_size=8))


AIMED = object()


def hostile(acts=st.sampled_from(ACTIONS)):
    """Junk, some of it aimed at a watcher (see :func:`aim`): a well-formed topic with
    an action from ``acts``, and any body."""
    aimed = st.tuples(st.just(AIMED), acts, circusd_like.map(dumps) | bodies)
    return st.lists(aimed | frames, max_size=25)


def aim(junk, watcher):
    """The frames of ``junk``, what is aimed going to ``watcher``."""
    return [(topic_of(watcher, item[1]), item[2])
            if isinstance(item, tuple) and item[0] is AIMED else item for item in junk]


# -- the parser -------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(frames)
def test_parse_event_returns_a_sound_event_or_raises_malformed_event(data):
    try:
        event = parse_event(data)
    except MalformedEvent as exc:
        assert len(str(exc)) < 400  # shortened, whatever the payload's size
        return
    assert isinstance(event, Event)
    assert event.watcher and event.watcher.isprintable()
    assert _TOPIC_ACTION.fullmatch(event.action)
    assert len(event.watcher.encode()) <= MAX_TOPIC
    with pytest.raises(TypeError):
        event.fields['new'] = 1  # read-only
    for value in (event.pid(), event.exit_code(), event.signum(), event.wid()):
        assert value is None or (type(value) is int)
    assert event.time() is None or math.isfinite(event.time())
    assert (event.signal() is None) == (event.signum() is None)
    # Made by a plugin exactly when the topic says so, and then it names the plugin.
    assert (event.plugin is not None) == is_plugin_made(data)
    if event.plugin is not None:
        assert event.plugin == event.fields['plugin'] and event.plugin.isprintable()
        assert 0 < len(event.plugin) <= MAX_PLUGIN_NAME


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=('C', 'Z')) | st.sampled_from(' .'),
               min_size=1, max_size=100),
       st.from_regex(_TOPIC_ACTION, fullmatch=True),
       st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_well_formed_events_read_back_whole(name, action, body):
    event = parse_event((topic_of(name, action), dumps(body)))
    assert (event.watcher, event.action) == (name, action)
    assert json.dumps(dict(event.fields), allow_nan=True) == json.dumps(body, allow_nan=True)
    assert parse_event(('watcher.%s.%s' % (name, action), dumps(body))) == event  # str topic


@settings(max_examples=300, deadline=None)
@given(field_values, field_values, field_values)
def test_accessors_return_the_value_when_usable_else_none(pid, when, code):
    event = Event('web', 'reap', {'process_pid': pid, 'time': when, 'exit_code': code})

    def integer(value, low, high):
        return type(value) is int and low <= value <= high
    assert event.pid() == (pid if integer(pid, 1, MAX_PID) else None)
    assert event.exit_code() == (code if integer(code, -255, 255) else None)
    usable = type(when) in (int, float) and 0 <= when <= MAX_TIME and math.isfinite(when)
    assert event.time() == (float(when) if usable else None)
    assert Event('web', 'reap').pid() is None  # missing
    by_signal = integer(code, -255, -1)
    assert event.signum() == (-code if by_signal else None)
    assert event.signal() == (signal_name(-code) if by_signal else None)
    assert Event('web', 'spawn', {'wid': pid}).wid() == (pid if integer(pid, 1, MAX_PID)
                                                         else None)


def signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def test_signals_by_name():
    assert Event('web', 'reap', {'exit_code': -9}).signal() == 'SIGKILL'
    assert Event('web', 'reap', {'exit_code': -15}).signal() == 'SIGTERM'
    assert Event('web', 'reap', {'exit_code': -200}).signal() == '200'  # no such signal
    for code in (0, 3, 255, None, -256, '-9'):
        assert Event('web', 'reap', {'exit_code': code}).signal() is None
    assert Event('web', 'spawn', {'process_pid': 5, 'wid': 2}).wid() == 2
    assert Event('web', 'spawn', {'process_pid': 5}).wid() is None  # circusd 0.19


def test_malformed_examples_and_what_the_warning_says(caplog):
    caplog.set_level(logging.DEBUG, logger='circus_plugins')
    cases = {
        (b'watcher.web', b'{}'): 'is not watcher.<name>.<action>',
        (b'watcher..spawn', b'{}'): 'is not watcher.<name>.<action>',
        (b'process.web.spawn', b'{}'): 'is not watcher.<name>.<action>',
        (b'watcher.we\nb.spawn', b'{}'): 'is not watcher.<name>.<action>',
        (b'watcher.web.sp awn', b'{}'): 'has no valid action',
        (b'watcher.\xffweb.spawn', b'{}'): 'not UTF-8',
        (b'watcher.web.reap', b'\xff{}'): 'not UTF-8',
        (b'watcher.web.reap', b'\xff\xfe{\x00}\x00'): 'not UTF-8',  # UTF-16 to json
        (b'watcher.web.reap', b'[1, 2]'): 'JSON list, not an object',
        (b'watcher.web.reap', b'1' * 5000): 'not JSON',
        (b'watcher.web.reap', b'[' * 5000): 'not JSON',  # too deep for Python
        (b'watcher.web.reap', b'[' * 100000): 'longer than',
        (b'watcher.web.reap', None): 'NoneType, not bytes',
        (None, b'{}'): 'NoneType, not bytes',
        (b'watcher.web.spawn', b'{}', b''): 'not a (topic, message) pair',
    }
    for data, reason in cases.items():
        caplog.clear()
        assert read_event('tester', data) is None
        [record] = caplog.records
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert record.name == 'circus_plugins.tester'
        assert record.getMessage().startswith('skipped a malformed event')
        assert reason in record.getMessage() and len(record.getMessage()) < 400
    caplog.clear()
    event = read_event('tester', (b'watcher.web.reap', b'{"process_pid": "%s"}' % (b'9' * 900)))
    assert event.pid() is None and not caplog.records
    skip_event('tester', event, 'process_pid', 'time')
    [record] = caplog.records
    assert record.name == 'circus_plugins.tester' and record.getMessage().startswith(
        "skipped reap event of watcher 'web': unusable process_pid='999")
    assert record.getMessage().endswith('(900 in all), time=(missing)')


def test_bodies_are_read_only_for_the_actions_asked():
    junk = (b'watcher.web.spawn', b'not json')
    assert parse_event(junk, fields=False) == Event('web', 'spawn')
    assert parse_event(junk, fields=('reap',)) == Event('web', 'spawn')
    with pytest.raises(MalformedEvent):
        parse_event(junk, fields=('spawn',))
    assert parse_event((b'watcher.web.rea', b'junk'), fields='reap').action == 'rea'


def test_topics_seen_before_or_by_thousands_read_the_same():
    for _ in range(2):
        for n in range(5000):  # more than are remembered
            topic = b'watcher.w%d.spawn' % n
            assert parse_event((topic, b''), fields=False) == Event('w%d' % n, 'spawn')
            assert parse_event((topic.decode(), b''), fields=False) == Event('w%d' % n, 'spawn')
        for bad in (b'watcher.web', 'watcher.web', b'watcher.\xff.spawn', ['unhashable']):
            with pytest.raises(MalformedEvent):
                parse_event((bad, b'{}'))


# -- plugin-made events -----------------------------------------------------------------------

class Records(logging.Handler):
    """The records of the package's loggers while in a ``with`` block (caplog is per
    test, not per Hypothesis example)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        logger = logging.getLogger('circus_plugins')
        self.level, logger.level = logger.level, logging.DEBUG
        logger.addHandler(self)
        return self.records

    def __exit__(self, *exc_info):
        logger = logging.getLogger('circus_plugins')
        logger.removeHandler(self)
        logger.level = self.level


printable_names = st.text(st.characters(blacklist_categories=('C', 'Z')) | st.sampled_from(' .'),
                          min_size=1, max_size=30)
json_safe = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 80, 2 ** 80) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=10)
#: ``(detail, what the event carries instead)`` for details JSON cannot hold as they are.
converted = st.one_of(
    st.tuples(st.integers(), st.text(max_size=3)).map(lambda t: (t, list(t))),
    st.frozensets(st.integers(), max_size=3).map(lambda f: (set(f), sorted(f))),
    st.dictionaries(st.integers(), st.booleans(), max_size=3).map(
        lambda d: (d, {str(k): v for k, v in d.items()})),
    st.just((signal.SIGTERM, 15)),  # an int, as JSON has it
    st.sampled_from([float('nan'), float('inf'), float('-inf'), b'raw', 1j, object(),
                     ValueError('bad')]).map(lambda v: (v, str(v))))
detail_names = st.text(min_size=1, max_size=10).filter(lambda key: key not in ('plugin', 'time'))


@settings(max_examples=300, deadline=None)
@given(printable_names, printable_names, st.from_regex(_TOPIC_ACTION, fullmatch=True),
       st.dictionaries(detail_names, json_safe.map(lambda v: (v, v)) | converted, max_size=5))
def test_plugin_made_events_read_back_whole(plugin, watcher, action, pairs):
    details = {key: value for key, (value, _) in pairs.items()}
    before = time.time()
    topic, body = plugin_event(plugin, watcher, action, **details)
    assert topic.startswith(b'plugin.') and is_plugin_made((topic, body))
    # Strict JSON, in ASCII: any reader takes it.
    json.loads(body.decode('ascii'), parse_constant=pytest.fail)
    event = parse_event((topic, body), fields=False)  # its body is read all the same
    assert (event.watcher, event.action, event.plugin) == (watcher, action, plugin)
    assert before <= event.time() <= time.time()
    expected = {key: carried for key, (_, carried) in pairs.items()}
    got = {key: sorted(value) if isinstance(details[key], set) else value
           for key, value in event.fields.items() if key not in ('plugin', 'time')}
    assert got == expected
    assert parse_event((topic.decode(), body.decode())) == event  # str frames
    with Records() as records:
        assert read_event('tester', (topic, body)) is None
        assert read_event('tester', (topic, body), plugin_events=True) == event
    assert records == []


def plugin_reference(name, action, body):
    """What a plugin-made event of topic ``plugin.<name>.<action>`` and ``body`` should
    read as: ``(watcher, action, plugin)``, or ``None`` when it is malformed."""
    # The topic is all a reader has: its action is what follows the last dot, whatever
    # parts made it (``web`` and ``.0`` make the same topic as ``web.`` and ``0``).
    name, _, action = ('%s.%s' % (name, action)).rpartition('.')
    if not (name and name.isprintable() and _TOPIC_ACTION.fullmatch(action)
            and len(topic_of(name, action, 'plugin')) <= MAX_TOPIC):
        return None
    if isinstance(body, str):
        body = body.encode('utf-8', 'surrogatepass')
    if not isinstance(body, bytes) or len(body) > MAX_BODY:
        return None
    try:
        value = json.loads(body.decode('utf-8'))
    except (ValueError, RecursionError):
        return None
    plugin = value.get('plugin') if isinstance(value, dict) else None
    if not (isinstance(plugin, str) and 0 < len(plugin) <= MAX_PLUGIN_NAME
            and plugin.isprintable()):
        return None
    return name, action, plugin


#: Bodies that name a plugin, most often a usable name.
named_bodies = st.fixed_dictionaries(
    {'plugin': st.sampled_from(['flapping', 'p' * MAX_PLUGIN_NAME]) | names | json_values},
    optional={key: field_values for key in _FIELD_NAMES if key != 'plugin'}).map(dumps)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.tuples(st.sampled_from(['web', 'a.b.c', 'plugin:x']), st.sampled_from(ACTIONS),
              named_bodies),
    st.tuples(names, actions, named_bodies | bodies)))
def test_plugin_made_events_must_name_their_plugin(frame):
    name, action, body = frame
    topic = topic_of(name, action, 'plugin')
    wanted = plugin_reference(name, action, body)
    with Records() as records:
        for fields in (True, False, ('reap',)):
            try:
                event = parse_event((topic, body), fields=fields)
            except MalformedEvent as exc:
                assert wanted is None and len(str(exc)) < 400
            else:
                assert (event.watcher, event.action, event.plugin) == wanted
        # Skipped without a word unless asked for; once asked, read as parse_event does.
        assert read_event('tester', (topic, body)) is None and records == []
        event = read_event('tester', (topic, body), plugin_events=True)
    if wanted is None:
        [record] = records
        assert event is None and record.levelno == logging.WARNING
    else:
        assert records == [] and event.plugin == wanted[2]


def test_plugin_made_events_that_cannot_be_made():
    cases = [(('', 'web', 'act'), {}, 'plugin name'),
             (('p\n', 'web', 'act'), {}, 'plugin name'),
             ((None, 'web', 'act'), {}, 'plugin name'),
             (('p', '', 'act'), {}, 'watcher'),
             (('p', 'we\tb', 'act'), {}, 'watcher'),
             (('p', 'web', 'an act'), {}, 'action'),
             (('p', 'web', 'a' * 65), {}, 'action'),
             (('p', 'web', 'act'), {'time': 1}, 'detail time is reserved'),
             (('p', 'web', 'act'), {'plugin': 'me', 'time': 1}, 'detail plugin, time'),
             (('p', 'w' * MAX_TOPIC, 'act'), {}, 'longer than'),
             (('p', 'web', 'act'), {'big': 'x' * MAX_BODY}, 'longer than')]
    for args, details, reason in cases:
        with pytest.raises(MalformedEvent, match=reason):
            plugin_event(*args, **details)
    # A lone surrogate travels as an escape; a nest too deep, as text.
    nest = []
    for _ in range(50):
        nest = [nest]
    topic, body = plugin_event('p', 'web', 'act', note='\ud800', nest=nest)
    event = parse_event((topic, body))
    assert event.fields['note'] == '\ud800'
    assert isinstance(json.dumps(event.fields['nest']), str) and '[[' in json.dumps(
        event.fields['nest'])


def test_circusd_events_and_plugin_watchers_are_not_plugin_made():
    for topic in (b'watcher.web.spawn', b'watcher.plugin:flapping.spawn',
                  b'watcher.plugin.x.spawn', 'watcher.web.spawn'):
        assert not is_plugin_made((topic, b'{}'))
        event = read_event('tester', (topic, b'{"plugin": "flapping"}'))
        assert event.plugin is None  # a field named plugin says nothing
    assert parse_event((b'watcher.plugin.x.spawn', b'{}')).watcher == 'plugin.x'
    for junk in (None, b'plugin.web.x', (b'plugin.web.x',), [1, 2, 3]):
        assert not is_plugin_made(junk)
    assert is_plugin_made([b'plugin.', None]) and is_plugin_made(('plugin.web.x', None))


# -- exit classification ----------------------------------------------------------------------

class Clock:
    """A clock that moves when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def ev(watcher, action, pid=None, code=None, plugin=None):
    fields = {'time': 1.0}
    if pid is not None:
        fields['process_pid'] = pid
    if code is not None:
        fields['exit_code'] = code
    return Event(watcher, action, fields, plugin)


#: Events of a watcher among a few, about pids among a few: kills, spawns, reaps.
process_events = st.lists(st.tuples(
    st.sampled_from(['kill', 'reap', 'spawn', 'stop', 'start']), st.sampled_from(['a', 'b']),
    st.integers(1, 4), st.sampled_from([0, 1, 3, -9, -15, None, 'x'])), max_size=60)


@settings(max_examples=300, deadline=None)
@given(process_events)
def test_exits_match_the_rule(steps):
    """A reap is STOPPED when its pid was killed since it last spawned or was reaped,
    else EXIT with code 0 and CRASH otherwise; other events are not judged."""
    exits, killed = Exits(clock=Clock()), set()
    for action, watcher, pid, code in steps:
        verdict = exits.see(ev(watcher, action, pid, code))
        key = (watcher, pid)
        if action == 'kill':
            killed.add(key)
        elif action == 'spawn':
            killed.discard(key)
        if action != 'reap':
            assert verdict is None
            continue
        expected = STOPPED if key in killed else EXIT if code == 0 else CRASH
        killed.discard(key)
        assert verdict == expected
    assert len(exits) == len(killed)


@settings(max_examples=300, deadline=None)
@given(process_events, st.integers(1, 3), st.integers(1, 5))
def test_exits_remember_few_kills_and_only_forget(steps, most, most_in_all):
    """With caps, kills are forgotten (the oldest first): a reap may then be judged a
    crash, never the other way round."""
    capped, whole = Exits(most=most, most_in_all=most_in_all, clock=Clock()), Exits()
    for action, watcher, pid, code in steps:
        event = ev(watcher, action, pid, code)
        verdict, reference = capped.see(event), whole.see(event)
        assert verdict == reference or (reference == STOPPED and verdict != STOPPED)
        assert len(capped) <= min(most_in_all, 2 * most)


def test_exits_forget_old_kills_and_ignore_what_is_not_a_death():
    clock = Clock()
    exits = Exits(memory=60.0, clock=clock)
    exits.see(ev('web', 'kill', 1))
    exits.see(ev('db', 'kill', 2))
    clock.now += 59
    assert exits.see(ev('web', 'reap', 1, -15)) == STOPPED  # in time
    clock.now += 2
    assert exits.see(ev('db', 'reap', 2, -15)) == CRASH  # its kill is 61 s old
    assert len(exits) == 0
    # A kill again (a stop's SIGKILL after the graceful timeout) starts the wait again.
    exits.see(ev('web', 'kill', 3))
    clock.now += 50
    exits.see(ev('web', 'kill', 3))
    clock.now += 50
    assert exits.see(ev('web', 'reap', 3, -9)) == STOPPED
    # Old kills go even while their watcher keeps killing, and whole watchers go.
    exits.see(ev('web', 'kill', 4))
    exits.see(ev('db', 'kill', 5))
    clock.now += 61
    exits.see(ev('web', 'kill', 6))
    assert len(exits) == 1
    # Nothing else is judged or remembered: other actions, plugin-made events, no pid.
    for event in (ev('web', 'kill', 7, plugin='other'), ev('web', 'reap', 6, 0, 'other'),
                  ev('web', 'kill'), ev('web', 'reap', code=1), ev('web', 'stop'),
                  Event('web', 'reap', {'process_pid': '6'})):
        assert exits.see(event) is None
    assert len(exits) == 1 and exits.see(ev('web', 'reap', 6)) == STOPPED
    # A reap without an exit code, of no kill: a crash, as nothing explains it.
    assert exits.see(ev('web', 'reap', 8)) == CRASH


def test_exits_defaults_are_read_when_made(monkeypatch):
    monkeypatch.setattr(events_module, 'KILL_MEMORY', 5.0)
    monkeypatch.setattr(events_module, 'MAX_KILLS', 7)
    monkeypatch.setattr(events_module, 'MAX_ALL_KILLS', 9)
    exits = Exits()
    assert (exits.memory, exits.most, exits.most_in_all) == (5.0, 7, 9)


# -- every bundled plugin ---------------------------------------------------------------------

def _reloader():
    plugin = CommandReloader(*NOWHERE, 0.0)
    plugin.watches['web'] = command_reloader._Watch()  # as if seen at a look
    return plugin


_NOT_AN_EVENT = [(b'watcher.web', b'{}'), (b'watcher.\xff.spawn', b'{}'), (None, None),
                 [b'watcher.web.spawn']]


@pytest.mark.parametrize('make, unusable', [
    (lambda: Flapping(*NOWHERE, 0.0), [
        (b'watcher.web.kill', b'{"process_pid": "12"}'),
        (b'watcher.web.reap', b'{"process_pid": 12, "time": "now"}'),
        (b'watcher.web.reap', b'{"time": 1700000000}'),
        (b'watcher.web.reap', b'{"process_pid": 12, "time": NaN}'),
        (b'watcher.web.reap', b'[12]')]),
    (lambda: WatchDog(*NOWHERE, 0.0), [
        (b'watcher.web.spawn', b'{"process_pid": 0}'),
        (b'watcher.web.reap', b'{"process_pid": 2147483648}'),
        (b'watcher.web.kill', b'{"process_pid": true}'),
        (b'watcher.web.spawn', b'\xff')]),
    (_reloader, [
        (b'watcher.web.start', b'{"time": "1700000000"}'),
        (b'watcher.web.reload', b'{"time": -1}'),
        (b'watcher.web.start', b'{"time": 1e999}'),
        (b'watcher.web.start', b'{"time": 1.0')]),
    (lambda: StatsdEmitter(*NOWHERE, 0.0), []),
    (lambda: FullStats(*NOWHERE, 0.0), []),
], ids=['flapping', 'watchdog', 'command_reloader', 'statsd', 'full_stats'])
def test_each_unusable_event_is_skipped_with_one_warning(make, unusable, caplog):
    """Including those whose topic or body is unusable to every plugin."""
    caplog.set_level(logging.DEBUG, logger='circus_plugins')
    plugin = make()  # not started: a constructor opens nothing
    for data in unusable + _NOT_AN_EVENT:
        caplog.clear()
        plugin.handle_recv(data)
        [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert record.levelno == logging.WARNING and not record.exc_info, data
        assert record.name == plugin.log.name and record.getMessage().startswith('skipped ')


def test_command_reloader_takes_a_start_from_the_future_as_now():
    plugin = _reloader()
    before = time.time()
    plugin.handle_recv((b'watcher.web.start', dumps({'time': MAX_TIME})))
    # else every change until the year 9999 would look restarted by circusd already
    assert before <= plugin.watches['web'].started <= time.time()


# -- every bundled plugin, fuzzed ---------------------------------------------------------------

def check(circusd, caplog, fed):
    """Nothing escaped the plugin; nothing logged at error level, with a traceback or by
    another logger (tornado's, asyncio's); at most one line logged per event fed."""
    assert circusd.escaped == []
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    problems = [r for r in records if r.levelno >= logging.ERROR or r.exc_info
                or not r.name.startswith('circus_plugins')]
    assert problems == [], [r.getMessage() for r in problems]
    assert len(records) <= fed
    caplog.clear()


def fuzz(examples=40):
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def fuzz_web(circusd, caplog, actions, then):
    """Feed the plugin junk, some of it aimed at watcher ``web`` with ``actions``, and
    :func:`check` it; then ``then()`` shows the plugin still works, logging nothing."""
    @fuzz(30)
    @given(hostile(st.sampled_from(actions)))
    def run(junk):
        junk = aim(junk, 'web')
        circusd.feed_raw(*junk)
        check(circusd, caplog, len(junk))
        then()
        check(circusd, caplog, 0)
    run()


#: Flapping's circusd: watchers without options of their own.
NO_OPTIONS = {'options': {'status': 'ok', 'options': {}}}


def flapping(**options):
    """A Flapping plugin and its scripted circusd; options questions not recorded."""
    plugin = Flapping(*NOWHERE, 0.0, **dict({'attempts': '2', 'window': '1'}, **options))
    return ScriptedCircusd(plugin, NO_OPTIONS, ignore=['options'])


def stop(watcher):
    return ('stop', {'name': watcher})


def test_flapping_fuzzed_still_stops_a_flapping_watcher(caplog):
    serial = itertools.count()
    with flapping(retry_in='0', max_retry='-1') as circusd:
        plugin = circusd.plugin

        @fuzz(100)
        @given(hostile())
        def run(junk):
            # A watcher of its own for each example, aimed at by the junk.
            number = next(serial)
            victim = 'web%d' % number
            junk = aim(junk, victim)
            circusd.feed_raw(*junk)
            check(circusd, caplog, len(junk))

            def idle():  # no stop, start or restart of ours under way
                watch = plugin.watches.get(victim)
                return watch is None or (watch.retry is None and not watch.acting)
            wait_for(lambda: circusd.on_loop(idle), what='flapping to be idle')
            circusd.settle()
            while not circusd.commands.empty():
                circusd.commands.get()
            base = 3000000 + 10 * number
            circusd.feed_raw(*[(topic_of(victim, 'reap'),
                                dumps({'process_pid': base + n, 'time': time.time(),
                                       'exit_code': 1})) for n in range(2)])
            assert circusd.next_command(timeout=0) == stop(victim)
            check(circusd, caplog, 0)
        run()


@pytest.mark.parametrize('bad_time', ['1700000000', None, [], {}, float('nan'), 1e308, -5])
def test_flapping_after_a_reap_with_a_bad_time(bad_time, caplog):
    """The issue's case: one reap whose time is a string disabled the watcher."""
    with flapping(retry_in='60') as circusd:
        circusd.feed('web', 'reap', process_pid=7, time=bad_time)
        [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert warning.name == 'circus_plugins.flapping'
        assert 'skipped reap event of watcher' in warning.getMessage()
        caplog.clear()
        now = time.time()  # one window (1 s) however slow the feeding
        for pid in (8, 9):
            circusd.feed('web', 'reap', process_pid=pid, time=now)
        assert circusd.next_command(timeout=0) == stop('web')
        check(circusd, caplog, 0)


def test_flapping_reaps_out_of_order_or_from_the_future_do_not_add_up(caplog):
    with flapping(window='0.1', retry_in='60') as circusd:
        # A stamp from long ago, after a death now: the two are a window apart.
        circusd.feed('past', 'reap', process_pid=1, time=time.time())
        circusd.feed('past', 'reap', process_pid=2, time=1000.0)
        # A stamp from the future counts as now, and is out of the window later on.
        circusd.feed('future', 'reap', process_pid=3, time=1e11)
        start = time.monotonic()
        wait_for(lambda: time.monotonic() - start > 0.25, what='the window to pass')
        circusd.feed('future', 'reap', process_pid=4, time=time.time())
        assert circusd.no_command()
        now = time.time()  # one window (0.1 s) however slow the feeding
        for pid in (5, 6):  # flapping
            circusd.feed('future', 'reap', process_pid=pid, time=now)
        assert circusd.next_command(timeout=0) == stop('future')
        check(circusd, caplog, 0)


def test_an_exception_in_flappings_check_is_logged_by_the_plugin(caplog):
    def options(name):
        if not failed:
            failed.append(name)
            raise RuntimeError('options blew up')
        return NO_OPTIONS['options']
    failed = []
    with flapping(retry_in='60') as circusd:
        circusd.replies['options'] = options
        circusd.feed('web', 'reap', process_pid=1)
        [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert record.name == 'circus_plugins.flapping' and record.exc_info
        assert record.getMessage() == 'web: checking for flapping failed'
        caplog.clear()
        now = time.time()  # one window (1 s) however slow the feeding
        for pid in (2, 3):
            circusd.feed('web', 'reap', process_pid=pid, time=now)
        assert circusd.next_command(timeout=0) == stop('web')
        check(circusd, caplog, 0)


def test_watchdog_fuzzed_keeps_its_processes_and_still_kills(caplog):
    alive = set()

    def listing(name=None):
        if name is None:
            return {'status': 'ok', 'watchers': ['web']}
        return {'status': 'ok', 'pids': sorted(alive)}
    plugin = WatchDog(*NOWHERE, 0.0, port=str(free_port(socket.SOCK_DGRAM)),
                      loop_rate='0.05', max_count='1')
    pids = itertools.count(3000000)
    def sound():
        return all(type(pid) is int and 0 < pid <= MAX_PID and
                   isinstance(process.watcher, str)
                   for pid, process in plugin.processes.items())

    def still_kills():
        assert circusd.on_loop(sound)
        pid = next(pids)
        alive.add(pid)
        circusd.feed('web', 'spawn', process_pid=pid, time=1)
        assert circusd.next_command() == ('kill', {'name': 'web', 'pid': pid})
        alive.discard(pid)
        circusd.feed('web', 'spawn', process_pid=pid)
        circusd.feed('web', 'reap', process_pid=pid)
        assert circusd.on_loop(lambda: pid not in plugin.processes)
    with ScriptedCircusd(plugin, {'list': listing}, ignore=['list']) as circusd:
        fuzz_web(circusd, caplog, ['spawn', 'reap', 'kill', 'stop'], still_kills)


def touch_later(path, seconds=10):
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 10 ** 9))


def test_command_reloader_fuzzed_still_restarts_on_a_change(tmp_path, caplog):
    web = tmp_path / 'web.sh'
    web.write_text('#!/bin/sh\nexec sleep 1000\n')
    web.chmod(0o755)
    looks = [0]

    def listing():
        looks[0] += 1
        return {'status': 'ok', 'watchers': ['web']}
    replies = {'list': listing, 'get': {'status': 'ok', 'options': {'cmd': str(web)}},
               'status': {'status': 'active'}}
    plugin = CommandReloader(*NOWHERE, 0.0, loop_rate='0.02')
    plugin.safety_refresh = 0  # every look lists: the looks are counted by their list
    with ScriptedCircusd(plugin, replies, ignore=['list', 'get', 'status']) as circusd:
        wait_for(lambda: 'web' in plugin.watches and plugin.watches['web'].stamps,
                 what='a first look')

        def still_restarts():
            started = circusd.on_loop(lambda: plugin.watches['web'].started)
            assert type(started) is float and 0 <= started <= time.time()
            touch_later(str(web))
            assert circusd.next_command() == ('restart', {'name': 'web', 'match': 'simple'})
            seen = looks[0]
            wait_for(lambda: looks[0] > seen + 2, what='two more looks')
            assert circusd.no_command()
        fuzz_web(circusd, caplog, ['start', 'reload', 'updated', 'stop'], still_restarts)


def test_statsd_emitter_fuzzed_still_counts(udp, caplog):
    serial = itertools.count()
    plugin = StatsdEmitter(*NOWHERE, 0.0, host='127.0.0.1', port=str(udp.port))
    with ScriptedCircusd(plugin) as circusd:
        @fuzz()
        @given(st.lists(frames, max_size=25))
        def run(junk):
            circusd.feed_raw(*junk)
            check(circusd, caplog, len(junk))
            name = 'zz-valid-%d' % next(serial)
            circusd.feed_raw((topic_of(name, 'spawn'), b'{}'), (topic_of(name, 'spawn'), b''))
            udp.wait_lines(lambda lines: lines.count(
                'circus.app.watcher.%s.spawn:1|c' % name) == 2)
            assert all(re.fullmatch(r'[^:|@\s]+:1\|c', line) for line in udp.lines())
            check(circusd, caplog, 0)
        run()


def test_full_stats_fuzzed_still_counts_spawns(udp, caplog):
    replies = {'stats': {'status': 'ok', 'infos': {'web': {'1': {'cpu': 1.0, 'mem': 2.0}}}}}
    plugin = FullStats(*NOWHERE, 0.0, host='127.0.0.1', port=str(udp.port),
                       loop_rate='0.02', stats_source='poll')  # circusd's scripted stats
    def still_counts():
        before = circusd.on_loop(lambda: plugin._spawns.get('web', 0))
        circusd.feed_raw((b'watcher.web.spawn', b'\xff'), (b'watcher.web.spawn', b'{}'))
        count = circusd.on_loop(lambda: plugin._spawns['web'])
        assert count == before + 2
        udp.wait_lines(lambda lines: 'circus.app.watcher._stats.web.spawn_count:%d|g'
                       % count in lines)
    with ScriptedCircusd(plugin, replies) as circusd:
        fuzz_web(circusd, caplog, ['spawn'], still_counts)


# -- under a real circusd -----------------------------------------------------------------------

def test_flapping_under_circusd_still_stops_a_watcher_after_junk(start_circusd, caplog):
    circusd = start_circusd(watchers={'bad': {'cmd': 'false', 'autostart': 'false'},
                                      'good': {'cmd': 'sleep 1000'}})
    plugin = Flapping(circusd.endpoint, circusd.pubsub_endpoint, 1.0, attempts='2',
                      window='1', retry_in='60', max_retry='0')
    junk = [(b'watcher.bad.reap', dumps({'process_pid': 7, 'time': 'yesterday'})),
            (b'watcher.bad.reap', dumps({'process_pid': 'x', 'time': time.time()})),
            (b'watcher.bad.reap', dumps({'process_pid': [], 'time': float('nan')})),
            (b'watcher.bad.kill', dumps({'process_pid': 10 ** 400})),
            (b'watcher.bad.reap', b'\xff\xfe'), (b'watcher.\xff.reap', b'{}'),
            (b'watcher.bad.reap', dumps({'time': 1e308, 'process_pid': 3})),
            (b'watcher.bad.reap', dumps({'time': -1, 'process_pid': 4}))]

    def feed(events):  # on the loop, between circusd's own events
        done = threading.Event()

        def run():
            for data in events:
                plugin.handle_recv(data)
            done.set()
        plugin.loop.add_callback(run)
        assert done.wait(5)
    with plugin, EventRecorder(circusd.pubsub_endpoint) as events:
        events.sync(circusd, 'good')
        feed(junk * 10)
        assert circusd.call('start', name='bad')['status'] == 'ok'
        # Between two deaths, when the junk is not wiped by the start (the case)
        events.wait(b'watcher.bad.reap')
        feed(junk * 10)
        events.wait(b'watcher.bad.stop', timeout=8)
    assert circusd.status('bad') == 'stopped'
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in warnings)
    assert len(warnings) <= len(junk) * 20


# -- exits classified on circusd's own sequences -------------------------------------------------

@pytest.fixture
def lifecycle(start_circusd):
    """A circusd whose events are recorded from the start: ``web`` (two processes),
    ``ztick`` (exits with 0 at once, so is reaped and spawned again at each of circusd's
    checks, which manage watchers in the order of their names: last), ``fail`` (exits
    with 3; not started), ``fewer`` (three processes) and ``gone``."""
    circusd = start_circusd(watchers={
        'web': {'cmd': 'sleep 1000', 'numprocesses': 2},
        'ztick': {'cmd': "sh -c 'exit 0'"},
        'fail': {'cmd': "sh -c 'exit 3'", 'autostart': 'false'},
        'fewer': {'cmd': 'sleep 1000', 'numprocesses': 3},
        'gone': {'cmd': 'sleep 1000'}})
    with EventRecorder(circusd.pubsub_endpoint) as recorder:
        recorder.sync(circusd, 'web')
        a_check(recorder)  # the kills of sync()'s decr have arrived
        yield circusd, recorder


def of(events, watcher, action):
    """The pids of ``watcher``'s ``action`` events recorded so far, in order."""
    events.poll()
    topic = topic_of(watcher, action)
    return [json.loads(body)['process_pid'] for name, body in events.events if name == topic]


def reaped(events, watcher, pids, timeout=5.0):
    wait_for(lambda: set(pids) <= set(of(events, watcher, 'reap')), timeout,
             what='reaps of %s %s' % (watcher, sorted(pids)))


def a_check(events, count=1):
    """Return once circusd has run ``count`` more checks (``ztick`` reaped once more at
    each): what circusd published before this call has arrived, and with ``count=2``,
    whatever a whole check had to publish since."""
    seen = len(of(events, 'ztick', 'reap'))
    wait_for(lambda: len(of(events, 'ztick', 'reap')) >= seen + count,
             what='%d more checks' % count)


def between_checks(events):
    """Return once one of circusd's checks is over (``ztick`` spawned again), so that a
    death now comes a second before the next. circusd 0.19 drops a process that dies
    during a check, after the reaping and before its watcher is managed, without
    publishing its reap."""
    seen = len(of(events, 'ztick', 'spawn'))
    wait_for(lambda: len(of(events, 'ztick', 'spawn')) > seen, what='a check to end')


def kill_from_outside(events, pid):
    between_checks(events)
    os.kill(pid, signal.SIGTERM)


def verdicts(events, watcher):
    """``{pid: (verdict, exit code)}`` of ``watcher``'s reaps, from every event recorded
    fed in order to one :class:`Exits`, as a plugin would."""
    exits, found = Exits(), {}
    for data in events.events:
        event = parse_event(data)
        verdict = exits.see(event)
        if verdict is not None and event.watcher == watcher:
            found[event.pid()] = verdict, event.exit_code()
    return found


def actions_after(events, start, watcher):
    """The actions of ``watcher``'s events recorded from the ``start``-th on."""
    events.poll(0)
    prefix = b'watcher.%s.' % watcher.encode()
    return [topic[len(prefix):].decode() for topic, _ in events.events[start:]
            if topic.startswith(prefix)]


def until(events, start, watcher, action):
    """Wait for ``watcher``'s ``action`` among the events from the ``start``-th on."""
    wait_for(lambda: action in actions_after(events, start, watcher),
             what='%s of %s' % (action, watcher))


def test_stop_kills_then_reaps(lifecycle):
    circusd, events = lifecycle
    pids, start = circusd.pids('web'), len(events.events)
    assert circusd.call('stop', name='web')['status'] == 'ok'
    until(events, start, 'web', 'stop')
    assert actions_after(events, start, 'web') == ['kill', 'kill', 'reap', 'reap', 'stop']
    assert verdicts(events, 'web') == {pid: (STOPPED, -15) for pid in pids}


def test_restart_kills_then_reaps(lifecycle):
    circusd, events = lifecycle
    pids, start = circusd.pids('web'), len(events.events)
    assert circusd.call('restart', name='web')['status'] == 'ok'
    until(events, start, 'web', 'start')
    assert actions_after(events, start, 'web') == ['kill', 'kill', 'reap', 'reap', 'stop',
                                                   'spawn', 'spawn', 'start']
    assert verdicts(events, 'web') == {pid: (STOPPED, -15) for pid in pids}


def test_reloadconfig_kills_then_reaps(lifecycle):
    """A changed command restarts the watcher, a removed one is stopped, fewer processes
    are killed as by decr; all announced with kills."""
    circusd, events = lifecycle
    before = {name: circusd.pids(name) for name in ('web', 'gone', 'fewer')}
    with open(circusd.ini_path, encoding='utf-8') as ini:
        text = ini.read()
    changes = [('[watcher:web]\ncmd = sleep 1000', '[watcher:web]\ncmd = sleep 2000'),
               ('[watcher:gone]\ncmd = sleep 1000\n', ''),
               ('cmd = sleep 1000\nnumprocesses = 3', 'cmd = sleep 1000\nnumprocesses = 1')]
    for old, new in changes:
        assert text.count(old) == 1
        text = text.replace(old, new)
    with open(circusd.ini_path, 'w', encoding='utf-8') as ini:
        ini.write(text)
    start = len(events.events)
    assert circusd.call('reloadconfig')['status'] == 'ok'
    until(events, start, 'web', 'start')
    reaped(events, 'gone', before['gone'])
    a_check(events, 2)
    assert actions_after(events, start, 'gone') == ['kill', 'reap', 'stop']
    assert actions_after(events, start, 'fewer') == ['kill', 'kill']  # as decr: no reap
    assert verdicts(events, 'web') == {pid: (STOPPED, -15) for pid in before['web']}
    assert verdicts(events, 'gone') == {before['gone'][0]: (STOPPED, -15)}
    assert verdicts(events, 'fewer') == {}


@pytest.mark.parametrize('command', ['decr', 'kill'])
def test_decr_and_kill_publish_kills_and_no_reap(lifecycle, command):
    """circusd forgets the processes it killed for ``decr`` and ``kill``: no reap comes.
    A crash of another process is a crash all the same."""
    circusd, events = lifecycle
    pids, start = circusd.pids('web'), len(events.events)
    victim = pids[-1]
    props = {'nb': 1} if command == 'decr' else {'pid': victim}
    assert circusd.call(command, name='web', **props)['status'] == 'ok'
    wait_for(lambda: set(of(events, 'web', 'kill')[-1:]) & set(pids), what='the kill')
    [killed] = set(of(events, 'web', 'kill')) & set(pids)
    if command == 'kill':
        assert killed == victim
        # A new process takes its place, at circusd's next check.
        wait_for(lambda: actions_after(events, start, 'web') == ['kill', 'spawn'],
                 what='the spawn after the kill')
    a_check(events, 2)
    assert actions_after(events, start, 'web') == ['kill'] + ['spawn'] * (command == 'kill')
    survivor = (set(pids) - {killed}).pop()
    kill_from_outside(events, survivor)
    reaped(events, 'web', [survivor])
    assert verdicts(events, 'web') == {survivor: (CRASH, -15)}


def test_deaths_circusd_did_not_cause(lifecycle):
    """An exit with a code, an exit with 0, a signal from outside; and circusd's own
    ``signal`` command, which publishes nothing: its deaths cannot be told from
    crashes."""
    circusd, events = lifecycle
    assert circusd.call('start', name='fail')['status'] == 'ok'
    web = circusd.pids('web')
    kill_from_outside(events, web[0])
    reaped(events, 'web', web[:1])
    wait_for(lambda: of(events, 'fail', 'reap'), what='a reap of fail')
    assert of(events, 'ztick', 'reap'), 'ztick is reaped at every check'
    assert set(verdicts(events, 'fail').values()) == {(CRASH, 3)}
    assert set(verdicts(events, 'ztick').values()) == {(EXIT, 0)}
    assert verdicts(events, 'web') == {web[0]: (CRASH, -15)}
    crash = [parse_event(data) for data in events.events
             if data[0] == b'watcher.web.reap'][-1]
    assert crash.signal() == 'SIGTERM'
    start = len(events.events)
    between_checks(events)
    assert circusd.call('signal', name='web', pid=web[1], signum=signal.SIGTERM
                        )['status'] == 'ok'
    reaped(events, 'web', web[1:])
    assert 'kill' not in actions_after(events, start, 'web')
    assert verdicts(events, 'web')[web[1]] == (CRASH, -15)


def test_details_may_be_named_like_the_arguments():
    topic, body = plugin_event('p', 'web', 'scaled', watcher='other', action='incr',
                               plugin_name='x')
    event = parse_event((topic, body))
    assert (event.watcher, event.action) == ('web', 'scaled')
    assert (event.fields['watcher'], event.fields['action'],
            event.fields['plugin_name']) == ('other', 'incr', 'x')
