"""Tracker definitions in words, for people reading the dashboard.

Works on the JSON specs (``condition.to_spec()``), the one stable form of
every condition, limiter and period, so it needs nothing but the registry's
field names. The output is plain text: the templates escape it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

_COMPARISONS = {
    "KeyValueEQ": "is",
    "KeyValueNE": "is not",
    "KeyValueLT": "is less than",
    "KeyValueLE": "is at most",
    "KeyValueGT": "is greater than",
    "KeyValueGE": "is at least",
}
_OPS = {"eq": "is", "ne": "is not", "lt": "is less than", "le": "is at most"}
_OPS |= {"gt": "is greater than", "ge": "is at least"}
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def value_text(value: Any) -> str:
    """A spec value as JSON (strings quoted, so ``"1"`` and ``1`` differ)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def describe_condition(spec: dict[str, Any]) -> str:
    """One condition spec in words, e.g. ``status is "paid"``."""
    kind = spec.get("type")
    key = str(spec.get("key", ""))
    value = spec.get("value")
    if kind in _COMPARISONS:
        return f"{key} {_COMPARISONS[kind]} {value_text(value)}"
    if kind == "KeyValueComparison":
        return f"{key} {_OPS.get(str(spec.get('op', 'eq')), '?')} {value_text(value)}"
    if kind == "KeyExists":
        return f"{key} is present"
    if kind == "KeyNotExists":
        return f"{key} is absent"
    if kind in ("KeyValueContained", "KeyValueNotContained"):
        verb = "contains" if kind == "KeyValueContained" else "does not contain"
        case = "" if spec.get("case_sensitive", True) else " (ignoring case)"
        return f"{key} {verb} {value_text(value)}{case}"
    if kind in ("KeyValueInList", "KeyValueNotInList"):
        verb = "is one of" if kind == "KeyValueInList" else "is none of"
        return f"{key} {verb} {value_text(value)}"
    if kind in ("KeyValueListHasItem", "KeyValueListNotHasItem"):
        verb = "holds" if kind == "KeyValueListHasItem" else "does not hold"
        return f"the list {key} {verb} {value_text(value)}"
    if kind in ("KeyValueListIntersectList", "KeyValueListNotIntersectList"):
        verb = (
            "shares an item with" if kind == "KeyValueListIntersectList" else "shares no item with"
        )
        return f"the list {key} {verb} {value_text(value)}"
    if kind in ("AllOf", "AnyOf"):
        parts = [describe_condition(c) for c in spec.get("conditions", [])]
        joiner = " and " if kind == "AllOf" else " or "
        return "(" + joiner.join(parts) + ")" if parts else "(always)"
    if kind == "Not":
        inner = spec.get("condition")
        return "not " + (describe_condition(inner) if isinstance(inner, dict) else "?")
    return f"{kind}: {value_text({k: v for k, v in spec.items() if k != 'type'})}"


def describe_conditions(specs: list[dict[str, Any]]) -> str:
    """A tracker's conditions (ANDed) in words; every event matches when there are none."""
    if not specs:
        return "every event"
    return " and ".join(describe_condition(spec) for spec in specs)


def duration_text(seconds: float) -> str:
    """``90061`` -> ``1 d 1 h 1 min 1 s`` (largest units first, zeros left out)."""
    seconds = round(seconds)
    if seconds <= 0:
        return "0 s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts)


def time_text(ts: float | None) -> str:
    """Epoch seconds as UTC ``YYYY-MM-DD HH:MM:SS UTC`` ("-" for None)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_period(spec: dict[str, Any]) -> str:
    """A calendar reset period in words, e.g. ``every day at 00:00 (Europe/Berlin)``."""
    every = spec.get("every")
    at = spec.get("at", "00:00")
    zone = spec.get("timezone", "UTC")
    if every == "week":
        weekday = spec.get("weekday", 0)
        day = _WEEKDAYS[weekday] if isinstance(weekday, int) and 0 <= weekday < 7 else "?"
        return f"every {day} at {at} ({zone})"
    if every == "month":
        return f"every month on day {spec.get('day', 1)} at {at} ({zone})"
    return f"every day at {at} ({zone})"


def describe_policy(policy: int) -> str:
    """A reset policy flag in words."""
    parts = [name for bit, name in ((1, "progress"), (2, "limiters")) if policy & bit]
    return " and ".join(parts) if parts else "nothing"
