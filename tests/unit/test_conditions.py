"""Conditions: dictrack's names and arguments, dotted keys, the missing-key rule."""

from __future__ import annotations

import operator

import pytest

from tracking import (
    AllOf,
    AnyOf,
    KeyExists,
    KeyNotExists,
    KeyValueComparison,
    KeyValueContained,
    KeyValueEQ,
    KeyValueGE,
    KeyValueGT,
    KeyValueInList,
    KeyValueLE,
    KeyValueListHasItem,
    KeyValueListIntersectList,
    KeyValueListNotHasItem,
    KeyValueListNotIntersectList,
    KeyValueLT,
    KeyValueNE,
    KeyValueNotContained,
    KeyValueNotInList,
    Not,
    TrackingTypeError,
    TrackingValueError,
)
from tracking.conditions import MISSING, lookup

EVENT = {
    "status": "Paid",
    "amount": 12.5,
    "n": 3,
    "tags": ["a", "b"],
    "order": {"status": "shipped", "items": [{"sku": "X1"}]},
    "nothing": None,
}


def test_lookup_follows_dotted_paths_and_list_indexes() -> None:
    assert lookup(EVENT, "order.status") == "shipped"
    assert lookup(EVENT, "order.items.0.sku") == "X1"
    assert lookup(EVENT, "order.items.5.sku") is MISSING
    assert lookup(EVENT, "order.missing") is MISSING
    assert lookup(EVENT, "status.deeper") is MISSING
    assert lookup(EVENT, "nothing") is None


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (KeyExists("status"), True),
        (KeyExists("nothing"), True),
        (KeyExists("absent"), False),
        (KeyNotExists("absent"), True),
        (KeyNotExists("order.status"), False),
        (KeyValueEQ("status", "Paid"), True),
        (KeyValueEQ("order.status", "shipped"), True),
        (KeyValueEQ("status", "paid"), False),
        (KeyValueNE("status", "paid"), True),
        (KeyValueNE("status", "Paid"), False),
        (KeyValueLT("n", 4), True),
        (KeyValueLT("n", 3), False),
        (KeyValueLE("n", 3), True),
        (KeyValueGT("amount", 12), True),
        (KeyValueGT("amount", 12.5), False),
        (KeyValueGE("amount", 12.5), True),
        (KeyValueComparison("n", 2, operator.gt), True),
        (KeyValueComparison("n", 3), True),
        (KeyValueContained("status", "ai"), True),
        (KeyValueContained("status", "PAID"), False),
        (KeyValueContained("status", "PAID", case_sensitive=False), True),
        (KeyValueNotContained("status", "zz"), True),
        (KeyValueNotContained("status", "Pa"), False),
        (KeyValueNotContained("status", "pa", case_sensitive=False), False),
        (KeyValueInList("status", ["Paid", "Refunded"]), True),
        (KeyValueInList("status", ("New",)), False),
        (KeyValueNotInList("status", ["New"]), True),
        (KeyValueNotInList("status", ["Paid"]), False),
        (KeyValueListHasItem("tags", "a"), True),
        (KeyValueListHasItem("tags", "z"), False),
        (KeyValueListNotHasItem("tags", "z"), True),
        (KeyValueListNotHasItem("tags", "a"), False),
        (KeyValueListIntersectList("tags", ["z", "b"]), True),
        (KeyValueListIntersectList("tags", ["z"]), False),
        (KeyValueListNotIntersectList("tags", ["z"]), True),
        (KeyValueListNotIntersectList("tags", ["a"]), False),
    ],
)
def test_condition_results(condition: object, expected: bool) -> None:
    assert condition.check(EVENT) is expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "condition",
    [
        KeyValueEQ("absent", 1),
        KeyValueNE("absent", 1),
        KeyValueLT("absent", 1),
        KeyValueGE("absent", 1),
        KeyValueContained("absent", "x"),
        KeyValueNotContained("absent", "x"),
        KeyValueInList("absent", [1]),
        KeyValueNotInList("absent", [1]),
        KeyValueListHasItem("absent", 1),
        KeyValueListNotHasItem("absent", 1),
        KeyValueListIntersectList("absent", [1]),
        KeyValueListNotIntersectList("absent", [1]),
    ],
)
def test_missing_key_makes_every_key_value_condition_false(condition: object) -> None:
    assert condition.check(EVENT) is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "condition",
    [
        KeyValueLT("status", 3),  # str vs int cannot be ordered
        KeyValueContained("n", "3"),  # not a string
        KeyValueNotContained("n", "3"),
        KeyValueListHasItem("status", "P"),  # not a list
        KeyValueListNotHasItem("status", "P"),
        KeyValueListNotIntersectList("n", [3]),
    ],
)
def test_wrong_value_type_counts_as_missing(condition: object) -> None:
    assert condition.check(EVENT) is False  # type: ignore[attr-defined]


