"""Beat sending every job twice and late; worker clocks skewed by minutes.

The engine takes its time from Redis (``TIME``), never from a worker's
clock, and every periodic job is keyed by what is due, so:

- phase 1: a worker whose clock runs 5 minutes *ahead* runs ``reset_due``
  and ``expire_sweep`` (each sent twice) before the real period boundary
  and expiry: nothing resets and nothing expires early;
- phase 2: that worker is stopped; a worker whose clock runs 5 minutes
  *behind* serves two beats at once (every job sent twice, one beat with a
  clock 5 minutes behind), and the test sends late copies of both jobs
  after the boundary: the calendar reset happens exactly once (one RESET
  event, progress reopened), and the expiring tracker is gone from Redis
  with exactly one EXPIRED event.

Clocks are faked per process (``tests/support/fakeclock``), never the
machine's. The boundary is the next whole UTC minute at least 20 s away,
so the test waits up to about 80 s for it; it asserts on what happened,
never on how long it took.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from cli.procs import celery_command
from tasks import expire_sweep, reset_due, track
from tests.support.celery_env import (
    REPO,
    Deployment,
    deployment,
    next_minute_boundary,
    received,
    require,
    wait_until,
)
from tracking import CountTracker, KeyValueEQ, ResetPeriod

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SKEW = 300.0
FAKECLOCK = REPO / "tests" / "support" / "fakeclock"


def _skewed(seconds: float) -> dict[str, str]:
    return {
        "PYTHONPATH": f"{FAKECLOCK}:{REPO}",
        "TRACKING_TEST_CLOCK_SKEW_SECONDS": str(seconds),
    }


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    require("redis")
    with deployment("redis", tmp_path, sweep_interval_seconds=1.0) as deployed:
        configure(deployed.settings)
        yield deployed


def _events(dep: Deployment, code: str) -> list[dict[str, object]]:
    return [e for e in received(dep) if e["event"] == code]


def _ran(dep: Deployment, worker: str, task_ids: list[str]) -> bool:
    log = dep.log(worker)
    return all(f"[{task_id}] succeeded" in log for task_id in task_ids)


def _send_jobs_twice() -> list[str]:
    ids = []
    for job in (reset_due, expire_sweep):
        for _ in range(2):
            ids.append(job.apply_async(task_id=f"late-{uuid.uuid4().hex}").id)
    return ids


def test_beat_twice_and_late_with_skewed_worker_clocks(dep: Deployment) -> None:
    manager = runtime.get_manager()
    boundary = next_minute_boundary(min_lead=20.0)
    period = ResetPeriod("day", at=boundary.strftime("%H:%M"), timezone="UTC")
    manager.add_tracker(
        "p", CountTracker("quest", [KeyValueEQ("kind", "win")], 2, reset_period=period)
    )
    expire_at = int(boundary.timestamp()) + 5
    manager.add_tracker("p", CountTracker("promo", [], 10**6), expire_at=expire_at)
    state_key = f"{{{dep.prefix}:p}}:s"

    def quest() -> list[tuple[float, bool]]:
        return [(t.progress, t.completed) for t in manager.get_trackers("p", "quest")]

    # Phase 1: a clock 5 minutes ahead sees boundary and expiry as past.
    ahead = dep.start_worker("ahead", loglevel="DEBUG", extra_env=_skewed(+SKEW))
    track.delay("p", {"kind": "win"})
    track.delay("p", {"kind": "win"})
    wait_until(lambda: quest() == [(2, True)], 60, "the quest to complete")
    early = _send_jobs_twice()
    wait_until(lambda: _ran(dep, "ahead", early), 60, "the early reset_due/expire_sweep runs")
    assert time.time() < boundary.timestamp(), "the boundary passed during phase 1; rerun"
    assert quest() == [(2, True)]
    assert dep.redis().hexists(state_key, "promo")
    assert _events(dep, "RESET") == [] and _events(dep, "EXPIRED") == []
    dep.stop(ahead)

    # Phase 2: a clock 5 minutes behind; two beats (every job twice), one late.
    dep.start_worker("behind", loglevel="DEBUG", extra_env=_skewed(-SKEW))
    beats = [
        dep.start("beat1", celery_command("beat", "-l", "INFO", "-s", str(dep.data_dir / "b1")))
    ]
    beats.append(
        dep.start(
            "beat2",
            celery_command("beat", "-l", "INFO", "-s", str(dep.data_dir / "b2")),
            env=_skewed(-SKEW),
        )
    )
    wait_until(lambda: time.time() > expire_at + 1, 120, "the boundary and the expiry to pass")
    resets = wait_until(lambda: _events(dep, "RESET"), 60, "the RESET event")
    expired = wait_until(lambda: _events(dep, "EXPIRED"), 60, "the EXPIRED event")
    wait_until(lambda: not dep.redis().hexists(state_key, "promo"), 60, "promo gone from Redis")
    late = _send_jobs_twice()
    wait_until(lambda: _ran(dep, "behind", late), 60, "the late duplicate jobs")

    assert len(_events(dep, "RESET")) == 1 == len(resets)
    assert resets[0]["name"] == "quest"
    assert len(_events(dep, "EXPIRED")) == 1 == len(expired)
    assert expired[0]["name"] == "promo"
    assert quest() == [(0, False)]  # reopened for the new period, once
    assert [t.name for t in manager.get_trackers("p")] == ["quest"]
    assert not dep.redis().hexists(state_key, "promo")
    assert all(beat.poll() is None for beat in beats), "a beat died"
