"""Plugins that send metrics to statsd: :class:`StatsdPlugin`."""
from typing import Any, Optional

from .config import to_host, to_name
from .errors import ConfigError
from .plugin import CircusPlugin
from .statsd_client import Pipeline, StatsdClient


def to_bucket(value: Any, option: str, *, empty: bool = False) -> str:
    """Read a part of the metric names (``prefix``, ``application_name``): no control
    characters, no empty part between dots; ``''`` only if ``empty``."""
    text = to_name(value, option)
    problem = None
    if not text and not empty:
        problem = 'is empty'
    elif text and '' in text.split('.'):
        problem = 'has an empty part between dots'
    if problem:
        raise ConfigError('option %r: %r %s' % (option, value, problem))
    return text


class StatsdPlugin(CircusPlugin):
    """A plugin with a statsd client, :attr:`statsd`; its metrics go to :attr:`metrics`.

    Options: ``host`` (default ``localhost``), ``port`` (8125), ``application_name``
    (:attr:`default_app_name`), ``prefix`` (default ``circus.<application_name>.watcher``),
    ``sample_rate`` (1.0, from 0 to 1). What the plugin thread sends in one go (while it
    handles a burst of events, in one periodic run...) leaves batched, in datagrams of at
    most 512 bytes; what is left is sent, and the socket closed, when the plugin stops.
    """

    #: ``application_name`` when the option is absent.
    default_app_name = 'app'

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.app = self.option('application_name', self.default_app_name, to_bucket)
        self.prefix = self.option('prefix', 'circus.%s.watcher' % self.app, to_bucket,
                                  empty=True)
        rate = self.option('sample_rate', 1.0, float, minimum=0, maximum=1)
        host = self.option('host', 'localhost', to_host, ipv6=False)
        port = self.option('port', 8125, int, minimum=1, maximum=65535)
        #: The client the metrics go to. It may be replaced, even after the plugin has
        #: started: each metric goes to the client in place when it is given (see
        #: :attr:`metrics`).
        self.statsd = StatsdClient(host=host, port=port, prefix=self.prefix,
                                   sample_rate=rate, logger=self.log)
        self._batch: Optional[Pipeline] = None  # made for the client in place
        self._flush_scheduled = False

    @property
    def metrics(self) -> Any:
        """Where the plugin thread puts metrics: for the :class:`StatsdClient` in
        :attr:`statsd` when it is read, a batch of that client, sent once the loop has
        handled what is waiting (a burst of events, say). Any other object put in
        :attr:`statsd` (a test's recorder, as circus 0.19's tests do) is returned itself:
        its ``increment``, ``gauge`` and ``timed`` get the names without the prefix."""
        client = self.statsd
        if not isinstance(client, StatsdClient):
            return client
        batch = self._batch
        if batch is None or batch.client is not client:
            if batch is not None:  # the client was replaced: the old one gets its lines
                batch.send()
            batch = self._batch = client.pipeline()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.add_callback(self.flush)
        return batch

    def flush(self) -> None:
        """Send what :attr:`metrics` holds now (on the plugin's loop)."""
        self._flush_scheduled = False
        if self._batch is not None:
            self._batch.send()

    def handle_stop(self) -> None:
        # Runs in the stopping thread once events have paused: hand the last batch to
        # the loop, which is still running, and close the socket after it.
        super().handle_stop()
        self.loop.add_callback(self._close_statsd)

    def _close_statsd(self) -> None:
        self.flush()
        stop = getattr(self.statsd, 'stop', None)  # a stand-in may have none
        if stop is not None:
            stop()
