"""What only a Redis Cluster cache has: keys on every primary, per-node script
loading, redirections (MOVED, ASK), replica waits and a primary's failover.

The contract, model, concurrency and durability tests also run on the
cluster (the ``cluster`` parameter of ``redis_url``); these are the rest.
All run on the session's local cluster (see ``tests.support.redis_cluster``)
except the failover test, which kills a primary of a cluster of its own.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.contract.cache_contract import count_def, install
from tests.support.redis_cluster import ClusterUnavailable, LocalCluster
from tests.support.redis_fixtures import delete_prefix, redis_client
from tracking import CountTracker, FileDataStore, KeyValueEQ, TrackingManager
from tracking.cache.base import TrackStep
from tracking.cache.redis import RedisDataCache, _load_sources
from tracking.cache.redis.client import cluster_from_url, is_cluster_url
from tracking.cache.redis.cluster import slot_of
from tracking.errors import BackendError, CacheError, TrackingValueError

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix(cluster_redis_url: str) -> Iterator[str]:
    name = "t" + uuid.uuid4().hex[:8]
    yield name
    delete_prefix(cluster_redis_url, name)


def _primaries(client: Any) -> list[redis.Redis]:
    return [node.redis_connection for node in client.get_primaries()]


def _node_of(client: Any, key: str) -> Any:
    return client.nodes_manager.get_node_from_slot(slot_of(key))


def _groups_on_every_primary(client: Any, prefix: str, count: int = 3) -> dict[str, list[str]]:
    """Group ids by the primary (name) that holds them, ``count`` per primary."""
    found: dict[str, list[str]] = {n.name: [] for n in client.get_primaries()}
    i = 0
    while any(len(v) < count for v in found.values()):
        group = f"g{i}"
        i += 1
        node = _node_of(client, "{" + prefix + ":" + group + "}:s").name
        if len(found[node]) < count:
            found[node].append(group)
    return found


def test_cluster_urls_are_parsed_and_checked() -> None:
    assert is_cluster_url("redis+cluster://a:1,b:2") and is_cluster_url("REDISS+CLUSTER://a:1")
    assert not is_cluster_url("redis://a:1/0")
    for bad in (
        "redis+cluster://",
        "redis+cluster://a",
        "redis+cluster://a:1/3",
        "redis+cluster://a:1?x=1",
        "redis://a:1",
    ):
        with pytest.raises(TrackingValueError):
            cluster_from_url(bad)


def test_an_unreachable_cluster_is_a_cache_error() -> None:
    with pytest.raises(CacheError):
        RedisDataCache("redis+cluster://127.0.0.1:1", "tunreachable")


def test_groups_spread_over_every_primary_and_flush_walks_them(
    cluster_redis_url: str, prefix: str
) -> None:
    cache = RedisDataCache(cluster_redis_url, prefix)
    client = redis_client(cluster_redis_url)
    a = count_def("a", 100)
    by_node = _groups_on_every_primary(client, prefix)
    for groups in by_node.values():
        for group in groups:
            version = install(cache, a, group=group)
            cache.apply(group, version, [TrackStep(a, 2)], f"e-{group}")
    assert len(by_node) >= 3
    for node in client.get_primaries():
        keys = list(node.redis_connection.scan_iter(match="{" + prefix + ":*", count=1000))
        assert keys, f"no group keys on {node.name}"
    assert sorted(cache.dirty_groups()) == sorted(g for v in by_node.values() for g in v)
    fresh_process = RedisDataCache(cluster_redis_url, prefix)  # reads definitions across slots
    group = next(iter(by_node.values()))[0]
    assert fresh_process.get_group(group).trackers["a"].state.progress == 2  # type: ignore[union-attr]
    cache.flush()
    for primary in _primaries(client):
        assert not list(primary.scan_iter(match="{" + prefix + ":*", count=1000))
        assert not list(primary.scan_iter(match=prefix + ":*", count=1000))
    cache.close()
    fresh_process.close()


@pytest.mark.parametrize("functions", [True, False], ids=["fcall", "evalsha"])
def test_scripts_missing_on_one_primary_are_loaded_there(
    cluster_redis_url: str, prefix: str, functions: bool
) -> None:
    """Each primary has its own scripts: the one that lost them gets them again,
    and the groups of every primary keep working."""
    cache = RedisDataCache(cluster_redis_url, prefix)
    lib, bodies = _load_sources()
    # scripts no other client has, so that dropping them disturbs nobody
    cache._set_sources(lib + f"\n-- {uuid.uuid4().hex}\n", bodies)
    cache._functions = functions
    client = redis_client(cluster_redis_url)
    a = count_def("a", 100)
    by_node = _groups_on_every_primary(client, prefix, count=1)
    groups = [g for v in by_node.values() for g in v]
    try:
        versions = {group: install(cache, a, group=group) for group in groups}
        for group in groups:
            assert cache.apply(group, versions[group], [TrackStep(a, 1)], "e1").status == "applied"
        victim = client.get_primaries()[0].redis_connection
        if functions:
            victim.execute_command("FUNCTION", "DELETE", cache._library)
        else:
            victim.script_flush()
        for group in groups:  # the hot path: one node answers "not found"
            assert cache.apply(group, versions[group], [TrackStep(a, 1)], "e2").status == "applied"
        if functions:
            for primary in _primaries(client):
                assert primary.execute_command("FUNCTION", "LIST", "LIBRARYNAME", cache._library)
        else:
            for primary in _primaries(client):
                assert all(primary.script_exists(*cache._shas.values()))
        assert [cache.get_group(g).trackers["a"].state.progress for g in groups] == [  # type: ignore[union-attr]
            2
        ] * len(groups)
    finally:
        if functions:
            for primary in _primaries(client):
                with contextlib.suppress(redis.ResponseError):
                    primary.execute_command("FUNCTION", "DELETE", cache._library)
        cache.close()


def test_a_stale_slot_table_follows_moved(
    cluster_redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RedisDataCache(cluster_redis_url, prefix)
    router = cache._router
    assert router is not None
    a = count_def("a", 100)
    version = install(cache, a)
    right = router.node_for_slot(slot_of("{" + prefix + ":group-1}:s"))
    wrong = next(n for n in router.primaries() if n.name != right.name)
    refreshed: list[int] = []
    real_lookup, real_refresh = router.node_for_slot, router.refresh

    def stale_lookup(slot: int) -> Any:
        return wrong if not refreshed else real_lookup(slot)

    def counting_refresh() -> None:
        refreshed.append(1)
        real_refresh()

    monkeypatch.setattr(router, "node_for_slot", stale_lookup)
    monkeypatch.setattr(router, "refresh", counting_refresh)
    assert cache.apply("group-1", version, [TrackStep(a, 3)], "e1").status == "applied"
    assert refreshed  # the wrong node answered MOVED; the table was reloaded
    monkeypatch.undo()
    assert cache.get_group("group-1").trackers["a"].state.progress == 3  # type: ignore[union-attr]
    cache.close()


def _migrate(source: Any, target: Any, slot: int, keys: list[str]) -> None:
    """MIGRATE ``keys`` (of ``slot``, which must be migrating) from source to target."""
    kwargs = target.connection_pool.connection_kwargs
    source.execute_command("MIGRATE", kwargs["host"], kwargs["port"], "", 0, 5000, "KEYS", *keys)


def _finish(source: Any, target: Any, slot: int) -> None:
    target_id = _s(target.execute_command("CLUSTER", "MYID"))
    for node in (target, source):
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def _start_migration(client: Any, key: str) -> tuple[Any, Any, int]:
    """Mark ``key``'s slot as moving from its primary to another one."""
    slot = slot_of(key)
    source = _node_of(client, key).redis_connection
    port = source.connection_pool.connection_kwargs["port"]
    target = next(
        n.redis_connection
        for n in client.get_primaries()
        if n.redis_connection.connection_pool.connection_kwargs["port"] != port
    )
    source_id = _s(source.execute_command("CLUSTER", "MYID"))
    target_id = _s(target.execute_command("CLUSTER", "MYID"))
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    return source, target, slot


