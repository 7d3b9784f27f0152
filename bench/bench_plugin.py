"""Benchmark circus_plugins.CircusPlugin against circus 0.19's CircusPlugin.

Run from the checkout's root::

    .venv/bin/python bench/bench_plugin.py            # everything (~1 min)
    .venv/bin/python bench/bench_plugin.py --quick    # smoke test (~10 s)
    .venv/bin/python bench/bench_plugin.py --only throughput --only latency

Three parts, all on 127.0.0.1 only:

throughput
    A publisher process binds a pyzmq PUB socket and floods ``--events`` events (topic
    ``watcher.bench.spawn``, a ~60-byte JSON body) as fast as it can, once per subscriber
    and round. Subscribers, one at a time, in this process: our ``CircusPlugin`` subclass
    (``start_background()``/``stop()``), circus 0.19's ``CircusPlugin`` subclass (its
    ``start()`` in a thread), and a bare pyzmq SUB loop (blocking ``recv_multipart`` in a
    thread). Before each flood the publisher sends ``watcher.warmup.x`` until the subscriber
    has seen one; after it, ``watcher.benchend.x`` until the subscriber has seen one. The
    rate is events handled / time from the first to the last event handled. PUB drops what
    a slow subscriber cannot take (high-water mark 1000, as with circusd), so the share of
    events received is printed too. Rounds interleave the subscribers; the median round
    is reported.

latency
    A real circusd 0.19 on free ports (one watcher, ``sleep 1000``, no multicast) and
    ``call('list')`` timed from the main thread: ours (plugin started with
    ``start_background()``), ours from the plugin's loop thread, and circus 0.19's blocking
    ``call()`` (``initialize()``\\d, loop not started).

idle
    Our plugin, connected to that circusd and idle, in a child process; its CPU time over
    ``--idle`` seconds is read with psutil. circus 0.19's plugin is measured the same way
    for reference.

Everything started is stopped at the end, also on Ctrl-C.
"""
import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil
import zmq

from _child import Child, run

TOPIC = b'watcher.bench.spawn'
WARMUP = b'watcher.warmup.x'
END = b'watcher.benchend.x'
BODY = json.dumps({'process_pid': 123456, 'time': 1767225600.123456,
                   'watcher': 'bench'}).encode()

TARGET_VS_CIRCUS = 3.0
TARGET_VS_BARE = 0.7
TARGET_LATENCY = 1.1
TARGET_IDLE_CPU = 0.1

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# -- publisher process ------------------------------------------------------------------------

