"""The cache contract on :class:`RedisDataCache`: the server Redis, the embedded one, a cluster.

Plus what only Redis has: its key layout (one hash tag per group, nothing
outside the prefix), NOSCRIPT recovery, error wrapping, the group TTL rule,
index repair and the memory a tracker costs.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.contract.cache_contract import (
    CacheContract,
    CacheFactory,
    G,
    bounds_around,
    count_def,
    fresh,
    install,
    periodic_def,
)
from tests.support.redis_fixtures import redis_client
from tracking.cache.base import ApplyRequest, CachedTracker, DataCache, TrackStep
from tracking.cache.redis import RedisDataCache, pack_state, unpack_state
from tracking.errors import CacheError
from tracking.limiters import CountLimiter
from tracking.model import TrackerState

pytestmark = pytest.mark.redis


class RedisFactory(CacheFactory):
    """Each new cache gets its own key prefix; a peer shares the prefix."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.caches: list[RedisDataCache] = []

    def new(self, **options: Any) -> DataCache:
        cache = RedisDataCache(self.url, "t" + uuid.uuid4().hex[:8], **options)
        self.caches.append(cache)
        return cache

    def peer(self, cache: DataCache) -> DataCache:
        assert isinstance(cache, RedisDataCache)
        peer = RedisDataCache(self.url, cache.key_prefix)
        self.caches.append(peer)
        return peer

    def cleanup(self) -> None:
        for cache in self.caches:
            cache.flush()
            cache.close()


@pytest.fixture
def redis_factory(redis_url: str) -> Iterator[RedisFactory]:
    factory = RedisFactory(redis_url)
    yield factory
    factory.cleanup()


class TestRedisCacheContract(CacheContract):
    @pytest.fixture
    def cache_factory(self, redis_factory: RedisFactory) -> CacheFactory:
        return redis_factory


def _keys(client: Any, prefix: str) -> list[str]:
    found = [k.decode() for k in client.scan_iter(match="{" + prefix + ":*", count=1000)]
    return sorted(found + [k.decode() for k in client.scan_iter(match=prefix + ":*", count=1000)])


def test_packed_state_round_trips_exactly() -> None:
    for state in (
        TrackerState(),
        TrackerState(progress=0.1 + 0.2, stage=3, completed=True, limited=True, limits=[2, 0.5]),
        TrackerState(progress=-(2**53), limits=[1e300, -0.0], period=1_700_000_000),
        TrackerState(progress=1e16, limits=[5e-324]),
    ):
        packed = pack_state(state)
        back = unpack_state(packed)
        assert back == state
        assert [type(v) for v in back.limits] == [type(v) for v in state.limits]
        assert type(back.progress) is type(state.progress)


def test_group_keys_share_one_hash_tag(redis_url: str, redis_prefix: str) -> None:
    cache = RedisDataCache(redis_url, redis_prefix)
    a = count_def("a", 1, limiters=[CountLimiter(5)])
    version = install(cache, a, count_def("b"))
    cache.apply(G, version, [TrackStep(a, 1)], "e1")
    cache.remove_trackers(G, ["b"], "admin")
    client = redis_client(redis_url)
    keys = _keys(client, redis_prefix)
    group_keys = [k for k in keys if k.startswith("{")]
    assert {k.split("}")[0] for k in group_keys} == {"{" + redis_prefix + ":" + G}
    others = [k for k in keys if not k.startswith("{")]
    assert all(k.startswith(redis_prefix + ":") for k in others)
    assert any(":def:" in k for k in others)
    cache.close()


