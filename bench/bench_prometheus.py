"""Scrape latency of the PrometheusExporter plugin with 100 watchers of 4 processes each.

The target (the issue's): a scrape of 100 watchers with 4 processes each answers in at
most 20 ms p99 on this machine. Run from the checkout's root::

    .venv/bin/python bench/bench_prometheus.py             # 100 watchers, 500 scrapes (~65 s)
    .venv/bin/python bench/bench_prometheus.py --quick     # 20 watchers, 100 scrapes (~12 s)
    .venv/bin/python bench/bench_prometheus.py --watchers 50 --requests 1000

Everything runs on 127.0.0.1:

- a real circusd 0.19 (:class:`circus_plugins.testing.Circusd`, free ports, ``check_delay``
  1 s) with ``--watchers`` watchers ``wNNN`` of 4 ``sleep 1000`` processes each, and one
  watcher ``crashloop`` not started (``autostart = false``): 4 ``sh -c "exit 3"``, which
  circusd respawns each time it reaps them (a crash loop: spawn and reap events);
- the exporter in this process, ``PrometheusExporter(endpoint, pubsub, 1.0, port='0',
  loop_rate='5', call_timeout='5')`` (``--call-timeout``; 5 s is the plugin's default),
  ``start_background()``; the bench waits until its snapshot has every ``sleep`` process;
- prometheus_client's own ``start_http_server`` on another free port, serving the same
  metrics (a fresh ``CollectorRegistry`` with one collector yielding the families of a
  frozen copy of the exporter's snapshot), for a side-by-side comparison: circus 0.19 has
  no Prometheus exporter;
- the client: ``http.client.HTTPConnection`` from the main thread (so it shares the GIL
  with both servers), keep-alive unless said otherwise, requests one after the other.

The exporter's ``Pages`` is instrumented on the instance: its ``_encode`` (one render:
encoder, and gzip when asked) is counted, as made inside a scrape (``page()``
found its kept page stale) or ahead of scrapes (inside ``refresh_one()``, which the
exporter runs right after a poll that changed something, and ``prometheus.RENDER_DELAY``
= 0.1 s after an event). A scrape is
"rendered" when the loop rendered its page while answering it; otherwise its page was
ready (though it may have waited for the loop, busy with a poll or a refresh).

Parts, in order:

1. one poll (``look_after``), run on the exporter's loop like a periodic one (the periodic
   poll is held off meanwhile): total, and where it goes: circusd's ``status``; ``list``
   and ``get numprocesses`` of every watcher, asked all at once (the span from the first
   asked to the last answered); ``stats name=W process=PID`` of each process the exporter
   has not seen before, all at once (span, and count); psutil in the worker thread;
   ``Snapshot.polled`` on the loop; the longest stall of the exporter's loop meanwhile
   (what a scrape could wait); whether the snapshot's version changed. Twice: cold (the
   exporter's known processes and psutil's cache forgotten first: every process is new,
   as at the exporter's start) and warm (none new: every later poll of a steady circusd);
2. one render, the cache bypassed by bumping ``snapshot.version`` by hand and then calling
   ``pages.page(accept, accept_encoding, [])`` on the loop (what a scrape before the
   pre-render does, HTTP aside), for text, OpenMetrics, text + gzip and Prometheus's own
   headers (OpenMetrics + gzip); of which ``Snapshot.collect``; gzip alone; one
   ``pages.refresh()`` with those four pages kept (the loop is busy for all of them at
   once); the page's size and series count. The kept pages are forgotten afterwards;
3. scrapes, ``--requests`` each after a few to warm up: (a) the text format, (a') the
   same with a new connection each time, (b) OpenMetrics (``Accept: application/
   openmetrics-text; version=1.0.0``), (c) gzip (``Accept-Encoding: gzip``); then the same
   three from prometheus_client's server (HTTP/1.0: a new connection each time) and the
   ratios ours/theirs of p50 and p99;
4. scrapes right after a change, on the same exporter (its polls of sleeping processes
   change nothing), changed one event at a time by a plugin running beside it in this
   process (``emit``: one more ``circus_plugin_actions``, as Flapping's or Autoscale's
   events make), each change once the previous one's pre-render is over. For the text
   format, then for Prometheus's headers (the kept pages forgotten in between: one page
   kept), ``--changes`` scrapes each sent (e1) as soon as the bench sees the snapshot's
   version change (polled every 0.5 ms: before the pre-render, so the scrape renders),
   and (e2) ``RENDER_DELAY`` + 50 ms after it sees the change (the page rendered ahead);
5. the snapshot changing all the time: the first exporter stopped, ``crashloop`` started
   and a second exporter started with ``loop_rate = 0.2`` (polls right after one another;
   spawns and reaps every second). (d) text, ``--requests`` scrapes back to back for at
   least ``--churn`` seconds, split into rendered and ready pages (the scrape after each
   change comes before the pre-render and renders).

Then the target, row by row, and for the realistic case: Prometheus scraping every 15 s
an exporter with ``loop_rate = 5`` whose snapshot changes at every poll (processes that use
CPU do) and at no other time. A scrape lands at a time independent of the polls, so a
share ``RENDER_DELAY / loop_rate`` (2 %) of the scrapes come while the page is stale and
render (taken from (e1)); the others find it ready (taken from (e2)'s ready scrapes); the
p99 of that mixture is printed, for text and for Prometheus's headers (what Prometheus
sends). The exit status does not depend on the target. Ctrl-C stops everything the
script started.
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
from circus_plugins import CircusPlugin  # noqa: E402
from circus_plugins import prometheus as prometheus_module  # noqa: E402
from circus_plugins.prometheus import PrometheusExporter  # noqa: E402
from circus_plugins.testing import (Circusd, free_port, run_on_loop,  # noqa: E402
                                    wait_for)

TARGET_P99_MS = 20.0
RENDER_DELAY = prometheus_module.RENDER_DELAY
AFTER_PRERENDER = 0.05     # (e2) scrapes RENDER_DELAY + this after the change is seen
LOOP_RATE = 5.0            # the plugin's default loop_rate: the realistic case's
PROCESSES = 4              # per watcher
CRASHLOOP = 'crashloop'
OPENMETRICS = 'application/openmetrics-text; version=1.0.0'
#: What Prometheus 3 sends (its default scrape_protocols), and it asks for gzip.
PROMETHEUS_ACCEPT = ('application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;'
                     'q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;'
                     'version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;'
                     'q=0.2,*/*;q=0.1')
PROMETHEUS = {'Accept': PROMETHEUS_ACCEPT, 'Accept-Encoding': 'gzip'}
FORMATS = [('text', {}), ('openmetrics', {'Accept': OPENMETRICS}),
           ('gzip', {'Accept-Encoding': 'gzip'})]
CHANGE_FORMATS = [('text', {}), ('prometheus', PROMETHEUS)]
WARMUP = 20                # requests before each measured series


# -- figures ----------------------------------------------------------------------------------

def pct(values, p):
    """The p-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def mixed_pct(groups, p):
    """The p-th percentile of a mixture: ``groups`` is ``[(weight, values)]``, each value
    of a group weighing ``weight / len(values)``."""
    weighted = sorted((value, weight / len(values)) for weight, values in groups
                      for value in values)
    total = sum(weight for weight, values in groups)
    seen = 0.0
    for value, weight in weighted:
        seen += weight
        if seen >= p / 100.0 * total - 1e-12:
            return value
    return weighted[-1][0]


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
    """The latencies of one series of scrapes, split into those whose page the loop
    rendered while answering and those whose page was ready."""

    def __init__(self, label):
        self.label = label
        self.times, self.rendered, self.ready = [], [], []
        self.down = 0          # pages saying circus_up 0
        self.wire = 0          # bytes on the wire of the last page

    def add(self, took, page, rendered, wire):
        self.times.append(took)
        (self.rendered if rendered else self.ready).append(took)
        if b'\ncircus_up 0' in page:
            self.down += 1
        self.wire = wire


