"""PluginHost: many plugins in one process, under a real circusd 0.19."""
import asyncio
import json
from concurrent.futures import Future as ThreadFuture

import pytest

from circus_plugins import CallError, CircusPlugin, ConfigError
from circus_plugins._shared import SharedAnswers
from circus_plugins.host import PluginHost
from circus_plugins.testing import CommandCounter, PluginProcess, wait_for
from conftest import PLUGIN_ENV

# A shell, not Python: it dies as soon as it starts even on a loaded machine, where a
# Python taking half a second to start put two deaths more than Flapping's window apart.
FLAKY = {'cmd': 'sh -c "exit 3"', 'numprocesses': 1}
#: circusd reaps (and respawns) flaky at each check: every 0.3 s, Flapping's two deaths,
#: its retry and two more deaths come in about 2 s, far from the 9 s waited for them.
QUICK = {'check_delay': 0.3}


def plugins_ini(tmp_path, circusd, udp, **extra_sections):
    """A plugins.ini (not circusd's own) with a StatsdEmitter, a Flapping that gives up
    after one retry, an EventDump, and ``extra_sections``."""
    sections = {
        'statsd': {'use': 'circus_plugins.statsd.StatsdEmitter', 'host': '127.0.0.1',
                   'port': udp.port},
        'flapping': {'use': 'circus_plugins.flapping.Flapping', 'attempts': 2,
                     'window': 3, 'retry_in': 0.5, 'max_retry': 1},
        'dump': {'use': 'sample_plugins.EventDump', 'dump': tmp_path / 'events.txt'},
    }
    sections.update(extra_sections)
    text = '[circus]\nendpoint = %s\npubsub_endpoint = %s\ncheck_delay = 1\n\n' % (
        circusd.endpoint, circusd.pubsub_endpoint)
    for name, options in sections.items():
        text += '[plugin:%s]\n%s\n\n' % (name, '\n'.join('%s = %s' % item
                                                          for item in options.items()))
    path = tmp_path / 'plugins.ini'
    path.write_text(text)
    return path


def dumped(tmp_path):
    path = tmp_path / 'events.txt'
    return path.read_text().splitlines() if path.exists() else []


def flapping_events(tmp_path):
    return [line.split(' ', 1) for line in dumped(tmp_path)
            if line.startswith('plugin.flaky.flapping')]


def check_the_three_plugins(tmp_path, circusd, udp):
    wait_for(lambda: circusd.status('flaky') == 'stopped' and
             any(topic == 'plugin.flaky.flapping_giveup' for topic, _ in
                 flapping_events(tmp_path)),
             timeout=9, interval=0.1, what='Flapping to give up on flaky')
    events = flapping_events(tmp_path)
    topics = [topic for topic, _ in events]
    assert topics[0] == 'plugin.flaky.flapping' and topics[-1] == 'plugin.flaky.flapping_giveup'
    assert all(json.loads(body)['plugin'] == 'flapping' for _, body in events)
    udp.wait_lines(lambda lines: any(line.startswith('circus.app.watcher.flaky.reap:')
                                     for line in lines))


def test_all_sections_in_one_process_from_circus_plugin(start_circusd, tmp_path, udp):
    circusd = start_circusd(watchers={'flaky': FLAKY}, circus=QUICK)
    ini = plugins_ini(
        tmp_path, circusd, udp,
        bad={'use': 'circus_plugins.statsd.StatsdEmitter', 'port': 'notaport'},
        late={'use': 'sample_plugins.FailsToStart', 'tries': tmp_path / 'tries.txt'})
    with PluginProcess('', circusd, args=['--ini', str(ini), '--all'],
                       env=PLUGIN_ENV) as host:
        try:
            check_the_three_plugins(tmp_path, circusd, udp)
        except TimeoutError as exc:
            raise AssertionError('%s; the host said:\n%s' % (exc, host.log())) from None
        log = host.log()
        assert "[plugin:bad] left out: plugin statsd: option 'port': 'notaport'" in log
        wait_for(lambda: '[plugin:late] running' in host.log(), timeout=6,
                 what='the failing plugin to be started again until it runs')
        assert host.log().count('[plugin:late] could not start: RuntimeError: not yet') == 2
        assert 'starting it again in 1 s' in log and 'starting it again in 2 s' in host.log()
    assert host.returncode == 0, host.log()
    assert dumped(tmp_path)[-1] == 'stopped'  # SIGTERM ran each plugin's handle_stop


