"""When to scale a watcher: the autoscaler's rule, pure, with no I/O and no clock.

:class:`Trend` follows the average CPU per process, interval after interval;
:func:`decide` says what change it calls for, under a watcher's :class:`Settings`::

    trend = Trend(high=70, low=20)
    trend.add(0.0, 5.0, 85.0)            # from 0 to 5 s, 85 % of a core per process
    trend.add(5.0, 10.0, 90.0)
    decide(trend, 2, Settings(up_after=10))   # Decision('up', 2, 3, 87.5, 10.0, ...)
"""
from typing import List, NamedTuple, Optional, Tuple

__all__ = ['Settings', 'Trend', 'Decision', 'decide']


class Settings(NamedTuple):
    """What governs the scaling of one watcher: the plugin's options, overridden by the
    watcher's ``autoscale.*``. Percentages are of one core, per process; times are in
    seconds."""
    min: int = 1
    max: int = 4
    step: int = 1
    cpu_high: float = 70.0
    cpu_low: float = 20.0
    up_after: float = 30.0
    down_after: float = 120.0
    cooldown: float = 60.0
    memory_guard: bool = True
    dry_run: bool = False

    def problem(self) -> Optional[str]:
        """What makes these settings unusable together, or ``None``."""
        if self.min > self.max:
            return 'min %d is above max %d' % (self.min, self.max)
        if self.cpu_low >= self.cpu_high:
            return 'cpu_low %g is not below cpu_high %g' % (self.cpu_low, self.cpu_high)
        return None

    def crash_memory(self) -> float:
        """Seconds a crash keeps the watcher alone: the longest window the decisions look
        at."""
        return max(self.up_after, self.down_after)


class Trend:
    """The runs of CPU readings above ``high`` and below ``low`` that end with the latest.

    :meth:`add` takes the average CPU per process of one interval; :meth:`above` and
    :meth:`below` say for how long, up to the end of the latest interval, every interval
    was above ``high`` (below ``low``), and their time-weighted average. The intervals
    must follow one another: the caller :meth:`clear`\\ s the trend at a gap.
    """

    def __init__(self, high: float, low: float) -> None:
        self.high, self.low = high, low
        self.clear()

    def clear(self) -> None:
        self.end: Optional[float] = None
        self._high: Optional[List[float]] = None  # [start of the run, CPU x seconds]
        self._low: Optional[List[float]] = None

    def add(self, start: float, end: float, cpu: float) -> None:
        """An interval from ``start`` to ``end`` (seconds) whose processes averaged
        ``cpu`` percent."""
        if self.end is not None and start != self.end:
            self.clear()  # not the interval that follows: the runs are broken
        seconds = end - start
        self._high = self._extend(self._high, cpu > self.high, start, cpu * seconds)
        self._low = self._extend(self._low, cpu < self.low, start, cpu * seconds)
        self.end = end

    @staticmethod
    def _extend(run, inside: bool, start: float, amount: float):
        if not inside:
            return None
        if run is None:
            run = [start, 0.0]
        run[1] += amount
        return run

    def above(self) -> Optional[Tuple[float, float]]:
        """``(seconds, average)`` of the run above ``high``; ``None`` if the latest
        interval was not above it."""
        return self._span(self._high)

    def below(self) -> Optional[Tuple[float, float]]:
        """``(seconds, average)`` of the run below ``low``; ``None`` as for
        :meth:`above`."""
        return self._span(self._low)

    def _span(self, run) -> Optional[Tuple[float, float]]:
        if run is None or self.end is None:
            return None
        seconds = self.end - run[0]
        return seconds, (run[1] / seconds if seconds > 0 else 0.0)


class Decision(NamedTuple):
    """A change to make: ``direction`` (``up`` or ``down``) from ``before`` processes to
    ``after``, because the CPU averaged ``cpu`` percent per process for ``seconds``."""
    direction: str
    before: int
    after: int
    cpu: float
    seconds: float
    reason: str


def decide(trend: Trend, count: int, settings: Settings) -> Optional[Decision]:
    """The change that ``trend`` calls for in a watcher that wants ``count`` processes,
    or ``None``. The cooldown is the caller's business.

    Up by ``step`` (at most to ``max``) when every reading of the last ``up_after``
    seconds or more was above ``cpu_high``; down by ``step`` (at least to ``min``) when
    every reading of the last ``down_after`` seconds or more was below ``cpu_low``.
    A watcher at ``max`` is never scaled up, nor one at ``min`` down.
    """
    s = settings
    above = trend.above()
    if count < s.max and above is not None and above[0] >= s.up_after:
        seconds, cpu = above
        return Decision('up', count, min(count + s.step, s.max), cpu, seconds,
                        'CPU above cpu_high %g%% for %.1f s (%.1f%% per process on '
                        'average)' % (s.cpu_high, seconds, cpu))
    below = trend.below()
    if count > s.min and below is not None and below[0] >= s.down_after:
        seconds, cpu = below
        return Decision('down', count, max(count - s.step, s.min), cpu, seconds,
                        'CPU below cpu_low %g%% for %.1f s (%.1f%% per process on '
                        'average)' % (s.cpu_low, seconds, cpu))
    return None
