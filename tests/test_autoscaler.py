"""The autoscaler: its rules with a scripted circusd and made-up CPU figures, and its effect
on a real circusd 0.19 whose processes burn CPU."""
import contextlib
import json
import logging
import queue
import sys
import time
import types

import pytest
from hypothesis import given, settings, strategies as st

from circus_plugins import ConfigError
from circus_plugins._usage import Usage
from circus_plugins.autoscaler import Autoscaler, Settings, Trend, decide
from circus_plugins.errors import PluginLoadError
from circus_plugins.events import plugin_event
from circus_plugins.testing import (CommandCounter, EventRecorder, ScriptedCircusd, run_on_loop,
                                    wait_for)
from conftest import asked_since, look_now, plugin_running, untrusted_events

NOWHERE = ('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2')

# -- the rule, alone -----------------------------------------------------------------------


def trend_of(cpus, high=70.0, low=20.0, every=1.0):
    trend = Trend(high, low)
    for n, cpu in enumerate(cpus):
        trend.add(n * every, (n + 1) * every, cpu)
    return trend


def test_decide_needs_a_whole_window_beyond_the_threshold():
    s = Settings(min=1, max=4, step=1, up_after=3, down_after=3)
    assert decide(trend_of([90, 90]), 1, s) is None          # 2 s: not yet
    up = decide(trend_of([90, 90, 90]), 1, s)
    assert (up.direction, up.before, up.after, up.seconds, up.cpu) == ('up', 1, 2, 3.0, 90.0)
    assert up.reason == 'CPU above cpu_high 70% for 3.0 s (90.0% per process on average)'
    assert decide(trend_of([90, 90, 50, 90, 90]), 1, s) is None  # a dip: the run restarts
    assert decide(trend_of([90, 90, 70, 90]), 1, s) is None     # 70 is not above 70
    down = decide(trend_of([5, 10, 0]), 3, s)
    assert (down.direction, down.after, down.cpu) == ('down', 2, 5.0)
    assert decide(trend_of([5, 20, 0, 0]), 3, s) is None       # 20 is not below 20
    assert decide(trend_of([50] * 10), 2, s) is None            # between: nothing


def test_decide_clamps_the_step_and_never_passes_the_bounds():
    s = Settings(min=2, max=5, step=3, up_after=1, down_after=1)
    assert decide(trend_of([99]), 3, s).after == 5
    assert decide(trend_of([99]), 5, s) is None and decide(trend_of([99]), 9, s) is None
    assert decide(trend_of([0]), 4, s).after == 2
    assert decide(trend_of([0]), 2, s) is None and decide(trend_of([0]), 1, s) is None
    assert decide(trend_of([99]), 1, s).after == 4   # below min: up by step all the same
    assert decide(trend_of([0]), 9, s).after == 6    # above max: down by step


def test_a_gap_between_readings_breaks_the_run():
    trend = trend_of([90, 90])
    trend.add(3.0, 4.0, 90)  # 2.0 -> 3.0 is missing
    assert trend.above() == (1.0, 90.0)


# -- the plugin, with circusd's replies scripted -------------------------------------------

