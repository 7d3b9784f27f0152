"""What plugins cost circusd: its CPU and the requests each plugin sends it (issue 18).

For each N (``--watchers``, default 20, 60 and 200) a real circusd 0.19 runs on free
loopback ports with N watchers of 2 ``sleep`` processes each (``check_delay`` 1), once
per configuration, one after the other:

none
    no plugin;
none+K
    no plugin, and K more watchers of one ``sleep`` each, K being the number of plugin
    processes of ``ours-all``: what circusd spends watching that many plugin processes,
    which the other configurations leave out (their plugins run beside circusd, not as
    ``[plugin:]`` sections);
circus
    circus 0.19's own set at defaults: StatsdEmitter, FullStats, Flapping, WatchDog,
    ResourceWatcher (of the first watcher), CommandReloader;
ours
    the same set from circus_plugins;
ours-all
    ``ours`` plus PrometheusExporter, Alerts (a webhook to a sink of this script),
    Autoscaler and EventLogger (a file in a temporary directory);
ours-all+stats
    ``ours-all`` with circusd started with ``statsd = True``: circusd-stats runs, and its
    CPU is measured apart from circusd's;
ours-all-host
    ``ours-all`` in one PluginHost process.

Each plugin runs as a process of its own (``python -m circus_plugins ... CLASS``, circus
0.19's with its own runner, same flags) behind its own
:class:`circus_plugins.testing.CommandCounter` relay, so that the requests it sends are
counted per plugin and per command. Once every plugin is connected to circusd's events,
a warm-up (``--warmup`` seconds: starts, first looks) and then the window
(``--seconds``, 60 by default: the period of the slowest timers, so each is seen once):
circusd's CPU time (user + system of the circusd process alone, from psutil) over the
window, in percent of one core, and its ratio to ``none``; requests per minute. The
watchers' command is ``/usr/bin/sleep`` with ``args``, not ``sleep 100000``:
circus 0.19's CommandReloader stops at the first watcher whose ``cmd`` has arguments
(it ``os.stat()``\\s the whole command), and would then ask less than it is meant to
(``--args-in-cmd`` measures that case).

Run from the checkout's root::

    .venv/bin/python bench/bench_circusd_cost.py              # N = 20, 60, 200: ~25 min
    .venv/bin/python bench/bench_circusd_cost.py --quick      # N = 20, 5 s windows: ~80 s
    .venv/bin/python bench/bench_circusd_cost.py --watchers 60 --json /tmp/cost.json
    .venv/bin/python bench/bench_circusd_cost.py --only none --only ours-all --seconds 120

Everything runs on 127.0.0.1; everything started is stopped at the end, also on Ctrl-C
or SIGTERM.
"""
import argparse
import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # our package, also when it is not installed

from circus_plugins.testing import (Circusd, CommandCounter, PluginProcess,  # noqa: E402
                                    free_port, wait_connected, wait_for)

from _child import run  # noqa: E402

CONFIGS = ('none', 'none+K', 'circus', 'ours', 'ours-all', 'ours-all+stats',
           'ours-all-host')
#: The issue's target: every bundled plugin at defaults costs circusd at most this much
#: more CPU than no plugin (as a ratio to ``none``).
TARGET_RATIO = 1.25
#: circus 0.19's plugins and ours that do the same, as (label, class).
CIRCUS_SET = (
    ('statsd', 'circus.plugins.statsd.StatsdEmitter'),
    ('fullstats', 'circus.plugins.statsd.FullStats'),
    ('flapping', 'circus.plugins.flapping.Flapping'),
    ('watchdog', 'circus.plugins.watchdog.WatchDog'),
    ('resource', 'circus.plugins.resource_watcher.ResourceWatcher'),
    ('reloader', 'circus.plugins.command_reloader.CommandReloader'),
)
OUR_SET = tuple((label, 'circus_plugins' + use[len('circus.plugins'):])
                for label, use in CIRCUS_SET)
OUR_MORE = (
    ('prometheus', 'circus_plugins.prometheus.PrometheusExporter'),
    ('alerts', 'circus_plugins.alerts.Alerts'),
    ('autoscaler', 'circus_plugins.autoscaler.Autoscaler'),
    ('event_logger', 'circus_plugins.event_logger.EventLogger'),
)
K = len(OUR_SET) + len(OUR_MORE)
#: Seconds: the period of the plugins' slowest timers at defaults (FullStats, circus
#: 0.19's observers, periodic.SAFETY_REFRESH): a window of that length sees each once.
SLOWEST_TIMER = 60.0


