"""Scrape latency of the PrometheusExporter plugin with 100 watchers of 4 processes each.

The target (the issue's): a scrape of 100 watchers with 4 processes each answers in at
most 20 ms p99 on this machine. Run from the checkout's root::

    .venv/bin/python bench/bench_prometheus.py             # 100 watchers, 500 scrapes (~70 s)
    .venv/bin/python bench/bench_prometheus.py --quick     # 20 watchers, 100 scrapes (~10 s)
    .venv/bin/python bench/bench_prometheus.py --watchers 50 --requests 1000

Everything runs on 127.0.0.1:

- a real circusd 0.19 (:class:`circus_plugins.testing.Circusd`, free ports, ``check_delay``
  1 s) with ``--watchers`` watchers ``wNNN`` of 4 ``sleep 1000`` processes each, and one
  watcher ``crashloop`` not started (``autostart = false``): 4 ``sh -c "exit 3"``, which
  circusd respawns each time it reaps them (a crash loop: spawn and reap events);
- the exporter in this process, ``PrometheusExporter(endpoint, pubsub, 1.0, port='0',
  loop_rate='5', call_timeout='30')``, ``start_background()``; the bench waits until its
  snapshot has every ``sleep`` process. ``call_timeout`` is 30 s, not the plugin's 5 s:
  circusd 0.19's ``stats`` of 400 processes takes seconds (each process's ``children``
  is a scan of all of ``/proc``), and a poll whose ``stats`` times out learns nothing of
  the processes (``--call-timeout 5`` to see it happen);
- prometheus_client's own ``start_http_server`` on another free port, serving the same
  metrics (a fresh ``CollectorRegistry`` with one collector yielding the families of a
  frozen copy of the exporter's snapshot), for a side-by-side comparison: circus 0.19 has
  no Prometheus exporter;
- the client: ``http.client.HTTPConnection`` from the main thread (so it shares the GIL
  with both servers), keep-alive unless said otherwise, requests one after the other.

Parts, in order:

1. one poll (``look_after``) with all the processes, run on the exporter's loop like a
   periodic one (the periodic poll is held off meanwhile): total, and where it goes
   (circusd's ``status``, ``stats`` and the slowest of the per-watcher questions, for
   the configured ``numprocesses``, asked at the same time as ``stats``; psutil in
   the worker thread; ``Snapshot.polled`` on the loop), and the longest stall of the
   exporter's loop meanwhile (what a scrape could wait). Once with psutil's cache of
   ``Process`` objects emptied, then with it;
2. one render, the cache bypassed (``snapshot.version`` bumped, then ``page('', [])``, on
   the loop), text and OpenMetrics, of which ``Snapshot.collect``; gzip of the page;
   the page's size and series count;
3. scrapes, ``--requests`` each after a few to warm up: (a) the text format, (a') the
   same with a new connection each time, (b) OpenMetrics (``Accept: application/
   openmetrics-text; version=1.0.0``), (c) gzip (``Accept-Encoding: gzip``); then the same
   three from prometheus_client's server (HTTP/1.0: a new connection each time) and the
   ratios ours/theirs of p50 and p99. "fresh" counts the scrapes whose page differed from
   the one before (the snapshot changed: rendered again);
4. the snapshot changing: the first exporter stopped, ``crashloop`` started and a second
   exporter started with ``loop_rate = 0.2`` (a poll right after the other, each ending
   with a change). (d) ``--requests`` scrapes back to back, split into fresh pages and
   cached ones; (e) ``--changes`` scrapes, each once the snapshot has changed since the
   previous one (every scrape renders: what Prometheus sees when it scrapes less often
   than the exporter polls, which is the usual case).

The target is checked on each row's p99 (``OK`` or ``MISSED``); the exit status does not
depend on it. Ctrl-C stops everything the script started.
"""
import argparse
import asyncio
import collections
import contextlib
import copy
import gzip
import http.client
import logging
import math
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # our package, also when it is not installed

import psutil  # noqa: E402
from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402

from _child import run  # noqa: E402
from circus_plugins import prometheus as prometheus_module  # noqa: E402
from circus_plugins.prometheus import PrometheusExporter  # noqa: E402
from circus_plugins.testing import (Circusd, free_port, run_on_loop,  # noqa: E402
                                    wait_for)