@pytest.mark.parametrize("functions", [True, False], ids=["fcall", "evalsha"])
def test_missing_scripts_are_recovered(redis_url: str, redis_prefix: str, functions: bool) -> None:
    """A server without our scripts (restart, failover) gets them loaded and the call rerun.

    Redis >= 7.0 runs them as a Functions library (FCALL), older servers
    (the embedded 6.2) answer "unknown command" and get EVALSHA; the
    ``evalsha`` case forces EVALSHA on any server.
    """
    from tracking.cache.redis import _load_sources

    cache = RedisDataCache(redis_url, redis_prefix)
    client = redis_client(redis_url)
    # SCRIPT FLUSH / FUNCTION FLUSH would drop every client's scripts on the
    # shared server, so give this instance scripts the server has never seen
    # (and delete the libraries it loads: function libraries are not keys).
    lib, bodies = _load_sources()
    libraries: list[str] = []

    def unseen_scripts() -> None:
        cache._set_sources(lib + f"\n-- {uuid.uuid4().hex}\n", bodies)
        cache._functions = functions
        libraries.append(cache._library)

    a = count_def("a", 10)
    try:
        unseen_scripts()
        version = cache.install_group(G, [fresh(a)])  # a pipeline: SET NX + the script
        assert version
        outcome = cache.apply(G, version, [TrackStep(a, 1)], "e1")  # the hot path's connection
        assert outcome.status == "applied" and outcome.states["a"].progress == 1
        unseen_scripts()
        assert cache.apply(G, version, [TrackStep(a, 1)], "e2").states["a"].progress == 2
        unseen_scripts()
        batch = [
            ApplyRequest(G, version, [TrackStep(a, 1)], "e3"),
            ApplyRequest(G, version, [], "e3"),
        ]
        assert [o.status for o in cache.apply_many(batch)] == ["applied", "duplicate"]
        unseen_scripts()
        assert cache.remove_trackers(G, ["a"], "admin")  # a pipeline: script + index write
        major = int(str(client.info("server")["redis_version"]).split(".", maxsplit=1)[0])
        assert cache._functions == (functions and major >= 7)
    finally:
        for library in libraries:
            # not loaded (EVALSHA) or no Redis Functions (Redis < 7.0)
            with contextlib.suppress(redis.ResponseError):
                client.execute_command("FUNCTION", "DELETE", library)
        cache.close()


def test_a_prefix_of_another_data_layout_is_refused(redis_url: str, redis_prefix: str) -> None:
    """A cache records the data layout before its first write; a prefix that holds
    another one (a release that changed it, sharing the prefix) is refused before
    anything is written, on every call, even where that release's scripts are
    loaded already, with an error that names the prefix and what to do."""
    from tracking.cache.redis import _load_sources
    from tracking.cache.redis.codec import LAYOUT_VERSION

    client = redis_client(redis_url)
    layout_key = f"{redis_prefix}:layout"
    lib, bodies = _load_sources()
    libraries: list[str] = []

    def cache_with_unseen_scripts() -> RedisDataCache:
        cache = RedisDataCache(redis_url, redis_prefix)
        cache._set_sources(lib + f"\n-- {uuid.uuid4().hex}\n", bodies)
        libraries.append(cache._library)
        return cache

    a = count_def("a", 10)
    first = cache_with_unseen_scripts()
    try:
        version = first.install_group(G, [fresh(a)])
        assert client.get(layout_key) in (str(LAYOUT_VERSION), str(LAYOUT_VERSION).encode())
        client.set(layout_key, LAYOUT_VERSION + 1)  # what a later release would have written
        for other in (cache_with_unseen_scripts(), RedisDataCache(redis_url, redis_prefix)):
            # (the check is per cache: with or without a script load first)
            with pytest.raises(CacheError, match=rf"holds data layout {LAYOUT_VERSION + 1}"):
                other.apply(G, version, [TrackStep(a, 1)], "e1")
            with pytest.raises(CacheError, match="TRACKING_KEY_PREFIX"):
                other.install_group("g-new", [fresh(a)])
            with pytest.raises(CacheError, match="holds data layout"):
                other.apply_many([ApplyRequest(G, version, [TrackStep(a, 1)], "e2")])
            other.close()
        group = first.get_group(G)
        assert group is not None and group.trackers["a"].state.progress == 0  # nothing written
        assert first.get_group("g-new") is None
    finally:
        for library in libraries:
            with contextlib.suppress(redis.ResponseError):
                client.execute_command("FUNCTION", "DELETE", library)
        client.delete(layout_key)
        first.close()


def test_connection_errors_are_cache_errors() -> None:
    cache = RedisDataCache("redis://127.0.0.1:1/0", "tunreachable")
    with pytest.raises(CacheError) as info:
        cache.apply(G, 1, [], "e1")
    assert isinstance(info.value.__cause__, redis.RedisError)
    with pytest.raises(CacheError):
        cache.now()


