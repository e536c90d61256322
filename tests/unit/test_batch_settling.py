"""The batching path of ``track`` without servers: outcomes, acknowledgements, retries.

The batch function runs against an in-process manager; acknowledgement and
retry decisions are checked on stand-ins for Celery's requests. The real
worker, brokers and kills are in ``tests/integration/test_celery_batching.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from celery_batches import SimpleRequest

import tasks.tracking as tracking_tasks
from celery_app import activity, batching, runtime
from celery_app.app import app
from celery_app.celeryconfig import QUEUE_TRACK_BATCH
from config.settings import get_settings
from tasks import track
from tasks.base import INPUT_ERRORS
from tasks.batching import DUPLICATE, FAILED, REQUEUE, RETRIED, outcome
from tracking import CountTracker, KeyValueEQ, TrackingManager
from tracking.cache.memory import MemoryDataCache
from tracking.errors import BackendError
from tracking.events import EVENT_TRACKER_ALL_COMPLETED, TrackerEvent
from tracking.store.memory import MemoryDataStore


def _req(task_id: str, *args: Any, retries: int = 0, **kwargs: Any) -> SimpleRequest:
    return SimpleRequest(
        task_id,
        "tasks.track",
        args,
        kwargs,
        {},
        "test",
        True,
        None,
        None,
        {"id": task_id, "retries": retries},
    )


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> TrackingManager:
    # The dashboard's activity counts go to Redis; none runs here.
    monkeypatch.setattr(activity, "note_tracked", lambda *args: None)
    m = TrackingManager(MemoryDataCache(), MemoryDataStore())
    m.add_tracker("g", CountTracker("hits", [KeyValueEQ("k", 1)], 100))
    monkeypatch.setattr(runtime, "get_manager", lambda: m)
    return m


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[TrackerEvent]:
    sent: list[TrackerEvent] = []
    monkeypatch.setattr(tracking_tasks, "publish_now", sent.extend)
    return sent


@pytest.fixture
def republished(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Retries the batch task publishes (instead of a broker)."""
    copies: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def producer() -> Iterator[None]:
        yield None

    monkeypatch.setattr(app, "producer_or_acquire", producer)
    monkeypatch.setattr(track, "apply_async", lambda **options: copies.append(options))
    return copies


def _progress(m: TrackingManager) -> float:
    return m.get_trackers("g", "hits")[0].progress


def test_flush_settings_come_from_the_settings() -> None:
    settings = get_settings()
    assert track.flush_every == settings.batch_size
    assert track.flush_interval == settings.batch_flush_ms / 1000
    assert settings.batch_flush_ms <= 100 and settings.batch_prefetch >= settings.batch_size
    assert track.acks_late


def test_batch_applies_events_once_and_publishes_follow_ups(
    manager: TrackingManager, published: list[TrackerEvent]
) -> None:
    manager.add_tracker("g", CountTracker("three", [KeyValueEQ("k", 1)], 3))
    result = track.run(
        [
            _req("t1", "g", {"k": 1}),
            _req("t1", "g", {"k": 1}),  # the same message twice: counted once
            _req("t2", "g", {"k": 1}, event_id="e"),
            _req("t3", "g", {"k": 1}, event_id="e"),  # the caller's id wins over the task id
            _req("t4", group_id="g", data={"k": 1}),
        ]
    )
    assert result[FAILED] == result[RETRIED] == result[REQUEUE] == {}
    assert set(result[DUPLICATE]) == {"t1", "t3"}
    assert _progress(manager) == 3
    completed = [e for e in published if e.code == EVENT_TRACKER_ALL_COMPLETED]
    assert [e.name for e in completed] == ["three"]


def test_bad_events_fail_alone(manager: TrackingManager, published: list[TrackerEvent]) -> None:
    result = track.run(
        [
            _req("ok1", "g", {"k": 1}),
            _req("bad1", "g", "not an object"),
            _req("bad2", "", {"k": 1}),
            _req("bad3", "g"),
            _req("bad4", "g", {"k": float("nan")}),
            _req("ok2", "g", {"k": 1}),
        ]
    )
    assert set(result[FAILED]) == {"bad1", "bad2", "bad3", "bad4"}
    assert "TrackingTypeError" in result[FAILED]["bad1"]
    assert result[RETRIED] == result[REQUEUE] == {}
    assert _progress(manager) == 2