class Fake:
    """circusd's watchers and the CPU their processes use, made up: the replies of a
    ScriptedCircusd, the plugin's clock, usage reader and psutil."""

    def __init__(self):
        self.now = 1000.0
        self.watchers = {}
        self.cpu_seconds = {}  # pid -> CPU seconds used so far
        self.next_pid = 100
        self.available = 8 * 2 ** 30
        self.rss = 50 * 2 ** 20
        self.running_lag = 0  # processes missing from numprocesses after a change

    def add(self, name, count=1, status='active', cpu=0.0, **options):
        self.watchers[name] = {'status': status, 'cpu': cpu, 'pids': [],
                               'options': {k.replace('_', '.', 1) if k.startswith(
                                   'autoscale_') else k: str(v) for k, v in options.items()}}
        self.resize(name, count)

    def resize(self, name, count):
        pids = self.watchers[name]['pids']
        while len(pids) < count:
            self.next_pid += 1
            pids.append(self.next_pid)
            self.cpu_seconds[self.next_pid] = 0.0
        del pids[count:]

    def count(self, name):
        return len(self.watchers[name]['pids'])

    def advance(self, seconds):
        self.now += seconds
        for watcher in self.watchers.values():
            for pid in watcher['pids']:
                self.cpu_seconds[pid] += watcher['cpu'] / 100 * seconds

    # circusd
    def replies(self):
        def options(name):
            w = self.watchers[name]
            return {'status': 'ok', 'options': dict(w['options'], numprocesses=len(w['pids']),
                                                    singleton=False)}

        def change(sign):
            def command(name, nb=1):
                self.resize(name, max(0, self.count(name) + sign * nb))
                return {'status': 'ok', 'numprocesses': self.count(name)}
            return command
        return {
            'status': lambda: {'status': 'ok', 'statuses': {
                name: w['status'] for name, w in self.watchers.items()}},
            'options': options,
            'list': lambda name: {'status': 'ok', 'pids': list(self.watchers[name]['pids'])},
            'numprocesses': lambda name: {'status': 'ok', 'numprocesses':
                                          self.count(name) - self.running_lag},
            'incr': change(+1), 'decr': change(-1)}

    # the plugin's clock, usage reader and psutil
    gone = frozenset()  # UsageReader.gone: no process found ended without its event

    def clock(self):
        return self.now

    def read(self, keys):
        return {key: Usage(self.cpu_seconds[key[0]], self.rss) for key in keys
                if key[0] in self.cpu_seconds}

    def virtual_memory(self):
        return types.SimpleNamespace(available=self.available)


QUESTIONS = ['status', 'options', 'list', 'numprocesses']


@contextlib.contextmanager
def scripted(fake, **config):
    """An Autoscaler on ``fake``'s watchers (all of them unless ``watchers`` says
    otherwise; ``None``: those with ``autoscale.*`` options), running, its first look made
    at ``fake.now``; the questions it asks are not recorded, only incr and decr."""
    options = dict(loop_rate=1000, call_timeout=0.2, watchers='*')
    options.update(config)
    plugin = Autoscaler(*NOWHERE, 1.0, **{k: str(v) for k, v in options.items()
                                          if v is not None})
    plugin.clock, plugin.usage, plugin.psutil = fake.clock, fake, fake
    with ScriptedCircusd(plugin, fake.replies(), ignore=QUESTIONS) as s:
        s.settle()
        yield s


def step(s, fake, seconds=1.0, times=1):
    """Let ``seconds`` pass on the fake clock, then run the plugin's check; ``times``
    over."""
    for _ in range(times):
        fake.advance(seconds)
        look_now(s)


def commands(s):
    got = []
    while True:
        try:
            got.append(s.commands.get_nowait())
        except queue.Empty:
            return got


