"""This engine against an earlier revision of itself: warm events/s and Redis CPU per event.

Run from the repository root::

    .venv/bin/python bench/hotpath_compare.py --base-rev <git revision>
    .venv/bin/python bench/hotpath_compare.py --base-rev <rev> --redis-url redis://127.0.0.1:PORT

The base revision's sources are exported with ``git archive`` into a
temporary directory; one worker process per side (base, this checkout)
installs one group of T count trackers sharing one condition (the engine
benchmark's "steady" setup) under its own random key prefix, and then the
two are run in alternating rounds of ``--events`` warm ``manager.track``
calls, one side at a time, so background load hits both alike. Per round:
events/s, and the Redis server's CPU per event from ``INFO cpu`` deltas
(``used_cpu_sys + used_cpu_user``: commands, Lua and network I/O). That CPU
figure is server-wide, so run it on a Redis server no one else uses
(``--redis-url``). Each worker deletes only its own keys. Results:
``bench/results/hotpath_compare.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "hotpath_compare.json"
EVENT = {"status": "active", "amount": 3}


def worker(url: str, trackers: int) -> None:
    """``--worker``: set up one group, then answer each stdin line N with 'cpu_us ev/s'."""
    sys.path.insert(0, os.getcwd())  # the tree this worker was started in
    import redis

    import tracking
    from tracking import CountTracker, KeyValueEQ, MemoryDataStore, TrackingManager
    from tracking.cache.base import CachedTracker
    from tracking.cache.redis import RedisDataCache

    if not Path(tracking.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise RuntimeError(f"imported {tracking.__file__}, not the tree in {os.getcwd()}")
    prefix = "cmp" + uuid.uuid4().hex[:10]
    cache = RedisDataCache(url, key_prefix=prefix)
    client = redis.Redis.from_url(url)
    template = [
        CountTracker(f"t{j}", [KeyValueEQ("status", "active")], 10**12) for j in range(trackers)
    ]
    cache.install_group("g0", [CachedTracker(t.definition, t.state.copy()) for t in template])
    manager = TrackingManager(cache, MemoryDataStore())
    for _ in range(300):
        manager.track("g0", EVENT)

    def cpu() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    print("ready", flush=True)
    try:
        for line in sys.stdin:
            n = int(line)
            c0, t0 = cpu(), time.perf_counter()
            for _ in range(n):
                manager.track("g0", EVENT)
            elapsed, c1 = time.perf_counter() - t0, cpu()
            print(f"{(c1 - c0) / n * 1e6:.3f} {n / elapsed:.1f}", flush=True)
    finally:
        for pattern in ("{" + prefix + ":*", prefix + ":*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.unlink(*keys)


def export(rev: str, into: Path) -> str:
    """The sources of ``rev`` under ``into``; the full commit hash."""
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = into / "src.tar"
    subprocess.run(["git", "archive", "-o", str(archive), commit], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return commit


def compare(url: str, trees: dict[str, Path], trackers: int, rounds: int, events: int) -> Any:
    """Alternating rounds for one tracker count; per-round numbers and medians."""
    me = str(Path(__file__).resolve())
    procs = {
        side: subprocess.Popen(
            [sys.executable, me, "--worker", url, str(trackers)],
            cwd=tree,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for side, tree in trees.items()
    }
    rows: dict[str, list[dict[str, float]]] = {side: [] for side in trees}
    try:
        for proc in procs.values():
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")
        order = list(trees)
        for r in range(rounds):
            for side in order if r % 2 == 0 else order[::-1]:
                proc = procs[side]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(f"{events}\n")
                proc.stdin.flush()
                cpu_us, rate = map(float, proc.stdout.readline().split())
                rows[side].append(
                    {
                        "cpu_us_per_event": cpu_us,
                        "events_per_s": rate,
                        "load_1m": os.getloadavg()[0],
                    }
                )
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
    base, new = rows["base"], rows["new"]
    return {
        "trackers": trackers,
        "rounds": rows,
        "median": {
            side: {
                "cpu_us_per_event": statistics.median(r["cpu_us_per_event"] for r in rows[side]),
                "events_per_s": statistics.median(r["events_per_s"] for r in rows[side]),
            }
            for side in rows
        },
        "median_of_round_ratios_new_over_base": {
            "cpu_us_per_event": statistics.median(
                n["cpu_us_per_event"] / b["cpu_us_per_event"]
                for b, n in zip(base, new, strict=True)
            ),
            "events_per_s": statistics.median(
                n["events_per_s"] / b["events_per_s"] for b, n in zip(base, new, strict=True)
            ),
        },
    }


BEGIN = (
    "<!-- hotpath-compare:begin "
    "(bench/hotpath_compare.py --markdown bench/results/hotpath_compare.json) -->"
)
END = "<!-- hotpath-compare:end -->"


def markdown(out: dict[str, Any]) -> str:
    """The results as the READMEs quote them, between markers."""
    lines = [
        BEGIN,
        "",
        f"Run {out['started']}: commit `{out['new_commit'][:7]}` against "
        f"`{out['base_commit'][:7]}`, "
        f"{out['rounds']} alternating rounds of {out['events_per_round']:,} warm events per side, "
        f"Redis at {out['redis_url_host']}; 1-minute load average {out['load_avg_before'][0]:.2f} "
        f"before, {out['load_avg_after'][0]:.2f} after.",
        "",
        "| trackers | Redis CPU µs/event, base → new (median) | events/s, base → new (median) "
        "| new/base per round (median): Redis CPU | events/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in out["results"]:
        base, new = r["median"]["base"], r["median"]["new"]
        ratio = r["median_of_round_ratios_new_over_base"]
        lines.append(
            f"| {r['trackers']} | {base['cpu_us_per_event']:.0f} → {new['cpu_us_per_event']:.0f} "
            f"| {base['events_per_s']:,.0f} → {new['events_per_s']:,.0f} "
            f"| {ratio['cpu_us_per_event']:.2f}x | {ratio['events_per_s']:.2f}x |"
        )
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-rev", help="git revision to compare against")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--trackers", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print the README table")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    if not args.base_rev:
        parser.error("--base-rev is required")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base_commit = export(args.base_rev, Path(tmp))
        trees = {"base": Path(tmp) / "tree", "new": ROOT}
        load_before = os.getloadavg()
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results = [
            compare(args.redis_url, trees, t, args.rounds, args.events) for t in args.trackers
        ]
    out = {
        "started": started,
        "base_commit": base_commit,
        "new_commit": head,
        "redis_url_host": args.redis_url.split("@")[-1].split("/")[2],
        "rounds": args.rounds,
        "events_per_round": args.events,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    for r in results:
        ratio = r["median_of_round_ratios_new_over_base"]
        print(
            f"{r['trackers']} trackers: median base {r['median']['base']} new {r['median']['new']}"
            f"; new/base per round: events/s {ratio['events_per_s']:.2f}x,"
            f" Redis CPU per event {ratio['cpu_us_per_event']:.2f}x"
        )


if __name__ == "__main__":
    main()
