"""JSON specs <-> objects, through one registry.

Specs are the only serialised form of conditions, limiters and trackers
anywhere in the product (cache, store, messages): plain JSON objects with a
``type`` field. Loading validates the shape with pydantic and then the
values with the classes' own checks; an unknown ``type`` or a malformed
spec is an :class:`~tracking.errors.InvalidSpecError` that says where.
Nothing read can execute code: types map to classes through this registry
only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, JsonValue, StrictBool, StrictFloat, StrictInt
from pydantic import ValidationError as PydanticValidationError

from tracking import conditions as cond
from tracking._validate import nesting_depth
from tracking.errors import InvalidSpecError, TrackingError
from tracking.limiters import BaseLimiter, CountLimiter, TimeLimiter
from tracking.model import TrackerDefinition, TrackerState
from tracking.periods import period_from_spec
from tracking.trackers import AccumulationTracker, BaseTracker, CountTracker

Spec = dict[str, Any]
StrictNumber = StrictInt | StrictFloat


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str


class _KeySpec(_Model):
    key: str


class _KeyValueSpec(_KeySpec):
    value: JsonValue


class _ComparisonSpec(_KeyValueSpec):
    op: Literal["eq", "ne", "lt", "le", "gt", "ge"] = "eq"


class _ContainedSpec(_KeySpec):
    value: str
    case_sensitive: StrictBool = True


class _ListSpec(_KeySpec):
    value: list[JsonValue]


class _CombinatorSpec(_Model):
    conditions: list[dict[str, Any]]


class _NotSpec(_Model):
    condition: dict[str, Any]


class _CountLimiterSpec(_Model):
    count: StrictInt


class _TimeLimiterSpec(_Model):
    """``start_ts`` plus ``end_ts`` or ``interval`` (seconds), as the constructor takes.

    ``start_ts`` is required here, unlike the constructor's default of
    "now": a spec is data that may be loaded many times, and each load
    would move the window. ``to_spec()`` writes ``start_ts`` + ``interval``.
    """

    start_ts: StrictInt
    end_ts: StrictInt | None = None
    interval: StrictNumber | None = None


class _TrackerSpec(_Model):
    name: str
    conditions: list[dict[str, Any]]
    target: StrictNumber | list[StrictNumber]
    key: str | None = None
    limiters: list[dict[str, Any]] = []
    reset_policy: StrictInt = 2
    loop_forever: StrictBool = False
    init_progress: StrictNumber = 0
    reset_period: dict[str, Any] | None = None
    group_id: str | None = None
    state: dict[str, Any] | None = None


def _build_key(model: _KeySpec, cls: type[Any]) -> Any:
    return cls(model.key)


def _build_key_value(model: _KeyValueSpec, cls: type[Any]) -> Any:
    return cls(model.key, model.value)


def _build_comparison(model: _ComparisonSpec, cls: type[Any]) -> Any:
    return cls(model.key, model.value, model.op)


def _build_contained(model: _ContainedSpec, cls: type[Any]) -> Any:
    return cls(model.key, model.value, model.case_sensitive)


def _build_combinator(model: _CombinatorSpec, cls: type[Any]) -> Any:
    return cls([condition_from_spec(c) for c in model.conditions])


def _build_not(model: _NotSpec, cls: type[Any]) -> Any:
    return cls(condition_from_spec(model.condition))


_CONDITIONS: dict[str, tuple[type[_Model], Callable[[Any, type[Any]], Any], type[Any]]] = {
    "KeyExists": (_KeySpec, _build_key, cond.KeyExists),
    "KeyNotExists": (_KeySpec, _build_key, cond.KeyNotExists),
    "KeyValueComparison": (_ComparisonSpec, _build_comparison, cond.KeyValueComparison),
    "KeyValueContained": (_ContainedSpec, _build_contained, cond.KeyValueContained),
    "KeyValueNotContained": (_ContainedSpec, _build_contained, cond.KeyValueNotContained),
    "AllOf": (_CombinatorSpec, _build_combinator, cond.AllOf),
    "AnyOf": (_CombinatorSpec, _build_combinator, cond.AnyOf),
    "Not": (_NotSpec, _build_not, cond.Not),
}
_VALUE_CONDITIONS: tuple[type[cond.BaseCondition], ...] = (
    cond.KeyValueEQ,
    cond.KeyValueNE,
    cond.KeyValueLT,
    cond.KeyValueLE,
    cond.KeyValueGT,
    cond.KeyValueGE,
    cond.KeyValueListHasItem,
    cond.KeyValueListNotHasItem,
)
_LIST_CONDITIONS: tuple[type[cond.BaseCondition], ...] = (
    cond.KeyValueInList,
    cond.KeyValueNotInList,
    cond.KeyValueListIntersectList,
    cond.KeyValueListNotIntersectList,
)
for _value_cls in _VALUE_CONDITIONS:
    _CONDITIONS[_value_cls.spec_type] = (_KeyValueSpec, _build_key_value, _value_cls)
for _list_cls in _LIST_CONDITIONS:
    _CONDITIONS[_list_cls.spec_type] = (_ListSpec, _build_key_value, _list_cls)

_MAX_NESTING = 32


def _parse(spec: object, registry: dict[str, Any], what: str) -> tuple[Any, Any, Any]:
    if not isinstance(spec, dict):
        raise InvalidSpecError(f"{what} spec must be a JSON object, not {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in registry:  # a list or dict is not hashable
        raise InvalidSpecError(
            f"unknown {what} type {kind!r}; known types: {', '.join(sorted(registry))}"
        )
    model_cls, builder, target_cls = registry[kind]
    try:
        model = model_cls.model_validate(spec)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidSpecError(f"invalid {kind} spec: {problems}") from None
    return model, builder, target_cls


def condition_from_spec(spec: Spec) -> cond.BaseCondition:
    """Build a condition from its JSON spec."""
    if nesting_depth(spec) > 2 * _MAX_NESTING:
        raise InvalidSpecError(f"conditions are nested deeper than {_MAX_NESTING} levels")
    model, builder, target_cls = _parse(spec, _CONDITIONS, "condition")
    try:
        result: cond.BaseCondition = builder(model, target_cls)
    except InvalidSpecError:
        raise
    except TrackingError as exc:
        raise InvalidSpecError(f"invalid {spec['type']} spec: {exc}") from None
    return result


def _build_count_limiter(model: _CountLimiterSpec, cls: type[Any]) -> Any:
    return CountLimiter(model.count)


def _build_time_limiter(model: _TimeLimiterSpec, cls: type[Any]) -> Any:
    # The constructor checks the combination (one of end_ts/interval, not both).
    interval = None if model.interval is None else timedelta(seconds=model.interval)
    return TimeLimiter(start_ts=model.start_ts, end_ts=model.end_ts, interval=interval)


_LIMITERS: dict[str, tuple[type[_Model], Callable[[Any, type[Any]], Any], type[Any]]] = {
    "CountLimiter": (_CountLimiterSpec, _build_count_limiter, CountLimiter),
    "TimeLimiter": (_TimeLimiterSpec, _build_time_limiter, TimeLimiter),
}


def limiter_from_spec(spec: Spec) -> BaseLimiter:
    """Build a limiter definition from its JSON spec."""
    model, builder, target_cls = _parse(spec, _LIMITERS, "limiter")
    try:
        result: BaseLimiter = builder(model, target_cls)
    except TrackingError as exc:
        raise InvalidSpecError(f"invalid {spec['type']} spec: {exc}") from None
    return result


_TRACKERS: dict[str, tuple[type[_Model], None, type[BaseTracker]]] = {
    "CountTracker": (_TrackerSpec, None, CountTracker),
    "AccumulationTracker": (_TrackerSpec, None, AccumulationTracker),
}


def definition_from_spec(spec: Spec) -> TrackerDefinition:
    """Build a tracker definition (no state) from its JSON spec."""
    return tracker_from_spec(spec).definition


def tracker_from_spec(spec: Spec, group_id: str | None = None) -> BaseTracker:
    """Build a tracker from its spec; a ``state`` field in the spec is restored too."""
    model, _, target_cls = _parse(spec, _TRACKERS, "tracker")
    try:
        conditions = [condition_from_spec(c) for c in model.conditions]
        limiters = [limiter_from_spec(lim) for lim in model.limiters]
        common: dict[str, Any] = {
            "group_id": group_id or model.group_id,
            "limiters": limiters,
            "reset_policy": model.reset_policy,
            "loop_forever": model.loop_forever,
            "init_progress": model.init_progress,
            "reset_period": None
            if model.reset_period is None
            else period_from_spec(model.reset_period),
        }
        if target_cls is AccumulationTracker:
            if model.key is None:
                raise InvalidSpecError("invalid AccumulationTracker spec: key is required")
            tracker: BaseTracker = AccumulationTracker(
                model.name, conditions, model.target, model.key, **common
            )
        else:
            if model.key is not None:
                raise InvalidSpecError("invalid CountTracker spec: key is not allowed")
            tracker = CountTracker(model.name, conditions, model.target, **common)
        if model.state is not None:
            state = TrackerState.from_json(model.state, tracker.definition)
            tracker = BaseTracker.from_parts(tracker.definition, state, tracker.group_id)
    except InvalidSpecError:
        raise
    except TrackingError as exc:
        raise InvalidSpecError(f"invalid {spec['type']} spec: {exc}") from None
    return tracker


def from_spec(spec: Spec) -> cond.BaseCondition | BaseLimiter | BaseTracker:
    """Build whatever the spec's ``type`` names: a condition, limiter or tracker."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind in _TRACKERS:
        return tracker_from_spec(spec)
    if kind in _LIMITERS:
        return limiter_from_spec(spec)
    if kind in _CONDITIONS:
        return condition_from_spec(spec)
    known = sorted([*_TRACKERS, *_LIMITERS, *_CONDITIONS])
    raise InvalidSpecError(f"unknown spec type {kind!r}; known types: {', '.join(known)}")
