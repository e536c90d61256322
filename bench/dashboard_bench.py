"""Dashboard page time with few and with many groups cached, side by side.

Run from the repository root::

    .venv/bin/python bench/dashboard_bench.py [--redis-url redis://127.0.0.1:6379/0]
        [--groups 100000] [--small 100] [--requests 300]

Installs ``--small`` groups of three trackers (the demo's: staged count,
staged sum, count with a limiter) under a per-run key prefix, tracks events
for some of them (so pages have progress, dirty marks and outbox entries),
and times the group page (random groups) and the overview over HTTP with
Starlette's test client (the whole app: routing, reads, templates). Then it
grows the cache to ``--groups`` groups and times the same pages again, in
the same run. Also times the background group count (a SCAN), which the
overview never waits for. Results: ``bench/results/dashboard.json``.

Only keys under the run's prefix are written and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.testclient import TestClient

from config.settings import Settings
from dashboard.app import create_app
from dashboard.source import Source
from tracking import AccumulationTracker, CountLimiter, CountTracker, KeyValueEQ
from tracking.cache.base import CachedTracker
from tracking.factory import manager_from_settings

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"


def trackers() -> list[CachedTracker]:
    specs = [
        CountTracker("logins", [KeyValueEQ("kind", "login")], [3, 10]),
        AccumulationTracker("big-spender", [KeyValueEQ("kind", "purchase")], [100, 500], "amount"),
        CountTracker("shares", [KeyValueEQ("kind", "share")], 10, limiters=[CountLimiter(4)]),
    ]
    out = []
    for tracker in specs:
        definition = tracker.definition
        out.append(CachedTracker(definition, definition.initial_state()))
    return out


def populate(manager: Any, start: int, stop: int) -> None:
    cache = manager.data_cache
    cached = trackers()
    for i in range(start, stop):
        cache.install_group(f"user-{i}", cached)
        if i % 100 == 0:  # 1 % of the groups get events: progress, dirty marks, outbox
            for kind, amount in (("login", 0), ("login", 0), ("login", 0), ("purchase", 120)):
                manager.track(f"user-{i}", {"kind": kind, "amount": amount})


def timed(client: TestClient, paths: list[str]) -> dict[str, float]:
    times = []
    for path in paths:
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    times.sort()
    return {
        "requests": len(times),
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))], 2),
        "mean_ms": round(statistics.fmean(times), 2),
    }


def measure(settings: Settings, groups: int, requests: int, rng: random.Random) -> dict[str, Any]:
    source = Source(settings)
    start = time.perf_counter()
    assert source.wait_for_count(timeout=600)
    count_seconds = time.perf_counter() - start
    counted = source._count[0] if source._count else None
    client = TestClient(create_app(settings, source=source))
    client.get("/groups/user-0")  # warm: definitions, templates, connections
    paths = [f"/groups/user-{rng.randrange(groups)}" for _ in range(requests)]
    group = timed(client, paths)
    overview = timed(client, ["/"] * max(requests // 5, 20))
    source.close()
    return {
        "groups": groups,
        "counted_groups": counted,
        "background_count_seconds": round(count_seconds, 3),
        "group_page": group,
        "overview": overview,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    prefix = "bdash" + uuid.uuid4().hex[:8]
    settings = Settings(redis_url=args.redis_url, key_prefix=prefix, store_url="memory://")
    manager = manager_from_settings(settings)
    rng = random.Random(7)
    load_before = os.getloadavg()
    try:
        populate(manager, 0, args.small)
        small = measure(settings, args.small, args.requests, rng)
        start = time.perf_counter()
        populate(manager, args.small, args.groups)
        install_seconds = time.perf_counter() - start
        large = measure(settings, args.groups, args.requests, rng)
    finally:
        manager.data_cache.flush()
        manager.data_cache.close()
    result = {
        "benchmark": "dashboard page time, few vs many groups cached (bench/dashboard_bench.py)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "redis": "the machine's redis-server on 127.0.0.1 (TCP)",
        "loadavg_at_start": [round(x, 2) for x in load_before],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "install_seconds_for_the_rest": round(install_seconds, 1),
        "small": small,
        "large": large,
        "ratio_large_to_small_p50": {
            "group_page": round(large["group_page"]["p50_ms"] / small["group_page"]["p50_ms"], 2),
            "overview": round(large["overview"]["p50_ms"] / small["overview"]["p50_ms"], 2),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
