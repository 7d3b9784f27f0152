"""HttpObserver against a real HTTP server on 127.0.0.1, under circusd and circus-plugin."""
import asyncio
import json
import logging
import subprocess
import sys
import threading

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from circus_plugins import ConfigError, encode_config
from circus_plugins.http_observer import HttpObserver
from circus_plugins.statsd import StatsdClient
from circus_plugins.testing import PluginProcess, ScriptedCircusd, UdpReceiver, free_port, \
    wait_for
from conftest import StatsdRecorder, look_now, modules_loaded, observer_options

PREFIX = 'circus.http_observer.watcher.'


class _Handler(RequestHandler):
    def initialize(self, server):
        self.server = server

    async def get(self):
        self.server.requests += 1
        mode = self.server.mode
        if mode == 'hang':
            await self.server.released.wait()
        elif mode == 'ok':
            self.write('fine')
        else:
            self.set_status(int(mode))
            self.write('not fine')


class Server:
    """A tornado HTTP server on 127.0.0.1, on its own loop in a thread.

    :attr:`mode` says how it answers: ``'ok'`` (200), an HTTP status such as ``'500'``,
    or ``'hang'`` (never).
    """

    def __init__(self, mode='ok'):
        self.mode = mode
        self.requests = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),),
                                        name='http-server', daemon=True)
        self._thread.start()
        assert self._ready.wait(5), 'the HTTP server did not start'
        self.url = 'http://127.0.0.1:%d/' % self.port

    async def _serve(self):
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self.released = asyncio.Event()
        sockets = bind_sockets(0, '127.0.0.1')
        self.port = sockets[0].getsockname()[1]
        server = HTTPServer(Application([('/', _Handler, {'server': self})]))
        server.add_sockets(sockets)
        self._ready.set()
        await self._done.wait()
        server.stop()
        self.released.set()
        await server.close_all_connections()

    def close(self):
        self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(5)


@pytest.fixture
def server():
    server = Server()
    yield server
    server.close()


def values(lines, name):
    """The values of metric ``name`` (without the prefix) in ``lines``."""
    start = PREFIX + name + ':'
    return [float(line[len(start):].split('|')[0]) for line in lines if line.startswith(start)]


def plugin_options(url, udp, **extra):
    return observer_options('circus_plugins.http_observer.HttpObserver', 'check_url', url, udp, **extra)


def test_options():
    plugin = HttpObserver('e', 'p', 5.0)
    assert (plugin.name, plugin.check_url, plugin.timeout, plugin.restart_on_error,
            plugin.loop_rate) == ('http_observer', 'http://localhost/', 10.0, None, 60.0)
    assert plugin.prefix == 'circus.http_observer.watcher'
    plugin = HttpObserver('e', 'p', 5.0, check_url='https://example.test:8443/x',
                          timeout='0.5', restart_on_error='web')
    assert (plugin.check_url, plugin.timeout, plugin.restart_on_error) == (
        'https://example.test:8443/x', 0.5, 'web')
    for bad in ({'timeout': 'soon'}, {'timeout': '0'}, {'check_url': 'localhost'},
                {'check_url': 'ftp://localhost/'}):
        with pytest.raises(ConfigError, match='http_observer.*%s.*%r'
                           % (list(bad)[0], list(bad.values())[0])):
            HttpObserver('e', 'p', 5.0, **bad)


def test_times_a_healthy_server_under_circusd(start_circusd, udp, server):
    circusd = start_circusd(watchers={'web': {'cmd': 'sleep 1000'}},
                            plugins={'http': plugin_options(server.url, udp,
                                                            restart_on_error='web')})
    pids = wait_for(lambda: circusd.pids('web'), what='web to run')
    udp.wait_lines(lambda lines: len(values(lines, 'http_stats.request_time')) >= 3,
                   what='three request times')
    times = values(udp.lines(), 'http_stats.request_time')
    assert all(0 < ms < 2000 for ms in times)
    assert all(line.endswith('|ms') for line in udp.lines() if 'request_time' in line)
    assert not any('http_stats.error' in line for line in udp.lines())
    assert server.requests >= 3 and circusd.pids('web') == pids


def restarted(circusd, pids):
    return lambda: circusd.pids('web') and circusd.pids('web') != pids


def test_restarts_the_watcher_on_a_500_under_circusd(start_circusd, udp, server):
    circusd = start_circusd(watchers={'web': {'cmd': 'sleep 1000'}},
                            plugins={'http': plugin_options(server.url, udp,
                                                            restart_on_error='web')})
    pids = wait_for(lambda: circusd.pids('web'), what='web to run')
    udp.wait_lines(lambda lines: values(lines, 'http_stats.request_time'),
                   what='a request time')
    assert circusd.pids('web') == pids
    server.mode = '500'
    wait_for(restarted(circusd, pids), timeout=8, what='web to be restarted')
    udp.wait_lines(lambda lines: values(lines, 'http_stats.restart_on_error'),
                   what='the restart counter')
    lines = udp.lines()
    assert PREFIX + 'http_stats.error:1|c' in lines
    assert PREFIX + 'http_stats.error.500:1|c' in lines
    assert PREFIX + 'http_stats.restart_on_error:1|c' in lines
    assert 'web: restarted, as %s failed' % server.url in circusd.log()


