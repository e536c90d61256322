"""10,000 fuzzed payloads through ``track``, ``track_many`` and the admin tasks.

Hostile input (NaN, +-inf, 1e309, huge ints, booleans for numbers, deep
nesting, 1 MB strings, unknown spec types, wrong argument counts and
types) must end in a *typed* error (a ``TrackingError``, or the
``TypeError`` Python raises when a task is called with the wrong
arguments), never in a crash, and must leave the state exactly as it was;
input that happens to be valid must change the state exactly as the
semantics say. Most examples run through the real task functions in this
process (``Task.apply``: the same code path the worker runs, without the
broker); a deterministic slice goes through a real prefork worker to show
the queue keeps moving and no pool process dies.

The example counts add up to 10,000 (see ``EXAMPLES``): 4,000 ``track``,
2,000 ``track_many``, 3,000 admin calls, 1,000 wrong signatures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_app import configure, runtime
from celery_app.app import app
from tasks import (
    add_tracker,
    add_trackers,
    remove_tracker,
    reset,
    track,
    track_many,
    update_tracker,
)
from tests.support.celery_env import Deployment, deployment, require, wait_until
from tracking import AccumulationTracker, CountTracker, KeyValueEQ
from tracking._validate import MAX_NUMBER
from tracking.errors import TrackingError

pytestmark = [pytest.mark.redis]

SENTINELS = ("s1", "s2")
EXAMPLES = {"track": 4000, "track_many": 2000, "admin": 3000, "signature": 1000}
assert sum(EXAMPLES.values()) == 10_000

MB_STRING = "x" * (1 << 20)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for index in range(depth):
        value = {"n": value} if index % 2 else [value]
    return value


NASTY_NUMBERS = st.one_of(
    st.sampled_from(
        [math.nan, math.inf, -math.inf, 1e309, -1e309, 10**400, -(10**400), 2**53 + 1, 2**63]
    ),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
NASTY_SCALARS = st.one_of(
    NASTY_NUMBERS,
    st.none(),
    st.text(max_size=40),
    st.just(MB_STRING),
    st.just(""),
    st.just("\x00\n\x1b"),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)
NASTY = st.recursive(
    NASTY_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
) | st.integers(10, 400).map(_nested)

EVENT_DATA = st.one_of(
    st.fixed_dictionaries(
        {"kind": st.sampled_from(["hit", "order", "other"])},
        optional={"amount": NASTY, "extra": NASTY},
    ),
    st.dictionaries(st.text(max_size=10), NASTY, max_size=5),
    NASTY,  # not even an object
)
GROUP_IDS = st.one_of(
    st.sampled_from(SENTINELS),
    st.sampled_from(["", " ", "a" * 201, "bad\nid", "{x}"]),
    NASTY,
)


def _ok_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        # The bound first: math.isfinite() of an int beyond a float's range
        # raises OverflowError, while comparing it with a float is exact.
        and abs(value) <= MAX_NUMBER
        and math.isfinite(value)
    )


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require("redis")
    with deployment("redis", tmp_path_factory.mktemp("fuzz")) as dep:
        configure(dep.settings)
        manager = runtime.get_manager()
        for group in SENTINELS:
            manager.add_trackers(
                group,
                [
                    CountTracker("hits", [KeyValueEQ("kind", "hit")], 1_000_000_000),
                    AccumulationTracker(
                        "spend", [KeyValueEQ("kind", "order")], 1_000_000_000, "amount"
                    ),
                ],
            )
        yield dep


def _state() -> dict[str, dict[str, Any]]:
    manager = runtime.get_manager()
    return {
        g: {t.name: t.to_spec(include_state=True) for t in manager.get_trackers(g)}
        for g in SENTINELS
    }


def _progress(state: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {
        (g, name): spec["state"]["progress"]
        for g, specs in state.items()
        for name, spec in specs.items()
    }


def _typed(exc: object) -> bool:
    """A product error, or Python's own complaint about a task's signature."""
    if isinstance(exc, TrackingError):
        return True
    return type(exc) is TypeError and "argument" in str(exc)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _valid_data(data: object) -> bool:
    """The documented bounds: a JSON object, depth <= 16, at most 64 KiB encoded."""
    if not isinstance(data, dict) or _depth(data) > 16:
        return False
    try:
        encoded = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return False
    return len(encoded.encode()) <= 65536


def _plain_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200 and all(ord(ch) >= 32 for ch in value)


def _expected_delta(group_id: object, data: object) -> dict[tuple[str, str], float] | None:
    """What an event does to the sentinels; None when it must be refused.

    An event for another (valid) group must leave the sentinels alone:
    an empty delta.
    """
    if not _plain_id(group_id) or not _valid_data(data):
        return None
    assert isinstance(data, dict)
    if group_id not in SENTINELS:
        return {}
    if data.get("kind") == "hit":
        return {(str(group_id), "hits"): 1}
    if data.get("kind") == "order":
        amount = data.get("amount")
        if amount is None:
            return {}  # no number at the key: nothing to add
        if not _ok_number(amount):
            return None
        return {(str(group_id), "spend"): amount}  # type: ignore[dict-item]
    return {}


def _apply(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    result = task.apply(args=args, kwargs=kwargs or {})
    if result.failed():
        assert _typed(result.result), f"untyped error {result.result!r} from {task.name}"
        return result.result
    return None


def fuzz(examples: int) -> settings:
    """Hypothesis settings of one fuzz test: a fixed example count, no deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


