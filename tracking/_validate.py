"""Small argument checks shared by the public constructors.

Every public entry point validates its input and raises a typed error that
names the argument, so that bad input never reaches the cache or the store.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tracking.errors import InvalidEventError, TrackingTypeError, TrackingValueError

#: Largest magnitude a progress, target or increment may have: beyond 2**53
#: doubles (Lua numbers, JSON readers) stop representing every integer.
MAX_NUMBER = float(2**53)

MAX_NAME_LENGTH = 200


def check_name(value: object, what: str = "name") -> str:
    """A group id or tracker name: a non-empty, bounded string without control chars."""
    if not isinstance(value, str):
        raise TrackingTypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise TrackingValueError(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise TrackingValueError(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    if any(ord(ch) < 32 for ch in value):
        raise TrackingValueError(f"{what} must not contain control characters")
    return value


def check_names(name: object) -> list[str] | None:
    """Tracker names as the manager takes them: one name, a list of names, or None (all)."""
    if name is None:
        return None
    if isinstance(name, str):
        return [check_name(name)]
    if isinstance(name, list | tuple):
        return [check_name(n) for n in name]
    raise TrackingTypeError(f"name must be a str, a list of str or None, not {type(name).__name__}")


def check_expiry(value: object, what: str) -> int | None:
    """An ``expire``/``expire_at`` argument: an int (seconds) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrackingTypeError(f"{what} must be an int or None, not {type(value).__name__}")
    return value


def check_number(value: object, what: str, *, minimum: float | None = None) -> int | float:
    """A finite int or float (never a bool), within +-2**53."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrackingTypeError(f"{what} must be an int or float, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise TrackingValueError(f"{what} must be finite, got {value!r}")
    if abs(value) > MAX_NUMBER:
        raise TrackingValueError(f"{what} is too large (limit is 2**53), got {value!r}")
    if minimum is not None and value < minimum:
        raise TrackingValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value


def check_int(value: object, what: str, *, minimum: int | None = None) -> int:
    """An int (never a bool), optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrackingTypeError(f"{what} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise TrackingValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value


def check_bool(value: object, what: str) -> bool:
    """A real bool (not 0/1)."""
    if not isinstance(value, bool):
        raise TrackingTypeError(f"{what} must be a bool, not {type(value).__name__}")
    return value


def check_json_value(value: object, what: str) -> Any:
    """A value that JSON can carry exactly (no NaN/inf, no sets, no objects)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TrackingTypeError(f"{what} must be JSON-serialisable: {exc}") from None
    return value


def canonical_json(value: object) -> str:
    """Deterministic compact JSON (sorted keys), used for hashing and ids."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


DEFAULT_MAX_EVENT_BYTES = 64 * 1024
DEFAULT_MAX_EVENT_DEPTH = 16


def validate_event(
    data: object,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    max_depth: int = DEFAULT_MAX_EVENT_DEPTH,
) -> dict[str, Any]:
    """Event data must be a JSON object of bounded size and nesting depth.

    Raises :class:`~tracking.errors.InvalidEventError` naming the problem;
    nothing is changed anywhere before this check passes.
    """
    if not isinstance(data, dict):
        raise InvalidEventError(
            f"event data must be a dict (JSON object), not {type(data).__name__}"
        )
    if nesting_depth(data) > max_depth:
        raise InvalidEventError(f"event data is nested deeper than {max_depth} levels")
    try:
        encoded = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"event data must be plain JSON: {exc}") from None
    if len(encoded) > max_bytes:
        raise InvalidEventError(f"event data is {len(encoded)} bytes; the limit is {max_bytes}")
    return data


def nesting_depth(value: object) -> int:
    """Nesting depth of containers (iterative: no recursion limit on hostile input)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest
