"""Dedupe survives a cache loss: event ids travel to the store with their group.

Event ids are remembered in the cache (Redis). A group's dedupe records are
written to the store with its state at every flush, in the same snapshot,
and installed again by a cold load. So after a cache loss (a Redis restart
without AOF, a FLUSHALL, an eviction) a redelivered event that reached the
store is still a duplicate. What remains: an event applied after the
group's last flush is gone from the cache with the state it changed, so its
redelivery applies it (once) to the state the store holds.

Each test runs over the in-process cache and over Redis (the machine's
server and the embedded one), with the file store as the record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracking import CountTracker, FileDataStore, KeyValueEQ, MemoryDataCache, RedisDataCache
from tracking.cache.base import DataCache, SeenEvent
from tracking.errors import TrackingValueError
from tracking.manager import TrackingManager
from tracking.persistence import DEDUPE_FIELD, records_to_seen


@pytest.fixture(params=["memory", "server-redis", "embedded-redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[DataCache]:
    if request.param == "memory":
        yield MemoryDataCache()
        return
    request.applymarker(pytest.mark.redis)
    url_fixture = "server_redis_url" if request.param == "server-redis" else "embedded_redis_url"
    url = request.getfixturevalue(url_fixture)
    redis_cache = RedisDataCache(url, f"t{uuid.uuid4().hex[:8]}")
    try:
        yield redis_cache
    finally:
        redis_cache.flush()  # only this test's prefix
        redis_cache.close()


def _manager(cache: DataCache, path: Path) -> tuple[TrackingManager, FileDataStore]:
    store = FileDataStore(str(path))
    manager = TrackingManager(cache, store)
    manager.add_tracker("g", CountTracker("logins", [KeyValueEQ("kind", "login")], [2, 100]))
    manager.add_tracker("g", CountTracker("orders", [KeyValueEQ("kind", "order")], 100))
    return manager, store


def _lose_the_cache(cache: DataCache) -> None:
    """What a Redis restart without AOF or a FLUSHALL does to this product's keys."""
    cache.flush()


def _progress(manager: TrackingManager) -> dict[str, float]:
    return {t.name: t.progress for t in manager.get_trackers("g")}


def test_flushed_event_ids_are_recognised_after_the_cache_is_lost(
    cache: DataCache, tmp_path: Path
) -> None:
    manager, store = _manager(cache, tmp_path / "store")
    first = [manager.track("g", {"kind": "login"}, f"e{i}") for i in range(3)]
    manager.track("g", {"kind": "order"}, "o1")
    manager.flush_dirty()
    _lose_the_cache(cache)

    # A fresh worker (no definitions in memory) gets every event again.
    again = TrackingManager(cache, FileDataStore(str(tmp_path / "store")))
    for i in range(3):
        result = again.track("g", {"kind": "login"}, f"e{i}")
        assert result.duplicate, f"e{i}"
        # the original outcome's names come back too
        assert [t.name for t in result.dirtied] == [t.name for t in first[i].dirtied]
        assert [t.name for t in result.completed] == [t.name for t in first[i].completed]
    assert again.track("g", {"kind": "order"}, "o1").duplicate
    assert _progress(again) == {"logins": 3, "orders": 1}
    # The records persisted once per group, in one tracker's record.
    carriers = [r.name for r in store.load_group("g") if DEDUPE_FIELD in r.extra]
    assert len(carriers) == 1
    assert {s.event_id for s in records_to_seen(store.load_group("g"))} == {
        "e0",
        "e1",
        "e2",
        "o1",
    }


def test_an_evicted_group_still_knows_its_event_ids(cache: DataCache, tmp_path: Path) -> None:
    manager, _ = _manager(cache, tmp_path / "store")
    manager.track("g", {"kind": "order"}, "o1")
    cache.ack_outbox(cache.outbox(1000))  # eviction waits for the outbox
    assert manager.evict("g")
    assert manager.track("g", {"kind": "order"}, "o1").duplicate
    assert _progress(manager) == {"logins": 0, "orders": 1}


def test_what_remains_an_event_after_the_last_flush_is_applied_once_again(
    cache: DataCache, tmp_path: Path
) -> None:
    manager, _ = _manager(cache, tmp_path / "store")
    manager.track("g", {"kind": "order"}, "o1")
    manager.flush_dirty()
    manager.track("g", {"kind": "order"}, "o2")  # never flushed
    _lose_the_cache(cache)
    # o2's effect was lost with the cache; its redelivery applies it once.
    assert manager.track("g", {"kind": "order"}, "o1").duplicate
    assert not manager.track("g", {"kind": "order"}, "o2").duplicate
    assert manager.track("g", {"kind": "order"}, "o2").duplicate
    assert _progress(manager) == {"logins": 0, "orders": 2}


def test_the_persisted_records_keep_the_count_bound(tmp_path: Path) -> None:
    cache = MemoryDataCache(dedupe_max_entries=5)
    manager, store = _manager(cache, tmp_path / "store")
    for i in range(12):
        manager.track("g", {"kind": "order"}, f"o{i}")
    manager.flush_dirty()
    kept = [s.event_id for s in records_to_seen(store.load_group("g"))]
    assert kept == [f"o{i}" for i in range(7, 12)]


def test_a_malformed_persisted_record_is_a_clear_error() -> None:
    with pytest.raises(TrackingValueError, match="malformed dedupe record"):
        SeenEvent.from_json(["id", "not a time", [], [], []])
    assert SeenEvent.from_json(["id", 1.5, ["a"], [], ["b"]]) == SeenEvent(
        "id", 1.5, ("a",), (), ("b",)
    )
