"""Memory of many plugins: one host process against one process per plugin.

Against a real circusd 0.19 on free loopback ports, this runs the eight bundled plugins
(StatsdEmitter, FullStats, Flapping, WatchDog, ResourceWatcher, HttpObserver,
RedisObserver, CommandReloader) three ways, each plugin connected and idle:

- one plugin alone (StatsdEmitter) with ``circus-plugin``, ours and circus 0.19's runner;
- the eight, one ``circus-plugin`` process each (what circusd does with eight sections);
- the eight in one process: ``circus-plugin --ini plugins.ini --all``.

It prints each process's resident memory (RSS, from psutil, once the plugins run) and the
ratios to one plugin alone; the target is at most 1.3x for the host. With ``--steps`` it
then shows where the host's memory goes: a process doing what the host does one section
at a time (``_host_steps.py``) prints its RSS after each plugin's import, build and start.
Run from the checkout's root::

    .venv/bin/python bench/bench_host.py [--steps]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # our package, also when it is not installed

from circus_plugins.testing import (Circusd, PluginProcess, free_port,  # noqa: E402
                                    wait_connected, wait_for)

TARGET = 1.3


def sections(udp_port):
    """The eight bundled plugins as ``{name: options}``, all quiet: nothing to act on."""
    statsd = {'host': '127.0.0.1', 'port': udp_port}
    return {
        'statsd': dict(statsd, use='circus_plugins.statsd.StatsdEmitter'),
        'full_stats': dict(statsd, use='circus_plugins.statsd.FullStats', loop_rate=5),
        'flapping': {'use': 'circus_plugins.flapping.Flapping'},
        'watchdog': {'use': 'circus_plugins.watchdog.WatchDog', 'port': free_port(2),
                     'loop_rate': 5},
        'resources': dict(statsd, use='circus_plugins.resource_watcher.ResourceWatcher',
                          watcher='web', loop_rate=5),
        'http': dict(statsd, use='circus_plugins.http_observer.HttpObserver',
                     check_url='http://127.0.0.1:%d/' % free_port(), loop_rate=60),
        'redis': dict(statsd, use='circus_plugins.redis_observer.RedisObserver',
                      redis_url='redis://127.0.0.1:%d/0' % free_port(), loop_rate=60),
        'reloader': {'use': 'circus_plugins.command_reloader.CommandReloader',
                     'loop_rate': 5},
    }


def rss_mb(pid):
    return psutil.Process(pid).memory_info().rss / 2 ** 20


def settled_rss(process, circusd):
    """RSS of ``process`` once it is connected to circusd's events and has run a while."""
    wait_connected(process.pid, circusd.pubsub_endpoint, timeout=15)
    readings = []

    def steady():  # two readings 0.5 s apart within 1%
        readings.append(rss_mb(process.pid))
        return len(readings) > 2 and abs(readings[-1] - readings[-2]) < readings[-1] / 100
    wait_for(steady, timeout=15, interval=0.5, what='its memory to settle')
    return readings[-1]


def write_ini(workdir, plugins, circusd=None):
    """A plugins.ini of ``plugins``, with circusd's endpoints in ``[circus]`` if given."""
    ini = os.path.join(workdir, 'plugins-%d.ini' % len(plugins))
    with open(ini, 'w') as out:
        if circusd is not None:
            out.write('[circus]\nendpoint = %s\npubsub_endpoint = %s\n\n'
                      % (circusd.endpoint, circusd.pubsub_endpoint))
        for name, options in plugins.items():
            out.write('[plugin:%s]\n' % name)
            out.write(''.join('%s = %s\n' % item for item in options.items()) + '\n')
    return ini


def run_host(workdir, circusd, plugins):
    """RSS of ``circus-plugin --ini --all`` running ``plugins`` in one process."""
    ini = write_ini(workdir, plugins)
    with PluginProcess('', circusd, args=['--ini', ini, '--all']) as host:
        wait_for(lambda: host.log().count('running (') == len(plugins), timeout=15,
                 what='the host to run every plugin')
        return settled_rss(host, circusd)


