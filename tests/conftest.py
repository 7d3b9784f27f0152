import asyncio
import contextlib
import json
import logging
import os
import threading
import time

import pytest
import trustme
from hypothesis import strategies as st
from tornado.ioloop import IOLoop

from circus_plugins import CircusPlugin
from circus_plugins.testing import Circusd, EventRecorder, run_on_loop, wait_for
from receivers import PROMETHEUS, PrometheusServer, WebhookReceiver

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)

# Plugins run by circusd or circus-plugin import the sample plugins from here.
PLUGIN_ENV = {'PYTHONPATH': os.pathsep.join(
    [TESTS_DIR, ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])}


@pytest.fixture
def start_circusd(tmp_path):
    """Start a real circusd 0.19: ``start_circusd(watchers=..., plugins=...)``."""
    started = []

    def start(**kwargs):
        env = dict(PLUGIN_ENV, **kwargs.pop('env', {}))
        circusd = Circusd(tmp_path, env=env, **kwargs)
        started.append(circusd)
        return circusd.start()

    yield start
    for circusd in started:
        circusd.stop()


@pytest.fixture
def circusd(start_circusd):
    """A circusd with one watcher, ``sleeper``, running one ``sleep`` process."""
    return start_circusd(watchers={'sleeper': {'cmd': 'sleep 1000', 'numprocesses': 1}})


@pytest.fixture
def events(circusd):
    """An :class:`EventRecorder` on ``circusd``, already receiving."""
    with EventRecorder(circusd.pubsub_endpoint) as recorder:
        recorder.sync(circusd, 'sleeper')
        yield recorder