def test_restarts_the_watcher_when_the_server_does_not_answer(start_circusd, udp, server):
    server.mode = 'hang'
    circusd = start_circusd(watchers={'web': {'cmd': 'sleep 1000'}},
                            plugins={'http': plugin_options(server.url, udp, timeout='0.5',
                                                            restart_on_error='web')})
    pids = wait_for(lambda: circusd.pids('web'), what='web to run')
    wait_for(restarted(circusd, pids), timeout=8, what='web to be restarted')
    udp.wait_lines(lambda lines: PREFIX + 'http_stats.error.599:1|c' in lines
                   and PREFIX + 'http_stats.restart_on_error:1|c' in lines,
                   what='the timeout and restart counters')
    assert not values(udp.lines(), 'http_stats.request_time')
    assert 'Timeout' in circusd.log()


def scripted(server=None, **config):
    """An HttpObserver of ``server`` (or of a port where nothing listens), its metrics
    in a recorder, on a ScriptedCircusd (not started)."""
    url = server.url if server else 'http://127.0.0.1:%d/' % free_port()
    plugin = HttpObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, check_url=url,
                          **config)
    plugin.statsd = StatsdRecorder()
    return ScriptedCircusd(plugin)


def test_without_restart_on_error_only_counts():
    with scripted() as circusd:
        look_now(circusd)
        assert circusd.no_command()
    assert circusd.plugin.statsd.increments == ['http_stats.error', 'http_stats.error.599']


def test_counts_the_restarts_circusd_confirms(server, caplog):
    server.mode = '503'
    with scripted(server, restart_on_error='web') as circusd:
        look_now(circusd)
        assert circusd.next_command(timeout=0) == ('restart', {'name': 'web'})
        circusd.replies['restart'] = {'status': 'error', 'reason': 'no', 'errno': 3}
        look_now(circusd)
        assert circusd.next_command(timeout=0) == ('restart', {'name': 'web'})
        server.mode = 'ok'
        look_now(circusd)
        assert circusd.no_command()
    recorder = circusd.plugin.statsd
    assert recorder.increments == ['http_stats.error', 'http_stats.error.503',
                                   'http_stats.restart_on_error'] + [
                                   'http_stats.error', 'http_stats.error.503']
    assert [name for name, _ in recorder.timings] == ['http_stats.request_time']
    assert 'web: could not restart it: no' in caplog.text


def test_runs_from_circus_plugin(start_circusd, udp):
    circusd = start_circusd(watchers={'web': {'cmd': 'sleep 1000'}})
    pids = wait_for(lambda: circusd.pids('web'), what='web to run')
    url = 'http://127.0.0.1:%d/' % free_port()  # a closed port: refused
    config = {'check_url': url, 'loop_rate': '0.2', 'timeout': '0.5', 'host': '127.0.0.1',
              'port': udp.port, 'restart_on_error': 'web'}
    with PluginProcess('circus_plugins.http_observer.HttpObserver', circusd,
                       config=config) as plugin:
        wait_for(restarted(circusd, pids), timeout=8, what='web to be restarted')
        udp.wait_lines(lambda lines: PREFIX + 'http_stats.error.599:1|c' in lines
                       and PREFIX + 'http_stats.restart_on_error:1|c' in lines,
                       what='the error and restart counters')
        plugin.stop(timeout=8)
    stderr = plugin.log()
    assert plugin.returncode == 0, stderr
    assert 'web: restarted, as %s failed' % url in stderr
    assert 'ConnectionRefusedError' in stderr


def test_a_replaced_client_gets_the_metrics(udp, server):
    plugin = HttpObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                          check_url=server.url, loop_rate='0.1', host='127.0.0.1',
                          port=udp.port)
    with UdpReceiver() as other:
        plugin.statsd = StatsdClient('127.0.0.1', other.port, prefix='other')
        with plugin:
            other.wait_lines(lambda lines: any(line.startswith(
                'other.http_stats.request_time:') for line in lines), what='a request time')
            server.mode = '500'
            other.wait_lines(lambda lines: 'other.http_stats.error.500:1|c' in lines,
                             what='an error count')
        assert udp.receive(0) == []  # stopped: all was sent, none of it here


# -- credentials are never shown -------------------------------------------------------------

# Percent-encoded, as a URL needs it (a raw "/" would end the host part).
PASSWORD = 'pA55-w0rd%2Fnever+shown'
TOKEN = 'T0ken-never-shown'


def secret_url(port, host='127.0.0.1'):
    return 'http://watch:%s@%s:%s/?token=%s&lang=en' % (PASSWORD, host, port, TOKEN)


def shown_url(port):
    return 'http://watch:***@127.0.0.1:%s/?token=***&lang=en' % port


