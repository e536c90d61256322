"""What persisting dedupe ids costs a write-behind flush.

Every flush writes a dirty group's remembered event ids (up to
``TRACKING_DEDUPE_MAX_ENTRIES``) to the store with its state, so that a
cache loss does not turn a redelivery into a double count (see
docs/reliability.md). This measures one flush of 100 dirty groups whose
groups remember 1, 100 or 1,000 ids each, side by side in one run: the
flush time and the bytes the file store holds afterwards.

Run from the repository root (the machine's Redis, a prefix of its own,
deleted afterwards)::

    .venv/bin/python bench/dedupe_flush_bench.py [--redis-url redis://127.0.0.1:6379/12]

Results: ``bench/results/dedupe_flush.json`` (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tracking import CountTracker, FileDataStore, KeyValueEQ, RedisDataCache  # noqa: E402
from tracking.manager import TrackingManager  # noqa: E402

RESULTS = REPO / "bench" / "results"
GROUPS = 100


def _store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(redis_url: str, ids_per_group: int) -> dict[str, float]:
    """One flush of GROUPS dirty groups remembering ``ids_per_group`` ids each."""
    cache = RedisDataCache(redis_url, f"b{uuid.uuid4().hex[:8]}")
    try:
        with tempfile.TemporaryDirectory(prefix="ddf-") as tmp:
            store = FileDataStore(str(Path(tmp) / "store"))
            manager = TrackingManager(cache, store)
            groups = [f"g{i}" for i in range(GROUPS)]
            for group in groups:
                manager.add_tracker(group, CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**9))
            for n in range(ids_per_group):
                manager.track_many(
                    [(g, {"kind": "hit"}, f"{uuid.uuid4().hex}-{n}") for g in groups]
                )
            start = time.perf_counter()
            report = manager.flush_dirty(limit=GROUPS)
            seconds = time.perf_counter() - start
            assert len(report.flushed) == GROUPS, report
            return {
                "ids_per_group": ids_per_group,
                "flush_seconds": round(seconds, 4),
                "store_bytes": _store_bytes(Path(tmp) / "store"),
            }
    finally:
        cache.flush()
        cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--out", type=Path, default=RESULTS / "dedupe_flush.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = [measure(args.redis_url, n) for n in (1, 100, 1000)]
    result = {
        "groups": GROUPS,
        "store": "file",
        "rows": rows,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": "python bench/dedupe_flush_bench.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