def test_scales_up_after_a_full_window_then_waits_out_the_cooldown(collector, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins.autoscaler')
    fake = Fake()
    fake.add('web', 1, cpu=90, autoscale_max=3)
    with scripted(fake, up_after=3, cooldown=10) as s:
        step(s, fake, times=2)
        assert s.no_command()
        step(s, fake)  # t = 3: three seconds above 70 %
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        watcher, action, body = collector.next_event()
        assert (watcher, action) == ('web', 'autoscale')
        del body['time']
        assert body == {'plugin': 'autoscaler', 'direction': 'up', 'before': 1, 'after': 2,
                        'cpu': 90.0, 'window': 3.0, 'dry_run': False, 'held': False,
                        'reason': 'CPU above cpu_high 70% for 3.0 s (90.0% per process '
                                  'on average)'}
        assert "'web': scaling up from 1 to 2 processes: CPU above cpu_high 70%" in caplog.text
        assert "'web': 2 processes running" in caplog.text
        step(s, fake, times=9)  # t = 12: the window is full again, but within the cooldown
        assert s.no_command()
        step(s, fake)           # t = 13: ten seconds after the change
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        step(s, fake, times=20)  # at max
        assert s.no_command() and fake.count('web') == 3
        assert s.escaped == []


def test_scales_down_to_min_in_clamped_steps_and_no_further(collector):
    fake = Fake()
    fake.add('web', 5, cpu=3, autoscale_min=2, autoscale_step=2)
    with scripted(fake, down_after=2, cooldown=0) as s:
        step(s, fake, times=2)
        assert commands(s) == [('decr', {'name': 'web', 'nb': 2})]
        step(s, fake, times=3)  # the window starts again after the change
        assert commands(s) == [('decr', {'name': 'web', 'nb': 1})]  # 3 -> 2, not 1
        step(s, fake, times=10)
        assert s.no_command() and fake.count('web') == 2
    moves = [collector.next_event()[2] for _ in range(2)]
    assert [(m['direction'], m['before'], m['after']) for m in moves] == [
        ('down', 5, 3), ('down', 3, 2)]
    assert collector.none_yet()


def test_a_dip_restarts_the_window_and_a_middling_load_moves_nothing():
    fake = Fake()
    fake.add('web', 2, cpu=90)
    with scripted(fake, up_after=3, down_after=3) as s:
        step(s, fake, times=2)
        fake.watchers['web']['cpu'] = 50
        step(s, fake, times=5)
        assert s.no_command()
        fake.watchers['web']['cpu'] = 90
        step(s, fake, times=2)
        assert s.no_command()
        step(s, fake)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]


def test_dry_run_logs_and_announces_but_commands_nothing(collector, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins.autoscaler')
    fake = Fake()
    fake.add('web', 1, cpu=90)
    fake.add('api', 3, cpu=0, autoscale_dry_run='true')
    with scripted(fake, up_after=2, down_after=2, cooldown=5) as s:
        step(s, fake, times=2)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        got = sorted((collector.next_event() for _ in range(2)), key=lambda e: e[0])
        assert [(w, b['direction'], b['before'], b['after'], b['dry_run']) for w, _, b in got
                ] == [('api', 'down', 3, 2, True), ('web', 'up', 1, 2, False)]
        assert "'api': dry run: would scale down from 3 to 2 processes: CPU below" in \
            caplog.text
    with scripted(fake, up_after=2, cooldown=5, dry_run='yes') as s:
        step(s, fake, times=2)
        assert collector.next_event()[2]['dry_run'] is True
        step(s, fake, times=4)
        assert collector.none_yet()  # within the cooldown
        step(s, fake)
        assert collector.next_event()[2]['before'] == 2  # the same decision again
        assert s.no_command() and fake.count('web') == 2


def test_the_memory_guard_holds_a_scale_up(collector, caplog):
    fake = Fake()
    fake.add('web', 2, cpu=90, autoscale_step=2)
    fake.available = fake.rss * 2 - 1
    with scripted(fake, up_after=1, cooldown=3) as s:
        step(s, fake)
        assert s.no_command()
        body = collector.next_event()[2]
        assert (body['direction'], body['before'], body['after'], body['held']) == (
            'up', 2, 4, True)
        assert body['reason'].startswith('memory guard: 100.0 MB available, less than 2 x '
                                         '50.0 MB per process (CPU above cpu_high 70%')
        assert "'web': not scaling up from 2 to 4 processes: memory guard" in caplog.text
        fake.available = fake.rss * 2
        step(s, fake, times=3)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 2})]
    fake = Fake()
    fake.add('web', 2, cpu=90, autoscale_memory_guard='false')
    fake.available = 0
    with scripted(fake, up_after=1) as s:
        step(s, fake)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]


