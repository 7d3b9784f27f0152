"""The statsd client and plugins: wire format, batching, sampling, and under circusd."""
import collections
import json
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import sys

import pytest

from circus_plugins import CallError, ConfigError
from circus_plugins._stats import human_to_bytes
from circus_plugins.statsd import FullStats, StatsdClient, StatsdEmitter
from circus_plugins.testing import CommandCounter, EventRecorder, PluginProcess, \
    ScriptedCircusd, UdpReceiver, free_port, wait_connected, wait_for
from conftest import StatsdRecorder, caught_up, end_process, look_now

NOWHERE = ('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0)


@pytest.fixture
def client(udp):
    client = StatsdClient('127.0.0.1', udp.port, prefix='pre')
    yield client
    client.stop()


def test_wire_format(client, udp):
    client.increment('hits')
    client.increment('hits', 3)
    client.decrement('hits', 2)
    client.gauge('load', 0.5)
    client.timed('took', 12.5)
    client.set('users', 'bob')
    client.send('raw', '7|c', sample_rate=1)
    udp.wait_lines(lambda lines: len(lines) == 7)
    assert udp.lines() == ['pre.hits:1|c', 'pre.hits:3|c', 'pre.hits:-2|c', 'pre.load:0.5|g',
                           'pre.took:12.5|ms', 'pre.users:bob|s', 'pre.raw:7|c']
    assert len(udp.datagrams) == 7 and client.sent == 7 and client.errors == 0


def test_bucket_names_are_cleaned_of_statsd_separators(udp):
    client = StatsdClient('127.0.0.1', udp.port, prefix='my app')
    client.increment('plugin:statsd.spawn')
    client.gauge('a|b@c d\te\nf', 1)
    with client.pipeline() as pipe:
        pipe.increment('plugin:flapping.reap')
    client.stop()
    udp.wait_lines(lambda lines: len(lines) == 3)
    assert udp.lines() == ['my_app.plugin_statsd.spawn:1|c', 'my_app.a_b_c_d_e_f:1|g',
                           'my_app.plugin_flapping.reap:1|c']


def test_pipeline_packs_lines_into_datagrams_of_512_bytes(client, udp):
    with client.pipeline() as pipe:
        for n in range(100):
            pipe.increment('watcher.number%03d.spawn' % n)
    udp.wait_lines(lambda lines: len(lines) == 100)
    assert all(len(d) <= 512 for d in udp.datagrams)
    assert 1 < len(udp.datagrams) < 20
    assert udp.lines() == ['pre.watcher.number%03d.spawn:1|c' % n for n in range(100)]


def test_pipeline_sends_an_oversized_line_alone(client, udp):
    pipe = client.pipeline()
    pipe.gauge('x' * 600, 1)
    pipe.gauge('small', 2)
    pipe.send()
    udp.wait_lines(lambda lines: len(lines) == 2)
    assert [len(d) > 512 for d in udp.datagrams] == [True, False]


def test_a_pipeline_refuses_a_bucket_without_a_value(client):
    pipe = client.pipeline()
    random.seed(7)  # sampled in, had the bucket gone through: 'pre.hits:None|@0.999'
    with pytest.raises(TypeError, match='hits'):
        pipe.send('hits', sample_rate=0.999)
    assert pipe.lines == []


def test_sampling_really_samples(udp):
    client = StatsdClient('127.0.0.1', udp.port, sample_rate=0.1)
    random.seed(7)
    with client.pipeline() as pipe:
        for _ in range(2000):
            pipe.increment('sampled')
    client.stop()
    udp.wait_lines(lambda lines: len(udp.datagrams) == client.sent, what='every datagram')
    assert all(line == 'sampled:1|c|@0.1' for line in udp.lines())
    assert 140 < len(udp.lines()) < 260  # about 200 of 2000


def test_send_errors_are_counted_and_logged_once(caplog, udp):
    client = StatsdClient('no-such-host.invalid', 8125)
    client.increment('a')
    client.increment('b')
    assert client.errors == 3 and client.sent == 0  # the lookup, then two sends
    assert len([r for r in caplog.records if 'no-such-host' in r.getMessage()]) == 1
    client = StatsdClient('127.0.0.1', udp.port)
    for _ in range(3):
        client.gauge('x' * 70000, 1)  # too long for a datagram: refused at each send
    client.stop()
    assert client.errors == 3 and client.sent == 0
    assert len([r for r in caplog.records if 'sending to' in r.getMessage()]) == 1


@pytest.mark.parametrize('host', ['a..b', 'x' * 64 + '.example'])
def test_a_host_name_that_cannot_be_encoded_is_a_failed_lookup(host):
    client = StatsdClient(host, 8125)  # no UnicodeError from the IDNA codec
    client.increment('a')
    assert client.errors == 2 and client.sent == 0


def test_human_to_bytes():
    assert human_to_bytes('1.5K') == 1536 and human_to_bytes('2M') == 2 << 20
    assert human_to_bytes('10') == 10
    with pytest.raises(ValueError):
        human_to_bytes('lots')


def test_emitter_options():
    emitter = StatsdEmitter('e', 'p', 5.0, None, application_name='web', port='9999')
    assert emitter.prefix == 'circus.web.watcher' and emitter.statsd.port == 9999
    assert StatsdEmitter('e', 'p', 5.0, prefix='ops.circus').prefix == 'ops.circus'
    assert StatsdEmitter('e', 'p', 5.0, active='false').active is False
    for bad in ({'port': 'http'}, {'sample_rate': '2'}, {'sample_rate': 'x'}):
        with pytest.raises(ConfigError, match=repr(list(bad.values())[0])):
            StatsdEmitter('e', 'p', 5.0, **bad)


def test_emitter_under_circusd(start_circusd, udp):
    circusd = start_circusd(
        watchers={'blink': {'cmd': 'sleep 0.1'}},
        plugins={'statsd': {'use': 'circus_plugins.statsd.StatsdEmitter',
                            'host': '127.0.0.1', 'port': udp.port,
                            'application_name': 'demo'}})
    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.wait(b'watcher.blink.reap')
        udp.wait_lines(lambda lines: 'circus.demo.watcher.blink.spawn:1|c' in lines
                       and 'circus.demo.watcher.blink.reap:1|c' in lines)


def test_emitter_batches_a_burst(udp):
    emitter = StatsdEmitter(*NOWHERE, host='127.0.0.1', port=udp.port)
    with ScriptedCircusd(emitter) as circusd:
        circusd.feed_raw(*[(b'watcher.w%d.spawn' % n, b'{}') for n in range(50)])
        udp.wait_lines(lambda lines: len(lines) == 50)
    assert len(udp.datagrams) < 10


def test_a_stopped_emitter_leaves_nothing_open(udp):
    before = len(os.listdir('/proc/self/fd'))
    emitter = StatsdEmitter(*NOWHERE, host='127.0.0.1', port=udp.port)
    with ScriptedCircusd(emitter) as circusd:
        circusd.feed('web', 'spawn')  # the first send opens the client's socket
    udp.wait_lines(bool)
    assert udp.lines() == ['circus.app.watcher.web.spawn:1|c']
    assert len(os.listdir('/proc/self/fd')) == before


def test_full_stats_under_circusd(start_circusd, udp):
    start_circusd(
        watchers={'sleeper': {'cmd': 'sleep 1000', 'numprocesses': 2}},
        plugins={'stats': {'use': 'circus_plugins.statsd.FullStats', 'host': '127.0.0.1',
                           'port': udp.port, 'loop_rate': '0.2'}})
    names = ['cpu_max', 'cpu_sum', 'mem_pct_max', 'mem_pct_sum', 'mem_max', 'mem_sum',
             'watchers_num']
    udp.wait_lines(lambda lines: all(any(line.startswith('circus.app.watcher._stats.'
                                                         'sleeper.%s:' % n) for line in lines)
                                     for n in names), what='the stats gauges')
    lines = udp.lines()
    assert 'circus.app.watcher._stats.sleeper.watchers_num:2|g' in lines
    mem_max = [float(line.split(':')[1].split('|')[0]) for line in lines
               if '.sleeper.mem_max:' in line]
    assert mem_max[0] > 100000
    assert not any('plugin:' in line for line in lines)


def test_full_stats_counts_errors(caplog):
    def no_reply():
        raise CallError("'stats': no reply")
    stats = FullStats(*NOWHERE, stats_source='poll')
    stats.statsd = recorder = StatsdRecorder()
    with ScriptedCircusd(stats, {'stats': {'status': 'error', 'reason': 'busy'}}) as circusd:
        look_now(circusd)
        circusd.replies['stats'] = no_reply
        look_now(circusd)
    assert recorder.increments == ['_stats.error', '_stats.error'] and not recorder.gauges
    assert 'stats failed: busy' in caplog.text and "stats failed: 'stats': no reply" in \
        caplog.text


def test_full_stats_reads_stats_as_the_resource_watcher_does():
    stats = FullStats(*NOWHERE, stats_source='poll')
    stats.statsd = recorder = StatsdRecorder()
    # JSON's true and 'N/A' are no figures; a process that ended meanwhile is a string.
    web = {'1': {'pid': 1, 'cpu': True, 'mem': 'N/A', 'mem_info1': 'N/A'},
           '2': {'pid': 2, 'cpu': 12.5, 'mem': 1.5, 'mem_info1': '2K'},
           '3': 'No such process (stopped?)'}
    reply = {'status': 'ok', 'infos': {'web': web, 'plugin:stats': {'4': {'cpu': 1.0}}}}
    with ScriptedCircusd(stats, {'stats': reply}) as circusd:
        circusd.feed('web', 'spawn')
        circusd.feed('web', 'spawn')
        look_now(circusd)
    assert recorder.gauges == [('_stats.web.spawn_count', 2), ('_stats.web.watchers_num', 2),
                               ('_stats.web.cpu_max', 12.5), ('_stats.web.cpu_sum', 12.5),
                               ('_stats.web.mem_pct_max', 1.5), ('_stats.web.mem_pct_sum', 1.5),
                               ('_stats.web.mem_max', 2048), ('_stats.web.mem_sum', 2048)]


def stat(watcher, pid, **figures):
    body = dict({'pid': pid, 'subtopic': pid, 'cpu': 0.0, 'mem': 0.1, 'mem_info1': '1K',
                 'children': []}, **figures)
    return ('stat.%s.%d' % (watcher, pid)).encode(), json.dumps(body).encode()


def test_full_stats_gauges_from_the_stream():
    stats = FullStats(*NOWHERE, stats_source='stream')
    stats.statsd = recorder = StatsdRecorder()
    with ScriptedCircusd(stats, ignore=['globaloptions', 'list']) as circusd:
        circusd.feed('web', 'spawn', process_pid=1)
        circusd.on_loop(lambda: [stats.handle_stats(data) for data in (
            stat('web', 1, cpu=12.5, mem=1.5, mem_info1='2K'), stat('web', 2, cpu='N/A'),
            stat('db', 3), stat('plugin:stats', 4), (b'stat.web', b'{"pid": [1, 2]}'),
            stat('circus', 5))])
        look_now(circusd)
        assert recorder.gauges == [
            ('_stats.db.watchers_num', 1), ('_stats.db.cpu_max', 0.0),
            ('_stats.db.cpu_sum', 0.0), ('_stats.db.mem_pct_max', 0.1),
            ('_stats.db.mem_pct_sum', 0.1), ('_stats.db.mem_max', 1024),
            ('_stats.db.mem_sum', 1024),
            ('_stats.web.spawn_count', 1), ('_stats.web.watchers_num', 2),
            ('_stats.web.cpu_max', 12.5), ('_stats.web.cpu_sum', 12.5),
            ('_stats.web.mem_pct_max', 1.5), ('_stats.web.mem_pct_sum', 1.6),
            ('_stats.web.mem_max', 2048), ('_stats.web.mem_sum', 3072)]
        # A stopped watcher is still gauged, with no process, as stats reports it; a
        # removed one is not.
        circusd.feed('web', 'stop')
        circusd.feed('db', 'remove')
        del recorder.gauges[:]
        look_now(circusd)
        assert recorder.gauges == [('_stats.web.spawn_count', 1),
                                   ('_stats.web.watchers_num', 0)]
        assert circusd.no_command()  # no stats asked


def test_full_stats_reads_the_stream_once_it_is_live(start_circusd):
    circusd = start_circusd(watchers={'sleeper': {'cmd': 'sleep 1000', 'numprocesses': 2}},
                            circus={'statsd': True})
    with CommandCounter(circusd.endpoint) as counter:
        stats = FullStats(counter.endpoint, circusd.pubsub_endpoint, 1.0, loop_rate='0.2')
        stats.statsd = recorder = StatsdRecorder()
        with stats:
            wait_for(lambda: stats.stats_live, timeout=8, what='the stream')
            asked = counter.counts['stats']
            del recorder.gauges[:]
            # Two rounds: the second cannot come from a stats asked before.
            wait_for(lambda: recorder.gauges.count(('_stats.sleeper.watchers_num', 2)) >= 2
                     and ('_stats.circusd-stats.watchers_num', 1) in recorder.gauges,
                     what='the gauges from the stream')
            assert counter.counts['stats'] == asked, (dict(counter.counts), asked)
    mem_max = [value for name, value in recorder.gauges if name == '_stats.sleeper.mem_max']
    assert mem_max[0] > 100000


def test_full_stats_with_psutil_lists_once_then_follows_events():
    sleeper = subprocess.Popen(['sleep', '30'])

    def listing(name=None):
        if name is None:
            return {'status': 'ok', 'watchers': ['web', 'plugin:stats']}
        return {'status': 'ok', 'pids': [os.getpid()]}

    def commands(circusd):
        circusd.settle()
        return sorted((command, sorted(props.items())) for command, props in iter(
            lambda: circusd.commands.get_nowait() if not circusd.commands.empty() else None,
            None))
    stats = FullStats(*NOWHERE, stats_source='psutil')
    stats.statsd = recorder = StatsdRecorder()
    try:
        with ScriptedCircusd(stats, {'list': listing}) as circusd:
            look_now(circusd)
            assert commands(circusd) == [('list', []), ('list', [('name', 'web')])]
            assert ('_stats.web.watchers_num', 1) in recorder.gauges
            # The pids follow the events: no more list.
            circusd.feed('web', 'spawn', process_pid=sleeper.pid)
            look_now(circusd)
            assert circusd.no_command()
            assert dict(recorder.gauges)['_stats.web.watchers_num'] == 2
            # Events may have been missed (a reconnection): everything is asked again.
            circusd.on_loop(stats.refresh_everything)
            look_now(circusd)
            assert commands(circusd) == [('list', []), ('list', [('name', 'web')])]
    finally:
        end_process(sleeper)


def test_full_stats_reads_the_processes_with_psutil_asking_no_stats(start_circusd):
    hog = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'resource_hog.py')
    circusd = start_circusd(watchers={
        'sleeper': {'cmd': 'sleep 1000', 'numprocesses': 2},
        'busy': {'cmd': '%s %s cpu' % (sys.executable, hog)}})
    with CommandCounter(circusd.endpoint) as counter:
        stats = FullStats(counter.endpoint, circusd.pubsub_endpoint, 1.0, loop_rate='0.2')
        stats.statsd = recorder = StatsdRecorder()
        stats.safety_refresh = 1e9  # its spread refresh is not what is counted here
        with stats:
            # A busy process shows CPU (its first reading is 0.0, as circusd's).
            wait_for(lambda: ('_stats.sleeper.watchers_num', 2) in recorder.gauges and any(
                name == '_stats.busy.cpu_max' and value > 5
                for name, value in recorder.gauges), timeout=8, what='the busy CPU')
            lists = counter.counts['list']
            rounds = recorder.gauges.count(('_stats.sleeper.watchers_num', 2))
            wait_for(lambda: recorder.gauges.count(('_stats.sleeper.watchers_num', 2))
                     >= rounds + 3, what='three more rounds')
            # The pids come from events now: no more list (until the safety refresh).
            assert counter.counts['list'] == lists <= 4, dict(counter.counts)
    assert counter.counts['stats'] == 0, dict(counter.counts)
    figures = dict(recorder.gauges)
    assert 100000 < figures['_stats.sleeper.mem_max'] < figures['_stats.sleeper.mem_sum']
    assert 0 < figures['_stats.sleeper.mem_pct_max'] < 5


