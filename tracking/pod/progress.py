"""tastypy's ``ProgressTracker``: a POD of tasks with tries and a done flag.

Used where a long job must resume after a crash without redoing finished
work (the CLI's ``replay`` records sent batches in one).
"""

from __future__ import annotations

import os
from typing import Any

from tracking.errors import TrackingTypeError, TrackingValueError
from tracking.pod.core import DEFAULT_FILE_SIZE, DEFAULT_SYNC_AT, norm_key
from tracking.pod.mapping import PersistentOrderedDict

__all__ = ["DuplicateKeyError", "ProgressTracker", "Tracker"]


class DuplicateKeyError(TrackingValueError, KeyError):
    """:meth:`ProgressTracker.add` was given a key that already exists.

    Named as in tastypy; also a ``KeyError`` like other key problems.
    """

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0])


def _check_entry(key: str, value: object) -> None:
    """A tracker value must be a dict with ``_done`` (bool) and ``_tries`` (int >= 0)."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("_done"), bool)
        or type(value.get("_tries")) is not int
        or value["_tries"] < 0
    ):
        raise TrackingTypeError(
            f"tracker value of {key!r} must be a dict with '_done' (bool) and "
            f"'_tries' (int >= 0), got {value!r:.80}"
        )


class ProgressTracker(PersistentOrderedDict):
    """A POD of tasks: each value is a dict with ``_done`` and ``_tries``.

    Other keys may be stored alongside (results, notes). ``max_tries`` caps
    :meth:`try_it`; None means unlimited. The counts (:meth:`num_done` ...)
    are computed from the values each time, so they stay right even when
    entries are edited directly through ``tracker[key]``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_tries: int | None = None,
        gzipped: bool = False,
        file_size: int = DEFAULT_FILE_SIZE,
        sync_at: int = DEFAULT_SYNC_AT,
    ) -> None:
        if max_tries is not None and (type(max_tries) is not int or max_tries < 0):
            raise TrackingValueError(f"max_tries must be None or an int >= 0, not {max_tries!r}")
        super().__init__(path, gzipped=gzipped, file_size=file_size, sync_at=sync_at)
        self.max_tries = max_tries
        self._check_all()

    def _check_all(self) -> None:
        for key, value in self._core.values.items():
            _check_entry(key, value)

    def __setitem__(self, key: Any, value: Any) -> None:
        _check_entry(norm_key(key), value)
        super().__setitem__(key, value)

    def revert(self) -> None:
        """Reload from disk (see :meth:`PersistentOrderedDict.revert`) and re-check entries."""
        super().revert()
        self._check_all()

    def _entry(self, key: Any) -> tuple[str, dict[str, Any]]:
        """The stored entry of ``key``, without marking it dirty."""
        name = norm_key(key)
        try:
            return name, self._core.values[name]
        except KeyError:
            raise KeyError(key) from None

    def _touch(self, name: str) -> None:
        self._core.dirty.add(name)
        self._maybe_sync()

    # -- adding and checking ------------------------------------------------

    def add(self, key: Any) -> None:
        """Add ``key`` as not done with zero tries; :class:`DuplicateKeyError` if present."""
        if key in self:
            raise DuplicateKeyError(f"tracker key {norm_key(key)!r} already exists")
        self[key] = {"_done": False, "_tries": 0}

    def add_if_absent(self, key: Any) -> None:
        """Like :meth:`add`, but do nothing if ``key`` exists."""
        if key not in self:
            self.add(key)

    def check(self, key: Any) -> bool:
        """True if ``key`` is done; False if not done or not in the tracker."""
        name = norm_key(key)
        entry = self._core.values.get(name)
        return bool(entry is not None and entry["_done"])

    def check_or_add(self, key: Any) -> bool:
        """True if ``key`` is done; otherwise add it if absent and return False."""
        if key not in self:
            self.add(key)
            return False
        return self.check(key)

    def try_it(self, key: Any) -> bool:
        """Whether to attempt ``key`` now, counting the attempt if so.

        Adds the key if absent; returns False if it is done or has been tried
        ``max_tries`` times already; otherwise increments its tries and
        returns True.
        """
        self.add_if_absent(key)
        name, entry = self._entry(key)
        if entry["_done"]:
            return False
        if self.max_tries is not None and entry["_tries"] >= self.max_tries:
            return False
        entry["_tries"] += 1
        self._touch(name)
        return True

    # -- tries ----------------------------------------------------------------

    def tries(self, key: Any) -> int:
        """How many times ``key`` has been tried."""
        return int(self._entry(key)[1]["_tries"])

    def increment_tries(self, key: Any) -> None:
        """Add one to the tries of ``key``."""
        name, entry = self._entry(key)
        entry["_tries"] += 1
        self._touch(name)

    def decrement_tries(self, key: Any) -> None:
        """Take one from the tries of ``key``; tries never go below zero."""
        name, entry = self._entry(key)
        if entry["_tries"] <= 0:
            raise TrackingValueError(f"tracker key {name!r} has no tries to decrement")
        entry["_tries"] -= 1
        self._touch(name)

    def reset_tries(self, key: Any) -> None:
        """Set the tries of ``key`` back to zero."""
        name, entry = self._entry(key)
        entry["_tries"] = 0
        self._touch(name)

    # -- done -----------------------------------------------------------------

    def mark_done(self, key: Any) -> None:
        """Mark ``key`` done."""
        name, entry = self._entry(key)
        entry["_done"] = True
        self._touch(name)

    def mark_not_done(self, key: Any) -> None:
        """Mark ``key`` not done."""
        name, entry = self._entry(key)
        entry["_done"] = False
        self._touch(name)

    # -- statistics -------------------------------------------------------------

    def num_done(self) -> int:
        """Number of entries marked done."""
        return sum(1 for entry in self._core.values.values() if entry["_done"])

    def num_tried(self) -> int:
        """Number of entries tried at least once."""
        return sum(1 for entry in self._core.values.values() if entry["_tries"] > 0)

    def fraction_done(self) -> float:
        """Fraction (0 to 1) of entries done; 0.0 for an empty tracker."""
        total = len(self)
        return self.num_done() / total if total else 0.0

    def fraction_tried(self) -> float:
        """Fraction (0 to 1) of entries tried at least once; 0.0 for an empty tracker."""
        total = len(self)
        return self.num_tried() / total if total else 0.0

    @staticmethod
    def percent(fraction: float, decimals: int = 2) -> str:
        """``fraction`` as a percentage string with ``decimals`` decimals, e.g. ``'34.70 %'``."""
        return f"{100 * fraction:.{decimals}f} %"

    def percent_done(self, decimals: int = 2) -> str:
        """Percentage of entries done, e.g. ``'34.70 %'``."""
        return self.percent(self.fraction_done(), decimals)

    def percent_not_done(self, decimals: int = 2) -> str:
        """Percentage of entries not done (``'0.00 %'`` when empty: nothing is pending)."""
        return self.percent(1 - self.fraction_done() if len(self) else 0.0, decimals)

    def percent_tried(self, decimals: int = 2) -> str:
        """Percentage of entries tried at least once."""
        return self.percent(self.fraction_tried(), decimals)

    def percent_not_tried(self, decimals: int = 2) -> str:
        """Percentage of entries never tried (``'0.00 %'`` when empty)."""
        return self.percent(1 - self.fraction_tried() if len(self) else 0.0, decimals)


Tracker = ProgressTracker
