"""RedisObserver against a real redis-server on 127.0.0.1, under circusd and circus-plugin."""
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest

from circus_plugins import ConfigError
from circus_plugins.errors import PluginLoadError
from circus_plugins.redis_observer import OBSERVE, RedisObserver
from circus_plugins.statsd import StatsdClient
from circus_plugins.testing import PluginProcess, ScriptedCircusd, UdpReceiver, free_port, \
    wait_for
from conftest import StatsdRecorder, end_process, look_now, observer_options

PREFIX = 'circus.redis_observer.watcher.'
REDIS_SERVER = shutil.which('redis-server') or '/usr/bin/redis-server'


class RedisServer:
    """A redis-server on a free port of 127.0.0.1, persisting nothing."""

    def __init__(self, workdir, *args):
        self.port = free_port()
        self.url = 'redis://127.0.0.1:%d/0' % self.port
        self.process = subprocess.Popen(
            [REDIS_SERVER, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no', '--dir', str(workdir)] + list(args),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, timeout=8, interval=0.02, what='redis-server to answer PING')

    def answers(self):
        assert self.process.poll() is None, 'redis-server exited'
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=0.5) as conn:
                conn.sendall(b'PING\r\n')
                return conn.recv(64).startswith((b'+PONG', b'-NOAUTH'))
        except OSError:
            return False

    def info(self):
        """INFO's fields, read with the synchronous client."""
        import redis
        client = redis.Redis(host='127.0.0.1', port=self.port, socket_timeout=2)
        try:
            return client.info()
        finally:
            client.close()

    def stop(self):
        end_process(self.process, 8)


@pytest.fixture
def redis_server(tmp_path):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip('redis-server is not installed (apt-get install redis-server)')
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def gauged(lines):
    """``{field: value}`` of the redis_stats gauges in ``lines``."""
    start = PREFIX + 'redis_stats.'
    return {line[len(start):].split(':')[0]: float(line.split(':')[1].split('|')[0])
            for line in lines if line.startswith(start) and line.endswith('|g')}


def plugin_options(url, udp, **extra):
    return observer_options('circus_plugins.redis_observer.RedisObserver', 'redis_url', url, udp, **extra)


def test_options():
    plugin = RedisObserver('e', 'p', 5.0)
    assert (plugin.name, plugin.redis_url, plugin.timeout, plugin.restart_on_timeout) == (
        'redis_observer', 'redis://localhost:6379/0', 5.0, None)
    assert plugin.prefix == 'circus.redis_observer.watcher'
    plugin = RedisObserver('e', 'p', 5.0, redis_url='unix:///tmp/redis.sock',
                           timeout='0.5', restart_on_timeout='cache')
    assert (plugin.redis_url, plugin.timeout, plugin.restart_on_timeout) == (
        'unix:///tmp/redis.sock', 0.5, 'cache')
    for bad in ({'timeout': 'soon'}, {'timeout': '0'},
                {'redis_url': 'http://localhost:6379/'}):
        with pytest.raises(ConfigError, match='redis_observer.*%s.*%r'
                           % (list(bad)[0], list(bad.values())[0])):
            RedisObserver('e', 'p', 5.0, **bad)


@pytest.fixture
def no_redis_client(monkeypatch):
    """Make ``import redis`` fail, as it does where redis-py is not installed."""
    for name in [n for n in sys.modules if n == 'redis' or n.startswith('redis.')]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, 'redis', None)


def test_without_the_redis_client(no_redis_client):
    with pytest.raises(PluginLoadError) as info:
        RedisObserver('e', 'p', 5.0)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith('plugin redis_observer needs redis-py')
    assert message.endswith('pip install circus-plugins[redis]')


def test_without_the_redis_client_from_circus_plugin():
    code = ("import sys; sys.modules['redis'] = None; "
            "from circus_plugins.cli import main; sys.exit(main())")
    result = subprocess.run(
        [sys.executable, '-c', code, '--endpoint', 'tcp://127.0.0.1:%d' % free_port(),
         '--pubsub', 'tcp://127.0.0.1:%d' % free_port(),
         'circus_plugins.redis_observer.RedisObserver'],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if '[INFO]' not in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith('circus-plugin: error: plugin redis_observer needs')
    assert errors[0].endswith('pip install circus-plugins[redis]')


def expected_fields(redis_server):
    """circus's fields that this Redis reports: the ones the plugin must send."""
    info = redis_server.info()
    return {field for field in OBSERVE if field in info}


def test_gauges_from_a_live_redis_under_circusd(start_circusd, udp, redis_server):
    expected = expected_fields(redis_server)
    assert {'used_memory', 'connected_clients', 'uptime_in_seconds'} <= expected
    circusd = start_circusd(plugins={'redis': plugin_options(redis_server.url, udp)})
    udp.wait_lines(lambda lines: expected <= set(gauged(lines)), what='the INFO gauges')
    gauges = gauged(udp.lines())
    assert set(gauges) <= set(OBSERVE)
    assert gauges['used_memory'] > 100000 and gauges['connected_clients'] >= 1
    assert not any('redis_stats.error' in line for line in udp.lines())
    missing = set(OBSERVE) - expected
    if missing:  # Redis >= 5: reported once, not an error
        wait_for(lambda: 'this Redis does not report' in circusd.log(),
                 what='the missing fields to be logged')
        assert circusd.log().count('this Redis does not report') == 1
        assert not missing & set(gauges)
    assert 'Traceback' not in circusd.log()


def test_fields_this_redis_lacks_are_skipped_and_said_once(redis_server, caplog):
    expected = expected_fields(redis_server)
    plugin = RedisObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                           redis_url=redis_server.url)
    plugin.statsd = recorder = StatsdRecorder()
    caplog.set_level(logging.INFO, logger='circus_plugins')
    with ScriptedCircusd(plugin) as circusd:
        for _ in range(3):
            look_now(circusd)
        assert circusd.no_command()
    assert sorted(name for name, _ in recorder.gauges) == sorted(
        ['redis_stats.%s' % field for field in expected] * 3)
    said = [r.getMessage() for r in caplog.records if 'does not report' in r.getMessage()]
    missing = [field for field in OBSERVE if field not in expected]
    assert said == (['this Redis does not report %s: not sent' % ', '.join(missing)]
                    if missing else [])


