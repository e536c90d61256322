"""Nothing acknowledged is lost: write-behind, write-through, outages, eviction, FLUSHALL.

Each test runs over the in-process cache and over Redis (the machine's
server, the embedded one and a local Redis Cluster), with the file store
as the record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tracking import (
    CountTracker,
    FileDataStore,
    KeyValueEQ,
    MemoryDataCache,
    RedisDataCache,
    StoreError,
    TrackingManager,
)
from tracking.cache.base import CachedTracker, DataCache
from tracking.manager import Durability
from tracking.model import TrackerState
from tracking.store.base import TrackerRecord


class FlakyStore(FileDataStore):
    """A file store whose writes fail while ``down`` is set (an outage)."""

    down = False

    def save(self, records: Sequence[TrackerRecord]) -> None:
        if self.down:
            raise StoreError("store is down")
        super().save(records)

    def remove(self, group_id: str, names: Sequence[str] | None = None) -> int:
        if self.down:
            raise StoreError("store is down")
        return super().remove(group_id, names)


_URL_FIXTURES = {
    "server-redis": "server_redis_url",
    "embedded-redis": "embedded_redis_url",
    "cluster-redis": "cluster_redis_url",
}


@pytest.fixture(params=["memory", *_URL_FIXTURES])
def cache(request: pytest.FixtureRequest) -> Iterator[DataCache]:
    if request.param == "memory":
        yield MemoryDataCache()
        return
    request.applymarker(pytest.mark.redis)
    url = request.getfixturevalue(_URL_FIXTURES[request.param])
    prefix = f"t{uuid.uuid4().hex[:8]}"
    redis_cache = RedisDataCache(url, prefix)
    try:
        yield redis_cache
    finally:
        redis_cache.flush()  # only this test's prefix
        redis_cache.close()


def make_manager(
    cache: DataCache, path: Path, durability: Durability = "write-behind"
) -> tuple[TrackingManager, FlakyStore]:
    store = FlakyStore(str(path))
    manager = TrackingManager(cache, store, durability=durability)
    manager.add_tracker("g", CountTracker("orders", [KeyValueEQ("status", "paid")], 1000))
    return manager, store


def stored_progress(store: FileDataStore, group_id: str = "g") -> float:
    [record] = store.load_group(group_id)
    return float(record.state["progress"])


def test_cache_wiped_after_a_flush_interval_loses_nothing(cache: DataCache, tmp_path: Path) -> None:
    manager, store = make_manager(cache, tmp_path)
    for _ in range(25):
        manager.track("g", {"status": "paid"})
    assert manager.flush_dirty().flushed == ["g"]  # the write-behind pass of one interval
    cache.flush()  # FLUSHALL of the product's keys (or a Redis restart without persistence)
    for _ in range(5):
        manager.track("g", {"status": "paid"})  # reloaded from the store on the miss
    assert manager.get_trackers("g")[0].progress == 30
    manager.flush_dirty()
    assert stored_progress(store) == 30


def test_store_outage_loses_and_duplicates_nothing(cache: DataCache, tmp_path: Path) -> None:
    manager, store = make_manager(cache, tmp_path)
    store.down = True
    for index in range(20):
        ok, *_ = manager.track("g", {"status": "paid"}, event_id=f"e{index}")
        assert ok  # tracking goes on in the cache; track never raises for the store
    report = manager.flush_dirty()
    assert "g" in report.failed and not report.flushed  # the dirty mark stays
    for index in range(10, 20):  # redelivered events during the outage count once
        assert manager.track("g", {"status": "paid"}, event_id=f"e{index}").duplicate
    store.down = False
    assert manager.flush_dirty().flushed == ["g"]  # the backlog drains
    assert stored_progress(store) == 20
    assert manager.flush_dirty().flushed == []  # and nothing is left dirty
    assert FileDataStore(str(tmp_path)).load_group("g")[0].state["progress"] == 20


def test_write_through_persists_before_track_returns(cache: DataCache, tmp_path: Path) -> None:
    manager, store = make_manager(cache, tmp_path, durability="write-through")
    manager.track("g", {"status": "paid"}, event_id="a")
    assert stored_progress(store) == 1
    store.down = True
    with pytest.raises(StoreError):  # not acknowledged: the task will be retried
        manager.track("g", {"status": "paid"}, event_id="b")
    store.down = False
    retried = manager.track("g", {"status": "paid"}, event_id="b")
    assert retried.duplicate  # counted once in the cache ...
    assert stored_progress(store) == 2  # ... and now persisted


def test_evicting_a_dirty_group_flushes_it_first(cache: DataCache, tmp_path: Path) -> None:
    manager, store = make_manager(cache, tmp_path)
    cache.ack_outbox(cache.outbox())
    for _ in range(7):
        manager.track("g", {"status": "paid"})
    cache.ack_outbox(cache.outbox())
    assert manager.evict("g")
    assert cache.get_group("g") is None
    assert stored_progress(store) == 7
    manager.track("g", {"status": "paid"})
    assert manager.get_trackers("g")[0].progress == 8


def test_eviction_is_refused_while_the_store_is_down(cache: DataCache, tmp_path: Path) -> None:
    manager, store = make_manager(cache, tmp_path)
    cache.ack_outbox(cache.outbox())
    manager.track("g", {"status": "paid"})
    store.down = True
    with pytest.raises(StoreError):
        manager.evict("g")
    assert cache.get_group("g") is not None  # still there, still dirty
    store.down = False
    assert manager.evict("g") and stored_progress(store) == 1


def test_removals_and_completions_reach_the_store(cache: DataCache, tmp_path: Path) -> None:
    manager, store = make_manager(cache, tmp_path)
    manager.add_tracker("g", CountTracker("first", [], 2))
    manager.track("g", {})
    manager.track("g", {})  # "first" completes and leaves the group
    manager.flush_dirty()
    assert [r.name for r in store.load_group("g")] == ["orders"]


def test_one_failing_group_does_not_hold_back_the_batch(cache: DataCache, tmp_path: Path) -> None:
    class PickyStore(FlakyStore):
        def save(self, records: Sequence[TrackerRecord]) -> None:
            if any(r.group_id == "bad" for r in records):
                raise StoreError("rejects group 'bad'")
            super().save(records)

    store = PickyStore(str(tmp_path))
    manager = TrackingManager(cache, store)
    for group_id in ("a", "bad", "c"):
        manager.data_cache.install_group(group_id, [])
        manager.data_cache.put_trackers(
            group_id, [CachedTracker(CountTracker("t", [], 9).definition, TrackerState())], "src"
        )
        manager.track(group_id, {})
    report = manager.flush_dirty()
    assert sorted(report.flushed) == ["a", "c"] and list(report.failed) == ["bad"]
    assert [r.state["progress"] for r in store.load_group("c")] == [1]
    assert manager.data_cache.dirty_groups() == ["bad"]
