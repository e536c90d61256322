"""A calendar reset at a real period boundary, through a worker and celery beat.

Rather than freezing a clock, the test gives a tracker a daily period that
starts at the next whole minute (UTC) and lets that boundary pass: the
cache's clock (Redis ``TIME``), the worker's period bounds and beat's
``reset_due`` all see the same real boundary. The test waits at most about
80 seconds for it; it asserts on what happened, never on how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from cli.procs import celery_command
from tasks import add_tracker, reset_due, track
from tests.support.celery_env import (
    Deployment,
    deployment,
    next_minute_boundary,
    received,
    require,
    wait_until,
)
from tracking import CountTracker, KeyValueEQ, ResetPeriod

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    require("embedded")
    with deployment("embedded", tmp_path, sweep_interval_seconds=1.0) as deployed:
        configure(deployed.settings)
        yield deployed


def _quest(group_id: str) -> list[tuple[float, bool]]:
    return [(t.progress, t.completed) for t in runtime.get_manager().get_trackers(group_id)]


def _resets(dep: Deployment) -> list[dict[str, object]]:
    return [e for e in received(dep) if e["event"] == "RESET"]


def test_daily_reset_happens_once_at_the_boundary(dep: Deployment) -> None:
    # DEBUG: the "reset_due[...] succeeded" lines this test waits for are
    # housekeeping lines, demoted to DEBUG by celery_app.quietlog.
    dep.start_worker(loglevel="DEBUG")
    dep.start("beat", celery_command("beat", "-l", "INFO"))
    boundary = next_minute_boundary(min_lead=15.0)
    period = ResetPeriod("day", at=boundary.strftime("%H:%M"), timezone="UTC")
    quest = CountTracker("quest", [KeyValueEQ("kind", "win")], 2, reset_period=period)
    add_tracker.delay("p1", quest.to_spec())
    wait_until(lambda: len(_quest("p1")) == 1, 30, "the tracker to be added")

    track.delay("p1", {"kind": "win"})
    track.delay("p1", {"kind": "win"})
    wait_until(lambda: _quest("p1") == [(2, True)], 30, "the quest to complete")
    assert _resets(dep) == []  # no reset before the boundary

    # The group is idle across the boundary: beat's reset_due rolls it over.
    wait_until(lambda: time.time() > boundary.timestamp() + 1, 120, "the period boundary to pass")
    resets = wait_until(lambda: _resets(dep), 60, "beat's RESET event")
    # Beat firing again, or late, resets nothing more: wait until the worker
    # has run three more reset_due (a positive signal), then count.
    extra = [reset_due.delay().id for _ in range(3)]
    wait_until(
        lambda: all(f"reset_due[{task_id}] succeeded" in dep.log("w1") for task_id in extra),
        60,
        "three more reset_due runs",
    )
    assert len(_resets(dep)) == 1 == len(resets)
    assert resets[0]["name"] == "quest" and resets[0]["group_id"] == "p1"
    assert _quest("p1") == [(0, False)]  # reopened for the new day

    track.delay("p1", {"kind": "win"})
    wait_until(lambda: _quest("p1") == [(1, False)], 30, "counting again after the reset")
