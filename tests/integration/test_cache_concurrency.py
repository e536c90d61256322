"""Several processes on one group: nothing lost, nothing counted twice.

Each test starts a few worker processes (multiprocessing ``spawn``, so each
has its own interpreter and Redis connections, as Celery prefork children
would) that wait on a barrier and then send their events to the same group
through ``TrackingManager`` over :class:`RedisDataCache`. The counts are
bounded so the tests stay quick; nothing here measures time.
"""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path
from typing import Any

import pytest

from tracking.cache.base import CachedTracker
from tracking.cache.redis import RedisDataCache
from tracking.conditions import KeyValueEQ
from tracking.events import EVENT_TRACKER_ALL_COMPLETED
from tracking.limiters import CountLimiter
from tracking.manager import TrackingManager
from tracking.persistence import cache_to_record, load_group
from tracking.store.base import DataStore
from tracking.store.file import FileDataStore
from tracking.store.memory import MemoryDataStore
from tracking.trackers import CountTracker

pytestmark = pytest.mark.redis

GROUP = "shared-group"
PROCESSES = 4


def _worker(
    url: str,
    prefix: str,
    store_dir: str | None,
    n_events: int,
    tag: str,
    explicit_load: bool,
    barrier: Any,
    results: Any,
) -> None:
    """Send ``n_events`` events (ids ``tag-i``) to the group; report what happened."""
    cache = RedisDataCache(url, prefix)
    store: DataStore = FileDataStore(store_dir) if store_dir else MemoryDataStore()
    manager = TrackingManager(cache, store)
    try:
        barrier.wait(timeout=120)
        installed = load_group(cache, store, GROUP) is not None if explicit_load else None
        completed = limited_events = 0
        for i in range(n_events):
            result = manager.track(GROUP, {"k": 1}, event_id=f"{tag}-{i}")
            assert result.ok
            completed += len(result.completed)
            limited_events += sum(1 for e in result.events if e.code_name == "LIMITED")
        results.put((tag, installed, completed, limited_events, None))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((tag, None, 0, 0, repr(exc)))
    finally:
        cache.close()


def _run_workers(
    url: str,
    prefix: str,
    n_events: int,
    *,
    processes: int = PROCESSES,
    store_dir: Path | None = None,
    explicit_load: bool = False,
) -> list[tuple[str, bool | None, int, int]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_worker,
            args=(
                url,
                prefix,
                None if store_dir is None else str(store_dir),
                n_events,
                f"w{i}",
                explicit_load,
                barrier,
                results,
            ),
        )
        for i in range(processes)
    ]
    for process in workers:
        process.start()
    reports = [results.get(timeout=240) for _ in workers]
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    errors = [r[4] for r in reports if r[4] is not None]
    assert errors == []
    return [
        (tag, installed, completed, limited) for tag, installed, completed, limited, _ in reports
    ]


def _tracker(name: str, target: int, limiters: list[Any] | None = None) -> CountTracker:
    return CountTracker(name, [KeyValueEQ("k", 1)], target, limiters=limiters or [])


def _install(cache: RedisDataCache, *trackers: CountTracker) -> None:
    assert cache.install_group(
        GROUP, [CachedTracker(t.definition, t.state.copy()) for t in trackers]
    )


@pytest.fixture
def cache(redis_url: str, redis_prefix: str) -> Any:
    cache = RedisDataCache(redis_url, redis_prefix)
    yield cache
    cache.close()


def _progress(cache: RedisDataCache, name: str) -> Any:
    group = cache.get_group(GROUP)
    assert group is not None
    return group.trackers[name].state


def test_exact_final_counts(cache: RedisDataCache, redis_url: str, redis_prefix: str) -> None:
    _install(cache, _tracker("count", 1_000_000), _tracker("other", 1_000_000))
    _run_workers(redis_url, redis_prefix, 150)
    assert _progress(cache, "count").progress == PROCESSES * 150
    assert _progress(cache, "other").progress == PROCESSES * 150


def test_count_limiter_admits_exactly_n(
    cache: RedisDataCache, redis_url: str, redis_prefix: str
) -> None:
    _install(cache, _tracker("capped", 1_000_000, [CountLimiter(37)]))
    reports = _run_workers(redis_url, redis_prefix, 30)
    state = _progress(cache, "capped")
    assert state.progress == 37
    assert state.limited and state.limits == [0]
    assert sum(r[3] for r in reports) == 1  # LIMITED fired once, by one worker


def test_completion_fires_all_completed_once(
    cache: RedisDataCache, redis_url: str, redis_prefix: str
) -> None:
    _install(cache, _tracker("goal", 50), _tracker("keep", 1_000_000))
    reports = _run_workers(redis_url, redis_prefix, 30)
    assert sum(r[2] for r in reports) == 1
    group = cache.get_group(GROUP)
    assert group is not None and list(group.trackers) == ["keep"]
    fired = [e for e in cache.outbox(10_000) if e.payload["code"] == EVENT_TRACKER_ALL_COMPLETED]
    assert len(fired) == 1 and fired[0].payload["name"] == "goal"
    assert fired[0].payload["progress"] == 50


@pytest.mark.parametrize("explicit_load", [True, False], ids=["load_group", "track"])
def test_cold_group_loads_once_and_loses_nothing(
    cache: RedisDataCache,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    explicit_load: bool,
) -> None:
    """The group is only in the (file) store; every worker starts cold at once."""
    store_dir = tmp_path / "store"
    store = FileDataStore(str(store_dir))
    tracker = _tracker("cold", 1_000_000)
    store.save([cache_to_record(GROUP, CachedTracker(tracker.definition, tracker.state), 1)])
    store.close()
    assert cache.get_group(GROUP) is None
    before_us = int(cache.now() * 1_000_000)
    processes = 8
    reports = _run_workers(
        redis_url,
        redis_prefix,
        25,
        processes=processes,
        store_dir=store_dir,
        explicit_load=explicit_load,
    )
    assert _progress(cache, "cold").progress == processes * 25
    group = cache.get_group(GROUP)
    # installed once, never replaced (no admin operation bumped it): a reading of
    # Redis TIME in microseconds taken during the test
    assert group is not None and before_us <= group.version <= int(cache.now() * 1_000_000)
    if explicit_load:
        assert sorted(r[1] for r in reports) == [False] * (processes - 1) + [True]


def test_prefix_is_private(redis_url: str) -> None:
    """Sanity check of the fixtures: a fresh prefix starts empty."""
    cache = RedisDataCache(redis_url, "t" + uuid.uuid4().hex[:8])
    assert cache.get_group(GROUP) is None and cache.dirty_groups() == []
    cache.close()