def test_group_ttl_follows_the_last_expiry(redis_url: str, redis_prefix: str) -> None:
    cache = RedisDataCache(redis_url, redis_prefix, expiry_grace=3600)
    client = redis_client(redis_url)
    meta_key = "{" + redis_prefix + ":" + G + "}:m"
    now = cache.now()
    a, b = count_def("a"), count_def("b")
    created, _ = cache.put_trackers(G, [fresh(a, now + 100), fresh(b, now + 200)], "admin")
    remaining = client.pttl(meta_key) / 1000
    assert 200 + 3600 - 60 < remaining <= 200 + 3600
    # a tracker without expiry makes the group persist
    cache.put_trackers(G, [fresh(count_def("c"))], "admin-2")
    assert client.pttl(meta_key) == -1
    cache.remove_trackers(G, ["c"], "admin-3")
    assert client.pttl(meta_key) > 0
    # keys created later (dedupe, outbox) get the group's TTL too
    assert cache.apply(G, created + 2, [TrackStep(a, 1)], "e1").status == "applied"
    assert client.pttl("{" + redis_prefix + ":" + G + "}:d") > 0
    cache.close()


def test_repair_indexes_restores_lost_entries(redis_url: str, redis_prefix: str) -> None:
    cache = RedisDataCache(redis_url, redis_prefix, index_shards=4)
    a = count_def("a", 1)
    now = cache.now()
    cache.put_trackers(G, [fresh(a, now + 50), fresh(periodic_def("p"))], "admin")
    client = redis_client(redis_url)
    for key in _keys(client, redis_prefix):
        if any(key.startswith(f"{redis_prefix}:{kind}:") for kind in "wep"):
            client.delete(key)
    assert cache.dirty_groups() == [] and cache.outbox() == []
    assert cache.periodic_groups() == []
    assert cache.repair_indexes() == 1
    assert cache.dirty_groups() == [G]
    assert len(cache.outbox()) == 2
    assert cache.periodic_groups() == [G]
    assert [t.definition.name for _, t, _ in cache.expire("s", now=now + 60)] == ["a"]
    cache.close()


def test_memory_per_tracker(redis_url: str, redis_prefix: str) -> None:
    """State + meta of a tracker cost well under 100 bytes (Redis MEMORY USAGE)."""
    cache = RedisDataCache(redis_url, redis_prefix)
    client = redis_client(redis_url)
    n = 50
    defs = [
        count_def(f"tracker-{i:03d}", [10, 50, 100], limiters=[CountLimiter(100)]) for i in range(n)
    ]
    version = cache.install_group(G, [CachedTracker(d, d.initial_state()) for d in defs])
    assert cache.apply(G, version, [TrackStep(d, 1) for d in defs], "e1").status == "applied"
    state_key = "{" + redis_prefix + ":" + G + "}:s"
    meta_key = "{" + redis_prefix + ":" + G + "}:m"
    used = client.memory_usage(state_key, samples=0) + client.memory_usage(meta_key, samples=0)
    assert used / n < 100, f"{used / n:.1f} bytes per tracker"
    cache.close()


def test_periodic_index_entry_of_an_expired_group_is_pruned(
    redis_url: str, redis_prefix: str
) -> None:
    """A group whose keys expired as a whole (the group TTL) leaves its periodic entry behind;
    periodic_groups drops it and still fills the page."""
    cache = RedisDataCache(redis_url, redis_prefix, index_shards=1)
    client = redis_client(redis_url)
    for group in ("g1", "g2", "g3"):
        install(cache, periodic_def("p"), group=group)
    for suffix in (":s", ":m"):
        client.delete("{" + redis_prefix + ":g2}" + suffix)
    assert cache.periodic_groups(limit=2) == ["g1", "g3"]
    assert client.zrange(f"{redis_prefix}:p:0", 0, -1) == [b"g1", b"g3"]
    cache.close()


def test_dedupe_stores_names_only(redis_url: str, redis_prefix: str) -> None:
    """A dedupe record is the outcome's names, not the reply: a few bytes per event."""
    cache = RedisDataCache(redis_url, redis_prefix)
    client = redis_client(redis_url)
    defs = [count_def(f"tracker-{i:02d}", 1_000_000) for i in range(10)]
    version = install(cache, *defs)
    cache.apply(G, version, [TrackStep(d, 1) for d in defs], "e1")
    record = client.hget("{" + redis_prefix + ":" + G + "}:o", "e1")
    assert record == ("\t".join(d.name for d in defs) + "\n\n").encode()
    cache.close()


