"""A grouped message put into words: notices and mails (circus_plugins.alerts._alert_text)."""
import dataclasses
import time

import pytest
from hypothesis import given, settings, strategies as st

from circus_plugins.alerts._alert_text import KINDS, duration, mail_for, notice_for, notice_for_many
from circus_plugins.alerts._grouping import Item, Message
from circus_plugins.alerts._webhook import Notice

WALL, MONO = 1700000000.0, 5000.0  # the same moment on the wall clock and the monotonic one


def wall(mono):
    return WALL - (MONO - mono)


def clock(when, date=False):
    return time.strftime('%Y-%m-%d %H:%M:%S %Z' if date else '%H:%M:%S', time.localtime(when))


def crash(mono, **facts):
    return Item('web', 'crash', mono, dict(time=wall(mono), **facts))


def news(*items, left_out=0, since=None, muted=0):
    counts = {}
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    if left_out:
        counts[items[-1].kind] += left_out
    first, last = items[0].time, items[-1].time
    return Message('web', MONO, items=tuple(items), left_out=left_out, counts=counts,
                   first=first, last=last, since=first if since is None else since,
                   totals=dict(counts), muted=muted)


def notice(message):
    return notice_for(message, 'web1', WALL, MONO)


@pytest.mark.parametrize('seconds, said', [
    (None, 'unknown'), (0.44, '0.4 s'), (-5, '0.0 s'), (9.94, '9.9 s'), (45, '45 s'),
    (59.6, '1 min'), (60, '1 min'), (200, '3 min 20 s'), (3600, '1 h'), (7500, '2 h 5 min'),
    (86400, '1 d'), (3 * 86400 + 4 * 3600 + 59, '3 d 4 h'),
    (float('inf'), 'unknown'), (float('nan'), 'unknown'), (10 ** 400, 'unknown'),
    ('soon', 'unknown')])
def test_duration(seconds, said):
    assert duration(seconds) == said


def test_crashes_say_how_many_when_and_how_each_ended_and_the_last_output():
    m = news(crash(4900, pid=101, exit_code=1, ran_for=3.5, output=['old'],
                   output_from='stderr /var/log/web.err'),
             crash(4930, pid=102, signal='SIGKILL', ran_for=125,
                   output=['Traceback', 'ValueError: boom'], output_from='stderr /var/log/web.err'),
             crash(4960, pid=103, exit_code=2, ran_for=0.2),
             since=4800)
    n = notice(m)
    assert (n.title, n.kind, n.watcher) == ('web crashed 3 times', 'crash', 'web')
    assert n.facts == [
        ('host', 'web1'), ('watcher', 'web'), ('events', '3 crash'),
        ('between', '%s and %s' % (clock(wall(4900)), clock(wall(4960)))),
        ('problem since', clock(wall(4800), date=True)),
        ('output of', 'pid 102, stderr /var/log/web.err')]
    assert n.text.split('\n') == [
        '%s crashed: pid 101, exit code 1, ran 3.5 s' % clock(wall(4900)),
        '%s crashed: pid 102, killed by SIGKILL, ran 2 min 5 s' % clock(wall(4930)),
        '%s crashed: pid 103, exit code 2, ran 0.2 s' % clock(wall(4960))]
    assert n.output == ['Traceback', 'ValueError: boom']


def test_one_crash_without_output_shows_why_as_a_fact():
    n = notice(news(crash(4900, pid=7, exit_code=None, output_note='nothing written to /x.log')))
    assert n.title == 'web crashed'
    assert n.facts == [('host', 'web1'), ('watcher', 'web'), ('events', '1 crash'),
                       ('output', 'nothing written to /x.log')]
    assert n.text == '%s crashed: pid 7, exit status unknown' % clock(wall(4900))
    assert n.output == []


def test_events_beyond_those_listed_are_counted_in_a_last_line():
    n = notice(news(crash(4900, pid=1, exit_code=1), left_out=4))
    assert n.title == 'web crashed 5 times' and ('events', '5 crash') in n.facts
    assert n.text.split('\n')[-1] == '... and 4 more event(s) not listed'


def test_a_plugin_made_item_shows_its_plugin_and_details_and_the_worst_kind_wins():
    giveup = Item('web', 'flapping_giveup', 4950, {
        'time': wall(4950), 'plugin': 'flapping', 'details': {'deaths': 5, 'window': 60}})
    n = notice(news(crash(4900, pid=1, exit_code=1), giveup))
    assert n.title == 'web stopped for good: it kept crashing (flapping)'
    assert n.kind == 'flapping_giveup' and ('events', '1 crash, 1 flapping_giveup') in n.facts
    assert n.text.split('\n')[1] == (
        '%s stopped for good: it kept crashing (flapping) (flapping: deaths=5, window=60)'
        % clock(wall(4950)))


def test_a_repeat_says_the_problem_is_not_resolved():
    m = Message('web', MONO, since=4000, totals={'crash': 7, 'flapping_giveup': 1}, repeat=True)
    n = notice(m)
    assert n.title == 'web still not resolved: stopped for good: it kept crashing (flapping)'
    assert n.kind == 'repeat'
    assert n.facts == [('host', 'web1'), ('watcher', 'web'),
                       ('since', clock(wall(4000), date=True)),
                       ('events', '7 crash, 1 flapping_giveup')]
    assert n.text == 'Nothing new since the last alert; the problem is not resolved.'