# -- sinks: where plugins send what they send, all on 127.0.0.1 -------------------------------

class _Sinks:
    """A UDP socket for statsd metrics (never read: the kernel drops what overflows) and an
    HTTP server answering 204 to any POST, for Alerts' webhook."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(('127.0.0.1', 0))
        self.statsd_port = self.udp.getsockname()[1]
        self.posts = 0

        sinks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get('Content-Length') or 0))
                sinks.posts += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.webhook = 'http://127.0.0.1:%d/hook' % self.http.server_address[1]
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True,
                                        name='webhook-sink')
        self._thread.start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()
        self.udp.close()


def plugin_options(label, first_watcher, sinks, workdir):
    """The options a plugin needs beyond its defaults: where to send (all local)."""
    statsd = {'host': '127.0.0.1', 'port': sinks.statsd_port}
    return {
        'statsd': statsd,
        'fullstats': statsd,
        'resource': dict(statsd, watcher=first_watcher),
        'watchdog': {'ip': '127.0.0.1', 'port': free_port(socket.SOCK_DGRAM)},
        'prometheus': {'host': '127.0.0.1', 'port': 0},
        'alerts': {'webhook_url': sinks.webhook, 'webhook_format': 'json'},
        'event_logger': {'path': os.path.join(workdir, 'events.log')},
    }.get(label, {})


# -- one configuration ------------------------------------------------------------------------

def cpu_seconds(process):
    """User + system CPU seconds of ``process`` alone (not its children), or None."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def find_stats_process(circusd_pid):
    """circusd-stats among circusd's children, or None."""
    try:
        children = psutil.Process(circusd_pid).children()
    except psutil.Error:
        return None
    for child in children:
        with contextlib.suppress(psutil.Error):
            # circusd runs it as python -c 'from circus import stats; ...' --statspoint ...
            if '--statspoint' in child.cmdline():
                return child
    return None


class _Runner:
    """One plugin process behind its own counting relay."""

    def __init__(self, label, use, circusd, config, circus_runner, env):
        self.label = label
        self.counter = CommandCounter(circusd.endpoint).start()
        self.plugin = PluginProcess(use, circusd, config=config,
                                    endpoint=self.counter.endpoint, env=env,
                                    log_path=os.path.join(circusd.workdir,
                                                          'plugin-%s.log' % label))
        if circus_runner:  # circus 0.19's own runner, the same flags
            self.plugin.cmd = [
                sys.executable, '-c', 'from circus.plugins import main; main()',
                '--endpoint', self.counter.endpoint, '--pubsub', circusd.pubsub_endpoint,
                '--config', ':::'.join('%s:%s' % item for item in config.items()), use]
        self.plugin.start()
        self.process = psutil.Process(self.plugin.pid)
        self.connected = True

    def alive(self):
        return self.plugin.process.poll() is None

    def wait_connected(self, pubsub, deadline):
        """Whether the plugin connects to circusd's events by ``deadline`` (monotonic
        seconds); False at once if it has ended."""
        while self.alive():
            try:
                wait_connected(self.plugin.pid, pubsub, timeout=0.2)
                return True
            except TimeoutError:
                if time.monotonic() > deadline:
                    return False
            except psutil.Error:
                return False
        return False

    def log_problems(self):
        """Lines of the plugin's log that say something went wrong; its last lines if it
        has ended."""
        lines = self.plugin.log().splitlines()
        problems = [line for line in lines
                    if 'Traceback' in line or 'ERROR' in line or 'Error' in line]
        return problems if self.alive() else problems + lines[-3:]

    def close(self):
        with contextlib.suppress(Exception):
            self.plugin.stop()
        self.counter.stop()


def build_host_ini(path, plugins):
    """A file of ``[plugin:LABEL]`` sections for PluginHost."""
    with open(path, 'w', encoding='utf-8') as ini:
        for label, use, options in plugins:
            ini.write('[plugin:%s]\nuse = %s\n' % (label, use))
            for key, value in options.items():
                ini.write('%s = %s\n' % (key, value))
            ini.write('\n')