@fuzz(EXAMPLES["track"])
@given(group_id=GROUP_IDS, data=EVENT_DATA)
def test_fuzzed_track(dep: Deployment, group_id: Any, data: Any) -> None:
    before = _progress(_state())
    error = _apply(track, (group_id, data))
    after = _progress(_state())
    delta = _expected_delta(group_id, data)
    if error is not None or delta is None:
        assert error is not None, f"accepted an event that must be refused: {data!r:.200}"
        assert after == before
        return
    expected = dict(before)
    for key, value in delta.items():
        expected[key] += value
    assert after == expected


@fuzz(EXAMPLES["track_many"])
@given(
    events=st.one_of(
        st.lists(
            st.one_of(
                st.fixed_dictionaries({"group_id": GROUP_IDS, "data": EVENT_DATA}),
                st.fixed_dictionaries(
                    {"group_id": GROUP_IDS, "data": EVENT_DATA},
                    optional={"event_id": NASTY, "surprise": NASTY},
                ),
                NASTY,
            ),
            max_size=6,
        ),
        NASTY,
    )
)
def test_fuzzed_track_many(dep: Deployment, events: Any) -> None:
    before = _progress(_state())
    error = _apply(track_many, (events,))
    after = _progress(_state())
    # The envelope is checked before anything applies; then each event is
    # applied or rejected on its own (the task fails listing the rejected).
    envelope_ok = isinstance(events, list) and all(
        isinstance(e, dict)
        and set(e) <= {"group_id", "data", "event_id"}
        and isinstance(e.get("group_id"), str)
        and isinstance(e.get("data"), dict)
        and (e.get("event_id") is None or isinstance(e.get("event_id"), str))
        for e in events
    )
    if not envelope_ok:
        assert error is not None and after == before
        return
    expected = dict(before)
    refused = 0
    seen_ids: set[str] = set()
    for event in events:
        event_id = event.get("event_id")
        delta = _expected_delta(event["group_id"], event["data"])
        if delta is None:
            refused += 1
            continue
        if event_id is not None:
            key = f"{event['group_id']}\0{event_id}"
            if key in seen_ids:
                continue  # the same id twice in one batch counts once
            seen_ids.add(key)
        for key2, value in delta.items():
            expected[key2] += value
    if refused:
        assert error is not None
    assert after == expected


TRACKER_FIELDS = st.sampled_from(
    [
        "type",
        "name",
        "target",
        "conditions",
        "limiters",
        "key",
        "loop_forever",
        "reset_policy",
        "init_progress",
        "reset_period",
        "state",
        "surprise",
    ]
)
BASE_SPEC = {
    "type": "CountTracker",
    "name": "fz",
    "target": [3, 5],
    "conditions": [{"type": "KeyValueEQ", "key": "kind", "value": "x"}],
    "limiters": [{"type": "CountLimiter", "count": 3}],
}
SPEC_VALUES = st.one_of(
    NASTY,
    st.sampled_from(
        [
            "Evil",
            "os.system",
            "__import__('os')",
            [{"type": "Nope"}],
            [{"type": "KeyValueEQ", "key": "k", "value": math.nan}],
            [{"type": "CountLimiter", "count": 10**400}],
            [{"type": "TimeLimiter", "start_ts": math.inf}],
            {"type": "Period", "every": "day"},
        ]
    ),
)
SPECS = st.one_of(
    st.builds(
        lambda changes: {**BASE_SPEC, **changes},
        st.dictionaries(TRACKER_FIELDS, SPEC_VALUES, min_size=1, max_size=3),
    ),
    NASTY,
)
ADMIN_GROUPS = st.one_of(st.just("scratch"), GROUP_IDS.filter(lambda g: g not in SENTINELS))
# Names that never select a sentinel's trackers (None means "all of them").
NAMES = st.one_of(NASTY, st.lists(NASTY, max_size=3)).filter(
    lambda n: (
        n is not None
        and n not in ("hits", "spend")
        and not (isinstance(n, list) and ("hits" in n or "spend" in n))
    )
)


