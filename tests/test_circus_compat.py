"""The base class used the way code written for circus 0.19 uses it.

circus 0.19 makes ``plugin.loop`` in the constructor, and its users rely on that: its own
test helper builds a plugin, swaps ``plugin.statsd`` for a recorder, adds
``plugin.loop.add_timeout(deadline, plugin.stop)`` and calls ``plugin.start()`` in the main
thread, expecting it to return when the timer fires; tests drive plugins that never started
with ``plugin.loop.run_sync(...)``; published plugins close ``self.loop`` in ``__init__``
before refusing an option, or start a ``PeriodicCallback(callback, ms)`` without a loop in
``handle_init()``. Every bundled plugin that circus 0.19 also ships is run here in those
styles, against a real circusd 0.19 and real servers.
"""
import asyncio
import os
import threading
import time

import pytest
from tornado import gen
from tornado.ioloop import IOLoop, PeriodicCallback

from circus_plugins import CircusPlugin, CircusPluginError
from circus_plugins.command_reloader import CommandReloader
from circus_plugins.flapping import Flapping
from circus_plugins.http_observer import HttpObserver
from circus_plugins.redis_observer import RedisObserver
from circus_plugins.resource_watcher import ResourceWatcher
from circus_plugins.statsd import FullStats, StatsdEmitter
from circus_plugins.testing import UdpReceiver, free_port, wait_for
from circus_plugins.watchdog import WatchDog
from conftest import MARKER, StatsdRecorder, heard
from test_http_observer import Server
from test_redis_observer import REDIS_SERVER, RedisServer

#: Seconds after which a plugin that did not stop by itself is stopped and the test fails.
LIMIT = 8.0


@pytest.fixture
def circusd(start_circusd):
    return start_circusd(watchers={'sleeper': {'cmd': 'sleep 1000'}, 'marker': MARKER})


def build(cls, circusd, **options):
    """``cls`` built as circus's runner and helpers build it: positionally, with options as
    strings."""
    return cls(circusd.endpoint, circusd.pubsub_endpoint, 1, None,
               **{key: str(value) for key, value in options.items()})


def swap_statsd(plugin):
    """circus 0.19's helper: stop the plugin's own statsd client, put a recorder in."""
    plugin.statsd.stop()
    plugin.statsd = recorder = StatsdRecorder()
    return recorder


def start_blocking(plugin, until=lambda: True):
    """Run ``plugin`` with a blocking ``start()`` in the main thread, stopped by a timer
    that was added to ``plugin.loop`` before the start, as circus 0.19's helper does. The
    timer stops it once ``until()`` (called on the loop) is true. Returns what the first
    callback added before the start saw on the loop: ``(thread, current loop, running)``.
    """
    assert threading.current_thread() is threading.main_thread()
    seen = []
    plugin.loop.add_callback(lambda: seen.append(
        (threading.current_thread(), IOLoop.current(), plugin.running)))

    def stop_when_done():
        if until():
            plugin.stop()
        else:
            plugin.loop.add_timeout(time.time() + 0.02, stop_when_done)
    plugin.loop.add_timeout(time.time() + 0.05, stop_when_done)

    # A start() that never returns must fail the test, not hang the suite.
    guard = threading.Timer(LIMIT, plugin.stop)
    guard.start()
    began = time.monotonic()
    try:
        plugin.start()
    finally:
        guard.cancel()
    assert time.monotonic() - began < LIMIT, 'start() returned only when stopped by force'
    assert not plugin.running
    plugin.stop()  # circus's helper stops it once more: a no-op
    return seen[0]


def _observers(circusd, udp):
    statsd = {'host': '127.0.0.1', 'port': udp.port}
    return {
        StatsdEmitter: statsd,
        FullStats: dict(statsd, loop_rate=0.2),
        Flapping: {},
        WatchDog: {'ip': '127.0.0.1', 'port': free_port(2), 'loop_rate': 0.2},
        ResourceWatcher: dict(statsd, watcher='sleeper', loop_rate=0.2),
        HttpObserver: dict(statsd, check_url='http://127.0.0.1:%d/' % free_port(),
                           loop_rate=0.2),
        RedisObserver: dict(statsd, redis_url='redis://127.0.0.1:%d/0' % free_port(),
                            loop_rate=0.2),
        CommandReloader: {'loop_rate': 0.2},
    }


BUNDLED = [StatsdEmitter, FullStats, Flapping, WatchDog, ResourceWatcher, HttpObserver,
           RedisObserver, CommandReloader]