@pytest.mark.parametrize('status', ['stopped', 'stopping', 'starting'])
def test_a_watcher_not_active_is_left_alone_and_said_once(status, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins.autoscaler')
    fake = Fake()
    fake.add('web', 1, status=status, cpu=90, autoscale_max=2)
    with scripted(fake, up_after=1) as s:
        step(s, fake, times=5)
        assert s.no_command()
        assert caplog.text.count("'web': left alone: it is %s" % status) == 1
        fake.watchers['web']['status'] = 'active'
        step(s, fake, times=2)  # a new window, from the first reading as active
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        assert caplog.text.count("'web': autoscaled again") == 1


def test_crashes_and_flapping_leave_a_watcher_alone_for_a_while(caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins.autoscaler')
    fake = Fake()
    fake.add('web', 1, cpu=90, autoscale_max=4)
    with scripted(fake, up_after=2, down_after=5, cooldown=0) as s:
        # A process circusd killed (decr, restart...) and then reaped is no crash.
        s.feed('web', 'kill', process_pid=7, time=time.time())
        s.feed('web', 'reap', process_pid=7, time=time.time(), exit_code=-15)
        step(s, fake, times=2)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        s.feed('web', 'reap', process_pid=8, time=time.time(), exit_code=1)
        step(s, fake, times=5)  # max(up_after, down_after) = 5 s after the crash
        assert s.no_command()
        assert "'web': left alone: a process of it crashed 1.0 s ago" in caplog.text
        step(s, fake, times=3)  # the crash is 6 s old: a reading, then 2 s above
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        s.feed_raw(plugin_event('flapping', 'web', 'flapping', retry_in=7))
        step(s, fake, seconds=60, times=10)
        assert s.no_command()
        assert "'web': left alone: the flapping plugin stopped it 60 s ago" in caplog.text
        step(s, fake, seconds=60, times=2)  # ten minutes on: a reading, then 60 s above
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]


def test_which_watchers_are_autoscaled():
    fake = Fake()
    for name, options in [('web-1', {}), ('web-2', {'autoscale_active': 'false'}),
                          ('db', {'autoscale_max': 2}), ('cache', {}),
                          ('plugin:flapping', {})]:
        fake.add(name, 1, cpu=90, **options)
    with scripted(fake, up_after=1, watchers='web-*') as s:
        step(s, fake, times=3)
        got = sorted(props['name'] for command, props in commands(s))
        assert got == ['db', 'web-1']
    fake.resize('db', 1)
    with scripted(fake, up_after=1, watchers=None) as s:  # only those that say so
        step(s, fake, times=3)
        assert [props['name'] for _, props in commands(s)] == ['db']


def test_bad_watcher_options_are_said_once_and_ignored(caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins.autoscaler')
    fake = Fake()
    fake.add('web', 1, cpu=90, autoscale_max='lots', autoscale_cpu_high='nan',
             autoscale_colour='blue')
    fake.add('api', 1, cpu=90, autoscale_min=5, autoscale_max=3)
    fake.add('db', 1, cpu=90, autoscale_cpu_low=80, autoscale_cpu_high=60)
    with scripted(fake, up_after=1, cooldown=0) as s:
        step(s, fake, times=6)
        assert [props['name'] for _, props in commands(s)] == ['web'] * 3  # up to max 4
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sorted(lines) == sorted([
        "'web': ignored: option 'autoscale.max': 'lots' is not an integer",
        "'web': ignored: option 'autoscale.cpu_high': 'nan' is not a finite number",
        "'web': unknown option 'autoscale.colour' ignored",
    ])
    assert "'api': left alone: min 5 is above max 3" in caplog.text
    assert "'db': left alone: cpu_low 80 is not below cpu_high 60" in caplog.text


def test_a_pid_used_again_is_not_counted():
    fake = Fake()
    fake.add('web', 2, cpu=90)
    with scripted(fake, up_after=3) as s:
        step(s, fake, times=2)
        fake.cpu_seconds[fake.watchers['web']['pids'][0]] = 0.0  # a new process, same pid
        step(s, fake)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]  # the other counted
        step(s, fake, times=2)
        for pid in fake.watchers['web']['pids']:
            fake.cpu_seconds[pid] = 0.0
        step(s, fake)  # no process measured: the window starts again
        step(s, fake, times=2)
        assert s.no_command()


def test_a_refused_change_is_logged_not_announced_and_unconfirmed_ones_are_warned(
        collector, caplog):
    fake = Fake()
    fake.add('web', 1, cpu=90)
    with scripted(fake, up_after=1, cooldown=0) as s:
        s.replies['incr'] = {'status': 'error', 'errno': 3, 'reason': 'program web not found'}
        step(s, fake)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        assert ("'web': could not scale up from 1 to 2 processes: circusd said 'program web "
                "not found'") in caplog.text
        assert collector.none_yet()
        s.replies['incr'] = fake.replies()['incr']
        fake.running_lag = 1
        step(s, fake, times=2)
        assert commands(s) == [('incr', {'name': 'web', 'nb': 1})]
        assert collector.next_event()[2]['after'] == 2
        assert "'web': 1 process running 0.2 s after the change to 2" in caplog.text


def test_a_busy_circusd_is_asked_again():
    fake = Fake()
    fake.add('web', 1, cpu=90)
    refusals = []

    def incr(name, nb):
        if len(refusals) < 3:
            refusals.append(name)
            return {'status': 'error', 'errno': 5,
                    'reason': 'arbiter is already running manage_watchers command'}
        return fake.replies()['incr'](name, nb)
    with scripted(fake, up_after=1) as s:
        s.replies['incr'] = incr
        step(s, fake)
        assert len(refusals) == 3 and fake.count('web') == 2


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() |
                    st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def mostly(good, bad=JSON):
    """Values that are ``good`` seven times out of eight, junk otherwise."""
    return st.integers(0, 7).flatmap(lambda n: bad if n == 0 else good)


def reply(**fields):
    """A reply of circusd, mostly ``ok`` with ``fields``; sometimes junk altogether."""
    ok = st.fixed_dictionaries(dict({'status': mostly(st.just('ok'))}, **fields))
    return mostly(ok, st.dictionaries(st.text(max_size=6), JSON, max_size=3))


OPTION_VALUES = st.sampled_from(['0', '1', '2', '5', '-1', '0.5', '1e3', 'true', 'no', ''])
REPLIES = st.fixed_dictionaries({
    'status': reply(statuses=mostly(st.dictionaries(
        st.sampled_from(['web', 'db', '', 'plugin:x', 'a\nb']) | st.text(max_size=4),
        mostly(st.sampled_from(['active', 'stopped', 'stopping', 'starting'])),
        max_size=3).map(lambda statuses: dict({'web': 'active'}, **statuses)))),
    'options': reply(options=mostly(st.builds(
        lambda numprocesses, singleton, more: dict(numprocesses=numprocesses,
                                                   singleton=singleton, **more),
        mostly(st.integers(1, 4)), mostly(st.just(False)),
        st.dictionaries(st.sampled_from(
            ['autoscale.min', 'autoscale.max', 'autoscale.step', 'autoscale.cpu_high',
             'autoscale.cpu_low', 'autoscale.active', 'autoscale.dry_run',
             'autoscale.memory_guard', 'autoscale.up_after', 'autoscale.x']),
            mostly(OPTION_VALUES | st.integers(0, 5) | st.booleans()), max_size=4)))),
    'list': reply(pids=mostly(st.lists(mostly(st.integers(1, 3), st.integers(-1, 2 ** 40) | JSON),
                                       min_size=1, max_size=4))),
    'numprocesses': reply(numprocesses=mostly(st.integers(0, 5))),
    'incr': reply(numprocesses=mostly(st.integers(0, 5))),
    'decr': reply(numprocesses=mostly(st.integers(0, 5)))})
#: circusd's events and plugin-made ones about ``web``, well formed, and junk.
EVENTS = st.one_of(
    untrusted_events(['spawn', 'reap', 'kill', 'start', 'stop', 'add', 'updated',
                      'flapping', 'flapping_giveup', 'autoscale']),
    st.builds(lambda action, pid, code: (('watcher.web.%s' % action).encode(), json.dumps(
        {'process_pid': pid, 'exit_code': code, 'time': time.time()}).encode()),
        st.sampled_from(['spawn', 'reap', 'kill', 'updated']), st.integers(1, 5),
        st.integers(-9, 3)),
    st.sampled_from(['flapping', 'flapping_giveup', 'autoscale']).map(
        lambda action: plugin_event('other', 'web', action)))


def test_junk_events_and_junk_replies_never_escape(caplog):
    caplog.set_level(logging.DEBUG, logger='circus_plugins.autoscaler')
    fake = Fake()
    fake.add('web', 1, cpu=90, autoscale_max=2)
    used = [0.0]  # CPU seconds of every process so far
    fake.read = lambda keys: {key: Usage(used[0], fake.rss) for key in keys}
    with scripted(fake, up_after=0, down_after=150, cooldown=0, call_timeout=0.01) as s:
        good = dict(s.replies)

        # Each example is a dozen round trips to the plugin thread, which wait on the
        # scheduler of a loaded machine: 300 of them took 9 s there, 16 s under more
        # load, past a test's 10 s budget; 150 take 2-5 s.
        @settings(max_examples=150, deadline=None)
        @given(st.lists(EVENTS, max_size=4), REPLIES, st.sampled_from([0, 2 ** 40]),
               st.sampled_from([0.0, 0.5, 0.9]))
        def run(given_events, replies, available, load):
            s.replies.update(replies)
            fake.available = available
            s.feed_raw(*given_events)
            for _ in range(3):
                used[0] += load * 100
                step(s, fake, seconds=100)
        run()
        assert s.escaped == []
        assert not [r for r in caplog.records if r.exc_info], 'an exception was logged'
        s.replies.update(good)  # and it still works
        fake.available = 2 ** 40
        commands(s)
        fake.resize('web', 1)
        step(s, fake, seconds=1000)  # past any flapping said of web
        for _ in range(2):
            used[0] += 0.9
            step(s, fake)
        assert ('incr', {'name': 'web', 'nb': 1}) in commands(s)


@pytest.mark.parametrize('config, says', [
    ({'min': '0'}, "option 'min': '0' is below 1"),
    ({'max': 'many'}, "option 'max': 'many' is not an integer"),
    ({'step': '0'}, "option 'step': '0' is below 1"),
    ({'cpu_high': 'inf'}, "option 'cpu_high': 'inf' is not a finite number"),
    ({'cpu_low': '-1'}, "option 'cpu_low': '-1' is below 0"),
    ({'up_after': 'soon'}, "option 'up_after': 'soon' is not a number"),
    ({'down_after': '1e9'}, "option 'down_after': '1e9' is above 604800"),
    ({'cooldown': '-5'}, "option 'cooldown': '-5' is below 0"),
    ({'memory_guard': 'maybe'}, "option 'memory_guard': 'maybe' is not a boolean"),
    ({'dry_run': '2'}, "option 'dry_run': '2' is not a boolean"),
    ({'watchers': 're:(('}, "option 'watchers'"),
    ({'min': '5', 'max': '3'}, 'options min 5 is above max 3'),
    ({'cpu_low': '70', 'cpu_high': '70'}, 'options cpu_low 70 is not below cpu_high 70'),
    ({'loop_rate': '0'}, "option 'loop_rate'"),
])
def test_bad_options_are_refused_naming_them(config, says):
    with pytest.raises(ConfigError) as raised:
        Autoscaler(*NOWHERE, 1.0, **config)
    assert str(raised.value).startswith('plugin autoscaler: ') and says in str(raised.value)


def test_without_psutil_one_line_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'psutil', None)
    with pytest.raises(PluginLoadError, match=r'plugin autoscaler needs psutil .*pip '
                                              r'install circus-plugins\[autoscale\]'):
        Autoscaler(*NOWHERE, 1.0)


