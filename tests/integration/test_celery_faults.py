"""Backend faults and bad input through a real worker: what is retried, what is not.

- A store outage while an event arrives for a group that is not in Redis
  (a cold group) must not acknowledge the event: the task retries and the
  event counts once the store is back.
- Backend errors (the store, or the Redis cache, down) are retried without
  limit: an outage longer than any fixed budget delays the event, never
  drops it.
- Bad input fails at once, never retried; a batch with some bad events
  applies the others and then fails with the rejected ones listed.

The store outage is injected from outside the worker: the file store's
``generation`` file is replaced by a directory, so every read of the store
fails (``StoreError``), and put back to end the outage.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from tasks import drain_outbox, track, track_many
from tests.support.celery_env import Deployment, deployment, require, wait_until
from tracking import CountTracker, KeyValueEQ
from tracking.embedded import EmbeddedRedis

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


#: More retries than the old bounded budget (8): the outage outlasts it.
BEYOND_OLD_BUDGET = 10


def _retries(dep: Deployment, task_id: str) -> int:
    return sum(f"[{task_id}] retry" in line for line in dep.log("w1").splitlines())


@pytest.mark.parametrize("backend", ["store", "redis"])
def test_backend_outage_longer_than_any_retry_budget_drops_nothing(
    backend: str, tmp_path: Path
) -> None:
    """Backend errors retry without limit (capped backoff, 1 s here); nothing is dropped."""
    require("embedded")
    cache = EmbeddedRedis(tmp_path / "cache").start()  # a cache the test can stop
    try:
        with deployment(
            "embedded", tmp_path, redis_url=cache.url, retry_backoff_max_seconds=1
        ) as dep:
            configure(dep.settings)
            dep.start_worker()
            manager = runtime.get_manager()
            manager.add_tracker("g", _hits())
            if backend == "store":
                drain_outbox.delay()
                wait_until(lambda: manager.evict("g"), 60, "the group to be evicted")
                outage: contextlib.AbstractContextManager[object] = StoreOutage(dep)
            else:
                outage = _stopped(cache)
            with outage:
                during = track.delay("g", {"kind": "hit"}).id
                wait_until(
                    lambda: _retries(dep, during) >= BEYOND_OLD_BUDGET,
                    120,
                    f"{BEYOND_OLD_BUDGET} retries during the outage",
                )
            wait_until(
                lambda: f"track[{during}] succeeded" in dep.log("w1"), 120, "the event applied"
            )
            assert _progress("g") == {"hits": 1}
    finally:
        cache.stop()


@contextlib.contextmanager
def _stopped(server: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    """Stop a Redis server (its data is kept on disk) and start it again on exit."""
    server.stop()
    try:
        yield server
    finally:
        server.start()


def test_bad_input_fails_at_once_and_the_queue_moves_on(dep: Deployment) -> None:
    dep.start_worker()
    runtime.get_manager().add_tracker("b", _hits())
    bad = track.delay("b", {"kind": "hit", "n": float("nan")}).id
    good = track.delay("b", {"kind": "hit"}).id
    wait_until(lambda: f"track[{good}] succeeded" in dep.log("w1"), 60, "the good event")
    wait_until(lambda: f"track[{bad}] raised" in dep.log("w1"), 60, "the bad event's failure")
    log = dep.log("w1")
    assert "InvalidEventError" in log.split(f"track[{bad}] raised")[1].splitlines()[0]
    assert _retries(dep, bad) == 0  # bad input is never retried
    assert _progress("b") == {"hits": 1}


def test_track_many_applies_the_good_events_and_rejects_the_bad(dep: Deployment) -> None:
    dep.start_worker()
    runtime.get_manager().add_tracker("p", _hits())
    deep: dict[str, object] = {"kind": "hit"}
    for _ in range(40):
        deep = {"nested": deep}
    batch = [
        {"group_id": "p", "data": {"kind": "hit"}},
        {"group_id": "p", "data": {"kind": "hit", "n": float("inf")}},
        {"group_id": "p", "data": {"kind": "hit"}},
        {"group_id": "p", "data": {"kind": "hit", **deep}},
    ]
    task_id = track_many.delay(batch).id
    wait_until(lambda: f"track_many[{task_id}] raised" in dep.log("w1"), 60, "the batch to fail")
    line = dep.log("w1").split(f"track_many[{task_id}] raised")[1].splitlines()[0]
    assert "TrackingValueError" in line and "2 of 4 events rejected" in line, line
    assert "events[1]" in line and "events[3]" in line, line
    assert _retries(dep, task_id) == 0
    assert _progress("p") == {"hits": 2}  # the two good events, once each