def test_combinators() -> None:
    paid = KeyValueEQ("status", "Paid")
    big = KeyValueGT("amount", 100)
    assert AllOf([paid]).check(EVENT)
    assert not AllOf([paid, big]).check(EVENT)
    assert AnyOf([paid, big]).check(EVENT)
    assert Not(big).check(EVENT)
    assert not Not(AnyOf([paid, big])).check(EVENT)
    assert AllOf([]).check(EVENT)
    with pytest.raises(TrackingValueError):
        AnyOf([])
    with pytest.raises(TrackingTypeError):
        AllOf([paid, "nope"])  # type: ignore[list-item]
    with pytest.raises(TrackingTypeError):
        Not("nope")  # type: ignore[arg-type]


def test_equality_and_hash_by_value() -> None:
    assert KeyValueEQ("a", [1, 2]) == KeyValueEQ("a", [1, 2])
    assert hash(KeyValueEQ("a", {"x": 1})) == hash(KeyValueEQ("a", {"x": 1}))
    assert KeyValueEQ("a", 1) != KeyValueNE("a", 1)
    assert KeyValueEQ("a", 1) != KeyValueEQ("a", 2)
    assert KeyValueComparison("a", 1, operator.lt) == KeyValueComparison("a", 1, operator.lt)
    assert len({KeyValueEQ("a", 1), KeyValueEQ("a", 1), KeyExists("a")}) == 2
    assert KeyValueContained("a", "x") != KeyValueContained("a", "x", case_sensitive=False)


def test_repr_names_class_operator_and_value() -> None:
    assert repr(KeyValueEQ("status", "active")) == (
        "<KeyValueEQ (key=status operator=eq value='active')>"
    )
    assert "KeyExists" in repr(KeyExists("k"))


@pytest.mark.parametrize(
    ("factory", "error"),
    [
        (lambda: KeyExists(1), TrackingTypeError),
        (lambda: KeyExists(""), TrackingValueError),
        (lambda: KeyExists("a..b"), TrackingValueError),
        (lambda: KeyValueEQ(None, 1), TrackingTypeError),
        (lambda: KeyValueEQ("a", float("nan")), TrackingTypeError),
        (lambda: KeyValueEQ("a", {1, 2}), TrackingTypeError),
        (lambda: KeyValueEQ("a", object()), TrackingTypeError),
        (lambda: KeyValueComparison("a", 1, operator.add), TrackingValueError),
        (lambda: KeyValueComparison("a", 1, len), TrackingValueError),
        (lambda: KeyValueContained("a", 5), TrackingTypeError),
        (lambda: KeyValueContained("a", "x", case_sensitive="yes"), TrackingTypeError),
        (lambda: KeyValueInList("a", "abc"), TrackingTypeError),
        (lambda: KeyValueListIntersectList("a", 3), TrackingTypeError),
    ],
)
def test_bad_arguments_raise_typed_errors(factory: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        factory()  # type: ignore[operator]


def test_errors_are_also_builtin_type_and_value_errors() -> None:
    with pytest.raises(TypeError):
        KeyExists(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        KeyValueComparison("a", 1, operator.add)
