"""Many plugins in one process: :class:`PluginHost`.

circusd runs each ``[plugin:NAME]`` section as a Python process of its own. A host runs
several sections in one process instead, each plugin with its own thread and loop as if
alone, all of them on one ZeroMQ context; the events they emit reach each other through
their ``handle_recv``. Run it from the command line::

    circus-plugin --ini /etc/circus/plugins.ini --all

or as one section that circusd runs, naming a file that holds the other sections (not
circus.ini itself, whose sections circusd would also run)::

    [plugin:host]
    use = circus_plugins.host.PluginHost
    config = /etc/circus/plugins.ini

A section that cannot be built (unknown class, bad option) is reported by name and left
out; a plugin whose start fails, or whose thread ends without being stopped, is started
again after 1 s, then 2, 4... up to ``max_delay`` seconds, while the others go on.

The plugins of a host share circusd's answers: a read-only question that several of them
ask within :data:`~circus_plugins._shared.WINDOW` seconds is sent once
(:mod:`circus_plugins._shared`).
"""
import time
from typing import Any, Dict, List, Optional, Tuple, Type

from tornado.ioloop import PeriodicCallback

from ._loader import load_plugin_class
from ._shared import SharedAnswers
from .config import MAX_SECONDS, ini_plugin_names, read_ini_plugin
from .errors import CircusPluginError, ConfigError
from .events import PLUGIN_PREFIX
from .plugin import CircusPlugin

#: Seconds before the first new start of a plugin that failed.
FIRST_DELAY = 1.0
#: Seconds between looks at whether each plugin still runs.
_LOOK_EVERY = 0.5


class _Child:
    """One section of the host: the plugin of the current try, and its failures."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.factory: Optional[Type[CircusPlugin]] = None
        self.config: Dict[str, Any] = {}
        self.plugin: Optional[CircusPlugin] = None
        self.failures = 0
        self.started = 0.0   # time.monotonic() of the last good start
        self.pending: Optional[object] = None  # the loop's handle of the next try


class PluginHost(CircusPlugin):
    """Runs the ``[plugin:NAME]`` sections of the ini file named by the ``config``
    option, in this process.

    Options: ``config`` (the ini file, required), ``plugins`` (the section names to run,
    separated by spaces or commas; default: every ``[plugin:...]`` section but those
    using a host), ``max_delay`` (seconds, default 60: the longest wait before a failed
    plugin is started again). The plugins get the host's endpoints and check delay.
    With ``events_publish``, the events every plugin emits are published there.
    """

    name = 'host'

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.ini = self.option('config', '')
        if not self.ini:
            raise ConfigError('plugin %s: option \'config\' (the ini file whose plugin '
                              'sections to run) is missing' % self.name)
        names = self.option('plugins', '').replace(',', ' ').split()
        self.max_delay = self.option('max_delay', 60.0, float, minimum=FIRST_DELAY,
                                     maximum=MAX_SECONDS)
        available = ini_plugin_names(self.ini)  # ConfigError if the file does not read
        for name in names:
            if name not in available:
                raise ConfigError('plugin %s: option \'plugins\': no [plugin:%s] section in '
                                  '%r' % (self.name, name, self.ini))
        self.children = [_Child(name) for name in names or available]
        self._watch: Optional[PeriodicCallback] = None
        self._closing = False
        #: The answers of circusd shared by the plugins (thread-safe).
        self.answers = SharedAnswers()

    # -- the plugins' lives ------------------------------------------------------------

    def handle_init(self) -> None:
        for child in list(self.children):
            if not self._build(child):
                self.children.remove(child)
        if not self.children:
            self.log.warning('no plugin section to run in %s', self.ini)
        for child in list(self.children):  # _start may remove a child
            self._start(child)
        self._watch = PeriodicCallback(self._look, _LOOK_EVERY * 1000)
        self._watch.start()

    def _build(self, child: _Child) -> bool:
        """Read the section and import its class; False (logged) if it cannot be run."""
        try:
            section = read_ini_plugin(self.ini, child.name)
            factory = load_plugin_class(section.use)
        except CircusPluginError as exc:
            self.log.error('[plugin:%s] left out: %s', child.name, exc)
            return False
        if not issubclass(factory, CircusPlugin):
            # It has no start_background: it would fail to start again and again.
            self.log.error("[plugin:%s] left out: a plugin on circus 0.19's base class "
                           'runs only alone', child.name)
            return False
        if issubclass(factory, PluginHost):
            self.log.info('[plugin:%s] is a host itself: left out', child.name)
            return False
        child.factory, child.config = factory, section.config
        return True

    def _start(self, child: _Child) -> None:
        child.pending = None
        if self._closing:
            return
        assert child.factory is not None, 'handle_init keeps only the children it built'
        try:
            plugin = child.factory(self.endpoint, self.pubsub_endpoint, self.check_delay,
                                   self.ssh_server, **child.config)
        except Exception as exc:  # a bad option: the same next time, so not tried again
            self.log.error('[plugin:%s] left out: %s', child.name, exc)
            self.children.remove(child)
            return
        plugin._shared_answers = self.answers
        try:
            plugin.start_background(context=self.context)
        except Exception as exc:
            self._failed(child, 'could not start: %s: %s' % (type(exc).__name__, exc))
            return
        child.plugin, child.started = plugin, time.monotonic()
        if self._closing:  # the host began to stop while this plugin started
            plugin.stop()
            return
        self.log.info('[plugin:%s] running (%s)', child.name, type(plugin).__name__)

    def _failed(self, child: _Child, what: str) -> None:
        delay = min(FIRST_DELAY * 2 ** child.failures, self.max_delay)
        child.failures += 1
        self.log.error('[plugin:%s] %s; starting it again in %g s', child.name, what, delay)
        child.pending = self.loop.call_later(delay, self._start, child)

    def _look(self) -> None:
        now = time.monotonic()
        for child in self.children:
            plugin = child.plugin
            if plugin is None or self._closing:
                continue
            if plugin.running:
                if child.failures and now - child.started > self.max_delay:
                    child.failures = 0  # it has lasted: the next failure starts afresh
                continue
            child.plugin = None
            plugin.stop()  # its thread has ended: this only joins it
            self._failed(child, 'stopped by itself')

    def handle_stop(self) -> None:
        # In the stopping thread: no new start from now on, then each plugin stops with
        # its own handle_stop, while the host's loop (and context) still run.
        self._closing = True
        for child in self.children:
            if child.plugin is not None:
                child.plugin.stop()
        if self._watch is not None:
            self.loop.add_callback(self._watch.stop)

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        # circusd's events are for the plugins; the plugins' events may be relayed.
        if self.events_publish and bytes(data[0]).startswith(PLUGIN_PREFIX.encode() + b'.'):
            self._publish_event(data)

    @property
    def plugins(self) -> List[CircusPlugin]:
        """The plugins running now."""
        return [c.plugin for c in self.children if c.plugin is not None and
                c.plugin.running]