def scrape_series(label, scraper, headers, count, renders=None, seconds=0.0):
    """``count`` scrapes one after the other (after :data:`WARMUP` unmeasured ones), and
    more until ``seconds`` have passed since the first. ``renders`` (a :class:`Renders`)
    tells whether the loop rendered the page while answering; without it, every page
    counts as rendered."""
    for _ in range(WARMUP):
        scraper.get(headers)
    series = Series(label)
    deadline = time.monotonic() + seconds
    while len(series.times) < count or time.monotonic() < deadline:
        before = renders.in_scrape if renders is not None else None
        took, page, wire = scraper.get(headers)
        rendered = renders is None or renders.in_scrape != before
        series.add(took, page, rendered, wire)
    return series


def print_header():
    print('   %-52s %5s %7s %7s %7s %7s %8s  %s' % (
        'ms', 'n', 'p50', 'p90', 'p99', 'max', 'rendered', 'p99 <= %g ms' % TARGET_P99_MS))


def print_row(label, times, rendered=None, note=''):
    if not times:
        print('   %-52s %5d' % (label, 0))
        return
    print('   %-52s %5d %7.2f %7.2f %7.2f %7.2f %8s  %s%s' % (
        label, len(times), ms(pct(times, 50)), ms(pct(times, 90)), ms(pct(times, 99)),
        ms(max(times)), '' if rendered is None else rendered, verdict(pct(times, 99)),
        note))


