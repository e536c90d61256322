"""TrackingManager: the seed's API, return shapes, events, errors, and bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tracking import (
    EVENT_ALL,
    EVENT_TRACKER_ADDED,
    EVENT_TRACKER_ALL_COMPLETED,
    EVENT_TRACKER_EXPIRED,
    EVENT_TRACKER_LIMITED,
    EVENT_TRACKER_REMOVED,
    EVENT_TRACKER_RESET,
    EVENT_TRACKER_STAGE_COMPLETED,
    AccumulationTracker,
    BaseEvent,
    ConflictingNameError,
    CountLimiter,
    CountTracker,
    GroupIdAlreadySetError,
    InvalidEventError,
    KeyValueEQ,
    MemoryDataCache,
    MemoryDataStore,
    ResetPolicy,
    StoreError,
    TrackerEvent,
    TrackingManager,
    TrackingTypeError,
    TrackingValueError,
    TrackResult,
)
from tracking.periods import ResetPeriod


class FakeClock:
    """A settable clock for the memory cache (the Redis cache uses Redis TIME)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(clock: FakeClock) -> TrackingManager:
    return TrackingManager(MemoryDataCache(clock=clock), MemoryDataStore())


def _events(manager: TrackingManager) -> list[BaseEvent]:
    events: list[BaseEvent] = []
    for code in EVENT_ALL:
        manager.add_listener(code, events.append)
    return events


def test_seed_quick_start(manager: TrackingManager) -> None:
    tracker = CountTracker(
        name="Demo-1", conditions=[KeyValueEQ(key="status", value="active")], target=10
    )
    group_id = "Robot001"
    manager.add_tracker(group_id=group_id, tracker=tracker)
    manager.track(group_id=group_id, data={"id": 1, "status": "active"})
    trackers = manager.get_trackers(group_id=group_id, name="Demo-1")
    assert len(trackers) == 1
    assert trackers[0].progress == 1 and trackers[0].group_id == "Robot001"
    assert repr(trackers[0]) == (
        "<CountTracker (target=10 conditions={<KeyValueEQ (key=status operator=eq "
        "value='active')>} limiters={} group_id=Robot001 name=Demo-1 progress=1)>"
    )


def test_track_until_target_fires_events_to_listeners(manager: TrackingManager) -> None:
    events = _events(manager)
    manager.add_tracker("g", CountTracker("t", [KeyValueEQ("status", "active")], [2, 3]))
    results = [manager.track("g", {"status": "active"}) for _ in range(3)]
    codes = [e.code for e in events]
    assert codes == [
        EVENT_TRACKER_ADDED,
        EVENT_TRACKER_STAGE_COMPLETED,
        EVENT_TRACKER_ALL_COMPLETED,
    ]
    ok, dirtied, completed, limited = results[-1]
    assert ok and len(dirtied) == 1 and completed[0].completed and limited == []
    assert completed[0].progress == 3
    # a completed tracker leaves the group's active trackers (dictrack's rule)
    assert manager.get_trackers("g") == []
    for event in events:
        assert isinstance(event, TrackerEvent) and event.group_id == "g"
        assert len(event.event_id) == 32
        assert event.to_dict()["tracker"]["type"] == "CountTracker"


def test_track_return_lists(manager: TrackingManager) -> None:
    manager.add_trackers(
        "g",
        [
            CountTracker("paid", [KeyValueEQ("status", "paid")], 10),
            CountTracker("limited", [KeyValueEQ("status", "paid")], 10, limiters=[CountLimiter(1)]),
            CountTracker("other", [KeyValueEQ("status", "new")], 10),
        ],
    )
    ok, dirtied, completed, limited = manager.track("g", {"status": "paid"})
    assert ok
    assert sorted(t.name for t in dirtied) == ["limited", "paid"]
    assert completed == []
    assert [t.name for t in limited] == ["limited"]
    _, dirtied, _, limited = manager.track("g", {"status": "paid"})
    assert [t.name for t in dirtied] == ["paid"]
    assert [t.name for t in limited] == ["limited"]