def test_dedupe_trims_in_batches_but_answers_exactly(redis_url: str, redis_prefix: str) -> None:
    """Records beyond the newest max are dropped in batches; lookups check the rank."""
    cache = RedisDataCache(redis_url, redis_prefix, dedupe_max_entries=16)
    client = redis_client(redis_url)
    a = count_def("a", 1_000_000)
    version = install(cache, a)
    for i in range(18):
        assert cache.apply(G, version, [TrackStep(a, 1)], f"e{i}").status == "applied"
    zset = "{" + redis_prefix + ":" + G + "}:d"
    assert client.zcard(zset) == 18  # within max + max/8: not trimmed yet
    # e0 and e1 are beyond the newest 16: forgotten, so they count again
    assert cache.apply(G, version, [TrackStep(a, 1)], "e1").status == "applied"
    assert cache.apply(G, version, [TrackStep(a, 1)], "e3").status == "duplicate"
    assert client.zcard(zset) == 18
    assert cache.apply(G, version, [TrackStep(a, 1)], "e19").status == "applied"
    assert client.zcard(zset) == 16  # the 19th record started a batch trim
    assert client.hlen("{" + redis_prefix + ":" + G + "}:o") == 16
    cache.close()


def _crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _cluster_slot(key: str) -> int:
    """Redis Cluster's hash slot: CRC16-XMODEM of the hash tag (if non-empty) mod 16384."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _crc16_xmodem(raw) % 16384


def test_cluster_slot_computation_matches_redis_py() -> None:
    from redis.crc import key_slot

    assert _cluster_slot("123456789") == 0x31C3 % 16384  # the CRC16-XMODEM check value
    for key in ("{trk:g1}:s", "trk:w:3", "{}x", "a{b}c{d}", "{trk:group-1}:m", "x{}{y}"):
        assert _cluster_slot(key) == key_slot(key.encode())


def test_scripts_declare_only_the_group_keys() -> None:
    """No script body indexes KEYS beyond the group's six (the index keys are the client's)."""
    from tracking.cache.redis import _load_sources

    lib, bodies = _load_sources()
    for name, source in [("lib", lib), *bodies.items()]:
        indexes = {int(i) for i in re.findall(r"KEYS\[(\d+)\]", source)}
        assert indexes <= set(range(1, 7)), (name, indexes)


def test_every_script_call_stays_in_one_cluster_slot(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run every script (FCALL or EVALSHA, hot path, pipelines, single commands) and check
    that each call's keys all hash to one cluster slot, as Redis Cluster requires."""
    from tracking.cache.redis import _SCRIPT_NAMES

    cache = RedisDataCache(redis_url, redis_prefix, index_shards=4)
    calls: list[tuple[str, list[str]]] = []
    invocation = cache._invocation

    def recording(name: str, keys: Any, args: Any) -> list[Any]:
        calls.append((name, list(keys)))
        return invocation(name, keys, args)

    monkeypatch.setattr(cache, "_invocation", recording)
    now = cache.now()
    a, b = count_def("a", [1, 3]), count_def("b", 1)
    p = periodic_def("p", 2)
    version = cache.install_group(G, [fresh(a, now + 50), fresh(b), fresh(p)])  # install
    assert version
    s1, s2, _, end = bounds_around(cache)
    periods = {"p": (s1, end)}
    applied = cache.apply(G, version, [TrackStep(a, 1), TrackStep(p, 2)], "e1", periods=periods)
    assert applied.completed == ["p"] and applied.fired  # a stage and a completion
    again = cache.apply(G, version, [TrackStep(a, 1)], "e1", periods=periods)
    assert again.status == "duplicate"
    rolled = cache.apply(G, version, [TrackStep(b, 1)], "e2", periods={"p": (s2, end)})
    assert rolled.completed == ["b"] and "p" in rolled.changed  # rolled over, b completed
    loaded = cache.get_definitions(G)
    assert loaded is not None
    batch = cache.apply_many(
        [ApplyRequest(G, loaded[0], [TrackStep(a, 1)], "e3"), ApplyRequest("g2", 1, [], "e1")]
    )
    assert [o.status for o in batch] == ["applied", "missing"]
    cache.put_trackers(G, [fresh(count_def("c"), now + 10)], "admin-1")  # put
    cache.put_trackers("g2", [fresh(periodic_def("q"))], "admin-2")
    assert cache.reset_trackers(G, ["a"], None, "admin-3")  # reset
    assert cache.remove_trackers("g2", ["q"], "admin-4")  # remove
    assert [t.definition.name for _, t, _ in cache.expire("sweep", now=now + 20)] == ["c"]
    assert cache.periodic_groups() == [G]  # g2's stale entry pruned by the client
    for group in (G, "g2"):  # flush: snapshot, clear_dirty
        snapshot = cache.dirty_snapshot(group)
        assert snapshot is not None and cache.clear_dirty(group, snapshot.mark)
    cache.ack_outbox(cache.outbox(1000))
    assert cache.evict_group("g2")  # evict
    assert cache.dirty_groups() == [] and cache.periodic_groups() == [G]
    assert cache.repair_indexes() == 1

    assert {name for name, _ in calls} == set(_SCRIPT_NAMES)
    for name, keys in calls:
        assert len(keys) == 6, (name, keys)
        assert len({_cluster_slot(k) for k in keys}) == 1, (name, keys)
    cache.close()