def test_restarts_the_watcher_when_redis_is_gone(start_circusd, udp, redis_server):
    circusd = start_circusd(
        watchers={'cache': {'cmd': 'sleep 1000'}},
        # 2 s: a loaded machine does not make a live Redis look gone (and a stopped one
        # refuses at once).
        plugins={'redis': plugin_options(redis_server.url, udp, timeout='2',
                                         restart_on_timeout='cache')})
    pids = wait_for(lambda: circusd.pids('cache'), what='cache to run')
    udp.wait_lines(lambda lines: 'used_memory' in gauged(lines), what='a gauge')
    assert circusd.pids('cache') == pids
    redis_server.stop()
    wait_for(lambda: circusd.pids('cache') and circusd.pids('cache') != pids, timeout=8,
             what='cache to be restarted')
    udp.wait_lines(lambda lines: PREFIX + 'redis_stats.error:1|c' in lines
                   and PREFIX + 'redis_stats.restart_on_error:1|c' in lines,
                   what='the error and restart counters')
    assert 'cache: restarted, as Redis did not answer' in circusd.log()


def test_a_redis_that_never_answers_times_out(udp):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(('127.0.0.1', 0))
        silent.listen(16)
        plugin = RedisObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                               redis_url='redis://127.0.0.1:%d/0' % silent.getsockname()[1],
                               timeout='0.2', loop_rate='0.1', host='127.0.0.1',
                               port=udp.port)
        with plugin:
            # Two checks failed, each within the timeout (and one retry): the loop goes on.
            udp.wait_lines(lambda lines: lines.count(PREFIX + 'redis_stats.error:1|c') >= 2,
                           what='two errors')
        assert not gauged(udp.lines())


def test_runs_from_circus_plugin(start_circusd, udp, redis_server):
    expected = expected_fields(redis_server)
    circusd = start_circusd(watchers={'cache': {'cmd': 'sleep 1000'}})
    pids = wait_for(lambda: circusd.pids('cache'), what='cache to run')
    config = {'redis_url': redis_server.url, 'loop_rate': '0.2', 'timeout': '0.5',
              'host': '127.0.0.1', 'port': udp.port, 'restart_on_timeout': 'cache'}
    with PluginProcess('circus_plugins.redis_observer.RedisObserver', circusd,
                       config=config) as plugin:
        udp.wait_lines(lambda lines: expected <= set(gauged(lines)), timeout=8,
                       what='the INFO gauges')
        redis_server.stop()
        wait_for(lambda: circusd.pids('cache') and circusd.pids('cache') != pids,
                 timeout=8, what='cache to be restarted')
        plugin.stop(timeout=8)
    stderr = plugin.log()
    assert plugin.returncode == 0, stderr
    assert 'cache: restarted, as Redis did not answer' in stderr
    assert 'Traceback' not in stderr


def test_a_replaced_client_gets_the_metrics(udp, redis_server):
    plugin = RedisObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                           redis_url=redis_server.url, loop_rate='0.1', timeout='0.5',
                           host='127.0.0.1', port=udp.port)
    with UdpReceiver() as other:
        plugin.statsd = StatsdClient('127.0.0.1', other.port, prefix='other')
        with plugin:
            other.wait_lines(lambda lines: 'other.redis_stats.used_memory' in
                             {line.split(':')[0] for line in lines}, what='a gauge')
            redis_server.stop()
            other.wait_lines(lambda lines: 'other.redis_stats.error:1|c' in lines,
                             what='an error count')
        assert udp.receive(0) == []  # stopped: all was sent, none of it here


# -- credentials are never shown -------------------------------------------------------------

