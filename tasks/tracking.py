"""The hot path: ``track``, ``track_one`` and ``track_many``.

``track(group_id, data, event_id=None)`` is what web apps call, one
message per event. The worker consumes those messages in bulk and applies
each batch with ``TrackingManager.track_many`` (one cache round trip per
batch; see :mod:`tasks.batching` and :mod:`celery_app.batching`).
``track_one`` is the same event as one task per message (today's Celery
path, kept for comparison and for callers that want it).

All ignore results (no result-backend traffic) and are deduplicated by
event id inside the engine's atomic step, so a message redelivered after a
worker died (``acks_late``) never counts twice: the event id of ``track``
and ``track_one`` defaults to the Celery task id, which a redelivery keeps,
and ``track_many``'s per-event ids default to ``"<task id>:<index>"``.

When an event fires follow-up events, the task publishes them right away
(the same payload a drain of the outbox would send) and acknowledges their outbox entries
(one extra Redis round trip, only then), so handlers run within
milliseconds instead of waiting for beat's next drain.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

from celery_batches import SimpleRequest

from celery_app import activity, metrics, runtime
from celery_app.app import app
from config.settings import get_settings
from tasks.base import BACKEND_ERRORS, INPUT_ERRORS, TrackingTask
from tasks.batching import (
    DUPLICATE,
    FAILED,
    REQUEUE,
    RETRIED,
    TrackingBatchTask,
    describe,
    outcome,
)
from tasks.events import publish_now
from tracking.errors import TrackingError, TrackingTypeError, TrackingValueError
from tracking.events import EVENT_NAMES, TrackerEvent
from tracking.manager import TrackingManager, TrackResult

logger = logging.getLogger(__name__)
_settings = get_settings()

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


@app.task(  # type: ignore[untyped-decorator]
    base=TrackingBatchTask,
    bind=True,
    name="tasks.track",
    ignore_result=True,
    flush_every=_settings.batch_size,
    flush_interval=_settings.batch_flush_ms / 1000,
    single_task_name="tasks.track_one",
)
def track(self: TrackingBatchTask, requests: list[SimpleRequest]) -> dict[str, dict[str, str]]:
    """Apply single events, received as ``track.delay(group_id, data, event_id=None)``, in bulk.

    Each message carries one event (a JSON object) for one group; its
    event id defaults to the message's task id. The batch goes to the cache
    in one round trip. A message with bad input fails alone (not retried)
    and the rest are applied; a backend error retries the whole batch by
    the base task's policy (events already applied are recognised as
    duplicates). Returns the outcome of the messages that were not simply
    applied, which :class:`tasks.batching.TrackingBatchTask` turns into
    acknowledgements.
    """
    result = outcome()
    errors = metrics.metrics().errors
    owners: list[SimpleRequest] = []
    events: list[tuple[str, dict[str, Any], str | None]] = []
    for req in requests:
        try:
            group_id, data, event_id = _unpack(req.args, req.kwargs)
        except TrackingError as exc:
            result[FAILED][req.id] = describe(exc)
            errors.labels(task=self.name, kind="input").inc()
            continue
        owners.append(req)
        events.append((group_id, data, event_id or req.id))
    duplicates = _apply_batch(self, owners, events, result) if events else 0
    retried = len(result[RETRIED]) + len(result[REQUEUE])
    logger.info(
        "track batch of %d: %d applied, %d duplicate, %d failed, %d retried",
        len(requests),
        len(requests) - duplicates - len(result[FAILED]) - retried,
        duplicates,
        len(result[FAILED]),
        retried,
    )
    return result


def _apply_batch(
    task: TrackingBatchTask,
    owners: list[SimpleRequest],
    events: list[tuple[str, dict[str, Any], str | None]],
    result: dict[str, dict[str, str]],
) -> int:
    """Apply the events, fill ``result`` with those not simply applied; returns the duplicates."""
    manager = runtime.get_manager()
    try:
        applied: Sequence[TrackResult | BaseException] = manager.track_many(events)
    except BACKEND_ERRORS as exc:
        task.retry_batch(owners, exc, result)
        return 0
    except Exception:
        # Not bad input (that comes back per event) nor the backend: apply
        # one by one so that whatever raised fails alone.
        logger.exception("track_many raised; applying the batch one event at a time")
        applied = [_apply_one(manager, event) for event in events]
    errors = metrics.metrics().errors
    fired: list[TrackerEvent] = []
    backend_failed: list[SimpleRequest] = []
    backend_error: BaseException | None = None
    duplicates = completions = tracked = 0
    for req, one in zip(owners, applied, strict=True):
        if isinstance(one, BACKEND_ERRORS):
            backend_failed.append(req)
            backend_error = one
        elif isinstance(one, BaseException):
            result[FAILED][req.id] = describe(one)
            kind = "input" if isinstance(one, INPUT_ERRORS) else "other"
            errors.labels(task=task.name, kind=kind).inc()
        else:
            _record(one)
            duplicates += one.duplicate
            if one.duplicate:
                result[DUPLICATE][req.id] = ""
            if not one.duplicate:
                tracked += 1
                completions += len(one.completed)
                fired.extend(one.events)
    activity.note_tracked(tracked, completions)
    publish_now(fired)
    if backend_error is not None:
        task.retry_batch(backend_failed, backend_error, result)
    return duplicates


def _unpack(args: Any, kwargs: Any) -> tuple[str, dict[str, Any], str | None]:
    """``(group_id, data, event_id)`` from a message's arguments, or a typed error."""
    try:
        bound = _signature.bind(*(args or ()), **(kwargs or {}))
    except TypeError as exc:
        raise TrackingTypeError(f"track(group_id, data, event_id=None): {exc}") from None
    values = bound.arguments
    group_id, data, event_id = values["group_id"], values["data"], values.get("event_id")
    if not isinstance(group_id, str):
        raise TrackingTypeError(f"group_id must be a str, not {type(group_id).__name__}")
    if not isinstance(data, dict):
        raise TrackingTypeError(f"data must be an object, not {type(data).__name__}")
    if event_id is not None and not isinstance(event_id, str):
        raise TrackingTypeError(f"event_id must be a str or null, not {type(event_id).__name__}")
    return group_id, data, event_id


def _signature_of(group_id: str, data: dict[str, Any], event_id: str | None = None) -> None:
    """The public signature of ``track`` (its messages are bound against it)."""


_signature = inspect.signature(_signature_of)


def _apply_one(
    manager: TrackingManager, event: tuple[str, dict[str, Any], str | None]
) -> TrackResult | BaseException:
    try:
        return manager.track(*event)
    except BACKEND_ERRORS as exc:
        return exc
    except Exception as exc:
        logger.exception("track failed for event %s", event[2])
        return exc


@app.task(base=TrackingTask, bind=True, name="tasks.track_one", ignore_result=True)  # type: ignore[untyped-decorator]
def track_one(
    self: TrackingTask, group_id: str, data: dict[str, Any], event_id: str | None = None
) -> dict[str, Any]:
    """Apply one event (a JSON object) to the group's trackers, one task per message.

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


__all__ = ["noop", "track", "track_many", "track_one"]
