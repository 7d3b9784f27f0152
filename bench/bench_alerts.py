"""Latency of the Alerts plugin: from a process's death to its first webhook alert.

The target (the issue's): the first alert about a crash arrives ``group_wait`` + at most
1 s after the crash. Run from the checkout's root::

    .venv/bin/python bench/bench_alerts.py                 # 10 runs per group_wait (~45 s)
    .venv/bin/python bench/bench_alerts.py --quick         # 2 runs per group_wait (~10 s)
    .venv/bin/python bench/bench_alerts.py --runs 12 --group-wait 0 --group-wait 5 -v

Everything runs on 127.0.0.1:

- a real circusd 0.19 (:class:`circus_plugins.testing.Circusd`, ``check_delay`` 1 s, free
  ports) with healthy watchers (``web``, two ``sleep`` processes; ``worker``, one) and one
  crashing watcher per run, ``crashNN``, not started (``autostart = false``): a shell script
  that prints a few lines (stdout to a file, which the alert quotes), appends its pid and
  ``date +%s.%N`` to a file of its own just before it exits with status 3;
- a tornado webhook receiver on a thread of its own, noting ``time.time()`` when each POST
  has arrived;
- the Alerts plugin in this process (``Alerts(endpoint, pubsub, 1.0, webhook_url=...,
  webhook_format='json', group_wait=...)``, ``start_background()``), its other options at
  their defaults; a new instance for each ``group_wait``;
- a SUB socket on circusd's events (:class:`~circus_plugins.testing.EventRecorder`) for
  the ``reap`` events and their ``time``.

A run waits a random time in [0, check_delay) (so that the crash falls anywhere between two
of circusd's reaps, not always right after one), starts ``crashNN``, waits for the first
webhook about it and stops the watcher. circusd respawns the crashing process each time it
reaps it (a crash loop, every second), so with ``group_wait`` > 1 the first alert already
counts several crashes: its latency is measured from the first death of the episode. The
times are, per run:

- *death*: what the first process wrote just before ``exit 3``;
- *reap*: the ``time`` of circusd's first ``reap`` event for the watcher (circusd only
  reaps every ``check_delay`` seconds: this part is circusd's, not the plugin's);
- *arrival*: when the webhook receiver had the POST.

For each ``group_wait``: median and max of reap - death (circusd), arrival - reap and
arrival - reap - group_wait (the plugin: its grouping timer, reading the watcher's options
and output file, the HTTP POST), arrival - death and arrival - death - group_wait (the
target: max <= 1 s). circus 0.19 has no alerts plugin: there is nothing to compare with.
"""
import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # our package, also when it is not installed

from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.ioloop import IOLoop  # noqa: E402
from tornado.web import Application, RequestHandler  # noqa: E402

from _child import run  # noqa: E402
from circus_plugins.alerts import Alerts  # noqa: E402
from circus_plugins.testing import (Circusd, EventRecorder, free_port,  # noqa: E402
                                    run_on_loop, wait_for)

CHECK_DELAY = 1.0   # circusd's, as Circusd writes it
TARGET = 1.0        # first alert at group_wait + at most this after the crash

CRASH_SCRIPT = '''\
echo "starting $$"
echo "error: database unreachable" >&2
echo "last words of $$"
echo "$$ $(date +%s.%N)" >> "$1"
exit 3
'''


# -- the webhook receiver ---------------------------------------------------------------------

