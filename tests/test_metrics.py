"""_metrics.Snapshot without circusd: series, counters that never go back, limits, version."""
import math
import os
import subprocess
import types

import pytest
from hypothesis import example, given, settings, strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from circus_plugins.prometheus import _metrics
from circus_plugins.prometheus._metrics import REASONS, STATES, Snapshot, Usage

PROMTOOL = '/usr/bin/promtool'
PER_WATCHER = ('circus_watcher_processes', 'circus_watcher_desired_processes',
               'circus_watcher_state', 'circus_watcher_spawns_total',
               'circus_watcher_exits_total', 'circus_watcher_cpu_seconds_total',
               'circus_watcher_resident_memory_bytes')


def render(snapshot):
    return generate_latest(types.SimpleNamespace(collect=snapshot.collect))


def scrape(snapshot):
    """``{(sample name, sorted labels): value}`` of the rendered page, parsed back."""
    text = render(snapshot).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(snapshot, name, **labels):
    return scrape(snapshot).get((name, tuple(sorted(labels.items()))))


def cpu(snapshot, watcher='w'):
    return value(snapshot, 'circus_watcher_cpu_seconds_total', watcher=watcher)


def watchers_shown(snapshot):
    return {dict(labels).get('watcher') for _, labels in scrape(snapshot)} - {None}


def proc(pid, started, wid=1):
    return {'pid': pid, 'wid': wid, 'started': started, 'cmd': 'sleep'}


def poll(snapshot, processes=(), usage=None, watcher='w', state='active', desired=1):
    """One poll where ``watcher`` runs ``processes`` ((pid, started) each) alone."""
    infos = {watcher: {str(pid): proc(pid, started, wid)
                       for wid, (pid, started) in enumerate(processes, 1)}}
    snapshot.polled({watcher: state}, infos, {watcher: desired}, usage or {})


def test_up_is_0_before_any_poll_and_after_down_1_after_a_poll():
    snapshot = Snapshot()
    assert value(snapshot, 'circus_up') == 0
    poll(snapshot)
    assert value(snapshot, 'circus_up') == 1
    snapshot.down()
    assert value(snapshot, 'circus_up') == 0


def test_every_watcher_polled_has_all_its_series():
    snapshot = Snapshot()
    snapshot.polled({'a': 'active', 'b': 'stopped'}, {'a': {'7': proc(7, 100.0)}},
                    {'a': 2, 'b': 0}, {(7, 100.0): Usage(1.5, 4096)})
    page = scrape(snapshot)
    for name in ('a', 'b'):
        for metric in PER_WATCHER:
            assert any(n == metric and dict(labels)['watcher'] == name
                       for n, labels in page), (metric, name)
    assert value(snapshot, 'circus_watcher_processes', watcher='a') == 1
    assert value(snapshot, 'circus_watcher_processes', watcher='b') == 0
    assert value(snapshot, 'circus_watcher_desired_processes', watcher='a') == 2
    assert value(snapshot, 'circus_watcher_resident_memory_bytes', watcher='a') == 4096
    assert cpu(snapshot, 'a') == 1.5


def test_state_is_one_series_per_state_with_1_for_the_current_one():
    snapshot = Snapshot()
    snapshot.polled({'w': 'stopping'}, {}, {}, {})
    assert {s: value(snapshot, 'circus_watcher_state', watcher='w', state=s)
            for s in STATES} == {s: (1 if s == 'stopping' else 0) for s in STATES}


def test_unknown_state_is_all_state_series_at_0():
    snapshot = Snapshot()
    snapshot.polled({'w': 'sleeping'}, {}, {}, {})
    assert [value(snapshot, 'circus_watcher_state', watcher='w', state=s)
            for s in STATES] == [0] * len(STATES)


def test_spawns_and_exits_by_each_reason():
    snapshot = Snapshot()
    poll(snapshot)
    snapshot.spawned('w')
    snapshot.spawned('w')
    snapshot.exited('w', 'crash')
    snapshot.exited('w', 'stopped')
    snapshot.exited('w', 'stopped')
    assert value(snapshot, 'circus_watcher_spawns_total', watcher='w') == 2
    assert {r: value(snapshot, 'circus_watcher_exits_total', watcher='w', reason=r)
            for r in REASONS} == {'crash': 1, 'exit': 0, 'stopped': 2}


def test_start_time_is_per_wid_never_per_pid():
    snapshot = Snapshot()
    snapshot.polled({'w': 'active'},
                    {'w': {'11': proc(11, 100.0, 1), '12': proc(12, 200.0, 2),
                           '13': proc(13, 300.0, None)}}, {}, {})
    page = scrape(snapshot)
    started = {labels: v for (n, labels), v in page.items()
               if n == 'circus_process_start_time_seconds'}
    assert started == {(('watcher', 'w'), ('wid', '1')): 100.0,
                       (('watcher', 'w'), ('wid', '2')): 200.0}
    assert not any('pid' in dict(labels) for _, labels in page)


