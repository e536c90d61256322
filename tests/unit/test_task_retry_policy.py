"""The tasks' retry policy, without servers: unlimited for events, bounded for beat jobs.

The behaviour through a real worker (an outage longer than any fixed
budget drops nothing) is in ``tests/integration/test_celery_faults.py``;
these check the parts a worker cannot easily show.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Task
from celery.exceptions import Reject

from tasks import add_tracker, flush_dirty, track, track_many
from tasks.base import MAINTENANCE_MAX_RETRIES, TrackingTask, retry_countdown
from tracking.errors import CacheError


def test_event_and_admin_tasks_retry_backend_errors_without_limit() -> None:
    for task in (track, track_many, add_tracker):
        assert task.max_retries is None, task.name
        assert issubclass(CacheError, task.autoretry_for)
    assert flush_dirty.max_retries == MAINTENANCE_MAX_RETRIES  # beat sends the next run


def test_backoff_is_capped() -> None:
    assert all(0 <= retry_countdown(n, maximum=7) <= 7 for n in range(200))
    assert max(retry_countdown(30, maximum=7) for _ in range(200)) > 0


def test_a_retry_that_cannot_be_published_requeues_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery rejects without requeue (dropping the message) when the copy fails to publish."""

    def celery_retry(self: Task, *args: Any, **kwargs: Any) -> Any:
        raise Reject(ConnectionError("broker down"), requeue=False)

    monkeypatch.setattr(Task, "retry", celery_retry)
    with pytest.raises(Reject) as caught:
        TrackingTask.retry(track, exc=CacheError("redis down"))
    assert caught.value.requeue is True
    assert isinstance(caught.value.reason, ConnectionError)