# -- a replaced client -----------------------------------------------------------------------

def no_errors_logged(caplog):
    return not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_replaced_client_gets_the_emitter_counts(udp, caplog):
    emitter = StatsdEmitter(*NOWHERE, host='127.0.0.1', port=udp.port)
    with UdpReceiver() as other:
        emitter.statsd = StatsdClient('127.0.0.1', other.port, prefix='other')
        with ScriptedCircusd(emitter) as circusd:
            circusd.feed_raw((b'watcher.web.spawn', b'{}'), (b'watcher.web.reap', b'{}'))
            other.wait_lines(lambda lines: len(lines) == 2)
            assert other.lines() == ['other.web.spawn:1|c', 'other.web.reap:1|c']
            recorder = StatsdRecorder()
            emitter.statsd = recorder  # and again while it runs
            circusd.feed('web', 'kill')
            circusd.feed('web', 'kill')
            assert recorder.increments == ['web.kill', 'web.kill']
        # Stopped: everything has been sent, and none of it to the first client.
        assert udp.receive(0) == [] and other.receive(0) == []
    assert no_errors_logged(caplog), caplog.text  # the recorder has no stop(): fine


def test_a_replaced_client_gets_the_full_stats_errors(udp):
    stats = FullStats('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, host='127.0.0.1',
                      port=udp.port, loop_rate='0.1', call_timeout='0.2')
    with UdpReceiver() as other:
        stats.statsd = StatsdClient('127.0.0.1', other.port, prefix='other')
        with stats:
            other.wait_lines(lambda lines: 'other._stats.error:1|c' in lines)
        assert udp.receive(0) == []


