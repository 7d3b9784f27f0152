"""A plugin built from the parts: a periodic job, statsd metrics and a state change."""
from circus_plugins.config import to_name
from circus_plugins.statsd import BaseObserver


class Trimmer(BaseObserver):
    """Every ``loop_rate`` seconds, sends the number of processes of ``watcher`` to
    statsd as a gauge and, when it is above ``most``, has circusd stop the extra ones."""

    name = 'trimmer'

    def __init__(self, *args, **config):
        super().__init__(*args, **config)
        self.watcher = self.option('watcher', 'web', to_name)
        self.most = self.option('most', 2, int, minimum=1)

    async def look_after(self):
        # The configured number: "numprocesses" also counts processes being stopped.
        reply = await self.ask('get', name=self.watcher, keys=['numprocesses'])
        count = reply.get('options', {}).get('numprocesses')
        if reply['status'] != 'ok' or not isinstance(count, int):
            self.log.warning('cannot count %s: %s', self.watcher, reply.get('reason'))
            return
        self.metrics.gauge('%s.processes' % self.watcher, count)
        if count > self.most:
            reply = await self.change_state('decr', name=self.watcher,
                                            nb=count - self.most)
            self.log.info('%s: %d processes, %d wanted: %s', self.watcher, count,
                          self.most, reply['status'])