def test_backend_error_retries_every_message_by_the_base_policy(
    manager: TrackingManager,
    monkeypatch: pytest.MonkeyPatch,
    republished: list[dict[str, Any]],
) -> None:
    def down(events: Any) -> Any:
        raise BackendError("redis is down")

    monkeypatch.setattr(manager, "track_many", down)
    result = track.run(
        [_req("a", "g", {"k": 1}), _req("b", "g", {"k": 1}, retries=3), _req("c", "g", "x")]
    )
    assert set(result[RETRIED]) == {"a", "b"} and set(result[FAILED]) == {"c"}
    by_id = {copy["task_id"]: copy for copy in republished}
    assert by_id["a"]["retries"] == 1 and by_id["b"]["retries"] == 4
    assert by_id["b"]["args"] == ("g", {"k": 1})
    for copy in republished:
        assert 0 <= copy["countdown"] <= track.retry_backoff_max


def test_retries_stop_at_max_retries_and_unpublishable_retries_are_requeued(
    monkeypatch: pytest.MonkeyPatch, republished: list[dict[str, Any]]
) -> None:
    into = outcome()
    monkeypatch.setattr(track, "max_retries", 2)
    track.retry_batch([_req("spent", "g", {}, retries=2)], BackendError("x"), into)
    assert set(into[FAILED]) == {"spent"} and not republished

    def broken(**options: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(track, "apply_async", broken)
    into = outcome()
    track.retry_batch([_req("r", "g", {})], BackendError("x"), into)
    assert set(into[REQUEUE]) == {"r"}


class _Request:
    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.calls: list[tuple[str, Any]] = []

    def acknowledge(self) -> None:
        self.calls.append(("ack", None))

    def reject(self, requeue: bool = False) -> None:
        self.calls.append(("reject", requeue))

    def send_event(self, kind: str, **fields: Any) -> None:
        self.calls.append((kind, fields.get("exception")))


def test_each_message_is_settled_by_its_outcome() -> None:
    reqs = [_Request(i) for i in ("ok", "bad", "again", "back")]
    result = outcome()
    result[FAILED]["bad"] = "TrackingTypeError: no"
    result[RETRIED]["again"] = "BackendError: down"
    result[REQUEUE]["back"] = "BackendError: down"
    track._settle(reqs, result, 0.01)
    assert reqs[0].calls == [("ack", None), ("task-succeeded", None)]
    assert reqs[1].calls == [("ack", None), ("task-failed", "TrackingTypeError: no")]
    assert reqs[2].calls == [("ack", None), ("task-retried", "BackendError: down")]
    assert reqs[3].calls == [("reject", True)]


def test_a_batch_that_raised_or_lost_its_process_is_requeued_whole() -> None:
    reqs = [_Request("x"), _Request("y")]
    track._settle(reqs, None, 0.0)  # what celery-batches returns when the batch raised
    assert all(r.calls == [("reject", True)] for r in reqs)


class _Queues(dict[str, str]):
    def __init__(self, names: list[str]) -> None:
        super().__init__({n: n for n in names})
        self.consume_from = dict(self)

    def deselect(self, names: list[str]) -> None:
        for name in names:
            self.consume_from.pop(name, None)


class _Parent:
    def __init__(self, queues: _Queues) -> None:
        self.app = type("App", (), {"amqp": type("AMQP", (), {"queues": queues})()})()


def test_batch_queue_leaves_the_worker_wide_consumer_when_selected() -> None:
    queues = _Queues([QUEUE_TRACK_BATCH, "tracking", "admin"])
    step = batching.BatchQueueConsumer(_Parent(queues))
    assert step.enabled and QUEUE_TRACK_BATCH not in queues.consume_from
    assert "tracking" in queues.consume_from

    other = _Queues([QUEUE_TRACK_BATCH, "admin"])
    other.deselect([QUEUE_TRACK_BATCH])  # a worker started with -Q admin
    step = batching.BatchQueueConsumer(_Parent(other))
    assert not step.enabled and step.get_consumers(None) == []


def test_eager_calls_run_the_one_task_per_message_path(manager: TrackingManager) -> None:
    ok = track.apply(args=("g", {"k": 1}))
    assert ok.successful() and ok.result["duplicate"] is False
    bad = track.apply(args=("g", "not an object"))
    assert bad.failed() and isinstance(bad.result, INPUT_ERRORS)
    assert _progress(manager) == 1