def test_duplicate_event_id_counts_once(manager: TrackingManager) -> None:
    events = _events(manager)
    manager.add_tracker("g", CountTracker("t", [], 2))
    first = manager.track("g", {}, event_id="evt-1")
    again = manager.track("g", {}, event_id="evt-1")
    assert not first.duplicate and again.duplicate
    # the original outcome's trackers, as they are now; no event fires again
    assert [t.progress for t in again.dirtied] == [1]
    assert again.events == []
    assert manager.get_trackers("g")[0].progress == 1
    manager.track("g", {}, event_id="evt-2")
    assert [e.code for e in events].count(EVENT_TRACKER_ALL_COMPLETED) == 1
    # the same id in another group is another event
    manager.add_tracker("h", CountTracker("t", [], 5))
    assert not manager.track("h", {}, event_id="evt-1").duplicate


def test_dedupe_window_expires(clock: FakeClock) -> None:
    manager = TrackingManager(MemoryDataCache(dedupe_window=60, clock=clock), MemoryDataStore())
    manager.add_tracker("g", CountTracker("t", [], 10))
    manager.track("g", {}, event_id="e")
    clock.now += 61
    assert not manager.track("g", {}, event_id="e").duplicate
    assert manager.get_trackers("g")[0].progress == 2


def test_add_tracker_conflict_changes_nothing(manager: TrackingManager) -> None:
    manager.add_tracker("g", CountTracker("t", [], 5))
    with pytest.raises(ConflictingNameError) as info:
        manager.add_trackers("g", [CountTracker("new", [], 5), CountTracker("t", [], 9)])
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert [t.name for t in manager.get_trackers("g")] == ["t"]
    assert manager.get_trackers("g")[0].target == 5


def test_add_tracker_sets_group_id_once(manager: TrackingManager) -> None:
    tracker = CountTracker("t", [], 5)
    manager.add_tracker("g1", tracker)
    assert tracker.group_id == "g1"
    with pytest.raises(GroupIdAlreadySetError):
        manager.add_tracker("g2", tracker)


def test_get_trackers_by_name_list_and_types(manager: TrackingManager) -> None:
    manager.add_trackers("g", [CountTracker(n, [], 5) for n in ("a", "b", "c")])
    assert [t.name for t in manager.get_trackers("g")] == ["a", "b", "c"]
    assert [t.name for t in manager.get_trackers("g", name=["c", "a", "zz"])] == ["c", "a"]
    assert manager.get_trackers("g", name="zz") == []
    assert manager.get_trackers("nobody") == []
    with pytest.raises(TrackingTypeError):
        manager.get_trackers("g", name=5)  # type: ignore[arg-type]


def test_update_tracker_replaces_definition_and_state(manager: TrackingManager) -> None:
    manager.add_tracker("g", CountTracker("t", [KeyValueEQ("k", 1)], 5))
    manager.track("g", {"k": 1})
    tracker = manager.get_trackers("g", "t")[0]
    tracker.progress = 3
    tracker.add_targets(10)
    manager.update_tracker("g", tracker)
    stored = manager.get_trackers("g", "t")[0]
    assert (stored.progress, stored.multi_target) == (3, [10])
    manager.track("g", {"k": 1})
    assert manager.get_trackers("g", "t")[0].progress == 4
    with pytest.raises(TrackingTypeError):
        manager.update_tracker("g", "t")  # type: ignore[arg-type]


def test_remove_tracker(manager: TrackingManager) -> None:
    events = _events(manager)
    manager.add_trackers("g", [CountTracker(n, [], 5) for n in ("a", "b", "c")])
    removed = manager.remove_tracker("g", "a")
    assert [t.name for t in removed] == ["a"]
    manager.remove_tracker("g", ["b", "zz"])
    assert [t.name for t in manager.get_trackers("g")] == ["c"]
    manager.remove_tracker("g")
    assert manager.get_trackers("g") == []
    assert [e.code for e in events].count(EVENT_TRACKER_REMOVED) == 3
    assert manager.data_store.load_group("g") == []
    with pytest.raises(TrackingTypeError):
        manager.remove_tracker("g", 3)  # type: ignore[arg-type]