def test_cpu_of_a_process_that_ended_stays_in_the_total():
    snapshot = Snapshot()
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(3.0, 0)})
    assert cpu(snapshot) == 3.0
    poll(snapshot, [(11, 200.0)], {(11, 200.0): Usage(1.0, 0)})
    assert cpu(snapshot) == 4.0


def test_cpu_of_a_process_not_read_this_poll_keeps_its_last_value():
    snapshot = Snapshot()
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(3.0, 0)})
    poll(snapshot, [(10, 100.0)], {})
    assert cpu(snapshot) == 3.0
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(5.0, 0)})
    assert cpu(snapshot) == 5.0  # not counted twice


def test_cpu_of_a_reused_pid_counts_as_a_new_process():
    snapshot = Snapshot()
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(3.0, 0)})
    assert cpu(snapshot) == 3.0
    poll(snapshot, [(10, 200.0)], {(10, 200.0): Usage(1.0, 0)})
    assert cpu(snapshot) == 4.0


def test_cpu_total_shown_never_goes_lower_when_usage_drops():
    snapshot = Snapshot()
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(5.0, 0)})
    assert cpu(snapshot) == 5.0
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(2.0, 0)})
    assert cpu(snapshot) == 5.0
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(6.0, 0)})
    assert cpu(snapshot) == 6.0


def test_watcher_missing_from_a_poll_has_no_series():
    snapshot = Snapshot()
    snapshot.polled({'a': 'active', 'b': 'active'}, {}, {}, {})
    assert watchers_shown(snapshot) == {'a', 'b'}
    snapshot.polled({'a': 'active'}, {}, {}, {})
    assert watchers_shown(snapshot) == {'a'}


def test_watcher_removed_and_back_continues_its_counters():
    snapshot = Snapshot()
    poll(snapshot, [(10, 100.0)], {(10, 100.0): Usage(3.0, 0)}, watcher='b')
    snapshot.spawned('b')
    snapshot.exited('b', 'crash')
    snapshot.polled({'a': 'active'}, {}, {}, {})
    snapshot.spawned('b')  # while away
    snapshot.exited('b', 'crash')
    assert watchers_shown(snapshot) == {'a'}
    poll(snapshot, [(20, 300.0)], {(20, 300.0): Usage(1.0, 0)}, watcher='b')
    assert value(snapshot, 'circus_watcher_spawns_total', watcher='b') == 2
    assert value(snapshot, 'circus_watcher_exits_total', watcher='b', reason='crash') == 2
    assert cpu(snapshot, 'b') == 4.0


def test_events_before_a_poll_show_no_series_but_count():
    snapshot = Snapshot()
    snapshot.spawned('w')
    assert watchers_shown(snapshot) == set()
    poll(snapshot)
    assert value(snapshot, 'circus_watcher_spawns_total', watcher='w') == 1


def test_plugin_actions_count_by_plugin_action_and_watcher():
    snapshot = Snapshot()
    snapshot.plugin_action('flapping', 'stop', 'a')
    snapshot.plugin_action('flapping', 'stop', 'a')
    snapshot.plugin_action('flapping', 'stop', 'b')
    snapshot.plugin_action('watchdog', 'kill', 'a')
    actions = {labels: v for (n, labels), v in scrape(snapshot).items()
               if n == 'circus_plugin_actions_total'}
    assert {tuple(v for _, v in labels): count for labels, count in actions.items()} == {
        ('stop', 'flapping', 'a'): 2, ('stop', 'flapping', 'b'): 1,
        ('kill', 'watchdog', 'a'): 1}


def test_plugin_actions_stop_adding_keys_at_most_actions(monkeypatch):
    monkeypatch.setattr(_metrics, 'MOST_ACTIONS', 2)
    snapshot = Snapshot()
    for watcher in ('a', 'b', 'c', 'a'):
        snapshot.plugin_action('p', 'stop', watcher)
    assert {w: value(snapshot, 'circus_plugin_actions_total', plugin='p', action='stop',
                     watcher=w) for w in 'abc'} == {'a': 2, 'b': 1, 'c': None}


def test_watchers_beyond_most_watchers_evict_removed_ones_first(monkeypatch):
    monkeypatch.setattr(_metrics, 'MOST_WATCHERS', 2)
    snapshot = Snapshot()
    snapshot.spawned('a')
    snapshot.polled({'a': 'active', 'b': 'active'}, {}, {}, {})
    snapshot.polled({'a': 'active'}, {}, {}, {})  # b removed
    snapshot.spawned('c')
    assert set(snapshot.watchers) == {'a', 'c'}
    snapshot.polled({'a': 'active', 'c': 'active'}, {}, {}, {})
    assert value(snapshot, 'circus_watcher_spawns_total', watcher='a') == 1
    assert value(snapshot, 'circus_watcher_spawns_total', watcher='c') == 1


def test_version_bumps_on_each_change():
    snapshot = Snapshot()
    seen = [snapshot.version]
    for change in (lambda: poll(snapshot), lambda: snapshot.spawned('w'),
                   lambda: snapshot.exited('w', 'exit'), lambda: snapshot.down(),
                   lambda: snapshot.plugin_action('p', 'stop', 'w'), lambda: poll(snapshot)):
        change()
        assert snapshot.version > seen[-1]
        seen.append(snapshot.version)


