"""The statsd client and plugins: wire format, batching, sampling, and under circusd."""
import random

import pytest

from circus_plugins import ConfigError
from circus_plugins.statsd import FullStats, StatsdClient, StatsdEmitter, human_to_bytes
from circus_plugins.testing import EventRecorder


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


def test_sampling_really_samples(udp):
    client = StatsdClient('127.0.0.1', udp.port, sample_rate=0.1)
    random.seed(7)
    with client.pipeline() as pipe:
        for _ in range(2000):
            pipe.increment('sampled')
    client.stop()
    lines = udp.wait_lines(lambda lines: lines and lines)
    udp.receive(0.2)
    assert all(line == 'sampled:1|c|@0.1' for line in udp.lines())
    assert 140 < len(udp.lines()) < 260  # about 200 of 2000


def test_send_errors_are_counted_and_logged_once(caplog):
    client = StatsdClient('no-such-host.invalid', 8125)
    client.increment('a')
    client.increment('b')
    assert client.errors == 2 and client.sent == 0
    assert len([r for r in caplog.records if 'no-such-host' in r.getMessage()]) == 1
    client.stop()


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
    emitter = StatsdEmitter('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                            host='127.0.0.1', port=udp.port)
    with emitter:
        def burst():
            for n in range(50):
                emitter.handle_recv((b'watcher.w%d.spawn' % n, b'{}'))
        emitter.loop.add_callback(burst)
        udp.wait_lines(lambda lines: len(lines) == 50)
    assert len(udp.datagrams) < 10


def test_full_stats_under_circusd(start_circusd, udp):
    circusd = start_circusd(
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


def test_full_stats_counts_errors(udp):
    stats = FullStats('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, host='127.0.0.1',
                      port=udp.port, loop_rate='0.1', call_timeout='0.2')
    with stats:
        udp.wait_lines(lambda lines: 'circus.app.watcher._stats.error:1|c' in lines)
