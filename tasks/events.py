"""Follow-up event tasks: one ``dispatch_event`` task per (event, handler).

:func:`publish_now` (called by ``track`` with the events it just fired)
and :func:`drain_all` (the ``drain_outbox`` beat job, for whatever is left)
hand outbox entries to the broker, see :mod:`celery_app.outbox` for the
at-least-once argument.

``dispatch_event(handler, event)`` runs one registered handler on one
event. Its task id is derived from the event id and the handler name, and
it keeps a small done-marker in Redis per (event, handler) (kept for the
dedupe window), so a re-published or redelivered event does not run a
handler that already succeeded. While a handler runs it holds a claim
(expiring after ``CLAIM_SECONDS``); a copy that arrives meanwhile retries
later instead of running the handler concurrently. A failing handler is
retried with backoff like any other task. The remaining window (a worker
dying after the handler's side effect but before the done-marker is
written) is why handlers with external effects should also dedupe by
``event["event_id"]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from celery_app import activity, handlers, metrics, runtime
from celery_app.app import app
from celery_app.celeryconfig import QUEUE_EVENTS
from celery_app.outbox import DrainReport, Publisher, drain, publish_fired
from tasks.base import TrackingTask
from tracking.errors import TrackingTypeError
from tracking.events import TrackerEvent

logger = logging.getLogger(__name__)

#: How long a running handler holds its claim (also its soft time limit).
CLAIM_SECONDS = 60


def handler_task_id(event_id: str, handler: str) -> str:
    """The deterministic Celery task id of ``handler`` running on ``event_id``."""
    digest = hashlib.sha256(handler.encode()).hexdigest()[:12]
    return f"ev-{event_id}-{digest}"


@contextlib.contextmanager
def _publisher() -> Iterator[Publisher]:
    """A publish(handler, event) function over one pooled producer."""
    with app.producer_or_acquire() as producer:

        def publish(handler: str, event: dict[str, Any]) -> None:
            dispatch_event.apply_async(
                args=(handler, event),
                task_id=handler_task_id(event["event_id"], handler),
                queue=QUEUE_EVENTS,
                routing_key=QUEUE_EVENTS,
                producer=producer,
            )

        yield publish


def drain_all() -> DrainReport:
    """Drain the outbox (one drain at a time across workers); raises on publish errors."""
    handlers.load_handlers(runtime.settings().event_handlers)
    with _publisher() as publish:
        report = drain(
            runtime.get_manager(),
            publish,
            lock_client=runtime.redis_client(),
            lock_name=runtime.key("drain-lock"),
            record=activity.record_fired,
        )
    if not report.skipped:
        m = metrics.metrics()
        m.published.inc(report.published)
        m.outbox_depth.set(report.entries)
    return report


def drain_soon() -> None:
    """Drain after an admin or maintenance change fired events; never raises.

    Those changes are rare, so a full (locked) drain is cheap; on failure
    beat's ``drain_outbox`` picks the entries up.
    """
    try:
        drain_all()
    except Exception:
        logger.warning("outbox drain failed; drain_outbox will retry", exc_info=True)


def publish_now(events: Sequence[TrackerEvent]) -> None:
    """Publish events a task just fired and ack them; never raises.

    On failure the entries stay in the outbox and beat's ``drain_outbox``
    publishes them.
    """
    if not events:
        return
    try:
        handlers.load_handlers(runtime.settings().event_handlers)
        with _publisher() as publish:
            count = publish_fired(
                runtime.get_manager(), publish, events, record=activity.record_fired
            )
        metrics.metrics().published.inc(count)
    except Exception:
        logger.warning("publishing fired events failed; drain_outbox will retry", exc_info=True)


@app.task(
    base=TrackingTask,
    bind=True,
    name="tasks.events.dispatch_event",
    ignore_result=True,
    autoretry_for=(Exception,),
    soft_time_limit=CLAIM_SECONDS - 10,
)  # type: ignore[untyped-decorator]
def dispatch_event(self: TrackingTask, handler: str, event: dict[str, Any]) -> str:
    """Run the registered ``handler`` on ``event``, once per (event, handler) when it succeeds.

    Returns ``"done"``, or ``"already-done"`` when a copy already ran.
    """
    if not isinstance(handler, str) or not isinstance(event, dict):
        raise TrackingTypeError("dispatch_event takes a handler name and an event object")
    handlers.load_handlers(runtime.settings().event_handlers)
    func = handlers.get_handler(handler)  # UnknownHandlerError: input error, not retried
    event_id = str(event.get("event_id", ""))
    client = runtime.redis_client()
    done_key = runtime.key("ev-done", event_id, handler)
    claim_key = runtime.key("ev-claim", event_id, handler)
    if client.exists(done_key):
        return "already-done"
    token = uuid.uuid4().hex
    if not client.set(claim_key, token, nx=True, ex=CLAIM_SECONDS):
        # Another copy is running it (or died holding the claim): look again
        # once the claim has expired.
        ttl = int(client.ttl(claim_key))
        raise self.retry(countdown=max(ttl, 1) + 1)
    try:
        func(event)
    except BaseException:
        client.delete(claim_key)
        raise
    client.set(done_key, b"1", ex=runtime.settings().dedupe_window_seconds)
    client.delete(claim_key)
    return "done"
