"""dictrack 2.1.5 side of ``bench/engine_bench.py``: one benchmark worker process.

This file runs only under the interpreter of ``bench/venvs/dictrack`` (which
``engine_bench.py`` creates with ``pip install "dictrack[redis]==2.1.5"``) and
must never be imported by the product. It speaks the same tiny protocol as
the product's worker inside ``engine_bench.py``, so the orchestrator drives
both engines the same way:

* ``python dictrack_worker.py '<json config>'``; ``config["mode"]`` is one of
  ``setup`` (install warm groups in Redis), ``run`` (measure warm events) or
  ``cold`` (measure the first event of groups that are only in the store).
* ``run`` prints ``{"ready": true}`` once connected and warmed up, waits for
  one line on stdin (the orchestrator's "go", sent to every worker at once)
  and then prints one JSON line with its measurements.

dictrack needs a data store besides the cache; its only shipped store,
``MongoDBDataStore``, needs a MongoDB server. The benchmark measures the cache
path, so :class:`InMemoryDataStore` below implements dictrack's
``BaseDataStore`` over a dict of the same pickled bytes the Mongo store keeps.
Warm events never touch the store (dictrack only calls ``remove`` on it when a
tracker completes); the cold first event reads it once.

Redis round trips are counted on the client: every ``send_packed_command`` of
redis-py is one request written to the socket and awaited (a pipeline is one),
and every command name packed is counted, so the numbers do not depend on
other clients of a shared server (the orchestrator also records the server's
``INFO commandstats``).
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from typing import Any

import redis
from dictrack.conditions.keys import KeyValueEQ
from dictrack.data_caches.redis import RedisDataCache
from dictrack.data_stores.base import BaseDataStore
from dictrack.manager import TrackingManager
from dictrack.trackers.base import BaseTracker
from dictrack.trackers.numerics.count import CountTracker
from roundtrips import RoundTripCounter

#: dictrack's own default expiry of its cache hashes (``data_expire``).
DATA_EXPIRE = 60 * 60 * 24
#: Target high enough that no tracker completes during a run.
NEVER = 10**12
EVENT: dict[str, Any] = {"status": "active", "amount": 3}
WARMUP_EVENT: dict[str, Any] = {"status": "idle", "amount": 0}


COUNTER = RoundTripCounter()


class InMemoryDataStore(BaseDataStore):  # type: ignore[misc]
    """dictrack ``BaseDataStore`` over a dict of pickled trackers (no MongoDB).

    Mirrors ``MongoDBDataStore``: it keeps ``BaseTracker.serialize`` bytes and
    deserializes on ``load``, so a cold load pays dictrack's unpickling cost.
    ``loads`` counts store reads for the cold-load measurement.
    """

    def __init__(self) -> None:
        super().__init__()
        self._groups: dict[str, dict[str, bytes]] = {}
        self.loads = 0

    def store(
        self,
        group_id: str,
        tracker: BaseTracker,
        expire: int | None = None,
        expire_at: int | None = None,
        **kwargs: Any,
    ) -> bool:
        self._groups.setdefault(group_id, {})[tracker.name] = BaseTracker.serialize(tracker)
        return True

    def store_all(
        self,
        group_id: str,
        trackers: list[BaseTracker],
        expire: int | None = None,
        expire_at: int | None = None,
        **kwargs: Any,
    ) -> bool:
        for tracker in trackers:
            self.store(group_id, tracker)
        return True

    def load(
        self, group_id: str, name: str | list[str] | None = None, **kwargs: Any
    ) -> tuple[bool, list[BaseTracker]]:
        self.loads += 1
        group = self._groups.get(group_id, {})
        if name is None:
            blobs = list(group.values())
        else:
            names = [name] if isinstance(name, str) else name
            blobs = [group[n] for n in names if n in group]
        trackers = [BaseTracker.deserialize(b) for b in blobs]
        return True, [t for t in trackers if t is not None]

    def remove(
        self, group_id: str, name: str | list[str] | None = None, **kwargs: Any
    ) -> tuple[bool, list[BaseTracker]]:
        group = self._groups.get(group_id, {})
        names = list(group) if name is None else [name] if isinstance(name, str) else name
        removed = [BaseTracker.deserialize(group.pop(n)) for n in names if n in group]
        return True, [t for t in removed if t is not None]

    def flush(self) -> bool:
        self._groups.clear()
        return True

    def _check_expire(self) -> None:
        """dictrack's periodic expiry sweep: nothing to sweep in this store."""


def make_trackers(group_id: str | None, count: int, variant: str) -> list[BaseTracker]:
    """``count`` CountTrackers on ``status == "active"``.

    ``steady``: the target is never reached. ``complete``: target 5 with
    ``loop_forever``, so every 5th matching event completes a stage.
    ``group_id`` None leaves it for ``TrackingManager.add_trackers`` to set
    (dictrack refuses to set it twice).
    """
    if variant == "complete":
        target, loop = 5, True
    else:
        target, loop = NEVER, False
    return [
        CountTracker(
            f"t{j}",
            [KeyValueEQ("status", "active")],
            target,
            group_id=group_id,
            loop_forever=loop,
        )
        for j in range(count)
    ]


