"""circusd-stats's stream reaching plugins that override handle_stats, under a real circusd."""
import logging
import os
import queue
import signal
import time

import pytest

from circus_plugins import CircusPlugin, ConfigError
from circus_plugins._stats import ProcessStat, WatcherTotals, read_stat
from circus_plugins.testing import Circusd, wait_for
from conftest import PLUGIN_ENV


class Quiet(CircusPlugin):
    name = 'quiet'

    def handle_recv(self, data):
        pass


class Listener(Quiet):
    """Puts every circusd-stats message on a queue; the first one raises."""
    name = 'listener'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stats = queue.Queue()
        self.failed = False

    def handle_stats(self, data):
        if not self.failed:
            self.failed = True
            raise RuntimeError('a broken handler')
        self.stats.put(data)


def plugin(cls, circusd, **config):
    return cls(circusd.endpoint, circusd.pubsub_endpoint, 1.0, **config)


def heard(listener, pids, timeout=8.0):
    """Wait until the listener got figures of each of ``pids`` and totals naming them all."""
    want, deadline = set(pids), time.monotonic() + timeout
    processes, totals = set(), False
    while not (want <= processes and totals):
        data = listener.stats.get(timeout=max(0.01, deadline - time.monotonic()))
        stat = read_stat(data)
        if isinstance(stat, ProcessStat) and stat.watcher == 'sleeper':
            processes.add(stat.process.pid)
        elif isinstance(stat, WatcherTotals) and stat.watcher == 'sleeper':
            totals = want <= set(stat.pids)


@pytest.fixture
def stats_circusd(start_circusd):
    return start_circusd(watchers={'sleeper': {'cmd': 'sleep 1000', 'numprocesses': 2}},
                         circus={'statsd': True})


def test_handle_stats_gets_the_stream_and_survives_a_respawn_of_circusd_stats(
        stats_circusd, caplog):
    caplog.set_level(logging.INFO, 'circus_plugins')
    pids = stats_circusd.pids('sleeper')
    # The endpoint comes from circusd's globaloptions: the plugin is not told.
    with plugin(Listener, stats_circusd) as listener, plugin(
            Listener, stats_circusd, stats_endpoint=stats_circusd.stats_endpoint) as told:
        heard(listener, pids)
        heard(told, pids)  # the option's endpoint
        assert listener.stats_live and listener.stats_socket is not None
        assert 'handle_stats failed' in caplog.text  # logged, not fatal
        stats_pid = stats_circusd.pids('circusd-stats')[0]
        os.kill(stats_pid, signal.SIGKILL)
        wait_for(lambda: stats_circusd.pids('circusd-stats') not in ([], [stats_pid]),
                 timeout=8, what='circusd to respawn circusd-stats')
        while not listener.stats.empty():  # what the old circusd-stats sent
            listener.stats.get_nowait()
        heard(listener, pids)
    assert listener.stats_socket is None  # closed at stop
    assert 'circusd-stats stream on %s' % stats_circusd.stats_endpoint in caplog.text


def test_no_stats_socket_unless_handle_stats_is_overridden_and_none_without_statsd(
        circusd, caplog):
    caplog.set_level(logging.INFO, 'circus_plugins')
    with plugin(Quiet, circusd) as quiet, plugin(Listener, circusd) as listener:
        assert quiet.stats_socket is None and not quiet.stats_live
        assert listener.stats_socket is not None
        # circusd runs no circusd-stats: said once, and events and commands go on.
        wait_for(lambda: 'no circusd-stats' in caplog.text, what='the plugin to say so')
        assert listener.call('list')['status'] == 'ok'
        assert not listener.stats_live
    assert caplog.text.count('no circusd-stats') == 1


def test_a_bad_stats_endpoint_is_named():
    with pytest.raises(ConfigError, match="plugin listener: .*stats_endpoint.*'tcp://x'"):
        Listener('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0, stats_endpoint='tcp://x')


def test_a_circusd_started_after_the_plugin_is_asked_again(tmp_path):
    circusd = Circusd(tmp_path, watchers={'sleeper': {'cmd': 'sleep 1000',
                                                      'numprocesses': 2}},
                      circus={'statsd': True}, env=PLUGIN_ENV)
    listener = plugin(Listener, circusd, call_timeout='0.2')
    started = time.monotonic()
    with listener:
        assert time.monotonic() - started < 2  # the start does not wait for circusd
        try:
            circusd.start()
            heard(listener, circusd.pids('sleeper'))
        finally:
            circusd.stop()


def test_a_circusd_without_circusd_stats_is_asked_again_once_per_safety_refresh():
    from circus_plugins import _stats_stream
    from circus_plugins.periodic import SAFETY_REFRESH
    assert _stats_stream._ASK_AGAIN == SAFETY_REFRESH  # cannot import it: kept equal here