def test_full_stats_gauges_go_to_a_recorder_as_in_circus_tests(circusd, udp, caplog):
    stats = FullStats(circusd.endpoint, circusd.pubsub_endpoint, 1.0, loop_rate='0.1',
                      host='127.0.0.1', port=udp.port)
    stats.statsd = recorder = StatsdRecorder()
    wanted = {'_stats.sleeper.%s' % name for name in (
        'cpu_max', 'cpu_sum', 'mem_pct_max', 'mem_pct_sum', 'mem_max', 'mem_sum',
        'watchers_num')}
    with stats:
        wait_for(lambda: wanted <= {name for name, _ in recorder.gauges}, timeout=8,
                 what='the stats gauges in the recorder')
    assert ('_stats.sleeper.watchers_num', 1) in recorder.gauges
    assert udp.receive(0) == []
    assert no_errors_logged(caplog), caplog.text


# -- against the real statsd daemon -----------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATSD_JS = os.path.join(ROOT, '.cache', 'statsd', 'node_modules', 'statsd', 'stats.js')

# One ``key: number`` entry of the object node's util.inspect() prints for ``counters`` and
# ``gauges``: keys are quoted (either quote) unless they are identifiers.
_ENTRY = re.compile(r"""(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([A-Za-z_$][\w$]*))"""
                    r"""\s*:\s*(-?(?:Infinity|NaN|\d+(?:\.\d*)?(?:e[+-]?\d+)?))""")


