"""The Celery service's pure parts, without servers: config, handler registry, outbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celery_app import handlers
from celery_app.celeryconfig import QUEUES, TASK_QUEUES, build_config
from celery_app.outbox import drain
from config.settings import Settings
from tracking import CountTracker, KeyValueEQ, TrackingManager
from tracking.cache.memory import MemoryDataCache
from tracking.errors import TrackingValueError
from tracking.events import EVENT_TRACKER_ADDED, EVENT_TRACKER_ALL_COMPLETED
from tracking.firing import record_payload
from tracking.store.memory import MemoryDataStore


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    handlers.unregister_all()
    yield
    handlers.unregister_all()


# -- configuration ---------------------------------------------------------------


def test_config_is_json_only_acks_late_and_routes_by_role() -> None:
    conf = build_config(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//"))
    assert conf["accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"]
    assert conf["broker_transport_options"]["confirm_publish"] is True
    assert {q.name for q in conf["task_queues"]} == set(QUEUES)
    assert conf["task_routes"]["tasks.track"]["queue"] == "tracking.batch"
    assert conf["task_routes"]["tasks.track_one"]["queue"] == "tracking"
    assert conf["task_routes"]["tasks.reset"]["queue"] == "admin"
    assert conf["task_routes"]["tasks.events.dispatch_event"]["queue"] == "events"
    assert set(TASK_QUEUES.values()) <= set(QUEUES)
    jobs = {job["task"] for job in conf["beat_schedule"].values()}
    assert jobs == {
        "tasks.flush_dirty",
        "tasks.drain_outbox",
        "tasks.expire_sweep",
        "tasks.reset_due",
        "tasks.repair_indexes",
    }


def test_redis_visibility_timeout_stays_above_the_retry_backoff() -> None:
    conf = build_config(
        Settings(
            broker_url="redis://127.0.0.1:6379/3",
            visibility_timeout_seconds=60,
            retry_backoff_max_seconds=600,
            broker_transport_options={"global_keyprefix": "x:"},
        )
    )
    options = conf["broker_transport_options"]
    assert options["visibility_timeout"] == 1200
    assert options["global_keyprefix"] == "x:"
    # a worker killed while restoring must not hold back redeliveries for 5 minutes
    assert options["unacked_mutex_expire"] == 30


def test_quorum_queues_are_a_setting_with_publisher_confirms() -> None:
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    classic = build_config(Settings(broker_url=amqp))
    assert all(not q.queue_arguments for q in classic["task_queues"])
    assert classic["task_default_queue_type"] == "classic"
    conf = build_config(Settings(broker_url=amqp, rabbitmq_quorum_queues=True))
    assert {q.name for q in conf["task_queues"]} == set(QUEUES)
    assert all(q.queue_arguments == {"x-queue-type": "quorum"} for q in conf["task_queues"])
    assert conf["task_default_queue_type"] == "quorum"
    assert conf["broker_transport_options"]["confirm_publish"] is True
    # a Redis broker has no queue types: the setting changes nothing there
    redis_conf = build_config(Settings(broker_url="redis://x/1", rabbitmq_quorum_queues=True))
    assert all(not q.queue_arguments for q in redis_conf["task_queues"])


def test_a_cluster_cache_needs_a_named_broker() -> None:
    from tracking.errors import TrackingValueError

    cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    with pytest.raises(TrackingValueError, match="TRACKING_BROKER_URL"):
        build_config(Settings(redis_url=cluster))
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    assert build_config(Settings(redis_url=cluster, broker_url=amqp))["broker_url"] == amqp


# -- handler registry ------------------------------------------------------------


def test_on_event_by_code_name_or_all() -> None:
    @handlers.on_event(EVENT_TRACKER_ALL_COMPLETED)
    def by_code(event: dict[str, Any]) -> None: ...

    @handlers.on_event("stage_completed", "EVENT_TRACKER_RESET")
    def by_name(event: dict[str, Any]) -> None: ...

    @handlers.on_event()
    def every(event: dict[str, Any]) -> None: ...

    assert handlers.handlers_for(EVENT_TRACKER_ALL_COMPLETED) == [
        handlers.handler_name(by_code),
        handlers.handler_name(every),
    ]
    assert handlers.registered()[handlers.handler_name(by_name)] == ["STAGE_COMPLETED", "RESET"]
    assert handlers.get_handler(handlers.handler_name(every)) is every


def test_unknown_codes_and_handlers_are_input_errors() -> None:
    with pytest.raises(TrackingValueError, match="unknown event code"):
        handlers.on_event("FINISHED")
    with pytest.raises(handlers.UnknownHandlerError):
        handlers.get_handler("os:system")  # never imported from a message


def test_load_handlers_from_import_paths() -> None:
    handlers.load_handlers(["tests.support.celery_handlers:grant_reward"])
    assert "tests.support.celery_handlers:grant_reward" in handlers.handlers_for(
        EVENT_TRACKER_ALL_COMPLETED
    )
    with pytest.raises(TrackingValueError, match="no 'missing'"):
        handlers.load_handlers(["tests.support.celery_handlers:missing"])
    with pytest.raises(TrackingValueError, match="module"):
        handlers.load_handlers(["no_such_module_here"])


# -- outbox -> publish -> ack ----------------------------------------------------


def _manager() -> TrackingManager:
    manager = TrackingManager(MemoryDataCache(), MemoryDataStore())
    manager.add_tracker("u1", CountTracker("logins", [KeyValueEQ("kind", "login")], [1, 2]))
    manager.add_tracker("u1", CountTracker("other", [KeyValueEQ("kind", "x")], 5))
    return manager


def test_drain_publishes_each_event_to_each_handler_then_acks() -> None:
    @handlers.on_event()
    def every(event: dict[str, Any]) -> None: ...

    @handlers.on_event(EVENT_TRACKER_ALL_COMPLETED)
    def reward(event: dict[str, Any]) -> None: ...

    manager = _manager()
    manager.track("u1", {"kind": "login"})
    manager.track("u1", {"kind": "login"})
    published: list[tuple[str, dict[str, Any]]] = []
    report = drain(manager, lambda name, event: published.append((name, event)))
    kinds = sorted(e["event"] for name, e in published if name.endswith("every"))
    assert kinds == ["ADDED", "ADDED", "ALL_COMPLETED", "STAGE_COMPLETED"]
    rewards = [e for name, e in published if name.endswith("reward")]
    assert len(rewards) == 1 and rewards[0]["name"] == "logins"
    assert rewards[0]["progress"] == 2 and rewards[0]["group_id"] == "u1"
    assert report.entries == 4 and report.published == 5
    assert manager.data_cache.outbox() == []
    assert drain(manager, lambda *_: None).entries == 0


def test_a_failed_publish_leaves_the_batch_in_the_outbox() -> None:
    @handlers.on_event()
    def every(event: dict[str, Any]) -> None: ...

    manager = _manager()

    def broken(name: str, event: dict[str, Any]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        drain(manager, broken)
    assert len(manager.data_cache.outbox()) == 2
    seen: list[str] = []
    drain(manager, lambda name, event: seen.append(event["event_id"]))
    assert len(seen) == 2  # published on the next drain: at-least-once


def test_outbox_records_become_payloads_and_unusable_ones_are_refused() -> None:
    manager = _manager()
    entries = manager.outbox()
    added = record_payload(entries[0].group_id, entries[0].entry_id, entries[0].payload)
    assert added is not None and added["code"] == EVENT_TRACKER_ADDED
    assert added == {
        "event_id": entries[0].entry_id,
        "code": EVENT_TRACKER_ADDED,
        "event": "ADDED",
        "event_ts": added["event_ts"],
        "group_id": "u1",
        "name": "logins",
        "stage": 0,
        "progress": 0,
        "limiter": None,
    }
    assert isinstance(added["event_ts"], float) and added["event_ts"] > 0
    assert record_payload("u1", "x", {"code": 42, "name": "n"}) is None
    assert record_payload("u1", "x", {"code": EVENT_TRACKER_ADDED}) is None
