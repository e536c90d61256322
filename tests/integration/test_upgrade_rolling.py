"""A rolling upgrade's two releases on one Redis, as ``docs/deploy.md`` ("Upgrades") says.

A release that changes any Lua script gets a new Functions library name (or
new EVALSHA digests on Redis 6.2), so while old and new workers both run,
each calls its own scripts on the same keys. Here two caches on one prefix
stand for the two releases (the "new" one's scripts differ by a comment, so
its library name differs): they apply events to the same group in turn,
recognise each other's event ids as duplicates, and count exactly.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from tests.support.redis_fixtures import redis_client
from tracking import CountTracker, KeyValueEQ, MemoryDataStore, RedisDataCache, TrackingManager
from tracking.cache.redis import _load_sources

pytestmark = pytest.mark.redis

GROUP = "user-1"


def _libraries(client: Any) -> set[str]:
    """``FUNCTION LIST LIBRARYNAME trk_*`` (the guide's command), on every primary of a cluster."""
    command = ("FUNCTION", "LIST", "LIBRARYNAME", "trk_*")
    if isinstance(client, RedisCluster):
        replies = [client.execute_command(*command, target_nodes=n) for n in client.get_primaries()]
    else:
        replies = [client.execute_command(*command)]
    # redis-py parses each library into a dict
    return {entry[b"library_name"].decode() for reply in replies for entry in reply}


def test_old_and_new_scripts_share_a_group_during_a_rolling_upgrade(
    redis_url: str, redis_prefix: str
) -> None:
    old = RedisDataCache(redis_url, key_prefix=redis_prefix)
    new = RedisDataCache(redis_url, key_prefix=redis_prefix)
    lib, bodies = _load_sources()
    new._set_sources(lib + f"\n-- next release {uuid.uuid4().hex}\n", bodies)
    assert new._library != old._library
    client = redis_client(redis_url)
    store = MemoryDataStore()
    workers = [TrackingManager(old, store), TrackingManager(new, store)]
    try:
        workers[0].add_tracker(
            GROUP, CountTracker("paid", [KeyValueEQ("status", "paid")], target=[10, 50])
        )
        for n in range(30):
            workers[n % 2].track(GROUP, {"status": "paid"}, event_id=f"e{n}")
        # each release recognises the other's event ids
        assert workers[1].track(GROUP, {"status": "paid"}, event_id="e0").duplicate
        assert workers[0].track(GROUP, {"status": "paid"}, event_id="e1").duplicate
        for manager in workers:
            (tracker,) = manager.get_trackers(GROUP, "paid")
            assert tracker.progress == 30 and tracker.target == 50
        if old._functions and new._functions:  # Redis >= 7: two libraries side by side
            assert {old._library, new._library} <= _libraries(client)
    finally:
        # The "new" library is this test's own; the old one is the product's (shared).
        nodes = client.get_primaries() if isinstance(client, RedisCluster) else [None]
        for node in nodes:
            where = {} if node is None else {"target_nodes": node}
            with contextlib.suppress(redis.ResponseError):  # not loaded there, or Redis < 7
                client.execute_command("FUNCTION", "DELETE", new._library, **where)
        old.close()
        new.close()
        client.close()