def publisher_main(conn, cpus=None):
    """Runs in its own process; obeys ('flood', n) / 'go' / 'stop' / 'exit' on ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    if cpus:
        os.sched_setaffinity(0, cpus)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port('tcp://127.0.0.1')
    conn.send(port)
    send = pub.send
    more = zmq.SNDMORE

    def next_order():
        try:
            return conn.recv()
        except EOFError:  # the parent is gone
            return 'exit'

    try:
        while True:
            order = next_order()
            if order == 'exit':
                return
            _, count = order
            # Warm up until the subscriber has joined and says so.
            while not conn.poll(0.001):
                pub.send_multipart([WARMUP, b'{}'])
            if next_order() != 'go':
                return
            start = time.perf_counter()
            for _ in range(count):
                send(TOPIC, more)
                send(BODY)
            elapsed = time.perf_counter() - start
            # Tell the subscriber the flood is over until it has heard.
            while not conn.poll(0.002):
                pub.send_multipart([END, b'{}'])
            if next_order() != 'stop':
                return
            conn.send(elapsed)
    finally:
        pub.close()
        ctx.term()


class Publisher(Child):
    def __init__(self, cpus=None):
        super().__init__(publisher_main, 'bench-publisher', cpus)
        self.endpoint = 'tcp://127.0.0.1:%d' % self.ready


# -- what every subscriber does with an event ---------------------------------------------------

class Tally:
    """Counts flood events with the time of the first and the last; notes markers."""

    def __init__(self):
        self.count = 0
        self.first = self.last = 0.0
        self.warm = threading.Event()
        self.done = threading.Event()

    def on_event(self, data, _clock=time.perf_counter):
        topic = data[0]
        if topic == TOPIC:
            now = _clock()
            if not self.count:
                self.first = now
            self.count += 1
            self.last = now
        elif topic == WARMUP:
            if not self.warm.is_set():
                self.warm.set()
        elif topic == END:
            if not self.done.is_set():
                self.done.set()


# -- the three subscribers ------------------------------------------------------------------

def counting_plugin(base, pubsub, tally, endpoint):
    """An instance of a subclass of ``base`` (ours or circus's CircusPlugin) handing each
    event to ``tally``. The command endpoint is unused: nothing listens, nothing is sent."""
    class BenchPlugin(base):
        name = 'bench'

        def handle_recv(self, data):
            tally.on_event(data)

    return BenchPlugin(endpoint, pubsub, 1.0)


class OursSubscriber:
    label = 'circus_plugins'

    def __init__(self, pubsub, tally, endpoint='tcp://127.0.0.1:1'):
        from circus_plugins import CircusPlugin
        self.plugin = counting_plugin(CircusPlugin, pubsub, tally, endpoint)

    def start(self):
        self.plugin.start_background()

    def stop(self):
        self.plugin.stop()


class CircusSubscriber:
    label = 'circus 0.19'

    def __init__(self, pubsub, tally, endpoint='tcp://127.0.0.1:1'):
        from circus.plugins import CircusPlugin
        self.plugin = counting_plugin(CircusPlugin, pubsub, tally, endpoint)
        self.thread = None
        self.error = None

    def _run(self):
        try:
            self.plugin.start()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self):
        self.thread = threading.Thread(target=self._run, name='circus-plugin', daemon=True)
        self.thread.start()

    def stop(self):
        plugin = self.plugin
        if self.thread is not None and self.thread.is_alive():
            # circus's stop() is not thread-safe: run it on the plugin's loop.
            plugin.loop.add_callback(plugin.stop)
            self.thread.join(10)
            if self.thread.is_alive():
                raise RuntimeError('circus plugin thread did not stop')
        with contextlib.suppress(Exception):
            plugin.loop.close(all_fds=False)
        if self.error is not None:
            raise self.error


class BareSubscriber:
    label = 'bare pyzmq'

    def __init__(self, pubsub, tally):
        self.pubsub = pubsub
        self.tally = tally
        self.ctx = zmq.Context()
        self.stopping = False
        self.thread = None

    def _run(self):
        sub = self.ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvtimeo = 200  # to notice stop() when nothing comes
        sub.setsockopt(zmq.SUBSCRIBE, b'watcher.')
        sub.connect(self.pubsub)
        recv = sub.recv_multipart
        handle = self.tally.on_event
        try:
            while not self.stopping:
                try:
                    frames = recv()
                except zmq.Again:
                    continue
                handle((frames[0], frames[1]))
        finally:
            sub.close()

    def start(self):
        self.thread = threading.Thread(target=self._run, name='bare-sub', daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        if self.thread is not None:
            self.thread.join(10)
        self.ctx.term()


SUBSCRIBERS = [OursSubscriber, CircusSubscriber, BareSubscriber]


def one_round(publisher, kind, count, timeout):
    tally = Tally()
    sub = kind(publisher.endpoint, tally)
    sub.start()
    try:
        publisher.conn.send(('flood', count))
        if not tally.warm.wait(timeout):
            raise RuntimeError('%s: no warm-up event within %s s' % (kind.label, timeout))
        publisher.conn.send('go')
        if not tally.done.wait(timeout):
            raise RuntimeError('%s: no end event within %s s' % (kind.label, timeout))
        publisher.conn.send('stop')
        pub_elapsed = publisher.conn.recv()
    finally:
        sub.stop()
    elapsed = tally.last - tally.first
    rate = tally.count / elapsed if elapsed > 0 else float('nan')
    return {'count': tally.count, 'elapsed': elapsed, 'rate': rate,
            'received': tally.count / count, 'pub_rate': count / pub_elapsed}


def bench_throughput(args):
    print('== (a) event throughput: %d events x %d rounds per subscriber, median round'
          % (args.events, args.rounds))
    print('   topic %r, body %d bytes, default HWMs (1000)' % (TOPIC, len(BODY)))
    results = {kind.label: [] for kind in SUBSCRIBERS}
    saved_affinity = None
    pub_cpus = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit('--pin needs at least 2 CPUs')
        half = len(cpus) // 2
        pub_cpus, sub_cpus = set(cpus[:half]), set(cpus[half:])
        print('   publisher pinned to CPUs %s, subscribers to CPUs %s'
              % (sorted(pub_cpus), sorted(sub_cpus)))
        saved_affinity = os.sched_getaffinity(0)
    publisher = Publisher(pub_cpus)
    if saved_affinity is not None:
        os.sched_setaffinity(0, sub_cpus)  # after the spawn, so the publisher can have its own
    try:
        for rnd in range(args.rounds):
            for kind in SUBSCRIBERS:
                res = one_round(publisher, kind, args.events, timeout=60)
                results[kind.label].append(res)
                if args.verbose:
                    print('   round %d %-15s %9.0f ev/s  %5.1f%% received  (publisher '
                          '%.0f ev/s)' % (rnd + 1, kind.label, res['rate'],
                                          100 * res['received'], res['pub_rate']))
    finally:
        publisher.close()
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)

    print()
    print('   %-15s %12s %12s %10s %10s %14s' % ('subscriber', 'events/s', 'best ev/s',
                                                 'received', 'elapsed', 'publisher ev/s'))
    medians = {}
    for label, runs in results.items():
        rates = [r['rate'] for r in runs]
        med = statistics.median(rates)
        medians[label] = med
        mid = min(runs, key=lambda r: abs(r['rate'] - med))
        print('   %-15s %12.0f %12.0f %9.1f%% %9.3fs %14.0f'
              % (label, med, max(rates), 100 * statistics.median(r['received'] for r in runs),
                 mid['elapsed'], statistics.median(r['pub_rate'] for r in runs)))
    ours, circus, bare = (medians[k.label] for k in SUBSCRIBERS)
    print()
    r1, r2 = ours / circus, ours / bare
    print('   ours / circus : %5.2fx   (target >= %.1fx)  %s'
          % (r1, TARGET_VS_CIRCUS, verdict(r1 >= TARGET_VS_CIRCUS)))
    print('   ours / bare   : %5.2fx   (target >= %.1fx)  %s'
          % (r2, TARGET_VS_BARE, verdict(r2 >= TARGET_VS_BARE)))
    print()
    return {'throughput': results, 'ours/circus': r1, 'ours/bare': r2}


def verdict(ok):
    return 'OK' if ok else 'MISSED'


# -- a real circusd ---------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Circusd:
    def __init__(self, workdir):
        self.endpoint = 'tcp://127.0.0.1:%d' % free_port()
        self.pubsub = 'tcp://127.0.0.1:%d' % free_port()
        self.ini = os.path.join(workdir, 'circus.ini')
        with open(self.ini, 'w') as f:
            f.write('[circus]\n'
                    'endpoint = %s\n'
                    'pubsub_endpoint = %s\n'
                    'multicast_endpoint =\n'
                    'statsd = false\n'
                    'check_delay = 5\n'
                    '\n'
                    '[watcher:sleeper]\n'
                    'cmd = sleep 1000\n'
                    'numprocesses = 1\n' % (self.endpoint, self.pubsub))
        self.log = open(os.path.join(workdir, 'circusd.log'), 'wb')
        circusd = os.path.join(os.path.dirname(sys.executable), 'circusd')
        self.proc = subprocess.Popen([circusd, self.ini], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=workdir)
        self.ctx = zmq.Context()
        try:
            self._wait_ready(20)
        except BaseException:
            self.close()
            raise

    def _request(self, command, timeout, **props):
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        try:
            sock.connect(self.endpoint)
            msg_id = uuid.uuid4().hex
            sock.send(json.dumps({'id': msg_id, 'command': command,
                                  'properties': props}).encode())
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sock.poll(remaining * 1000):
                    return None
                reply = json.loads(sock.recv())
                if reply.get('id') == msg_id:
                    return reply
        finally:
            sock.close()

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('circusd exited with %s; see %s'
                                   % (self.proc.returncode, self.log.name))
            reply = self._request('list', 0.5, name='sleeper')
            if reply and reply.get('status') == 'ok' and reply.get('pids'):
                return
            time.sleep(0.1)
        raise RuntimeError('circusd did not answer within %s s' % timeout)

    def close(self):
        proc = self.proc
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                self._request('quit', 2)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for child in children:  # the watcher's sleep, should circusd not have
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.ctx.term()
        self.log.close()


# -- (b) latency ------------------------------------------------------------------------------

def percentiles(samples_ns):
    data = sorted(samples_ns)

    def pick(q):
        return data[min(len(data) - 1, int(q * len(data)))] / 1000.0
    return pick(0.50), pick(0.99), statistics.fmean(data) / 1000.0


def time_calls(call, warmup, count):
    for _ in range(warmup):
        reply = call('list')
        assert reply.get('status') == 'ok', reply
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        call('list')
        samples.append(clock() - t0)
    return samples


def bench_latency(args, circusd):
    from circus.plugins import CircusPlugin as TheirPlugin
    from circus_plugins import CircusPlugin as OurPlugin

    blocks = 10
    per_block = max(1, args.calls // blocks)
    print("== (b) call('list') latency against circusd 0.19: %d calls per caller after %d "
          "warm-up, in %d interleaved blocks" % (per_block * blocks, args.warmup_calls, blocks))

    class Ours(OurPlugin):
        name = 'bench'

        def handle_recv(self, data):
            pass

    class Theirs(TheirPlugin):
        name = 'bench'

        def handle_recv(self, data):
            pass

    with contextlib.ExitStack() as stack:
        plugin = Ours(circusd.endpoint, circusd.pubsub, 1.0)
        plugin.start_background()
        stack.callback(plugin.stop)

        theirs = Theirs(circusd.endpoint, circusd.pubsub, 1.0)
        # Sockets only: its loop is not started, and its call() uses its DEALER directly.
        theirs.initialize()

        @stack.callback
        def close_theirs():
            theirs.substream.close()
            theirs.client.close()
            theirs.sub_socket.close()
            theirs.context.destroy()
            theirs.loop.close(all_fds=False)

        def on_loop_thread(warmup, count):
            result = {}
            finished = threading.Event()

            def run():
                try:
                    result['samples'] = time_calls(plugin.call, warmup, count)
                except BaseException as exc:
                    result['error'] = exc
                finally:
                    finished.set()
            plugin.loop.add_callback(run)
            if not finished.wait(60):
                raise RuntimeError('calls on the plugin thread did not finish')
            if 'error' in result:
                raise result['error']
            return result['samples']

        callers = {
            'ours, main thread': lambda w, n: time_calls(plugin.call, w, n),
            'ours, loop thread': on_loop_thread,
            'circus 0.19': lambda w, n: time_calls(theirs.call, w, n),
        }
        rows = {label: [] for label in callers}
        for label, caller in callers.items():
            caller(args.warmup_calls, 0)
        for _ in range(blocks):
            for label, caller in callers.items():
                rows[label] += caller(0, per_block)

    print()
    print('   %-20s %10s %10s %10s' % ('caller', 'p50 us', 'p99 us', 'mean us'))
    stats = {}
    for label, samples in rows.items():
        p50, p99, mean = percentiles(samples)
        stats[label] = (p50, p99, mean)
        print('   %-20s %10.1f %10.1f %10.1f' % (label, p50, p99, mean))
    ratio = stats['ours, main thread'][0] / stats['circus 0.19'][0]
    ratio_loop = stats['ours, loop thread'][0] / stats['circus 0.19'][0]
    print()
    print('   ours / circus p50 (main thread): %5.2f   (target <= %.1f)  %s'
          % (ratio, TARGET_LATENCY, verdict(ratio <= TARGET_LATENCY)))
    print('   ours / circus p50 (loop thread): %5.2f' % ratio_loop)
    print()
    return {'latency': stats, 'latency ours/circus': ratio}


# -- (c) idle CPU -----------------------------------------------------------------------------

IDLE_CHILD = r'''
import signal, sys, threading
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
kind, endpoint, pubsub = sys.argv[1:4]
if kind == 'ours':
    from circus_plugins import CircusPlugin
    class Idle(CircusPlugin):
        name = 'idle'
        def handle_recv(self, data):
            pass
    plugin = Idle(endpoint, pubsub, 5.0)
    plugin.start_background()
    print('ready', flush=True)
    sys.stdin.read()          # until the parent closes our stdin
    plugin.stop()
else:
    from circus.plugins import CircusPlugin
    class Idle(CircusPlugin):
        name = 'idle'
        def handle_recv(self, data):
            pass
    plugin = Idle(endpoint, pubsub, 5.0)
    def wait_for_parent():
        sys.stdin.read()
        plugin.loop.add_callback(plugin.stop)
    plugin.loop.add_callback(lambda: print('ready', flush=True))
    threading.Thread(target=wait_for_parent, daemon=True).start()
    plugin.start()
print('stopped', flush=True)
'''


def idle_cpu(kind, circusd, seconds):
    proc = subprocess.Popen([sys.executable, '-c', IDLE_CHILD, kind, circusd.endpoint,
                             circusd.pubsub], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=ROOT)
    try:
        line = proc.stdout.readline()
        if line.strip() != b'ready':
            raise RuntimeError('idle child (%s) did not start: %r' % (kind, line))
        time.sleep(0.5)  # let connections settle before the window opens
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        threads = ps.num_threads()
        time.sleep(seconds)
        after = ps.cpu_times()
        return (after.user - before.user) + (after.system - before.system), threads
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.close()  # asks the child to stop its plugin and exit
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def bench_idle(args, circusd):
    print('== (c) idle CPU over %.0f s, plugin connected to circusd, in a child process'
          % args.idle)
    ours, ours_threads = idle_cpu('ours', circusd, args.idle)
    theirs, their_threads = idle_cpu('circus', circusd, args.idle)
    print()
    print('   %-15s %12s %9s' % ('plugin', 'CPU s', 'threads'))
    print('   %-15s %12.4f %9d' % ('circus_plugins', ours, ours_threads))
    print('   %-15s %12.4f %9d' % ('circus 0.19', theirs, their_threads))
    print()
    print('   ours: %.4f s CPU in %.0f s   (target < %.1f s)  %s'
          % (ours, args.idle, TARGET_IDLE_CPU, verdict(ours < TARGET_IDLE_CPU)))
    print()
    return {'idle ours': ours, 'idle circus': theirs}


# -- main -------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='short runs, for a smoke test')
    parser.add_argument('--only', action='append',
                        choices=['throughput', 'latency', 'idle'],
                        help='run only this part (may be repeated)')
    parser.add_argument('--events', type=int, help='events per flood (default 1000000)')
    parser.add_argument('--rounds', type=int, help='rounds per subscriber (default 5)')
    parser.add_argument('--calls', type=int, help="timed call('list') (default 2000)")
    parser.add_argument('--idle', type=float, help='idle window in seconds (default 10)')
    parser.add_argument('--pin', action='store_true',
                        help='throughput: pin the publisher and the subscribers to separate '
                        'halves of the CPUs (less noise on small machines)')
    parser.add_argument('-v', '--verbose', action='store_true', help='print every round')
    args = parser.parse_args(argv)
    quick = args.quick
    if args.events is None:
        args.events = 20000 if quick else 1000000
    if args.rounds is None:
        args.rounds = 1 if quick else 5
    if args.calls is None:
        args.calls = 200 if quick else 2000
    args.warmup_calls = 20 if quick else 100
    if args.idle is None:
        args.idle = 2.0 if quick else 10.0
    args.parts = args.only or ['throughput', 'latency', 'idle']
    return args


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    import circus
    import tornado
    import circus_plugins
    print('circus_plugins %s, circus %s, pyzmq %s (libzmq %s), tornado %s, Python %s, '
          '%d CPUs' % (circus_plugins.__version__, circus.__version__, zmq.__version__,
                       zmq.zmq_version(), tornado.version, sys.version.split()[0],
                       os.cpu_count()))
    print()
    summary = {}
    with contextlib.ExitStack() as stack:
        if 'throughput' in args.parts:
            summary.update(bench_throughput(args))
        if 'latency' in args.parts or 'idle' in args.parts:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix='bench-circusd-'))
            circusd = Circusd(workdir)
            stack.callback(circusd.close)
            if 'latency' in args.parts:
                summary.update(bench_latency(args, circusd))
            if 'idle' in args.parts:
                summary.update(bench_idle(args, circusd))
    return summary


if __name__ == '__main__':
    run(main)