class Receiver:
    """A tornado HTTP server on 127.0.0.1, on a thread of its own; every POST to
    ``/hook/<tag>`` is put on :attr:`arrivals` as ``(time.time(), tag, json body)``."""

    def __init__(self):
        self.port = free_port()
        self.arrivals = queue.Queue()
        self.loop = None
        self._ready = threading.Event()
        self._error = None
        self.thread = threading.Thread(target=self._run, name='bench-receiver', daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError('the webhook receiver did not start')
        if self._error is not None:
            raise self._error

    def _run(self):
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        arrivals = self.arrivals

        class Hook(RequestHandler):
            def post(self, tag):
                now = time.time()  # the whole request has been read
                arrivals.put((now, tag, json.loads(self.request.body)))
                self.finish('ok')

        try:
            server = HTTPServer(Application([(r'/hook/(.*)', Hook)],
                                            log_function=lambda handler: None))
            server.listen(self.port, '127.0.0.1')
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.start()
        finally:
            server.stop()
            self.loop.close(all_fds=True)

    def url(self, tag):
        return 'http://127.0.0.1:%d/hook/%s' % (self.port, tag)

    def next_about(self, watcher, timeout):
        """The first ``(time, tag, body)`` about ``watcher`` within ``timeout`` seconds;
        the others that arrive meanwhile are returned too, as a list."""
        deadline = time.monotonic() + timeout
        others = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('no webhook about %s within %s s' % (watcher, timeout))
            try:
                arrival = self.arrivals.get(timeout=remaining)
            except queue.Empty:
                continue
            if arrival[2].get('watcher') == watcher:
                return arrival, others
            others.append(arrival)

    def close(self):
        if self.loop is not None and self.thread.is_alive():
            self.loop.add_callback(self.loop.stop)
        self.thread.join(5)


# -- circusd and the plugin -------------------------------------------------------------------

def watchers(workdir, count):
    script = os.path.join(workdir, 'crash.sh')
    with open(script, 'w') as out:
        out.write(CRASH_SCRIPT)
    config = {'web': {'cmd': 'sleep 1000', 'numprocesses': 2},
              'worker': {'cmd': 'sleep 1000'}}
    for number in range(1, count + 1):
        name = 'crash%02d' % number
        config[name] = {
            'cmd': 'sh %s %s' % (script, os.path.join(workdir, name + '.deaths')),
            'autostart': 'false', 'graceful_timeout': 2,
            'stdout_stream.class': 'FileStream',
            'stdout_stream.filename': os.path.join(workdir, name + '.log')}
    return config


def plugin_hears(circusd, plugin, watcher='web', timeout=10):
    """Return once the plugin receives circusd's events: a process of ``watcher`` added
    (``incr``) is among the spawns it has seen; ``decr`` then takes it away. Repeated
    until one is seen: events published before the SUB socket has subscribed are lost."""
    def attempt():
        before = set(circusd.pids(watcher))
        circusd.call('incr', name=watcher)
        new = wait_for(lambda: set(circusd.pids(watcher)) - before, what='a new process')

        def seen():
            info = plugin._watchers.get(watcher)
            return info is not None and bool(new & set(info.spawned))
        try:
            return wait_for(lambda: run_on_loop(plugin.loop, seen), timeout=0.3,
                            interval=0.01)
        except TimeoutError:
            return False
        finally:
            circusd.call('decr', name=watcher)
    wait_for(attempt, timeout, interval=0, what='the plugin to hear circusd')


def first_death(path):
    """``(pid, time)`` of the first line of a crash script's deaths file, or None."""
    try:
        with open(path) as deaths:
            line = deaths.readline()
    except OSError:
        return None
    if not line.endswith('\n'):
        return None
    pid, when = line.split()
    return int(pid), float(when)


def first_reap(recorder, watcher):
    topic = ('watcher.%s.reap' % watcher).encode()
    _, body = recorder.wait(topic, timeout=5)
    body = json.loads(body)
    return body['process_pid'], body['time']


# -- one group_wait ---------------------------------------------------------------------------

def bench_group_wait(args, circusd, recorder, receiver, group_wait, names, workdir):
    print('== group_wait %g s: %d runs' % (group_wait, len(names)))
    plugin = Alerts(circusd.endpoint, circusd.pubsub_endpoint, 1.0,
                    webhook_url=receiver.url('gw%g' % group_wait), webhook_format='json',
                    group_wait=str(group_wait))
    plugin.start_background()
    rows = []
    try:
        plugin_hears(circusd, plugin)
        if args.verbose:
            print('   %-8s %11s %10s %12s %13s  %s' % (
                'watcher', 'death-start', 'reap-death', 'alert-reap', 'alert-death', 'title'))
        for name in names:
            time.sleep(args.rng.uniform(0, CHECK_DELAY))  # a random phase: see the docstring
            deaths = os.path.join(workdir, name + '.deaths')
            started = time.time()
            reply = circusd.call('start', name=name)
            if reply.get('status') != 'ok':
                raise RuntimeError('start %s: %r' % (name, reply))
            (arrival, _, body), others = receiver.next_about(
                name, timeout=group_wait + CHECK_DELAY + 10)
            for _, tag, other in others:
                print('   (also received, from %s: %r)' % (tag, other.get('title')))
            circusd.call('stop', name=name)
            death_pid, death = wait_for(lambda: first_death(deaths), what='the death file')
            reap_pid, reap = first_reap(recorder, name)
            if reap_pid != death_pid:
                print('   !! %s: first reaped pid %s, first death written by %s'
                      % (name, reap_pid, death_pid))
            row = {'watcher': name, 'started': started, 'death': death, 'reap': reap,
                   'arrival': arrival, 'title': body.get('title'), 'kind': body.get('kind')}
            rows.append(row)
            if body.get('kind') != 'crash':
                print('   !! %s: the first alert is a %r, not a crash' % (name, body.get('kind')))
            if args.verbose:
                print('   %-8s %11.3f %10.3f %12.3f %13.3f  %s' % (
                    name, death - started, reap - death, arrival - reap, arrival - death,
                    row['title']))
    finally:
        plugin.stop()
    summarize(rows, group_wait)
    return rows


def summarize(rows, group_wait):
    def line(label, values, target=None):
        text = '   %-40s %8.3f %8.3f %8.3f' % (label, statistics.median(values), min(values),
                                             max(values))
        if target is not None:
            text += '   target max <= %.1f s: %s' % (target, 'OK' if max(values) <= target
                                                   else 'MISSED')
        print(text)

    print()
    print('   %-40s %8s %8s %8s' % ('seconds', 'median', 'min', 'max'))
    line('reap - death          (circusd reaps)', [r['reap'] - r['death'] for r in rows])
    line('arrival - reap        (ours)', [r['arrival'] - r['reap'] for r in rows])
    line('arrival - reap - group_wait  (ours)',
         [r['arrival'] - r['reap'] - group_wait for r in rows])
    line('arrival - death', [r['arrival'] - r['death'] for r in rows])
    line('arrival - death - group_wait', [r['arrival'] - r['death'] - group_wait
                                          for r in rows], TARGET)
    ours = max(r['arrival'] - r['reap'] - group_wait for r in rows)
    print('   worst case to expect: check_delay + ours = %.1f + %.3f = %.3f s'
          % (CHECK_DELAY, ours, CHECK_DELAY + ours))
    said = collections.Counter(r['title'][len(r['watcher']) + 1:] for r in rows)
    print('   first alerts: %s' % ', '.join('%r x%d' % item for item in sorted(said.items())))
    print()


# -- main -------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='2 runs per group_wait')
    parser.add_argument('--runs', type=int, help='runs per group_wait (default 10)')
    parser.add_argument('--group-wait', type=float, action='append', dest='group_waits',
                        help='a group_wait in seconds (may be repeated; default 0 and 2)')
    parser.add_argument('--seed', type=int, help='seed of the random phases')
    parser.add_argument('-v', '--verbose', action='store_true', help='print every run')
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 10
    if args.runs < 1:
        parser.error('--runs must be at least 1')
    args.group_waits = args.group_waits or [0.0, 2.0]
    if any(gw < 0 for gw in args.group_waits):
        parser.error('--group-wait must be >= 0')
    args.rng = random.Random(args.seed)
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(name)s: %(message)s')
    import circus
    import tornado
    import zmq
    import circus_plugins
    print('circus_plugins %s, circus %s, pyzmq %s, tornado %s, Python %s, %d CPUs'
          % (circus_plugins.__version__, circus.__version__, zmq.__version__, tornado.version,
             sys.version.split()[0], os.cpu_count()))
    print('circus 0.19 has no alerts plugin: there is nothing to compare side by side; '
          'the figures\nare checked against the target alone: first alert at group_wait + '
          'at most %.0f s after the crash.' % TARGET)
    print('circusd check_delay %g s (it reaps dead processes only then); a random wait in '
          '[0, %g) s before each start.' % (CHECK_DELAY, CHECK_DELAY))
    print()
    total = args.runs * len(args.group_waits)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix='bench-alerts-'))
        circusd = stack.enter_context(Circusd(workdir, watchers=watchers(workdir, total)))
        receiver = Receiver()
        stack.callback(receiver.close)
        recorder = stack.enter_context(EventRecorder(circusd.pubsub_endpoint))
        recorder.sync(circusd, 'web')
        names = ['crash%02d' % n for n in range(1, total + 1)]
        results = {}
        for index, group_wait in enumerate(args.group_waits):
            mine = names[index * args.runs:(index + 1) * args.runs]
            results[group_wait] = bench_group_wait(args, circusd, recorder, receiver,
                                                   group_wait, mine, workdir)
    print('all: %d runs in %.0f s' % (total, time.monotonic() - started))
    return results


if __name__ == '__main__':
    run(main)