def test_reset_tracker(manager: TrackingManager) -> None:
    events = _events(manager)
    manager.add_tracker("g", CountTracker("t", [], 5, limiters=[CountLimiter(2)]))
    for _ in range(3):
        manager.track("g", {})
    assert manager.get_trackers("g")[0].limited
    assert manager.reset_tracker("g", "t") is True  # default policy: LIMITER
    tracker = manager.get_trackers("g")[0]
    assert not tracker.limited and tracker.progress == 2
    assert manager.reset_tracker("g", "t", ResetPolicy.PROGRESS | ResetPolicy.LIMITER)
    assert manager.get_trackers("g")[0].progress == 0
    assert manager.reset_tracker("g", "missing") is False
    assert [e.code for e in events].count(EVENT_TRACKER_RESET) == 2
    with pytest.raises(TrackingValueError):
        manager.reset_tracker("g", "t", reset_policy=7)
    with pytest.raises(TrackingTypeError):
        manager.reset_tracker("g", 5)  # type: ignore[arg-type]


def test_expiry_sweep_fires_expired(manager: TrackingManager, clock: FakeClock) -> None:
    events = _events(manager)
    manager.add_tracker("g", CountTracker("short", [], 5), expire=60)
    manager.add_tracker("g", CountTracker("fixed", [], 5), expire_at=int(clock.now) + 120)
    manager.add_tracker("g", CountTracker("forever", [], 5))
    clock.now += 61
    manager.track("g", {})  # an expired tracker no longer counts, even before the sweep
    assert manager.get_trackers("g", "short") == []  # nor is it shown
    assert manager.data_cache.get_group("g").trackers["short"].state.progress == 0  # type: ignore[union-attr]
    swept = manager.sweep_expired()
    assert [(e.code, e.name) for e in swept] == [(EVENT_TRACKER_EXPIRED, "short")]
    clock.now += 60
    manager.sweep_expired()
    assert [t.name for t in manager.get_trackers("g")] == ["forever"]
    assert [e.code for e in events].count(EVENT_TRACKER_EXPIRED) == 2
    assert [r.name for r in manager.data_store.load_group("g")] == ["forever"]
    with pytest.raises(TrackingTypeError):
        manager.add_tracker("g", CountTracker("x", [], 5), expire="60")  # type: ignore[arg-type]
    with pytest.raises(TrackingValueError):
        manager.add_tracker("g", CountTracker("x", [], 5), expire=60, expire_at=100)


def test_listener_validation_and_failures(manager: TrackingManager) -> None:
    with pytest.raises(TrackingValueError):
        manager.add_listener(999, print)
    with pytest.raises(TrackingTypeError):
        manager.add_listener(EVENT_TRACKER_ADDED, "print")  # type: ignore[arg-type]

    def broken(event: BaseEvent) -> None:
        raise RuntimeError("listener bug")

    seen: list[BaseEvent] = []
    manager.add_listener(EVENT_TRACKER_ALL_COMPLETED, broken)
    manager.add_listener(EVENT_TRACKER_ALL_COMPLETED, seen.append)
    manager.add_tracker("g", CountTracker("t", [], 1))
    ok, *_ = manager.track("g", {})
    assert ok and len(seen) == 1  # a failing listener does not stop the others


def test_flush_needs_confirm(manager: TrackingManager) -> None:
    manager.add_tracker("g", CountTracker("t", [], 5))
    manager.flush()
    assert len(manager.get_trackers("g")) == 1
    manager.flush(confirm=True)
    assert manager.get_trackers("g") == []
    assert manager.data_store.group_ids() == []


