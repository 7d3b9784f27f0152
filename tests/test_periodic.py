"""PeriodicPlugin's safety refresh (refresh_due): all at first, then each name once a
period, spread over it, never a burst."""
import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from circus_plugins.periodic import SAFETY_REFRESH, PeriodicPlugin

NAMES = ['w%d' % i for i in range(200)]


class Quiet(PeriodicPlugin):
    def look_after(self):
        pass


def plugin(period=SAFETY_REFRESH):
    made = Quiet('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0)  # never started
    made.safety_refresh = period
    return made


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1e6), st.lists(st.floats(0.001, 100.0), min_size=1, max_size=60))
def test_each_name_is_refreshed_once_per_period_whatever_the_looks(start, steps):
    p = plugin(period=100.0)
    assert p.refresh_due(NAMES, start) == NAMES  # the first call: everything
    now, counts = start, Counter()
    for step in steps:
        now += step
        counts.update(p.refresh_due(NAMES, now))
    periods = (now - start) / 100.0
    for name in NAMES:  # as many moments of it as the time run through holds
        assert math.floor(periods) <= counts[name] <= math.ceil(periods), name


def test_the_refresh_is_spread_not_a_burst_and_phases_differ():
    a, b = plugin(), plugin()
    a.refresh_due(NAMES, 0.0), b.refresh_due(NAMES, 0.0)
    sizes, moments = [], {}
    for second in range(1, int(SAFETY_REFRESH) + 1):
        due = a.refresh_due(NAMES, float(second))
        sizes.append(len(due))
        moments.update((name, second) for name in due)
        b.refresh_due(NAMES, float(second))
    assert sum(sizes) == len(NAMES)  # each once in the period...
    assert max(sizes) <= 6  # ...a few a second (200 in 300 s), not all at once
    assert a._phase != b._phase
    # After refresh_everything (circusd did not answer), all at the next call, then
    # back to slices.
    a.refresh_everything()
    assert a.refresh_due(NAMES, SAFETY_REFRESH + 1) == NAMES
    assert len(a.refresh_due(NAMES, SAFETY_REFRESH + 2)) <= 6


def test_a_period_of_0_refreshes_everything_at_every_call():
    p = plugin(period=0.0)
    for now in (0.0, 0.01, 0.02):
        assert p.refresh_due(['web'], now) == ['web']
