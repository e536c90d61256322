"""Conditions: predicates over an event (a JSON object), with dictrack's names.

Keys may be dotted paths into nested objects (``"order.status"``; a numeric
segment indexes a list, ``"items.0.sku"``). A missing key makes every
key-value condition false, the negated ones included (dictrack's rule): a
condition about a value says nothing about an event that lacks it. Values
of the wrong type for the test (ordering a string against a number, a
substring test on a number) count as missing.

Conditions are immutable, compare equal and hash by value, and convert to
and from JSON specs (``{"type": "KeyValueEQ", "key": ..., "value": ...}``).
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from tracking._validate import canonical_json, check_bool, check_json_value
from tracking.errors import TrackingTypeError, TrackingValueError


class _Missing:
    """Sentinel for a key that is absent from the event."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def lookup(data: Any, key: str) -> Any:
    """The value at a dotted ``key`` in ``data``, or :data:`MISSING`."""
    current = data
    for part in key.split("."):
        if isinstance(current, dict):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TrackingTypeError(f"key must be a str, not {type(key).__name__}")
    if not key or any(not part for part in key.split(".")):
        raise TrackingValueError(f"key must be a non-empty dotted path, got {key!r}")
    return key


class BaseCondition(abc.ABC):
    """A predicate over event data. Subclasses set ``spec_type`` and ``check``."""

    spec_type: ClassVar[str]

    @abc.abstractmethod
    def check(self, data: dict[str, Any]) -> bool:
        """True when the event satisfies this condition."""

    @abc.abstractmethod
    def spec_fields(self) -> dict[str, Any]:
        """The constructor arguments as JSON values (without ``type``)."""

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec of this condition."""
        return {"type": self.spec_type, **self.spec_fields()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseCondition):
            return NotImplemented
        return canonical_json(self.to_spec()) == canonical_json(other.to_spec())

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_spec()))

    def __repr__(self) -> str:
        args = " ".join(f"{k}={v!r}" for k, v in self.spec_fields().items())
        return f"<{self.spec_type} ({args})>"


class KeyExists(BaseCondition):
    """The key is present in the event (its value may be anything, even null)."""

    spec_type = "KeyExists"

    def __init__(self, key: str) -> None:
        self._key = _check_key(key)

    @property
    def key(self) -> str:
        return self._key

    def check(self, data: dict[str, Any]) -> bool:
        return lookup(data, self._key) is not MISSING

    def spec_fields(self) -> dict[str, Any]:
        return {"key": self._key}


class KeyNotExists(KeyExists):
    """The key is absent from the event."""

    spec_type = "KeyNotExists"

    def check(self, data: dict[str, Any]) -> bool:
        return lookup(data, self._key) is MISSING


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_OPERATOR_NAMES = {func: name for name, func in _OPERATORS.items()}


class _KeyValueCondition(BaseCondition):
    """Shared shape of the conditions that test the value at a key."""

    negated: ClassVar[bool] = False

    def __init__(self, key: str, value: Any) -> None:
        self._key = _check_key(key)
        self._value = check_json_value(value, "value")

    @property
    def key(self) -> str:
        return self._key

    @property
    def value(self) -> Any:
        return self._value

    def check(self, data: dict[str, Any]) -> bool:
        found = lookup(data, self._key)
        if found is MISSING:
            return False
        result = self._test(found)
        if result is None:  # wrong type for this test: like a missing key
            return False
        return result != self.negated

    @abc.abstractmethod
    def _test(self, found: Any) -> bool | None:
        """The positive test on a present value; None if it cannot apply."""

    def spec_fields(self) -> dict[str, Any]:
        return {"key": self._key, "value": self._value}


class KeyValueComparison(_KeyValueCondition):
    """Compare the value at ``key`` with ``value`` using one of ``operator``'s six comparisons."""

    spec_type = "KeyValueComparison"
    _fixed_op: ClassVar[str | None] = None

    def __init__(self, key: str, value: Any, op: Callable[[Any, Any], bool] = operator.eq) -> None:
        super().__init__(key, value)
        if self._fixed_op is not None:
            op = _OPERATORS[self._fixed_op]
        if isinstance(op, str):
            if op not in _OPERATORS:
                raise TrackingValueError(f"op must be one of {sorted(_OPERATORS)}, got {op!r}")
            op = _OPERATORS[op]
        if op not in _OPERATOR_NAMES:
            raise TrackingValueError(
                "op must be operator.eq, ne, lt, le, gt or ge, got " + repr(op)
            )
        self._op = op

    @property
    def op(self) -> Callable[[Any, Any], bool]:
        return self._op

    def _test(self, found: Any) -> bool | None:
        try:
            return bool(self._op(found, self._value))
        except TypeError:
            return None

    def spec_fields(self) -> dict[str, Any]:
        fields = super().spec_fields()
        if self._fixed_op is None:
            fields["op"] = _OPERATOR_NAMES[self._op]
        return fields

    def __repr__(self) -> str:
        return (
            f"<{self.spec_type} (key={self._key} operator={_OPERATOR_NAMES[self._op]} "
            f"value={self._value!r})>"
        )


