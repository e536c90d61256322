"""Benchmark: events/s from ``track.delay`` to applied state, next to a no-op ceiling.

Run from the repository root (needs RabbitMQ on 127.0.0.1:5672 and Redis on
127.0.0.1:6379 for the RabbitMQ rows; the embedded rows need nothing)::

    .venv/bin/python bench/celery_bench.py
    .venv/bin/python bench/celery_bench.py --brokers embedded --track 2000

Set-up per broker: an isolated deployment (``tests.support.celery_env``:
own data directory, key prefix, RabbitMQ vhost), one prefork worker
``-c 2`` on all queues with the product's defaults (``acks_late``,
``prefetch_multiplier=1``, task events on), log level WARNING. The cache is
the embedded Redis with the embedded broker, and the machine's Redis with
RabbitMQ. 100 groups, each with a CountTracker and an AccumulationTracker
that match every event (so every event runs one Lua apply that changes two
trackers).

Scenarios, published from one thread of this process:

- ``noop``: ``tasks.noop`` (does nothing): the ceiling of the setup.
- ``track``: one ``track.delay`` per event.
- ``track_many``: ``track_many.delay`` with batches of ``--batch`` events.

"Applied" is the worker's ``task-succeeded`` event (captured with Celery's
event receiver, the mechanism Flower uses), which the worker sends after
the task returned, i.e. after the Lua apply committed. Throughput is
events / (last success - first publish); latency is per task, publish ->
success (for ``track_many`` that is the batch's latency). At the end the
trackers' progress is checked against the number of events sent.

Results: ``bench/results/celery.json`` and ``bench/results/celery.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from celery_app import configure, runtime  # noqa: E402
from celery_app.app import app  # noqa: E402
from tasks import noop, track, track_many  # noqa: E402
from tests.support.celery_env import available, deployment  # noqa: E402
from tracking import AccumulationTracker, CountTracker, KeyValueEQ  # noqa: E402

RESULTS = REPO / "bench" / "results"
GROUPS = [f"bench-{i}" for i in range(100)]


class Collector:
    """Collect ``task-succeeded``/``task-failed`` events in a background thread."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.lock = threading.Lock()
        self.receiver: Any = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("event receiver did not start")

    def _run(self) -> None:
        def ok(event: dict[str, Any]) -> None:
            with self.lock:
                self.done[event["uuid"]] = event["timestamp"]

        def bad(event: dict[str, Any]) -> None:
            with self.lock:
                self.failed[event["uuid"]] = event.get("exception", "")

        with app.connection_for_read() as conn:
            self.receiver = app.events.Receiver(
                conn, handlers={"task-succeeded": ok, "task-failed": bad}
            )
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=True)

    def wait_for(self, ids: list[str], idle: float = 10.0) -> int:
        """Wait until every task reported; return how many events the monitor missed.

        Celery's task events travel over the broker's fanout (Redis pub/sub),
        which does not guarantee delivery to a monitor; a task whose event
        never arrives is counted as missed once no event came for ``idle``
        seconds (the applied-state check at the end is exact regardless).
        """
        last_count, last_change = -1, time.monotonic()
        while True:
            with self.lock:
                count = sum(1 for i in ids if i in self.done or i in self.failed)
            if count == len(ids):
                return 0
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > idle:
                if count < 0.99 * len(ids):
                    raise RuntimeError(f"only {count} of {len(ids)} tasks reported")
                return len(ids) - count
            time.sleep(0.05)

    def handshake(self) -> None:
        """Send no-ops until the monitor sees one: its subscription is live."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            task_id = str(uuid.uuid4())
            noop.apply_async(task_id=task_id)
            for _ in range(20):
                with self.lock:
                    if task_id in self.done:
                        return
                time.sleep(0.05)
        raise RuntimeError("the event monitor saw no task event in 60 s")

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _run(
    collector: Collector, kind: str, tasks: int, per_task: int, rng: random.Random
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    start = time.time()
    for _ in range(tasks):
        task_id = str(uuid.uuid4())
        sent[task_id] = time.time()
        if kind == "noop":
            noop.apply_async(task_id=task_id)
        elif kind == "track":
            track.apply_async(args=(rng.choice(GROUPS), {"kind": "hit", "n": 1}), task_id=task_id)
        else:
            batch = [
                {"group_id": rng.choice(GROUPS), "data": {"kind": "hit", "n": 1}}
                for _ in range(per_task)
            ]
            track_many.apply_async(args=(batch,), task_id=task_id)
    published = time.time()
    missed = collector.wait_for(list(sent))
    failed = [i for i in sent if i in collector.failed]
    if failed:
        raise RuntimeError(f"{len(failed)} {kind} tasks failed: {collector.failed[failed[0]]}")
    done = [collector.done[i] for i in sent if i in collector.done]
    latencies = [collector.done[i] - t for i, t in sent.items() if i in collector.done]
    elapsed = max(done) - start
    events = tasks * per_task
    return {
        "scenario": kind,
        "tasks": tasks,
        "events": events,
        "elapsed_s": round(elapsed, 3),
        "publish_s": round(published - start, 3),
        "events_per_s": round(events / elapsed, 1),
        "tasks_per_s": round(tasks / elapsed, 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "latency_p99_ms": round(1000 * _pct(latencies, 0.99), 2),
        "monitor_missed_events": missed,
    }


def bench_broker(kind: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    with deployment(kind, tmp, prefetch_multiplier=args.prefetch) as dep:
        configure(dep.settings)
        dep.start_worker("bench", concurrency=args.concurrency, loglevel="WARNING")
        manager = runtime.get_manager()
        for group in GROUPS:
            manager.add_trackers(
                group,
                [
                    CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**12),
                    AccumulationTracker("sum", [KeyValueEQ("kind", "hit")], 10**12, "n"),
                ],
            )
        collector = Collector()
        rng = random.Random(1)
        try:
            collector.handshake()
            _run(collector, "noop", 200, 1, rng)  # warm-up: pool processes, connections
            _run(collector, "track", 200, 1, rng)
            base = sum(t.progress for g in GROUPS for t in manager.get_trackers(g, "hits"))
            plan = [
                ("noop", args.noop, 1),
                ("track", args.track, 1),
                ("track_many", args.many_batches, args.batch),
            ]
            for scenario, tasks, per_task in plan:
                row = _run(collector, scenario, tasks, per_task, rng)
                row["broker"] = kind
                rows.append(row)
                print(json.dumps(row), flush=True)
            total = sum(t.progress for g in GROUPS for t in manager.get_trackers(g, "hits"))
            expected = args.track + args.many_batches * args.batch
            if total - base != expected:
                raise RuntimeError(f"applied {total - base} events, sent {expected}")
        finally:
            collector.stop()
    return rows


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    brokers = sorted({r["broker"] for r in rows}, key=["embedded", "rabbitmq"].index)
    scenarios = ["noop", "track", "track_many"]
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(scenarios)
    for i, scenario in enumerate(scenarios):
        values = [
            next(r["events_per_s"] for r in rows if r["broker"] == b and r["scenario"] == scenario)
            for b in brokers
        ]
        xs = [j + i * width for j in range(len(brokers))]
        bars = ax.bar(xs, values, width, label=scenario)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(10_000, color="grey", linestyle="--", linewidth=1)
    ax.text(-0.3, 10_300, "track_many target 10k/s", fontsize=8, color="grey")
    ax.set_xticks([j + width for j in range(len(brokers))], [f"{b} broker" for b in brokers])
    ax.set_ylabel("events/s, publish -> applied")
    ax.set_title("Throughput (prefork worker -c 2, 2 cores)")
    ax.legend()
    for i, scenario in enumerate(scenarios):
        p50 = [
            next(
                r["latency_p50_ms"] for r in rows if r["broker"] == b and r["scenario"] == scenario
            )
            for b in brokers
        ]
        p99 = [
            next(
                r["latency_p99_ms"] for r in rows if r["broker"] == b and r["scenario"] == scenario
            )
            for b in brokers
        ]
        xs = [j + i * width for j in range(len(brokers))]
        lat.bar(xs, p99, width, alpha=0.35, color=f"C{i}")
        lat.bar(xs, p50, width, label=f"{scenario} p50 (light: p99)", color=f"C{i}")
    lat.set_yscale("log")
    lat.set_xticks([j + width for j in range(len(brokers))], [f"{b} broker" for b in brokers])
    lat.set_ylabel("ms per task, publish -> applied (under full load)")
    lat.set_title("Latency")
    lat.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default="embedded,rabbitmq")
    parser.add_argument("--noop", type=int, default=3000)
    parser.add_argument("--track", type=int, default=3000)
    parser.add_argument("--many-batches", type=int, default=100)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--out", default="celery")
    args = parser.parse_args()
    import tempfile

    rows: list[dict[str, Any]] = []
    for kind in args.brokers.split(","):
        reason = available(kind)
        if reason is not None:
            print(f"skipping {kind}: {reason}", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp:
            rows.extend(bench_broker(kind, args, Path(tmp)))
    summary = {}
    for kind in {r["broker"] for r in rows}:
        by = {r["scenario"]: r for r in rows if r["broker"] == kind}
        summary[kind] = {
            "track_vs_noop": round(by["track"]["events_per_s"] / by["noop"]["events_per_s"], 3),
            "track_target_half_of_noop_met": by["track"]["events_per_s"]
            >= 0.5 * by["noop"]["events_per_s"],
            "track_many_target_10k_met": by["track_many"]["events_per_s"] >= 10_000,
        }
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
            # Other work on the machine skews results; record how busy it was.
            "loadavg_at_end": [round(x, 2) for x in __import__("os").getloadavg()],
        },
        "settings": vars(args),
        "rows": rows,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    if rows:
        chart(rows, RESULTS / f"{args.out}.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
