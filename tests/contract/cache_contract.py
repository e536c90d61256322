"""Backend-agnostic contract every :class:`~tracking.cache.base.DataCache` must meet.

Use it by subclassing and providing a ``cache_factory`` fixture returning a
:class:`CacheFactory`::

    class TestMyCache(CacheContract):
        @pytest.fixture
        def cache_factory(self) -> Iterator[CacheFactory]:
            factory = MyFactory(...)
            yield factory
            factory.cleanup()

``factory.new(**options)`` gives a cache over a fresh, empty namespace
(options: ``dedupe_window``, ``dedupe_max_entries``); ``factory.peer(cache)``
gives another handle on the same data, as a second worker would have it.

Only the public interface is used. Nothing depends on the order of groups
across the cross-group sweeps (``dirty_groups``, ``outbox``, ``expire``),
only on the order within one group, and nothing asserts on durations.
"""

from __future__ import annotations

import abc
import time
from typing import Any

import pytest

from tracking.cache.base import ApplyOutcome, ApplyRequest, CachedTracker, DataCache, TrackStep
from tracking.conditions import KeyValueEQ
from tracking.engine import Fired
from tracking.errors import ConflictingNameError
from tracking.events import (
    EVENT_TRACKER_ADDED,
    EVENT_TRACKER_ALL_COMPLETED,
    EVENT_TRACKER_EXPIRED,
    EVENT_TRACKER_LIMITED,
    EVENT_TRACKER_REMOVED,
    EVENT_TRACKER_RESET,
    EVENT_TRACKER_STAGE_COMPLETED,
    make_event_id,
)
from tracking.limiters import BaseLimiter, CountLimiter, TimeLimiter
from tracking.model import Number, ResetPolicy, TrackerDefinition, TrackerState
from tracking.periods import ResetPeriod
from tracking.trackers import AccumulationTracker, CountTracker

G = "group-1"


class CacheFactory(abc.ABC):
    """Makes caches for the contract: fresh namespaces, and peers of a cache."""

    @abc.abstractmethod
    def new(self, **options: Any) -> DataCache:
        """A cache over a fresh, empty namespace."""

    @abc.abstractmethod
    def peer(self, cache: DataCache) -> DataCache:
        """Another handle on ``cache``'s data (a second worker)."""


def count_def(
    name: str,
    targets: Number | list[Number] = 3,
    *,
    limiters: list[BaseLimiter] | None = None,
    policy: ResetPolicy = ResetPolicy.DEFAULT,
    loop_forever: bool = False,
) -> TrackerDefinition:
    return CountTracker(
        name,
        [KeyValueEQ("k", 1)],
        targets,
        limiters=limiters or [],
        reset_policy=policy,
        loop_forever=loop_forever,
    ).definition


def periodic_def(
    name: str,
    targets: Number | list[Number] = 3,
    *,
    limiters: list[BaseLimiter] | None = None,
    period: ResetPeriod | None = None,
) -> TrackerDefinition:
    """A count tracker that resets daily (default period policy: progress and limiters)."""
    return CountTracker(
        name,
        [KeyValueEQ("k", 1)],
        targets,
        limiters=limiters or [],
        reset_period=period or ResetPeriod("day"),
    ).definition


def bounds_around(cache: DataCache) -> tuple[int, int, int, int]:
    """Four period starts, all before the cache's clock, and an end well after it.

    Apply only checks that its clock lies inside each bound and rolls a
    tracker whose period started earlier, so ``(s1, end)``, ``(s2, end)``,
    ... behave as consecutive periods that all contain ``now``.
    """
    now = int(cache.now())
    return now - 4000, now - 3000, now - 2000, now + 3600


def acc_def(name: str, target: Number | list[Number] = 10) -> TrackerDefinition:
    return AccumulationTracker(name, [], target, "amount").definition


def fresh(definition: TrackerDefinition, expire_at: float | None = None) -> CachedTracker:
    return CachedTracker(definition, definition.initial_state(), expire_at)


def install(cache: DataCache, *definitions: TrackerDefinition, group: str = G) -> int:
    assert cache.install_group(group, [fresh(d) for d in definitions])
    group_obj = cache.get_group(group)
    assert group_obj is not None
    return group_obj.version


def state_of(cache: DataCache, name: str, group: str = G) -> TrackerState | None:
    group_obj = cache.get_group(group)
    assert group_obj is not None
    tracker = group_obj.trackers.get(name)
    return None if tracker is None else tracker.state


def outbox_of(cache: DataCache, group: str = G) -> list[dict[str, object]]:
    return [e.payload for e in cache.outbox(10_000) if e.group_id == group]


