"""HttpObserver against a real HTTP server on 127.0.0.1, under circusd and circus-plugin."""
import asyncio
import threading

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from circus_plugins import ConfigError
from circus_plugins.http_observer import HttpObserver
from circus_plugins.testing import PluginProcess, free_port, wait_for
from conftest import observer_options, unstarted

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
    plugin = unstarted(HttpObserver('e', 'p', 5.0))
    assert (plugin.name, plugin.check_url, plugin.timeout, plugin.restart_on_error,
            plugin.loop_rate) == ('http_observer', 'http://localhost/', 10.0, None, 60.0)
    assert plugin.prefix == 'circus.http_observer.watcher'
    plugin = unstarted(HttpObserver('e', 'p', 5.0, check_url='https://example.test:8443/x',
                                    timeout='0.5', restart_on_error='web'))
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


def test_without_restart_on_error_only_counts(udp):
    port = free_port()  # nothing listens there
    plugin = HttpObserver('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                          check_url='http://127.0.0.1:%d/' % port, loop_rate='0.1',
                          host='127.0.0.1', port=udp.port)
    with plugin:
        udp.wait_lines(lambda lines: len(values(lines, 'http_stats.error.599')) >= 2,
                       what='two errors')
    assert not values(udp.lines(), 'http_stats.restart_on_error')


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
