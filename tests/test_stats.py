"""_stats: circusd-stats's stream messages typed, and the latest figures kept by watcher."""
import json
import math
import os
import subprocess
import sys
import time

import psutil
import pytest
from hypothesis import given, settings, strategies as st

from circus_plugins._stats import (LatestFigures, Process, ProcessStat, WatcherTotals,
                                   read_stat, to_stats_source)
from circus_plugins._usage import UsageReader, runs_here
from circus_plugins.errors import ConfigError


def message(topic, body):
    return topic.encode(), json.dumps(body).encode()


# As circusd-stats 0.19 sends them (captured, trimmed).
PROCESS = {'pid': 4242, 'cpu': 12.5, 'mem': 0.3, 'mem_info1': '17M', 'mem_info2': '25M',
           'ctime': '0:00.18', 'age': 3.2, 'create_time': 1765161000.5, 'nice': 0,
           'cmdline': 'sleep 1000', 'username': 'me', 'children': [], 'subtopic': 4242,
           'name': None}
TOTALS = {'pid': [4242, 4243], 'cpu': 6.25, 'mem': 0.6, 'age': 3.2}


def test_a_process_and_a_watchers_totals():
    assert read_stat(message('stat.web.4242', PROCESS)) == ProcessStat(
        'web', Process(4242, 12.5, 0.3, 17 << 20, ()))
    assert read_stat(message('stat.web', TOTALS)) == WatcherTotals(
        'web', (4242, 4243), 6.25, 0.6, 3.2)


def test_watcher_names_with_dots_and_digits():
    assert read_stat(message('stat.web.v2.4242', PROCESS)).watcher == 'web.v2'
    assert read_stat(message('stat.web.4242', TOTALS)) == WatcherTotals(
        'web.4242', (4242, 4243), 6.25, 0.6, 3.2)


def test_circus_own_figures_and_junk_are_ignored():
    assert read_stat(message('stat.circus.77', dict(PROCESS, pid=77, subtopic=77,
                                                    name='circusd'))) is None
    # circus's own watchers are watchers, as circusd's stats command reports them.
    assert read_stat(message('stat.circus.78', dict(PROCESS, pid=78, subtopic=78,
                                                    name='circusd-stats'))) == ProcessStat(
        'circusd-stats', Process(78, 12.5, 0.3, 17 << 20, ()))
    assert read_stat(message('stat.circus', TOTALS)) is None
    assert read_stat(message('stat.sockets.5', {'fd': 5, 'reads': 0, 'subtopic': 5})) is None
    assert read_stat(message('stat.sockets', {'reads': 0})) is None
    assert read_stat(message('watcher.web.spawn', PROCESS)) is None
    assert read_stat((b'stat.web.4242', b'{nope')) is None
    assert read_stat((b'stat.web.4242', b'\xff')) is None
    # The pid of the topic and the one of the body disagree.
    assert read_stat(message('stat.web.4242', dict(PROCESS, pid=1))) is None


def test_unreadable_figures_are_none():
    stat = read_stat(message('stat.web.4242', dict(PROCESS, cpu='N/A', mem=float('nan'),
                                                   mem_info1='N/A')))
    assert stat.process == Process(4242, None, None, None, ())
    totals = read_stat(message('stat.web', dict(TOTALS, cpu='N/A', mem='N/A', age='N/A',
                                                pid=[1, 'x', True, '7'])))
    assert totals == WatcherTotals('web', (1, 7), None, None, None)


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(['N/A', '17M', '1.5G', '12', '4242', '', 'nan', '1e999']),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=4)
_FIELDS = st.fixed_dictionaries({}, optional={
    key: _JUNK | st.just(value) for key, value in list(PROCESS.items()) + [
        ('pid', [1, 2]), ('name', 'circusd-stats')]})
_TOPICS = st.sampled_from(['stat.web', 'stat.web.4242', 'stat.a.b.4242', 'stat.', 'stat',
                           'stat.circus', 'stat.circus.4242', 'stat.sockets.3',
                           'stat.web.12']) | st.text(max_size=12)