def assert_hidden(text):
    assert text, 'nothing to look at'
    for secret in (PASSWORD, TOKEN, 'pA55', 'never', 'w0rd'):
        assert secret not in text, text


def test_credentials_never_appear_in_logs(caplog, monkeypatch, udp, server):
    caplog.set_level(logging.DEBUG)  # every logger, tornado's and asyncio's included...
    monkeypatch.setattr(logging.getLogger('tornado.access'), 'disabled', True)  # not the
    # test server's own, which is no part of the plugin
    refused = free_port()
    for port, mode in ((refused, 'ok'), (server.port, '500'), (server.port, 'hang')):
        server.mode = mode
        caplog.clear()
        plugin = HttpObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                              check_url=secret_url(port), loop_rate='0.1', timeout='0.3',
                              call_timeout='0.2', restart_on_error='web',
                              host='127.0.0.1', port=udp.port)
        with plugin:  # circusd is absent: the restart fails and says so too
            wait_for(lambda: 'web: could not restart it' in caplog.text, what='a failure')
        assert [r.name for r in caplog.records if r.getMessage().startswith(
            '%s failed: ' % shown_url(port))] == ['circus_plugins.http_observer']
        assert_hidden(caplog.text)
    assert_hidden('\n'.join(str(r.exc_info) for r in caplog.records))


@pytest.mark.parametrize('mode, status, error', [('500', 500, 'HTTP 500'),
                                                 ('refused', 599, 'ConnectionRefused')])
def test_a_confirmed_restart_is_emitted_without_secrets(collector, server, mode, status,
                                                         error):
    port = free_port() if mode == 'refused' else server.port
    server.mode = mode
    plugin = HttpObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                          check_url=secret_url(port), restart_on_error='web')
    plugin.statsd = StatsdRecorder()
    with ScriptedCircusd(plugin) as circusd:
        circusd.replies['restart'] = {'status': 'error', 'reason': 'no', 'errno': 3}
        look_now(circusd)  # refused: nothing happened, nothing said
        assert collector.none_yet()
        circusd.replies['restart'] = {'status': 'ok'}
        look_now(circusd)
    watcher, action, body = collector.next_event()
    assert (watcher, action, body['plugin']) == ('web', 'http_restart', 'http_observer')
    assert (body['url'], body['status']) == (shown_url(port), status)
    assert error in body['error']
    assert_hidden(json.dumps(body))
    assert collector.none_yet()


@pytest.mark.parametrize('url', [
    secret_url(70000), secret_url('port'), secret_url(0), 'http://watch:%s@[::1' % PASSWORD,
    'ftp://watch:%s@h/' % PASSWORD, secret_url(80, host='h x'), secret_url(80, host=''),
    'http://%s@h:99999/' % TOKEN, 'http://watch:pA55-w0rd/never@h/',  # a raw "/"
])
def test_credentials_never_appear_in_option_errors(url):
    with pytest.raises(ConfigError) as info:
        HttpObserver('e', 'p', 5.0, check_url=url)
    message = str(info.value)
    assert "option 'check_url'" in message and '***@' in message
    assert '\n' not in message
    assert_hidden(message)


def test_credentials_never_appear_in_circus_plugin_debug_output(tmp_path, udp):
    refused = free_port()
    config = {'check_url': secret_url(refused), 'loop_rate': '0.1', 'timeout': '0.3',
              'call_timeout': '0.2', 'restart_on_error': 'web', 'host': '127.0.0.1',
              'port': udp.port}
    with PluginProcess('circus_plugins.http_observer.HttpObserver', config=config,
                       args=['--log-level', 'debug'], log_path=tmp_path / 'plugin.log',
                       endpoint='tcp://127.0.0.1:%d' % free_port(),
                       pubsub='tcp://127.0.0.1:%d' % free_port()) as plugin:
        wait_for(lambda: 'web: could not restart it' in plugin.log(), timeout=8,
                 what='a failed check and restart')
        plugin.stop(timeout=8)
    assert plugin.returncode == 0, plugin.log()
    assert shown_url(refused) in plugin.log()
    assert_hidden(plugin.log())
    # A bad port ends it at once, with a traceback at debug level: nothing shown either.
    config['check_url'] = secret_url(70000)
    result = subprocess.run(
        [sys.executable, '-m', 'circus_plugins', '--log-level', 'debug', '--config',
         encode_config(config), 'circus_plugins.http_observer.HttpObserver'],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "option 'check_url'" in result.stderr
    assert_hidden(result.stderr + result.stdout)


def test_tornados_http_client_is_loaded_when_the_plugin_starts_not_before():
    # About 1 MiB (tornado.httpclient, http.client, email...) that a process which never
    # starts the plugin, such as a host leaving out a bad section, does not carry.
    loaded = modules_loaded(
        'from circus_plugins.http_observer import HttpObserver\n'
        'HttpObserver("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 5.0, '
        'check_url="http://127.0.0.1:1/")')
    assert 'circus_plugins.http_observer' in loaded
    assert not loaded & {'tornado.httpclient', 'tornado.simple_httpclient', 'http.client'}