def test_store_is_the_record_and_cache_reloads_from_it(clock: FakeClock) -> None:
    store = MemoryDataStore()
    first = TrackingManager(MemoryDataCache(clock=clock), store)
    first.add_tracker("g", AccumulationTracker("spend", [], 100, key="amount"))
    first.track("g", {"amount": 10})
    first.track("g", {"amount": 2.5})
    report = first.flush_dirty()
    assert report.flushed == ["g"] and not report.failed
    # a fresh cache (a restart, an eviction) reloads the group from the store
    second = TrackingManager(MemoryDataCache(clock=clock), store)
    assert second.get_trackers("g")[0].progress == 12.5
    second.track("g", {"amount": 1})
    assert second.get_trackers("g")[0].progress == 13.5


def test_write_through_persists_before_returning(clock: FakeClock) -> None:
    store = MemoryDataStore()
    manager = TrackingManager(MemoryDataCache(clock=clock), store, durability="write-through")
    manager.add_tracker("g", CountTracker("t", [], 5))
    manager.track("g", {})
    assert store.load_group("g")[0].state["progress"] == 1
    with pytest.raises(TrackingValueError):
        TrackingManager(MemoryDataCache(), store, durability="sometimes")  # type: ignore[arg-type]


BAD_EVENTS: list[Any] = [
    None,
    "status=paid",
    ["status", "paid"],
    {"x": float("nan")},
    {"x": float("inf")},
    {"x": {1, 2}},
    {"x": object()},
    {"x": "y" * 70_000},
]


@pytest.mark.parametrize("data", BAD_EVENTS, ids=range(len(BAD_EVENTS)))
def test_bad_event_data_is_refused_and_changes_nothing(manager: TrackingManager, data: Any) -> None:
    manager.add_tracker("g", CountTracker("t", [], 5))
    manager.track("g", {})
    with pytest.raises(InvalidEventError):
        manager.track("g", data)
    assert manager.get_trackers("g")[0].progress == 1


def test_too_deep_event_is_refused(manager: TrackingManager) -> None:
    data: dict[str, Any] = {}
    inner = data
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(InvalidEventError):
        manager.track("g", data)


@pytest.mark.parametrize("bad", [True, "7", float("nan"), float("inf"), 1e300, [5]])
def test_bad_accumulation_value_changes_no_tracker(manager: TrackingManager, bad: Any) -> None:
    manager.add_trackers(
        "g",
        [CountTracker("count", [], 5), AccumulationTracker("sum", [], 50, key="amount")],
    )
    with pytest.raises(InvalidEventError):
        manager.track("g", {"amount": bad})
    assert [t.progress for t in manager.get_trackers("g")] == [0, 0]


@pytest.mark.parametrize("group_id", ["", None, 5, "a\nb", "x" * 500])
def test_bad_group_ids(manager: TrackingManager, group_id: Any) -> None:
    with pytest.raises((TrackingTypeError, TrackingValueError)):
        manager.track(group_id, {})
    with pytest.raises((TrackingTypeError, TrackingValueError)):
        manager.add_tracker(group_id, CountTracker("t", [], 5))


def test_bad_manager_arguments(manager: TrackingManager) -> None:
    with pytest.raises(TrackingTypeError):
        TrackingManager("redis://", MemoryDataStore())  # type: ignore[arg-type]
    with pytest.raises(TrackingTypeError):
        manager.add_trackers("g", CountTracker("t", [], 5))  # type: ignore[arg-type]
    with pytest.raises(TrackingTypeError):
        manager.add_tracker("g", {"type": "CountTracker"})  # type: ignore[arg-type]
    with pytest.raises(TrackingValueError):
        manager.add_trackers("g", [CountTracker("t", [], 5), CountTracker("t", [], 6)])
    assert manager.get_trackers("g") == []
    with pytest.raises((TrackingTypeError, TrackingValueError)):
        manager.track("g", {}, event_id="")


def test_limited_event_names_the_limiter(manager: TrackingManager) -> None:
    limited: list[BaseEvent] = []
    manager.add_listener(EVENT_TRACKER_LIMITED, limited.append)
    manager.add_tracker("g", CountTracker("t", [], 5, limiters=[CountLimiter(1)]))
    manager.track("g", {})
    assert len(limited) == 1
    assert limited[0].to_dict()["limiter"] == {"type": "CountLimiter", "count": 1}


