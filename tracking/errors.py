"""Every error this package raises, under one root.

`TrackingError` is the root. Input mistakes are also `TypeError` or
`ValueError` (as dictrack raised them) so code written for dictrack keeps
catching them; backend trouble (a Redis or store outage) is a
`BackendError`, which callers may retry, unlike bad input.
"""

from __future__ import annotations


class TrackingError(Exception):
    """Root of every error raised by `tracking`."""


class TrackingTypeError(TrackingError, TypeError):
    """An argument has the wrong type."""


class TrackingValueError(TrackingError, ValueError):
    """An argument has the right type but an unacceptable value."""


class InvalidSpecError(TrackingValueError):
    """A JSON spec is malformed or names an unknown `type`."""


class InvalidEventError(TrackingValueError):
    """Event data is not acceptable (not a JSON object, too big, bad numbers)."""


class ConflictingNameError(TrackingValueError, KeyError):
    """A tracker with this name already exists in the group.

    Also a `KeyError`, as in dictrack.
    """

    def __init__(self, group_id: str, name: str) -> None:
        super().__init__(f"tracker {name!r} already exists in group {group_id!r}")
        self.group_id = group_id
        self.name = name

    def __str__(self) -> str:  # KeyError would otherwise show the repr of the message
        return str(self.args[0])


class TrackerNotFoundError(TrackingValueError, KeyError):
    """No tracker of that name in the group (for operations that need one)."""

    def __init__(self, group_id: str, name: str) -> None:
        super().__init__(f"no tracker {name!r} in group {group_id!r}")
        self.group_id = group_id
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class TrackerCompletedError(TrackingValueError):
    """The tracker has completed all its stages and cannot change any more."""


class GroupIdAlreadySetError(TrackingValueError):
    """The tracker already belongs to another group."""


class BackendError(TrackingError):
    """The cache or the store failed (connection, timeout, server error).

    Unlike input errors, these are worth retrying.
    """


class CacheError(BackendError):
    """The Redis (or other) cache failed."""


class StoreError(BackendError):
    """The persistent store failed."""


class MissingDependencyError(TrackingError, ImportError):
    """An optional dependency needed for this feature is not installed."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs the package {package!r}: pip install {package}")
