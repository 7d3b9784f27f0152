"""Benchmark EventLogger (file sink) against a seed-style logger on circus 0.19's base.

Run from the checkout's root::

    .venv/bin/python bench/bench_event_logger.py            # 5 rounds of 20000 (~10 s)
    .venv/bin/python bench/bench_event_logger.py --quick    # 1 round of 2000 (~1 s)
    .venv/bin/python bench/bench_event_logger.py --events 50000 --rounds 5 -v

Two loggers, each in a spawned child process of its own, one at a time, both fed by the
same :class:`~circus_plugins.testing.EventPublisher` in this process (a PUB socket on
127.0.0.1 with no high-water mark: it queues rather than drop):

circus_plugins
    ``circus_plugins.event_logger.EventLogger`` with ``path`` set (the file sink only),
    started with ``start_background()``: the plugin's loop turns each event into a
    record and queues it, a ``QueueListener`` thread writes it.
circus 0.19
    The seed's ``Logger`` example (the plugin-system page), written here on
    ``circus.plugins.CircusPlugin``: ``handle_recv`` decodes the event and writes one
    JSON line (time, watcher, event, pid) to the file and flushes, on the loop, one
    event a callback (circus's ``ZMQStream``); ``start()`` in the child's main thread.

Each round starts a fresh child, publishes ``watcher.probe.spawn`` every 10 ms until a
line is in the file (the subscription has reached the publisher), then publishes
``--events`` ``watcher.bench.spawn`` events (``process_pid`` 1..N, bodies built
beforehand) as fast as it can, and polls the file (read as it grows, every millisecond)
until N burst lines are there. Once the burst is sent, ``watcher.end.spawn`` is
published every 50 ms: the stream is ordered, so an end line on disk before N burst lines
means the missing ones were lost; there is a deadline too (``--timeout``). Measured: the
time from the first burst event published to the last burst line seen on disk, the
events per second over it, the child's CPU time over it (psutil), and the burst events
missing from the file (checked by ``process_pid`` after the child stopped). Rounds
alternate which logger goes first; the median round (by events/s) is reported, then the
ratios ours/theirs. psutil reads CPU time in clock ticks (10 ms): CPU figures of short
bursts (``--quick``) are rough.

Losses: the SUB sockets keep ZeroMQ's default receive HWM (1000). Over TCP a full SUB
queue makes libzmq stop reading the connection rather than drop, so the backlog waits in
the publisher, which has no HWM here: a lost event would be the logger's own loss (ours
counts the ones its queue refuses). circusd's PUB has a send HWM of 1000 and would drop
for a subscriber that far behind; that is not exercised here.

Everything started is stopped at the end, also on Ctrl-C.
"""
import argparse
import contextlib
import functools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # our package, also when it is not installed

from _child import Child, run  # noqa: E402

OURS = 'circus_plugins'
THEIRS = 'circus 0.19'
LABELS = {OURS: 'circus_plugins EventLogger', THEIRS: 'circus 0.19, seed-style'}

TOPIC = b'watcher.bench.spawn'
# Both loggers write json.dumps' default separators: a burst line holds this, an end
# marker's line the other.
BURST_MARK = b'"watcher": "bench"'
END_MARK = b'"watcher": "end"'


# -- the child processes ----------------------------------------------------------------------

def seed_logger_class():
    """The seed's ``Logger`` example on circus 0.19's own base class, writing a JSON line
    an event (as ours does) and flushing it (as ours does)."""
    from circus.plugins import CircusPlugin

    class SeedLogger(CircusPlugin):
        name = 'seed_logger'

        def __init__(self, endpoint, pubsub_endpoint, check_delay, filename, **config):
            super().__init__(endpoint, pubsub_endpoint, check_delay, **config)
            self.filename = filename
            self.file = None
            self.handled = 0

        def handle_init(self):
            self.file = open(self.filename, 'a', encoding='utf-8')

        def handle_stop(self):
            self.file.close()

        def handle_recv(self, data):
            topic, msg = data
            _, watcher, action = topic.decode('utf-8').split('.', 2)
            fields = json.loads(msg)
            record = {'time': fields.get('time'), 'watcher': watcher, 'event': action,
                      'pid': fields.get('process_pid')}
            self.file.write(json.dumps(record) + '\n')
            self.file.flush()
            self.handled += 1

    return SeedLogger


