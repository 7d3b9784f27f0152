"""CircusPlugin against a real circusd 0.19."""
import asyncio
import queue
import re
import threading
import time

import pytest

from circus_plugins import CallError, CircusPlugin, ConfigError
from circus_plugins.testing import (EventPublisher, EventRecorder, free_port, wait_connected,
                                    wait_for)
from sample_plugins import Logger


class Collector(CircusPlugin):
    """Puts every event on a queue; optional hooks run on the plugin thread."""
    name = 'collector'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.received = queue.Queue()
        self.on_event = None
        self.stops = 0

    def handle_recv(self, data):
        self.received.put(data)
        if self.on_event is not None:
            self.on_event(data)

    def handle_stop(self):
        self.stops += 1


def collector(circusd, **config):
    return Collector(circusd.endpoint, circusd.pubsub_endpoint, 1.0, **config)


def next_event(plugin, topic, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        data = plugin.received.get(timeout=max(0.0, deadline - time.monotonic()))
        if data[0] == topic:
            return data


def test_seed_logger_under_circusd_keeps_every_event(start_circusd, tmp_path):
    log_file = tmp_path / 'events.log'
    circusd = start_circusd(
        watchers={'sleeper': {'cmd': 'sleep 1000'}},
        plugins={'logger': {'use': 'sample_plugins.Logger', 'filename': str(log_file)}})
    pid = wait_for(lambda: circusd.pids('plugin:logger'), what='the plugin')[0]
    wait_connected(pid, circusd.pubsub_endpoint)
    with EventRecorder(circusd.pubsub_endpoint) as events:
        # The plugin's subscription may reach circusd after its TCP connection: only
        # events after a full round of the recorder's are sure to be the plugin's too.
        events.sync(circusd, 'sleeper')
        events.events.clear()
        for _ in range(3):
            circusd.call('incr', name='sleeper')
        wait_for(lambda: events.poll() is not None and sum(
            e[0] == b'watcher.sleeper.spawn' for e in events.events) >= 3,
            what='the spawn events')
    circusd.stop()
    text = log_file.read_text()
    assert events.events
    missing = [event for event in events.events if '%s::%s' % event not in text]
    assert not missing, (missing, text, circusd.log())


def test_both_constructor_styles():
    seed = Logger('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, None, filename='x.log',
                  name='plugin:logger')
    assert (seed.filename, seed.endpoint, seed.pubsub_endpoint, seed.check_delay,
            seed.ssh_server) == ('x.log', 'tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, None)
    assert seed.config == {'name': 'plugin:logger'} and seed.active
    by_keyword = Logger('y.log', endpoint='e', pubsub_endpoint='p', check_delay='2')
    assert by_keyword.filename == 'y.log' and by_keyword.check_delay == 2.0
    plain = Collector('e', 'p', 5, None, active='false', call_timeout='0.5')
    assert plain.active is False and plain.call_timeout == 0.5


@pytest.mark.parametrize('args, kwargs, culprit', [
    (('e', 'p', 5, None), {}, "'filename'"),
    (('e', 'p', 'soon', None), {'filename': 'f'}, "'soon'"),
    (('e', 'p', 5, None), {'filename': 'f', 'active': 'maybe'}, "'maybe'"),
    (('e', 'p', 5, None), {'filename': 'f', 'call_timeout': '-1'}, 'call_timeout'),
])
def test_bad_construction_names_the_culprit(args, kwargs, culprit):
    with pytest.raises(ConfigError, match=culprit):
        Logger(*args, **kwargs)


def test_events_reach_handle_recv_as_bytes(circusd, events):
    plugin = collector(circusd)
    with plugin:
        wait_connected_self(plugin, circusd)
        circusd.call('incr', name='sleeper')
        topic, message = next_event(plugin, b'watcher.sleeper.spawn')
        assert isinstance(message, bytes)
        watcher, action, msg = plugin.split_data((topic, message))
        assert (watcher, action) == ('sleeper', 'spawn')
        assert plugin.load_message(msg)['process_pid'] in circusd.pids('sleeper')


def wait_connected_self(plugin, circusd):
    """Wait until ``plugin`` (in this process) is receiving circusd's events."""
    def flowing():
        circusd.call('incr', name='sleeper')
        circusd.call('decr', name='sleeper')
        try:
            plugin.received.get(timeout=0.2)
            return True
        except queue.Empty:
            return False
    wait_for(flowing, what='events to reach the plugin', interval=0)


def test_call_list_and_status(circusd):
    with collector(circusd) as plugin:
        reply = plugin.call('list')
        assert reply['status'] == 'ok' and reply['watchers'] == ['sleeper']
        assert plugin.call('status', name='sleeper')['status'] == 'active'
        assert plugin.call('status', name='nope')['status'] == 'error'


def test_call_from_handle_recv_and_call_async(circusd):
    plugin = collector(circusd)
    replies = queue.Queue()

    def on_event(data):
        if data[0] == b'watcher.sleeper.spawn' and replies.empty():
            replies.put(plugin.call('list', name='sleeper'))

            async def later():
                replies.put(await plugin.call_async('status', name='sleeper'))
            plugin.loop.add_callback(later)

    plugin.on_event = on_event
    with plugin:
        circusd.call('incr', name='sleeper')
        wait_for(lambda: replies.qsize() >= 2 or circusd.call('incr', name='sleeper') and 0,
                 what='replies from the loop thread')
    assert replies.get()['status'] == 'ok'
    assert replies.get()['status'] == 'active'


def test_call_without_circusd_times_out():
    plugin = Collector('tcp://127.0.0.1:%d' % free_port(),
                       'tcp://127.0.0.1:%d' % free_port(), 5.0, call_timeout='1')
    with plugin:
        began = time.monotonic()
        with pytest.raises(CallError, match=r"'list'.* 1(\.0)? s"):  # call_timeout's
            plugin.call('list')
        # Not the default 5 s: a loaded machine may add to the 1 s, not that much.
        assert 0.9 < time.monotonic() - began < 4.0

        async def from_loop():
            try:
                await plugin.call_async('list')
            except CallError as exc:
                return exc
        outcome = queue.Queue()
        plugin.loop.add_callback(lambda: plugin.loop.asyncio_loop.create_task(
            from_loop()).add_done_callback(lambda t: outcome.put(t.result())))
        assert isinstance(outcome.get(timeout=3), CallError)

        async def change():  # never raises: the failure is a reply
            return await plugin.change_state('stop', name='web', busy_retry=0)
        plugin.loop.add_callback(lambda: plugin.loop.asyncio_loop.create_task(
            change()).add_done_callback(lambda t: outcome.put(t.result())))
        reply = outcome.get(timeout=3)
        assert reply['status'] == 'error' and "'stop'" in reply['reason']
    assert plugin.stops == 1


def test_concurrent_calls_each_get_their_own_reply(start_circusd):
    watchers = {'w%d' % i: {'cmd': 'sleep 10%d' % i} for i in range(8)}
    circusd = start_circusd(watchers=watchers)
    failures = []
    with collector(circusd) as plugin:
        def worker(i):
            for n in range(100 // 8 + (i < 100 % 8)):
                reply = plugin.call('options', name='w%d' % i)
                if reply.get('options', {}).get('cmd') != 'sleep 10%d' % i:
                    failures.append((i, n, reply))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        # and 100 at once on the loop's own socket, answered in whatever order
        async def gathered():
            import asyncio
            names = ['w%d' % (n % 8) for n in range(100)]
            replies = await asyncio.gather(*[plugin.call_async('options', name=name)
                                             for name in names])
            return [(name, reply.get('options', {}).get('cmd'))
                    for name, reply in zip(names, replies)]
        outcome = queue.Queue()
        plugin.loop.add_callback(lambda: plugin.loop.asyncio_loop.create_task(
            gathered()).add_done_callback(lambda t: outcome.put(t.result())))
        for name, cmd in outcome.get(timeout=8):
            if cmd != 'sleep 10%s' % name[1:]:
                failures.append((name, cmd))
    assert not failures


def test_handler_exceptions_are_logged_and_not_fatal(circusd, caplog):
    plugin = collector(circusd)

    def explode(data):
        raise RuntimeError('boom')
    plugin.on_event = explode
    with plugin:
        wait_connected_self(plugin, circusd)
        for _ in range(3):
            circusd.call('incr', name='sleeper')
            next_event(plugin, b'watcher.sleeper.spawn')
        assert plugin.running and plugin.call('list')['status'] == 'ok'
    failures = [r for r in caplog.records if 'handle_recv failed' in r.getMessage()]
    assert len(failures) >= 3
    assert failures[0].name == 'circus_plugins.collector' and failures[0].exc_info


def test_busy_refusals_are_retried(circusd):
    with collector(circusd) as plugin:
        assert plugin.call('stop', name='sleeper')['status'] == 'ok'
        reply = plugin.call('start', name='sleeper', busy_retry=5)
        assert reply['status'] == 'ok', reply
    wait_for(lambda: circusd.status('sleeper') == 'active')


def test_stop_is_idempotent_and_cleans_up(circusd):
    plugin = collector(circusd)
    plugin.start_background()
    assert plugin.running
    threads = [threading.Thread(target=plugin.stop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    plugin.stop()
    assert plugin.stops == 1 and not plugin.running
    with pytest.raises(CallError):
        plugin.call('list')


def test_stop_from_handle_recv(circusd):
    plugin = collector(circusd)
    plugin.on_event = lambda data: plugin.stop()
    finished = threading.Event()
    runner = threading.Thread(target=lambda: (plugin.start(), finished.set()))
    runner.start()
    wait_for(lambda: plugin.running)
    wait_for(lambda: circusd.call('incr', name='sleeper') and finished.wait(0.2),
             what='start() to return')
    runner.join()
    assert plugin.stops == 1


def test_inactive_plugin_waits_without_connecting():
    plugin = Collector('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, active='no')
    runner = threading.Thread(target=plugin.start)
    runner.start()
    with pytest.raises(CallError):
        plugin.call('list')
    plugin.stop()
    runner.join(timeout=5)
    assert not runner.is_alive() and plugin.stops == 0


def test_handle_init_failure_is_raised_by_start():
    class Broken(Collector):
        def handle_init(self):
            raise OSError('no such file')
    plugin = Broken('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0)
    with pytest.raises(OSError, match='no such file'):
        plugin.start()
    plugin.stop()


def test_handle_stop_never_overlaps_handle_recv(circusd):
    plugin = collector(circusd)
    inside, gate, overlaps = threading.Event(), threading.Event(), []

    def slow(data):
        inside.set()
        gate.wait(5)
        inside.clear()
    plugin.on_event = slow
    plugin.handle_stop = lambda: overlaps.append(inside.is_set())
    with plugin:
        wait_for(lambda: circusd.call('incr', name='sleeper') and inside.wait(0.2),
                 what='a handler to be running')
        stopper = threading.Thread(target=plugin.stop)
        stopper.start()
        stopper.join(0.1)
        assert stopper.is_alive() and overlaps == []
        gate.set()
        stopper.join(5)
    assert overlaps == [False]


def test_start_in_main_thread_stops_on_sigterm_and_restores_handlers(circusd):
    import os
    import signal
    plugin = collector(circusd)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    sender = threading.Thread(target=lambda: (wait_for(lambda: plugin.running),
                                              os.kill(os.getpid(), signal.SIGTERM)))
    sender.start()
    plugin.start()
    sender.join()
    assert plugin.stops == 1 and not plugin.running and plugin._CircusPlugin__context is None
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_signal_as_the_plugin_thread_starts_still_stops_gracefully(monkeypatch):
    """SIGINT while start() is starting the plugin thread (here it comes, for sure, right
    after the thread began and before start() went on) stops the plugin gracefully all
    the same: handle_stop runs, and no plugin thread is left."""
    import os
    import signal
    signalled, stops = threading.Event(), []

    class SignalsAtInit(CircusPlugin):
        name = 'signals_at_init'

        def handle_init(self):
            os.kill(os.getpid(), signal.SIGINT)  # handled in the main thread, in start()
            signalled.set()

        def handle_recv(self, data):
            pass

        def handle_stop(self):
            stops.append(threading.current_thread() is threading.main_thread())

    real_start = threading.Thread.start

    def start(thread):
        real_start(thread)
        if thread.name == 'plugin-signals_at_init':
            signalled.wait(5)  # the main thread takes the signal here
    monkeypatch.setattr(threading.Thread, 'start', start)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    plugin = SignalsAtInit('tcp://127.0.0.1:%d' % free_port(),
                           'tcp://127.0.0.1:%d' % free_port(), 1.0)
    plugin.start()
    assert stops == [True] and not plugin.running
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- ported from circus 0.19: initialize() and circus's attributes ---------------------------

def test_initialize_override_runs_after_handle_init_and_its_timer_ticks(circusd, tmp_path):
    from sample_plugins import TimerInInitialize
    dump = tmp_path / 'dump.txt'
    with TimerInInitialize(circusd.endpoint, circusd.pubsub_endpoint, 1.0, dump=str(dump)):
        wait_for(lambda: dump.read_text().count('tick ok') >= 3, what='three ticks')
    lines = dump.read_text().splitlines()
    assert lines[:2] == ['handle_init', 'initialize context=True sub_socket=True']


def test_initialize_override_under_circusd(start_circusd, tmp_path):
    dump = tmp_path / 'dump.txt'
    circusd = start_circusd(plugins={'timer': {'use': 'sample_plugins.TimerInInitialize',
                                               'dump': dump}})
    wait_for(lambda: dump.exists() and 'tick ok' in dump.read_text(), timeout=8,
             what='a tick of the timer started in initialize()', interval=0.05)
    assert dump.read_text().startswith('handle_init\ninitialize context=True'), \
        circusd.log()


def test_circus_attributes_have_a_meaning_or_a_clear_error(circusd):
    import zmq
    plugin = collector(circusd)
    assert plugin.context is None and plugin.sub_socket is None
    with plugin:
        assert isinstance(plugin.context, zmq.Context) and not plugin.context.closed
        assert plugin.sub_socket.type == zmq.SUB
        context = plugin.context
        for attr, instead in (('client', 'call()'), ('substream', 'handle_recv()')):
            with pytest.raises(AttributeError, match=r"plugin collector: .*%r.*%s"
                               % (attr, re.escape(instead))):
                getattr(plugin, attr)
    assert context.closed and plugin.context is None or plugin.context.closed
    plugin.client = 'mine'  # a subclass may still use the name for its own things
    assert plugin.client == 'mine'


def test_sockets_a_plugin_leaves_open_do_not_hang_its_stop(circusd):
    import zmq
    plugin = collector(circusd).start_background()
    made = queue.Queue()
    plugin.loop.add_callback(lambda: made.put(plugin.context.socket(zmq.PUSH)))
    leftover = made.get(timeout=5)
    leftover.connect('tcp://127.0.0.1:%d' % free_port())
    leftover.send(b'never delivered', zmq.NOBLOCK)  # linger would wait for it
    stopper = threading.Thread(target=plugin.stop, daemon=True)
    stopper.start()
    stopper.join(5)
    assert not stopper.is_alive(), 'stop() hung on a socket made from plugin.context'


# -- start and stop from several threads ------------------------------------------------------

def test_stop_racing_start_background_leaves_nothing_running():
    endpoints = ('tcp://127.0.0.1:%d' % free_port(), 'tcp://127.0.0.1:%d' % free_port())
    errors, runs, deadline = [], 0, time.monotonic() + 6
    while runs < 200 and time.monotonic() < deadline:
        runs += 1
        plugin = Collector(*endpoints, 1.0, call_timeout='2')
        gate = threading.Barrier(3)

        def at_the_gate(method):
            gate.wait()
            try:
                method()
            except Exception as exc:
                errors.append((method.__name__, exc))
        threads = [threading.Thread(target=at_the_gate, args=(method,))
                   for method in (plugin.start_background, plugin.stop, plugin.stop)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert not any(t.is_alive() for t in threads), 'start/stop hung in run %d' % runs
        plugin.stop()  # whichever won, a later stop leaves nothing behind
        assert not plugin.running
        left = [t for t in threading.enumerate() if t.name == 'plugin-collector']
        assert not left, 'run %d left the plugin thread running' % runs
    assert not errors, errors[:3]
    assert runs >= 50


@pytest.mark.parametrize('how', ['start_background', 'start'])
def test_start_after_stop_starts_nothing(how):
    plugin = Collector('tcp://127.0.0.1:%d' % free_port(),
                       'tcp://127.0.0.1:%d' % free_port(), 1.0)
    plugin.stop()
    getattr(plugin, how)()  # returns at once
    assert not plugin.running
    assert not [t for t in threading.enumerate() if t.name == 'plugin-collector']


# -- malformed endpoints -----------------------------------------------------------------------

@pytest.mark.parametrize('endpoint,pubsub,ssh,culprit', [
    ('127.0.0.1:5555', 'tcp://127.0.0.1:5556', None, "endpoint: '127.0.0.1:5555'"),
    ('tcp://127.0.0.1:5555', 'tcp://127.0.0.1:notaport', None,
     "pubsub_endpoint: 'tcp://127.0.0.1:notaport'"),
    ('tcp://127.0.0.1:70000', 'tcp://127.0.0.1:5556', None, "'tcp://127.0.0.1:70000'"),
    ('tcp://127.0.0.1:5555', 'tcp://127.0.0.1:5556', 'me@host:port', "ssh_server: "),
    ('tcp://127.0.0.1:5555', 'ipc://' + 'x' * 200, None, 'File name too long'),
    ('tcp://127.0.0.1:5555', None, None, 'pubsub_endpoint: None'),
])
def test_a_malformed_endpoint_fails_the_start_at_once(endpoint, pubsub, ssh, culprit):
    plugin = Collector(endpoint, pubsub, 1.0, ssh)
    outcome = queue.Queue()

    def start():
        try:
            plugin.start_background()
        except Exception as exc:
            outcome.put(exc)
        else:
            outcome.put(None)
    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    error = outcome.get(timeout=5)  # not hung on a socket left open
    assert isinstance(error, ConfigError), error
    assert 'plugin collector: ' in str(error) and culprit in str(error)
    assert '\n' not in str(error)
    assert not [t for t in threading.enumerate() if t.name == 'plugin-collector']
    plugin.stop()


# -- plugin-made events ---------------------------------------------------------------------

def test_emitted_events_reach_the_other_plugins_of_the_process(circusd):
    import json
    emitter = collector(circusd, name='emitter')
    emitter.name = 'emitter'
    with collector(circusd) as listener, emitter:
        emitter.emit('web', 'did_something', count=3, why={'a', 'set'})
        topic, body = next_event(listener, b'plugin.web.did_something')
        fields = json.loads(body)
        assert fields['plugin'] == 'emitter' and fields['count'] == 3
        assert sorted(fields['why']) == ['a', 'set'] and fields['time'] > 0
        emitter.emit('web', 'bad action!')  # logged, not raised
        emitter.emit('web', 'second')
        next_event(listener, b'plugin.web.second')
        # The emitter does not hear itself.
        assert all(not data[0].startswith(b'plugin.')
                   for data in list(emitter.received.queue))


def test_emitted_events_cross_processes_through_the_option_endpoints(circusd):
    import zmq
    publish = 'tcp://127.0.0.1:%d' % free_port()
    foreign = 'tcp://127.0.0.1:%d' % free_port()
    context = zmq.Context()
    outside_sub = context.socket(zmq.SUB)
    outside_sub.setsockopt(zmq.SUBSCRIBE, b'plugin.')
    outside_sub.linger = 0
    outside_pub = context.socket(zmq.PUB)
    outside_pub.linger = 0
    outside_pub.bind(foreign)
    try:
        with collector(circusd, events_publish=publish,
                       events_subscribe=foreign) as plugin:
            outside_sub.connect(publish)

            def published():
                plugin.emit('web', 'ping')
                return outside_sub.poll(50) and outside_sub.recv_multipart()
            topic, _ = wait_for(published, what='the emitted event on events_publish')
            assert topic == b'plugin.web.ping'

            def received():
                outside_pub.send_multipart([b'plugin.db.pong', b'{"plugin": "x"}'])
                try:
                    return next_event(plugin, b'plugin.db.pong', timeout=0.05)
                except queue.Empty:
                    return None
            assert wait_for(received, what='an event from events_subscribe')
    finally:
        outside_sub.close()
        outside_pub.close()
        context.term()


def test_a_bad_events_endpoint_is_named():
    with pytest.raises(ConfigError, match="plugin collector: option 'events_publish': 'nowhere'"):
        Collector('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0, events_publish='nowhere')


class _Counter(CircusPlugin):
    name = 'counter'
    drain_on_stop = 0.2

    def __init__(self, *args, **config):
        super().__init__(*args, **config)
        self.seen = {}

    def handle_recv(self, data):
        self.seen[data[0]] = self.seen.get(data[0], 0) + 1


def test_drain_on_stop_handles_the_events_on_their_way():
    with EventPublisher() as events:
        plugin = _Counter('tcp://127.0.0.1:%d' % free_port(), events.endpoint, 1.0)
        plugin.start_background()
        try:
            def heard():
                events.publish('probe', 'spawn')
                return plugin.seen
            wait_for(heard, what='the subscription')
            for n in range(2000):
                events.publish('web', 'spawn', process_pid=n + 1)
        finally:
            plugin.stop()                      # at once: 2000 events are on their way
    assert plugin.seen[b'watcher.web.spawn'] == 2000


class ClosesSlowly(CircusPlugin):
    """``handle_stop`` begins closing something on the loop, as a client's ``aclose()``
    does, taking a few loop turns; ``forever`` is a task that never ends by itself."""
    name = 'closes_slowly'

    def handle_init(self):
        self.closed = self.cancelled = False
        self.forever = self.loop.asyncio_loop.create_task(self._forever())

    async def _forever(self):
        try:
            while True:
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def _close(self):
        for _ in range(5):
            await asyncio.sleep(0.01)
        self.closed = True

    def handle_stop(self):
        asyncio.run_coroutine_threadsafe(self._close(), self.loop.asyncio_loop)

    def handle_recv(self, data):
        pass


@pytest.mark.parametrize('from_loop', [True, False], ids=['stop-on-the-loop', 'stop-elsewhere'])
def test_tasks_pending_at_stop_end_or_are_cancelled(circusd, from_loop, caplog):
    plugin = ClosesSlowly(circusd.endpoint, circusd.pubsub_endpoint, 1.0)
    if from_loop:  # the plugin thread cannot wait for what handle_stop began
        plugin.loop.add_callback(plugin.stop)
        plugin.start()
    else:
        plugin.start_background()
        plugin.stop()
    assert plugin.closed and plugin.cancelled and plugin.forever.cancelled()
    assert 'destroyed but it is pending' not in caplog.text


class AsksAtStop(CircusPlugin):
    """A task of its ordinary work waits on circusd's answer when the plugin stops, as a
    periodic look or Flapping's stop may; it records what its call ended with."""
    name = 'asks_at_stop'

    def handle_init(self):
        self.outcome = []
        self.asking = self.loop.asyncio_loop.create_task(self._ask())

    async def _ask(self):
        try:
            self.outcome.append(await self.call_async('list'))
        except CallError as exc:  # what a plugin would log as a failure
            self.outcome.append(exc)

    def handle_recv(self, data):
        pass


def test_a_call_in_flight_at_stop_is_cancelled_not_failed(circusd):
    # Nothing answers on this endpoint: the call is still waiting when the plugin stops.
    plugin = AsksAtStop('tcp://127.0.0.1:%d' % free_port(), circusd.pubsub_endpoint, 1.0)
    plugin.start_background()
    plugin.stop()
    assert plugin.outcome == [] and plugin.asking.cancelled()
