"""Backend faults and bad input through a real worker: what is retried, what is not.

- A store outage while an event arrives for a group that is not in Redis
  (a cold group) must not acknowledge the event: the task retries and the
  event counts once the store is back.
- Bad input fails at once, never retried; a batch with some bad events
  applies the others and then fails with the rejected ones listed.

The store outage is injected from outside the worker: the file store's
``generation`` file is replaced by a directory, so every read of the store
fails (``StoreError``), and put back to end the outage.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from tasks import drain_outbox, track
from tests.support.celery_env import Deployment, deployment, require, wait_until
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    require("embedded")
    with deployment("embedded", tmp_path, retry_backoff_max_seconds=2) as deployed:
        configure(deployed.settings)
        yield deployed


def _hits() -> CountTracker:
    return CountTracker("hits", [KeyValueEQ("kind", "hit")], 1_000_000)


def _progress(group_id: str) -> dict[str, float]:
    return {t.name: t.progress for t in runtime.get_manager().get_trackers(group_id)}


class StoreOutage:
    """Make every read and write of a deployment's file store fail, then end it."""

    def __init__(self, dep: Deployment) -> None:
        self.generation = Path(dep.settings.resolved_store_url().removeprefix("file://"))
        self.generation /= "generation"

    def __enter__(self) -> StoreOutage:
        self.generation.unlink(missing_ok=True)
        self.generation.mkdir()  # reading it now raises IsADirectoryError
        return self

    def __exit__(self, *exc: object) -> None:
        self.generation.rmdir()
        # A new generation makes every process reload the store from disk.
        self.generation.write_text(uuid.uuid4().hex)


def _retried(dep: Deployment, task_id: str, error: str) -> bool:
    return any(
        f"[{task_id}] retry" in line and error in line for line in dep.log("w1").splitlines()
    )


def test_cold_group_event_during_store_outage_is_retried_not_lost(dep: Deployment) -> None:
    dep.start_worker()
    manager = runtime.get_manager()
    manager.add_tracker("cold", _hits())  # written through to the store
    drain_outbox.delay()  # eviction waits until ADDED has left the outbox
    # Then gone from Redis: the next event loads the group from the store.
    wait_until(lambda: manager.evict("cold"), 60, "the group to be evicted")

    with StoreOutage(dep):
        during = track.delay("cold", {"kind": "hit"}).id
        wait_until(lambda: _retried(dep, during, "StoreError"), 60, "a retry on StoreError")
        assert manager.data_cache.get_group("cold") is None  # nothing applied meanwhile
    after = track.delay("cold", {"kind": "hit"}).id

    wait_until(lambda: _progress("cold") == {"hits": 2}, 60, "both events counted")
    log = dep.log("w1")
    assert f"track[{during}] succeeded" in log and f"track[{after}] succeeded" in log
    assert _progress("cold") == {"hits": 2}
