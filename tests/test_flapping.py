"""The flapping plugin: its rules with a scripted circusd, and its effect on a real one."""
import json
import queue
import time

import pytest

from circus_plugins import ConfigError
from circus_plugins.flapping import Flapping
from circus_plugins.testing import EventRecorder, PluginProcess, wait_connected, wait_for


class Scripted:
    """A Flapping plugin whose commands go to a script instead of circusd."""

    def __init__(self, options=None, check_delay=0.0, **config):
        self.plugin = Flapping('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', check_delay, **config)
        self.options = options or {}
        self.commands = queue.Queue()

        async def call_async(command, **props):
            if command == 'options':
                return {'status': 'ok', 'options': dict(self.options)}
            self.commands.put((command, props['name'], time.monotonic()))
            return {'status': 'ok'}
        self.plugin.call_async = call_async

    def event(self, watcher, action, **message):
        data = (('watcher.%s.%s' % (watcher, action)).encode(), json.dumps(message).encode())
        self.plugin.loop.add_callback(self.plugin.handle_recv, data)

    def reaps(self, watcher, count):
        for _ in range(count):
            self.event(watcher, 'reap', process_pid=1, exit_code=1)

    def next_command(self, timeout=3.0):
        return self.commands.get(timeout=timeout)

    def no_command(self, within):
        """True if no command comes within ``within`` seconds: what must not happen."""
        try:
            self.commands.get(timeout=within)
        except queue.Empty:
            return True
        return False

    def __enter__(self):
        self.plugin.start_background()
        return self

    def __exit__(self, *exc_info):
        self.plugin.stop()


def test_defaults_and_bad_options():
    plugin = Flapping('e', 'p', 5.0)
    assert (plugin.attempts, plugin.window, plugin.retry_in, plugin.max_retry,
            plugin.active) == (2, 1.0, 7.0, 5, True)
    for bad in ({'attempts': 'two'}, {'window': '-1'}, {'max_retry': '-2'},
                {'retry_in': 'soon'}):
        with pytest.raises(ConfigError, match='flapping.*%s' % list(bad)[0]):
            Flapping('e', 'p', 5.0, **bad)


def test_flapping_stops_retries_and_gives_up():
    with Scripted(attempts='3', window='1', retry_in='0.2', max_retry='1') as s:
        s.reaps('web', 2)
        assert s.no_command(0.2)
        s.reaps('web', 1)
        assert s.next_command()[:2] == ('stop', 'web')
        s.event('web', 'stop')
        stopped_at = time.monotonic()
        command, _, started_at = s.next_command()
        assert command == 'start' and 0.15 < started_at - stopped_at < 1.0
        s.event('web', 'start')
        s.reaps('web', 3)
        assert s.next_command()[:2] == ('stop', 'web')  # max_retry reached: for good
        assert s.no_command(0.4)


def test_deaths_spread_over_more_than_the_window_are_not_flapping():
    with Scripted(attempts='2', window='0.1') as s:
        s.reaps('web', 1)
        assert s.no_command(0.2)
        s.reaps('web', 1)
        assert s.no_command(0.2)


def test_a_stop_by_someone_else_cancels_the_retry():
    with Scripted(retry_in='0.3') as s:
        s.reaps('web', 2)
        assert s.next_command()[:2] == ('stop', 'web')
        s.event('web', 'stop')   # ours
        s.event('web', 'stop')   # the operator's
        assert s.no_command(0.6)


def test_max_retry_minus_one_retries_forever():
    with Scripted(retry_in='0.05', max_retry='-1') as s:
        for _ in range(4):
            s.reaps('web', 2)
            assert s.next_command()[0] == 'stop'
            assert s.next_command()[0] == 'start'


def test_watcher_options_override_and_refresh_on_update():
    with Scripted(options={'flapping.attempts': '3', 'flapping.max_retry': '0',
                           'flapping.window': 'wide'}) as s:
        s.reaps('web', 2)
        assert s.no_command(0.2)
        s.reaps('web', 1)
        assert s.next_command()[0] == 'stop'
        assert s.no_command(0.3)  # max_retry 0: no restart
        s.options = {'flapping.active': 'false'}
        s.event('web', 'updated')
        s.reaps('web', 4)
        assert s.no_command(0.3)


def test_check_flapping_false_and_inactive_watchers_are_left_alone():
    with Scripted(options={'check_flapping': False}) as s:
        s.reaps('web', 5)
        assert s.no_command(0.3)


@pytest.fixture
def flapping_circusd(start_circusd):
    def start(bad_options=None):
        bad = dict({'cmd': 'false', 'autostart': 'false'}, **(bad_options or {}))
        circusd = start_circusd(
            watchers={'bad': bad, 'good': {'cmd': 'sleep 1000'}},
            plugins={'flapping': {'use': 'circus_plugins.flapping.Flapping', 'attempts': 2,
                                  'window': 1, 'retry_in': 1, 'max_retry': 1}})
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
        assert 0.8 < retry_delay < 3.0
        assert circusd.status('bad') == 'stopped'
        events.listen(1.5)  # longer than retry_in: no other start may come
        assert [a for a, _ in starts_and_stops(events, 'bad')] == [
            'start', 'stop', 'start', 'stop']
    assert circusd.status('bad') == 'stopped' and circusd.status('good') == 'active'
    log = circusd.log()
    assert 'bad: flapping detected: reached max retry limit' in log


def test_per_watcher_max_retry_under_circusd(flapping_circusd):
    circusd = flapping_circusd({'flapping.max_retry': 0})
    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.sync(circusd, 'good')
        circusd.call('start', name='bad')
        wait_for(lambda: [a for a, _ in starts_and_stops(events, 'bad')] ==
                 ['start', 'stop'], what='the watcher to be stopped')
        events.listen(1.5)
        assert [a for a, _ in starts_and_stops(events, 'bad')] == ['start', 'stop']
    assert circusd.status('bad') == 'stopped'


def test_check_delay_widens_the_window_as_in_circus():
    with Scripted(check_delay=5.0, window='0.1') as s:
        s.event('web', 'reap', process_pid=1, time=time.time() - 3)
        s.reaps('web', 1)
        assert s.next_command()[0] == 'stop'


def test_reaps_of_processes_circusd_killed_are_not_deaths():
    with Scripted() as s:
        for pid in (11, 12, 13):
            s.event('web', 'kill', process_pid=pid)
        for pid in (11, 12, 13):
            s.event('web', 'reap', process_pid=pid, exit_code=-15)
        assert s.no_command(0.3)
        s.reaps('web', 2)  # real deaths still count
        assert s.next_command()[0] == 'stop'


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
