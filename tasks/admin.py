"""Administration tasks (``admin`` queue): trackers travel as JSON specs.

Specs are loaded with :func:`tracking.spec.tracker_from_spec` (one
registry, nothing executable); a bad spec fails the task at once with an
``InvalidSpecError`` that says what is wrong. The manager writes admin
changes through to the store before returning.

Events the change fired (ADDED, REMOVED, RESET) are drained to their
handlers right after it. Redelivery (``acks_late``) is harmless: adding a tracker whose identical
definition is already there succeeds without change, removing is
idempotent, and a reset puts the tracker in the same reset state.
"""

from __future__ import annotations

from typing import Any

from celery_app import runtime
from celery_app.app import app
from tasks.base import TrackingTask
from tasks.events import drain_soon
from tracking.errors import ConflictingNameError, TrackingTypeError
from tracking.spec import tracker_from_spec
from tracking.trackers import BaseTracker


def _trackers(specs: object) -> list[BaseTracker]:
    if not isinstance(specs, list):
        raise TrackingTypeError(f"specs must be a list, not {type(specs).__name__}")
    return [tracker_from_spec(spec) for spec in specs]


def _already_there(group_id: str, trackers: list[BaseTracker]) -> bool:
    """Whether every tracker is already in the group with the same definition."""
    existing = {
        t.name: t.definition
        for t in runtime.get_manager().get_trackers(group_id, [t.name for t in trackers])
    }
    return all(existing.get(t.name) == t.definition for t in trackers)


@app.task(base=TrackingTask, bind=True, name="tasks.add_tracker")  # type: ignore[untyped-decorator]
def add_tracker(
    self: TrackingTask,
    group_id: str,
    spec: dict[str, Any],
    expire: int | None = None,
    expire_at: int | None = None,
) -> str:
    """Add one tracker (from its spec) to the group; returns its name."""
    return _add(group_id, [spec], expire, expire_at)[0]


@app.task(base=TrackingTask, bind=True, name="tasks.add_trackers")  # type: ignore[untyped-decorator]
def add_trackers(
    self: TrackingTask,
    group_id: str,
    specs: list[dict[str, Any]],
    expire: int | None = None,
    expire_at: int | None = None,
) -> list[str]:
    """Add trackers atomically (all or none); returns their names.

    ``ConflictingNameError`` when a name is taken by a different tracker;
    the same definitions already present count as success (a redelivered
    message).
    """
    return _add(group_id, specs, expire, expire_at)


def _add(group_id: str, specs: object, expire: int | None, expire_at: int | None) -> list[str]:
    trackers = _trackers(specs)
    try:
        runtime.get_manager().add_trackers(group_id, trackers, expire=expire, expire_at=expire_at)
    except ConflictingNameError:
        if not _already_there(group_id, trackers):
            raise
    drain_soon()
    return [t.name for t in trackers]


@app.task(base=TrackingTask, bind=True, name="tasks.update_tracker")  # type: ignore[untyped-decorator]
def update_tracker(self: TrackingTask, group_id: str, spec: dict[str, Any]) -> str:
    """Replace (or add) a tracker's definition, and its state when the spec has ``state``."""
    tracker = tracker_from_spec(spec)
    runtime.get_manager().update_tracker(group_id, tracker)
    drain_soon()
    return tracker.name


@app.task(base=TrackingTask, bind=True, name="tasks.remove_tracker")  # type: ignore[untyped-decorator]
def remove_tracker(
    self: TrackingTask, group_id: str, name: str | list[str] | None = None
) -> list[str]:
    """Remove the named trackers (all when None); returns the names removed."""
    removed = [t.name for t in runtime.get_manager().remove_tracker(group_id, name)]
    drain_soon()
    return removed


@app.task(base=TrackingTask, bind=True, name="tasks.reset")  # type: ignore[untyped-decorator]
def reset(
    self: TrackingTask,
    group_id: str,
    name: str | list[str] | None = None,
    reset_policy: int | None = None,
) -> list[str]:
    """Reset the named trackers (all of the group's when None); returns those reset.

    ``reset_policy`` (``ResetPolicy`` flags as an int) overrides each
    tracker's own policy.
    """
    manager = runtime.get_manager()
    if name is None:
        names = [t.name for t in manager.get_trackers(group_id)]
    elif isinstance(name, str):
        names = [name]
    elif isinstance(name, list):
        names = name
    else:
        raise TrackingTypeError(f"name must be a str, a list or None, not {type(name).__name__}")
    done = [n for n in names if manager.reset_tracker(group_id, n, reset_policy)]
    drain_soon()
    return done
