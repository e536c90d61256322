"""Durability modes side by side: write-behind against write-through.

Run from the repository root::

    .venv/bin/python bench/durability_bench.py [--redis-url redis://127.0.0.1:6379/12]
        [--events 3000] [--mongo]

One process tracks ``--events`` events, spread over ``--groups`` groups of
10 trackers each, through ``TrackingManager`` over the Redis cache, once per
mode and store:

* ``write-behind``: ``track`` returns after the Redis step; the flush that
  beat would run every few seconds is timed separately (one
  ``flush_dirty()`` pass at the end, writing every dirty group in bulk);
* ``write-through``: ``track`` writes the group to the store before it
  returns, so its latency includes the store write.

Stores: the file store (fsync per save) always; with ``--mongo`` also the
Mongo wire-compatible test server from ``tests/support`` (a Python server,
far slower than MongoDB: only the comparison between modes means anything
there). Results: ``bench/results/durability.json``.

The Redis database must be empty at the start (checked); every key carries
a per-run prefix and only those keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import redis  # noqa: E402

from tracking import (  # noqa: E402
    CountTracker,
    DataStore,
    FileDataStore,
    KeyValueEQ,
    RedisDataCache,
    TrackingManager,
)
from tracking.manager import Durability  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_mode(
    redis_url: str, make_store: Callable[[], DataStore], mode: Durability, args: argparse.Namespace
) -> dict[str, Any]:
    prefix = f"bd{uuid.uuid4().hex[:8]}"
    cache = RedisDataCache(redis_url, prefix)
    store = make_store()
    manager = TrackingManager(cache, store, durability=mode)
    groups = [f"g{i}" for i in range(args.groups)]
    try:
        for group_id in groups:
            manager.add_trackers(
                group_id,
                [CountTracker(f"t{j}", [KeyValueEQ("status", "paid")], 10**9) for j in range(10)],
            )
        manager.flush_dirty()
        latencies = []
        started = time.perf_counter()
        for index in range(args.events):
            begin = time.perf_counter()
            manager.track(groups[index % len(groups)], {"status": "paid", "n": index})
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
        flush_started = time.perf_counter()
        report = manager.flush_dirty(limit=10 * args.groups)
        flush_seconds = time.perf_counter() - flush_started
        return {
            "mode": mode,
            "events": args.events,
            "groups": args.groups,
            "trackers_per_group": 10,
            "events_per_second": round(args.events / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "final_flush_seconds": round(flush_seconds, 4),
            "final_flush_groups": len(report.flushed),
        }
    finally:
        cache.flush()
        cache.close()
        store.close()


@contextmanager
def mongo_store_factory() -> Iterator[Callable[[], DataStore]]:
    from tests.support.mongo_env import MongoTestServer, ensure_venv
    from tracking import MongoDBDataStore

    server = MongoTestServer(ensure_venv())
    url = server.start()
    try:
        yield lambda: MongoDBDataStore(url, database=f"bench{uuid.uuid4().hex[:6]}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--mongo", action="store_true", help="also the Mongo test server")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "durability.json")
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis_url)
    if client.dbsize():
        sys.exit(f"{args.redis_url} is not empty; pick an empty database")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("write-behind", "write-through"):
            path = Path(tmp) / f"store-{mode}"
            row = run_mode(args.redis_url, lambda p=path: FileDataStore(str(p)), mode, args)
            row["store"] = "file"
            print(json.dumps(row))
            results.append(row)
    if args.mongo:
        # The test server slows down with collection size: keep it small.
        small = argparse.Namespace(
            **{**vars(args), "events": min(args.events, 500), "groups": min(args.groups, 20)}
        )
        with mongo_store_factory() as factory:
            for mode in ("write-behind", "write-through"):
                row = run_mode(args.redis_url, factory, mode, small)
                row["store"] = "mongo wire-compatible test server (mongoeco)"
                print(json.dumps(row))
                results.append(row)

    info = client.info("server")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "durability modes: track() with write-behind vs write-through",
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "redis": info.get("redis_version"),
                },
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
