"""The storm-control rules of circus_plugins.alerts._grouping, on a fake clock (plain floats)."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from circus_plugins.alerts._grouping import Grouper, Item


def crash(w, t, n=None):
    return Item(w, 'crash', float(t), {'n': n})


def run(g, until):
    """Call due() at every time next_wakeup() names, up to ``until``; the messages."""
    out = []
    for _ in range(10000):
        wake = g.next_wakeup(until)
        if wake is None or wake > until:
            return out
        out += g.due(wake)
    raise AssertionError('the grouper never falls quiet')


def test_first_message_waits_group_wait_with_what_came_meanwhile():
    g = Grouper(group_wait=10)
    g.add(crash('web', 100))
    g.add(Item('web', 'resource_restart', 104.0, {'rss': 1}))
    assert g.next_wakeup(100) == 110
    assert g.due(109.9) == []
    [m] = g.due(110)
    assert [i.time for i in m.items] == [100, 104] and m.kinds == ('crash', 'resource_restart')
    assert (m.first, m.last, m.since, m.at, m.repeat, m.recovery) == (100, 104, 100, 110, False, False)


def test_later_items_fold_into_one_message_per_group_interval():
    g = Grouper(group_wait=10, group_interval=300, recovery_after=1000)
    g.add(crash('web', 0))
    assert len(g.due(10)) == 1
    for t in range(11, 200):
        g.add(crash('web', t))
    assert g.due(309) == [] and g.next_wakeup(309) == 310
    [m] = g.due(310)
    assert m.counts == {'crash': 189} and m.totals == {'crash': 190} and m.first == 11


def test_a_message_lists_max_events_and_counts_the_rest_keeping_no_more():
    g = Grouper(group_wait=10, max_events=3)
    for t in range(7):
        g.add(crash('web', t, n=t))
    assert len(g._episodes['web'].items) == 3
    [m] = g.due(10)
    assert [i.facts['n'] for i in m.items] == [0, 1, 2] and m.left_out == 4
    assert m.counts == {'crash': 7} and m.last == 6


def test_an_unresolved_problem_is_repeated_every_repeat_interval():
    g = Grouper(group_wait=10, group_interval=300, repeat_interval=3600)
    g.add(Item('web', 'flapping_giveup', 0.0))
    assert len(g.due(10)) == 1
    assert g.next_wakeup(10) == 3610 and g.due(3609) == []
    [m] = g.due(3610)
    assert m.repeat and m.items == () and m.totals == {'flapping_giveup': 1}
    assert m.kinds == ('flapping_giveup',) and g.next_wakeup(3610) == 7210


def test_recovery_after_running_quietly_then_a_fresh_start():
    g = Grouper(group_wait=10, group_interval=60, recovery_after=60)
    for t in (0, 5):
        g.add(crash('web', t))
    assert len(g.due(10)) == 1
    g.add(crash('web', 20))
    assert g.next_wakeup(10) == 70
    assert len(g.due(70)) == 1               # the crash at 20
    assert g.next_wakeup(70) == 80           # 60 s after the last crash
    [m] = g.due(80)
    assert m.recovery and m.down_for == 20 and m.totals == {'crash': 3} and m.since == 0
    assert g.next_wakeup(80) is None and 'web' not in g._episodes
    g.add(crash('web', 1000))
    assert g.next_wakeup(1000) == 1010       # group_wait again, not group_interval


def test_a_down_watcher_recovers_only_once_it_runs_again():
    g = Grouper(group_wait=10, recovery_after=60, repeat_interval=3600)
    g.add(crash('web', 0))
    g.add(Item('web', 'flapping_giveup', 3.0))
    assert len(g.due(10)) == 1
    assert g.due(1000) == []
    g.resumed('web', 2000)
    assert g.next_wakeup(2000) == 2060
    [m] = g.due(2060)
    assert m.recovery and m.down_for == 2000 and m.totals == {'crash': 1, 'flapping_giveup': 1}


def test_muted_items_are_dropped_counted_and_told_in_the_next_message():
    g = Grouper(group_wait=10)
    g.add(crash('web', 0))
    g.mute('web', until=100)                 # ends the episode: its item counts as muted
    assert g.next_wakeup(1) is None
    g.add(crash('web', 50))
    assert g.untold('web') == 2 and g.due(1000) == []
    g.add(crash('web', 100))                 # the mute is over
    [m] = g.due(110)
    assert m.muted == 2 and len(m.items) == 1 and g.untold('web') == 0
    assert [m.recovery for m in run(g, 1e6)] == [True]
    g.mute('db')                             # indefinitely
    g.add(crash('db', 1e9))
    assert g.is_muted('db', 1e12) and g.next_wakeup(1e9) is None
    g.unmute('db')
    assert not g.is_muted('db', 1e9)


def test_watchers_are_independent_and_due_names_them_in_order():
    g = Grouper(group_wait=10)
    g.add(crash('b', 0))
    g.add(crash('a', 1))
    assert [m.watcher for m in g.due(11)] == ['a', 'b']


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Grouper(group_interval=600, repeat_interval=300)
    with pytest.raises(ValueError):
        Grouper(max_events=0)


def test_the_storm_of_the_issue_is_twelve_messages_per_watcher():
    """20 watchers crash every second for 10 minutes (t = 0 .. 599). Per watcher: the
    first message at 10, then one every 60 s while crashes come (70 .. 550: 9 more), one at
    610 for the crashes of 551 .. 599, and the recovery at 599 + 30: 12, so 240 in all
    for 12000 crashes."""
    g = Grouper(group_wait=10, group_interval=60, repeat_interval=600, recovery_after=30)
    msgs = []
    for t in range(600):
        msgs += run(g, t - 0.5)
        for w in range(20):
            g.add(crash('w%d' % w, t))
        msgs += g.due(t)
    msgs += run(g, 1e6)
    assert len(msgs) == 240
    for w in range(20):
        mine = [m for m in msgs if m.watcher == 'w%d' % w]
        assert [m.at for m in mine] == [10 + 60 * k for k in range(11)] + [629]
        assert sum(len(m.items) + m.left_out for m in mine) == 600
        assert mine[-1].recovery and mine[-1].totals == {'crash': 600}
        assert max(len(m.items) for m in mine) == 50


W = ['a', 'b', 'c']
op = st.one_of(
    st.tuples(st.just('item'), st.sampled_from(W), st.sampled_from(
        ['crash', 'crash', 'resource_restart', 'flapping_giveup', 'stopped'])),
    st.tuples(st.just('resumed'), st.sampled_from(W), st.none()),
    st.tuples(st.just('ended'), st.sampled_from(W), st.none()),
    st.tuples(st.just('mute'), st.sampled_from(W), st.sampled_from([None, 15.0, 200.0])),
    st.tuples(st.just('unmute'), st.sampled_from(W), st.none()))
step = st.tuples(st.one_of(st.integers(0, 120).map(float), st.floats(0, 400)), op)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=60))
def test_nothing_is_lost_order_kept_and_messages_bounded(steps):
    gi, ri = 20.0, 100.0
    g = Grouper(group_wait=5, group_interval=gi, repeat_interval=ri, recovery_after=30,
                max_events=3)
    t, msgs, added = 0.0, [], {w: 0 for w in W}
    ends = {w: [] for w in W}  # when each watcher's episode was ended by an operator
    for dt, (what, w, arg) in steps:
        t += dt
        msgs += run(g, t)
        if what == 'item':
            g.add(Item(w, arg, t, {'id': len(msgs) * 1000 + sum(added.values())}))
            added[w] += 1
        elif what == 'resumed':
            g.resumed(w, t)
        elif what == 'ended':
            g.ended(w, t)
            ends[w].append(t)
        elif what == 'mute':
            g.mute(w, math.inf if arg is None else t + arg)
        else:
            g.unmute(w)
        msgs += g.due(t)
    for w in W:
        g.unmute(w)
        g.resumed(w, t)
    msgs += run(g, math.inf)
    assert g.next_wakeup(t) is None
    ids = [i.facts['id'] for m in msgs for i in m.items]
    assert len(ids) == len(set(ids))                          # listed at most once
    for w in W:
        mine = [m for m in msgs if m.watcher == w]
        told = sum(len(m.items) + m.left_out + m.muted for m in mine)
        assert told + g.untold(w) == added[w]                 # nothing silently lost
        assert all(len(m.items) <= 3 for m in mine)
        ats = [m.at for m in mine]
        assert ats == sorted(ats)
        assert all(i.time <= m.at for m in mine for i in m.items)
        for k, m in enumerate(mine):
            for window in (0.0, gi / 2, gi, 3 * gi, ri, 1e4):
                inside = [n for n in mine[k:] if n.at <= m.at + window]
                # an episode ended by an operator, like a recovery, starts a fresh one
                fresh = sum(n.recovery for n in inside) + sum(
                    m.at <= e <= m.at + window for e in ends[w])
                assert len(inside) <= 1 + window // gi + 2 * fresh


def test_repeats_come_before_a_recovery_that_is_further_off():
    g = Grouper(group_wait=10, group_interval=100, repeat_interval=100, recovery_after=250)
    g.add(crash('web', 0))
    assert [(m.at, m.repeat, m.recovery) for m in run(g, 1e6)] == [
        (10, False, False), (110, True, False), (210, True, False), (250, False, True)]


def test_an_operator_ends_an_episode_after_its_pending_news_without_recovery():
    g = Grouper(group_wait=10, group_interval=100, repeat_interval=100, recovery_after=30)
    g.add(crash('web', 0))
    g.ended('web', 2.0)                      # stopped by hand: what is pending still goes
    [m] = g.due(10)
    assert m.kinds == ('crash',) and not m.repeat
    assert run(g, 1e6) == [] and g.next_wakeup(0) is None   # no repeat, no recovery
    g.add(crash('web', 50))                  # then a new episode, its own group_wait
    g.ended('web', 51)
    g.add(crash('web', 52))                  # a new item keeps the episode going
    assert [(m.at, m.counts, m.recovery) for m in run(g, 1e6)] == [
        (60, {'crash': 2}, False), (82, {}, True)]


def test_the_stop_that_put_a_watcher_down_does_not_end_its_episode():
    g = Grouper(group_wait=10, group_interval=100, repeat_interval=100, recovery_after=30)
    g.add(Item('web', 'flapping_giveup', 0.0))   # told before circusd's stop event came
    g.ended('web', 1.0)
    assert [(m.at, m.repeat) for m in run(g, 250)] == [(10, False), (110, True), (210, True)]