def test_version_stays_when_nothing_changes(monkeypatch):
    monkeypatch.setattr(_metrics, 'MOST_ACTIONS', 1)
    snapshot = Snapshot()
    snapshot.down()  # never up: nothing changes
    assert snapshot.version == 0
    poll(snapshot)
    snapshot.plugin_action('p', 'stop', 'a')
    snapshot.down()
    version = snapshot.version
    snapshot.down()
    snapshot.plugin_action('p', 'stop', 'b')  # not counted
    render(snapshot)
    render(snapshot)
    assert snapshot.version == version


def _junk_number():
    return st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                     st.sampled_from([-1, 0, 10 ** 400, -10 ** 400, math.nan, math.inf]))


def _junk():
    return st.one_of(_junk_number(), st.text(max_size=5),
                     st.lists(st.integers(), max_size=2), st.dictionaries(
                         st.text(max_size=3), st.integers(), max_size=2))


# Few names, pids and start times, so that statuses, infos, desired and usage meet.
_NAMES = st.sampled_from(['a', 'b', '', 'c"\\\n'])
_STARTED = st.one_of(st.sampled_from([0.0, 100.0]), _junk_number())
_PIDS = st.one_of(st.integers(-2, 12).map(str), st.text(max_size=4),
                  st.sampled_from(['1e3', ' 7', '2147483648']))
_PROCESS = st.one_of(_junk(), st.fixed_dictionaries(
    {}, optional={'pid': _junk(), 'wid': _junk_number(), 'started': _STARTED}))
_POLL = st.tuples(
    st.dictionaries(_NAMES, st.one_of(st.sampled_from(STATES), _junk()), max_size=3),
    st.dictionaries(_NAMES, st.one_of(_junk(), st.dictionaries(_PIDS, _PROCESS, max_size=3)),
                    max_size=3),
    st.dictionaries(_NAMES, _junk(), max_size=3),
    st.dictionaries(st.tuples(st.integers(-1, 12), _STARTED), st.builds(
        Usage, st.floats(), st.integers(-2 ** 63, 2 ** 63)), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(_POLL, min_size=1, max_size=3))
@example([({'a': 'active'}, {'a': {'1': {'wid': 10 ** 400, 'started': 10 ** 400}}},
           {'a': 10 ** 400}, {})])
@example([({'a': None}, {'a': {'1': 'gone', '2': 3, 'x': {}}}, {'a': 'two'}, {})])
def test_junk_polls_never_raise_and_the_page_parses(polls):
    snapshot = Snapshot()
    for statuses, infos, desired, usage in polls:
        snapshot.polled(statuses, infos, desired, usage)
        families = list(text_string_to_metric_families(render(snapshot).decode()))
        assert families[0].samples[0].value == 1  # circus_up


@pytest.mark.skipif(not os.path.exists(PROMTOOL), reason='no %s' % PROMTOOL)
def test_promtool_finds_no_problem_in_a_page():
    snapshot = Snapshot()
    snapshot.polled({'a': 'active', 'b': 'stopped', 'c"\\\n': 'odd'},
                    {'a': {'7': proc(7, 100.0, 1), '8': proc(8, 101.0, 2)}},
                    {'a': 2, 'b': 0}, {(7, 100.0): Usage(1.5, 4096)})
    snapshot.spawned('a')
    snapshot.exited('a', 'crash')
    snapshot.plugin_action('flapping', 'stop', 'a')
    done = subprocess.run([PROMTOOL, 'check', 'metrics'], input=render(snapshot),
                          capture_output=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, b'')


def test_a_poll_without_stats_keeps_the_processes_and_their_cpu_once():
    snapshot = Snapshot()
    poll(snapshot, [(10, 1.0)], {(10, 1.0): Usage(10.0, 4096)})
    snapshot.polled({'w': 'active'}, {}, {'w': 1}, {})  # stats failed: nothing known
    assert cpu(snapshot) == 10.0
    assert value(snapshot, 'circus_watcher_processes', watcher='w') == 1
    poll(snapshot, [(10, 1.0)], {(10, 1.0): Usage(11.0, 4096)})
    assert cpu(snapshot) == 11.0  # not 21: the process was not taken for ended


def test_a_poll_that_changes_nothing_keeps_the_version():
    snapshot = Snapshot()
    poll(snapshot, [(10, 1.0)], {(10, 1.0): Usage(2.0, 4096)})
    version = snapshot.version
    poll(snapshot, [(10, 1.0)], {(10, 1.0): Usage(2.0, 4096)})
    assert snapshot.version == version          # the cached page is still right
    poll(snapshot, [(10, 1.0)], {(10, 1.0): Usage(2.5, 4096)})
    assert snapshot.version > version           # CPU moved: render again
    version = snapshot.version
    poll(snapshot, [(10, 1.0)], {(10, 1.0): Usage(2.5, 4096)}, state='stopping')
    assert snapshot.version > version