def test_slot_migrations_are_followed(cluster_redis_url: str, prefix: str) -> None:
    """Reshard while the cache is used, as ``redis-cli --cluster reshard`` does: an index
    key whose slot is migrating is reached by ASK; a group whose keys are half moved
    gets TRYAGAIN until its slot has moved, then MOVED; nothing is lost."""
    cache = RedisDataCache(cluster_redis_url, prefix, index_shards=1)
    client = redis_client(cluster_redis_url)
    a = count_def("a", 100)
    versions = {group: install(cache, a, group=group) for group in ("g1", "g2")}
    cache.apply("g1", versions["g1"], [TrackStep(a, 1)], "e1")  # g1 is in the work index
    work_key = cache._work_key(0)
    source, target, slot = _start_migration(client, work_key)
    try:
        _migrate(source, target, slot, [work_key])
        assert cache.dirty_groups() == ["g1"]  # ZRANGE: ASK, then ASKING on the target
        cache.apply("g2", versions["g2"], [TrackStep(a, 1)], "e1")  # its index write: ASK too
        assert sorted(cache.dirty_groups()) == ["g1", "g2"]
        _finish(source, target, slot)
    except BaseException:
        for node in (source, target):
            with contextlib.suppress(redis.RedisError):
                node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        raise
    assert sorted(cache.dirty_groups()) == ["g1", "g2"]  # the table was stale: MOVED

    g1_keys = [k for k in cache._group_keys("g1") if client.exists(k)]
    source, target, slot = _start_migration(client, g1_keys[0])
    _migrate(source, target, slot, g1_keys[:1])  # half moved: multi-key calls get TRYAGAIN

    def finish_soon() -> None:
        time.sleep(0.3)
        _migrate(source, target, slot, g1_keys[1:])
        _finish(source, target, slot)

    mover = threading.Thread(target=finish_soon)
    mover.start()
    try:
        assert cache.apply("g1", versions["g1"], [TrackStep(a, 2)], "e2").status == "applied"
    finally:
        mover.join()
    assert cache.get_group("g1").trackers["a"].state.progress == 3  # type: ignore[union-attr]
    assert cache.get_group("g2").trackers["a"].state.progress == 1  # type: ignore[union-attr]
    cache.close()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_wait_replicas_holds_back_a_snapshot_the_replicas_lack(
    cluster_redis_url: str, prefix: str
) -> None:
    cache = RedisDataCache(cluster_redis_url, prefix, wait_replicas=1)
    a = count_def("a", 100)
    version = install(cache, a)
    cache.apply("group-1", version, [TrackStep(a, 4)], "e1")
    snapshot = cache.dirty_snapshot("group-1")
    assert snapshot is not None and snapshot.trackers["a"].state.progress == 4
    greedy = RedisDataCache(cluster_redis_url, prefix, wait_replicas=2, wait_timeout=0.2)
    with pytest.raises(CacheError, match="replicas acknowledged"):
        greedy.dirty_snapshot("group-1")  # each primary has one replica
    cache.close()
    greedy.close()