TARGET_P99_MS = 20.0
DEFAULT_CALL_TIMEOUT = 5.0
OWN = ('psutil', 'polled')     # PollClock's records that are not questions to circusd
PROCESSES = 4          # per watcher
CRASHLOOP = 'crashloop'
OPENMETRICS = 'application/openmetrics-text; version=1.0.0'
FORMATS = [('text', {}), ('openmetrics', {'Accept': OPENMETRICS}),
           ('gzip', {'Accept-Encoding': 'gzip'})]
WARMUP = 20            # requests before each measured series


# -- figures ----------------------------------------------------------------------------------

def pct(values, p):
    """The p-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def ms(seconds):
    return seconds * 1000.0


def verdict(p99_seconds):
    return 'OK' if ms(p99_seconds) <= TARGET_P99_MS else 'MISSED'


def series_count(text_page):
    return sum(1 for line in text_page.split(b'\n') if line and not line.startswith(b'#'))


# -- the client -------------------------------------------------------------------------------

class Scraper:
    """GETs of ``/metrics`` on 127.0.0.1:``port`` from this thread, timed from sending the
    request to having read the whole body."""

    def __init__(self, port, keep_alive=True):
        self.port = port
        self.keep_alive = keep_alive
        self.conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)

    def get(self, headers):
        """``(seconds, page, bytes on the wire)``; the page is decompressed if gzipped."""
        conn = self.conn
        started = time.perf_counter()
        conn.request('GET', '/metrics', headers=headers)
        response = conn.getresponse()
        raw = response.read()
        took = time.perf_counter() - started
        if not self.keep_alive:
            conn.close()
        if response.status != 200:
            raise RuntimeError('GET :%d/metrics: %d %s'
                               % (self.port, response.status, raw[:200]))
        page = raw
        if response.getheader('Content-Encoding') == 'gzip':
            page = gzip.decompress(raw)
        elif 'Accept-Encoding' in headers:
            raise RuntimeError('gzip asked, not given')
        return took, page, len(raw)

    def close(self):
        self.conn.close()


class Series:
    """The latencies of one series of scrapes, split into fresh pages (rendered for this
    scrape) and cached ones."""

    def __init__(self, label):
        self.label = label
        self.times, self.fresh, self.cached = [], [], []
        self.down = 0          # pages saying circus_up 0
        self.wire = 0          # bytes on the wire of the last page

    def add(self, took, page, fresh, wire):
        self.times.append(took)
        (self.fresh if fresh else self.cached).append(took)
        if b'\ncircus_up 0' in page:
            self.down += 1
        self.wire = wire


def scrape_series(label, scraper, headers, count, version=None, seconds=0.0,
                  after_change=False):
    """``count`` scrapes one after the other (after :data:`WARMUP` unmeasured ones), and
    more until ``seconds`` have passed; with ``after_change``, each once ``version()``
    differs from what it was when the previous scrape ended. A page is fresh if the
    snapshot's ``version()`` changed since the previous scrape ended (or, without
    ``version``, if it differs from the previous page)."""
    previous = None
    for _ in range(WARMUP):
        _, previous, _ = scraper.get(headers)
    series = Series(label)
    last = version() if version is not None else None
    deadline = time.monotonic() + seconds
    while len(series.times) < count or time.monotonic() < deadline:
        if after_change:
            wait_for(lambda: version() != last, timeout=30, interval=0.002,
                     what='the snapshot to change')
        now = version() if version is not None else None
        took, page, wire = scraper.get(headers)
        fresh = page != previous or (version is not None and now != last)
        series.add(took, page, fresh, wire)
        previous = page
        if version is not None:
            last = version()
    return series


def print_header():
    print('   %-52s %5s %7s %7s %7s %7s %6s  %s' % (
        'ms', 'n', 'p50', 'p90', 'p99', 'max', 'fresh', 'p99 <= %g ms' % TARGET_P99_MS))


def print_row(label, times, fresh=None, note=''):
    print('   %-52s %5d %7.2f %7.2f %7.2f %7.2f %6s  %s%s' % (
        label, len(times), ms(pct(times, 50)), ms(pct(times, 90)), ms(pct(times, 99)),
        ms(max(times)), '' if fresh is None else fresh, verdict(pct(times, 99)), note))


def print_series(series):
    note = ''
    if series.down:
        note = '  (%d pages said circus_up 0)' % series.down
    fresh = series.fresh if isinstance(series.fresh, str) else len(series.fresh)
    print_row(series.label, series.times, fresh, note)


# -- the exporter, instrumented ---------------------------------------------------------------

def start_exporter(args, stack, circusd, loop_rate):
    exporter = PrometheusExporter(circusd.endpoint, circusd.pubsub_endpoint, 1.0, port='0',
                                  loop_rate=loop_rate, call_timeout=str(args.call_timeout))
    exporter.start_background()
    stack.callback(exporter.stop)
    return exporter


def sleeping_seen(exporter):
    """``(up, sleep processes in the snapshot)``, read on the exporter's loop."""
    def count():
        snapshot = exporter.snapshot
        return snapshot.up, sum(len(w.processes) for name, w in snapshot.watchers.items()
                                if w.present and name != CRASHLOOP)
    return run_on_loop(exporter.loop, count)