def test_apply_many_is_one_round_trip(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RedisDataCache(redis_url, redis_prefix)
    if cache._router is not None:
        _check_cluster_round_trips(cache, monkeypatch)
        return
    a = count_def("a", 100)
    versions = {group: install(cache, a, group=group) for group in ("g1", "g2", "g3")}
    cache.apply("g1", versions["g1"], [TrackStep(a, 1)], "warm-up")  # the scripts are loaded
    executions: list[int] = []
    make_pipeline = cache._client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted(*e_args: Any, **e_kwargs: Any) -> Any:
            executions.append(len(pipe.command_stack))
            return execute(*e_args, **e_kwargs)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("apply_many sent a command outside its pipeline")

    monkeypatch.setattr(cache._client, "pipeline", counting_pipeline)
    monkeypatch.setattr(cache._client, "execute_command", refuse)
    monkeypatch.setattr(cache, "_hot_script", refuse)
    requests = [
        ApplyRequest(g, versions[g], [TrackStep(a, 1)], f"e{i}")
        for i in range(20)
        for g in ("g1", "g2", "g3")
    ]
    outcomes = cache.apply_many(requests)
    assert executions == [2 * len(requests)]  # one pipeline: each script + its index write
    assert all(o.status == "applied" for o in outcomes)
    assert [o.states["a"].progress for o in outcomes[-3:]] == [21, 20, 20]
    monkeypatch.undo()
    assert sorted(cache.dirty_groups()) == ["g1", "g2", "g3"]
    cache.close()


def _check_cluster_round_trips(cache: RedisDataCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster: a warm apply is one command on one node; apply_many one round trip
    for the scripts (every node written, then read) plus one for the index entries that
    groups which just got work ask for."""
    router = cache._router
    assert router is not None
    a = count_def("a", 100)
    groups = [f"g{i}" for i in range(12)]  # on every primary, most likely
    versions = {group: install(cache, a, group=group) for group in groups}
    cache.apply("g0", versions["g0"], [TrackStep(a, 1)], "warm-up")  # loads scripts, indexes g0
    sends: list[list[int]] = []
    send = router._send

    def counting_send(batches: Any) -> Any:
        sends.append(sorted(len(commands) for _, commands in batches.values()))
        return send(batches)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the cache sent a command outside its router")

    real_packed = router.run_packed

    def counting_packed(key: Any, packed: Any, command: Any, recover: Any) -> Any:
        sends.append([1])  # one command to one node
        return real_packed(key, packed, command, recover)

    monkeypatch.setattr(router, "_send", counting_send)
    monkeypatch.setattr(router, "run_packed", counting_packed)
    monkeypatch.setattr(cache._client, "execute_command", refuse)
    outcome = cache.apply("g0", versions["g0"], [TrackStep(a, 1)], "warm")
    assert outcome.status == "applied"
    assert sends == [[1]]  # one command to one node: the group is indexed already
    sends.clear()
    requests = [
        ApplyRequest(g, versions[g], [TrackStep(a, 1)], f"e{i}") for i in range(5) for g in groups
    ]
    outcomes = cache.apply_many(requests)
    assert len(sends) == 2
    assert sum(sends[0]) == len(requests)
    assert sum(sends[1]) == len(groups) - 1  # each new dirty group once; g0 is indexed
    assert all(o.status == "applied" for o in outcomes)
    sends.clear()
    cache.apply_many(
        [ApplyRequest(g, versions[g], [TrackStep(a, 1)], f"again-{g}") for g in groups]
    )
    assert len(sends) == 1  # every group is indexed: one round trip
    monkeypatch.undo()
    assert sorted(cache.dirty_groups()) == sorted(groups)
    cache.close()
