"""The Lua engine agrees with the plain Python model on random histories.

A hypothesis state machine drives two worlds through the same operations:
``TrackingManager`` over :class:`RedisDataCache` (two workers: two cache
instances on one key prefix, sharing one store) and ``TrackingManager`` over
:class:`MemoryDataCache` (two managers on one cache: the reference
semantics of :mod:`tracking.engine`). Operations: events (counts and
accumulations with int and float amounts) on trackers with count/time
limiters, several stages, ``loop_forever`` and every reset policy; admin
operations (add, update, remove, reset) from either worker, so the other
worker's definitions go stale; redeliveries of earlier event ids; trackers
with daily and weekly calendar reset periods, rolled over by events and by
beat's ``reset_due``; outbox delivery and eviction (flush, evict, then a
cold load from the store on the next event). After every step the returned
results, every group's trackers (definitions and states), the outbox (ids
and payloads, in firing order per group), the dirty groups and the
periodic groups must be identical.

Time: the Redis world reads Redis ``TIME``; the memory world's clock reads
the same server's ``TIME``, so both see one clock but not the same
microsecond. Every time-dependent decision is therefore made unambiguous:
time windows are either wide open (1970-2096), long closed (a 100 s window
in 1970), or reopened by a reset at "now" for 100 s, far longer than an
example runs. Values that *are* a reading of the clock (a reset window's
start, ``event_ts``) are compared within 30 s; everything else exactly.
Admin operations draw their source ids from ``uuid.uuid4``; the machine
substitutes a counter so both worlds get the same ids.

Calendar periods: the manager computes each periodic tracker's bounds with
``period_bounds``; the machine substitutes synthetic ones so that time can
move on without waiting for midnight. A ``next_day`` rule advances a day
counter; a daily tracker's period starts at ``base + 10 * day``, a weekly
one's at ``base + 70 * (day // 7)``, all well before the Redis clock and
ending well after it, so apply rolls trackers over exactly as it would at
real boundaries (it only compares period starts and checks its clock lies
inside the bounds).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import tracking.manager as manager_module
from tracking.cache.memory import MemoryDataCache
from tracking.cache.redis import RedisDataCache
from tracking.conditions import KeyValueEQ
from tracking.limiters import BaseLimiter, CountLimiter, TimeLimiter
from tracking.manager import TrackingManager
from tracking.model import TrackerDefinition, TrackerState, limiter_kind
from tracking.periods import ResetPeriod
from tracking.persistence import records_to_cache
from tracking.store.memory import MemoryDataStore
from tracking.trackers import AccumulationTracker, BaseTracker, CountTracker

pytestmark = pytest.mark.redis

GROUPS = ("g0", "g1")
NAMES = ("t0", "t1", "t2", "t3")
CLOCK_TOLERANCE = 30.0
AMOUNTS = (1, 2, 3, -1, 0, 0.5, 0.1, 0.2, 2.25, 1e-3)


def _limiter(kind: str, count: int) -> BaseLimiter:
    if kind == "count":
        return CountLimiter(count)
    if kind == "open":
        return TimeLimiter(start_ts=1_000_000, end_ts=4_000_000_000)
    return TimeLimiter(start_ts=1_000_000, end_ts=1_000_100)  # closed until a reset


@st.composite
def trackers(draw: st.DrawFn) -> BaseTracker:
    name = draw(st.sampled_from(NAMES))
    targets = sorted(
        draw(
            st.lists(
                st.one_of(st.integers(1, 6), st.sampled_from([0.5, 1.5, 2.25, 3.3])),
                min_size=1,
                max_size=3,
            )
        )
    )
    kinds = draw(st.lists(st.sampled_from(["count", "open", "closed"]), max_size=2))
    limiters = [_limiter(kind, draw(st.integers(1, 4))) for kind in kinds]
    conditions = draw(st.sampled_from([[], [KeyValueEQ("k", 1)]]))
    every = draw(st.sampled_from([None, None, "day", "week"]))
    period = None
    if every is not None:
        period = ResetPeriod(
            every,
            weekday=3,
            timezone=draw(st.sampled_from(["UTC", "Europe/Berlin"])),
            reset_policy=draw(st.integers(1, 3)),
        )
    common: dict[str, Any] = {
        "limiters": limiters,
        "reset_policy": draw(st.integers(0, 3)),
        "loop_forever": draw(st.booleans()),
        "init_progress": draw(st.sampled_from([0, 0, 1, 0.5])),
        "reset_period": period,
    }
    if draw(st.booleans()):
        return CountTracker(name, conditions, targets, **common)
    return AccumulationTracker(name, conditions, targets, "amount", **common)


events = st.fixed_dictionaries(
    {"k": st.integers(0, 1)}, optional={"amount": st.sampled_from(AMOUNTS)}
)


class _FakeUUID:
    """Stands in for :mod:`uuid` in the manager: the same ids in both worlds."""

    def __init__(self) -> None:
        self.token = "0"

    def uuid4(self) -> Any:
        return uuid.UUID(int=int(self.token))


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= CLOCK_TOLERANCE


def _same_state(definition: TrackerDefinition, a: TrackerState, b: TrackerState) -> bool:
    if (a.progress, a.stage, a.completed, a.limited, a.period) != (
        b.progress,
        b.stage,
        b.completed,
        b.limited,
        b.period,
    ) or type(a.progress) is not type(b.progress):
        return False
    if len(a.limits) != len(b.limits):
        return False
    # A duplicate's original states are shown with the current definitions,
    # which may have other limiters since: compare by the definition when it
    # has this limiter, exactly otherwise.
    kinds = [limiter_kind(limiter) for limiter in definition.limiters]
    for index, (x, y) in enumerate(zip(a.limits, b.limits, strict=True)):
        kind = kinds[index] if index < len(kinds) else "count"
        if isinstance(x, float) or isinstance(y, float):
            kind = "time"  # count limiters hold ints: a float is a time window's start
        if (kind == "count" and x != y) or (kind == "time" and not _close(x, y)):
            return False
    return True


def _tracker_view(t: BaseTracker) -> tuple[Any, ...]:
    return (t.name, t.definition, t.group_id)


class CacheModel(RuleBasedStateMachine):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.prefix = "t" + uuid.uuid4().hex[:8]
        self.redis1 = RedisDataCache(url, self.prefix)
        self.redis2 = RedisDataCache(url, self.prefix)
        self.memory = MemoryDataCache(clock=self.redis1.now)
        redis_store, memory_store = MemoryDataStore(), MemoryDataStore()
        self.stores = (redis_store, memory_store)
        self.redis_workers = [
            TrackingManager(self.redis1, redis_store),
            TrackingManager(self.redis2, redis_store),
        ]
        self.memory_workers = [
            TrackingManager(self.memory, memory_store),
            TrackingManager(self.memory, memory_store),
        ]
        self.fake_uuid = _FakeUUID()
        self.real_uuid = manager_module.uuid
        manager_module.uuid = self.fake_uuid  # type: ignore[assignment]
        self.real_bounds = manager_module.period_bounds
        manager_module.period_bounds = self._period_bounds
        self.day = 0
        now = int(self.redis1.now())
        self.base, self.end = now - 100_000, now + 1_000_000
        self.counter = 0
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.forgotten: set[tuple[str, str]] = set()
        self.unchanged: set[tuple[str, str]] = set()

    def _period_bounds(self, definitions: Any, now: float) -> dict[str, tuple[int, int]]:
        """Synthetic period bounds of the current model day (see the module docstring)."""
        bounds = {}
        for d in definitions:
            if d.period is not None:
                start = self.day * 10 if d.period.every == "day" else (self.day // 7) * 70
                bounds[d.name] = (self.base + start, self.end)
        return bounds

    def teardown(self) -> None:
        manager_module.uuid = self.real_uuid
        manager_module.period_bounds = self.real_bounds
        self.redis1.flush()
        self.redis1.close()
        self.redis2.close()

    # -- running one operation in both worlds --------------------------------

    def _both(self, worker: int, op: str, *args: Any) -> tuple[Any, Any]:
        self.counter += 1
        results = []
        for workers in (self.redis_workers, self.memory_workers):
            self.fake_uuid.token = str(self.counter)
            own = [_clone(a) if isinstance(a, BaseTracker) else a for a in args]
            try:
                results.append(("ok", getattr(workers[worker], op)(*own)))
            except Exception as exc:  # the same error (type and message) from both
                results.append(("error", (type(exc), str(exc))))
        if "error" in (results[0][0], results[1][0]):
            self._check_stores()  # and the same record after it (the caches: invariants)
        return results[0], results[1]

    def _check_stores(self) -> None:
        """Both worlds' stores hold the same trackers, definitions and states."""
        for group in GROUPS:
            a, b = (records_to_cache(store.load_group(group)) for store in self.stores)
            assert [(e.definition, e.expire_at) for e in a] == [
                (e.definition, e.expire_at) for e in b
            ], group
            for x, y in zip(a, b, strict=True):
                assert _same_state(x.definition, x.state, y.state), (group, x.state, y.state)

    def _check_trackers(self, a: list[BaseTracker], b: list[BaseTracker]) -> None:
        assert [_tracker_view(t) for t in a] == [_tracker_view(t) for t in b]
        for x, y in zip(a, b, strict=True):
            assert _same_state(x.definition, x.state, y.state), (x.state, y.state)

    # -- rules -----------------------------------------------------------------

    @rule(worker=st.integers(0, 1), group=st.sampled_from(GROUPS), tracker=trackers())
    def add(self, worker: int, group: str, tracker: BaseTracker) -> None:
        r, m = self._both(worker, "add_tracker", group, tracker)
        assert r == m

    @rule(worker=st.integers(0, 1), group=st.sampled_from(GROUPS), tracker=trackers())
    def update(self, worker: int, group: str, tracker: BaseTracker) -> None:
        r, m = self._both(worker, "update_tracker", group, tracker)
        assert r == m

    @rule(
        worker=st.integers(0, 1),
        group=st.sampled_from(GROUPS),
        names=st.one_of(st.none(), st.lists(st.sampled_from(NAMES), max_size=2, unique=True)),
    )
    def remove(self, worker: int, group: str, names: list[str] | None) -> None:
        (rk, rv), (mk, mv) = self._both(worker, "remove_tracker", group, names)
        assert rk == mk
        if rk == "ok":
            self._check_trackers(rv, mv)
        else:
            assert rv == mv

    @rule(
        worker=st.integers(0, 1),
        group=st.sampled_from(GROUPS),
        name=st.sampled_from(NAMES),
        policy=st.one_of(st.none(), st.integers(0, 3)),
    )
    def reset(self, worker: int, group: str, name: str, policy: int | None) -> None:
        r, m = self._both(worker, "reset_tracker", group, name, policy)
        assert r == m

    @rule(worker=st.integers(0, 1), group=st.sampled_from(GROUPS), data=events)
    def track(self, worker: int, group: str, data: dict[str, Any]) -> None:
        event_id = f"ev{len(self.sent)}"
        self.sent.append((group, data, event_id))
        r = self._track(worker, group, data, event_id)
        if r is not None and not (r.duplicate or r.dirtied or r.limited or r.completed):
            # It changed nothing, so it did not make the group dirty: its id
            # reaches the store only with a later change's flush.
            self.unchanged.add((group, event_id))

    @precondition(lambda self: bool(self.sent))
    @rule(worker=st.integers(0, 1), index=st.integers(0, 10_000))
    def redeliver(self, worker: int, index: int) -> None:
        group, data, event_id = self.sent[index % len(self.sent)]
        r = self._track(worker, group, data, event_id)
        # Dedupe records travel to the store with the group and come back with
        # it after an eviction; only a group without trackers persists none.
        assert r is None or r.duplicate or (group, event_id) in self.forgotten

    @rule(days=st.integers(1, 8))
    def next_day(self, days: int) -> None:
        self.day += days

    @rule(worker=st.integers(0, 1))
    def reset_due(self, worker: int) -> None:
        (rk, r), (mk, m) = self._both(worker, "reset_due")
        assert (rk, mk) == ("ok", "ok"), (r, m)
        assert [(e.event_id, e.code, e.name, e.group_id) for e in r] == [
            (e.event_id, e.code, e.name, e.group_id) for e in m
        ]

    @rule(group=st.sampled_from(GROUPS))
    def deliver(self, group: str) -> None:
        """The drain hands a group's outbox to the broker and acknowledges it."""
        for cache in (self.redis1, self.memory):
            cache.ack_outbox([e for e in cache.outbox(100_000) if e.group_id == group])

    @rule(worker=st.integers(0, 1), group=st.sampled_from(GROUPS))
    def evict(self, worker: int, group: str) -> None:
        cached = self.memory.get_group(group)
        empty = cached is None or not cached.trackers
        r, m = self._both(worker, "evict", group)
        assert r == m
        if r == ("ok", True):
            self.forgotten.update(
                (g, e)
                for g, _, e in self.sent
                if g == group and (empty or (g, e) in self.unchanged)
            )

    def _track(self, worker: int, group: str, data: dict[str, Any], event_id: str) -> Any:
        (rk, r), (mk, m) = self._both(worker, "track", group, data, event_id)
        assert rk == mk, (r, m)
        if rk == "error":
            assert r == m  # both worlds fail alike
            return None
        assert (r.ok, r.duplicate, r.event_id) == (m.ok, m.duplicate, m.event_id)
        for x, y in zip(r[1:], m[1:], strict=True):
            self._check_trackers(x, y)
        assert [(e.event_id, e.code, e.name) for e in r.events] == [
            (e.event_id, e.code, e.name) for e in m.events
        ]
        assert all(_close(x.event_ts, y.event_ts) for x, y in zip(r.events, m.events, strict=True))
        return r

    # -- the whole state after every step --------------------------------------

    @invariant()
    def same_groups(self) -> None:
        for group in GROUPS:
            a, b = self.redis1.get_group(group), self.memory.get_group(group)
            assert (a is None) == (b is None)
            if a is None or b is None:
                continue
            assert list(a.trackers) == list(b.trackers)
            for name, x in a.trackers.items():
                y = b.trackers[name]
                assert x.definition == y.definition
                assert x.expire_at == y.expire_at
                assert _same_state(x.definition, x.state, y.state), (name, x.state, y.state)
            # versions are fresh per installation (each cache's clock in
            # microseconds), so the worlds agree on definitions, not numbers
            loaded, reference = (
                self.redis2.get_definitions(group),
                self.memory.get_definitions(group),
            )
            assert loaded is not None and reference is not None
            assert loaded == (a.version, reference[1])

    @invariant()
    def same_outbox(self) -> None:
        a, b = self.redis1.outbox(100_000), self.memory.outbox(100_000)
        for group in GROUPS:
            xs = [e for e in a if e.group_id == group]
            ys = [e for e in b if e.group_id == group]
            assert [e.entry_id for e in xs] == [e.entry_id for e in ys]
            for x, y in zip(xs, ys, strict=True):
                px, py = dict(x.payload), dict(y.payload)
                tx, ty = px.pop("event_ts"), py.pop("event_ts")
                assert px == py
                assert isinstance(tx, float) and isinstance(ty, float) and _close(tx, ty)
                assert type(px["progress"]) is type(py["progress"])

    @invariant()
    def same_dirty_groups(self) -> None:
        assert sorted(self.redis1.dirty_groups()) == sorted(self.memory.dirty_groups())

    @invariant()
    def same_periodic_groups(self) -> None:
        assert self.redis2.periodic_groups() == self.memory.periodic_groups()


def _clone(tracker: BaseTracker) -> BaseTracker:
    """An unbound copy (the managers bind trackers to their group)."""
    return BaseTracker.from_parts(tracker.definition, tracker.state.copy(), None)


@pytest.mark.timeout(1800)
def test_lua_engine_agrees_with_the_python_model(redis_url: str) -> None:
    """Examples from the hypothesis profile (500 in CI) of up to 50 steps each.

    The explain phase is left out: on Python < 3.12 it traces every line
    and takes many minutes on a failure that shrinking has already reported.
    """
    run_state_machine_as_test(
        lambda: CacheModel(redis_url),
        settings=settings(
            settings(),
            stateful_step_count=50,
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        ),
    )
