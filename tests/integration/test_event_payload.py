"""The follow-up event payload is the same on both delivery paths, for both caches.

A ``track`` task publishes the events it fired at once
(:func:`celery_app.outbox.publish_fired`, from the event objects the
manager returned); beat's ``drain_outbox`` re-publishes whatever is left in
the outbox (:func:`celery_app.outbox.drain`, from the compact outbox
records). Both must hand handlers the same payload, field by field, for
every event type ``track`` can fire, with the in-process cache and with
Redis (whose outbox records go through Lua and back). The README's example
payloads are checked against real ones too.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_app import handlers
from celery_app.outbox import drain, publish_fired
from tests.support.redis_fixtures import delete_prefix
from tracking import (
    CountLimiter,
    CountTracker,
    KeyValueEQ,
    ResetPeriod,
    TrackingManager,
)
from tracking.cache.base import DataCache
from tracking.cache.memory import MemoryDataCache
from tracking.events import EVENT_ALL, EVENT_NAMES, TrackerEvent
from tracking.store.memory import MemoryDataStore

README = Path(__file__).resolve().parents[2] / "README.md"

FIELDS = ["event_id", "code", "event", "event_ts", "group_id", "name", "stage", "progress"]


@pytest.fixture(autouse=True)
def catch_all_handler() -> Iterator[None]:
    handlers.unregister_all()

    @handlers.on_event()
    def every(event: dict[str, Any]) -> None: ...

    yield
    handlers.unregister_all()


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[DataCache]:
    if request.param == "memory":
        yield MemoryDataCache()
        return
    from tracking.cache.redis import RedisDataCache

    url = request.getfixturevalue("server_redis_url")
    prefix = "t" + uuid.uuid4().hex[:8]
    redis_cache = RedisDataCache(url, prefix)
    try:
        yield redis_cache
    finally:
        redis_cache.close()
        delete_prefix(url, prefix)


def _fire_every_track_event(manager: TrackingManager, group: str) -> list[TrackerEvent]:
    """Track events that fire STAGE_COMPLETED, ALL_COMPLETED, LIMITED and RESET."""
    daily = CountTracker("daily", [KeyValueEQ("kind", "login")], 5, reset_period=ResetPeriod("day"))
    daily.state.period = 0  # anchored to a long-gone day: the next event rolls it over
    manager.add_trackers(
        group,
        [
            CountTracker("visits", [KeyValueEQ("kind", "visit")], [2, 3]),
            CountTracker("capped", [KeyValueEQ("kind", "buy")], 10, limiters=[CountLimiter(1)]),
            daily,
        ],
    )
    manager.ack_outbox(manager.outbox(limit=1000))  # the ADDED events: not from track
    events: list[TrackerEvent] = []
    for data in ({"kind": "visit"},) * 3 + ({"kind": "buy"}, {"kind": "login"}):
        result = manager.track(group, data)
        assert result.ok
        events.extend(result.events)
    return events


def test_track_and_drain_publish_identical_payloads(cache: DataCache) -> None:
    manager = TrackingManager(cache, MemoryDataStore())
    events = _fire_every_track_event(manager, "payload-g")
    assert sorted(EVENT_NAMES[e.code] for e in events) == [
        "ALL_COMPLETED",
        "LIMITED",
        "RESET",
        "STAGE_COMPLETED",
    ]

    drained: list[dict[str, Any]] = []
    report = drain(manager, lambda _name, event: drained.append(event))
    assert report.entries == len(events) and report.dropped == 0

    published: list[dict[str, Any]] = []
    publish_fired(manager, lambda _name, event: published.append(event), events)

    # Through JSON, as the broker carries them.
    drained = [json.loads(json.dumps(e)) for e in drained]
    published = [json.loads(json.dumps(e)) for e in published]
    by_id = {e["event_id"]: e for e in drained}
    assert sorted(by_id) == sorted(e["event_id"] for e in published)
    for fast in published:
        slow = by_id[fast["event_id"]]
        assert list(fast) == list(slow) == [*FIELDS, "limiter"]
        for field in fast:
            assert fast[field] == slow[field], (fast["event"], field)
            assert type(fast[field]) is type(slow[field]), (fast["event"], field)

    got = {e["event"]: e for e in published}
    # ``stage`` is 0-based: the stage the event is about, an index into ``target``.
    assert (got["STAGE_COMPLETED"]["stage"], got["STAGE_COMPLETED"]["progress"]) == (0, 2)
    assert (got["ALL_COMPLETED"]["stage"], got["ALL_COMPLETED"]["progress"]) == (1, 3)
    assert got["LIMITED"]["limiter"] == 0 and got["LIMITED"]["name"] == "capped"
    assert (got["RESET"]["name"], got["RESET"]["stage"], got["RESET"]["progress"]) == (
        "daily",
        0,
        0,
    )
    assert all(e["limiter"] is None for e in published if e["event"] != "LIMITED")
    assert manager.outbox() == []


def test_expire_sweep_and_drain_publish_identical_payloads(cache: DataCache) -> None:
    # The expire_sweep task publishes the EXPIRED events sweep_expired returns
    # at once; a drain would publish the same outbox records.
    manager = TrackingManager(cache, MemoryDataStore())
    trial = CountTracker("trial", [KeyValueEQ("kind", "x")], [2, 4])
    manager.add_tracker("expiring-g", trial, expire_at=int(cache.now()) + 1)
    manager.track("expiring-g", {"kind": "x"})
    manager.ack_outbox(manager.outbox(limit=1000))
    events: list[TrackerEvent] = []
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        events = manager.sweep_expired()
        time.sleep(0.2)
    assert [e.code_name for e in events] == ["EXPIRED"]
    drained: list[dict[str, Any]] = []
    drain(manager, lambda _name, event: drained.append(json.loads(json.dumps(event))))
    published: list[dict[str, Any]] = []
    publish_fired(
        manager, lambda _name, event: published.append(json.loads(json.dumps(event))), events
    )
    assert len(drained) == len(published) == 1
    for field in [*FIELDS, "limiter"]:
        assert published[0][field] == drained[0][field], field
        assert type(published[0][field]) is type(drained[0][field]), field
    assert (drained[0]["stage"], drained[0]["progress"]) == (0, 1)


def _readme_payloads() -> dict[str, dict[str, Any]]:
    text = README.read_text()
    section = text.split("### Follow-up event payload", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    payloads = [json.loads(block) for block in blocks]
    return {p["event"]: p for p in payloads}


def test_readme_defines_every_field_and_shows_one_payload_per_event_type() -> None:
    manager = TrackingManager(MemoryDataCache(), MemoryDataStore())
    _fire_every_track_event(manager, "readme-g")
    manager.reset_tracker("readme-g", "capped")
    manager.remove_tracker("readme-g", "capped")
    manager.add_tracker("readme-g", CountTracker("trial", [KeyValueEQ("k", 1)], 1), expire=1)
    real: dict[str, dict[str, Any]] = {}
    drain(manager, lambda _name, event: real.setdefault(event["event"], event))
    examples = _readme_payloads()
    assert sorted(examples) == sorted(EVENT_NAMES[code] for code in EVENT_ALL)
    text = README.read_text().split("### Follow-up event payload", 1)[1].split("\n## ", 1)[0]
    for field in [*FIELDS, "limiter"]:
        assert f"`{field}`" in text, f"README does not define {field}"
    for name, example in examples.items():
        assert list(example) == [*FIELDS, "limiter"], name
        assert example["code"] in EVENT_NAMES and EVENT_NAMES[example["code"]] == name
        if name in real:  # EXPIRED needs a sweep after the expiry: shape checked above
            for field, value in real[name].items():
                assert type(example[field]) is type(value), (name, field)