def connect(cfg: dict[str, Any]) -> tuple[TrackingManager, InMemoryDataStore, redis.Redis]:
    """A dictrack manager on ``cfg["url"]`` whose keys all start with the run's prefix.

    ``data_key``, ``last_cached_key`` and ``check_flag_key`` carry the prefix;
    redis_lock adds ``lock:`` / ``lock-signal:`` in front of the data key, so
    every key dictrack creates contains the prefix (the orchestrator deletes
    exactly those).
    """
    client = redis.StrictRedis.from_url(cfg["url"], decode_responses=False)
    prefix = cfg["prefix"]
    cache = RedisDataCache(
        data_key=f"{prefix}.data_cache",
        last_cached_key=f"{prefix}.last_cached",
        check_flag_key=f"{prefix}.check_flag",
        client=client,
    )
    store = InMemoryDataStore()
    return TrackingManager(cache, store), store, client


def stop(manager: TrackingManager) -> None:
    """Stop dictrack's APScheduler threads so the process exits promptly."""
    for owner in (manager.data_cache, manager.data_store):
        with contextlib.suppress(Exception):
            owner.scheduler.shutdown(wait=False)


def setup(cfg: dict[str, Any]) -> dict[str, Any]:
    """Put ``groups`` x ``trackers`` into dictrack's Redis cache.

    Writes exactly what ``RedisDataCache.cache`` writes (HSET of the pickled
    tracker, EXPIRE of the hash, ZADD to the last-cached set) but pipelined,
    so that 500,000 trackers install in seconds instead of minutes; the lock
    ``cache`` takes around those writes leaves no state behind.
    """
    manager, _, client = connect(cfg)
    prefix = cfg["prefix"]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    pending = 0
    now = int(time.time())
    for g in range(cfg["groups"]):
        group_id = f"g{g}"
        key = f"{prefix}.data_cache:{group_id}"
        for tracker in make_trackers(group_id, cfg["trackers"], cfg["variant"]):
            pipe.hset(key, tracker.name, BaseTracker.serialize(tracker))
            pending += 1
        pipe.expire(key, DATA_EXPIRE)
        pipe.zadd(f"{prefix}.last_cached", {group_id: now})
        if pending >= 2000:
            pipe.execute()
            pending = 0
    pipe.execute()
    stop(manager)
    return {"setup_s": time.perf_counter() - started}


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Warm events for ``duration`` seconds (or ``max_events``), timed one by one."""
    manager, _, _ = connect(cfg)
    groups = cfg["groups"]
    rng = random.Random(cfg["seed"])
    for _ in range(cfg.get("warmup_events", 20)):
        manager.track(f"g{rng.randrange(groups)}", WARMUP_EVENT)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    COUNTER.reset()
    lat_ns: list[int] = []
    append = lat_ns.append
    deadline = time.perf_counter() + cfg["duration"]
    max_events = cfg["max_events"]
    perf = time.perf_counter_ns
    started = time.perf_counter()
    while True:
        group_id = f"g{rng.randrange(groups)}" if groups > 1 else "g0"
        t0 = perf()
        ok = manager.track(group_id, EVENT)[0]
        append(perf() - t0)
        if not ok:
            raise RuntimeError(f"dictrack could not track {group_id}")
        if len(lat_ns) >= max_events or time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    counts = COUNTER.snapshot()
    stop(manager)
    return {
        "events": len(lat_ns),
        "elapsed_s": elapsed,
        "lat_us": [round(v / 1000, 1) for v in lat_ns],
        "client": counts,
    }


def cold(cfg: dict[str, Any]) -> dict[str, Any]:
    """First event of ``samples`` groups that are only in the store.

    ``add_trackers`` on a group dictrack has not cached writes only to the
    store; the first ``track`` then checks the cache, loads the group from the
    store, caches every tracker (a lock per tracker) and tracks.
    """
    manager, store, _ = connect(cfg)
    prefix = cfg["prefix"]
    samples = []
    for k in range(cfg["samples"]):
        group_id = f"cold{k}"
        manager.add_trackers(group_id, make_trackers(None, cfg["trackers"], "steady"))
        store.loads = 0
        COUNTER.reset()
        t0 = time.perf_counter_ns()
        ok = manager.track(group_id, EVENT)[0]
        t1 = time.perf_counter_ns()
        counts = COUNTER.snapshot()
        if not ok:
            raise RuntimeError(f"dictrack could not cold-load {group_id}")
        cached = manager.data_cache._get_client().hlen(f"{prefix}.data_cache:{group_id}")
        samples.append(
            {
                "time_us": (t1 - t0) / 1000,
                "round_trips": counts["round_trips"],
                "commands": counts["commands"],
                "store_reads": store.loads,
                "cached_trackers": cached,
            }
        )
    stop(manager)
    return {"samples": samples}


def main() -> None:
    """Entry point: one JSON config on argv, JSON lines on stdout."""
    cfg = json.loads(sys.argv[1])
    COUNTER.install()
    mode = cfg["mode"]
    if mode == "setup":
        result = setup(cfg)
    elif mode == "run":
        result = run(cfg)
    elif mode == "cold":
        result = cold(cfg)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    import dictrack

    result["versions"] = {
        "dictrack": getattr(dictrack, "__version__", "2.1.5"),
        "redis_py": redis.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