class PollClock:
    """Times the parts of the exporter's polls: its ``ask`` calls and ``Snapshot.polled``
    (wrapped on the instances), ``_read_usage`` (wrapped in the module, for the worker
    thread). :meth:`poll` runs one ``look_after`` as the periodic poll would."""

    def __init__(self, exporter):
        self.exporter = exporter
        self.records = []       # (what, seconds); list.append is safe from the worker
        ask, polled = exporter.ask, exporter.snapshot.polled
        self._read_usage = read_usage = prometheus_module._read_usage

        async def timed_ask(command, **props):
            started = time.perf_counter()
            try:
                return await ask(command, **props)
            finally:
                self.records.append((command, time.perf_counter() - started))

        def timed_polled(*args):
            started = time.perf_counter()
            try:
                return polled(*args)
            finally:
                self.records.append(('polled', time.perf_counter() - started))

        def timed_read_usage(*args):
            started = time.perf_counter()
            try:
                return read_usage(*args)
            finally:
                self.records.append(('psutil', time.perf_counter() - started))

        exporter.ask = timed_ask
        exporter.snapshot.polled = timed_polled
        prometheus_module._read_usage = timed_read_usage

    def restore(self):
        prometheus_module._read_usage = self._read_usage
        del self.exporter.ask
        del self.exporter.snapshot.polled

    async def _poll(self, cold):
        exporter = self.exporter
        if exporter._looking:       # the periodic poll is under way: come back later
            return None
        exporter._looking = True    # what look_now() does: no periodic poll meanwhile
        stall, probing = [0.0], [True]

        async def probe():          # the loop's longest stall beyond a 1 ms sleep
            while probing[0]:
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                stall[0] = max(stall[0], time.perf_counter() - started - 0.001)
        try:
            if cold:
                exporter._processes.clear()
            prober = asyncio.ensure_future(probe())
            del self.records[:]
            started = time.perf_counter()
            await exporter.look_after()
            total = time.perf_counter() - started
            probing[0] = False
            await prober
            return total, stall[0], list(self.records)
        finally:
            exporter._looking = False

    def poll(self, cold=False):
        return wait_for(lambda: run_on_loop(self.exporter.loop, lambda: self._poll(cold),
                                            timeout=60),
                        timeout=60, interval=0.05, what='a poll between periodic ones')


def bench_poll(args, exporter):
    print('== one poll (look_after) with %d processes, on the exporter\'s loop'
          % (args.watchers * PROCESSES))
    print('   %-22s %8s %8s %8s %13s %8s %9s %10s' % (
        'ms', 'total', 'status', 'stats', 'per-watcher', 'psutil', 'polled()',
        'loop stall'))
    clock = PollClock(exporter)
    try:
        stats = []
        for label, cold in [('psutil cache empty', True), ('psutil cache kept', False)]:
            total, stall, records = clock.poll(cold)
            stats += [s for w, s in records if w == 'stats']

            def part(what, how=sum):
                values = [s for w, s in records if what(w)]
                return ms(how(values)) if values else float('nan')
            asked = collections.Counter(w for w, _ in records if w not in OWN)
            per_watcher = [w for w, n in asked.items() if n >= args.watchers]
            print('   %-22s %8.1f %8.1f %8.1f %13.1f %8.1f %9.1f %10.1f' % (
                label, ms(total), part('status'.__eq__), part('stats'.__eq__),
                part(per_watcher.__contains__, max), part('psutil'.__eq__),
                part('polled'.__eq__), ms(stall)))
    finally:
        clock.restore()
    up, seen = sleeping_seen(exporter)
    print('   after it: circus_up %d, %d processes in the snapshot. Asked of circusd: %s;'
          % (up, seen, ', '.join('%s x%d' % item for item in sorted(asked.items()))))
    print('   per-watcher: the slowest of those asked once per watcher, all at once with '
          'stats (circusd answers\n   one after the other); psutil runs in a worker thread.')
    if max(stats) > DEFAULT_CALL_TIMEOUT / 2:
        print('   !! circusd\'s stats took up to %.1f s: the plugin\'s default call_timeout '
              'is %g s (here %g s);\n   past it the poll learns nothing of the processes.'
              % (max(stats), DEFAULT_CALL_TIMEOUT, args.call_timeout))
    print()


