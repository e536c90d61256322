"""The cache runs under a Redis ACL user limited to its key prefix and the needed commands.

On the machine's Redis (Redis >= 6 ACLs) a user is created with a unique
name for this test only and deleted in teardown. Its rules are the ones
``docs/security.md`` recommends (``ACL_RULES``): keys ``<prefix>:*`` and
``{<prefix>:*`` only, read/write/scripting/transaction/connection command
categories plus TIME, nothing ``@dangerous``. Every cache operation the
workers and beat perform works under it, the server's ACL log records no
refusal for the user while they run, and the user cannot read another
key, list keys, read the config or flush the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tracking import CountTracker, KeyValueEQ, MemoryDataStore, RedisDataCache, TrackingManager

pytestmark = [pytest.mark.redis]

#: The documented rules (docs/security.md); PREFIX is the product's key prefix.
ACL_RULES = (
    "~PREFIX:* ~{PREFIX:* resetchannels "
    "-@all +@read +@write +@scripting +@transaction +@connection +time -@dangerous"
)


@pytest.fixture
def acl_user(server_redis_url: str) -> Iterator[dict[str, Any]]:
    admin = redis.Redis.from_url(server_redis_url)
    try:
        if int(str(admin.info("server")["redis_version"]).split(".")[0]) < 6:
            pytest.skip("Redis ACLs need Redis >= 6")
    except redis.RedisError as exc:
        pytest.fail(f"cannot read the Redis version: {exc}")
    name = f"trk-acl-test-{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    prefix = f"t{uuid.uuid4().hex[:8]}"
    rules = ACL_RULES.replace("PREFIX", prefix).split()
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
    host, _, rest = server_redis_url.partition("://")[2].partition(":")
    url = f"redis://{name}:{password}@{host}:{rest}"
    try:
        yield {"name": name, "url": url, "prefix": prefix, "admin": admin}
    finally:
        admin.execute_command("ACL", "DELUSER", name)
        cleaner = RedisDataCache(server_redis_url, prefix)
        cleaner.flush()  # this test's prefix only
        cleaner.close()
        admin.close()


def _refusals(admin: redis.Redis, user: str) -> list[dict[Any, Any]]:
    entries = admin.execute_command("ACL", "LOG", "128")
    return [e for e in entries if e.get(b"username", e.get("username")) in (user, user.encode())]


def test_cache_works_under_an_acl_user_limited_to_its_prefix(acl_user: dict[str, Any]) -> None:
    cache = RedisDataCache(acl_user["url"], acl_user["prefix"])
    manager = TrackingManager(cache, MemoryDataStore())
    try:
        manager.add_tracker("g", CountTracker("hits", [KeyValueEQ("k", 1)], [2, 5]))
        manager.add_tracker("g", CountTracker("promo", [], 10), expire=3600)
        for index in range(5):
            manager.track("g", {"k": 1}, event_id=f"e{index}")
        assert manager.track("g", {"k": 1}, event_id="e1").duplicate
        manager.track_many([("g", {"k": 1}, "b1"), ("h", {"k": 1}, "b2")])
        assert manager.flush_dirty().flushed == ["g"]
        entries = cache.outbox(100)
        assert {e.payload["code"] for e in entries} >= {1001, 1002, 1003}  # ADDED, STAGE, ALL
        cache.ack_outbox(entries)
        assert manager.sweep_expired() == [] and manager.reset_due() == []
        cache.repair_indexes()
        assert [t.name for t in manager.get_trackers("g")] == ["promo"]
        manager.reset_tracker("g", "promo")
        manager.remove_tracker("g", "promo")
        assert _refusals(acl_user["admin"], acl_user["name"]) == []

        client = redis.Redis.from_url(acl_user["url"])
        for command in (("GET", "not-ours"), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        client.close()
        manager.flush(confirm=True)  # SCAN + UNLINK of the prefix works under the ACL
    finally:
        cache.close()