@fuzz(EXAMPLES["admin"])
@given(
    call=st.one_of(
        st.tuples(st.just(add_tracker), st.tuples(ADMIN_GROUPS, SPECS)),
        st.tuples(st.just(add_trackers), st.tuples(ADMIN_GROUPS, st.lists(SPECS, max_size=3))),
        st.tuples(st.just(add_trackers), st.tuples(ADMIN_GROUPS, NASTY)),
        st.tuples(st.just(update_tracker), st.tuples(ADMIN_GROUPS, SPECS)),
        st.tuples(st.just(remove_tracker), st.tuples(st.sampled_from(SENTINELS), NAMES)),
        st.tuples(
            st.just(remove_tracker),
            st.tuples(GROUP_IDS.filter(lambda g: g not in SENTINELS), NASTY),
        ),
        st.tuples(st.just(reset), st.tuples(st.sampled_from(SENTINELS), NAMES, NASTY)),
        st.tuples(st.just(reset), st.tuples(st.sampled_from(SENTINELS), NAMES)),
    )
)
def test_fuzzed_admin_tasks(dep: Deployment, call: tuple[Any, tuple[Any, ...]]) -> None:
    task, args = call
    before = _state()
    _apply(task, args)
    # Admin calls here never name a sentinel's trackers: whatever they
    # did (refused, or a valid change to the scratch group), the
    # sentinels are untouched.
    assert _state() == before


@fuzz(EXAMPLES["signature"])
@given(
    task=st.sampled_from(
        [track, track_many, add_tracker, add_trackers, update_tracker, remove_tracker, reset]
    ),
    args=st.lists(NASTY_SCALARS.filter(lambda v: v is not MB_STRING), max_size=6),
    kwargs=st.dictionaries(
        st.sampled_from(["bogus", "group_id", "data", "spec", "x"]), NASTY_SCALARS, max_size=2
    ),
)
def test_fuzzed_signatures(
    dep: Deployment, task: Any, args: list[Any], kwargs: dict[str, Any]
) -> None:
    before = _state()
    args_t = tuple(args)
    if args_t and args_t[0] in SENTINELS:
        args_t = ("scratch", *args_t[1:])
    _apply(task, args_t, kwargs)
    assert _state() == before


def test_fuzzed_slice_through_a_real_worker_keeps_the_queue_moving(dep: Deployment) -> None:
    """Hostile messages published raw (no client-side checks) to a real worker."""
    worker = dep.start_worker("fuzz", concurrency=2)
    before = _progress(_state())
    nasty: list[tuple[str, tuple[Any, ...]]] = []
    values: list[Any] = [
        math.nan,
        math.inf,
        -math.inf,
        1e309,
        10**400,
        True,
        False,
        None,
        MB_STRING,
        _nested(300),
        [],
        "",
        "\x00",
        {"type": "Evil"},
    ]
    for value in values:
        nasty += [
            ("tasks.track", ("s1", {"kind": "order", "amount": value})),
            ("tasks.track", (value, {"kind": "hit"})),
            ("tasks.track", ("s1", value)),
            ("tasks.track", ("s1",)),
            ("tasks.track", ("s1", {}, None, value, value)),
            (
                "tasks.track_many",
                ([{"group_id": "s1", "data": {"kind": "order", "amount": value}}],),
            ),
            ("tasks.track_many", (value,)),
            ("tasks.add_tracker", ("scratch", {**BASE_SPEC, "target": value})),
            ("tasks.add_tracker", ("scratch", {**BASE_SPEC, "type": value})),
            ("tasks.update_tracker", ("s2", {**BASE_SPEC, "name": "hits", "target": value})),
            ("tasks.reset", ("s1", value, value)),
            ("tasks.remove_tracker", ("s2", [value, 7])),
        ]
    for name, args in nasty:
        app.send_task(name, args=args)
    # A valid event after all of them: the queue kept moving if it is applied.
    app.send_task("tasks.track", args=("s1", {"kind": "hit"}))
    expected = dict(before)
    expected[("s1", "hits")] += 1
    wait_until(
        lambda: (
            dep.log("fuzz").count("] received") >= len(nasty) + 1
            and _progress(_state()) == expected
        ),
        180,
        "the valid event queued behind the hostile ones",
    )
    assert _progress(_state()) == expected
    assert worker.poll() is None, "the worker died"
    log = dep.log("fuzz")
    assert "WorkerLostError" not in log and "exited with 'signal" not in log