class CacheContract:
    """Test methods shared by every cache backend; needs a ``cache_factory`` fixture."""

    @pytest.fixture
    def cache(self, cache_factory: CacheFactory) -> DataCache:
        return cache_factory.new()

    # -- reads and installation ----------------------------------------------

    def test_now_is_a_float(self, cache: DataCache) -> None:
        assert isinstance(cache.now(), float)
        assert cache.now() > 1_600_000_000

    def test_unknown_group(self, cache: DataCache) -> None:
        assert cache.get_group("nope") is None
        assert cache.get_definitions("nope") is None
        outcome = cache.apply("nope", 1, [TrackStep(count_def("a"), 1)], "e1")
        assert outcome.status == "missing"

    def test_install_only_if_absent(self, cache: DataCache) -> None:
        a, b = count_def("a"), acc_def("b")
        state = TrackerState(progress=0.5, stage=0, limits=[])
        version = cache.install_group(G, [fresh(a), CachedTracker(b, state, 2_000_000_000.5)])
        assert version
        assert cache.install_group(G, [fresh(count_def("other"))]) == 0
        group = cache.get_group(G)
        assert group is not None
        assert group.version == version
        assert list(group.trackers) == ["a", "b"]
        assert group.trackers["a"].definition == a
        assert group.trackers["b"].state == state
        assert group.trackers["b"].expire_at == 2_000_000_000.5
        assert cache.get_definitions(G) == (version, [a, b])
        assert cache.dirty_groups() == []

    def test_install_keeps_state_types_exactly(self, cache: DataCache) -> None:
        d = count_def(
            "a", [5, 9.5], limiters=[CountLimiter(3), TimeLimiter(0, interval=None, end_ts=10)]
        )
        state = TrackerState(
            progress=0.1 + 0.2, stage=1, completed=False, limited=True, limits=[2, 5.25], period=7
        )
        cache.install_group(G, [CachedTracker(d, state)])
        got = state_of(cache, "a")
        assert got == state
        assert got is not None
        assert isinstance(got.progress, float) and got.progress == 0.30000000000000004
        assert isinstance(got.limits[0], int) and isinstance(got.limits[1], float)
        assert got.period == 7

    def test_install_reports_its_version(self, cache_factory: CacheFactory) -> None:
        cache = cache_factory.new()
        peer = cache_factory.peer(cache)
        a = count_def("a")
        before = int(cache.now() * 1_000_000)
        installed = cache.install_group(G, [fresh(a)])
        # the cache's clock in microseconds (allowing for float rounding)
        assert before - 1 <= installed <= int(cache.now() * 1_000_000) + 1
        assert peer.get_definitions(G) == (installed, [a])
        assert cache.apply(G, installed, [TrackStep(a, 1)], "e1").status == "applied"
        version, _ = cache.put_trackers(G, [fresh(count_def("b"))], "admin")
        assert version == installed + 1
        assert peer.install_group(G, [fresh(a)]) == 0
        assert cache.get_definitions(G) == (installed + 1, [a, count_def("b")])

    def test_reinstall_never_repeats_an_earlier_version(self, cache_factory: CacheFactory) -> None:
        """A group evicted and installed again must not get a version the old one had.

        A worker caches definitions with their version and apply only checks
        that version: a repeat would make it evaluate against definitions
        that an update before the eviction replaced.
        """
        cache = cache_factory.new()
        peer = cache_factory.peer(cache)
        a, b = count_def("a"), count_def("b")
        first = cache.install_group(G, [fresh(a), fresh(b)])
        cache.remove_trackers(G, ["b"], "admin")  # bumps the version
        removed = cache.get_definitions(G)
        assert removed is not None and removed[0] > first
        for entry in cache.dirty_groups():
            snapshot = cache.dirty_snapshot(entry)
            assert snapshot is not None and cache.clear_dirty(entry, snapshot.mark)
        cache.ack_outbox(cache.outbox(100))
        assert peer.evict_group(G)
        again = peer.install_group(G, [fresh(a)])
        assert again > removed[0]
        for old in (first, removed[0]):
            assert cache.apply(G, old, [TrackStep(b, 1)], "e1").status == "stale"
        assert cache.apply(G, again, [TrackStep(a, 1)], "e1").status == "applied"

    def test_empty_group_is_installed(self, cache: DataCache) -> None:
        version = cache.install_group(G, [])
        assert version
        assert cache.get_definitions(G) == (version, [])
        outcome = cache.apply(G, version, [], "e1")
        assert outcome.status == "applied"
        assert outcome.states == {} and outcome.fired == []

    # -- apply ---------------------------------------------------------------------

    def test_apply_counts_and_reports(self, cache: DataCache) -> None:
        a, b = count_def("a", 3), count_def("b", 3)
        version = install(cache, a, b)
        outcome = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert outcome.status == "applied"
        assert outcome.version == version
        assert outcome.now > 0
        assert outcome.changed == ["a"]
        assert outcome.limited == [] and outcome.completed == [] and outcome.fired == []
        assert outcome.states == {"a": TrackerState(progress=1)}
        assert state_of(cache, "a") == TrackerState(progress=1)
        assert state_of(cache, "b") == TrackerState(progress=0)

    def test_stale_version_changes_nothing(self, cache: DataCache) -> None:
        a = count_def("a")
        version = install(cache, a)
        outcome = cache.apply(G, version + 5, [TrackStep(a, 1)], "e1")
        assert outcome.status == "stale"
        assert outcome.version == version
        assert state_of(cache, "a") == TrackerState(progress=0)
        # the event id was not consumed: the retry with the right version applies
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "applied"

    def test_peer_change_makes_apply_stale(self, cache_factory: CacheFactory) -> None:
        cache = cache_factory.new()
        peer = cache_factory.peer(cache)
        a = count_def("a")
        version = install(cache, a)
        new_version, _ = peer.put_trackers(G, [fresh(count_def("b"))], "admin-1")
        assert new_version == version + 1
        outcome = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert outcome.status == "stale" and outcome.version == new_version
        assert cache.get_definitions(G) == (new_version, [a, count_def("b")])

    def test_steps_for_unknown_trackers_are_skipped(self, cache: DataCache) -> None:
        a = count_def("a")
        version = install(cache, a)
        outcome = cache.apply(G, version, [TrackStep(count_def("ghost"), 1), TrackStep(a, 1)], "e1")
        assert outcome.changed == ["a"]
        assert list(outcome.states) == ["a"]

    def test_stages_fire_and_follow_reset_policy(self, cache: DataCache) -> None:
        keep = count_def("keep", [2, 3, 10])
        clear = count_def("clear", [2, 3], policy=ResetPolicy.PROGRESS)
        version = install(cache, keep, clear)
        steps = [TrackStep(keep, 1), TrackStep(clear, 1)]
        cache.apply(G, version, steps, "e1")
        outcome = cache.apply(G, version, steps, "e2")
        # keep: progress 2 passes stage 0 (target 2); stays at 2 (< 3)
        # clear: progress 2 passes stage 0 and restarts from 0
        assert outcome.fired == [
            Fired(EVENT_TRACKER_STAGE_COMPLETED, "keep", 0, 2),
            Fired(EVENT_TRACKER_STAGE_COMPLETED, "clear", 0, 2),
        ]
        assert outcome.states["keep"] == TrackerState(progress=2, stage=1)
        assert outcome.states["clear"] == TrackerState(progress=0, stage=1)
        outcome = cache.apply(G, version, [TrackStep(keep, 5)], "e3")
        # 7 passes target 3 of stage 1 (one event may cross several stages)
        assert outcome.fired == [Fired(EVENT_TRACKER_STAGE_COMPLETED, "keep", 1, 7)]
        assert outcome.states["keep"] == TrackerState(progress=7, stage=2)

    def test_completion_removes_the_tracker(self, cache: DataCache) -> None:
        a, b = count_def("a", [1, 2]), count_def("b", 5)
        version = install(cache, a, b)
        cache.apply(G, version, [TrackStep(a, 1)], "e1")
        outcome = cache.apply(G, version, [TrackStep(a, 1), TrackStep(b, 1)], "e2")
        assert outcome.completed == ["a"]
        assert outcome.changed == ["a", "b"]
        assert outcome.fired == [Fired(EVENT_TRACKER_ALL_COMPLETED, "a", 1, 2)]
        assert outcome.states["a"] == TrackerState(progress=2, stage=1, completed=True)
        group = cache.get_group(G)
        assert group is not None and list(group.trackers) == ["b"]
        assert group.version == version  # completion is not a definitions change
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None and snapshot.removed == ["a"]
        later = cache.apply(G, version, [TrackStep(a, 1)], "e3")
        assert later.states == {} and later.changed == []

    def test_loop_forever_fires_once_per_event(self, cache: DataCache) -> None:
        a = count_def("a", 2, loop_forever=True, policy=ResetPolicy.ALL)
        version = install(cache, a)
        fired = []
        for i in range(6):
            fired += cache.apply(G, version, [TrackStep(a, 1)], f"e{i}").fired
        assert fired == [Fired(EVENT_TRACKER_STAGE_COMPLETED, "a", 0, 2)] * 3
        assert state_of(cache, "a") == TrackerState(progress=0)
        # without PROGRESS in the policy, each further event fires once more
        b = count_def("b", 2, loop_forever=True)
        version, _ = cache.put_trackers(G, [fresh(b)], "admin")
        outcomes = [cache.apply(G, version, [TrackStep(b, 1)], f"f{i}") for i in range(4)]
        assert [len(o.fired) for o in outcomes] == [0, 1, 1, 1]
        assert state_of(cache, "b") == TrackerState(progress=4)

    def test_count_limiter_admits_exactly_n(self, cache: DataCache) -> None:
        a = count_def("a", 100, limiters=[CountLimiter(3)])
        version = install(cache, a)
        outcomes = [cache.apply(G, version, [TrackStep(a, 1)], f"e{i}") for i in range(5)]
        assert [o.changed for o in outcomes] == [["a"], ["a"], ["a"], [], []]
        assert [o.limited for o in outcomes] == [[], [], ["a"], ["a"], ["a"]]
        assert outcomes[2].fired == [Fired(EVENT_TRACKER_LIMITED, "a", 0, 3, 0)]
        assert outcomes[3].fired == [] and outcomes[4].fired == []
        assert state_of(cache, "a") == TrackerState(progress=3, limited=True, limits=[0])

    def test_limiter_refilled_by_stage_with_limiter_policy(self, cache: DataCache) -> None:
        a = count_def("a", [2, 100], limiters=[CountLimiter(2)])
        version = install(cache, a)
        outcomes = [cache.apply(G, version, [TrackStep(a, 1)], f"e{i}") for i in range(3)]
        # the second event completes stage 0 and refills the limiter: no LIMITED
        assert outcomes[1].fired == [Fired(EVENT_TRACKER_STAGE_COMPLETED, "a", 0, 2)]
        assert outcomes[2].states["a"] == TrackerState(progress=3, stage=1, limits=[1])

    def test_closed_time_window_refuses(self, cache: DataCache) -> None:
        past = TimeLimiter(start_ts=1_000_000, interval=None, end_ts=1_000_100)
        a = count_def("a", 5, limiters=[past])
        version = install(cache, a)
        first = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        second = cache.apply(G, version, [TrackStep(a, 1)], "e2")
        assert first.changed == ["a"] and first.limited == ["a"]
        assert first.fired == [Fired(EVENT_TRACKER_LIMITED, "a", 0, 0, 0)]
        assert second.changed == [] and second.limited == ["a"] and second.fired == []
        assert state_of(cache, "a") == TrackerState(progress=0, limited=True, limits=[1_000_000])

    def test_open_time_window_admits(self, cache: DataCache) -> None:
        window = TimeLimiter(start_ts=1_000_000, interval=None, end_ts=4_000_000_000)
        a = count_def("a", 5, limiters=[window])
        version = install(cache, a)
        outcome = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert outcome.changed == ["a"] and outcome.limited == []

    def test_float_and_int_arithmetic_is_exact(self, cache: DataCache) -> None:
        a = acc_def("a", 1_000_000)
        version = install(cache, a)
        cache.apply(G, version, [TrackStep(a, 1)], "e1")
        got = state_of(cache, "a")
        assert got is not None and got.progress == 1 and isinstance(got.progress, int)
        cache.apply(G, version, [TrackStep(a, 0.1)], "e2")
        cache.apply(G, version, [TrackStep(a, 0.2)], "e3")
        got = state_of(cache, "a")
        assert got is not None and isinstance(got.progress, float)
        assert got.progress == 1 + 0.1 + 0.2
        cache.apply(G, version, [TrackStep(a, 1e-17)], "e4")
        cache.apply(G, version, [TrackStep(a, -3)], "e5")
        got = state_of(cache, "a")
        assert got is not None and got.progress == 1 + 0.1 + 0.2 + 1e-17 - 3

    def test_expired_tracker_is_skipped(self, cache: DataCache) -> None:
        a, b = count_def("a"), count_def("b")
        now = cache.now()
        version = cache.install_group(G, [fresh(a, now - 10), fresh(b, now + 86400)])
        outcome = cache.apply(G, version, [TrackStep(a, 1), TrackStep(b, 1)], "e1")
        assert list(outcome.states) == ["b"]

    # -- dedupe --------------------------------------------------------------------

    def test_duplicate_returns_names_and_current_states(self, cache: DataCache) -> None:
        a, b = count_def("a", [1, 5]), count_def("b", 9)
        version = install(cache, a, b)
        original = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert original.fired == [Fired(EVENT_TRACKER_STAGE_COMPLETED, "a", 0, 1)]
        before = cache.get_group(G)
        outbox_before = outbox_of(cache)
        again = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert again.status == "duplicate"
        assert again.version == version and again.now >= original.now
        assert (again.changed, again.limited, again.completed) == (
            original.changed,
            original.limited,
            original.completed,
        )
        assert again.states == original.states
        assert again.fired == []  # the original events are in the outbox already
        assert cache.get_group(G) == before
        assert outbox_of(cache) == outbox_before
        # the states are the current ones, not the original ones
        cache.apply(G, version, [TrackStep(a, 1)], "e2")
        again = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert again.status == "duplicate" and again.changed == ["a"]
        assert again.states == {"a": TrackerState(progress=2, stage=1)}
        # a duplicate is recognised even after the definitions moved on
        new_version, _ = cache.put_trackers(G, [fresh(count_def("z"))], "admin")
        again = cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert again.status == "duplicate" and again.version == new_version

    def test_duplicate_after_a_definition_change(self, cache: DataCache) -> None:
        """The digest holds names only, so a changed or removed tracker cannot break it."""
        a = count_def("a", 100, limiters=[CountLimiter(1), CountLimiter(5)])
        b = count_def("b", 1)
        version = install(cache, a, b)
        first = cache.apply(G, version, [TrackStep(a, 1), TrackStep(b, 1)], "e1")
        assert (first.changed, first.limited, first.completed) == (["a", "b"], ["a"], ["b"])
        replaced = count_def("a", 100)  # no limiters any more
        version, _ = cache.put_trackers(
            G, [CachedTracker(replaced, TrackerState(progress=7))], "admin", replace=True
        )
        again = cache.apply(G, version, [TrackStep(replaced, 1)], "e1")
        assert again.status == "duplicate" and again.version == version
        assert (again.changed, again.limited, again.completed) == (["a", "b"], ["a"], ["b"])
        # b completed and left the group: only a's current state is shown
        assert again.states == {"a": TrackerState(progress=7)}
        cache.remove_trackers(G, ["a"], "admin-2")
        gone = cache.apply(G, version, [], "e1")
        assert gone.status == "duplicate" and gone.states == {}

    def test_event_ids_are_per_group(self, cache: DataCache) -> None:
        a = count_def("a")
        v1 = install(cache, a, group="g1")
        v2 = install(cache, a, group="g2")
        assert cache.apply("g1", v1, [TrackStep(a, 1)], "e1").status == "applied"
        assert cache.apply("g2", v2, [TrackStep(a, 1)], "e1").status == "applied"

    def test_dedupe_is_bounded_by_count(self, cache_factory: CacheFactory) -> None:
        cache = cache_factory.new(dedupe_max_entries=2)
        a = count_def("a", 100)
        version = install(cache, a)
        for event_id in ("e1", "e2", "e3"):
            assert cache.apply(G, version, [TrackStep(a, 1)], event_id).status == "applied"
        assert cache.apply(G, version, [TrackStep(a, 1)], "e3").status == "duplicate"
        assert cache.apply(G, version, [TrackStep(a, 1)], "e2").status == "duplicate"
        # e1 was the oldest of three: forgotten, so it counts again
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "applied"
        assert state_of(cache, "a") == TrackerState(progress=4)

    def test_dedupe_is_bounded_by_window(self, cache_factory: CacheFactory) -> None:
        cache = cache_factory.new(dedupe_window=0.05)
        a = count_def("a", 100)
        version = install(cache, a)
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "applied"
        start = cache.now()
        while cache.now() <= start + 0.1:  # let the window pass (no timing is asserted)
            time.sleep(0.02)
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "applied"
        assert state_of(cache, "a") == TrackerState(progress=2)

    def test_reapplied_event_id_is_remembered_as_the_newest(
        self, cache_factory: CacheFactory
    ) -> None:
        """An id applied again after its window is the newest record, not the oldest."""
        cache = cache_factory.new(dedupe_window=0.05, dedupe_max_entries=2)
        a = count_def("a", 100)
        version = install(cache, a)
        for event_id in ("e1", "e2"):
            assert cache.apply(G, version, [TrackStep(a, 1)], event_id).status == "applied"
        start = cache.now()
        while cache.now() <= start + 0.1:  # let the window pass (no timing is asserted)
            time.sleep(0.02)
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "applied"
        assert cache.apply(G, version, [TrackStep(a, 1)], "e3").status == "applied"
        # the newest two are e1 (again) and e3
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "duplicate"
        assert cache.apply(G, version, [TrackStep(a, 1)], "e3").status == "duplicate"
        assert state_of(cache, "a") == TrackerState(progress=4)

    # -- outbox ----------------------------------------------------------------------

    def test_outbox_has_deterministic_ids_and_payloads(self, cache: DataCache) -> None:
        a = count_def("a", [1, 2])
        version = install(cache, a)
        cache.apply(G, version, [TrackStep(a, 1)], "e1")
        cache.apply(G, version, [TrackStep(a, 1)], "e2", source_id="task-7")
        entries = [e for e in cache.outbox(100) if e.group_id == G]
        assert [e.entry_id for e in entries] == [
            make_event_id("e1", G, "a", EVENT_TRACKER_STAGE_COMPLETED, 0),
            make_event_id("task-7", G, "a", EVENT_TRACKER_ALL_COMPLETED, 0),
        ]
        first = entries[0].payload
        assert first["event_id"] == entries[0].entry_id
        assert {k: v for k, v in first.items() if k != "event_ts"} == {
            "event_id": entries[0].entry_id,
            "group_id": G,
            "code": EVENT_TRACKER_STAGE_COMPLETED,
            "name": "a",
            "stage": 0,
            "progress": 1,
            "limiter": None,
        }
        assert isinstance(first["event_ts"], float)
        cache.ack_outbox(entries[:1])
        assert [e.entry_id for e in cache.outbox(100)] == [entries[1].entry_id]
        cache.ack_outbox(entries)
        assert cache.outbox(100) == []

    def test_outbox_index_of_several_events_in_one_apply(self, cache: DataCache) -> None:
        a, b = count_def("a", 1), count_def("b", 1, limiters=[CountLimiter(1)])
        version = install(cache, a, b)
        outcome = cache.apply(G, version, [TrackStep(a, 1), TrackStep(b, 1)], "e1")
        assert [f.code for f in outcome.fired] == [
            EVENT_TRACKER_ALL_COMPLETED,
            EVENT_TRACKER_ALL_COMPLETED,
        ]
        ids = [e.entry_id for e in cache.outbox(100)]
        assert ids == [
            make_event_id("e1", G, "a", EVENT_TRACKER_ALL_COMPLETED, 0),
            make_event_id("e1", G, "b", EVENT_TRACKER_ALL_COMPLETED, 1),
        ]

    def test_outbox_limit(self, cache: DataCache) -> None:
        defs = [count_def(f"t{i}", 1) for i in range(5)]
        version = install(cache, *defs)
        cache.apply(G, version, [TrackStep(d, 1) for d in defs], "e1")
        assert len(cache.outbox(3)) == 3
        assert len(cache.outbox(100)) == 5

    # -- administration --------------------------------------------------------------

    def test_put_trackers_adds_and_bumps_version(self, cache: DataCache) -> None:
        a, b = count_def("a"), count_def("b")
        before = int(cache.now() * 1_000_000)
        version, fired = cache.put_trackers(G, [fresh(a), fresh(b)], "admin-1")
        # created at a fresh version (the clock in microseconds), then bumped
        assert version >= before
        assert cache.get_definitions(G) == (version, [a, b])
        assert fired == [
            Fired(EVENT_TRACKER_ADDED, "a", 0, 0),
            Fired(EVENT_TRACKER_ADDED, "b", 0, 0),
        ]
        assert [e.entry_id for e in cache.outbox(100)] == [
            make_event_id("admin-1", G, "a", EVENT_TRACKER_ADDED, 0),
            make_event_id("admin-1", G, "b", EVENT_TRACKER_ADDED, 1),
        ]
        assert G in cache.dirty_groups()

    def test_put_trackers_conflict_changes_nothing(self, cache: DataCache) -> None:
        a, b = count_def("a"), count_def("b")
        version, _ = cache.put_trackers(G, [fresh(a)], "admin-1")
        before, outbox_before = cache.get_group(G), outbox_of(cache)
        with pytest.raises(ConflictingNameError) as info:
            cache.put_trackers(G, [fresh(b), fresh(count_def("a", 9))], "admin-2")
        assert info.value.name == "a"
        assert isinstance(info.value, KeyError)
        assert cache.get_group(G) == before
        assert outbox_of(cache) == outbox_before
        assert cache.get_definitions(G) == (version, [a])

    def test_put_creates_a_missing_group(self, cache: DataCache) -> None:
        version, _ = cache.put_trackers("g-new", [fresh(count_def("a"))], "admin")
        assert cache.get_definitions("g-new") == (version, [count_def("a")])

    def test_replace_keeps_order_and_fires_only_for_new(self, cache: DataCache) -> None:
        a, b = count_def("a"), count_def("b")
        created, _ = cache.put_trackers(G, [fresh(a), fresh(b)], "admin-1")
        a2 = count_def("a", 50)
        state = TrackerState(progress=7)
        version, fired = cache.put_trackers(
            G, [CachedTracker(a2, state), fresh(count_def("c"))], "admin-2", replace=True
        )
        assert version == created + 1
        assert fired == [Fired(EVENT_TRACKER_ADDED, "c", 0, 0)]
        group = cache.get_group(G)
        assert group is not None
        assert list(group.trackers) == ["a", "b", "c"]
        assert group.trackers["a"].definition == a2
        assert group.trackers["a"].state == state

    def test_remove_trackers(self, cache: DataCache) -> None:
        a, b, c = count_def("a"), count_def("b"), count_def("c")
        version = install(cache, a, b, c)
        cache.apply(G, version, [TrackStep(b, 1)], "e1")
        removed = cache.remove_trackers(G, ["b", "ghost"], "admin-1")
        assert [(t.definition, t.state) for t, _ in removed] == [(b, TrackerState(progress=1))]
        assert [f for _, f in removed] == [Fired(EVENT_TRACKER_REMOVED, "b", 0, 1)]
        group = cache.get_group(G)
        assert group is not None and group.version == version + 1
        assert list(group.trackers) == ["a", "c"]
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None and snapshot.removed == ["b"]
        assert cache.remove_trackers(G, ["ghost"], "admin-2") == []
        group = cache.get_group(G)
        assert group is not None and group.version == version + 1
        everything = cache.remove_trackers(G, None, "admin-3")
        assert [f.name for _, f in everything] == ["a", "c"]
        assert [e.entry_id for e in cache.outbox(100)][-2:] == [
            make_event_id("admin-3", G, "a", EVENT_TRACKER_REMOVED, 0),
            make_event_id("admin-3", G, "c", EVENT_TRACKER_REMOVED, 1),
        ]
        assert cache.remove_trackers("nope", None, "admin-4") == []

    def test_put_after_remove_drops_tombstone(self, cache: DataCache) -> None:
        a = count_def("a")
        install(cache, a)
        cache.remove_trackers(G, ["a"], "admin-1")
        cache.put_trackers(G, [fresh(a)], "admin-2")
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None and snapshot.removed == []
        assert list(snapshot.trackers) == ["a"]

    def test_reset_trackers(self, cache: DataCache) -> None:
        a = count_def("a", [2, 10], limiters=[CountLimiter(2)])
        version = install(cache, a, count_def("b"))
        for i in range(3):
            cache.apply(G, version, [TrackStep(a, 1)], f"e{i}")
        assert state_of(cache, "a") == TrackerState(progress=3, stage=1, limited=False, limits=[1])
        done = cache.reset_trackers(G, ["a", "ghost"], ResetPolicy.PROGRESS, "admin-1")
        assert [f for _, f in done] == [Fired(EVENT_TRACKER_RESET, "a", 1, 0)]
        assert done[0][0].state == TrackerState(progress=0, stage=1, limits=[1])
        assert done[0][0].definition == a
        group = cache.get_group(G)
        assert group is not None and group.version == version  # no definitions change
        assert group.trackers["a"].state == TrackerState(progress=0, stage=1, limits=[1])
        assert cache.outbox(100)[-1].entry_id == make_event_id(
            "admin-1", G, "a", EVENT_TRACKER_RESET, 0
        )
        assert G in cache.dirty_groups()
        assert cache.reset_trackers(G, ["ghost"], None, "admin-2") == []
        assert cache.reset_trackers("nope", ["a"], None, "admin-3") == []

    def test_reset_default_policy_refills_limiters(self, cache: DataCache) -> None:
        a = count_def("a", 100, limiters=[CountLimiter(1)])
        version = install(cache, a)
        cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert state_of(cache, "a") == TrackerState(progress=1, limited=True, limits=[0])
        done = cache.reset_trackers(G, ["a"], None, "admin")
        assert done[0][0].state == TrackerState(progress=1, limited=False, limits=[1])
        # a policy that leaves the spent limiter alone keeps the tracker limited
        cache.apply(G, version, [TrackStep(a, 1)], "e2")
        done = cache.reset_trackers(G, ["a"], ResetPolicy.PROGRESS, "admin-2")
        assert done[0][0].state == TrackerState(progress=0, limited=True, limits=[0])

    def test_reset_reopens_time_window_at_now(self, cache: DataCache) -> None:
        past = TimeLimiter(start_ts=1_000_000, interval=None, end_ts=1_000_100)
        a = count_def("a", 100, limiters=[past])
        version = install(cache, a)
        before = cache.now()
        done = cache.reset_trackers(G, ["a"], ResetPolicy.LIMITER, "admin")
        after = cache.now()
        assert before <= done[0][0].state.limits[0] <= after
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").changed == ["a"]

    # -- expiry ----------------------------------------------------------------------

    def test_expire_sweeps_due_trackers(self, cache: DataCache) -> None:
        now = cache.now()
        a, b, c = count_def("a"), count_def("b"), count_def("c")
        created, _ = cache.put_trackers(
            G, [fresh(a, now + 100), fresh(b), fresh(c, now + 5000)], "admin"
        )
        assert cache.expire("sweep-0", now=now) == []
        swept = cache.expire("sweep-1", now=now + 200)
        assert [(g, t.definition.name, f) for g, t, f in swept] == [
            (G, "a", Fired(EVENT_TRACKER_EXPIRED, "a", 0, 0))
        ]
        assert swept[0][1].expire_at == pytest.approx(now + 100)
        group = cache.get_group(G)
        assert group is not None and list(group.trackers) == ["b", "c"]
        assert group.version == created + 1
        assert cache.outbox(100)[-1].payload["code"] == EVENT_TRACKER_EXPIRED
        assert cache.outbox(100)[-1].entry_id == make_event_id(
            "sweep-1", G, "a", EVENT_TRACKER_EXPIRED, 0
        )
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None and snapshot.removed == ["a"]
        assert [t.definition.name for _, t, _ in cache.expire("sweep-2", now=now + 9000)] == ["c"]
        assert cache.expire("sweep-3", now=now + 9000) == []

    def test_expire_respects_limit(self, cache: DataCache) -> None:
        now = cache.now()
        defs = [count_def(f"t{i}") for i in range(4)]
        cache.put_trackers(G, [fresh(d, now + 1) for d in defs], "admin")
        first = cache.expire("s1", now=now + 10, limit=3)
        assert [t.definition.name for _, t, _ in first] == ["t0", "t1", "t2"]
        second = cache.expire("s2", now=now + 10, limit=3)
        assert [t.definition.name for _, t, _ in second] == ["t3"]

    def test_expire_defaults_to_the_cache_clock(self, cache: DataCache) -> None:
        now = cache.now()
        cache.put_trackers(G, [fresh(count_def("a"), now - 1), fresh(count_def("b"))], "admin")
        assert [t.definition.name for _, t, _ in cache.expire("s")] == ["a"]

    # -- write-behind --------------------------------------------------------------

    def test_dirty_marks(self, cache: DataCache) -> None:
        a = count_def("a", 100, limiters=[CountLimiter(1)])
        version = install(cache, a)
        assert cache.dirty_groups() == []
        assert cache.dirty_snapshot(G) is None
        cache.apply(G, version, [TrackStep(a, 1)], "e1")
        assert cache.dirty_groups() == [G]
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None
        assert snapshot.group_id == G
        assert snapshot.trackers["a"].state == TrackerState(progress=1, limited=True, limits=[0])
        assert cache.clear_dirty(G, snapshot.mark)
        assert cache.dirty_groups() == []
        assert cache.dirty_snapshot(G) is None
        # a refused event changes nothing, so it does not dirty the group
        cache.apply(G, version, [TrackStep(a, 1)], "e2")
        assert cache.dirty_groups() == []

    def test_clear_dirty_refuses_an_old_mark(self, cache: DataCache) -> None:
        a = count_def("a", 100)
        version = install(cache, a)
        cache.apply(G, version, [TrackStep(a, 1)], "e1")
        first = cache.dirty_snapshot(G)
        assert first is not None
        cache.apply(G, version, [TrackStep(a, 1)], "e2")
        second = cache.dirty_snapshot(G)
        assert second is not None and second.mark > first.mark
        assert not cache.clear_dirty(G, first.mark)
        assert cache.dirty_groups() == [G]
        assert cache.clear_dirty(G, second.mark)
        assert not cache.clear_dirty(G, second.mark)
        cache.apply(G, version, [TrackStep(a, 1)], "e3")
        third = cache.dirty_snapshot(G)
        assert third is not None and third.mark > second.mark

    def test_dirty_groups_limit(self, cache: DataCache) -> None:
        a = count_def("a")
        for g in ("g1", "g2", "g3"):
            version = install(cache, a, group=g)
            cache.apply(g, version, [TrackStep(a, 1)], "e1")
        assert sorted(cache.dirty_groups()) == ["g1", "g2", "g3"]
        assert len(cache.dirty_groups(2)) == 2

    # -- apply_many -------------------------------------------------------------------

    def test_apply_many_matches_sequential_apply(self, cache_factory: CacheFactory) -> None:
        """A batch gives each request the outcome :meth:`apply` gives it, in order: two
        groups interleaved, a duplicate within the batch, completion, periods, stale."""
        a, b = count_def("a", [1, 3], limiters=[CountLimiter(4)]), count_def("b", 2)
        p = periodic_def("p", 5)
        sequential, batched = cache_factory.new(), cache_factory.new()
        versions = [
            (install(cache, a, b, p, group="g1"), install(cache, a, group="g2"))
            for cache in (sequential, batched)
        ]
        s1, s2, _, end = bounds_around(sequential)

        def requests(v1: int, v2: int) -> list[ApplyRequest]:
            # each cache installed its groups at its own (fresh) versions
            return [
                ApplyRequest("g1", v1, [TrackStep(a, 1), TrackStep(b, 1)], "e1", {"p": (s1, end)}),
                ApplyRequest("g2", v2, [TrackStep(a, 1)], "e1"),
                ApplyRequest("g1", v1, [TrackStep(b, 1), TrackStep(p, 2)], "e2", {"p": (s1, end)}),
                ApplyRequest("g1", v1, [TrackStep(a, 5)], "e1", {"p": (s1, end)}),  # duplicate
                ApplyRequest("g2", v2, [TrackStep(a, 2)], "e2"),
                ApplyRequest("g1", v1, [TrackStep(p, 1)], "e3", {"p": (s2, end)}),  # rolls over
                ApplyRequest("g1", v1 + 1, [TrackStep(a, 1)], "e4"),  # stale
                ApplyRequest("missing", 1, [TrackStep(a, 1)], "e1"),
            ]

        expected = [
            sequential.apply(r.group_id, r.version, r.steps, r.event_id, periods=r.periods)
            for r in requests(*versions[0])
        ]
        got = batched.apply_many(requests(*versions[1]))

        def comparable(o: ApplyOutcome, v1: int, v2: int) -> tuple[Any, ...]:
            version = {v1: "g1", v2: "g2"}.get(o.version, o.version)
            return (o.status, version, o.states, o.changed, o.limited, o.completed, o.fired)

        assert [comparable(o, *versions[1]) for o in got] == [
            comparable(o, *versions[0]) for o in expected
        ]
        assert [o.status for o in got] == [
            "applied",
            "applied",
            "applied",
            "duplicate",
            "applied",
            "applied",
            "stale",
            "missing",
        ]
        assert batched.apply_many([]) == []
        for i, group in enumerate(("g1", "g2")):
            got_group, expected_group = batched.get_group(group), sequential.get_group(group)
            assert got_group is not None and expected_group is not None
            assert (got_group.version - versions[1][i], got_group.trackers) == (
                expected_group.version - versions[0][i],
                expected_group.trackers,
            )
            untimed = [
                [{k: v for k, v in e.items() if k != "event_ts"} for e in outbox_of(c, group)]
                for c in (batched, sequential)
            ]
            assert untimed[0] == untimed[1] and untimed[0]
        assert sorted(batched.dirty_groups()) == ["g1", "g2"]

    # -- calendar periods ------------------------------------------------------------

    def test_period_anchors_then_rolls_over_once(self, cache: DataCache) -> None:
        p = periodic_def("p", 10, limiters=[CountLimiter(5)])
        version = install(cache, p, count_def("plain"))
        s1, s2, _, end = bounds_around(cache)
        first = cache.apply(G, version, [TrackStep(p, 1)], "e1", periods={"p": (s1, end)})
        assert first.status == "applied" and first.changed == ["p"] and first.fired == []
        assert first.states == {"p": TrackerState(progress=1, limits=[4], period=s1)}
        cache.apply(G, version, [TrackStep(p, 1)], "e2", periods={"p": (s1, end)})
        assert state_of(cache, "p") == TrackerState(progress=2, limits=[3], period=s1)
        # a new period: RESET fires, the tracker counts as changed and dirties the group
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None and cache.clear_dirty(G, snapshot.mark)
        rolled = cache.apply(G, version, [], "e3", periods={"p": (s2, end)})
        assert rolled.status == "applied"
        assert rolled.fired == [Fired(EVENT_TRACKER_RESET, "p", 0, 0)]
        assert rolled.changed == ["p"] and rolled.limited == [] and rolled.completed == []
        assert rolled.states == {"p": TrackerState(progress=0, limits=[5], period=s2)}
        assert cache.dirty_groups() == [G]
        assert outbox_of(cache)[-1]["event_id"] == make_event_id(
            "e3", G, "p", EVENT_TRACKER_RESET, 0
        )
        # the same period again changes nothing; an earlier one is ignored
        for event_id, start in (("e4", s2), ("e5", s1)):
            same = cache.apply(G, version, [], event_id, periods={"p": (start, end)})
            assert same.status == "applied"
            assert same.changed == [] and same.fired == [] and same.states == {}
        assert state_of(cache, "p") == TrackerState(progress=0, limits=[5], period=s2)

    def test_rollover_in_insertion_order_before_the_steps(self, cache: DataCache) -> None:
        p1, plain, p2 = periodic_def("p1", 5), count_def("plain", 1), periodic_def("p2", 5)
        version = install(cache, p1, plain, p2)
        s1, s2, _, end = bounds_around(cache)
        both = {"p1": (s1, end), "p2": (s1, end)}
        cache.apply(G, version, [TrackStep(p1, 2), TrackStep(p2, 1)], "e1", periods=both)
        reversed_bounds = {"p2": (s2, end), "p1": (s2, end)}
        outcome = cache.apply(
            G, version, [TrackStep(plain, 1), TrackStep(p2, 4)], "e2", periods=reversed_bounds
        )
        assert outcome.fired == [
            Fired(EVENT_TRACKER_RESET, "p1", 0, 0),
            Fired(EVENT_TRACKER_RESET, "p2", 0, 0),
            Fired(EVENT_TRACKER_ALL_COMPLETED, "plain", 0, 1),
        ]
        assert outcome.changed == ["p1", "p2", "plain"]
        assert outcome.completed == ["plain"]
        assert outcome.states == {
            "p1": TrackerState(progress=0, period=s2),
            "p2": TrackerState(progress=4, period=s2),
            "plain": TrackerState(progress=1, completed=True),
        }
        assert [e.entry_id for e in cache.outbox(100) if e.group_id == G] == [
            make_event_id("e2", G, "p1", EVENT_TRACKER_RESET, 0),
            make_event_id("e2", G, "p2", EVENT_TRACKER_RESET, 1),
            make_event_id("e2", G, "plain", EVENT_TRACKER_ALL_COMPLETED, 2),
        ]

    def test_completed_periodic_tracker_stays_and_reopens(self, cache: DataCache) -> None:
        p = periodic_def("p", 2)
        version = install(cache, p)
        s1, s2, _, end = bounds_around(cache)
        cache.apply(G, version, [TrackStep(p, 1)], "e1", periods={"p": (s1, end)})
        done = cache.apply(G, version, [TrackStep(p, 1)], "e2", periods={"p": (s1, end)})
        assert done.completed == ["p"] and done.changed == ["p"]
        assert done.fired == [Fired(EVENT_TRACKER_ALL_COMPLETED, "p", 0, 2)]
        completed = TrackerState(progress=2, completed=True, period=s1)
        assert done.states == {"p": completed}
        group = cache.get_group(G)
        assert group is not None and list(group.trackers) == ["p"]
        assert group.trackers["p"].state == completed
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None and snapshot.removed == []
        idle = cache.apply(G, version, [TrackStep(p, 1)], "e3", periods={"p": (s1, end)})
        assert idle.changed == [] and idle.fired == [] and idle.states == {"p": completed}
        reopened = cache.apply(G, version, [TrackStep(p, 1)], "e4", periods={"p": (s2, end)})
        assert reopened.fired == [Fired(EVENT_TRACKER_RESET, "p", 0, 0)]
        assert reopened.states == {"p": TrackerState(progress=1, period=s2)}

    def test_period_policy_limiter_only_keeps_progress(self, cache: DataCache) -> None:
        period = ResetPeriod("week", weekday=2, reset_policy=int(ResetPolicy.LIMITER))
        p = periodic_def("p", [2, 100], limiters=[CountLimiter(3)], period=period)
        version = install(cache, p)
        s1, s2, _, end = bounds_around(cache)
        # stage 0 completes at 2 and refills the limiter (the tracker's own policy)
        for i in range(5):
            cache.apply(G, version, [TrackStep(p, 1)], f"e{i}", periods={"p": (s1, end)})
        assert state_of(cache, "p") == TrackerState(
            progress=5, stage=1, limited=True, limits=[0], period=s1
        )
        rolled = cache.apply(G, version, [], "roll", periods={"p": (s2, end)})
        assert rolled.fired == [Fired(EVENT_TRACKER_RESET, "p", 1, 5)]
        assert rolled.states == {"p": TrackerState(progress=5, stage=1, limits=[3], period=s2)}

    def test_clock_outside_a_bound_changes_nothing(self, cache: DataCache) -> None:
        p = periodic_def("p", 5)
        version = install(cache, p, count_def("plain"))
        s1, _, _, end = bounds_around(cache)
        cache.apply(G, version, [TrackStep(p, 1)], "e1", periods={"p": (s1, end)})
        before, outbox_before = cache.get_group(G), outbox_of(cache)
        future = (end, end + 86400)
        for bounds in ({"p": future}, {"p": (s1, end), "ghost": future}):
            outcome = cache.apply(G, version, [TrackStep(p, 1)], "e2", periods=bounds)
            assert outcome.status == "clock" and outcome.version == version
            assert s1 < outcome.now < end
            assert outcome.changed == [] and outcome.fired == [] and outcome.states == {}
        assert cache.get_group(G) == before and outbox_of(cache) == outbox_before
        # the event id was not consumed: recomputed bounds apply it
        retry = cache.apply(G, version, [TrackStep(p, 1)], "e2", periods={"p": (s1, end)})
        assert retry.status == "applied" and retry.states["p"].progress == 2
        # a stale version is reported before the clock
        stale = cache.apply(G, version + 1, [], "e3", periods={"p": future})
        assert stale.status == "stale"

    def test_repeated_roll_id_resets_once(self, cache: DataCache) -> None:
        """reset_due's idempotence: a repeated or late roll with the same id resets once."""
        p = periodic_def("p", 5)
        version = install(cache, p)
        s1, s2, s3, end = bounds_around(cache)
        cache.apply(G, version, [TrackStep(p, 3)], "e1", periods={"p": (s1, end)})
        roll_id = f"period:{s2}"
        first = cache.apply(G, version, [], roll_id, periods={"p": (s2, end)})
        assert first.status == "applied"
        assert first.fired == [Fired(EVENT_TRACKER_RESET, "p", 0, 0)]
        cache.apply(G, version, [TrackStep(p, 1)], "e2", periods={"p": (s2, end)})
        again = cache.apply(G, version, [], roll_id, periods={"p": (s2, end)})
        assert again.status == "duplicate" and again.fired == [] and again.changed == ["p"]
        assert again.states == {"p": TrackerState(progress=1, period=s2)}
        resets = [e for e in outbox_of(cache) if e["code"] == EVENT_TRACKER_RESET]
        assert len(resets) == 1
        # the next period's roll id resets again, once
        later = cache.apply(G, version, [], f"period:{s3}", periods={"p": (s3, end)})
        assert later.fired == [Fired(EVENT_TRACKER_RESET, "p", 0, 0)]

    def test_expired_periodic_tracker_is_not_rolled(self, cache: DataCache) -> None:
        p, q = periodic_def("p"), periodic_def("q")
        now = cache.now()
        version = cache.install_group(G, [fresh(p, now - 10), fresh(q, now + 86400)])
        s1, _, _, end = bounds_around(cache)
        outcome = cache.apply(G, version, [], "e1", periods={"p": (s1, end), "q": (s1, end)})
        assert outcome.changed == ["q"] and list(outcome.states) == ["q"]

    def test_periodic_groups_pages_in_name_order(self, cache: DataCache) -> None:
        p, plain = periodic_def("p"), count_def("plain")
        for group in ("g-e", "g-a", "g-d"):
            install(cache, p, plain, group=group)
        install(cache, plain, group="g-b")
        cache.install_group("g-c", [])
        assert cache.periodic_groups() == ["g-a", "g-d", "g-e"]
        assert cache.periodic_groups(limit=2) == ["g-a", "g-d"]
        assert cache.periodic_groups(limit=2, after="g-d") == ["g-e"]
        assert cache.periodic_groups(after="g-e") == []
        # put and remove keep the index in step
        cache.put_trackers("g-b", [fresh(periodic_def("q"))], "admin-1")
        cache.put_trackers("g-c", [fresh(periodic_def("q"))], "admin-2")
        cache.remove_trackers("g-d", ["p"], "admin-3")
        cache.put_trackers("g-e", [fresh(count_def("p"))], "admin-4", replace=True)
        assert cache.periodic_groups() == ["g-a", "g-b", "g-c"]
        # a completed periodic tracker stays, and so does its group's entry
        s1, _, _, end = bounds_around(cache)
        loaded = cache.get_definitions("g-a")
        assert loaded is not None
        cache.apply("g-a", loaded[0], [TrackStep(p, 3)], "e1", periods={"p": (s1, end)})
        # expiry of the last periodic tracker drops the entry
        now = cache.now()
        cache.put_trackers("g-x", [fresh(periodic_def("p"), now + 100)], "admin-5")
        assert cache.periodic_groups(after="g-c") == ["g-x"]
        cache.expire("sweep", now=now + 200)
        assert cache.periodic_groups() == ["g-a", "g-b", "g-c"]

    # -- eviction --------------------------------------------------------------------

    def test_evict_refuses_dirty_or_undelivered_and_then_drops(self, cache: DataCache) -> None:
        a, p = count_def("a", [1, 10]), periodic_def("p")
        version = install(cache, a, p)
        s1, _, _, end = bounds_around(cache)
        cache.apply(G, version, [TrackStep(a, 1)], "e1", periods={"p": (s1, end)})
        assert not cache.evict_group(G)  # dirty
        snapshot = cache.dirty_snapshot(G)
        assert snapshot is not None and cache.clear_dirty(G, snapshot.mark)
        assert not cache.evict_group(G)  # its STAGE_COMPLETED is still in the outbox
        assert cache.get_group(G) is not None
        cache.ack_outbox([e for e in cache.outbox(100) if e.group_id == G])
        assert cache.evict_group(G)
        assert cache.get_group(G) is None and cache.get_definitions(G) is None
        assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "missing"
        assert cache.periodic_groups() == [] and cache.dirty_groups() == []
        assert cache.evict_group(G)  # nothing cached: nothing to lose
        assert cache.evict_group("never-seen")
        # a reinstall starts at a new version and has forgotten the event ids
        again = cache.install_group(G, [fresh(a)])
        assert again > version
        assert cache.get_definitions(G) == (again, [a])
        assert cache.apply(G, again, [TrackStep(a, 1)], "e1").status == "applied"

    def test_evict_leaves_other_groups_alone(self, cache: DataCache) -> None:
        a = count_def("a", 100)
        install(cache, a, group="g1")
        v2 = install(cache, periodic_def("p"), group="g2")
        assert cache.apply("g2", v2, [], "e1").status == "applied"
        assert cache.evict_group("g1")
        assert cache.get_group("g1") is None
        assert cache.get_group("g2") is not None
        assert cache.periodic_groups() == ["g2"]

    # -- flush -----------------------------------------------------------------------

    def test_flush_deletes_only_its_own_data(self, cache_factory: CacheFactory) -> None:
        mine, other = cache_factory.new(), cache_factory.new()
        a = count_def("a", 1)
        for cache in (mine, other):
            version = install(cache, a, count_def("b"))
            cache.apply(G, version, [TrackStep(a, 1)], "e1")
        mine.flush()
        assert mine.get_group(G) is None
        assert mine.outbox(100) == [] and mine.dirty_groups() == []
        assert mine.apply(G, 1, [], "e1").status == "missing"
        group = other.get_group(G)
        assert group is not None and list(group.trackers) == ["b"]
        assert len(other.outbox(100)) == 1 and other.dirty_groups() == [G]
        # the flushed cache works again from scratch
        again = mine.install_group(G, [fresh(a)])
        assert again
        assert mine.apply(G, again, [TrackStep(a, 1)], "e1").status == "applied"
