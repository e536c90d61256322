"""Celery tasks: thin wrappers over :mod:`tracking`, no domain logic here.

Import what you call::

    from tasks import track
    track.delay("user-42", {"status": "active"})

Names are stable (``tasks.track``, ``tasks.track_many``, ``tasks.add_tracker``,
...), so a process that does not import this package can use
``app.send_task("tasks.track", args=[...])``.
"""

from tasks.admin import add_tracker, add_trackers, remove_tracker, reset, update_tracker
from tasks.events import dispatch_event
from tasks.maintenance import drain_outbox, expire_sweep, flush_dirty, reset_due
from tasks.tracking import noop, track, track_many, track_one

__all__ = [
    "add_tracker",
    "add_trackers",
    "dispatch_event",
    "drain_outbox",
    "expire_sweep",
    "flush_dirty",
    "noop",
    "remove_tracker",
    "reset",
    "reset_due",
    "track",
    "track_many",
    "track_one",
    "update_tracker",
]
