"""Plugins that do their work every so often: :class:`PeriodicPlugin`.

A subclass implements :meth:`~PeriodicPlugin.look_after`, plain or ``async``; it runs on
the plugin's loop every ``loop_rate`` seconds, never twice at once, and an exception in
it is logged and the next run comes as usual::

    class Census(PeriodicPlugin):
        default_loop_rate = 10.0

        async def look_after(self):
            print(await self.call_async('list'))
"""
import inspect
from typing import Any, Awaitable, Optional, Tuple

from tornado.ioloop import PeriodicCallback

from .config import MAX_SECONDS
from .plugin import CircusPlugin

#: Seconds between two full refreshes of what a plugin keeps from circusd's events (the
#: watchers, their options, their processes): a safety net for events missed while the
#: SUB socket reconnected, or never published (``reloadconfig`` publishes no ``updated``).
SAFETY_REFRESH = 60.0


class PeriodicPlugin(CircusPlugin):
    """Calls :meth:`look_after` every ``loop_rate`` seconds (option; default
    :attr:`default_loop_rate`) on :attr:`~CircusPlugin.loop`. Events are ignored unless
    :meth:`~CircusPlugin.handle_recv` is overridden."""

    #: ``loop_rate`` when the option is absent, in seconds.
    default_loop_rate = 60.0
    #: Whether the first run happens at start rather than ``loop_rate`` seconds later.
    look_at_start = False

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.loop_rate = self.option('loop_rate', self.default_loop_rate, float,
                                     minimum=0.01, maximum=MAX_SECONDS)
        self._period: Optional[PeriodicCallback] = None
        self._looking = False

    def handle_init(self) -> None:
        super().handle_init()
        self._period = PeriodicCallback(self.look_now, self.loop_rate * 1000)
        self._period.start()
        if self.look_at_start:
            self.loop.add_callback(self.look_now)

    def handle_stop(self) -> None:
        if self._period is not None:
            self.loop.add_callback(self._period.stop)
        super().handle_stop()

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        pass

    async def look_now(self) -> None:
        """Run :meth:`look_after` now, unless a run is under way. On the loop only."""
        if self._looking:
            return
        self._looking = True
        try:
            result = self.look_after()
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.log.exception('look_after failed')
        finally:
            self._looking = False

    def look_after(self) -> Optional[Awaitable[Any]]:
        """Do the periodic work; to be implemented, plain or ``async``."""
        raise NotImplementedError()