def parse_inspected(text: str) -> dict:
    """``{ 'a.b': 2, c: -1.5 }`` (then ``END``) -> ``{'a.b': 2.0, 'c': -1.5}``."""
    body = text.rsplit('END', 1)[0].strip()
    if not (body.startswith('{') and body.endswith('}')):
        raise ValueError('statsd answered %r, not an object' % text)
    leftover = _ENTRY.sub('', body).strip('{}, \n')
    if leftover:  # a nested value, "... more items": anything we would misread
        raise ValueError('cannot read %r in statsd\'s answer %r' % (leftover, text))
    return {a or b or c: float(value) for a, b, c, value in _ENTRY.findall(body)}


class StatsdDaemon:
    """Etsy's statsd 0.9.0 (node) on free loopback ports, with no backend and a flush
    interval of an hour, so that its counters keep their totals during a test."""

    def __init__(self, workdir) -> None:
        self.workdir = str(workdir)
        self.port = free_port(socket.SOCK_DGRAM)
        self.mgmt_port = free_port()
        self.config_path = os.path.join(self.workdir, 'statsd-config.js')
        self.log_path = os.path.join(self.workdir, 'statsd.log')
        with open(self.config_path, 'w', encoding='utf-8') as config:
            config.write('{port: %d, mgmt_port: %d, address: "127.0.0.1", '
                         'mgmt_address: "127.0.0.1", flushInterval: 3600000, backends: []}\n'
                         % (self.port, self.mgmt_port))
        self.process = None
        self._probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def start(self) -> 'StatsdDaemon':
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(['node', STATSD_JS, self.config_path], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.workdir)
        # Ready when the admin port answers and a probe sent over UDP has been counted.
        wait_for(self._ready, 8, interval=0.05, what='the statsd daemon to start')
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError('statsd exited with %s:\n%s' % (self.process.returncode,
                                                               self.log()))
        try:
            self._probe.sendto(b'test.probe:0|g', ('127.0.0.1', self.port))
            return 'test.probe' in self.query('gauges')
        except OSError:
            return False

    def query(self, command: str) -> dict:
        """Ask the admin port (``counters``, ``gauges``) and read the object it answers."""
        with socket.create_connection(('127.0.0.1', self.mgmt_port), timeout=3) as sock:
            sock.sendall(command.encode() + b'\n')
            data = b''
            while not data.rstrip().endswith(b'END'):
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError('statsd closed the connection after %r' % data)
                data += chunk
        return parse_inspected(data.decode('utf-8'))

    def counters(self) -> dict:
        return self.query('counters')

    def log(self) -> str:
        with open(self.log_path, encoding='utf-8', errors='replace') as log:
            return log.read()

    def stop(self) -> None:
        self._probe.close()
        end_process(self.process)


