"""Add-then-track ordering through a real worker: the two documented ways.

``add_tracker`` (admin queue) and ``track`` (tracking queue) are different
queues, so ``add_tracker.delay`` followed by ``track.delay`` may run the
track first (and it then counts toward nothing). The README offers two ways
to get the obvious order; both are checked here with a prefork worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from tests.support.celery_env import Deployment, deployment, wait_until
from tracking.spec import tracker_from_spec

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SPEC = {
    "type": "CountTracker",
    "name": "logins",
    "conditions": [{"type": "KeyValueEQ", "key": "kind", "value": "login"}],
    "target": 100,
}


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with deployment("embedded", tmp_path) as d:
        configure(d.settings)
        d.start_worker(concurrency=2)
        yield d


def _progress(group_id: str) -> float | None:
    trackers = runtime.get_manager().get_trackers(group_id, "logins")
    return trackers[0].progress if trackers else None


def test_a_chain_runs_track_after_add_tracker(dep: Deployment) -> None:
    from tasks import add_tracker, track

    for n in range(5):
        group = f"chain-{n}"
        (
            add_tracker.si(group, SPEC) | track.si(group, {"kind": "login"}, event_id=f"{group}-1")
        ).delay()
    for n in range(5):
        wait_until(lambda g=f"chain-{n}": _progress(g) == 1, 90, f"chain-{n} to count its event")


def test_adding_through_the_manager_then_track_delay_counts(dep: Deployment) -> None:
    from tasks import track

    manager = runtime.get_manager()
    for n in range(5):
        group = f"sync-{n}"
        manager.add_trackers(group, [tracker_from_spec(SPEC)])  # returns once it is in Redis
        track.delay(group, {"kind": "login"}, event_id=f"{group}-1")
    for n in range(5):
        wait_until(lambda g=f"sync-{n}": _progress(g) == 1, 90, f"sync-{n} to count its event")