def test_outbox_holds_every_fired_event_once(manager: TrackingManager) -> None:
    events = _events(manager)
    manager.add_tracker("g", CountTracker("t", [], [1, 2]))
    manager.track("g", {}, event_id="a")
    manager.track("g", {}, event_id="a")
    manager.track("g", {}, event_id="b")
    outbox = manager.data_cache.outbox()
    assert [e.payload["code"] for e in outbox] == [e.code for e in events]
    assert [e.entry_id for e in outbox] == [e.event_id for e in events]
    manager.data_cache.ack_outbox(outbox)
    assert manager.data_cache.outbox() == []


def test_duplicate_after_a_definition_change_shows_current_trackers(
    manager: TrackingManager,
) -> None:
    manager.add_tracker("g", CountTracker("t", [], 10, limiters=[CountLimiter(5)]))
    manager.track("g", {}, event_id="e1")
    manager.update_tracker("g", CountTracker("t", [], 10))  # the limiter is gone
    again = manager.track("g", {}, event_id="e1")
    assert again.duplicate and [t.limiters for t in again.dirtied] == [[]]


def test_cold_load_installs_and_counts(clock: FakeClock) -> None:
    store = MemoryDataStore()
    TrackingManager(MemoryDataCache(clock=clock), store).add_tracker("g", CountTracker("t", [], 10))
    fresh = TrackingManager(MemoryDataCache(clock=clock), store)
    ok, dirtied, _, _ = fresh.track("g", {})
    assert ok and [t.progress for t in dirtied] == [1]


def test_store_outage_on_cold_load_raises_and_applies_nothing(clock: FakeClock) -> None:
    store = MemoryDataStore()
    TrackingManager(MemoryDataCache(clock=clock), store).add_tracker("g", CountTracker("t", [], 9))
    down = True

    class FlakyStore(MemoryDataStore):
        def load_group(self, group_id: str, now: float | None = None) -> list[Any]:
            if down:
                raise StoreError("store is down")
            return store.load_group(group_id, now)

    cache = MemoryDataCache(clock=clock)
    manager = TrackingManager(cache, FlakyStore())
    # Not acknowledged: the caller (the task) retries instead of losing the event.
    with pytest.raises(StoreError, match="store is down"):
        manager.track("g", {}, "e1")
    with pytest.raises(StoreError, match="store is down"):
        manager.track_many([("g", {}, "e2")])
    assert cache.get_group("g") is None
    down = False
    assert manager.track("g", {}, "e1").ok and manager.track_many([("g", {}, "e2")])
    assert [t.progress for t in manager.get_trackers("g")] == [2]


def test_periodic_tracker_rolls_over_in_the_cache(clock: FakeClock) -> None:
    clock.now = datetime(2026, 11, 23, 23, 0, tzinfo=UTC).timestamp()
    manager = TrackingManager(MemoryDataCache(clock=clock), MemoryDataStore())
    events = _events(manager)
    daily = ResetPeriod("day", "00:00", "UTC")
    manager.add_tracker("g", CountTracker("quest", [], 2, reset_period=daily))
    manager.track("g", {})
    manager.track("g", {})
    [quest] = manager.get_trackers("g")
    assert quest.completed  # periodic: it stays in the group, waiting for the next day
    clock.now += 3600
    assert not manager.get_trackers("g")[0].completed  # reads show the new period
    assert manager.reset_due() and manager.reset_due() == []  # once per period
    assert [e.code for e in events].count(EVENT_TRACKER_RESET) == 1
    manager.track("g", {})
    assert manager.get_trackers("g")[0].progress == 1


def test_evict_flushes_first_and_reloads(manager: TrackingManager) -> None:
    manager.add_tracker("g", CountTracker("t", [], 10))
    manager.track("g", {})
    assert not manager.evict("g")  # the ADDED event is still in the outbox
    manager.data_cache.ack_outbox(manager.data_cache.outbox())
    assert manager.evict("g")
    assert manager.data_cache.get_group("g") is None
    assert manager.data_store.load_group("g")[0].state["progress"] == 1
    manager.track("g", {})
    assert manager.get_trackers("g")[0].progress == 2


