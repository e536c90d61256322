"""``reset_due`` follows the cache's clock, not the worker's.

A worker whose clock is behind a period boundary used to build the roll id
of the period that had just ended; the cache had recorded that id when an
earlier ``reset_due`` found nothing to roll, dropped the new call as a
duplicate, and the RESET waited until the worker's own clock passed the
boundary (found by the skewed-clock fault scenario,
``tests/integration/test_faults_clock.py``).
"""

from __future__ import annotations

import pytest

import tracking.manager
from tracking import (
    EVENT_TRACKER_RESET,
    CountTracker,
    KeyValueEQ,
    MemoryDataCache,
    MemoryDataStore,
    ResetPeriod,
    TrackingManager,
)

BOUNDARY = 1_700_006_400  # 2023-11-15 00:00 UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("skew", [-300.0, +300.0])
def test_reset_fires_at_the_cache_clock_boundary_whatever_the_worker_clock(
    monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    cache_clock = Clock(BOUNDARY - 60)
    manager = TrackingManager(MemoryDataCache(clock=cache_clock), MemoryDataStore())
    monkeypatch.setattr(tracking.manager.time, "time", lambda: cache_clock.now + skew)
    period = ResetPeriod("day", at="00:00", timezone="UTC")
    manager.add_tracker("g", CountTracker("quest", [KeyValueEQ("k", 1)], 2, reset_period=period))
    manager.track("g", {"k": 1})
    assert manager.reset_due() == []  # before the boundary: nothing (and the no-op is recorded)
    cache_clock.now = BOUNDARY + 1
    events = manager.reset_due()
    assert [(e.code, e.name) for e in events] == [(EVENT_TRACKER_RESET, "quest")]
    assert manager.reset_due() == []  # once
    [quest] = manager.get_trackers("g")
    assert quest.progress == 0
