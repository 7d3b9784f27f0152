"""Plugins that do their work every so often: :class:`PeriodicPlugin`.

A subclass implements :meth:`~PeriodicPlugin.look_after`, plain or ``async``; it runs on
the plugin's loop every ``loop_rate`` seconds, never twice at once, and an exception in
it is logged and the next run comes as usual::

    class Census(PeriodicPlugin):
        default_loop_rate = 10.0

        async def look_after(self):
            print(await self.call_async('list'))

A plugin that keeps a picture of circusd from its events reads it all again now and then,
as a safety net, with :meth:`~PeriodicPlugin.refresh_due`: everything at start, a moment
after the SUB socket reconnected (:meth:`~PeriodicPlugin.handle_reconnect`: events were
lost meanwhile), at the next look after :meth:`~PeriodicPlugin.refresh_everything`
(circusd did not answer), and otherwise each watcher once every :data:`SAFETY_REFRESH`
seconds, the watchers spread over that period and each plugin at a random phase, so that
no refresh is a burst of requests to circusd.
"""
import inspect
import math
import random
import zlib
from typing import Any, Awaitable, Iterable, List, Optional, Tuple

from tornado.ioloop import PeriodicCallback

from .config import MAX_SECONDS
from .plugin import CircusPlugin

#: Seconds between two refreshes of each watcher a plugin keeps from circusd's events (its
#: options, its processes), spread over the period: a last safety net for events never
#: published (``reloadconfig`` publishes no ``updated``) or lost unnoticed. Events lost
#: while the SUB socket reconnected are caught at once by :meth:`PeriodicPlugin.
#: handle_reconnect` instead.
SAFETY_REFRESH = 300.0

#: Seconds after the SUB socket reconnected before the full refresh: the subscription
#: reaches circusd's PUB socket a moment after the connection, and events published
#: before it are lost; the refresh must come after them.
RECONNECT_SETTLE = 0.5


class PeriodicPlugin(CircusPlugin):
    """Calls :meth:`look_after` every ``loop_rate`` seconds (option; default
    :attr:`default_loop_rate`) on :attr:`~CircusPlugin.loop`. Events are ignored unless
    :meth:`~CircusPlugin.handle_recv` is overridden."""

    #: ``loop_rate`` when the option is absent, in seconds.
    default_loop_rate = 60.0
    #: Whether the first run happens at start rather than ``loop_rate`` seconds later.
    look_at_start = False
    #: Seconds over which :meth:`refresh_due` spreads the refresh of every watcher
    #: (default :data:`SAFETY_REFRESH`; 0: everything at every call, for tests).
    safety_refresh = SAFETY_REFRESH

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        self.loop_rate = self.option('loop_rate', self.default_loop_rate, float,
                                     minimum=0.01, maximum=MAX_SECONDS)
        self._period: Optional[PeriodicCallback] = None
        self._looking = False
        self._everything = True  # a full refresh is due: at start
        self._refreshed_at = -math.inf  # the ``now`` of the last refresh_due()
        # Where in the period this plugin's refresh falls, as a fraction of it: two
        # plugins (or two runs) do not refresh the same watcher at the same moment.
        self._phase = random.random()

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

    def handle_reconnect(self) -> None:
        """Events were lost while the SUB socket reconnected: a full refresh
        :data:`RECONNECT_SETTLE` seconds from now, with a look right then."""
        super().handle_reconnect()
        self.loop.call_later(RECONNECT_SETTLE, self.__look_after_reconnect)

    def __look_after_reconnect(self) -> Awaitable[None]:
        self.refresh_everything()
        return self.look_now()

    def refresh_everything(self) -> None:
        """Make the next :meth:`refresh_due` return every name given to it: events may
        have been missed (circusd did not answer). On the plugin loop only."""
        self._everything = True

    def refresh_due(self, names: Iterable[str], now: float) -> List[str]:
        """The names among ``names`` (watchers, or any key a plugin refreshes by) whose
        safety refresh is due at ``now`` (seconds, the plugin's monotonic clock): all of
        them at the first call, after :meth:`refresh_everything` or
        :meth:`handle_reconnect`, and when :attr:`safety_refresh` is 0; otherwise those
        whose moment in the period came since the previous call. Each name has its own
        moment, every :attr:`safety_refresh` seconds, spread by a hash of the name plus
        the plugin's random phase: refreshing what it returns costs circusd a few
        requests at a time, never a burst. On the plugin loop only."""
        names = list(names)
        last, self._refreshed_at = self._refreshed_at, now
        period = self.safety_refresh
        if self._everything or period <= 0 or now - last >= period:
            self._everything = False
            return names
        return [name for name in names if _came(self._moment(name, period), last, now,
                                                period)]

    def _moment(self, name: str, period: float) -> float:
        """Where in the period ``name`` is refreshed, in seconds from 0."""
        fraction = zlib.crc32(name.encode('utf-8', 'replace')) / 2 ** 32 + self._phase
        return (fraction % 1.0) * period

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


def _came(moment: float, last: float, now: float, period: float) -> bool:
    """Whether a time ``moment`` modulo ``period`` lies in ``(last, now]``."""
    latest = moment + math.floor((now - moment) / period) * period  # the latest <= now
    return latest > last