# -- under a real circusd ------------------------------------------------------------------

#: A process that burns CPU while the flag file exists and sleeps otherwise. The burning
#: is done by a child it forks (the parent only waits): the autoscaler must count
#: children. With a second argument, the process exits with 1 after that many seconds,
#: and half as long again for each worker id (the third) after the first.
BURNER = r'''
import os, signal, sys, time
flag = sys.argv[1]
parent = os.getpid()
child = os.fork()
if child == 0:
    while os.getppid() == parent:
        if os.path.exists(flag):
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                pass
        else:
            time.sleep(0.05)
    os._exit(0)


def end(signum, frame):
    os.kill(child, signal.SIGKILL)
    os._exit(0)


signal.signal(signal.SIGTERM, end)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]) * (1 + (int(sys.argv[3]) - 1) / 2))
    os.kill(child, signal.SIGKILL)
    sys.exit(1)
os.waitpid(child, 0)
'''

#: Quick settings for the tests: a check every 0.2 s, 0.6 s windows; a burner is busy
#: even when it shares the two cores of a test machine with a few others, a sleeper idle.
FAST = dict(loop_rate=0.2, up_after=0.6, down_after=0.6, cooldown=0.5, cpu_high=10,
            cpu_low=3)


def burner(tmp_path, flag, die_after=None, **options):
    script = tmp_path / 'burner.py'
    script.write_text(BURNER)
    cmd = '%s %s %s' % (sys.executable, script, flag) + (
        ' %s $(circus.wid)' % die_after if die_after else '')
    return dict({'cmd': cmd, 'numprocesses': 1, 'stop_children': 'true'}, **options)


