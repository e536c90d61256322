"""At the default log level the worker log shows real work, not beat's housekeeping.

A worker subprocess at INFO runs idle ``drain_outbox`` runs (silent), a
drain and a flush that did something (one summary line each), and a real
``track`` task (Celery's "received"/"succeeded" lines kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from celery_app.celeryconfig import QUEUE_MAINTENANCE
from tests.support.celery_env import Deployment, deployment, wait_until
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with deployment("embedded", tmp_path) as d:
        configure(d.settings)
        yield d


def test_housekeeping_is_quiet_unless_it_did_something(dep: Deployment) -> None:
    from tasks import drain_outbox, flush_dirty, track

    # One process, prefetch 1: the maintenance queue runs in the order sent.
    dep.start_worker(concurrency=1, loglevel="INFO")
    manager = runtime.get_manager()
    manager.add_tracker("g1", CountTracker("hits", [KeyValueEQ("k", 1)], 100))
    manager.track("g1", {"k": 1})  # write-behind: the group is dirty until a flush
    # The ADDED event waits in the outbox and the group is dirty: the first
    # drain and the flush have work; the drains in between are idle.
    for _ in range(6):
        drain_outbox.apply_async(queue=QUEUE_MAINTENANCE)
    flush_dirty.apply_async(queue=QUEUE_MAINTENANCE)
    wait_until(lambda: "flush_dirty: wrote 1 group" in dep.log("w1"), 90, "the flush summary")
    track.delay("g1", {"k": 1}, event_id="real-1")

    def track_succeeded() -> bool:
        lines = dep.log("w1").splitlines()
        return any("Task tasks.track[" in line and " succeeded in " in line for line in lines)

    wait_until(track_succeeded, 90, "the track task's success line")

    log = dep.log("w1")
    assert log.count("drain_outbox: 1 outbox entries, published") == 1, log
    assert "drain_outbox: 0 outbox entries" not in log, log  # idle runs log at DEBUG
    for task in ("tasks.drain_outbox", "tasks.flush_dirty"):
        assert f"Task {task}[" not in log, log  # Celery's per-task lines demoted
    received = [line for line in log.splitlines() if "Task tasks.track[" in line]
    assert any(line.endswith("received") for line in received), log
    assert any(" succeeded in " in line for line in received), log