@pytest.fixture
def statsd_daemon(tmp_path):
    """The real statsd daemon, skipped where ``./dev test`` could not install it."""
    if shutil.which('node') is None or not os.path.exists(STATSD_JS):
        pytest.skip('needs node and statsd 0.9.0 at %s (./dev test installs it with npm)'
                    % STATSD_JS)
    daemon = StatsdDaemon(tmp_path)
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def test_parse_inspected():
    assert parse_inspected("{\n  'statsd.bad_lines_seen': 0,\n  'a.b': 6,\n  plugin: 1\n}\n"
                           "END\n\n") == {'statsd.bad_lines_seen': 0, 'a.b': 6, 'plugin': 1}
    assert parse_inspected("{ 'g.h': -2.5, \"it's\": 1e+21 }\nEND\n") == {
        'g.h': -2.5, "it's": 1e21}
    assert parse_inspected('{}\nEND\n\n') == {}
    with pytest.raises(ValueError):
        parse_inspected("{ 'a': [ 1, 2 ] }\nEND\n")


def watcher_counts(pairs, watcher: str) -> dict:
    """``{action: number}`` for ``watcher`` from ``(bucket or topic, count)`` pairs."""
    counts = collections.Counter()
    for name, count in pairs:
        head, _, action = name.rpartition('.')
        if head.endswith('.' + watcher):
            counts[action] += count
    return dict(counts)


