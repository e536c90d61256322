"""The task base class: typed failures, and retries that never drop an event.

Two kinds of failure, handled differently:

- Bad input (``TrackingTypeError``/``TrackingValueError`` and their
  subclasses: invalid specs, events, names) fails the task at once. It is
  listed in ``throws`` so the worker logs it as an expected error (one
  line, no traceback) and it is never retried: the same input would fail
  again, and a poison message must not block the queue.
- Backend trouble (``BackendError``: Redis or store down, timeouts; and
  redis-py connection errors that escape) is retried **without limit** by
  default (``TRACKING_TASK_MAX_RETRIES`` unset), with exponential backoff
  and full jitter capped by ``TRACKING_RETRY_BACKOFF_MAX_SECONDS``: an
  outage of an hour, or a day, delays events but drops none, and each one
  is applied at most one backoff cap after the backend is back. Retrying
  is safe: every mutating task is idempotent or deduplicated by its event
  id, and a retry keeps the task id.

How a retry is made, and why it cannot lose the message: Celery publishes
a copy of the message (same id, ``retries + 1``, the countdown) and only
then acknowledges the original. When the copy cannot be published (the
broker is down as well, e.g. the embedded Redis that is broker and cache),
Celery would *reject the original without requeue*, dropping it; here the
original is requeued instead (:meth:`TrackingTask.retry`), so the broker
delivers it again.

Periodic maintenance jobs (beat's) opt out with a small bound
(:data:`MAINTENANCE_MAX_RETRIES`): beat sends the next run anyway, and
unbounded copies of each run would pile up during an outage.

Any path that retries on its own (the batched ``track`` path) follows the
same policy by reading ``max_retries``, ``retry_backoff_max`` and
``retry_jitter`` from this class, and :func:`retry_countdown`.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from celery import Task
from celery.exceptions import Reject
from celery.utils.time import get_exponential_backoff_interval

from celery_app import metrics
from config.settings import get_settings
from tracking.errors import BackendError, TrackingTypeError, TrackingValueError

INPUT_ERRORS: tuple[type[Exception], ...] = (TrackingTypeError, TrackingValueError)
BACKEND_ERRORS: tuple[type[Exception], ...] = (
    BackendError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
#: Retries of a beat job after a backend error (beat sends the next run anyway).
MAINTENANCE_MAX_RETRIES = 3

_settings = get_settings()


def retry_countdown(retries: int, maximum: int | None = None) -> int:
    """Seconds before retry number ``retries + 1``: exponential, full jitter, capped."""
    cap = _settings.retry_backoff_max_seconds if maximum is None else maximum
    return int(
        get_exponential_backoff_interval(factor=1, retries=retries, maximum=cap, full_jitter=True)
    )


class TrackingTask(Task):  # type: ignore[misc]  # Celery is untyped
    """Base of every task here (see the module docstring)."""

    abstract = True
    throws = INPUT_ERRORS
    autoretry_for = BACKEND_ERRORS
    dont_autoretry_for = INPUT_ERRORS
    retry_backoff = True
    retry_backoff_max = _settings.retry_backoff_max_seconds
    retry_jitter = True
    max_retries = _settings.task_max_retries
    acks_late = True

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry, except that a copy that cannot be published requeues the original.

        Celery raises ``Reject(requeue=False)`` when publishing the retry
        fails, which drops the message; an event must never be dropped
        because the broker was down too.
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as rejected:
            if rejected.requeue:
                raise
            metrics.metrics().errors.labels(task=self.name, kind="requeued").inc()
            raise Reject(rejected.reason, requeue=True) from rejected

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Count the failure by kind (input errors are final, others exhausted retries)."""
        kind = "input" if isinstance(exc, INPUT_ERRORS) else "other"
        if isinstance(exc, BACKEND_ERRORS):
            kind = "backend"
        metrics.metrics().errors.labels(task=self.name, kind=kind).inc()

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Count retries (backend errors, failing handlers)."""
        metrics.metrics().errors.labels(task=self.name, kind="retry").inc()
