"""The resource watcher: its options, its rules on scripted stats, and under a real circusd."""
import json
import logging
import os
import signal
import sys
import time

import pytest

from circus_plugins import ConfigError
from circus_plugins.config import to_signum
from circus_plugins.resource_watcher import Limit, ResourceWatcher
from circus_plugins.statsd import StatsdClient
from circus_plugins.testing import CommandCounter, EventRecorder, PluginProcess, \
    ScriptedCircusd, UdpReceiver, wait_for
from conftest import PLUGIN_ENV, StatsdRecorder, caught_up, look_now

HOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'resource_hog.py')
BURNER = '%s %s cpu' % (sys.executable, HOG)
USE = 'circus_plugins.resource_watcher.ResourceWatcher'
NOWHERE = ('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0)


def make(**config):
    """A ResourceWatcher reading scripted ``stats`` replies unless told otherwise."""
    config.setdefault('watcher', 'web')
    config.setdefault('stats_source', 'poll')
    return ResourceWatcher(*NOWHERE, **config)


# -- options -------------------------------------------------------------------------------

def test_defaults():
    plugin = make()
    assert plugin.watcher == 'web' and plugin.loop_rate == 60.0
    assert plugin.max_cpu == Limit(90.0) and plugin.min_cpu is None
    assert plugin.max_mem == Limit(90.0) and plugin.min_mem is None
    assert plugin.health_threshold == Limit(75.0)
    assert (plugin.max_count, plugin.process_children, plugin.child_signal) == (
        3, False, signal.SIGTERM)


def test_memory_in_percent_or_bytes():
    plugin = make(max_mem='12.5', min_mem='250M')
    assert plugin.max_mem == Limit(12.5, percent=True)
    assert plugin.min_mem == Limit(250 << 20, percent=False)
    assert make(max_mem='1.5G').max_mem == Limit(3 << 29, percent=False)
    assert make(max_mem='512K', min_mem='0.5').min_mem == Limit(0.5)
    assert make(max_mem='100B').max_mem == Limit(100, percent=False)


def test_limits_switched_off():
    plugin = make(max_cpu='none', max_mem='', health_threshold='off', min_cpu='None')
    assert (plugin.max_cpu, plugin.max_mem, plugin.health_threshold, plugin.min_cpu) == (
        None, None, None, None)
    plugin = make(max_cpu='0', max_mem='0', health_threshold='0', min_cpu='0', min_mem='0')
    assert (plugin.max_cpu, plugin.max_mem, plugin.health_threshold) == (None, None, None)
    assert plugin.min_cpu == Limit(0.0) and plugin.min_mem == Limit(0.0)  # 0 is a limit


@pytest.mark.parametrize('option, value', [
    ('max_cpu', 'lots'), ('max_cpu', '-5'), ('min_cpu', '50M'), ('health_threshold', 'x'),
    ('max_mem', '12 parsecs'), ('min_mem', '-1'), ('max_count', 'three'),
    ('max_count', '-1'), ('process_children', 'perhaps'), ('child_signal', 'SIGNOPE'),
    ('child_signal', '999'), ('loop_rate', '0'),
])
def test_bad_values(option, value):
    with pytest.raises(ConfigError) as info:
        make(**{option: value})
    message = str(info.value)
    assert 'resource_watcher' in message and option in message and repr(value) in message


def test_watcher_is_required_and_service_is_a_deprecated_alias(caplog):
    with pytest.raises(ConfigError, match="resource_watcher: option 'watcher' is required"):
        ResourceWatcher('e', 'p', 5.0)
    with pytest.raises(ConfigError, match="'watcher': ' ' is empty"):
        ResourceWatcher('e', 'p', 5.0, watcher=' ')
    with caplog.at_level(logging.WARNING, logger='circus_plugins'):
        assert make(watcher='', service='old').watcher == 'old'
    assert 'option "service" is deprecated: use "watcher"' in caplog.text
    assert make(service='old', watcher='new').watcher == 'new'
    assert ResourceWatcher(*NOWHERE, service='old').watcher == 'old'


def test_child_signal_by_name_or_number():
    assert make(child_signal='KILL').child_signal == signal.SIGKILL
    assert make(child_signal='sigusr1').child_signal == signal.SIGUSR1
    assert make(child_signal=' 2 ').child_signal == signal.SIGINT
    assert to_signum('HUP') == signal.SIGHUP


# -- the rules, on scripted stats ----------------------------------------------------------

class Rig:
    """A resource watcher answered by a scripted circusd: ``stats`` reports
    :attr:`stats` (pid -> info), and the counters go to a recorder."""

    def __init__(self, **config):
        self.stats = {}
        self.plugin = make(**config)
        self.plugin.statsd = self.recorder = StatsdRecorder()
        # globaloptions and list: the questions of the stream's start (no stream here).
        self.circusd = ScriptedCircusd(self.plugin, {'stats': self._stats},
                                       ignore=['stats', 'globaloptions', 'list'])

    def _stats(self, name):
        assert name == 'web'
        return {'status': 'ok', 'info': self.stats}

    def check(self, times=1):
        """Run the plugin's check ``times`` times, as its timer would, one after the
        other, each to its end."""
        for _ in range(times):
            look_now(self.circusd)

    def counted(self):
        """The counters sent so far, without the prefix and watcher."""
        return [name.rsplit('.', 1)[1] for name in self.recorder.increments]

    def commands(self):
        """The commands sent since the last call (``stats`` aside)."""
        sent = []
        while not self.circusd.commands.empty():
            sent.append(self.circusd.next_command(timeout=0))
        return sent


@pytest.fixture
def rig():
    """``rig(**config)``: a started :class:`Rig`, stopped after the test."""
    rigs = []

    def build(**config):
        rigs.append(Rig(**config))
        rigs[-1].circusd.start()
        return rigs[-1]
    yield build
    for built in rigs:
        built.circusd.stop()
        assert built.circusd.escaped == []


def process(pid, cpu=0.0, mem=0.1, size='10M', children=()):
    return {'pid': pid, 'cpu': cpu, 'mem': mem, 'mem_info1': size,
            'children': [dict(c) for c in children]}


def test_restart_after_more_than_max_count_bad_checks_in_a_row(rig):
    rw = rig(max_cpu='50', max_count='2')
    rw.stats = {'11': process(11, cpu=99.0)}
    rw.check()  # circusd's first reading of a pid: not judged
    assert rw.counted() == [] and rw.commands() == []
    rw.check(2)
    assert rw.counted() == ['over_cpu', 'over_cpu'] and rw.commands() == []
    rw.check()
    assert rw.counted()[2:] == ['over_cpu', 'restarting']
    assert rw.commands() == [('restart', {'name': 'web'})]
    assert rw.plugin.counts == {}
    rw.check(5)  # the old process, still stopping, is not judged again
    assert rw.commands() == [] and rw.counted()[4:] == []
    rw.stats = {'12': process(12, cpu=99.0)}  # the new process
    rw.check(3)
    assert rw.commands() == []  # counted from zero again, first reading skipped
    rw.check()
    assert rw.commands() == [('restart', {'name': 'web'})]


def test_a_confirmed_restart_is_emitted_with_its_reasons(rig, collector):
    rw = rig(max_cpu='50', max_mem='20M', max_count='1')
    rw.circusd.replies['restart'] = {'status': 'error', 'reason': 'no', 'errno': 3}
    rw.stats = {'11': process(11, cpu=99.0, size='30M')}
    rw.check(3)  # past max_count on memory, then on both; restarts refused
    assert [command for command, _ in rw.commands()] == ['restart', 'restart']
    assert collector.none_yet()
    rw.circusd.replies['restart'] = {'status': 'ok'}
    rw.check()
    watcher, action, body = collector.next_event()
    assert (watcher, action, body['plugin']) == ('web', 'resource_restart',
                                                 'resource_watcher')
    assert {key: body[key] for key in ('reason', 'option', 'value', 'limit', 'unit',
                                       'checks', 'reasons')} == {
        'reason': 'over_memory', 'option': 'max_mem', 'value': 30 * 1024 ** 2,
        'limit': 20 * 1024 ** 2, 'unit': 'bytes', 'checks': 4,
        'reasons': ['over_cpu', 'over_memory']}
    assert collector.none_yet()


def test_a_good_check_resets_the_count(rig):
    rw = rig(max_cpu='50', max_count='1')
    rw.stats = {'11': process(11, cpu=99.0)}
    rw.check(2)
    rw.stats['11']['cpu'] = 10.0
    rw.check()
    rw.stats['11']['cpu'] = 99.0
    rw.check()
    assert rw.commands() == [] and rw.plugin.counts['watcher']['over_cpu'] == 1
    rw.check()
    assert [command for command, _ in rw.commands()] == ['restart']


def test_max_count_zero_restarts_at_the_first_bad_check(rig):
    rw = rig(max_mem='5M', max_count='0')
    rw.stats = {'11': process(11, size='6M')}
    rw.check()
    assert rw.counted() == ['over_memory', 'restarting']
    assert [command for command, _ in rw.commands()] == ['restart']


def test_each_limit_and_its_counter(rig):
    rw = rig(max_cpu='50', min_cpu='1', max_mem='20', min_mem='5M', health_threshold='30',
             max_count='100')
    rw.stats = {'11': process(11, cpu=0.5, mem=1.0, size='4M'),
                '12': process(12, cpu=80.0, mem=25.0, size='900M')}
    rw.check()  # no cpu figures yet
    assert rw.counted() == ['over_memory', 'under_memory']
    rw.check()
    assert rw.counted()[2:] == ['over_cpu', 'under_cpu', 'over_memory', 'under_memory',
                                'over_health']  # health: (80 + 25) / 2 > 30
    rw.stats = {'11': process(11, cpu=2.0, mem=1.0, size='6M'),
                '12': process(12, cpu=40.0, mem=19.0, size='9M')}
    rw.check()
    assert rw.counted()[7:] == []
    assert rw.plugin.counts['watcher'] == dict.fromkeys(rw.plugin.counts['watcher'], 0)


def test_switched_off_limits_and_unknown_figures_are_not_judged(rig):
    rw = rig(max_cpu='off', max_mem='none', health_threshold='0', max_count='0')
    rw.stats = {'11': process(11, cpu=300.0, mem=99.0, size='9G')}
    rw.check(3)
    assert rw.counted() == [] and rw.commands() == []
    # Unknown figures: 'N/A', and JSON's true, which is no figure either.
    rw = rig(max_count='0', min_cpu='5', min_mem='1M')
    rw.stats = {'11': process(11, cpu='N/A', mem='N/A', size='N/A'),
                '12': process(12, cpu=True, mem=True, size=True),
                '13': 'No such process (stopped?)'}
    rw.check(3)
    assert rw.counted() == [] and rw.commands() == []
    rw.stats['14'] = process(14, cpu=1.0, size='0.5M')  # the same, with figures: judged
    rw.check(2)
    assert rw.counted() == ['under_memory', 'restarting']


def test_a_watcher_without_processes_is_left_alone(rig):
    rw = rig(min_cpu='5', max_count='0')
    rw.check(3)
    assert rw.counted() == [] and rw.commands() == []


def test_stats_errors_are_counted_and_logged_once(rig, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    rw = rig()
    refusal = {'status': 'error', 'reason': 'program web not found', 'errno': 3}
    rw.circusd.replies['stats'] = refusal
    rw.check(3)
    assert rw.counted() == ['error'] * 3
    assert caplog.text.count('web: cannot read its stats: program web not found') == 1
    rw.circusd.replies['stats'] = rw._stats
    rw.check(2)
    assert caplog.text.count('web: stats work again') == 1
    rw.circusd.replies['stats'] = refusal
    rw.check()
    assert caplog.text.count('web: cannot read its stats: program web not found') == 2


def test_a_refused_restart_is_counted_and_tried_again(rig, caplog):
    rw = rig(max_mem='5M', max_count='0')
    rw.circusd.replies['restart'] = {'status': 'error', 'reason': 'nope', 'errno': 3}
    rw.stats = {'11': process(11, size='6M')}
    rw.check(2)
    assert [command for command, _ in rw.commands()] == ['restart', 'restart']
    assert rw.counted() == ['over_memory', 'restarting', 'error'] * 2
    assert 'web: could not restart it: nope' in caplog.text


def test_a_restart_refused_by_a_busy_circusd_is_asked_again(rig, caplog):
    answers = []

    def restart(name):
        answers.append('busy' if len(answers) < 2 else 'ok')
        if answers[-1] == 'busy':
            return {'status': 'error', 'errno': 5,
                    'reason': 'arbiter is already running arbiter_stop command'}
        return {'status': 'ok'}
    rw = rig(max_mem='5M', max_count='0')
    rw.circusd.replies['restart'] = restart
    rw.stats = {'11': process(11, size='6M')}
    caplog.set_level(logging.INFO, logger='circus_plugins')
    rw.check()
    assert answers == ['busy', 'busy', 'ok']  # circusd refused twice, then restarted
    assert rw.counted() == ['over_memory', 'restarting']
    assert 'web: restarted' in caplog.text


def test_children_get_the_signal_not_the_watcher(rig, caplog, collector):
    rw = rig(process_children='true', max_mem='50M', min_cpu='1', max_count='1',
             child_signal='USR1')
    big = {'pid': 21, 'cpu': 0.0, 'mem': 1.0, 'mem_info1': '80M'}
    small = {'pid': 22, 'cpu': 0.0, 'mem': 0.1, 'mem_info1': '5M'}
    rw.stats = {'11': process(11, cpu=10.0, children=[big, small])}
    rw.check()
    assert rw.commands() == [] and rw.counted() == ['over_memory']
    caplog.set_level(logging.INFO, logger='circus_plugins')
    rw.check()
    # Children are judged on memory only: circusd 0.19 reports 0.0 CPU for each.
    assert rw.commands() == [('signal', {'name': 'web', 'pid': 11, 'childpid': 21,
                                         'signum': signal.SIGUSR1})]
    assert 21 not in rw.plugin.counts and rw.plugin.counts[22]['under_cpu'] == 0
    assert 'web: sent SIGUSR1 to child 21' in caplog.text
    watcher, action, body = collector.next_event()
    assert (watcher, action) == ('web', 'resource_signal')
    assert {key: body[key] for key in ('pid', 'child_pid', 'signal', 'reason', 'checks',
                                       'value', 'limit')} == {
        'pid': 11, 'child_pid': 21, 'signal': 'SIGUSR1', 'reason': 'over_memory',
        'checks': 2, 'value': 80 * 1024 ** 2, 'limit': 50 * 1024 ** 2}
    assert collector.none_yet()
    rw.stats = {'11': process(11, cpu=10.0)}  # the children are gone
    rw.check()
    assert set(rw.plugin.counts) == {'watcher'}


# -- under circusd -------------------------------------------------------------------------

def test_circusd_stats_show_a_busy_loop_from_the_second_reading(start_circusd):
    circusd = start_circusd(watchers={'burner': {'cmd': BURNER}})
    wait_for(lambda: circusd.pids('burner'), what='the burner')

    def cpu():
        info = circusd.call('stats', name='burner')['info']
        return [p['cpu'] for p in info.values()][0]
    assert cpu() == 0.0  # psutil's first reading of a process
    # A busy loop, whatever share of a core a loaded machine leaves it (the restart
    # tests below count on no more: their max_cpu is 20).
    wait_for(lambda: cpu() > 20, timeout=6, interval=0.3, what='a busy cpu figure')


def test_busy_watcher_restarted_idle_one_left_alone(start_circusd, udp):
    common = {'use': USE, 'loop_rate': 0.3, 'max_cpu': 20, 'max_count': 2,
              'host': '127.0.0.1', 'port': udp.port}
    circusd = start_circusd(
        watchers={'burner': {'cmd': BURNER}, 'idle': {'cmd': 'sleep 1000'},
                  'nudge': {'cmd': 'sleep 1000'}},
        # min_cpu 0 with a huge max_count: the idle watcher's checks show as under_cpu
        # counters, and never lead to a restart.
        plugins={'rw_burner': dict(common, watcher='burner'),
                 'rw_idle': dict(common, watcher='idle', min_cpu=0, max_count=1000)})
    idle_pids = wait_for(lambda: circusd.pids('idle'), what='the idle watcher')
    burner_pids = wait_for(lambda: circusd.pids('burner'), what='the burner')
    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.sync(circusd, 'nudge')
        synced = time.time()  # the idle watcher's own start may still come in after this
        wait_for(lambda: circusd.pids('burner') not in ([], burner_pids), timeout=8,
                 interval=0.1, what='the burner to be restarted')
        prefix = 'circus.app.watcher._resource_watcher.'
        udp.wait_lines(lambda lines: lines.count(prefix + 'idle.under_cpu:1|c') >= 5,
                       timeout=8, what='five checks of the idle watcher')
        caught_up(circusd, events, 'nudge')  # what the first four checks did, we see
        idle_events = [topic for topic, message in events.events
                       if topic.startswith(b'watcher.idle.')
                       and json.loads(message)['time'] >= synced]
    assert idle_events == [] and circusd.pids('idle') == idle_pids
    lines = udp.lines()
    assert lines.count(prefix + 'burner.over_cpu:1|c') >= 3
    assert prefix + 'burner.restarting:1|c' in lines
    assert not [line for line in lines if line.startswith(prefix + 'idle.')
                and 'under_cpu' not in line]
    wait_for(lambda: 'burner: restarted' in circusd.log(), what='the restart in the log')
    assert 'cpu' in circusd.log().split('restarting the watcher')[0].rsplit('\n', 1)[-1]


def test_child_process_signalled_under_circusd(start_circusd, tmp_path):
    status_file = tmp_path / 'child-status'
    circusd = start_circusd(
        watchers={'family': {'cmd': '%s %s parent 60 %s' % (sys.executable, HOG,
                                                             status_file)}},
        plugins={'rw': {'use': USE, 'watcher': 'family', 'loop_rate': 0.3,
                        'process_children': 'true', 'max_mem': '40M', 'max_cpu': 'none',
                        'health_threshold': 'none', 'max_count': 1,
                        'child_signal': 'USR1'}})
    parent = wait_for(lambda: circusd.pids('family'), what='the parent')
    wait_for(status_file.exists, timeout=8, what='the child to end')
    assert wait_for(status_file.read_text) == str(-signal.SIGUSR1)
    assert circusd.pids('family') == parent  # the watcher was not restarted
    log = circusd.log()
    assert 'family: sent SIGUSR1 to child' in log and 'restarting the watcher' not in log


def test_runs_from_circus_plugin(start_circusd, udp):
    circusd = start_circusd(watchers={'burner': {'cmd': BURNER}})
    before = wait_for(lambda: circusd.pids('burner'), what='the burner')
    config = {'watcher': 'burner', 'max_cpu': '20', 'loop_rate': '0.3', 'max_count': '1',
              'host': '127.0.0.1', 'port': udp.port}
    with PluginProcess(USE, circusd, config=config, env=PLUGIN_ENV) as plugin:
        wait_for(lambda: circusd.pids('burner') not in ([], before), timeout=8,
                 interval=0.1, what='the burner to be restarted')
        udp.wait_lines(lambda lines: 'circus.app.watcher._resource_watcher.burner.'
                       'restarting:1|c' in lines)
        wait_for(lambda: 'burner: restarted' in plugin.log(),
                 what='the restart in the log')
    assert plugin.returncode == 0


def stream_message(watcher, pid, **figures):
    body = dict({'pid': pid, 'subtopic': pid, 'cpu': 0.0, 'mem': 0.1, 'mem_info1': '10M',
                 'children': []}, **figures)
    return ('stat.%s.%d' % (watcher, pid)).encode(), json.dumps(body).encode()


def test_stats_source_option():
    assert ResourceWatcher(*NOWHERE, watcher='web').stats_source == 'auto'
    assert make(stats_source='auto').wants_stats()
    assert make(stats_source='Stream').stats_source == 'stream'
    assert not make(stats_source='poll').wants_stats()
    with pytest.raises(ConfigError, match="stats_source.*'sometimes'"):
        make(stats_source='sometimes')
    # Children are not in the stream: they need stats.
    assert not make(process_children='true').wants_stats()
    with pytest.raises(ConfigError, match="stats_source.*process_children"):
        make(process_children='true', stats_source='stream')
    # psutil reads this machine: refused when circusd is elsewhere, or may be.
    with pytest.raises(ConfigError, match="^plugin resource_watcher: option 'stats_source'"
                                          ": 'psutil' .* at tcp://10.0.0.5:5555$"):
        ResourceWatcher('tcp://10.0.0.5:5555', 'tcp://10.0.0.5:5556', 5.0, watcher='web',
                        stats_source='psutil')
    assert make(stats_source='auto').reads_here()
    assert not ResourceWatcher(*NOWHERE, 'me@there', watcher='web').reads_here()


def test_the_rules_on_the_stream_ask_no_stats(rig):
    rw = rig(stats_source='stream', max_mem='50M', max_count='1')
    asked = []
    rw.circusd.replies['stats'] = lambda **props: asked.append(props)

    def give(*messages):
        rw.circusd.on_loop(lambda: [rw.plugin.handle_stats(m) for m in messages])
    give(stream_message('web', 11, mem_info1='60M'), stream_message('web', 12),
         stream_message('other', 13, mem_info1='90M'))
    rw.check(2)
    assert rw.counted() == ['over_memory', 'over_memory', 'restarting']
    assert rw.commands() == [('restart', {'name': 'web'})]
    # The restarted processes are not judged again; a reaped one is forgotten at once.
    rw.circusd.feed('web', 'reap', process_pid=12, time=time.time())
    give(stream_message('web', 14, mem_info1='60M'))
    rw.check()
    assert rw.counted()[3:] == ['over_memory'] and asked == []


def test_memory_hog_restarted_from_the_stream_alone(start_circusd):
    circusd = start_circusd(watchers={'hog': {'cmd': '%s %s hold 40' % (sys.executable, HOG)}},
                            circus={'statsd': True})
    before = wait_for(lambda: circusd.pids('hog'), what='the hog')
    with CommandCounter(circusd.endpoint) as counter:
        rw = ResourceWatcher(counter.endpoint, circusd.pubsub_endpoint, 1.0, watcher='hog',
                             stats_source='stream', loop_rate='0.3', max_count='1',
                             max_mem='25M', max_cpu='off', health_threshold='off')
        with rw:
            wait_for(lambda: circusd.pids('hog') not in ([], before), timeout=8,
                     interval=0.1, what='the hog to be restarted')
        assert counter.counts['stats'] == 0 and counter.counts['restart'] == 1



def test_memory_hog_restarted_from_psutil_alone(start_circusd):
    circusd = start_circusd(watchers={'hog': {'cmd': '%s %s hold 40' % (sys.executable, HOG)}})
    before = wait_for(lambda: circusd.pids('hog'), what='the hog')
    with CommandCounter(circusd.endpoint) as counter:
        rw = ResourceWatcher(counter.endpoint, circusd.pubsub_endpoint, 1.0, watcher='hog',
                             loop_rate='0.3', max_count='1', max_mem='25M', max_cpu='off',
                             health_threshold='off')
        with rw:
            wait_for(lambda: circusd.pids('hog') not in ([], before), timeout=8,
                     interval=0.1, what='the hog to be restarted')
        assert counter.counts['stats'] == 0 and counter.counts['restart'] == 1
        assert counter.counts['list'] <= 2, dict(counter.counts)


def test_a_child_hog_signalled_from_psutil_alone(start_circusd, tmp_path):
    status = tmp_path / 'status'
    circusd = start_circusd(watchers={'parent': {
        'cmd': '%s %s parent 40 %s' % (sys.executable, HOG, status)}})
    with CommandCounter(circusd.endpoint) as counter:
        rw = ResourceWatcher(counter.endpoint, circusd.pubsub_endpoint, 1.0,
                             watcher='parent', process_children='true', loop_rate='0.3',
                             max_count='1', max_mem='25M', max_cpu='off',
                             health_threshold='off')
        with rw:
            wait_for(lambda: status.exists() and status.read_text(), timeout=8,
                     interval=0.1, what='the child to be signalled')
        assert status.read_text() == str(-signal.SIGTERM)
        assert counter.counts['stats'] == 0 and counter.counts['signal'] == 1

def test_unreachable_circusd_counts_errors(udp):
    rw = ResourceWatcher('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, watcher='web',
                         host='127.0.0.1', port=udp.port, loop_rate='0.1',
                         call_timeout='0.2')
    with rw:
        udp.wait_lines(lambda lines: 'circus.app.watcher._resource_watcher.web.error:1|c'
                       in lines)


def test_a_replaced_client_gets_the_metrics(udp):
    rw = ResourceWatcher('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, watcher='web',
                         host='127.0.0.1', port=udp.port, loop_rate='0.1',
                         call_timeout='0.2')
    with UdpReceiver() as other:
        rw.statsd = StatsdClient('127.0.0.1', other.port, prefix='other')
        with rw:
            other.wait_lines(lambda lines: 'other._resource_watcher.web.error:1|c' in lines)
        assert udp.receive(0) == []  # stopped: all was sent, none of it here