def test_emitter_counts_in_the_real_statsd_equal_the_events(start_circusd, statsd_daemon):
    circusd = start_circusd(
        watchers={'blink': {'cmd': 'sleep 0.2', 'numprocesses': 2, 'autostart': 'false'},
                  'sleeper': {'cmd': 'sleep 1000'}},
        plugins={'statsd': {'use': 'circus_plugins.statsd.StatsdEmitter',
                            'host': '127.0.0.1', 'port': statsd_daemon.port}},
        # blink's processes are reaped, and replaced, at each check: ten reaps in about
        # 1.5 s rather than 5 s of the 8 s waited for them.
        circus={'check_delay': 0.3})
    pid = wait_for(lambda: circusd.pids('plugin:statsd'), what='the plugin')[0]
    wait_connected(pid, circusd.pubsub_endpoint)
    prefix = 'circus.app.watcher.'

    def daemon_counts(watcher):
        return watcher_counts([(name, value) for name, value
                               in statsd_daemon.counters().items()
                               if name.startswith(prefix)], watcher)

    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.sync(circusd, 'sleeper')
        # The plugin hears events too once the daemon has counted the sleeper's.
        wait_for(lambda: daemon_counts('sleeper').get('spawn'), timeout=8,
                 what='the plugin to count the sleeper')
        assert circusd.call('start', name='blink')['status'] == 'ok'

        def recorded():
            events.poll()
            return watcher_counts([(topic.decode(), 1) for topic, _ in events.events],
                                  'blink')
        wait_for(lambda: recorded().get('reap', 0) >= 10, timeout=8,
                 what='ten processes of blink to come and go')
        assert circusd.call('stop', name='blink')['status'] == 'ok'
        events.wait(b'watcher.blink.stop')
        settled = recorded()
        caught_up(circusd, events, 'sleeper')
        assert recorded() == settled, 'blink events after its stop'

    assert settled['spawn'] >= 10 and settled['reap'] >= 10
    assert settled['start'] == settled['stop'] == 1
    try:
        wait_for(lambda: daemon_counts('blink') == settled, timeout=5, interval=0.05,
                 what='the daemon to count every event')
    except TimeoutError:
        pass  # the assertion below shows the difference
    assert daemon_counts('blink') == settled
    counters = statsd_daemon.counters()
    assert counters['statsd.bad_lines_seen'] == 0