class Counts:
    """The number of processes of watchers, as seen each time :meth:`of` is asked."""

    def __init__(self, circusd):
        self.circusd = circusd
        self.seen = {}

    def of(self, watcher):
        count = len(self.circusd.pids(watcher))
        self.seen.setdefault(watcher, set()).add(count)
        return count


def run_of(plugin, watcher, which):
    """Seconds of the plugin's current run of readings ``above`` cpu_high or ``below``
    cpu_low for ``watcher`` (0 when none)."""
    def read():
        watch = plugin._watches.get(watcher)
        span = watch and getattr(watch.trend, which)()
        return span[0] if span else 0.0
    return run_on_loop(plugin.loop, read)


def decisions(collector):
    got = []
    while not collector.received.empty():
        watcher, _, body = collector.received.get_nowait()
        got.append((watcher, body['direction'], body['before'], body['after'],
                    body['dry_run']))
    return got


def test_a_busy_watcher_goes_up_to_max_in_steps_and_back_down_to_min(
        start_circusd, tmp_path, collector):
    flag = tmp_path / 'busy'
    flag.touch()
    circusd = start_circusd(watchers={
        'busy': burner(tmp_path, flag, **{'autoscale.max': 3}),
        'idle': {'cmd': 'sleep 1000', 'numprocesses': 2, 'autoscale.min': 2}})
    counts = Counts(circusd)
    with plugin_running(Autoscaler, circusd, **FAST) as plugin:
        wait_for(lambda: counts.of('busy') == 3, timeout=6, what='busy at 3')
        # Loaded for longer than up_after + cooldown at max: it would have scaled up.
        wait_for(lambda: counts.of('busy') and run_of(plugin, 'busy', 'above') >= 1.2,
                 what='a long load at max')
        assert counts.of('busy') == 3
        flag.unlink()
        wait_for(lambda: counts.of('busy') == 1, timeout=6, what='busy back at 1')
        wait_for(lambda: counts.of('busy') and run_of(plugin, 'busy', 'below') >= 1.2,
                 what='a long rest at min')
        assert counts.of('busy') == 1 and counts.of('idle') == 2
        assert run_of(plugin, 'idle', 'below') >= 1.2  # measured, idle, at its min
    assert counts.seen['busy'] == {1, 2, 3} and counts.seen['idle'] == {2}
    assert decisions(collector) == [('busy', 'up', 1, 2, False), ('busy', 'up', 2, 3, False),
                                    ('busy', 'down', 3, 2, False),
                                    ('busy', 'down', 2, 1, False)]