def print_series(series, rendered=None, split=False):
    note = ''
    if series.down:
        note = '  (%d pages said circus_up 0)' % series.down
    print_row(series.label, series.times,
              len(series.rendered) if rendered is None else rendered, note)
    if split:
        if series.rendered:
            print_row('      of which rendered in the scrape', series.rendered)
        if series.ready:
            print_row('      of which page ready', series.ready)


# -- the exporter, instrumented ---------------------------------------------------------------

def start_exporter(args, stack, circusd, loop_rate):
    exporter = PrometheusExporter(circusd.endpoint, circusd.pubsub_endpoint, 1.0, port='0',
                                  loop_rate=loop_rate, call_timeout=str(args.call_timeout))
    exporter.start_background()
    stack.callback(exporter.stop)
    exporter.renders = Renders(exporter.pages)
    return exporter


def sleeping_seen(exporter):
    """``(up, sleep processes in the snapshot)``, read on the exporter's loop."""
    def count():
        snapshot = exporter.snapshot
        return snapshot.up, sum(len(w.processes) for name, w in snapshot.watchers.items()
                                if w.present and name != CRASHLOOP)
    return run_on_loop(exporter.loop, count)


def forget_pages(exporter):
    """Forget the exporter's kept pages (on its loop): a refresh renders only the pages
    asked for after this."""
    run_on_loop(exporter.loop, exporter.pages._pages.clear)


class Renders:
    """Counts the renders of a :class:`~circus_plugins.prometheus._pages.Pages` (its ``_encode``,
    wrapped on the instance, as is ``refresh_one``), as made inside ``refresh_one()``
    (ahead of scrapes) or elsewhere (in ``page()``: a scrape's). All on the exporter's loop; the
    counts are ints read from the main thread."""

    def __init__(self, pages):
        self.in_scrape = 0
        self.ahead = 0
        self._refreshing = False
        encode, refresh = pages._encode, pages.refresh_one

        def counted_encode(*args):
            if self._refreshing:
                self.ahead += 1
            else:
                self.in_scrape += 1
            return encode(*args)

        def flagged_refresh():
            self._refreshing = True
            try:
                return refresh()
            finally:
                self._refreshing = False
        pages._encode = counted_encode
        pages.refresh_one = flagged_refresh


