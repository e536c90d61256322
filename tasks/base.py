"""The task base class: typed failures, bounded retries with backoff.

Two kinds of failure, handled differently:

- Bad input (``TrackingTypeError``/``TrackingValueError`` and their
  subclasses: invalid specs, events, names) fails the task at once. It is
  listed in ``throws`` so the worker logs it as an expected error (one
  line, no traceback) and it is never retried: the same input would fail
  again, and a poison message must not block the queue.
- Backend trouble (``BackendError``: Redis or store down, timeouts; and
  redis-py connection errors that escape) is retried with exponential
  backoff and full jitter, capped by ``TRACKING_RETRY_BACKOFF_MAX_SECONDS``,
  at most ``TRACKING_TASK_MAX_RETRIES`` times. Retrying is safe: every
  mutating task is idempotent or deduplicated by its event id.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from celery import Task

from celery_app import metrics
from config.settings import get_settings
from tracking.errors import BackendError, TrackingTypeError, TrackingValueError

INPUT_ERRORS: tuple[type[Exception], ...] = (TrackingTypeError, TrackingValueError)
BACKEND_ERRORS: tuple[type[Exception], ...] = (
    BackendError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

_settings = get_settings()


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