def bench_render(args, exporter):
    count = 5 if args.quick else 20
    print('== one render, the cache bypassed (version bumped, then page(accept, [])), on '
          'the loop; %d each' % count)

    def once(accept):
        snapshot = exporter.snapshot
        snapshot.version += 1
        started = time.perf_counter()
        list(snapshot.collect())
        collected = time.perf_counter()
        body, _ = exporter.page(accept, [])
        return collected - started, time.perf_counter() - collected, body

    pages = {}
    for label, accept in (('text', ''), ('openmetrics', OPENMETRICS)):
        runs = [run_on_loop(exporter.loop, lambda: once(accept)) for _ in range(count)]
        pages[label] = runs[-1][2]
        renders = [r[1] for r in runs]
        collects = [r[0] for r in runs]
        print('   %-12s page() median %6.2f ms, max %6.2f ms; of which Snapshot.collect() '
              'median %5.2f ms' % (label, ms(statistics.median(renders)), ms(max(renders)),
                                   ms(statistics.median(collects))))
    text = pages['text']
    zipped = []
    for _ in range(count):
        started = time.perf_counter()
        small = gzip.compress(text, compresslevel=6)
        zipped.append(time.perf_counter() - started)
    print('   gzip.compress(text page, 6): median %.2f ms (done again for every gzip scrape, '
          'cached page or not)' % ms(statistics.median(zipped)))
    print('   page: text %d bytes, OpenMetrics %d bytes, gzip %d bytes; %d series '
          '(%d watchers)' % (len(text), len(pages['openmetrics']), len(small),
                             series_count(text), args.watchers))
    print()
    return text


# -- prometheus_client's server ---------------------------------------------------------------

class Frozen:
    """A collector yielding the families of a copy of the exporter's snapshot, taken on
    its loop (the snapshot is for one thread: prometheus_client's server has its own)."""

    def __init__(self, exporter):
        def take():
            snapshot = copy.copy(exporter.snapshot)
            snapshot.__dict__.pop('polled', None)
            snapshot.watchers = copy.deepcopy(snapshot.watchers)
            snapshot.actions = dict(snapshot.actions)
            return snapshot
        self.snapshot = run_on_loop(exporter.loop, take)

    def collect(self):
        return self.snapshot.collect()


def start_theirs(stack, exporter):
    registry = CollectorRegistry()
    registry.register(Frozen(exporter))
    port = free_port()
    server, thread = start_http_server(port, addr='127.0.0.1', registry=registry)

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(5)
    stack.callback(stop)
    return port


def bench_scrapes(args, stack, exporter):
    print('== scrapes of %d watchers x %d processes: %d requests each after %d to warm up, '
          'one after the other' % (args.watchers, PROCESSES, args.requests, WARMUP))
    print('   ours: PrometheusExporter, loop_rate 5 (each poll changes the snapshot: "fresh" '
          'pages were rendered again)')
    print('   theirs: prometheus_client %s start_http_server, same families (a frozen copy), '
          'rendered at each request' % prometheus_client_version())
    print()
    theirs_port = start_theirs(stack, exporter)
    ours = Scraper(exporter.bound_port)
    stack.callback(ours.close)
    ours_new = Scraper(exporter.bound_port, keep_alive=False)
    theirs = Scraper(theirs_port, keep_alive=False)  # HTTP/1.0 server: it closes anyway
    stack.callback(theirs.close)
    results = {}
    version = lambda: exporter.snapshot.version  # noqa: E731  (an int read: good enough)
    for letter, (name, headers) in zip('abc', FORMATS):
        results['ours', name] = scrape_series('(%s) ours, %s, keep-alive' % (letter, name),
                                              ours, headers, args.requests, version)
        if name == 'text':
            results['ours new', name] = scrape_series(
                "(a') ours, text, a new connection each", ours_new, headers, args.requests,
                version)
        results['theirs', name] = theirs_series = scrape_series(
            'theirs, %s (new connection each)' % name, theirs, headers, args.requests)
        theirs_series.fresh = 'all'
    print_header()
    for key in [('ours', 'text'), ('ours new', 'text'), ('ours', 'openmetrics'),
                ('ours', 'gzip'), ('theirs', 'text'), ('theirs', 'openmetrics'),
                ('theirs', 'gzip')]:
        print_series(results[key])
    print()
    print('   ours/theirs          p50      p99')
    for name, _ in FORMATS:
        mine, other = results['ours', name].times, results['theirs', name].times
        print('   %-15s %7.2fx %7.2fx' % (name, pct(mine, 50) / pct(other, 50),
                                          pct(mine, 99) / pct(other, 99)))
    mine, other = results['ours new', 'text'].times, results['theirs', 'text'].times
    print('   %-15s %7.2fx %7.2fx   (both a new connection each)' % (
        'text, new conn', pct(mine, 50) / pct(other, 50), pct(mine, 99) / pct(other, 99)))
    ours_text = results['ours', 'text']
    same = series_count(scrape_once(ours, {})) == series_count(scrape_once(theirs, {}))
    print('   gzip on the wire: ours %d bytes, theirs %d bytes (level 6 and 9); same series '
          'in both pages: %s' % (results['ours', 'gzip'].wire, results['theirs', 'gzip'].wire,
                                 'yes' if same else 'NO'))
    print()
    return ours_text