@settings(max_examples=150, deadline=None)
@given(topic=_TOPICS, fields=_FIELDS | _JUNK)
def test_any_message_is_typed_or_ignored_never_raises(topic, fields):
    stat = read_stat((topic.encode('utf-8', 'surrogatepass'), json.dumps(fields).encode()))
    if stat is None:
        return
    assert stat.watcher and stat.watcher.split('.')[0] not in ('circus', 'sockets')
    if isinstance(stat, ProcessStat):
        process = stat.process
        assert type(process.pid) is int and topic.endswith('.%d' % process.pid)
        assert process.children == ()
        for figure in (process.cpu, process.mem):
            assert figure is None or (type(figure) in (int, float) and math.isfinite(figure))
        assert process.rss is None or (type(process.rss) is int and process.rss >= 0)
    else:
        assert all(type(pid) is int for pid in stat.pids)
        for figure in (stat.cpu, stat.mem, stat.age):
            assert figure is None or math.isfinite(figure)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_latest_figures_keep_the_last_of_each_process_and_drop_the_stale():
    clock = Clock()
    figures = LatestFigures(stale_after=5.0, clock=clock)
    assert figures.take(message('stat.web.1', dict(PROCESS, pid=1, subtopic=1))).process.pid == 1
    figures.take(message('stat.web.2', dict(PROCESS, pid=2, subtopic=2, cpu=1.0)))
    figures.take(message('stat.web.2', dict(PROCESS, pid=2, subtopic=2, cpu=2.0)))
    figures.take(message('stat.web', TOTALS))  # totals are returned, not kept
    figures.take(message('stat.circus.3', dict(PROCESS, pid=3, subtopic=3)))
    assert sorted(figures.processes('web')) == [1, 2]
    assert figures.processes('web')[2].cpu == 2.0
    assert figures.watchers() == ['web'] and figures.arrival('web', 2) == 100.0
    clock.now = 103.0
    figures.take(message('stat.web.2', dict(PROCESS, pid=2, subtopic=2)))
    clock.now = 105.5  # pid 1 not heard of for 5.5 s: gone
    assert sorted(figures.processes('web')) == [2]
    clock.now = 108.5
    assert figures.processes('web') == {} and figures.watchers() == []


def test_latest_figures_follow_reap_stop_and_remove():
    figures = LatestFigures(clock=Clock())
    for watcher, pid in (('web', 1), ('web', 2), ('db', 3)):
        figures.take(message('stat.%s.%d' % (watcher, pid), dict(PROCESS, pid=pid,
                                                                 subtopic=pid)))
    figures.handle_event('web', 'reap', 1)
    figures.handle_event('web', 'reap', 'junk')
    figures.handle_event('web', 'spawn', 2)
    assert sorted(figures.processes('web')) == [2]
    figures.handle_event('web', 'stop')
    assert figures.processes('web') == {}
    figures.handle_event('db', 'remove')
    assert figures.watchers() == []


# -- reading circusd's processes here, with psutil ----------------------------------------

def test_to_stats_source_refuses_what_a_plugin_does_not_take():
    assert to_stats_source(' PSUTIL ') == 'psutil'
    with pytest.raises(ConfigError, match="'psutil' is not one of auto, stream, poll"):
        to_stats_source('psutil', allowed=('auto', 'stream', 'poll'))


@pytest.mark.parametrize('endpoint, ssh_server, here', [
    ('tcp://127.0.0.1:5555', None, True),
    ('tcp://127.1.2.3:5555', None, True),
    ('tcp://localhost:5555', None, True),
    ('tcp://[::1]:5555', None, True),
    ('ipc:///tmp/circus.sock', None, True),
    ('tcp://127.0.0.1:5555', 'me@there', False),  # tunnelled: circusd is elsewhere
    ('tcp://10.0.0.5:5555', None, False),
    ('tcp://0.0.0.0:5555', None, False),
    ('tcp://db.example.com:5555', None, False),
    ('tcp://127.0.0.1.evil:5555', None, False),
    ('tcp://127.0.0.1', None, False),
    ('garbage', None, False),
])
def test_circusd_runs_here_only_when_it_surely_does(endpoint, ssh_server, here):
    assert runs_here(endpoint, ssh_server) is here


@given(st.text(), st.one_of(st.none(), st.text()))
def test_runs_here_takes_any_text(endpoint, ssh_server):
    assert runs_here(endpoint, ssh_server) in (True, False)


def test_figures_of_a_process_as_circusd_stats_gives_them():
    reader = UsageReader(psutil, children=True)
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        first = reader.figures([os.getpid(), 2 ** 22 + 7])
        assert set(first) == {os.getpid()} and reader.gone == {(2 ** 22 + 7, 0.0)}
        me = first[os.getpid()]
        # A process's first reading has CPU 0.0, as circusd's stats answers.
        assert me.cpu == 0.0 and 0 < me.mem < 100
        assert me.rss > 1 << 20
        assert child.pid in [c.pid for c in me.children]
        assert all(c.cpu is None and c.rss > 0 for c in me.children)
        end = time.process_time() + 0.2
        while time.process_time() < end:  # busy: CPU time to see
            pass
        assert reader.figures([os.getpid()])[os.getpid()].cpu > 10
    finally:
        child.kill()
        child.wait()