def test_reloaded_group_never_meets_a_workers_old_definitions(clock: FakeClock) -> None:
    """Definitions a worker cached before an eviction are never used after the reload.

    Worker A caches the group's definitions; worker B removes the tracker's
    condition, evicts the group and reloads it (with one more change). Were
    versions to restart at 1, the reloaded group would reach A's cached
    version again and A would evaluate with the removed condition.
    """
    cache, store = MemoryDataCache(clock=clock), MemoryDataStore()
    a, b = TrackingManager(cache, store), TrackingManager(cache, store)
    a.add_tracker("g", CountTracker("t", [KeyValueEQ("s", "paid")], 10))
    a.track("g", {"s": "paid"})  # A now holds the definitions with the condition
    cached = cache.get_definitions("g")
    assert cached is not None
    b.update_tracker("g", CountTracker("t", [], 10))  # the condition is gone
    cache.ack_outbox(cache.outbox())
    assert b.evict("g")
    b.add_tracker("g", CountTracker("u", [], 10))  # reloads, then bumps the version
    reloaded = cache.get_definitions("g")
    assert reloaded is not None and reloaded[0] > cached[0]
    a.track("g", {"s": "new"})  # counts for t only without the condition
    assert {t.name: t.progress for t in a.get_trackers("g")} == {"t": 1, "u": 1}


def test_track_many_matches_track_one_by_one(clock: FakeClock) -> None:
    def build() -> TrackingManager:
        manager = TrackingManager(MemoryDataCache(clock=clock), MemoryDataStore())
        manager.add_tracker("a", CountTracker("paid", [KeyValueEQ("s", "paid")], [2, 4]))
        manager.add_tracker("b", AccumulationTracker("sum", [], 10, key="n"))
        return manager

    batch: list[tuple[str, dict[str, Any], str | None]] = [
        ("a", {"s": "paid"}, "e1"),
        ("b", {"n": 4}, "e2"),
        ("a", {"s": "paid"}, "e3"),
        ("a", {"s": "new"}, "e4"),
        ("b", {"n": "x"}, "e5"),  # bad: only this one fails
        ("cold", {}, "e6"),  # a group nobody cached yet
        ("a", {"s": "paid"}, "e1"),  # a duplicate within the batch
        ("b", {"n": 7}, None),
    ]
    one_by_one = build()
    expected = []
    for group_id, data, event_id in batch:
        try:
            expected.append(one_by_one.track(group_id, data, event_id))
        except InvalidEventError as exc:
            expected.append(exc)  # type: ignore[arg-type]
    batched = build()
    got = batched.track_many(batch)
    assert len(got) == len(batch)
    for mine, theirs in zip(got, expected, strict=True):
        if isinstance(theirs, Exception):
            assert isinstance(mine, InvalidEventError)
            continue
        assert isinstance(mine, TrackResult)
        assert mine.duplicate == theirs.duplicate
        assert [(t.name, t.progress) for t in mine.dirtied] == [
            (t.name, t.progress) for t in theirs.dirtied
        ]
        assert [e.code for e in mine.events] == [e.code for e in theirs.events]
    for group_id in ("a", "b"):
        assert batched.get_trackers(group_id) == one_by_one.get_trackers(group_id)
    assert [t.progress for t in batched.get_trackers("a")] == [2]
    assert batched.get_trackers("b") == []  # 4 + 7 reached 10: completed, left the group


def test_track_many_retries_after_a_definition_change(manager: TrackingManager) -> None:
    manager.add_tracker("g", CountTracker("t", [], 100))
    manager.track("g", {})  # the manager now holds g's definitions
    other = TrackingManager(manager.data_cache, manager.data_store)
    other.add_tracker("g", CountTracker("new", [], 100))  # another worker bumps the version
    results = manager.track_many([("g", {}, None), ("g", {}, None)])
    assert all(isinstance(r, TrackResult) and r.ok for r in results)
    assert [t.progress for t in manager.get_trackers("g")] == [3, 2]
