"""The hot path: ``track`` and ``track_many``.

Both ignore results (no result-backend traffic) and are deduplicated by
event id inside the engine's atomic step, so a message redelivered after a
worker died (``acks_late``) never counts twice: ``track``'s event id
defaults to the Celery task id, which a redelivery keeps, and
``track_many``'s per-event ids default to ``"<task id>:<index>"``.

When an event fires follow-up events, the task publishes them right away
(the same payload a drain of the outbox would send) and acknowledges their outbox entries
(one extra Redis round trip, only then), so handlers run within
milliseconds instead of waiting for beat's next drain.
"""

from __future__ import annotations

from typing import Any

from celery_app import activity, metrics, runtime
from celery_app.app import app
from tasks.base import TrackingTask
from tasks.events import publish_now
from tracking.errors import TrackingError, TrackingTypeError, TrackingValueError
from tracking.events import EVENT_NAMES, TrackerEvent
from tracking.manager import TrackResult

#: Largest batch ``track_many`` accepts (a message is held by one process).
MAX_BATCH = 10_000


def _record(result: TrackResult) -> None:
    m = metrics.metrics()
    if result.duplicate:
        m.duplicates.inc()
        return
    m.tracked.inc()
    if result.completed:
        m.completions.inc(len(result.completed))
    if result.limited:
        m.limited.inc(len(result.limited))
    for event in result.events:
        m.fired.labels(event=EVENT_NAMES.get(event.code, str(event.code))).inc()


def _summary(result: TrackResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "duplicate": result.duplicate,
        "event_id": result.event_id,
        "changed": [t.name for t in result.dirtied],
        "completed": [t.name for t in result.completed],
        "limited": [t.name for t in result.limited],
        "events": [e.event_id for e in result.events],
    }


@app.task(base=TrackingTask, bind=True, name="tasks.track", ignore_result=True)  # type: ignore[untyped-decorator]
def track(
    self: TrackingTask, group_id: str, data: dict[str, Any], event_id: str | None = None
) -> dict[str, Any]:
    """Apply one event (a JSON object) to the group's trackers.

    ``event_id`` (default: this task's id) makes the effect exactly-once.
    Returns a small summary (ignored unless results are enabled).
    """
    result = runtime.get_manager().track(group_id, data, event_id or self.request.id)
    _record(result)
    if not result.duplicate:
        activity.note_tracked(1, len(result.completed))
    if not result.duplicate:
        publish_now(result.events)
    return _summary(result)


def _check_batch(events: object) -> list[tuple[str, dict[str, Any], str | None]]:
    """Check the envelope of every event before applying any (data is checked per event)."""
    if not isinstance(events, list):
        raise TrackingTypeError(f"events must be a list, not {type(events).__name__}")
    if len(events) > MAX_BATCH:
        raise TrackingValueError(f"a batch holds at most {MAX_BATCH} events, got {len(events)}")
    out = []
    for index, item in enumerate(events):
        if not isinstance(item, dict):
            raise TrackingTypeError(f"events[{index}] must be an object, not {type(item).__name__}")
        extra = set(item) - {"group_id", "data", "event_id"}
        if extra:
            raise TrackingValueError(f"events[{index}] has unknown fields {sorted(extra)}")
        group_id, data, event_id = item.get("group_id"), item.get("data"), item.get("event_id")
        if not isinstance(group_id, str):
            raise TrackingTypeError(f"events[{index}].group_id must be a str")
        if not isinstance(data, dict):
            raise TrackingTypeError(f"events[{index}].data must be an object")
        if event_id is not None and not isinstance(event_id, str):
            raise TrackingTypeError(f"events[{index}].event_id must be a str or null")
        out.append((group_id, data, event_id))
    return out


@app.task(base=TrackingTask, bind=True, name="tasks.track_many", ignore_result=True)  # type: ignore[untyped-decorator]
def track_many(self: TrackingTask, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a batch of ``{"group_id", "data", "event_id"?}`` events in order.

    The batch goes to the cache in one round trip (``TrackingManager.track_many``).

    Per-event ids default to ``"<task id>:<index>"``, so a retried or
    redelivered batch applies each event once. An event with bad data does
    not stop the others: they are applied, and the task then fails with a
    ``TrackingValueError`` listing the rejected events (not retried). A
    backend error retries the whole batch; events already applied are
    recognised as duplicates.
    """
    batch = _check_batch(events)
    manager = runtime.get_manager()
    applied = duplicates = completions = 0
    rejected: list[str] = []
    fired: list[TrackerEvent] = []
    results = manager.track_many(
        [
            (group_id, data, event_id or f"{self.request.id}:{index}")
            for index, (group_id, data, event_id) in enumerate(batch)
        ]
    )
    for index, result in enumerate(results):
        if isinstance(result, TrackingError):  # bad input; backend errors raise (retry)
            rejected.append(f"events[{index}]: {result}")
            continue
        _record(result)
        if result.duplicate:
            duplicates += 1
        else:
            applied += 1
            completions += len(result.completed)
            fired.extend(result.events)
    activity.note_tracked(applied, completions)
    publish_now(fired)
    if rejected:
        shown = "; ".join(rejected[:10])
        more = f" (and {len(rejected) - 10} more)" if len(rejected) > 10 else ""
        raise TrackingValueError(f"{len(rejected)} of {len(batch)} events rejected: {shown}{more}")
    return {"applied": applied, "duplicates": duplicates, "events": len(fired)}


@app.task(bind=True, name="tasks.noop", ignore_result=True)  # type: ignore[untyped-decorator]
def noop(self: Any, *args: Any, **kwargs: Any) -> None:
    """Do nothing: the ceiling of this setup in the benchmark and a smoke test."""


__all__ = ["noop", "track", "track_many"]