def logger_main(kind, pubsub, path, conn, cpus=None):
    """Runs in a spawned child: the logger ``kind`` writing to ``path``. Says 'ready' once
    started; at any order (or the parent gone) stops it and sends back its counts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    from circus_plugins.testing import free_port
    endpoint = 'tcp://127.0.0.1:%d' % free_port()  # nothing listens: no command is sent

    def next_order():
        with contextlib.suppress(EOFError, OSError):
            conn.recv()

    if kind == OURS:
        from circus_plugins.event_logger import EventLogger
        plugin = EventLogger(endpoint, pubsub, 1.0, path=path, hostname='bench')
        plugin.start_background()
        conn.send('ready')
        next_order()
        plugin.stop()
        counts = {'handled': plugin.taken, 'lost': plugin.losses.count}
    else:
        plugin = seed_logger_class()(endpoint, pubsub, 1.0, filename=path)

        def stop_at_order():
            next_order()
            plugin.loop.add_callback(plugin.stop)  # circus's stop() is not thread-safe
        plugin.loop.add_callback(conn.send, 'ready')
        threading.Thread(target=stop_at_order, daemon=True).start()
        plugin.start()
        counts = {'handled': plugin.handled, 'lost': None}
    with contextlib.suppress(OSError):
        conn.send(counts)


# -- the parent's side ------------------------------------------------------------------------

class GrowingFile:
    """A file read as it grows: complete lines, burst lines and end lines so far."""

    def __init__(self, path):
        self.path = path
        self.file = None
        self.rest = b''
        self.lines = self.burst = self.ends = 0

    def read(self):
        if self.file is None:
            try:
                self.file = open(self.path, 'rb')
            except FileNotFoundError:
                return
        data = self.file.read()
        if not data:
            return
        data = self.rest + data
        cut = data.rfind(b'\n') + 1
        whole, self.rest = data[:cut], data[cut:]
        self.lines += whole.count(b'\n')
        self.burst += whole.count(BURST_MARK)
        self.ends += whole.count(END_MARK)

    def close(self):
        if self.file is not None:
            self.file.close()


def burst_pids(path):
    """The ``pid`` of every burst line in ``path``, in file order."""
    pids = []
    with open(path, 'rb') as lines:
        for line in lines:
            if BURST_MARK in line:
                pids.append(json.loads(line)['pid'])
    return pids


def cpu_seconds(process):
    times = process.cpu_times()
    return times.user + times.system


def one_round(kind, events, bodies, path, timeout):
    from circus_plugins.testing import wait_for
    count = len(bodies)
    clock = time.perf_counter
    child = Child(functools.partial(logger_main, kind, events.endpoint, path),
                  'bench-' + kind.replace(' ', '-'))
    try:
        if child.ready != 'ready':
            raise RuntimeError('%s: child said %r' % (kind, child.ready))
        written = GrowingFile(path)

        def heard():
            events.publish('probe', 'spawn', process_pid=1, time=time.time())
            written.read()
            return written.lines
        wait_for(heard, 10, interval=0.01, what='%s to write a probe event' % kind)

        process = psutil.Process(child.proc.pid)
        cpu_before = cpu_seconds(process)
        send = events.socket.send_multipart
        start = clock()
        for body in bodies:
            send([TOPIC, body])
        published = clock()

        seen, last, next_end = 0, start, published

        def finished():
            nonlocal seen, last, next_end
            now = clock()
            written.read()
            if written.burst > seen:
                seen, last = written.burst, now
            if seen >= count or written.ends:
                return True
            if now >= next_end:
                events.publish('end', 'spawn', process_pid=1, time=time.time())
                next_end = now + 0.05
            return False
        try:
            wait_for(finished, timeout, interval=0.001, what='the burst on disk')
            unfinished = False
        except TimeoutError:
            unfinished = True
        cpu = cpu_seconds(process) - cpu_before
        written.close()

        child.conn.send('stop')
        counts = child.conn.recv() if child.conn.poll(20) else {}
    finally:
        child.close()
    pids = burst_pids(path)
    received = len(set(pids))
    elapsed = last - start
    return {'received': received, 'lost': count - received,
            'in_order': pids == sorted(pids), 'elapsed': elapsed,
            'rate': received / elapsed if elapsed > 0 else float('nan'),
            'pub_rate': count / (published - start), 'cpu': cpu,
            'unfinished': unfinished, 'counts': counts}


def bench(args):
    import circus
    import tornado
    import zmq
    import circus_plugins
    from circus_plugins.testing import EventPublisher
    print('circus_plugins %s, circus %s, pyzmq %s (libzmq %s), tornado %s, Python %s, '
          '%d CPUs' % (circus_plugins.__version__, circus.__version__, zmq.__version__,
                       zmq.zmq_version(), tornado.version, sys.version.split()[0],
                       os.cpu_count()))
    print()
    print('== event logger to a file: %d events x %d rounds per logger, each in a child '
          'process, median round' % (args.events, args.rounds))
    now = time.time()
    bodies = [json.dumps({'process_pid': pid, 'time': now}).encode()
              for pid in range(1, args.events + 1)]
    results = {OURS: [], THEIRS: []}
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix='bench-evlog-'))
        events = stack.enter_context(EventPublisher())
        print('   publisher %s (no HWM), body %d-%d bytes, files in %s'
              % (events.endpoint, len(bodies[0]), len(bodies[-1]), workdir))
        for rnd in range(args.rounds):
            order = [OURS, THEIRS] if rnd % 2 == 0 else [THEIRS, OURS]
            for kind in order:
                path = os.path.join(workdir, '%s-%d.jsonl' % (kind.split()[0], rnd))
                res = one_round(kind, events, bodies, path, args.timeout)
                results[kind].append(res)
                if args.verbose:
                    print('   round %d %-28s %9.0f ev/s  %6.3f s  lost %d%s  (publisher '
                          '%.0f ev/s, child %.2f CPU-s)'
                          % (rnd + 1, LABELS[kind], res['rate'], res['elapsed'],
                             res['lost'], ' (deadline)' if res['unfinished'] else '',
                             res['pub_rate'], res['cpu']))
    report(args, results)
    return results


def report(args, results):
    print()
    print('   %-28s %9s %9s %9s %10s %9s %8s %9s' % (
        'logger', 'events/s', 'best', 'to disk', 'lost', 'in order', 'CPU-s', 'CPU us/ev'))
    medians = {}
    for kind, runs in results.items():
        rates = [r['rate'] for r in runs]
        med = statistics.median(rates)
        mid = min(runs, key=lambda r: abs(r['rate'] - med))
        medians[kind] = mid
        lost = sum(r['lost'] for r in runs)
        lost_text = '%d/%d' % (lost, args.events * len(runs))
        print('   %-28s %9.0f %9.0f %8.3fs %10s %9s %8.3f %9.1f' % (
            LABELS[kind], med, max(rates), mid['elapsed'], lost_text,
            'yes' if all(r['in_order'] for r in runs) else 'NO', mid['cpu'],
            1e6 * mid['cpu'] / max(1, mid['received'])))
    print()
    for kind, runs in results.items():
        timed_out = sum(r['unfinished'] for r in runs)
        counts = [r['counts'] for r in runs]
        print('   %s: handled %s events per round (probes and end markers included)%s%s'
              % (LABELS[kind], ', '.join(str(c.get('handled', '?')) for c in counts),
                 '; lost by its own count: %s' % ', '.join(str(c.get('lost', '?'))
                                                            for c in counts)
                 if kind == OURS else '',
                 '; %d round(s) hit the %s s deadline' % (timed_out, args.timeout)
                 if timed_out else ''))
    print('   publisher: %.0f events/s (median over all rounds)' % statistics.median(
        r['pub_rate'] for runs in results.values() for r in runs))
    ours, theirs = medians[OURS], medians[THEIRS]
    print()
    print('   ours / theirs, events/s       : %5.2fx' % (ours['rate'] / theirs['rate']))
    print('   ours / theirs, time to disk   : %5.2fx' % (ours['elapsed'] / theirs['elapsed']))
    print('   ours / theirs, CPU per event  : %5.2fx'
          % ((ours['cpu'] / max(1, ours['received']))
             / (theirs['cpu'] / max(1, theirs['received']))))
    print()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='smoke test: 2000 events, 1 round')
    parser.add_argument('--events', type=int, help='events per burst (default 20000)')
    parser.add_argument('--rounds', type=int, help='rounds per logger (default 5)')
    parser.add_argument('--timeout', type=float, default=20.0,
                        help='seconds a burst may take to reach the disk (default 20)')
    parser.add_argument('-v', '--verbose', action='store_true', help='print every round')
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 2000 if args.quick else 20000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.events < 1 or args.rounds < 1 or args.timeout <= 0:
        parser.error('--events, --rounds and --timeout must be positive')
    return args


def main(argv=None):
    return bench(parse_args(argv))


if __name__ == '__main__':
    run(main)