class _FixedComparison(KeyValueComparison):
    """A comparison whose operator is fixed by the class (dictrack's KeyValueXX)."""

    def __init__(self, key: str, value: Any) -> None:
        super().__init__(key, value)


class KeyValueEQ(_FixedComparison):
    """The value at ``key`` equals ``value``."""

    spec_type = "KeyValueEQ"
    _fixed_op = "eq"


class KeyValueNE(_FixedComparison):
    """The value at ``key`` is present and differs from ``value``."""

    spec_type = "KeyValueNE"
    _fixed_op = "ne"


class KeyValueLT(_FixedComparison):
    """The value at ``key`` is less than ``value``."""

    spec_type = "KeyValueLT"
    _fixed_op = "lt"


class KeyValueLE(_FixedComparison):
    """The value at ``key`` is at most ``value``."""

    spec_type = "KeyValueLE"
    _fixed_op = "le"


class KeyValueGT(_FixedComparison):
    """The value at ``key`` is greater than ``value``."""

    spec_type = "KeyValueGT"
    _fixed_op = "gt"


class KeyValueGE(_FixedComparison):
    """The value at ``key`` is at least ``value``."""

    spec_type = "KeyValueGE"
    _fixed_op = "ge"


class KeyValueContained(_KeyValueCondition):
    """``value`` is a substring of the string at ``key`` (optionally ignoring case)."""

    spec_type = "KeyValueContained"

    def __init__(self, key: str, value: str, case_sensitive: bool = True) -> None:
        if not isinstance(value, str):
            raise TrackingTypeError(f"value must be a str, not {type(value).__name__}")
        super().__init__(key, value)
        self._case_sensitive = check_bool(case_sensitive, "case_sensitive")

    @property
    def case_sensitive(self) -> bool:
        return self._case_sensitive

    def _test(self, found: Any) -> bool | None:
        if not isinstance(found, str):
            return None
        if self._case_sensitive:
            return self._value in found
        return bool(self._value.casefold() in found.casefold())

    def spec_fields(self) -> dict[str, Any]:
        return {**super().spec_fields(), "case_sensitive": self._case_sensitive}


class KeyValueNotContained(KeyValueContained):
    """The string at ``key`` does not contain ``value``."""

    spec_type = "KeyValueNotContained"
    negated = True


def _as_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TrackingTypeError(f"{what} must be a list or tuple, not {type(value).__name__}")
    return list(value)


class KeyValueInList(_KeyValueCondition):
    """The value at ``key`` is one of the items of ``value`` (a list)."""

    spec_type = "KeyValueInList"

    def __init__(self, key: str, value: Sequence[Any]) -> None:
        super().__init__(key, _as_list(value, "value"))

    def _test(self, found: Any) -> bool | None:
        return found in self._value