def test_dry_run_under_circusd_changes_nothing(start_circusd, tmp_path, collector, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins.autoscaler')
    flag = tmp_path / 'busy'
    flag.touch()
    circusd = start_circusd(watchers={'busy': burner(tmp_path, flag, **{'autoscale.max': 3})})
    counts = Counts(circusd)
    with plugin_running(Autoscaler, circusd, dry_run='true', **FAST):
        for _ in range(2):
            wait_for(lambda: counts.of('busy') and not collector.received.empty(),
                     timeout=4, what='a decision')
            assert decisions(collector) == [('busy', 'up', 1, 2, True)]
    assert counts.seen['busy'] == {1}
    assert circusd.call('get', name='busy', keys=['numprocesses'])['options'] == {
        'numprocesses': 1}
    assert caplog.text.count("'busy': dry run: would scale up from 1 to 2 processes: CPU "
                             "above cpu_high 10%") == 2


def test_a_crashing_watcher_is_left_alone(start_circusd, tmp_path, collector, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins.autoscaler')
    flag = tmp_path / 'busy'
    flag.touch()
    # Two processes burning, one crashing every second, the other every 1.5 s: some
    # process is nearly always there from one reading to the next, and would make a run
    # of more than up_after. But the first crash comes before that, and others follow.
    crasher = burner(tmp_path, flag, die_after=1, numprocesses=2, **{
        'autoscale.max': 3, 'autoscale.up_after': 1.5, 'autoscale.down_after': 2})
    circusd = start_circusd(
        watchers={'crasher': crasher, 'busy': burner(tmp_path, flag, **{'autoscale.max': 2})},
        circus={'check_delay': 0.2})
    with EventRecorder(circusd.pubsub_endpoint, b'watcher.crasher.reap') as reaps:
        with plugin_running(Autoscaler, circusd, **FAST):
            def crashes():
                reaps.poll()
                return len(reaps.events)
            wait_for(lambda: crashes() >= 3, timeout=6, what='three crashes')
            # The plugin was at work meanwhile (when busy's CPU readings make the scale-up
            # come depends on the machine's load: waited for, not assumed done by now).
            wait_for(lambda: len(circusd.pids('busy')) == 2, what='busy scaled up')
    assert [d[0] for d in decisions(collector)] == ['busy']
    assert circusd.call('get', name='crasher', keys=['numprocesses'])['options'] == {
        'numprocesses': 2}
    assert "'crasher': left alone: a process of it crashed" in caplog.text


def test_at_rest_a_check_asks_only_status_and_an_incr_once_the_options(start_circusd):
    idle = {'cmd': 'sleep 1000', 'numprocesses': 2, 'autoscale.cpu_low': 0}  # never scaled
    circusd = start_circusd(watchers={'idle': idle, 'other': {'cmd': 'sleep 1000'},
                                      'third': {'cmd': 'sleep 1000'}})
    with CommandCounter(circusd.endpoint) as counter, plugin_running(
            Autoscaler, types.SimpleNamespace(endpoint=counter.endpoint,
                                              pubsub_endpoint=circusd.pubsub_endpoint),
            **FAST) as plugin:
        def measured():
            """``(numprocesses, pids measured)`` of idle, as the plugin knows them."""
            def read():
                watch = plugin._watches.get('idle')
                return watch and watch.readings and (watch.wanted, len(watch.readings[1]))
            return run_on_loop(plugin.loop, read)

        def asked(before, checks=4):
            return asked_since(counter, before, checks)

        plugin.safety_refresh = 1e9  # its spread refresh is not what is counted here
        wait_for(lambda: measured() == (2, 2), what='idle measured')
        assert asked(counter.snapshot()) == {}       # at rest: status only
        before = counter.snapshot()
        circusd.call('incr', name='idle')                  # by an operator: spawn events
        wait_for(lambda: measured() == (3, 3), what='the incr seen')
        assert asked(before) == {'options': 1}       # idle's, once; pids from events


def test_a_plugin_section_under_circusd(start_circusd, tmp_path):
    flag = tmp_path / 'busy'
    flag.touch()
    section = dict({k: str(v) for k, v in FAST.items()},
                   use='circus_plugins.autoscaler.Autoscaler', watchers='busy')
    circusd = start_circusd(watchers={'busy': burner(tmp_path, flag, **{'numprocesses': 1}),
                                      'other': {'cmd': 'sleep 1000'}},
                            plugins={'autoscaler': section})
    wait_for(lambda: len(circusd.pids('busy')) == 2, timeout=8, what='busy scaled up')
    assert "'busy': scaling up from 1 to 2 processes" in circusd.log()
    assert len(circusd.pids('other')) == 1 and circusd.status('plugin:autoscaler') == 'active'