def run_steps(workdir, circusd, plugins):
    """``[(step, RSS in MiB, modules loaded)]`` from ``_host_steps.py`` on ``plugins``."""
    ini = write_ini(workdir, plugins, circusd)
    out = subprocess.run([sys.executable, os.path.join(HERE, '_host_steps.py'), ini],
                         stdout=subprocess.PIPE, text=True, timeout=120, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(  # our package
                             [os.path.dirname(HERE), os.environ.get('PYTHONPATH', '')]))
                         ).stdout
    return [(step, float(rss), int(modules)) for step, rss, modules in
            (line.split('\t') for line in out.splitlines())]


def print_steps(steps, one):
    print('\nthe host, step by step (one process, each section in turn; MiB)\n')
    print('  %-32s %7s %7s %8s' % ('step', 'RSS', 'added', 'modules'))
    previous = None
    for step, rss, modules in steps:
        added = '' if previous is None else '%+7.2f' % (rss - previous)
        print('  %-32s %7.2f %7s %8d' % (step, rss, added, modules))
        previous = rss
    first = next(rss for step, rss, _ in steps if step.endswith(': start'))
    print('\n  the sections after the first add %.1f MiB; %.1fx one alone leaves them %.1f'
          % (steps[-1][1] - first, TARGET, one * TARGET - first))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', action='store_true',
                        help='also show the RSS after each import, build and start')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, \
            Circusd(workdir, watchers={'web': {'cmd': 'sleep 1000'}}) as circusd:
        plugins = sections(free_port(2))
        alone = plugins['statsd']
        config = {k: v for k, v in alone.items() if k != 'use'}
        with PluginProcess(alone['use'], circusd, config=config) as ours:
            one = settled_rss(ours, circusd)
        circus_cmd = [sys.executable, '-c', 'from circus import plugins; plugins.main()']
        theirs = PluginProcess(alone['use'].replace('circus_plugins', 'circus.plugins'),
                               circusd, config=config)
        theirs.cmd[:3] = circus_cmd
        with theirs:
            circus_one = settled_rss(theirs, circusd)

        separate = []
        for name, options in plugins.items():
            config = {k: v for k, v in options.items() if k != 'use'}
            process = PluginProcess(options['use'], circusd, config=config).start()
            separate.append((name, process))
        try:
            sizes = [(name, settled_rss(process, circusd)) for name, process in separate]
        finally:
            for _, process in separate:
                process.stop()

        hosted = run_host(workdir, circusd, plugins)
        # redis-py alone weighs about 7 MiB: the same host without RedisObserver.
        hosted_seven = run_host(workdir, circusd,
                                {k: v for k, v in plugins.items() if k != 'redis'})
        steps = run_steps(workdir, circusd, plugins) if args.steps else None

    total = sum(size for _, size in sizes)
    print('resident memory (MiB), each plugin connected to circusd 0.19 and idle\n')
    print('  one StatsdEmitter alone, ours          %7.1f' % one)
    print('  one StatsdEmitter alone, circus 0.19   %7.1f' % circus_one)
    for name, size in sizes:
        print('  %-10s in a process of its own    %7.1f' % (name, size))
    print('  the eight, one process each (sum)      %7.1f   %.2fx one alone' % (
        total, total / one))
    print('  the eight in one host                  %7.1f   %.2fx one alone   '
          '(target <= %.1fx)  %s' % (hosted, hosted / one, TARGET,
                                      'OK' if hosted / one <= TARGET else 'MISSED'))
    print('  the seven but redis in one host        %7.1f   %.2fx one alone' % (
        hosted_seven, hosted_seven / one))
    redis = dict(sizes)['redis']
    print('  (redis-py alone: %.1f MiB, the redis process less one alone)' % (redis - one))
    if steps:
        print_steps(steps, one)


if __name__ == '__main__':
    main()
