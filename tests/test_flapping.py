"""The flapping plugin: its rules with a scripted circusd, and its effect on a real one."""
import json
import logging
import time

import pytest

from circus_plugins import ConfigError
from circus_plugins import events
from circus_plugins.flapping import Flapping
from circus_plugins.testing import EventRecorder, PluginProcess, ScriptedCircusd, \
    wait_connected, wait_for


NOWHERE = ('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2')


def scripted(options=None, check_delay=0.0, **config):
    """A Flapping plugin and a scripted circusd whose watchers have ``options``; the
    ``options`` questions are answered, not recorded. Its ``window`` is a minute unless
    given: deaths fed one after another are in one window however slow the machine,
    and a watcher restarted by the plugin is not yet stable again when it dies."""
    config.setdefault('window', '60')
    reply = {'status': 'ok', 'options': dict(options or {})}
    return ScriptedCircusd(Flapping(*NOWHERE, check_delay, **config), {'options': reply},
                           ignore=['options'])


def reaps(circusd, watcher, count):
    for _ in range(count):
        circusd.feed(watcher, 'reap', process_pid=1, exit_code=1)


def retry_pending(circusd, watcher):
    return circusd.on_loop(lambda: circusd.plugin.watches[watcher].retry is not None)


STOP, START = ('stop', {'name': 'web'}), ('start', {'name': 'web'})


def test_defaults_and_bad_options():
    plugin = Flapping('e', 'p', 5.0)
    assert (plugin.attempts, plugin.window, plugin.retry_in, plugin.max_retry,
            plugin.active) == (2, 1.0, 7.0, 5, True)
    for bad in ({'attempts': 'two'}, {'window': '-1'}, {'max_retry': '-2'},
                {'retry_in': 'soon'}):
        with pytest.raises(ConfigError, match='flapping.*%s' % list(bad)[0]):
            Flapping('e', 'p', 5.0, **bad)


def test_flapping_stops_retries_and_gives_up():
    with scripted(attempts='3', retry_in='0.3', max_retry='1') as s:
        reaps(s, 'web', 2)
        assert s.no_command()
        before = time.monotonic()  # the retry's timer cannot start before this reap
        reaps(s, 'web', 1)
        assert s.next_command(timeout=0) == STOP
        s.feed('web', 'stop')
        # After retry_in, never before; well before the default retry_in (7 s).
        assert s.next_command(timeout=5) == START
        assert 0.3 <= time.monotonic() - before
        s.feed('web', 'start')
        reaps(s, 'web', 3)
        assert s.next_command(timeout=0) == STOP  # max_retry reached: for good
        assert not retry_pending(s, 'web')
        s.elapse(0.4)
        assert s.no_command() and s.escaped == []


def test_retries_and_the_give_up_are_announced(collector):
    with scripted(attempts='2', retry_in='0.05', max_retry='2') as s:
        before = time.time()
        for attempt in (1, 2):
            reaps(s, 'web', 2)
            assert s.next_command(timeout=0) == STOP
            watcher, action, body = collector.next_event()
            assert (watcher, action) == ('web', 'flapping')
            assert before <= body.pop('time') <= time.time()
            assert body == {'plugin': 'flapping', 'retry_in': 0.05, 'attempt': attempt,
                            'max_retry': 2}
            assert s.next_command() == START
            s.feed('web', 'start')
        reaps(s, 'web', 2)
        assert s.next_command(timeout=0) == STOP
        watcher, action, body = collector.next_event()
        assert (watcher, action) == ('web', 'flapping_giveup')
        assert before <= body.pop('time') <= time.time()
        assert body == {'plugin': 'flapping', 'attempts': 2, 'max_retry': 2}
        assert collector.none_yet()


def test_a_stop_circusd_refused_is_not_announced(collector):
    for max_retry in ('1', '0'):  # a retry, and a give-up
        with scripted(max_retry=max_retry) as s:
            s.replies['stop'] = {'status': 'error', 'errno': 3, 'reason': 'no such watcher'}
            reaps(s, 'web', 2)
            assert s.next_command(timeout=0) == STOP
            assert collector.none_yet()


def test_plugin_made_events_are_not_circusds(collector, caplog):
    """Another plugin's events (here: reaps, as a plugin could name an action) are not
    deaths, and not warned about."""
    with scripted() as s:
        for pid in (1, 2, 3):
            s.feed_raw((b'plugin.web.reap', json.dumps(
                {'plugin': 'other', 'process_pid': pid, 'time': time.time()}).encode()))
        assert s.no_command()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        reaps(s, 'web', 2)
        assert s.next_command(timeout=0) == STOP


def test_deaths_spread_over_more_than_the_window_are_not_flapping():
    with scripted(attempts='2', window='0.1') as s:
        now = time.time()
        s.feed('web', 'reap', process_pid=1, time=now - 1)
        s.feed('web', 'reap', process_pid=2, time=now)
        assert s.no_command()
        s.feed('web', 'reap', process_pid=3, time=now + 0.05)  # within the window
        assert s.next_command(timeout=0) == STOP