def scrape_once(scraper, headers):
    return scraper.get(headers)[1]


def prometheus_client_version():
    try:
        from importlib.metadata import version
        return version('prometheus_client')
    except Exception:
        return '?'


# -- the snapshot changing --------------------------------------------------------------------

def bench_changing(args, stack, circusd):
    print('== the snapshot changing: %s crash-looping (%d processes), a new exporter with '
          'loop_rate 0.2' % (CRASHLOOP, PROCESSES))
    reply = circusd.call('start', name=CRASHLOOP)
    if reply.get('status') != 'ok':
        raise RuntimeError('start %s: %r' % (CRASHLOOP, reply))

    def stop_crashloop():
        with contextlib.suppress(Exception):  # circusd.stop() ends it anyway
            circusd.call('stop', name=CRASHLOOP, timeout=2, busy_retry=1)
    stack.callback(stop_crashloop)
    exporter = start_exporter(args, stack, circusd, '0.2')
    expected = args.watchers * PROCESSES
    wait_for(lambda: sleeping_seen(exporter) == (True, expected), timeout=60, interval=0.1,
             what='the second exporter to see every process')

    def spawns():
        watcher = exporter.snapshot.watchers.get(CRASHLOOP)
        return watcher.spawns if watcher is not None else 0
    wait_for(lambda: run_on_loop(exporter.loop, spawns) >= 2 * PROCESSES, timeout=30,
             interval=0.05, what='the crash loop to show')
    version = lambda: exporter.snapshot.version  # noqa: E731  (an int read: good enough)
    scraper = Scraper(exporter.bound_port)
    stack.callback(scraper.close)
    started_version, started = version(), time.monotonic()
    back_to_back = scrape_series('(d) ours, text, back to back for %g s' % args.churn,
                                 scraper, {}, args.requests, version, seconds=args.churn)
    seconds = time.monotonic() - started
    changes = version() - started_version
    each = scrape_series('(e) ours, text, each after a change', scraper, {}, args.changes,
                         version, after_change=True)
    print_header()
    print_series(back_to_back)
    if back_to_back.fresh:
        print_row('      of which fresh pages', back_to_back.fresh)
    if back_to_back.cached:
        print_row('      of which cached pages', back_to_back.cached)
    print_series(each)
    def crashes():
        watcher = exporter.snapshot.watchers[CRASHLOOP]
        return watcher.spawns, dict(watcher.exits)
    spawned, ended = run_on_loop(exporter.loop, crashes)
    print('   during (d): %.1f s, %d changes of the snapshot (%.0f/s); %s so far: %d spawns, '
          'exits %s' % (seconds, changes, changes / seconds, CRASHLOOP, spawned, ended))
    print()
    return back_to_back, each


# -- main -------------------------------------------------------------------------------------

def watchers(count):
    config = {'w%03d' % n: {'cmd': 'sleep 1000', 'numprocesses': PROCESSES}
              for n in range(count)}
    config[CRASHLOOP] = {'cmd': 'sh -c "exit 3"', 'numprocesses': PROCESSES,
                         'autostart': 'false'}
    return config