PASSWORD = 'Redis-pA55w0rd-never-shown'
#: How a refused password is logged: redis-py 4.4 and later raise AuthenticationError;
#: 4.2 and 4.3 do not know the WRONGPASS reply of Redis 6 and later, a ResponseError.
REFUSED = ('AuthenticationError', 'ResponseError: WRONGPASS')


def assert_hidden(text):
    assert text, 'nothing to look at'
    for secret in (PASSWORD, 'pA55', 'never'):
        assert secret not in text, text


@pytest.fixture
def guarded_redis(tmp_path):
    """A redis-server that wants a password other than PASSWORD."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip('redis-server is not installed (apt-get install redis-server)')
    server = RedisServer(tmp_path, '--requirepass', 'the-right-one')
    yield server
    server.stop()


def test_credentials_never_appear_in_logs(caplog, udp, guarded_redis):
    caplog.set_level(logging.DEBUG)  # every logger, redis-py's and asyncio's included
    with socket.socket() as silent:  # accepts connections, never answers: a timeout
        silent.bind(('127.0.0.1', 0))
        silent.listen(16)
        cases = [(guarded_redis.port, REFUSED, ('', 'default')),
                 (free_port(), ('ConnectionError',), ('',)),
                 (silent.getsockname()[1], ('TimeoutError',), ('',))]
        for port, what, users in cases:
            for url in ['redis://%s:%s@127.0.0.1:%d/0' % (user, PASSWORD, port)
                        for user in users]:
                caplog.clear()
                plugin = RedisObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                                       redis_url=url, timeout='0.2', loop_rate='0.1',
                                       call_timeout='0.2', restart_on_timeout='web',
                                       host='127.0.0.1', port=udp.port)
                with plugin:
                    wait_for(lambda: any('INFO from %s failed: %s' % (
                        url.replace(PASSWORD, '***'), error) in caplog.text
                        for error in what), what='a failed INFO')
                    if what != REFUSED:  # no restart for a bad password
                        wait_for(lambda: 'web: could not restart it' in caplog.text,
                                 what='the restart to fail (no circusd)')
                assert_hidden(caplog.text)


def test_a_confirmed_restart_is_emitted_without_secrets(collector):
    url = 'redis://:%s@127.0.0.1:%d/0' % (PASSWORD, free_port())  # nothing listens
    plugin = RedisObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, redis_url=url,
                           timeout='0.5', restart_on_timeout='cache')
    plugin.statsd = StatsdRecorder()
    with ScriptedCircusd(plugin) as circusd:
        circusd.replies['restart'] = {'status': 'error', 'reason': 'no', 'errno': 3}
        look_now(circusd)  # refused: nothing happened, nothing said
        assert circusd.next_command(timeout=0) == ('restart', {'name': 'cache'})
        assert collector.none_yet()
        circusd.replies['restart'] = {'status': 'ok'}
        look_now(circusd)
    watcher, action, body = collector.next_event()
    assert (watcher, action, body['plugin']) == ('cache', 'redis_restart', 'redis_observer')
    assert body['url'] == url.replace(PASSWORD, '***')
    assert body['error'].startswith('ConnectionError: ')
    assert_hidden(json.dumps(body))
    assert collector.none_yet()


@pytest.mark.parametrize('url', [
    'redis://:%s@127.0.0.1:70000/0', 'redis://:%s@127.0.0.1:port/0',
    'redis://:%s@127.0.0.1:0/0', 'redis://:%s@127.0.0.1/notadb', 'http://:%s@127.0.0.1/',
    'redis://:%s@[::1', 'redis://u:%s@h/0?socket_timeout=soon',
    'redis://:Redis-pA55w0rd/never-shown@h:6379/0',  # a raw "/" in the password
])
def test_credentials_never_appear_in_option_errors(url):
    with pytest.raises(ConfigError) as info:
        RedisObserver('e', 'p', 5.0, redis_url=url.replace('%s', PASSWORD))
    message = str(info.value)
    assert "option 'redis_url'" in message and ':***@' in message
    assert '\n' not in message
    assert_hidden(message)


def test_credentials_never_appear_in_circus_plugin_debug_output(tmp_path, udp,
                                                              guarded_redis):
    url = 'redis://:%s@127.0.0.1:%d/0' % (PASSWORD, guarded_redis.port)
    config = {'redis_url': url, 'loop_rate': '0.1', 'timeout': '0.5', 'host': '127.0.0.1',
              'port': udp.port}
    with PluginProcess('circus_plugins.redis_observer.RedisObserver', config=config,
                       args=['--log-level', 'debug'], log_path=tmp_path / 'plugin.log',
                       endpoint='tcp://127.0.0.1:%d' % free_port(),
                       pubsub='tcp://127.0.0.1:%d' % free_port()) as plugin:
        wait_for(lambda: sum(plugin.log().count(error) for error in REFUSED) >= 2,
                 timeout=8, what='two refused passwords')
        plugin.stop(timeout=8)
    assert plugin.returncode == 0, plugin.log()
    assert 'redis://:***@127.0.0.1:%d/0' % guarded_redis.port in plugin.log()
    assert_hidden(plugin.log())
