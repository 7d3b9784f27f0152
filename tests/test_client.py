"""Commands to circusd (circus_plugins._client) through circusd's outages."""
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from circus_plugins import CallError
from circus_plugins.testing import run_on_loop, wait_for
from test_plugin import collector


def test_commands_refused_during_an_outage_never_run_later(circusd, caplog):
    """circusd SIGKILLed, ``incr`` sent every way while it is down, circusd restarted on
    the same endpoints: none of those commands may reach the new circusd."""
    caplog.set_level(logging.ERROR, 'circus_plugins')
    with collector(circusd, call_timeout='0.5') as plugin:
        assert plugin.call('list')['status'] == 'ok'  # this thread's socket is connected
        assert run_on_loop(plugin.loop, lambda: plugin.call_async('list'))['status'] == 'ok'
        circusd.kill()
        # At once, before the sockets may have noticed, then again once they have.
        for _ in range(3):
            with pytest.raises(CallError, match="'incr'"):
                plugin.call('incr', name='sleeper')
            with pytest.raises(CallError, match="'incr'"):
                run_on_loop(plugin.loop, lambda: plugin.call_async('incr', name='sleeper'))
            reply = run_on_loop(plugin.loop, lambda: plugin.change_state(
                'incr', name='sleeper', busy_retry=0))
            assert reply['status'] == 'error' and "'incr'" in reply['reason']
        plugin.cast('incr', name='sleeper')
        wait_for(lambda: any("cast 'incr' not sent" in r.getMessage()
                             for r in caplog.records), what='the cast to be given up')

        circusd.start()
        # Replies to these come after anything queued before them on the same sockets.
        wait_for(lambda: _answers(plugin), what='the plugin to reach the new circusd')
        assert run_on_loop(plugin.loop, lambda: plugin.call_async('list'))['status'] == 'ok'
        assert circusd.call('numprocesses', name='sleeper')['numprocesses'] == 1
        assert len(circusd.pids('sleeper')) == 1


def _answers(plugin):
    try:
        return plugin.call('list')['status'] == 'ok'
    except CallError:
        return False


def test_a_call_waits_for_circusd_to_come_up(circusd):
    """Queuing only to a connected circusd must not fail calls made just before it is up."""
    circusd.kill()
    with collector(circusd, call_timeout='8') as plugin:
        pending = ThreadPoolExecutor(2)
        from_loop = pending.submit(run_on_loop, plugin.loop, lambda: plugin.call_async('list'), 9)
        from_thread = pending.submit(plugin.call, 'list')
        circusd.start()
        assert from_loop.result(9)['status'] == 'ok'
        assert from_thread.result(9)['status'] == 'ok'
        pending.shutdown()