class PollClock:
    """Times the parts of the exporter's polls: its ``ask`` calls and ``Snapshot.polled``
    (wrapped on the instances), ``usage.read`` (wrapped on the reader, run by the worker
    thread). :meth:`poll` runs one ``look_after`` as the periodic poll would."""

    def __init__(self, exporter):
        self.exporter = exporter
        self.records = []       # (what, start, end); list.append is safe from the worker
        ask, polled = exporter.ask, exporter.snapshot.polled

        def timed(what, function):
            def timed_call(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    self.records.append((what, started, time.perf_counter()))
            return timed_call

        async def timed_ask(command, **props):
            started = time.perf_counter()
            try:
                return await ask(command, **props)
            finally:
                self.records.append((command, started, time.perf_counter()))

        exporter.ask = timed_ask
        exporter.snapshot.polled = timed('polled', polled)
        exporter.usage.read = timed('psutil', exporter.usage.read)

    def restore(self):
        del self.exporter.usage.read
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
            if cold:                # every process new, as at the exporter's start
                exporter._known.clear()
                exporter.usage.forget()
            prober = asyncio.ensure_future(probe())
            del self.records[:]
            version = exporter.snapshot.version
            started = time.perf_counter()
            await exporter.look_after()
            total = time.perf_counter() - started
            probing[0] = False
            await prober
            return total, stall[0], list(self.records), exporter.snapshot.version != version
        finally:
            exporter._looking = False

    def poll(self, cold=False):
        return wait_for(lambda: run_on_loop(self.exporter.loop, lambda: self._poll(cold),
                                            timeout=120),
                        timeout=120, interval=0.05, what='a poll between periodic ones')


def span(records, commands):
    """``(seconds from the first asked to the last answered, count)`` of ``commands``."""
    mine = [(start, end) for what, start, end in records if what in commands]
    if not mine:
        return 0.0, 0
    return max(end for _, end in mine) - min(start for start, _ in mine), len(mine)


def bench_poll(args, exporter):
    print('== one poll (look_after) with %d processes, on the exporter\'s loop; call_timeout '
          '%g s' % (args.watchers * PROCESSES, args.call_timeout))
    print('   %-26s %8s %7s %15s %18s %7s %8s %6s %8s' % (
        'ms', 'total', 'status', 'list+get (n)', 'stats of new (n)', 'psutil', 'polled()',
        'stall', 'changed'))
    clock = PollClock(exporter)
    asked, cold_stats = {}, (0.0, 0)
    try:
        for label, cold in [('cold: every process new', True), ('warm: none new', False)]:
            total, stall, records, changed = clock.poll(cold)

            def took(what):
                values = [end - start for w, start, end in records if w == what]
                return ms(sum(values)) if values else float('nan')
            listed, n_listed = span(records, ('list', 'get'))
            stats, n_stats = span(records, ('stats',))
            if cold:
                cold_stats = stats, n_stats
            asked[label.split(':')[0]] = collections.Counter(
                w for w, _, _ in records if w not in ('psutil', 'polled'))
            print('   %-26s %8.1f %7.1f %9.1f (%3d) %12.1f (%3d) %7.1f %8.1f %6.1f %8s' % (
                label, ms(total), took('status'), ms(listed), n_listed, ms(stats), n_stats,
                took('psutil'), took('polled'), ms(stall), 'yes' if changed else 'no'))
    finally:
        clock.restore()
    up, seen = sleeping_seen(exporter)
    print('   after them: circus_up %d, %d processes in the snapshot. Asked of circusd: %s.'
          % (up, seen, '; '.join('%s %s' % (label, ', '.join(
              '%s x%d' % item for item in sorted(counts.items())))
              for label, counts in asked.items())))
    print('   list+get and stats: spans from the first asked to the last answered (asked '
          'all at once,\n   circusd answers one after the other); psutil runs in a worker '
          'thread; stall: the loop\'s longest.')
    seconds, count = cold_stats
    if count:
        each = seconds / count
        print('   circusd\'s stats of one process: %.1f ms (it scans /proc for the process\'s '
              'children), so\n   %d new processes at once take %.1f s: the last reply comes '
              '%.0f %% into call_timeout (%g s).' % (ms(each), count, seconds,
                                                     100.0 * seconds / args.call_timeout,
                                                     args.call_timeout))
        if seconds > args.call_timeout / 2:
            print('   !! over half of call_timeout. With more new processes at once (an '
                  'exporter starting, a restart\n   of everything), and each stats slower '
                  'the more processes the machine has (a longer scan),\n   the last stats '
                  'time out: those processes are asked again at a later poll, and circusd '
                  'works\n   through the timed-out ones first, answering nothing else '
                  'meanwhile.')
    print()


def bench_render(args, exporter):
    count = 5 if args.quick else 20
    print('== one render, the cache bypassed: snapshot.version bumped, then pages.page(accept, '
          'accept_encoding, [])\n   on the loop (HTTP aside, what a scrape before the '
          'pre-render does); %d each' % count)
    pages = exporter.pages

    def once(accept, encoding):
        snapshot = exporter.snapshot
        snapshot.version += 1
        started = time.perf_counter()
        list(snapshot.collect())
        collected = time.perf_counter()
        body, _, gzipped = pages.page(accept, encoding, [])
        return collected - started, time.perf_counter() - collected, body, gzipped

    bodies = {}
    for label, headers in [('text', {}), ('openmetrics', {'Accept': OPENMETRICS}),
                           ('text + gzip', {'Accept-Encoding': 'gzip'}),
                           ('prometheus (OM + gzip)', PROMETHEUS)]:
        accept, encoding = headers.get('Accept', ''), headers.get('Accept-Encoding', '')
        runs = [run_on_loop(exporter.loop, lambda: once(accept, encoding))
                for _ in range(count)]
        body, gzipped = runs[-1][2], runs[-1][3]
        bodies[label] = gzip.decompress(body) if gzipped else body, len(body)
        renders = [r[1] for r in runs]
        print('   %-24s page() median %6.2f ms, max %6.2f ms; Snapshot.collect() alone '
              'median %5.2f ms' % (label, ms(statistics.median(renders)), ms(max(renders)),
                                   ms(statistics.median(r[0] for r in runs))))
    for label in ('text', 'openmetrics'):
        zipped = []
        for _ in range(count):
            started = time.perf_counter()
            gzip.compress(bodies[label][0], compresslevel=6)
            zipped.append(time.perf_counter() - started)
        print('   gzip.compress(%s page, 6) alone: median %.2f ms (now kept with the page)'
              % (label, ms(statistics.median(zipped))))

    def refresh():
        exporter.snapshot.version += 1
        kept = len(pages._pages)
        started = time.perf_counter()
        pages.refresh()
        return kept, time.perf_counter() - started
    refreshes = [run_on_loop(exporter.loop, refresh) for _ in range(max(3, count // 4))]
    print('   pages.refresh() with %d pages kept (the four above): median %.2f ms, the loop '
          'busy all along'
          % (refreshes[0][0], ms(statistics.median(took for _, took in refreshes))))
    text = bodies['text'][0]
    print('   page: text %d bytes, OpenMetrics %d bytes, text gzip %d bytes, OM gzip %d '
          'bytes; %d series (%d watchers)'
          % (len(text), len(bodies['openmetrics'][0]), bodies['text + gzip'][1],
             bodies['prometheus (OM + gzip)'][1], series_count(text), args.watchers))
    forget_pages(exporter)
    print()


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
    print('   ours: PrometheusExporter, loop_rate 5 ("rendered": the loop rendered the page '
          'while answering)')
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
    renders = exporter.renders
    ahead, version = renders.ahead, exporter.snapshot.version
    for letter, (name, headers) in zip('abc', FORMATS):
        results['ours', name] = scrape_series('(%s) ours, %s, keep-alive' % (letter, name),
                                              ours, headers, args.requests, renders)
        if name == 'text':
            results['ours new', name] = scrape_series(
                "(a') ours, text, a new connection each", ours_new, headers, args.requests,
                renders)
        results['theirs', name] = scrape_series(
            'theirs, %s (new connection each)' % name, theirs, headers, args.requests)
    changes = exporter.snapshot.version - version
    print_header()
    for key in [('ours', 'text'), ('ours new', 'text'), ('ours', 'openmetrics'),
                ('ours', 'gzip')]:
        print_series(results[key])
    for key in [('theirs', 'text'), ('theirs', 'openmetrics'), ('theirs', 'gzip')]:
        print_series(results[key], rendered='all')
    print()
    print('   ours/theirs          p50      p99')
    for name, _ in FORMATS:
        mine, other = results['ours', name].times, results['theirs', name].times
        print('   %-15s %7.2fx %7.2fx' % (name, pct(mine, 50) / pct(other, 50),
                                          pct(mine, 99) / pct(other, 99)))
    mine, other = results['ours new', 'text'].times, results['theirs', 'text'].times
    print('   %-15s %7.2fx %7.2fx   (both a new connection each)' % (
        'text, new conn', pct(mine, 50) / pct(other, 50), pct(mine, 99) / pct(other, 99)))
    same = series_count(scrape_once(ours, {})) == series_count(scrape_once(theirs, {}))
    print('   gzip on the wire: ours %d bytes, theirs %d bytes (level 6 and 9); same series '
          'in both pages: %s' % (results['ours', 'gzip'].wire, results['theirs', 'gzip'].wire,
                                 'yes' if same else 'NO'))
    print('   meanwhile: %d changes of the snapshot, %d pages rendered ahead of scrapes (the '
          'polls of sleeping\n   processes mostly change nothing: the pages stay as they are)'
          % (changes, renders.ahead - ahead))
    print()
    return results


def scrape_once(scraper, headers):
    return scraper.get(headers)[1]


def prometheus_client_version():
    try:
        from importlib.metadata import version
        return version('prometheus_client')
    except Exception:
        return '?'


# -- scrapes right after a change ------------------------------------------------------------

class Poker(CircusPlugin):
    """A plugin beside the exporter in this process whose events (``emit``, thread-safe)
    reach the exporter's ``handle_recv``: each is a change of its snapshot (one more
    ``circus_plugin_actions``), made when the bench wants it."""

    name = 'bench'

    def handle_recv(self, data):
        pass


def change_series(label, exporter, poker, scraper, headers, count, delay):
    """``count`` scrapes, each made ``delay`` seconds after the bench saw the snapshot's
    version change (0: at once), the change an event of ``poker``; each change made once
    the pre-render of the previous one is over (no refresh pending)."""
    renders = exporter.renders
    version = lambda: exporter.snapshot.version  # noqa: E731  (an int read: good enough)
    for _ in range(WARMUP):     # the page kept, and warm
        scraper.get(headers)
    series = Series(label)
    while len(series.times) < count:
        wait_for(lambda: exporter._refresh is None, timeout=30, interval=0.002,
                 what='the pre-render of the previous change')
        last = version()
        poker.emit('w000', 'poke')
        wait_for(lambda: version() != last, timeout=30, interval=0.0005,
                 what='the snapshot to change')
        if delay:
            time.sleep(delay)
        before = renders.in_scrape
        took, page, wire = scraper.get(headers)
        series.add(took, page, renders.in_scrape != before, wire)
    return series


def bench_after_change(args, stack, circusd, exporter):
    print('== scrapes right after a change of the snapshot: the same exporter (loop_rate 5, '
          'its polls change nothing),\n   changed by an event of a plugin beside it (the '
          'kept pages forgotten before each format: one page kept)')
    poker = Poker(circusd.endpoint, circusd.pubsub_endpoint, 1.0)
    poker.start_background()
    stack.callback(poker.stop)
    scraper = Scraper(exporter.bound_port)
    stack.callback(scraper.close)
    results = {}
    ahead = exporter.renders.ahead
    for name, headers in CHANGE_FORMATS:
        forget_pages(exporter)
        results['e1', name] = change_series(
            '(e1) ours, %s, at once after a change' % name, exporter, poker, scraper,
            headers, args.changes, 0.0)
        results['e2', name] = change_series(
            '(e2) ours, %s, %g ms after a change' % (name, ms(RENDER_DELAY + AFTER_PRERENDER)),
            exporter, poker, scraper, headers, args.changes, RENDER_DELAY + AFTER_PRERENDER)
    poker.stop()
    print_header()
    for name, _ in CHANGE_FORMATS:
        print_series(results['e1', name], split=True)
        print_series(results['e2', name], split=True)
    print('   (e1): the scrape sent as soon as the bench saw the new version (polled every '
          '0.5 ms), before the\n   pre-render (RENDER_DELAY = %g s): it renders. (e2): sent '
          '%g ms after, the page rendered ahead by then\n   (%d pages rendered ahead in all).'
          % (RENDER_DELAY, ms(RENDER_DELAY + AFTER_PRERENDER), exporter.renders.ahead - ahead))
    print()
    return results


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
    renders = exporter.renders
    scraper = Scraper(exporter.bound_port)
    stack.callback(scraper.close)
    forget_pages(exporter)
    started_version, started, ahead = version(), time.monotonic(), renders.ahead
    back_to_back = scrape_series('(d) ours, text, back to back for %g s' % args.churn,
                                 scraper, {}, args.requests, renders, seconds=args.churn)
    seconds = time.monotonic() - started
    changes, ahead = version() - started_version, renders.ahead - ahead
    print_header()
    print_series(back_to_back, split=True)

    def crashes():
        watcher = exporter.snapshot.watchers[CRASHLOOP]
        return watcher.spawns, dict(watcher.exits)
    spawned, ended = run_on_loop(exporter.loop, crashes)
    print('   %.1f s, %d changes of the snapshot (%.0f/s): the scrape after a change renders '
          '(back to back, it comes\n   before the pre-render), %d pages rendered ahead. %s so '
          'far: %d spawns, exits %s'
          % (seconds, changes, changes / seconds, ahead, CRASHLOOP, spawned, ended))
    print()
    return back_to_back


# -- the target -------------------------------------------------------------------------------

def realistic(results, name):
    """``(share rendering, p99)`` of Prometheus scraping every 15 s an exporter with
    loop_rate 5 whose snapshot changes at every poll: the scrapes within RENDER_DELAY of a
    change render ((e1)'s rendered ones), the others find the page ready ((e2)'s ready
    ones)."""
    e1, e2 = results['e1', name], results['e2', name]
    stale = RENDER_DELAY / LOOP_RATE
    rendering = e1.rendered or e1.times
    ready = e2.ready or e2.times
    return stale, mixed_pct([(stale, rendering), (1.0 - stale, ready)], 99)


def print_target(args, scrapes, after, back_to_back):
    print('== target: p99 <= %g ms with %d watchers x %d processes' % (
        TARGET_P99_MS, args.watchers, PROCESSES))
    rows = [('(a) text, keep-alive', scrapes['ours', 'text']),
            ("(a') text, a new connection each", scrapes['ours new', 'text']),
            ('(b) OpenMetrics', scrapes['ours', 'openmetrics']),
            ('(c) gzip', scrapes['ours', 'gzip']),
            ('(d) text, back to back, snapshot changing', back_to_back)]
    for name, _ in CHANGE_FORMATS:
        rows += [('(e1) %s, at once after a change' % name, after['e1', name]),
                 ('(e2) %s, %g ms after a change' % (name, ms(RENDER_DELAY + AFTER_PRERENDER)),
                  after['e2', name])]
    for label, series in rows:
        p99 = pct(series.times, 99)
        print('   %-52s p99 %7.2f ms: %s' % (label, ms(p99), verdict(p99)))
    for name, _ in CHANGE_FORMATS:
        stale, p99 = realistic(after, name)
        print('   %-52s p99 %7.2f ms: %s' % (
            'realistic, %s (%.0f %% of scrapes render)' % (name, 100 * stale), ms(p99),
            verdict(p99)))
    print('   realistic: Prometheus every 15 s, loop_rate %g, the snapshot changing at every '
          'poll (and only then):\n   %.0f %% of the scrapes land within RENDER_DELAY (%g s) of '
          'a change and render ((e1)), the rest find\n   the page ready ((e2), ready ones). '
          'Above 1 %% rendering, the p99 is a rendering scrape\'s. Prometheus\n   asks '
          'OpenMetrics + gzip ("prometheus"); a snapshot that never changes (idle processes) '
          'is (a)-(c).' % (LOOP_RATE, 100 * RENDER_DELAY / LOOP_RATE, RENDER_DELAY))
    if args.watchers != 100:
        print('   (not the target\'s 100 watchers: --watchers %d)' % args.watchers)


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
                        help='scrapes per (e1) and (e2) series, each after a change of the '
                        'snapshot (default 50)')
    parser.add_argument('--churn', type=float,
                        help='seconds of back-to-back scrapes while the snapshot changes '
                        '(default 6)')
    parser.add_argument('--call-timeout', type=float, default=5.0,
                        help='the exporters\' call_timeout in seconds (default 5, the '
                        'plugin\'s)')
    args = parser.parse_args(argv)
    args.watchers = args.watchers or (20 if args.quick else 100)
    args.requests = args.requests or (100 if args.quick else 500)
    args.changes = args.changes or (10 if args.quick else 50)
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
        exporter = start_exporter(args, stack, circusd, str(LOOP_RATE))
        wait_for(lambda: sleeping_seen(exporter) == (True, expected), timeout=60,
                 interval=0.05, what='the exporter to see every process')
        print('== setup: circusd answered in %.1f s, had %d processes in %.1f s; the '
              'exporter saw them %.1f s later\n   (its first poll asks the stats of every '
              'process)' % (answered, expected, spawned,
                            time.monotonic() - started - spawned))
        print()
        bench_poll(args, exporter)
        wait_for(lambda: sleeping_seen(exporter) == (True, expected), timeout=60,
                 interval=0.05, what='the exporter to see every process again')
        bench_render(args, exporter)
        scrapes = bench_scrapes(args, stack, exporter)
        after = bench_after_change(args, stack, circusd, exporter)
        exporter.stop()
        back_to_back = bench_changing(args, stack, circusd)
        print_target(args, scrapes, after, back_to_back)
    print('all in %.0f s; load average at the end: %.2f %.2f %.2f'
          % ((time.monotonic() - begun,) + os.getloadavg()))


if __name__ == '__main__':
    run(main)