# -- failover ----------------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A cluster of this test's own (it loses a primary)."""
    import os

    cluster = LocalCluster()
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the cluster tests must run, but: {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


def _track_until_acknowledged(
    manager: TrackingManager, group: str, event_id: str, deadline: float
) -> None:
    """Send one event until the cache acknowledges it (same id: applied at most once)."""
    while True:
        try:
            manager.track(group, {"kind": "hit"}, event_id=event_id)
            return
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _flush_until_done(manager: TrackingManager, deadline: float) -> None:
    while True:
        try:
            report = manager.flush_dirty()
            if not report.failed:
                return
        except BackendError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("write-behind did not succeed before the deadline")
        time.sleep(0.05)


def test_failover_keeps_what_was_flushed_and_the_stream_goes_on(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    """SIGKILL a primary mid-stream: its replica takes over, events acknowledged and
    flushed before the kill are still counted, the stream goes on on every group,
    and nothing is counted twice. With ``wait_replicas=1`` (each flushed state was
    on the replica first). Events acknowledged but not yet replicated when the
    primary died may be lost (asynchronous replication): the test bounds them by
    what was sent since the last flush and reports none lost on the other shards."""
    prefix = "tfail"
    cache = RedisDataCache(own_cluster.url, prefix, wait_replicas=1, wait_timeout=2.0)
    store = FileDataStore(str(tmp_path / "store"))
    manager = TrackingManager(cache, store)
    client = redis_client(own_cluster.url)
    by_node = _groups_on_every_primary(client, prefix, count=3)
    groups = [g for v in by_node.values() for g in v]
    for group in groups:
        manager.add_tracker(group, CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**9))
    acked = dict.fromkeys(groups, 0)
    deadline = time.monotonic() + 120

    def send(rounds: int, tag: str) -> None:
        for r in range(rounds):
            for group in groups:
                _track_until_acknowledged(manager, group, f"{tag}-{r}-{group}", deadline)
                acked[group] += 1

    send(20, "before")
    _flush_until_done(manager, deadline)
    flushed = {g: _stored(store, g) for g in groups}
    assert flushed == acked  # the store holds every acknowledged event so far
    send(5, "unflushed")  # acknowledged, not flushed: may be in the loss window

    victim_name = next(iter(by_node))
    victim_port = int(victim_name.rsplit(":", 1)[1])
    replica_port = own_cluster.replica_of(victim_port)
    own_cluster.kill(victim_port)
    send(10, "during")  # retried until the replica has taken over
    live = [p for p in own_cluster.ports if p != victim_port]
    own_cluster.wait_ok(60, ports=live)
    assert replica_port in own_cluster.primaries()
    send(10, "after")
    # That shard has no replica now, so wait_replicas=1 holds its groups'
    # flushes back (they stay dirty) until the old primary is back as its
    # replica; the other shards' groups flush meanwhile.
    report = manager.flush_dirty()
    stalled = set(by_node[victim_name])
    assert set(report.failed) == stalled
    assert all("replicas acknowledged" in why for why in report.failed.values())
    assert set(report.flushed) == set(groups) - stalled
    own_cluster.restart(victim_port)
    own_cluster.wait_ok(60)
    _flush_until_done(manager, deadline)

    final = {g: _stored(store, g) for g in groups}
    for group in groups:
        assert final[group] >= flushed[group], group  # nothing flushed was lost
        assert final[group] <= acked[group], group  # nothing was counted twice
        assert final[group] >= flushed[group] + 20, group  # the stream went on (during+after)
    survivors = [g for node, v in by_node.items() if node != victim_name for g in v]
    assert all(final[g] == acked[g] for g in survivors)  # other shards lose nothing
    # What asynchronous replication lost on the killed shard (reported, not
    # asserted: it depends on the replication lag at the kill).
    lost = sum(acked[g] - final[g] for g in stalled)
    print(f"failover: {lost} of {5 * len(stalled)} acknowledged, unflushed events lost")
    cache.close()


def _stored(store: FileDataStore, group: str) -> int:
    [record] = store.load_group(group)
    return int(record.state["progress"])