def sleeping_pids(circusd):
    try:
        children = psutil.Process(circusd.process.pid).children()
    except psutil.NoSuchProcess:
        raise RuntimeError('circusd exited:\n%s' % circusd.log()) from None
    count = 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            count += child.cmdline()[:2] == ['sleep', '1000']
    return count


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='20 watchers, 100 requests, 10 scrapes after changes, '
                        '2 s of churn')
    parser.add_argument('--watchers', type=int, help='watchers of 4 processes (default 100)')
    parser.add_argument('--requests', type=int, help='scrapes per series (default 500)')
    parser.add_argument('--changes', type=int,
                        help='scrapes each after a change of the snapshot (default 25)')
    parser.add_argument('--churn', type=float,
                        help='seconds of back-to-back scrapes while the snapshot changes '
                        '(default 6)')
    parser.add_argument('--call-timeout', type=float, default=30.0,
                        help='the exporters\' call_timeout in seconds (default 30: circusd\'s '
                        'stats of 400 processes takes seconds; the plugin\'s default is 5)')
    args = parser.parse_args(argv)
    args.watchers = args.watchers or (20 if args.quick else 100)
    args.requests = args.requests or (100 if args.quick else 500)
    args.changes = args.changes or (10 if args.quick else 25)
    args.churn = args.churn if args.churn is not None else (2.0 if args.quick else 6.0)
    if min(args.watchers, args.requests, args.changes) < 1:
        parser.error('--watchers, --requests and --changes must be at least 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(name)s: %(message)s')
    import circus
    import tornado
    import circus_plugins
    print('circus_plugins %s, circus %s, prometheus_client %s, psutil %s, tornado %s, '
          'Python %s, %d CPUs' % (circus_plugins.__version__, circus.__version__,
                                  prometheus_client_version(), psutil.__version__,
                                  tornado.version, sys.version.split()[0], os.cpu_count()))
    print('target: a scrape of 100 watchers x 4 processes answers in at most %g ms p99; '
          'circus 0.19 has no\nPrometheus exporter: prometheus_client\'s own server with the '
          'same metrics is the comparison.' % TARGET_P99_MS)
    print('load average at start: %.2f %.2f %.2f' % os.getloadavg())
    print()
    begun = time.monotonic()
    expected = args.watchers * PROCESSES
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix='bench-prometheus-'))
        circusd = Circusd(workdir, watchers=watchers(args.watchers))
        stack.callback(circusd.stop)
        started = time.monotonic()
        circusd.start(timeout=60)
        answered = time.monotonic() - started
        wait_for(lambda: sleeping_pids(circusd) >= expected, timeout=120, interval=0.1,
                 what='%d sleep processes' % expected)
        spawned = time.monotonic() - started
        exporter = start_exporter(args, stack, circusd, '5')
        wait_for(lambda: sleeping_seen(exporter) == (True, expected), timeout=60,
                 interval=0.05, what='the exporter to see every process')
        print('== setup: circusd answered in %.1f s, had %d processes in %.1f s; the '
              'exporter saw them %.1f s later' % (answered, expected, spawned,
                                                   time.monotonic() - started - spawned))
        print()
        bench_poll(args, exporter)
        wait_for(lambda: sleeping_seen(exporter) == (True, expected), timeout=60,
                 interval=0.05, what='the exporter to see every process again')
        bench_render(args, exporter)
        ours_text = bench_scrapes(args, stack, exporter)
        exporter.stop()
        back_to_back, each = bench_changing(args, stack, circusd)
        print('== target: p99 <= %g ms with %d watchers x %d processes' % (
            TARGET_P99_MS, args.watchers, PROCESSES))
        for label, series in (('(a) text, snapshot mostly unchanged', ours_text),
                              ('(d) text, back to back, snapshot changing', back_to_back),
                              ('(e) text, every scrape after a change', each)):
            p99 = pct(series.times, 99)
            print('   %-44s p99 %7.2f ms: %s' % (label, ms(p99), verdict(p99)))
        print('   every poll changes the snapshot: a Prometheus scraping less often than '
              'loop_rate (15 s vs 5 s,\n   say) finds a new one each time, so (e) is its '
              'case; (a) and (d) are mostly cached pages.')
        if args.watchers != 100:
            print('   (not the target\'s 100 watchers: --watchers %d)' % args.watchers)
    print('all in %.0f s; load average at the end: %.2f %.2f %.2f'
          % ((time.monotonic() - begun,) + os.getloadavg()))


if __name__ == '__main__':
    run(main)