def test_a_host_loads_only_what_its_running_plugins_need(circusd, tmp_path, udp):
    # Each of these weighs 0.3 to 9 MiB: a host running a StatsdEmitter and a Flapping,
    # and leaving out an HttpObserver for a bad option, carries none of them. (No
    # sample_plugins here: they import circus 0.19, which imports psutil.)
    heavy = {'redis', 'tornado.httpclient', 'tornado.simple_httpclient', 'http.client',
             'email', 'psutil', 'prometheus_client', 'aiosmtplib'}
    dump = tmp_path / 'modules.txt'
    ini = tmp_path / 'plugins.ini'
    ini.write_text(
        '[circus]\nendpoint = %s\npubsub_endpoint = %s\n\n'
        '[plugin:statsd]\nuse = circus_plugins.statsd.StatsdEmitter\nhost = 127.0.0.1\n'
        'port = %d\n\n'
        '[plugin:flapping]\nuse = circus_plugins.flapping.Flapping\n\n'
        '[plugin:http]\nuse = circus_plugins.http_observer.HttpObserver\ntimeout = never\n\n'
        '[plugin:modules]\nuse = modules_dump.ModulesDump\ndump = %s\n'  # last: sees all
        % (circusd.endpoint, circusd.pubsub_endpoint, udp.port, dump))
    with PluginProcess('', circusd, args=['--ini', str(ini), '--all'],
                       env=PLUGIN_ENV) as host:
        wait_for(lambda: '[plugin:modules] running' in host.log(), timeout=8,
                 what='the host to start every plugin')
        assert "[plugin:http] left out: plugin http_observer: option 'timeout'" in host.log()
    loaded = set(dump.read_text().split())
    assert {'circus_plugins.statsd', 'circus_plugins.flapping',
            'circus_plugins.http_observer'} <= loaded
    assert not loaded & heavy, sorted(loaded & heavy)


def test_a_host_section_run_by_circusd(start_circusd, tmp_path, udp):
    from circus_plugins.testing import free_port
    placeholder = type('C', (), {'endpoint': 'tcp://127.0.0.1:%d' % free_port(),
                                 'pubsub_endpoint': 'tcp://127.0.0.1:%d' % free_port()})
    ini = plugins_ini(tmp_path, placeholder, udp)  # its [circus] is not used by a host
    circusd = start_circusd(watchers={'flaky': FLAKY},
                            plugins={'host': {'use': 'circus_plugins.host.PluginHost',
                                              'config': ini}}, circus=QUICK)
    check_the_three_plugins(tmp_path, circusd, udp)
    assert circusd.status('plugin:host') == 'active'


