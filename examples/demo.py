"""The demo of ``./dev demo``: a real circusd, the bundled plugins in one host, and a
plugin printing what happens.

circusd runs three watchers: ``web`` (two long-lived processes), ``flaky`` (a process that
dies every two seconds and is respawned) and ``crasher`` (a process that exits at once,
again and again). In this process, a :class:`~circus_plugins.host.PluginHost` runs
Flapping and StatsdEmitter from a plugins.ini it writes, and the :class:`Printer` plugin
prints each event circusd publishes and each event the host's plugins emit: Flapping
stops ``crasher``, starts it again once, then gives up, and says so. Every few seconds the
demo also asks circusd, through the printer, for the pids of ``web``. Ctrl-C stops it all.
"""
import argparse
import json
import os
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tornado.ioloop import PeriodicCallback  # noqa: E402

from circus_plugins.host import PluginHost  # noqa: E402
from circus_plugins.testing import Circusd  # noqa: E402
from printer import Printer  # noqa: E402

PLUGINS_INI = '''\
[plugin:flapping]
use = circus_plugins.flapping.Flapping
retry_in = 2
max_retry = 1

[plugin:statsd]
use = circus_plugins.statsd.StatsdEmitter
host = 127.0.0.1
'''


class DemoPrinter(Printer):
    """The Printer, which also prints the events plugins emit, and asks circusd for the
    pids of ``web`` every 3 seconds."""

    def handle_init(self):
        # Started here, on the plugin thread: the timer runs on the plugin's loop.
        PeriodicCallback(self.ask_pids, 3000).start()

    def handle_recv(self, data):
        if data[0].startswith(b'plugin.'):
            watcher, action, message = self.split_data(data)
            details = json.loads(message)
            by = details.pop('plugin')
            details.pop('time')
            print('%-12s %-8s by %s %s' % (watcher, action, by, details), flush=True)
        else:
            super().handle_recv(data)

    def ask_pids(self):
        reply = self.call('list', name='web')
        print('%-12s %-8s %s' % ('web', 'pids', reply.get('pids')), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=None,
                        help='stop by itself after this many seconds')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        watchers = {'web': {'cmd': 'sleep 100000', 'numprocesses': 2},
                    'flaky': {'cmd': "sh -c 'sleep 2; exit 1'"},
                    'crasher': {'cmd': "sh -c 'exit 3'"}}
        ini = os.path.join(workdir, 'plugins.ini')
        with open(ini, 'w') as out:
            out.write(PLUGINS_INI)
        with Circusd(workdir, watchers=watchers) as circusd:
            print('circusd is up: commands on %s, events on %s'
                  % (circusd.endpoint, circusd.pubsub_endpoint), flush=True)
            endpoints = (circusd.endpoint, circusd.pubsub_endpoint, 1.0)
            with PluginHost(*endpoints, config=ini):
                plugin = DemoPrinter(*endpoints)
                if args.seconds:
                    threading.Timer(args.seconds, plugin.stop).start()
                print('printing events; Ctrl-C to stop', flush=True)
                plugin.start()
        print('stopped', flush=True)


if __name__ == '__main__':
    main()