def run_config(name, n, args, sinks):
    """Run configuration ``name`` beside ``n`` watchers; return its figures."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix='bench-cost-'))
        sleep = shutil.which('sleep') or '/bin/sleep'
        program = ({'cmd': 'sleep 100000'} if args.args_in_cmd
                   else {'cmd': sleep, 'args': '100000'})
        watchers = {'w%03d' % i: dict(program, numprocesses=2) for i in range(n)}
        if name == 'none+K':
            watchers.update(('plugin-like-%d' % i, {'cmd': sleep, 'args': '100000',
                                                     'numprocesses': 1,
                                                     'singleton': 'true'})
                            for i in range(K))
        circus = {}
        if name == 'ours-all+stats':
            circus = {'statsd': 'true', 'stats_endpoint': 'tcp://127.0.0.1:%d' % free_port()}
        circusd = Circusd(workdir, watchers=watchers, circus=circus)
        stack.callback(circusd.stop)
        circusd.start(timeout=15 + 0.15 * n)
        main = psutil.Process(circusd.process.pid)
        first = 'w000'

        if name == 'circus':
            plugins = [(label, use, plugin_options(label, first, sinks, workdir))
                       for label, use in CIRCUS_SET]
        elif name == 'ours':
            plugins = [(label, use, plugin_options(label, first, sinks, workdir))
                       for label, use in OUR_SET]
        elif name.startswith('ours-all'):
            plugins = [(label, use, plugin_options(label, first, sinks, workdir))
                       for label, use in OUR_SET + OUR_MORE]
        else:
            plugins = []
        env = {'PYTHONPATH': ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')}
        runners = []
        if name == 'ours-all-host':
            ini = os.path.join(workdir, 'plugins.ini')
            build_host_ini(ini, plugins)
            runners.append(_Runner('host', 'circus_plugins.host.PluginHost', circusd,
                                   {'config': ini}, False, env))
            stack.callback(runners[-1].close)
        else:
            for label, use, options in plugins:
                runners.append(_Runner(label, use, circusd, options, name == 'circus', env))
                stack.callback(runners[-1].close)

        started = time.monotonic()
        for runner in runners:  # started with nothing to wait for: each imports meanwhile
            runner.connected = runner.wait_connected(circusd.pubsub_endpoint, started + 60)
        stats = None
        if circus:
            stats = wait_for(lambda: find_stats_process(main.pid), 30,
                             what='circusd-stats to run')
        connected = time.monotonic() - started
        time.sleep(args.warmup)  # a measuring window, not a synchronisation

        before = {r.label: r.counter.snapshot() for r in runners}
        cpu0 = cpu_seconds(main)
        stats_cpu0 = cpu_seconds(stats) if stats else None
        plugin_cpu0 = {r.label: cpu_seconds(r.process) for r in runners}
        load0 = os.getloadavg()[0]
        system0 = psutil.cpu_times()
        t0 = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        cpu1 = cpu_seconds(main)
        stats_cpu1 = cpu_seconds(stats) if stats else None
        plugin_cpu1 = {r.label: cpu_seconds(r.process) for r in runners}
        system1 = psutil.cpu_times()
        after = {r.label: r.counter.snapshot() for r in runners}

        busy = (sum(system1) - system1.idle - getattr(system1, 'iowait', 0)) - \
            (sum(system0) - system0.idle - getattr(system0, 'iowait', 0))
        total = sum(system1) - sum(system0)
        result = {
            'watchers': n, 'config': name, 'seconds': round(elapsed, 2),
            'circusd_cpu_pct': pct(cpu1 - cpu0, elapsed),
            'stats_cpu_pct': (pct(stats_cpu1 - stats_cpu0, elapsed)
                              if stats_cpu0 is not None and stats_cpu1 is not None
                              else None),
            'stats_respawned': bool(stats) and find_stats_process(main.pid) != stats,
            'connect_s': round(connected, 2),
            'loadavg_1min': [round(load0, 2), round(os.getloadavg()[0], 2)],
            'machine_busy_pct': round(100.0 * busy / total, 1) if total > 0 else None,
            'plugins': {},
        }
        per_min = 60.0 / elapsed
        for runner in runners:
            label = runner.label
            window = {command: count - before[label].get(command, 0)
                      for command, count in after[label].items()
                      if count - before[label].get(command, 0)}
            c0, c1 = plugin_cpu0[label], plugin_cpu1[label]
            result['plugins'][label] = {
                'requests_per_min': round(sum(window.values()) * per_min, 1),
                'by_command_per_min': {command: round(count * per_min, 1)
                                       for command, count in sorted(window.items())},
                'warmup_requests': sum(before[label].values()),
                'cpu_pct': pct(c1 - c0, elapsed) if None not in (c0, c1) else None,
                'alive': runner.alive(),
                'connected': runner.connected,
                'log_problems': runner.log_problems()[:5],
            }
        result['requests_per_min'] = round(sum(p['requests_per_min']
                                               for p in result['plugins'].values()), 1)
        result['dead'] = [label for label, p in result['plugins'].items()
                          if not (p['alive'] and p['connected'])]
        if args.keep_logs:  # circusd's and the plugins' logs, for a look afterwards
            keep = os.path.join(args.keep_logs, '%d-%s' % (n, name))
            shutil.copytree(workdir, keep, dirs_exist_ok=True)
            result['logs'] = keep
        return result


def pct(cpu, elapsed):
    return round(100.0 * cpu / elapsed, 2)


# -- output -----------------------------------------------------------------------------------

def print_summary(results):
    print()
    print('   %5s  %-15s %10s %8s %12s %10s %8s  %s'
          % ('N', 'config', 'circusd %', 'x none', 'requests/min', 'stats %', 'busy %',
             'notes'))
    base = {}
    for r in results:
        if 'error' in r:
            print('   %5d  %-15s FAILED: %s' % (r['watchers'], r['config'], r['error']))
            continue
        if r['config'] == 'none':
            base[r['watchers']] = r['circusd_cpu_pct']
        none = base.get(r['watchers'])
        r['ratio_to_none'] = (round(r['circusd_cpu_pct'] / none, 2)
                              if none else None)
        notes = []
        if r['dead']:
            notes.append('DOWN (died or never connected): %s' % ', '.join(r['dead']))
        problems = [label for label, p in r['plugins'].items() if p['log_problems']]
        if problems:
            notes.append('errors logged by %s' % ', '.join(problems))
        if r['stats_respawned']:
            notes.append('circusd-stats respawned')
        print('   %5d  %-15s %10.2f %8s %12.1f %10s %8s  %s'
              % (r['watchers'], r['config'], r['circusd_cpu_pct'],
                 '%.2fx' % r['ratio_to_none'] if r['ratio_to_none'] else '-',
                 r['requests_per_min'],
                 '%.2f' % r['stats_cpu_pct'] if r['stats_cpu_pct'] is not None else '-',
                 r['machine_busy_pct'], '; '.join(notes)))
    print()
    for n in sorted(base):
        rows = {r['config']: r for r in results if r['watchers'] == n and 'error' not in r}
        if 'none+K' in rows and base[n] is not None:
            print('   N=%d: %d plugin-like watchers cost circusd %+.2f %% of a core '
                  '(none+K - none)' % (n, K, rows['none+K']['circusd_cpu_pct'] - base[n]))
        if 'ours-all' in rows and base[n]:
            ratio = rows['ours-all']['circusd_cpu_pct'] / base[n]
            print('   N=%d: every bundled plugin (ours-all) %.2fx none   (target <= %.2fx)  %s'
                  % (n, ratio, TARGET_RATIO, 'OK' if ratio <= TARGET_RATIO else 'MISSED'))
    if len(base) > 1:
        ns = sorted(base)
        for name in CONFIGS[2:]:
            extra = [(n, r['circusd_cpu_pct'] - base[n]) for n in ns for r in results
                     if r['watchers'] == n and r['config'] == name and 'error' not in r]
            if len(extra) > 1:
                print('   %-15s circusd %% over none by N: %s' % (
                    name, ', '.join('%d: %+.2f' % item for item in extra)))
    print()


def print_requests(results):
    for r in results:
        if not r.get('plugins'):
            continue
        print('   N=%d %s: requests per minute (warm-up requests; plugin CPU %% of a core)'
              % (r['watchers'], r['config']))
        for label, p in r['plugins'].items():
            by = ', '.join('%s %.0f' % item for item in p['by_command_per_min'].items())
            print('      %-13s %8.1f  (%4d; %5.1f %%)  %s%s'
                  % (label, p['requests_per_min'], p['warmup_requests'],
                     p['cpu_pct'] or 0.0, by or '-',
                     '  NOT CONNECTED' if not p['connected'] else
                     '' if p['alive'] else '  DIED'))
        for label, p in r['plugins'].items():
            for line in p['log_problems']:
                print('      %s logged: %s' % (label, line[:200]))
        print()


# -- main -------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='N = 20 only, 3 s warm-up, 5 s windows: a smoke test')
    parser.add_argument('--watchers', type=int, action='append', metavar='N',
                        help='watchers of 2 processes (may be repeated; default 20 60 200)')
    parser.add_argument('--only', action='append', choices=CONFIGS,
                        help='run only this configuration (may be repeated)')
    parser.add_argument('--seconds', type=float,
                        help='measuring window in seconds (default 60, the period of the '
                        "plugins' slowest timers; 5 with --quick)")
    parser.add_argument('--warmup', type=float,
                        help='seconds between all plugins connected and the window '
                        '(default 8; 3 with --quick)')
    parser.add_argument('--args-in-cmd', action='store_true',
                        help="watchers' cmd = 'sleep 100000' (circus 0.19's CommandReloader "
                        'then stops at the first watcher, asking one get a second)')
    parser.add_argument('--json', metavar='PATH', help='write the results there as JSON')
    parser.add_argument('--keep-logs', metavar='DIR',
                        help="copy circusd's and the plugins' logs there, one directory "
                        'per run')
    args = parser.parse_args(argv)
    if args.watchers is None:
        args.watchers = [20] if args.quick else [20, 60, 200]
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 60.0
    if args.warmup is None:
        args.warmup = 3.0 if args.quick else 8.0
    args.configs = [c for c in CONFIGS if c in (args.only or CONFIGS)]
    return args


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # so that the with blocks stop what they started


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    import circus
    import tornado
    import zmq
    import circus_plugins
    meta = {
        'circus_plugins': circus_plugins.__version__, 'circus': circus.__version__,
        'pyzmq': zmq.__version__, 'tornado': tornado.version,
        'python': sys.version.split()[0], 'cpus': os.cpu_count(),
        'seconds': args.seconds, 'warmup': args.warmup, 'args_in_cmd': args.args_in_cmd,
        'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'loadavg_at_start': [round(x, 2) for x in os.getloadavg()],
    }
    print('circus_plugins %(circus_plugins)s, circus %(circus)s, pyzmq %(pyzmq)s, tornado '
          '%(tornado)s, Python %(python)s, %(cpus)d CPUs, load %(loadavg_at_start)s' % meta)
    print('windows of %.0f s after %.0f s of warm-up; N = %s; %s'
          % (args.seconds, args.warmup, ' '.join(map(str, args.watchers)),
             ', '.join(args.configs)))
    # psutil's CPU times count clock ticks: two readings are off by up to a tick each.
    tick = 1.0 / os.sysconf('SC_CLK_TCK')
    print('circusd CPU %% is good to +-%.2f %% of a core in %.0f s windows'
          % (100.0 * 2 * tick / args.seconds, args.seconds))
    if args.seconds < SLOWEST_TIMER:
        print('(a window under %.0f s may miss the requests of timers of %.0f s: FullStats, '
              "circus 0.19's WatchDog and ResourceWatcher, safety refreshes)"
              % (SLOWEST_TIMER, SLOWEST_TIMER))
    results = []
    with contextlib.ExitStack() as stack:
        sinks = _Sinks()
        stack.callback(sinks.close)
        for n in args.watchers:
            for name in args.configs:
                try:
                    result = run_config(name, n, args, sinks)
                except Exception as exc:  # the next configurations may still run
                    results.append({'watchers': n, 'config': name,
                                    'error': '%s: %s' % (type(exc).__name__, exc)})
                    print('   N=%-4d %-15s FAILED: %s' % (n, name, results[-1]['error']),
                          flush=True)
                    continue
                results.append(result)
                print('   N=%-4d %-15s circusd %6.2f %% of a core, %8.1f requests/min%s'
                      % (n, name, result['circusd_cpu_pct'], result['requests_per_min'],
                         '  DOWN: %s' % ', '.join(result['dead']) if result['dead'] else ''),
                      flush=True)
    print_summary(results)
    print_requests(results)
    meta['webhook_posts'] = sinks.posts
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as out:
            json.dump({'meta': meta, 'results': results}, out, indent=1)
        print('   results written to %s' % args.json)
    return results


if __name__ == '__main__':
    run(main)
