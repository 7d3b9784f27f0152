"""Plugins the tests run, under circusd and under circus-plugin.

``Logger`` is the seed's example, verbatim except for its import.
"""
import json
import os
import time

from circus.plugins import CircusPlugin as _CircusBase
from tornado.ioloop import PeriodicCallback

from circus_plugins import CircusPlugin


class Logger(CircusPlugin):

    name = 'logger'

    def __init__(self, filename, **kwargs):
        super(Logger, self).__init__(**kwargs)
        self.filename = filename
        self.file = None

    def handle_init(self):
        self.file = open(self.filename, 'a+')

    def handle_stop(self):
        self.file.close()

    def handle_recv(self, data):
        topic, msg = data
        self.file.write('%s::%s' % (topic, msg))


class DrainingLogger(Logger):
    """The seed's ``Logger`` with :attr:`~circus_plugins.CircusPlugin.drain_on_stop`: the
    events published before its stop are all in the file, however late they reach it."""

    drain_on_stop = 0.5


class ConfigDump(CircusPlugin):
    """Writes what it was built with to the file named by its ``dump`` option, then
    one line per event it receives, flushed at once."""

    name = 'config_dump'

    def handle_init(self):
        self.out = open(self.config['dump'], 'a', encoding='utf-8')
        self.out.write(json.dumps({'pid': os.getpid(), 'endpoint': self.endpoint,
                                   'pubsub_endpoint': self.pubsub_endpoint,
                                   'check_delay': self.check_delay,
                                   'config': self.config}) + '\n')
        self.out.flush()

    def handle_recv(self, data):
        self.out.write(data[0].decode() + '\n')
        self.out.flush()

    def handle_stop(self):
        self.out.write('stopped\n')
        self.out.close()


class NotAPlugin:
    pass


class SlowStart(ConfigDump):
    """A ConfigDump whose handle_init takes ``init_seconds`` (default 1) to finish."""

    def handle_init(self):
        super().handle_init()
        time.sleep(float(self.config.get('init_seconds', 1)))


def _append(path, line):
    with open(path, 'a', encoding='utf-8') as out:
        out.write(line + '\n')


class TimerInInitialize(CircusPlugin):
    """Written the way plugins for circus 0.19 are: its timer starts in an ``initialize()``
    override that calls ``super().initialize()`` first. Each tick asks circusd for its
    watchers and writes a line to the file named by the ``dump`` option."""

    name = 'timer_in_initialize'

    def handle_init(self):
        _append(self.config['dump'], 'handle_init')

    def initialize(self):
        super().initialize()
        _append(self.config['dump'], 'initialize context=%s sub_socket=%s' % (
            self.context is not None, self.sub_socket is not None))
        self.timer = PeriodicCallback(self.tick, 50)
        self.timer.start()

    def tick(self):
        _append(self.config['dump'], 'tick %s' % self.call('list')['status'])

    def handle_recv(self, data):
        pass


class CircusBased(_CircusBase):
    """A plugin on circus 0.19's own base class, as published ones are: writes ``init``,
    each event's topic, then ``stopped`` to the file named by ``dump``."""

    name = 'circus_based'

    def handle_init(self):
        _append(self.config['dump'], 'init')

    def handle_recv(self, data):
        _append(self.config['dump'], data[0].decode())

    def handle_stop(self):
        _append(self.config['dump'], 'stopped')


class EventDump(CircusPlugin):
    """Writes each plugin-made event it receives as ``topic body`` to the file named by
    ``dump``, and ``stopped`` from handle_stop."""

    name = 'event_dump'

    def handle_recv(self, data):
        if data[0].startswith(b'plugin.'):
            _append(self.config['dump'], '%s %s' % (data[0].decode(), data[1].decode()))

    def handle_stop(self):
        _append(self.config['dump'], 'stopped')


class FailsToStart(CircusPlugin):
    """Its handle_init raises at the first ``failures`` tries (counted in the file named by
    ``tries``), then it runs."""

    name = 'fails_to_start'

    def handle_init(self):
        path = self.config['tries']
        _append(path, 'try')
        with open(path, encoding='utf-8') as tries:
            if len(tries.read().split()) <= int(self.config.get('failures', 2)):
                raise RuntimeError('not yet')

    def handle_recv(self, data):
        pass


class StopsAtFirstEvent(CircusPlugin):
    """Stops itself at the first event it receives (its thread then ends)."""

    name = 'stops_at_first_event'

    def handle_recv(self, data):
        self.stop()


class Ticker(CircusPlugin):
    """Emits ``plugin.web.tick`` every 0.1 s."""

    name = 'ticker'

    def handle_init(self):
        PeriodicCallback(lambda: self.emit('web', 'tick'), 100).start()

    def handle_recv(self, data):
        pass
