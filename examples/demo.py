"""The demo of ``./dev demo``: a real circusd, and a plugin printing its events.

circusd runs two watchers: ``web`` (two long-lived processes) and ``flaky`` (a process that
dies every two seconds and is respawned). The :class:`Printer` plugin runs in this process
and prints each event; every few seconds the demo also asks circusd, through the plugin,
for the pids of ``web``. Ctrl-C stops the plugin and circusd.
"""
import argparse
import os
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tornado.ioloop import PeriodicCallback  # noqa: E402

from circus_plugins.testing import Circusd  # noqa: E402
from printer import Printer  # noqa: E402


class PrinterAskingPids(Printer):
    """The Printer, which also asks circusd for the pids of ``web`` every 3 seconds."""

    def handle_init(self):
        # Started here, on the plugin thread: the timer runs on the plugin's loop.
        PeriodicCallback(self.ask_pids, 3000).start()

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
                    'flaky': {'cmd': "sh -c 'sleep 2; exit 1'"}}
        with Circusd(workdir, watchers=watchers) as circusd:
            print('circusd is up: commands on %s, events on %s'
                  % (circusd.endpoint, circusd.pubsub_endpoint), flush=True)
            plugin = PrinterAskingPids(circusd.endpoint, circusd.pubsub_endpoint, 1.0)
            if args.seconds:
                threading.Timer(args.seconds, plugin.stop).start()
            print('printing events; Ctrl-C to stop', flush=True)
            plugin.start()
        print('stopped', flush=True)


if __name__ == '__main__':
    main()
