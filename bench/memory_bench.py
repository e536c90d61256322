"""Redis memory for sizing a deployment: per tracker, and per remembered event id.

Run from the repository root::

    .venv/bin/python bench/memory_bench.py [--redis-url redis://127.0.0.1:6379/0]
        [--trackers 10] [--runs 500x100,20x2000]

For each run ``GROUPSxEVENTS``: installs GROUPS groups of ``--trackers``
count trackers through ``TrackingManager`` over the Redis cache (store in
memory), acknowledges their ADDED events as the workers' outbox drain does,
measures the ``MEMORY USAGE`` of every key the run made, then tracks EVENTS
events per group, each with its own event id, that step one tracker without
completing it (no outbox entries), and measures again. The difference,
divided by the events, is what each event id remembered for deduplication
costs (``TRACKING_DEDUPE_WINDOW_SECONDS`` / ``TRACKING_DEDUPE_MAX_ENTRIES``
bound how many are kept). Bytes are also split by key kind (the group's
state, meta and dedupe keys, the shared definitions, the indexes).

Every key carries a per-run prefix; only those keys are deleted at the end,
so it is safe on a shared server. Results: ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

from tracking import CountTracker, KeyValueEQ, MemoryDataStore, RedisDataCache, TrackingManager

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"


def _kind(key: str, prefix: str) -> str:
    """The kind of one of the run's keys: ``s``/``m``/``d``/``o``/... or ``def``/index."""
    if key.startswith("{"):
        return "group:" + key.rsplit(":", 1)[1]
    rest = key[len(prefix) + 1 :]
    return rest.split(":", 1)[0]


def footprint(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """``MEMORY USAGE`` of the run's keys, in total and by kind."""
    keys = [
        k.decode()
        for pattern in (f"{prefix}:*", f"{{{prefix}:*")
        for k in client.scan_iter(match=pattern, count=1000)
    ]
    by_kind: dict[str, int] = defaultdict(int)
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(chunk, pipe.execute(), strict=True):
            by_kind[_kind(key, prefix)] += int(size or 0)
    return {"keys": len(keys), "bytes": sum(by_kind.values()), "by_kind": dict(by_kind)}


def drain(cache: RedisDataCache) -> None:
    """Acknowledge the outbox (the ADDED events), as the workers' drain would."""
    while entries := cache.outbox(limit=1000):
        cache.ack_outbox(entries)


def cleanup(client: redis.Redis, prefix: str) -> None:
    for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 1000):
            client.delete(*batch[start : start + 1000])


def measure(redis_url: str, groups_n: int, trackers_n: int, events_n: int) -> dict[str, Any]:
    """One run: install, measure, track, measure; the run's keys are deleted after."""
    prefix = f"membench{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    cache = RedisDataCache(redis_url, key_prefix=prefix)
    manager = TrackingManager(cache, MemoryDataStore())
    groups = [f"user-{n}" for n in range(groups_n)]
    try:
        for group in groups:
            manager.add_trackers(
                group,
                [
                    CountTracker(f"t{i}", [KeyValueEQ("kind", f"k{i}")], target=10**9)
                    for i in range(trackers_n)
                ],
            )
        drain(cache)
        installed = footprint(client, prefix)
        start = time.perf_counter()
        for n in range(events_n):
            for group in groups:
                data = {"kind": f"k{n % trackers_n}"}
                manager.track(group, data, event_id=f"evt-{n}-{uuid.uuid4().hex}")
        elapsed = time.perf_counter() - start
        tracked = footprint(client, prefix)
    finally:
        cleanup(client, prefix)
        cache.close()
        client.close()
    return {
        "groups": groups_n,
        "trackers_per_group": trackers_n,
        "events_per_group": events_n,
        "track_s": round(elapsed, 2),
        "installed": installed,
        "after_events": tracked,
        "bytes_per_tracker_installed": round(installed["bytes"] / (groups_n * trackers_n), 1),
        "bytes_per_group_installed": round(installed["bytes"] / groups_n, 1),
        "bytes_per_remembered_event": round(
            (tracked["bytes"] - installed["bytes"]) / (groups_n * events_n), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--trackers", type=int, default=10)
    parser.add_argument(
        "--runs",
        default="500x100,20x2000",
        help="GROUPSxEVENTS_PER_GROUP, comma-separated (small dedupe sets use a "
        "compact encoding, large ones do not, so measure both)",
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    runs = []
    for spec in args.runs.split(","):
        groups_n, events_n = (int(x) for x in spec.split("x"))
        runs.append(measure(args.redis_url, groups_n, args.trackers, events_n))
    server = redis.Redis.from_url(args.redis_url)
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "redis": server.info("server")["redis_version"],
            "load_avg_1m_before": round(load, 2),
        },
        "runs": runs,
    }
    server.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