class KeyValueNotInList(KeyValueInList):
    """The value at ``key`` is present and none of the items of ``value``."""

    spec_type = "KeyValueNotInList"
    negated = True


class KeyValueListHasItem(_KeyValueCondition):
    """The list at ``key`` contains ``value``."""

    spec_type = "KeyValueListHasItem"

    def _test(self, found: Any) -> bool | None:
        if not isinstance(found, list):
            return None
        return self._value in found


class KeyValueListNotHasItem(KeyValueListHasItem):
    """The list at ``key`` does not contain ``value``."""

    spec_type = "KeyValueListNotHasItem"
    negated = True


class KeyValueListIntersectList(_KeyValueCondition):
    """The list at ``key`` shares at least one item with ``value`` (a list)."""

    spec_type = "KeyValueListIntersectList"

    def __init__(self, key: str, value: Sequence[Any]) -> None:
        super().__init__(key, _as_list(value, "value"))

    def _test(self, found: Any) -> bool | None:
        if not isinstance(found, list):
            return None
        return any(item in self._value for item in found)


class KeyValueListNotIntersectList(KeyValueListIntersectList):
    """The list at ``key`` shares no item with ``value``."""

    spec_type = "KeyValueListNotIntersectList"
    negated = True


def _check_conditions(conditions: object, what: str) -> tuple[BaseCondition, ...]:
    if isinstance(conditions, BaseCondition) or not isinstance(conditions, Iterable):
        raise TrackingTypeError(f"{what} must be a list of conditions")
    items = tuple(conditions)
    for item in items:
        if not isinstance(item, BaseCondition):
            raise TrackingTypeError(
                f"{what} must hold conditions only, found {type(item).__name__}"
            )
    return items


class AllOf(BaseCondition):
    """Every inner condition holds (an explicit AND, for nesting inside AnyOf/Not)."""

    spec_type = "AllOf"

    def __init__(self, conditions: Iterable[BaseCondition]) -> None:
        self._conditions = _check_conditions(conditions, "conditions")

    @property
    def conditions(self) -> tuple[BaseCondition, ...]:
        return self._conditions

    def check(self, data: dict[str, Any]) -> bool:
        return all(c.check(data) for c in self._conditions)

    def spec_fields(self) -> dict[str, Any]:
        return {"conditions": [c.to_spec() for c in self._conditions]}


class AnyOf(AllOf):
    """At least one inner condition holds."""

    spec_type = "AnyOf"

    def __init__(self, conditions: Iterable[BaseCondition]) -> None:
        super().__init__(conditions)
        if not self._conditions:
            raise TrackingValueError("AnyOf needs at least one condition")

    def check(self, data: dict[str, Any]) -> bool:
        return any(c.check(data) for c in self._conditions)


class Not(BaseCondition):
    """The inner condition does not hold."""

    spec_type = "Not"

    def __init__(self, condition: BaseCondition) -> None:
        if not isinstance(condition, BaseCondition):
            raise TrackingTypeError(
                f"condition must be a condition, not {type(condition).__name__}"
            )
        self._condition = condition

    @property
    def condition(self) -> BaseCondition:
        return self._condition

    def check(self, data: dict[str, Any]) -> bool:
        return not self._condition.check(data)

    def spec_fields(self) -> dict[str, Any]:
        return {"condition": self._condition.to_spec()}


CONDITION_CLASSES: tuple[type[BaseCondition], ...] = (
    KeyExists,
    KeyNotExists,
    KeyValueComparison,
    KeyValueEQ,
    KeyValueNE,
    KeyValueLT,
    KeyValueLE,
    KeyValueGT,
    KeyValueGE,
    KeyValueContained,
    KeyValueNotContained,
    KeyValueInList,
    KeyValueNotInList,
    KeyValueListHasItem,
    KeyValueListNotHasItem,
    KeyValueListIntersectList,
    KeyValueListNotIntersectList,
    AllOf,
    AnyOf,
    Not,
)