def test_a_recovery_says_how_long_the_watcher_was_down():
    m = Message('web', MONO, since=4000, totals={'crash': 3}, recovery=True, down_for=200)
    n = notice(m)
    assert (n.title, n.kind) == ('web recovered', 'recovered')
    assert n.facts == [('host', 'web1'), ('watcher', 'web'), ('down for', '3 min 20 s'),
                       ('since', clock(wall(4000), date=True)), ('events', '3 crash')]
    assert n.text == 'It has run without a new problem since.'


def test_events_dropped_while_muted_are_a_last_fact():
    assert notice(news(crash(4900), muted=4)).facts[-1] == (
        'muted', '4 event(s) dropped while muted')
    assert notice(Message('web', MONO, totals={'crash': 1}, repeat=True, muted=2)).facts[-1] == (
        'muted', '2 event(s) dropped while muted')
    assert 'muted' not in dict(notice(news(crash(4900))).facts)


def test_a_mail_is_the_title_aligned_facts_the_events_and_indented_output():
    n = Notice(title='web crashed', facts=[('host', 'web1'), ('problem since', 'today')],
               text='first event\nsecond event', output=['Traceback', '  boom'])
    assert mail_for(n) == ('web crashed', (
        'web crashed\n'
        '\n'
        'host         : web1\n'
        'problem since: today\n'
        '\n'
        'first event\n'
        'second event\n'
        '\n'
        'Last output:\n'
        '    Traceback\n'
        '      boom\n'
        '\n'
        '-- \n'
        'circus-plugins alerts\n'))


def test_a_mail_tells_dropped_alerts_only_when_there_are_some():
    n = Notice(title='web recovered', facts=[('host', 'web1')])
    assert mail_for(n, dropped=3)[1] == (
        'web recovered\n\nhost: web1\n\n'
        '(3 earlier alert(s) dropped: too many to send)\n\n-- \ncircus-plugins alerts\n')
    assert mail_for(n, dropped=0)[1] == 'web recovered\n\nhost: web1\n\n-- \ncircus-plugins alerts\n'


def test_a_mail_has_the_notice_title_as_subject():
    n = notice(news(crash(4900, pid=1, exit_code=1), crash(4901, pid=2, exit_code=1)))
    subject, body = mail_for(n)
    assert subject == 'web crashed 2 times' and body.startswith(subject + '\n\n')


ODD = st.one_of(st.none(), st.text(max_size=30), st.integers(), st.integers(10 ** 300),
                st.floats(), st.booleans())
FACTS = st.fixed_dictionaries({}, optional={
    key: ODD for key in ('time', 'pid', 'exit_code', 'signal', 'ran_for', 'output_from',
                         'output_note', 'plugin')}).flatmap(
    lambda facts: st.fixed_dictionaries({}, optional={
        'output': st.lists(st.text(max_size=20), max_size=3),
        'details': st.one_of(ODD, st.dictionaries(st.text(max_size=10), ODD, max_size=3)),
    }).map(lambda more: dict(facts, **more)))


@settings(max_examples=300, deadline=None)
@given(watcher=st.text(max_size=30),
       items=st.lists(st.tuples(st.sampled_from(KINDS) | st.text(max_size=10), st.floats(),
                                FACTS), max_size=4),
       times=st.tuples(st.floats(), st.floats(), st.floats()),
       flag=st.sampled_from(['news', 'repeat', 'recovery']), down_for=ODD,
       left_out=st.integers(0, 10 ** 20), muted=st.integers(0, 10 ** 20),
       dropped=st.integers(0, 10 ** 20))
def test_odd_names_and_facts_never_make_a_notice_or_mail_raise(
        watcher, items, times, flag, down_for, left_out, muted, dropped):
    listed = tuple(Item(watcher, kind, when, facts) for kind, when, facts in items)
    counts = {}
    for item in listed:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    since, first, last = times
    m = Message(watcher, MONO, items=listed, left_out=left_out, counts=counts, first=first,
                last=last, since=since, totals=dict(counts), repeat=flag == 'repeat',
                recovery=flag == 'recovery', down_for=down_for, muted=muted)
    n = notice_for(m, 'web1', WALL, MONO)
    subject, body = mail_for(n, dropped)
    assert subject == n.title and body.startswith(n.title)


def test_many_watchers_due_together_are_one_notice_worst_first():
    crashed = notice(dataclasses.replace(news(Item('db', 'crash', MONO - 5, {
        'time': WALL - 5, 'pid': 1, 'exit_code': 1})), watcher='db'))
    gaveup = notice(news(Item('web', 'flapping_giveup', MONO - 3,
                              {'time': WALL - 3, 'plugin': 'flapping', 'details': {}})))
    recovered = notice(Message('api', MONO, since=MONO - 90, totals={'crash': 4},
                               recovery=True, down_for=30.0))
    many = notice_for_many([crashed, recovered, gaveup], 'web1')
    assert many.title == '3 watchers: db, api, web'
    assert many.kind == 'flapping_giveup' and many.watcher is None and many.output == []
    assert many.text.splitlines() == [
        gaveup.title + ' (1 flapping_giveup)', crashed.title + ' (1 crash)',
        recovered.title + ' (4 crash)']
    assert dict(many.facts) == {'host': 'web1', 'watchers': '3'}


def test_an_earlier_crashs_output_is_shown_when_the_latest_has_none():
    m = news(Item('web', 'crash', MONO - 5, {'time': WALL - 5, 'pid': 1, 'exit_code': 1,
                                             'output': ['boom'], 'output_from': 'stdout f'}),
             Item('web', 'crash', MONO - 4, {'time': WALL - 4, 'pid': 2, 'exit_code': 1,
                                             'output_note': 'cannot read f: gone'}))
    n = notice(m)
    assert n.output == ['boom'] and dict(n.facts)['output of'] == 'pid 1, stdout f'