@pytest.mark.parametrize('cls', BUNDLED, ids=lambda cls: cls.__name__)
def test_a_timer_added_before_a_blocking_start_runs_there_and_stops_it(cls, circusd):
    with UdpReceiver() as udp:
        plugin = build(cls, circusd, **_observers(circusd, udp)[cls])
        plugin.loop.add_timeout(time.time() + 0.3, plugin.stop)
        thread, current, running = start_blocking(plugin, until=lambda: False)
    assert thread is not threading.main_thread() and thread.name == 'plugin-%s' % plugin.name
    assert current is plugin.loop  # the plugin's loop is the current one on its thread
    assert running


def test_a_swapped_statsd_counts_the_events(circusd):
    plugin = build(StatsdEmitter, circusd)
    recorder = swap_statsd(plugin)
    marked = lambda: recorder.increments.count('marker.spawn')  # noqa: E731
    hearing = threading.Thread(target=heard, args=(circusd, marked), daemon=True)
    hearing.start()
    start_blocking(plugin, until=lambda: not hearing.is_alive())
    hearing.join()
    assert marked() >= 1
    assert recorder.increments[-1] in ('marker.kill', 'marker.reap', 'marker.stop',
                                       'marker.spawn')


def test_a_swapped_statsd_gets_full_stats_gauges(circusd):
    plugin = build(FullStats, circusd, loop_rate=0.1)
    recorder = swap_statsd(plugin)
    wanted = {'_stats.sleeper.%s' % key for key in
              ('cpu_max', 'cpu_sum', 'mem_max', 'mem_sum', 'watchers_num')}
    start_blocking(plugin, until=lambda: wanted <= {name for name, _ in recorder.gauges})
    assert ('_stats.sleeper.watchers_num', 1) in recorder.gauges
    assert '_stats.error' not in recorder.increments


def test_a_swapped_statsd_gets_resource_watcher_counts(circusd):
    # Any process is over a limit of one byte.
    plugin = build(ResourceWatcher, circusd, watcher='sleeper', loop_rate=0.1,
                   max_mem='1K', max_count=1000)
    recorder = swap_statsd(plugin)
    start_blocking(plugin, until=lambda: recorder.increments)
    assert recorder.increments[0] == '_resource_watcher.sleeper.over_memory'


def test_a_swapped_statsd_gets_http_timings(circusd):
    server = Server()
    try:
        plugin = build(HttpObserver, circusd, check_url=server.url, loop_rate=0.1)
        recorder = swap_statsd(plugin)
        start_blocking(plugin, until=lambda: recorder.timings)
    finally:
        server.close()
    name, milliseconds = recorder.timings[0]
    assert name == 'http_stats.request_time' and milliseconds >= 0
    assert recorder.increments == []


@pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                    reason='redis-server is not installed (apt-get install redis-server)')
def test_a_swapped_statsd_gets_redis_gauges(circusd, tmp_path):
    server = RedisServer(tmp_path)
    try:
        plugin = build(RedisObserver, circusd, redis_url=server.url, loop_rate=0.1)
        recorder = swap_statsd(plugin)
        start_blocking(plugin, until=lambda: recorder.gauges)
    finally:
        server.stop()
    assert all(name.startswith('redis_stats.') for name, _ in recorder.gauges)
    assert 'redis_stats.error' not in recorder.increments


def test_command_reloader_restarts_a_changed_program(start_circusd, tmp_path):
    program = tmp_path / 'program.sh'
    program.write_text('#!/bin/sh\nexec sleep 1000\n')
    program.chmod(0o755)
    circusd = start_circusd(watchers={'changing': {'cmd': str(program)}})
    wait_for(lambda: circusd.call('list', name='changing').get('pids'), timeout=5,
             what='the watcher to run')
    before = circusd.call('list', name='changing')['pids']
    plugin = build(CommandReloader, circusd, loop_rate=0.1)
    touched = []

    def restarted():
        watch = plugin.watches.get('changing')
        if not touched and watch is not None and watch.stamps is not None:
            mtime = os.stat(program).st_mtime + 10  # after the look that took the stamps
            os.utime(program, (mtime, mtime))
            touched.append(True)
        pids = circusd.call('list', name='changing').get('pids')
        return bool(pids) and set(pids).isdisjoint(before)
    start_blocking(plugin, until=restarted)
    assert touched


# -- run_sync on a plugin that never started -----------------------------------------------

