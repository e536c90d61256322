"""Several engine processes on one cache: private Redis server vs local Redis Cluster.

Run from the repository root::

    .venv/bin/python bench/multiworker_bench.py            # ~4 minutes
    .venv/bin/python bench/multiworker_bench.py --quick    # 1 s cells, 1000 groups

N worker processes (``--procs``, default 1 2 3) each build their own
``TrackingManager`` + ``RedisDataCache`` and call it directly: **no broker
and no Celery** in this benchmark (the broker's cost per event is measured
in ``bench/celery_bench.py``). Groups hold 10 count trackers that all match
the event, so every event steps 10 trackers. Cells:

* ``hot``: every process sends ``track`` events to one group;
* ``many``: 10,000 groups (``--groups``), each process round-robin over its
  own share of them;
* ``hot-batch``: every process sends ``track_many`` batches of ``--batch``
  events to the one hot group.

Each cell runs ``--seconds`` seconds on both backends, one after the other
(private server first, then cluster), so the machine's background load hits
both alike:

* ``private``: a standalone ``redis-server`` started for the run on a free
  port (no persistence);
* ``cluster``: a local cluster of six ``redis-server`` processes (three
  primaries, one replica each, ``tests/support/redis_cluster.py``).

Around the timed part of every cell the primaries' ``INFO commandstats`` and
``INFO stats`` are read, giving per event: server microseconds (all
primaries, and the busiest one), script calls (FCALL/EVALSHA) and bytes in and
out. After all cells every group's trackers are read back and each
tracker's progress must equal the events its group was sent (warm-ups
included): ``exact_counts``. Results: ``bench/results/multiworker.json`` and
``bench/results/multiworker.png``, with the load average per cell (the
machine is shared with other jobs on 2 cores: compare within one run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support and bench.cluster_bench

from bench.cluster_bench import TRACKERS, _install, _start_private  # noqa: E402
from tests.support.redis_cluster import LocalCluster  # noqa: E402
from tracking import FileDataStore, TrackingManager  # noqa: E402
from tracking.cache.redis import RedisDataCache  # noqa: E402

DATA = {"kind": "hit"}
IGNORED = {"info", "ping", "cluster", "command", "hello", "client", "role"}


def _worker(
    url: str,
    prefix: str,
    groups: list[str],
    mode: str,
    batch: int,
    seconds: float,
    tag: str,
    barrier: Any,
    out: Any,
) -> None:
    """One engine process: warm up on its groups, wait for the others, run ``seconds``."""
    cache = RedisDataCache(url, prefix)
    manager = TrackingManager(cache, FileDataStore(tempfile.mkdtemp(prefix="mw-bench-store-")))
    sent: Counter[str] = Counter()
    try:
        warm = [(g, DATA, f"w{tag}-{i}") for i, g in enumerate(groups)]
        for start in range(0, len(warm), 200):
            part = warm[start : start + 200]
            for r in manager.track_many(part):
                assert not isinstance(r, Exception), r
            sent.update(g for g, _, _ in part)
        barrier.wait()  # warm-ups done: the parent reads the server counters
        barrier.wait()  # go
        n, i, count = len(groups), 0, 0
        deadline = time.perf_counter() + seconds
        start_t = time.perf_counter()
        while time.perf_counter() < deadline:
            if mode == "track":
                group = groups[i % n]
                manager.track(group, DATA, event_id=f"e{tag}-{i}")
                sent[group] += 1
                i += 1
                count += 1
            else:
                events = [(groups[(i + k) % n], DATA, f"e{tag}-{i + k}") for k in range(batch)]
                for r in manager.track_many(events):
                    assert not isinstance(r, Exception), r
                sent.update(g for g, _, _ in events)
                i += batch
                count += batch
        elapsed = time.perf_counter() - start_t
        out.put({"events": count, "seconds": elapsed, "sent": dict(sent)})
    except BaseException as exc:  # report instead of hanging the parent on the barrier
        barrier.abort()
        out.put({"error": repr(exc)})
        raise
    finally:
        cache.close()


def _primaries(url: str, cluster: LocalCluster | None) -> list[redis.Redis]:
    if cluster is None:
        return [redis.Redis.from_url(url, decode_responses=True)]
    nodes = [cluster.node(p) for p in cluster.ports]
    return [n for n in nodes if n.info("replication")["role"] == "master"]


def _stats(nodes: list[redis.Redis]) -> list[dict[str, float]]:
    """Per primary: command microseconds and calls (scripts apart), bytes in and out."""
    got = []
    for node in nodes:
        cmds = node.info("commandstats")
        stats = node.info("stats")
        usec = calls = scripts = 0.0
        for key, value in cmds.items():
            name = key.removeprefix("cmdstat_").lower()
            if name in IGNORED:
                continue
            usec += float(value["usec"])
            calls += float(value["calls"])
            if name in ("fcall", "evalsha", "eval"):
                scripts += float(value["calls"])
        got.append(
            {
                "usec": usec,
                "calls": calls,
                "scripts": scripts,
                "in": float(stats["total_net_input_bytes"]),
                "out": float(stats["total_net_output_bytes"]),
                "repl_out": float(stats.get("total_net_repl_output_bytes", 0)),
            }
        )
    return got


def run_cell(
    backend: dict[str, Any], scenario: str, procs: int, args: argparse.Namespace
) -> dict[str, Any]:
    ids: list[str] = backend["ids"][scenario]
    mode = "track_many" if scenario == "hot-batch" else "track"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    tag = uuid.uuid4().hex[:6]
    workers = []
    for w in range(procs):
        share = ids if len(ids) == 1 else ids[w::procs]
        workers.append(
            ctx.Process(
                target=_worker,
                args=(
                    backend["url"],
                    backend["prefix"],
                    share,
                    mode,
                    args.batch,
                    args.seconds,
                    f"{tag}{w}",
                    barrier,
                    out,
                ),
            )
        )
    load = os.getloadavg()[0]
    for p in workers:
        p.start()
    barrier.wait(timeout=600)
    before = _stats(backend["nodes"])
    barrier.wait(timeout=60)
    reports = [out.get(timeout=600) for _ in workers]
    after = _stats(backend["nodes"])
    for p in workers:
        p.join(timeout=60)
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise RuntimeError(errors)
    for r in reports:
        backend["sent"][scenario].update(r["sent"])
    events = sum(r["events"] for r in reports)
    rate = sum(r["events"] / r["seconds"] for r in reports)
    delta = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True)]
    usec = [d["usec"] / events for d in delta]
    return {
        "procs": procs,
        "events": events,
        "events_per_s": round(rate, 1),
        "per_process_events_per_s": [round(r["events"] / r["seconds"], 1) for r in reports],
        "load_avg_1m_before": round(load, 2),
        "server_usec_per_event_all_primaries": round(sum(usec), 2),
        "server_usec_per_event_busiest_primary": round(max(usec), 2),
        "busiest_primary_share_of_server_usec": round(max(usec) / sum(usec), 3),
        "script_calls_per_event": round(sum(d["scripts"] for d in delta) / events, 3),
        "server_commands_per_event_incl_in_script": round(
            sum(d["calls"] for d in delta) / events, 3
        ),
        "bytes_in_per_event": round(sum(d["in"] for d in delta) / events, 1),
        "bytes_out_per_event": round(sum(d["out"] for d in delta) / events, 1),
        "replication_bytes_out_per_event": round(sum(d["repl_out"] for d in delta) / events, 1),
    }


def _check(backend: dict[str, Any]) -> dict[str, bool]:
    cache = RedisDataCache(backend["url"], backend["prefix"])
    try:
        exact: dict[str, bool] = {}
        for key, ids in (("hot", backend["ids"]["hot"]), ("many", backend["ids"]["many"])):
            sent = backend["sent"][key]
            if key == "hot":
                sent = sent + backend["sent"]["hot-batch"]
            ok = True
            for group in ids:
                got = cache.get_group(group)
                assert got is not None
                progress = {t.state.progress for t in got.trackers.values()}
                ok = ok and progress == {sent[group]} and len(got.trackers) == TRACKERS
            exact[key] = ok
        return exact
    finally:
        cache.flush()
        cache.close()


def _chart(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = ["hot", "many", "hot-batch"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=False)
    for ax, scenario in zip(axes, scenarios, strict=True):
        for backend, marker in (("private", "o"), ("cluster", "s")):
            pts = [c for c in cells if c["scenario"] == scenario and c["backend"] == backend]
            ax.plot(
                [c["procs"] for c in pts],
                [c["events_per_s"] for c in pts],
                marker=marker,
                label=backend,
            )
        ax.set_title(scenario)
        ax.set_xlabel("engine processes")
        ax.set_xticks(sorted({c["procs"] for c in cells}))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("events/s (all processes)")
    axes[0].legend()
    fig.suptitle("Engine processes on one cache, 10 trackers/group, shared 2-core machine")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "multiworker.json"))
    args = parser.parse_args()
    if args.quick:
        args.groups, args.seconds = 1000, 1.0
    started = time.monotonic()
    load_start = os.getloadavg()
    cluster = LocalCluster().start()
    private = _start_private()
    backends: dict[str, dict[str, Any]] = {}
    cells: list[dict[str, Any]] = []
    try:
        for name, url, clu in (("private", private[0], None), ("cluster", cluster.url, cluster)):
            prefix = "mw" + uuid.uuid4().hex[:8]
            ids = {
                "hot": ["hot"],
                "hot-batch": ["hot"],
                "many": [f"g{i}" for i in range(args.groups)],
            }
            cache = RedisDataCache(url, prefix)
            _install(cache, ids["hot"] + ids["many"])
            cache.close()
            backends[name] = {
                "url": url,
                "prefix": prefix,
                "ids": ids,
                "nodes": _primaries(url, clu),
                "sent": {k: Counter[str]() for k in ids},
            }
        for scenario in ("hot", "hot-batch", "many"):
            for procs in args.procs:
                for name, backend in backends.items():
                    cell = {"scenario": scenario, "backend": name}
                    cell.update(run_cell(backend, scenario, procs, args))
                    cells.append(cell)
                    print(json.dumps(cell), flush=True)
        exact = {name: _check(backend) for name, backend in backends.items()}
    finally:
        cluster.stop()
        private[1].terminate()
        private[1].wait(timeout=30)
    report = {
        "what": "N engine processes calling TrackingManager.track / track_many directly "
        "(no broker, no Celery) on one cache: private redis-server vs local 3-primary cluster",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "note": "shared 2-core machine, other jobs running: absolute rates are low, "
        "compare within this run",
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "total_s": round(time.monotonic() - started, 1),
        "parameters": {
            "trackers_per_group": TRACKERS,
            "groups_many": args.groups,
            "seconds_per_cell": args.seconds,
            "track_many_batch": args.batch,
            "procs": args.procs,
        },
        "exact_counts": exact,
        "cells": cells,
    }
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _chart(cells, out.with_suffix(".png"))
    print(json.dumps({"exact_counts": exact, "total_s": report["total_s"]}))


if __name__ == "__main__":
    main()