def test_a_host_needs_its_file_and_known_sections(tmp_path):
    with pytest.raises(ConfigError, match="option 'config'"):
        PluginHost('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0)
    with pytest.raises(ConfigError, match='nowhere.ini'):
        PluginHost('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0, config='nowhere.ini')
    ini = tmp_path / 'plugins.ini'
    ini.write_text('[plugin:a]\nuse = sample_plugins.EventDump\n')
    with pytest.raises(ConfigError, match=r"no \[plugin:b\] section"):
        PluginHost('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0, config=ini, plugins='a b')


def test_a_plugin_on_circus_base_is_left_out_not_started_again_and_again(tmp_path, caplog):
    ini = tmp_path / 'plugins.ini'
    ini.write_text('[plugin:old]\nuse = sample_plugins.CircusBased\ndump = %s\n\n'
                   '[plugin:dump]\nuse = sample_plugins.EventDump\ndump = %s\n'
                   % (tmp_path / 'old.txt', tmp_path / 'events.txt'))
    with PluginHost('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0, config=ini) as host:
        assert [child.name for child in host.children] == ['dump']
    messages = [r.getMessage() for r in caplog.records]
    assert "[plugin:old] left out: a plugin on circus 0.19's base class runs only alone" \
        in messages
    assert not [m for m in messages if 'could not start' in m]


def test_a_plugin_whose_thread_ends_is_started_again(circusd, tmp_path, caplog):
    import logging
    caplog.set_level(logging.INFO, 'circus_plugins.host')
    ini = tmp_path / 'plugins.ini'
    ini.write_text('[plugin:quitter]\nuse = sample_plugins.StopsAtFirstEvent\n\n'
                   '[plugin:dump]\nuse = sample_plugins.EventDump\ndump = %s\n'
                   % (tmp_path / 'events.txt'))
    messages = lambda: [r.getMessage() for r in caplog.records]  # noqa: E731
    with PluginHost(circusd.endpoint, circusd.pubsub_endpoint, 1.0, config=ini) as host:
        def restarted():
            circusd.call('incr', name='sleeper')  # an event: the quitter stops at once
            return messages().count('[plugin:quitter] running (StopsAtFirstEvent)') >= 2
        wait_for(restarted, timeout=8, interval=0.2, what='the quitter to be started again')
        assert '[plugin:quitter] stopped by itself; starting it again in 1 s' in messages()
        assert [type(p).__name__ for p in host.plugins][-1] == 'EventDump'  # never stopped


def test_the_host_publishes_its_plugins_events(circusd, tmp_path):
    import zmq
    from circus_plugins.testing import free_port
    ini = tmp_path / 'plugins.ini'
    ini.write_text('[plugin:ticker]\nuse = sample_plugins.Ticker\n')
    publish = 'tcp://127.0.0.1:%d' % free_port()
    context = zmq.Context()
    outside = context.socket(zmq.SUB)
    outside.linger = 0
    outside.setsockopt(zmq.SUBSCRIBE, b'plugin.')
    outside.connect(publish)
    try:
        with PluginHost(circusd.endpoint, circusd.pubsub_endpoint, 1.0, config=ini,
                        events_publish=publish):
            assert outside.poll(5000), 'no event published on events_publish'
            topic, body = outside.recv_multipart()
            assert topic == b'plugin.web.tick' and json.loads(body)['plugin'] == 'ticker'
    finally:
        outside.close()
        context.term()


# -- one request for the same question of several plugins -------------------------------

class AsksList(CircusPlugin):
    """Asks circusd's ``list`` when told to: :meth:`ask_now` (any thread) returns a
    future of the reply. Counts circusd's events."""

    events = 0

    def handle_recv(self, data):
        self.events += 1

    def ask_now(self):
        answer = ThreadFuture()

        async def ask():
            try:
                answer.set_result(await self.call_async('list'))
            except Exception as exc:
                answer.set_exception(exc)
        self.loop.add_callback(ask)
        return answer


def test_plugins_of_a_host_asking_the_same_share_one_request(circusd, tmp_path):
    ini = tmp_path / 'plugins.ini'
    ini.write_text('[plugin:one]\nuse = test_host.AsksList\n\n'
                   '[plugin:two]\nuse = test_host.AsksList\n')
    with CommandCounter(circusd.endpoint) as counter:
        host = PluginHost(counter.endpoint, circusd.pubsub_endpoint, 1.0, config=ini)
        host.answers.window = 60.0  # the second ask shares, however late on a slow machine
        with host:
            one, two = host.plugins
            replies = [future.result(5) for future in (one.ask_now(), two.ask_now())]
            assert counter.snapshot() == {'list': 1}
            # after an event, an answer from before it is not shared: asked once again
            circusd.call('incr', name='sleeper')
            wait_for(lambda: one.events and two.events, what='the event to reach both')
            again = [future.result(5) for future in (one.ask_now(), two.ask_now())]
            assert counter.snapshot() == {'list': 2}
    assert replies[0] == replies[1] and replies[0]['watchers'] == ['sleeper']
    assert replies[0] is not replies[1] and again[0] == again[1]
    assert host.answers.shared == 2


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _run(coroutine):
    return asyncio.run(coroutine)


def test_shared_answers_in_flight_recent_and_not_kept_when_wrong():
    clock = _Clock()
    table = SharedAnswers(window=0.5, clock=clock)
    sent = []
    replies = {'list': {'status': 'ok', 'watchers': ['web']}}

    async def ask(command, events_at=float('-inf'), **props):
        async def send():
            sent.append(command)
            await asyncio.sleep(0.01)  # in flight while the others ask
            reply = replies[command]
            if isinstance(reply, Exception):
                raise reply
            return dict(reply)
        return await table.ask(command, props, send, timeout=1.0, events_at=events_at)

    async def scenario():
        # asked at once: one request, a copy each
        first, second = await asyncio.gather(ask('list'), ask('list'))
        assert first == second == replies['list'] and first is not second
        assert sent == ['list']
        second['watchers'].append('changed by a plugin')
        clock.now += 0.4  # recent: shared, unchanged by the other plugin
        assert await ask('list') == replies['list'] and sent == ['list']
        # an asker that got an event since the request was sent asks again
        assert await ask('list', events_at=clock.now - 0.1) == replies['list']
        assert sent == ['list'] * 2
        clock.now += 0.6  # too old
        await ask('list')
        assert sent == ['list'] * 3
        # other properties, or a command that changes state: asked each time
        await asyncio.gather(ask('list', name='web'), ask('list', name='api'))
        replies['restart'] = {'status': 'ok'}
        await asyncio.gather(ask('restart', name='web'), ask('restart', name='web'))
        assert sent[3:] == ['list', 'list', 'restart', 'restart']

        # an error reaches the plugins waiting for it, and only them
        del sent[:]
        replies['status'] = {'status': 'error', 'reason': 'busy', 'errno': 5}
        assert [r['status'] for r in await asyncio.gather(
            ask('status', name='web'), ask('status', name='web'))] == ['error'] * 2
        assert sent == ['status']
        await ask('status', name='web')
        assert sent == ['status'] * 2
        replies['stats'] = CallError('no reply within 5 s')
        results = await asyncio.gather(ask('stats'), ask('stats'), return_exceptions=True)
        assert all(isinstance(r, CallError) for r in results)
        await asyncio.gather(ask('stats'), return_exceptions=True)
        assert sent == ['status'] * 2 + ['stats'] * 2
    _run(scenario())