def test_sampled_counter_in_the_real_statsd_is_near_the_true_count(statsd_daemon):
    received = statsd_daemon.counters()['statsd.metrics_received']
    client = StatsdClient('127.0.0.1', statsd_daemon.port, sample_rate=0.5)
    random.seed(11)
    lines = 0
    try:
        for _ in range(40):
            with client.pipeline() as pipe:
                for _ in range(50):
                    pipe.increment('sampled.hits')
                lines += len(pipe.lines)
    finally:
        client.stop()
    wait_for(lambda: statsd_daemon.counters()['statsd.metrics_received'] >= received + lines,
             timeout=5, interval=0.05, what='the daemon to receive every line')
    counters = statsd_daemon.counters()
    assert counters['statsd.metrics_received'] == received + lines
    assert 800 < lines < 1200  # about half of the 2000 increments went out...
    assert counters['sampled.hits'] == 2 * lines  # ...each counting for two
    assert 1600 < counters['sampled.hits'] < 2400  # so the total is near the true 2000
    assert counters['statsd.bad_lines_seen'] == 0


def test_emitter_from_circus_plugin(start_circusd, udp):
    circusd = start_circusd(watchers={'blink': {'cmd': 'sleep 0.1'}})
    config = {'host': '127.0.0.1', 'port': udp.port, 'application_name': 'cli'}
    with PluginProcess('circus_plugins.statsd.StatsdEmitter', circusd,
                       config=config) as plugin:
        udp.wait_lines(lambda lines: 'circus.cli.watcher.blink.reap:1|c' in lines)
    assert plugin.returncode == 0