def test_run_sync_on_an_unstarted_plugin_handles_events_and_sends_them(udp):
    plugin = StatsdEmitter('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1, None,
                           host='127.0.0.1', port=str(udp.port))

    async def feed():
        plugin.handle_recv((b'watcher.web.spawn', b'{"process_pid": 12, "time": 1.0}'))
        await asyncio.sleep(0)  # the batch is sent by a callback on plugin.loop
    plugin.loop.run_sync(feed, timeout=5)
    udp.wait_lines(lambda lines: 'circus.app.watcher.web.spawn:1|c' in lines,
                   what='the count on the wire')
    plugin.stop()  # never started: frees the loop it made
    assert plugin.loop.asyncio_loop.is_closed()


def test_run_sync_on_an_unstarted_plugin_counts_a_failed_look():
    plugin = FullStats('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1, None)
    recorder = swap_statsd(plugin)
    plugin.loop.run_sync(plugin.look_after, timeout=5)  # circusd cannot be asked
    assert recorder.increments == ['_stats.error']
    plugin.stop()


def test_callbacks_and_timeouts_of_an_unstarted_loop_can_be_added_and_removed():
    plugin = Flapping('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1, None)
    ran = []
    handle = plugin.loop.add_timeout(time.time() + 0.05, ran.append, 'removed')
    plugin.loop.remove_timeout(handle)
    plugin.loop.add_callback(ran.append, 'callback')
    plugin.loop.run_sync(lambda: gen.sleep(0.1), timeout=5)
    assert ran == ['callback']
    plugin.stop()


def test_the_loop_is_made_once_and_a_constructor_opens_nothing():
    before = len(os.listdir('/proc/self/fd'))
    plugins = [cls('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1, None,
                   **({'watcher': 'web'} if cls is ResourceWatcher else {}))
               for cls in BUNDLED]
    assert len(os.listdir('/proc/self/fd')) == before
    for plugin in plugins:
        assert isinstance(plugin.loop, IOLoop) and plugin.loop is plugin.loop
        plugin.stop()
    assert len(os.listdir('/proc/self/fd')) == before  # stop() closed the loops made


# -- plugins written for circus 0.19 --------------------------------------------------------

class Picky(ResourceWatcher):
    """Closes its loop and refuses an option in ``__init__``, as published plugins do."""

    def __init__(self, endpoint, pubsub_endpoint, check_delay, ssh_server=None, **config):
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        if config.get('mood') != 'good':
            self.loop.close()
            raise ValueError('picky: mood must be good, not %r' % config.get('mood'))


def test_a_subclass_closing_its_loop_in_init_raises_its_own_error():
    before = len(os.listdir('/proc/self/fd'))
    with pytest.raises(ValueError, match="picky: mood must be good, not 'bad'"):
        Picky('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1, None, watcher='web', mood='bad')
    assert len(os.listdir('/proc/self/fd')) == before
    Picky('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1, None, watcher='web',
          mood='good').stop()


def test_a_plugin_whose_loop_was_closed_cannot_start(circusd):
    plugin = build(StatsdEmitter, circusd)
    plugin.loop.close()
    began = time.monotonic()
    with pytest.raises(CircusPluginError) as info:
        plugin.start()
    assert time.monotonic() - began < 2
    assert str(info.value) == ('plugin statsd cannot start: its loop was closed before '
                               'the start')
    plugin.stop()  # still fine, and nothing runs
    assert not plugin.running


class Ticking(CircusPlugin):
    """Starts a ``PeriodicCallback`` without a loop in ``handle_init``, and another in an
    ``initialize()`` that calls ``super().initialize()`` first (circus 0.19 styles)."""

    name = 'ticking'

    def handle_init(self):
        self.ticks = []
        self.period = PeriodicCallback(lambda: self.tick('init'), 20)
        self.period.start()

    def initialize(self):
        super().initialize()
        self.other = PeriodicCallback(lambda: self.tick('initialize'), 20)
        self.other.start()

    def tick(self, where):
        self.ticks.append((where, threading.current_thread(), IOLoop.current()))

    def handle_recv(self, data):
        pass


def test_a_periodic_callback_made_without_a_loop_runs_on_the_plugins(circusd):
    plugin = build(Ticking, circusd)
    start_blocking(plugin, until=lambda: {w for w, _, _ in plugin.ticks} == {
        'init', 'initialize'})
    for _, thread, loop in plugin.ticks:
        assert thread.name == 'plugin-ticking' and loop is plugin.loop


def test_a_background_start_runs_callbacks_added_before_it(circusd):
    plugin = build(Ticking, circusd)
    ran = threading.Event()
    plugin.loop.add_callback(lambda: plugin.running and ran.set())
    with plugin:
        assert ran.wait(5)
