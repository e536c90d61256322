"""Calendar periods: "daily at 00:00 Europe/Berlin", "weekly on Monday", "monthly on the 1st".

A tracker with a :class:`ResetPeriod` is reset at each period boundary.
Rollover is lazy: the tracker's state carries the start (epoch seconds) of
the period it belongs to, and the first event (or the beat job) in a new
period resets it inside the same atomic step. Boundaries are computed with
:mod:`zoneinfo` in the period's IANA timezone, so they follow daylight
saving time: "daily at 00:00 Europe/Berlin" is 23:00 UTC in winter and
22:00 UTC in summer, and days are 23 or 25 hours long when the clocks move.
A local time that does not exist on a given day (inside a spring-forward
gap) is read with the offset before the change, as :mod:`zoneinfo` does
with ``fold=0`` (02:30 on the spring-forward night in Berlin is 03:30
summer time); a local time that occurs twice (fall-back) means its first
occurrence.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tracking.errors import TrackingTypeError, TrackingValueError

Every = Literal["day", "week", "month"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _parse_at(at: object) -> tuple[int, int]:
    if not isinstance(at, str):
        raise TrackingTypeError(f"at must be a 'HH:MM' string, not {type(at).__name__}")
    try:
        hour_text, minute_text = at.split(":")
        hour, minute = int(hour_text), int(minute_text)
    except ValueError:
        raise TrackingValueError(f"at must look like 'HH:MM', got {at!r}") from None
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise TrackingValueError(f"at must be a time of day, got {at!r}")
    return hour, minute


@dataclass(frozen=True)
class ResetPeriod:
    """When a tracker resets: every day/week/month at a local time in a timezone.

    ``weekday`` (0 = Monday) applies to weekly periods, ``day`` (1-28) to
    monthly ones. ``reset_policy`` says what the periodic reset clears
    (default: progress, stage and limiters).
    """

    every: Every
    at: str = "00:00"
    timezone: str = "UTC"
    weekday: int = 0
    day: int = 1
    reset_policy: int = 3

    def __post_init__(self) -> None:
        if self.every not in ("day", "week", "month"):
            raise TrackingValueError(f"every must be 'day', 'week' or 'month', got {self.every!r}")
        _parse_at(self.at)
        if not isinstance(self.timezone, str):
            raise TrackingTypeError("timezone must be an IANA name such as 'Europe/Berlin'")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TrackingValueError(f"unknown timezone {self.timezone!r}") from None
        for value, low, high, what in ((self.weekday, 0, 6, "weekday"), (self.day, 1, 28, "day")):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TrackingTypeError(f"{what} must be an int")
            if not low <= value <= high:
                raise TrackingValueError(f"{what} must be between {low} and {high}, got {value}")
        if isinstance(self.reset_policy, bool) or self.reset_policy not in (1, 2, 3):
            raise TrackingValueError("reset_policy of a period must be 1, 2 or 3")

    def to_spec(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "at": self.at,
            "timezone": self.timezone,
            "weekday": self.weekday,
            "day": self.day,
            "reset_policy": self.reset_policy,
        }

    def _local_start(self, local: datetime, shift: int) -> datetime:
        """The period start ``shift`` periods from the naive local date of ``local``."""
        hour, minute = _parse_at(self.at)
        if self.every == "day":
            base = local.date() + timedelta(days=shift)
        elif self.every == "week":
            monday = local.date() - timedelta(days=local.weekday())
            base = monday + timedelta(days=self.weekday + 7 * shift)
        else:
            month_index = local.year * 12 + (local.month - 1) + shift
            year, month = divmod(month_index, 12)
            month += 1
            base = local.date().replace(year=year, month=month, day=min(self.day, 28))
            base = base.replace(day=min(self.day, calendar.monthrange(year, month)[1]))
        return datetime(base.year, base.month, base.day, hour, minute, tzinfo=local.tzinfo)

    def bounds(self, now: float) -> tuple[int, int]:
        """``(start, end)`` epoch seconds of the period containing ``now``."""
        zone = ZoneInfo(self.timezone)
        local = datetime.fromtimestamp(now, tz=UTC).astimezone(zone)
        for shift in (1, 0, -1, -2):
            start = _instant(self._local_start(local, shift))
            if start <= now:
                end = _instant(self._local_start(local, shift + 1))
                return start, end
        raise AssertionError("a period start is always found within two periods back")

    def start_of(self, now: float) -> int:
        """Epoch seconds at which the period containing ``now`` began (its id)."""
        return self.bounds(now)[0]


def _instant(local: datetime) -> int:
    """Epoch seconds of a local wall time (``fold=0`` for gaps and repeats)."""
    return int(local.timestamp())


def period_from_spec(spec: object) -> ResetPeriod:
    """Build a period from its JSON spec (``{"every": "day", "at": "04:00", ...}``)."""
    if not isinstance(spec, dict):
        raise TrackingTypeError("a reset period spec must be a JSON object")
    unknown = set(spec) - {"every", "at", "timezone", "weekday", "day", "reset_policy"}
    if unknown:
        raise TrackingValueError(f"unknown reset period fields: {sorted(unknown)}")
    if "every" not in spec:
        raise TrackingValueError("a reset period spec needs 'every' ('day', 'week' or 'month')")
    if isinstance(spec.get("weekday"), str):
        name = spec["weekday"].lower()
        if name not in WEEKDAYS:
            raise TrackingValueError(f"unknown weekday {spec['weekday']!r}")
        spec = {**spec, "weekday": WEEKDAYS.index(name)}
    return ResetPeriod(**spec)