@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every test must leave no plugin thread running."""
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith('plugin-')]
    assert not left, 'plugin threads left running: %s' % left


@pytest.fixture
def udp():
    """A UDP receiver standing in for a statsd server."""
    from circus_plugins.testing import UdpReceiver
    with UdpReceiver() as receiver:
        yield receiver


def observer_options(use, target_key, target, udp, **extra):
    """A ``[plugin:...]`` section for an observer plugin that checks ``target`` every
    0.2 s and sends its metrics to the ``udp`` receiver."""
    return dict({'use': use, target_key: target, 'loop_rate': '0.2', 'host': '127.0.0.1',
                 'port': udp.port}, **extra)


class StatsdRecorder:
    """A stand-in for a plugin's statsd client, as circus 0.19's tests make one: it
    records ``increment(name)``, ``gauge(name, value)`` and ``timed(name, value)`` and
    has nothing else (no pipeline, no stop)."""

    def __init__(self):
        self.increments = []  # names, in order
        self.gauges = []  # (name, value), in order
        self.timings = []  # (name, milliseconds), in order

    def increment(self, name):
        self.increments.append(name)

    def gauge(self, name, value):
        self.gauges.append((name, value))

    def timed(self, name, value):
        self.timings.append((name, value))


def caught_up(circusd, events, watcher):
    """Return once ``events`` (an EventRecorder) holds every event ``circusd`` published
    before this call: circusd publishes in order, and this waits for the spawn of one
    more process of ``watcher``, published after them (then takes that process away)."""
    from circus_plugins.testing import wait_for
    seen = len(events.events)
    wanted = ('watcher.%s.spawn' % watcher).encode()
    assert circusd.call('incr', name=watcher)['status'] == 'ok'

    def arrived():
        events.poll()
        return any(topic == wanted for topic, _ in events.events[seen:])
    wait_for(arrived, what='the events published so far')
    circusd.call('decr', name=watcher)


def asked_since(counter, before, polls):
    """What a polling plugin behind ``counter`` (a CommandCounter) asked besides
    ``status`` since ``before`` (a snapshot of it), once it has polled ``polls`` more times
    (each poll asks ``status`` once)."""
    wait_for(lambda: counter.snapshot().get('status', 0) >= before.get('status', 0) + polls,
             what='%d polls' % polls)
    return {command: count - before.get(command, 0) for command, count
            in counter.snapshot().items()
            if command != 'status' and count != before.get(command, 0)}


def look_now(circusd):
    """Run the periodic check of ``circusd``'s plugin (a ScriptedCircusd's) once, as its
    timer would, and wait until it has ended."""
    plugin = circusd.plugin
    circusd.on_loop(lambda: plugin.loop.add_callback(plugin.look_now))
    circusd.settle()


def end_process(process, timeout=5.0):
    """Terminate ``process`` (a Popen) and wait for it to end; kill it if it has not
    ended within ``timeout`` seconds."""
    import subprocess
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def modules_loaded(code):
    """The names in ``sys.modules`` once ``code`` has run in a fresh interpreter (with the
    tests' and the checkout's directories on the path): what such a process carries."""
    import subprocess
    import sys
    marker = '-- sys.modules --'
    result = subprocess.run(
        [sys.executable, '-c', '%s\nimport sys\nprint(%r)\nprint("\\n".join(sys.modules))'
         % (code, marker)],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, **PLUGIN_ENV))
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split(marker, 1)[1].split())


class EventCollector:
    """A plugin that collects the plugin-made events (topic ``plugin.``) that other
    plugins of this process emit; started beside the plugin under test, on endpoints
    that need not answer. Use as a context manager, or through the ``collector``
    fixture."""

    def __init__(self):
        import queue
        from circus_plugins import CircusPlugin

        received = self.received = queue.Queue()

        class Collector(CircusPlugin):
            name = 'event_collector'

            def handle_recv(self, data):
                import json
                topic, body = data
                if topic.startswith(b'plugin.'):
                    watcher, action = topic.decode().split('.', 1)[1].rsplit('.', 1)
                    received.put((watcher, action, json.loads(body)))

        self.plugin = Collector('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 0.0)

    def __enter__(self):
        self.plugin.start_background()
        return self

    def __exit__(self, *exc_info):
        self.plugin.stop()

    def next_event(self, timeout=5.0):
        """``(watcher, action, body)`` of the next event; fails after ``timeout``
        seconds without one."""
        import queue
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            pytest.fail('no plugin-made event within %g s' % timeout)

    def none_yet(self):
        """Whether no event has arrived (beyond those taken) once the collector has
        handled what was handed to it so far: an emit hands its event over before it
        returns."""
        import threading
        done = threading.Event()
        self.plugin.loop.add_callback(done.set)
        assert done.wait(5.0), 'the collector does not run'
        return self.received.empty()


@pytest.fixture
def collector():
    """A started :class:`EventCollector`, stopped after the test."""
    with EventCollector() as started:
        yield started


class LoopThread:
    """A tornado IOLoop run by a thread of its own, as a plugin's is. :attr:`escaped`
    collects what reached the loop's exception handler and tornado's error logs."""

    def __init__(self):
        self.escaped = []
        self.loop = IOLoop(make_current=False)
        self.loop.asyncio_loop.set_exception_handler(
            lambda loop, context: self.escaped.append(context))
        self._tornado = logging.Handler(logging.ERROR)
        self._tornado.emit = self.escaped.append
        logging.getLogger('tornado').addHandler(self._tornado)
        self.thread = threading.Thread(target=self._run, name='loop-test', daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop.asyncio_loop)
        self.loop.start()

    def call(self, function, timeout=5.0):
        """``function()`` on the loop (awaited if it gives an awaitable); its result."""
        return run_on_loop(self.loop, function, timeout)

    def stop(self):
        self.loop.add_callback(self.loop.stop)
        self.thread.join(5)
        logging.getLogger('tornado').removeHandler(self._tornado)
        self.loop.close(all_fds=True)


@pytest.fixture
def loop():
    runner = LoopThread()
    yield runner
    runner.stop()
    assert not runner.escaped


# -- real servers for the alerts tests (tests/receivers.py) -----------------------------

@pytest.fixture
def receiver(loop):
    r = WebhookReceiver(loop)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope='module')
def ca():
    return trustme.CA()


@pytest.fixture(scope='module')
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp('ca') / 'ca.pem'
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope='module')
def prometheus(tmp_path_factory):
    """Debian's Prometheus, one per test module (it scrapes a new target only ~5 s after
    it starts), scraping every second the ports of :attr:`PrometheusServer.ports`: a test
    takes one (``prometheus.take_port()``) for its exporter, and its series carry
    ``instance="127.0.0.1:<port>"``. Skipped without Prometheus."""
    if not os.path.exists(PROMETHEUS):
        pytest.skip('prometheus is not installed (apt-get install prometheus)')
    server = PrometheusServer(tmp_path_factory.mktemp('prometheus'), ports=8)
    server.start()
    yield server
    server.stop()


@contextlib.contextmanager
def plugin_running(cls, circusd, **options):
    """A plugin of class ``cls`` running in this process (``start_background``) against
    ``circusd``, its ``options`` given as strings as circusd would; stopped at the end."""
    plugin = cls(circusd.endpoint, circusd.pubsub_endpoint, 1.0,
                 **{key: str(value) for key, value in options.items()})
    plugin.start_background()
    try:
        yield plugin
    finally:
        plugin.stop()


def untrusted_events(actions):
    """A hypothesis strategy of ``(topic, body)`` pairs as a broken or hostile publisher
    might send them: junk bytes, or ``watcher.``/``plugin.`` topics with one of
    ``actions`` (or ``x``) and JSON bodies of odd field values."""
    fields = st.dictionaries(
        st.sampled_from(['process_pid', 'time', 'exit_code', 'plugin', 'x']),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                  st.lists(st.integers(), max_size=2)))
    topic = st.one_of(
        st.binary(max_size=30),
        st.builds(lambda kind, w, a: ('%s.%s.%s' % (kind, w, a)).encode(),
                  st.sampled_from(['watcher', 'plugin']), st.text(max_size=8),
                  st.sampled_from(list(actions) + ['x'])))
    body = st.one_of(st.binary(max_size=30), fields.map(lambda f: json.dumps(f).encode()))
    return st.tuples(topic, body)


#: A watcher that runs only when a test starts it: see :func:`heard`.
MARKER = {'cmd': 'sleep 1000', 'autostart': False}


def heard(circusd, progress, timeout=8.0):
    """Return once a plugin has handled every event ``circusd`` published so far: start
    the ``marker`` watcher (:data:`MARKER`, among circusd's watchers) and wait until
    ``progress()``, a number that grows when the plugin sees the marker's process spawned,
    has grown (circusd publishes in order). Tried again while a plugin that has just
    started does not hear circusd yet (a SUB socket misses what comes before its
    subscription reaches the publisher)."""
    deadline = time.monotonic() + timeout
    while True:
        before = progress()
        circusd.call('start', name='marker')
        try:
            wait_for(lambda: progress() > before, timeout=1, what='the marker heard of')
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
        finally:
            circusd.call('stop', name='marker')


class _Other(CircusPlugin):
    """A plugin that does nothing, named ``other``: tests emit events in its name."""
    name = 'other'

    def handle_recv(self, data):
        pass


def running_beside(circusd):
    """A plugin named ``other`` running in this process, beside the plugin under test:
    what it :meth:`~circus_plugins.CircusPlugin.emit` reaches the others as plugin-made
    events do in a host."""
    return plugin_running(_Other, circusd)