def test_a_stop_by_someone_else_cancels_the_retry(caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    with scripted(retry_in='0.3') as s:
        reaps(s, 'web', 2)
        assert s.next_command(timeout=0) == STOP
        s.feed('web', 'stop')   # ours
        assert retry_pending(s, 'web')
        s.feed('web', 'stop')   # the operator's
        assert 'web: stop by someone else: cancelled our restart' in caplog.text
        s.elapse(0.4)
        assert s.no_command()


def test_max_retry_minus_one_retries_forever():
    with scripted(retry_in='0.05', max_retry='-1') as s:
        for _ in range(4):
            reaps(s, 'web', 2)
            assert s.next_command(timeout=0) == STOP
            assert s.next_command() == START
            s.settle()


def test_watcher_options_override_and_refresh_on_update(caplog):
    with scripted({'flapping.attempts': '3', 'flapping.max_retry': '0',
                   'flapping.window': 'wide'}) as s:
        reaps(s, 'web', 2)
        assert s.no_command()
        reaps(s, 'web', 1)
        assert s.next_command(timeout=0) == STOP
        assert not retry_pending(s, 'web')  # max_retry 0: no restart
        # The watcher's bad value is refused as the plugin's own would be, in one line.
        [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert error.getMessage() == "web: ignored: option 'flapping.window': 'wide' is not " \
            "a number"
        s.replies['options'] = {'status': 'ok', 'options': {'flapping.active': 'false'}}
        s.feed('web', 'updated')
        reaps(s, 'web', 4)
        assert s.no_command()


def test_check_flapping_false_and_inactive_watchers_are_left_alone():
    with scripted({'check_flapping': False}) as s:
        reaps(s, 'web', 5)
        assert s.no_command()


def test_unreadable_watcher_options_mean_no_judgement(caplog):
    with scripted() as s:
        s.replies['options'] = {'status': 'error', 'reason': 'no reply within 5 s'}
        reaps(s, 'web', 3)
        assert s.no_command()
        assert caplog.text.count('web: cannot read its options: no reply within 5 s') == 3
        s.replies['options'] = {'status': 'ok', 'options': {}}
        reaps(s, 'web', 2)
        assert s.next_command(timeout=0) == STOP


def test_a_refused_stop_is_logged_and_starts_nothing(caplog):
    with scripted(retry_in='0') as s:
        s.replies['stop'] = {'status': 'error', 'errno': 3, 'reason': 'program web not found'}
        reaps(s, 'web', 2)
        assert s.next_command(timeout=0) == STOP
        assert 'web: could not stop it: program web not found' in caplog.text
        s.elapse(0.05)
        assert s.no_command()


@pytest.fixture
def flapping_circusd(start_circusd):
    def start(bad_options=None):
        bad = dict({'cmd': 'false', 'autostart': 'false'}, **(bad_options or {}))
        circusd = start_circusd(
            watchers={'bad': bad, 'good': {'cmd': 'sleep 1000'}},
            plugins={'flapping': {'use': 'circus_plugins.flapping.Flapping', 'attempts': 2,
                                  'window': 1, 'retry_in': 1, 'max_retry': 1}},
            # bad dies and is respawned at each check: deaths every 0.3 s, so that the
            # plugin's stop, retry and give-up come in about 2 s of the 8 s waited.
            circus={'check_delay': 0.3})
        pid = wait_for(lambda: circusd.pids('plugin:flapping'), what='the plugin')[0]
        wait_connected(pid, circusd.pubsub_endpoint)
        return circusd
    return start


def starts_and_stops(events, watcher):
    events.poll()
    prefix = b'watcher.%s.' % watcher.encode()
    return [(topic[len(prefix):].decode(), json.loads(message)['time'])
            for topic, message in events.events
            if topic in (prefix + b'start', prefix + b'stop')]


@pytest.mark.parametrize('bad', [
    {'cmd': 'false'},
    # Processes alive when the plugin stops the watcher: their kills and reaps must not
    # count as flapping again.
    {'cmd': "sh -c 'sleep 0.3; exit 1'", 'numprocesses': 3},
], ids=['false', 'three-dying'])
def test_flapping_watcher_under_circusd_is_retried_then_stopped_for_good(
        flapping_circusd, bad):
    circusd = flapping_circusd(bad)
    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.sync(circusd, 'good')
        assert circusd.call('start', name='bad')['status'] == 'ok'
        history = wait_for(lambda: [a for a, _ in starts_and_stops(events, 'bad')] ==
                           ['start', 'stop', 'start', 'stop'] and
                           starts_and_stops(events, 'bad'), timeout=8,
                           what='stop, start, stop of the flapping watcher')
        retry_delay = history[2][1] - history[1][1]
        # retry_in is 1 s: never less; a busy, loaded circusd may take a while to start
        # it again, but not the default retry_in (7 s).
        assert 0.8 < retry_delay < 5.0
        # The plugin's last word: no restart after this (see the scripted tests).
        wait_for(lambda: 'bad: flapping detected: reached max retry limit (1)' in
                 circusd.log(), what='the plugin to give up')
        assert [a for a, _ in starts_and_stops(events, 'bad')] == [
            'start', 'stop', 'start', 'stop']
    assert circusd.status('bad') == 'stopped' and circusd.status('good') == 'active'


def test_per_watcher_max_retry_under_circusd(flapping_circusd):
    circusd = flapping_circusd({'flapping.max_retry': 0})
    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.sync(circusd, 'good')
        circusd.call('start', name='bad')
        wait_for(lambda: [a for a, _ in starts_and_stops(events, 'bad')] ==
                 ['start', 'stop'], what='the watcher to be stopped')
    # the plugin's own max_retry is 1: the watcher's 0 made it give up at once
    assert 'bad: flapping detected: reached max retry limit (0)' in circusd.log()
    assert 'retry in' not in circusd.log()
    assert circusd.status('bad') == 'stopped'


def test_a_stop_refused_by_a_busy_circusd_is_asked_again(start_circusd, caplog):
    """circusd refuses every state change while it stops ``stubborn``: it ignores its
    stop signal, so circusd waits out its graceful timeout. The plugin's stop of ``bad``
    is refused (errno 5), asked again, and happens."""
    caplog.set_level(logging.DEBUG, logger='circus_plugins.flapping')
    circusd = start_circusd(watchers={
        'stubborn': {'cmd': 'sleep 1000', 'stop_signal': 'WINCH', 'graceful_timeout': 2},
        'bad': {'cmd': 'sleep 1000'}})
    plugin = Flapping(circusd.endpoint, circusd.pubsub_endpoint, 1.0, max_retry='0')
    with plugin:
        assert circusd.call('stop', name='stubborn')['status'] == 'ok'  # busy for 2 s
        for pid in (1, 2):  # deaths, as circusd publishes them
            plugin.loop.add_callback(plugin.handle_recv, (b'watcher.bad.reap', json.dumps(
                {'process_pid': pid, 'time': time.time()}).encode()))
        wait_for(lambda: circusd.status('bad') == 'stopped', what='the stop of bad')
    refusals = [r for r in caplog.records if r.getMessage().startswith(
        "circusd busy (arbiter is already running watcher_stop command), retrying 'stop'")]
    assert refusals and 'bad: stopped' in caplog.text


def test_check_delay_widens_the_window_as_in_circus():
    with scripted(check_delay=5.0, window='0.1') as s:
        s.feed('web', 'reap', process_pid=1, time=time.time() - 3)
        s.feed('web', 'reap', process_pid=2, time=time.time())
        assert s.next_command(timeout=0) == STOP


def test_reaps_of_processes_circusd_killed_are_not_deaths():
    with scripted() as s:
        for pid in (11, 12, 13):
            s.feed('web', 'kill', process_pid=pid)
        for pid in (11, 12, 13):
            s.feed('web', 'reap', process_pid=pid, exit_code=-15)
        assert s.no_command()
        reaps(s, 'web', 2)  # real deaths still count
        assert s.next_command(timeout=0) == STOP


def test_a_pid_spawned_again_after_its_kill_dies_for_real():
    with scripted() as s:
        s.feed('web', 'kill', process_pid=5)  # as decr does: no reap
        s.feed('web', 'spawn', process_pid=5)  # the pid, used again
        s.feed('web', 'reap', process_pid=5, exit_code=1)
        assert s.no_command()
        reaps(s, 'web', 1)  # the second death in the window
        assert s.next_command(timeout=0) == STOP


def test_remembered_kills_are_few_and_recent(monkeypatch):
    monkeypatch.setattr(events, 'MAX_KILLS', 3)
    with scripted() as s:
        for pid in (1, 2, 3, 4):  # as decr does: kills, and no reaps
            s.feed('web', 'kill', process_pid=pid)
        s.feed('web', 'reap', process_pid=4)
        assert s.no_command()
        s.feed('web', 'reap', process_pid=1)  # its kill was the oldest: forgotten
        s.feed('web', 'reap', process_pid=9)
        assert s.next_command(timeout=0) == STOP
    monkeypatch.setattr(events, 'KILL_MEMORY', -1.0)  # every kill is old news
    with scripted() as s:
        for pid in (11, 12):
            s.feed('web', 'kill', process_pid=pid)
            s.feed('web', 'reap', process_pid=pid)
        assert s.next_command(timeout=0) == STOP


def test_flapping_from_circus_plugin(start_circusd):
    circusd = start_circusd(watchers={'bad': {'cmd': 'false', 'autostart': 'false'},
                                      'good': {'cmd': 'sleep 1000'}})
    with PluginProcess('circus_plugins.flapping.Flapping', circusd,
                       config={'max_retry': '0'}, args=['--check-delay', '1']) as plugin:
        wait_connected(plugin.pid, circusd.pubsub_endpoint)
        with EventRecorder(circusd.pubsub_endpoint) as events:
            events.sync(circusd, 'good')
            circusd.call('start', name='bad')
            wait_for(lambda: [a for a, _ in starts_and_stops(events, 'bad')] ==
                     ['start', 'stop'], timeout=8, what='the plugin to stop bad')
        assert circusd.status('bad') == 'stopped'
    assert plugin.returncode == 0
