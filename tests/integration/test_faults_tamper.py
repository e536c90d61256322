"""Tampered stored records: nothing runs, a clear error names the record, others go on.

Someone who can write to Redis or to the store can put anything where the
product keeps its data. Each test here replaces one record with a payload
that *would* create a marker file if it were unpickled, evaluated or
imported - a pickle whose ``__reduce__`` calls ``os.system``, a Python
expression, a spec whose ``type`` names a module - and checks that:

- the marker file is never created (nothing executed);
- reading or tracking the tampered group fails with a ``TrackingError``
  whose message names the record (group, tracker, key or file);
- another group keeps working (tracked and read exactly).

Records: a tracker's packed state in Redis, a shared definition key in
Redis, a store record (file store), and a POD file of the file store (see
its test for what "keeps working" means there). Errors about Redis records
are ``CacheError`` and about store records ``StoreError``: backend errors,
so a task retries the event until the record is repaired instead of
dropping it.
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tracking import CountTracker, FileDataStore, KeyValueEQ, RedisDataCache, TrackingManager
from tracking.errors import TrackingError

pytestmark = [pytest.mark.redis]


class _Exploit:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def env(server_redis_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "EXECUTED"
    payloads = [
        pickle.dumps(_Exploit(marker)),
        f"__import__('os').system('touch {marker}')".encode(),
    ]
    store_dir = tmp_path / "store"
    manager = TrackingManager(
        RedisDataCache(server_redis_url, prefix), FileDataStore(str(store_dir))
    )
    # Distinct definitions (targets), so tampering one shared definition
    # touches one group only.
    for target, group in enumerate(("victim", "ok"), start=100):
        manager.add_tracker(group, CountTracker("hits", [KeyValueEQ("k", 1)], target))
        manager.track(group, {"k": 1})
    manager.flush_dirty()
    client = redis.Redis.from_url(server_redis_url)
    try:
        yield {
            "manager": manager,
            "prefix": prefix,
            "marker": marker,
            "payloads": payloads,
            "redis": client,
            "store_dir": store_dir,
            "url": server_redis_url,
        }
    finally:
        manager.data_cache.flush()
        manager.data_cache.close()
        client.close()


def _fresh(env: dict[str, Any]) -> TrackingManager:
    """A new manager (no in-memory definitions): what a restarted worker sees."""
    return TrackingManager(
        RedisDataCache(env["url"], env["prefix"]), FileDataStore(str(env["store_dir"]))
    )


def _others_work(manager: TrackingManager) -> None:
    """Group "ok" still tracks and reads exactly (one more event counted)."""
    [before] = manager.get_trackers("ok")
    manager.track("ok", {"k": 1})
    [after] = manager.get_trackers("ok")
    assert after.progress == before.progress + 1


def _refused(call: Any, *names: str) -> TrackingError:
    with pytest.raises(TrackingError) as info:
        call()
    message = str(info.value)
    for name in names:
        assert name in message, f"{name!r} not named in: {message}"
    return info.value


def test_tampered_packed_state_in_redis(env: dict[str, Any]) -> None:
    key = f"{{{env['prefix']}:victim}}:s"
    for payload in env["payloads"]:
        env["redis"].hset(key, "hits", payload)
        for manager in (env["manager"], _fresh(env)):
            _refused(lambda m=manager: m.track("victim", {"k": 1}), "victim", "hits")
            _refused(lambda m=manager: m.get_trackers("victim"), "victim", "hits")
            _others_work(manager)
        assert not env["marker"].exists()


def test_tampered_definition_key(env: dict[str, Any]) -> None:
    client = env["redis"]
    victim_meta = client.hgetall(f"{{{env['prefix']}:victim}}:m")
    digest = victim_meta[b"hits"].decode().split(",")[0]
    key = f"{env['prefix']}:def:{digest}"
    assert client.exists(key)
    bad_specs = [
        *env["payloads"],
        json.dumps({"type": "os.system", "name": "hits", "target": [1]}).encode(),
        json.dumps({"type": "CountTracker", "name": "hits", "target": "__import__('os')"}).encode(),
    ]
    for payload in bad_specs:
        client.set(key, payload)
        manager = _fresh(env)  # a worker without the definition in memory
        _refused(lambda m=manager: m.track("victim", {"k": 1}), key)
        _refused(lambda m=manager: m.get_trackers("victim"), key)
        _others_work(manager)
        assert not env["marker"].exists()


def _evict_victim(env: dict[str, Any]) -> None:
    """Take the victim group out of Redis, so the next event loads it from the store."""
    manager: TrackingManager = env["manager"]
    cache = manager.data_cache
    cache.ack_outbox(cache.outbox(1000))  # its ADDED events were handled
    assert manager.evict("victim")


def _pod_files(env: dict[str, Any]) -> list[Path]:
    return sorted((env["store_dir"] / "records").glob("[0-9]*.json"))


def test_tampered_store_record(env: dict[str, Any]) -> None:
    _evict_victim(env)
    [pod_file] = _pod_files(env)
    original = pod_file.read_text()
    marker = env["marker"]
    tampered_records = [
        {"type": "os.system", "name": "hits", "target": [1]},
        {
            "type": "CountTracker",
            "name": "hits",
            "target": f"__import__('os').system('touch {marker}')",
        },
    ]
    for spec in tampered_records:
        rows = json.loads(original)
        for row in rows:
            if row[2]["group_id"] == "victim":
                row[2]["spec"] = spec
                row[2]["state"] = {"progress": pickle.dumps(_Exploit(marker)).decode("latin-1")}
        pod_file.write_text(json.dumps(rows))
        manager = _fresh(env)
        _refused(lambda m=manager: m.track("victim", {"k": 1}), "victim", "hits")
        _refused(lambda m=manager: m.get_trackers("victim"), "victim", "hits")
        _others_work(manager)
        assert not marker.exists()


def test_tampered_pod_file(env: dict[str, Any]) -> None:
    """A POD file that is not JSON: a process opening the store stops with its name.

    The file store reads all its POD files when it opens, so a corrupt file
    stops a new process from opening the store at all (a clear StoreError
    naming the file); a process that already has the store open keeps
    tracking the groups it holds in Redis.
    """
    _evict_victim(env)
    [pod_file] = _pod_files(env)
    running: TrackingManager = env["manager"]
    for payload in env["payloads"]:
        pod_file.write_bytes(payload)
        _refused(lambda: _fresh(env), str(pod_file))
        _others_work(running)
        assert not env["marker"].exists()
