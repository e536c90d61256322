"""Benchmark: worker capacity and latency of single ``track`` messages through Celery.

Run from the repository root (RabbitMQ on 127.0.0.1:5672 and Redis on
127.0.0.1:6379 for the RabbitMQ rows; the embedded rows need nothing)::

    .venv/bin/python bench/celery_bench.py
    .venv/bin/python bench/celery_bench.py --brokers embedded --backlog 2000
    .venv/bin/python bench/celery_bench.py --markdown bench/results/celery.json

One isolated deployment per broker (``tests.support.celery_env``: own data
directory, key prefix, RabbitMQ vhost), one prefork worker ``-c 2`` with
the product's defaults (``acks_late``, prefetch 1 on every queue but
``tracking.batch``, whose prefetch is ``TRACKING_BATCH_PREFETCH``; task
events on), log level WARNING. The cache is the embedded Redis with the
embedded broker and the machine's Redis with RabbitMQ. 100 groups, each with
a CountTracker and an AccumulationTracker that match every event.

Measured, side by side in one run per broker:

- **capacity** (events/s from a pre-published backlog, so the publisher is
  not what is measured): the backlog is published while no worker runs, then
  a worker starts; rate = (n - 1) / (last applied - first applied), from the
  worker's ``task-succeeded`` events (sent after the apply committed).
  Scenarios: ``track`` (the batching path), ``track_one`` (one task per
  message, today's path), ``noop`` at prefetch 1 (the old ceiling),
  ``track_many`` in batches of ``--many-batch``, and ``bare``: a kombu
  consumer in this process that only receives and acknowledges the same
  ``track`` messages with the batch queue's prefetch (the broker's limit).
- **latency** from ``delay()`` to applied (publish time -> the worker's
  ``task-succeeded`` timestamp), p50/p99 at 10%, 50% of the measured
  capacity (paced publisher) and at full load (publishing as fast as one
  thread can), for ``track`` and ``track_one``.
- **publisher cost** per ``delay()``: with the product's settings (pooled
  connection; publisher confirms on RabbitMQ), without confirms (RabbitMQ),
  and with a new connection per call.

Every scenario's applied count is checked exactly against the trackers'
progress (or the consumer's count). Results: ``bench/results/celery.json``
and ``.png``; ``--markdown`` prints the tables the READMEs quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import celery_report  # noqa: E402

RESULTS = REPO / "bench" / "results"
GROUPS = [f"bench-{i}" for i in range(100)]
EVENT = {"kind": "hit", "n": 1}


def _hits(manager: Any) -> int:
    return int(sum(t.progress for g in GROUPS for t in manager.get_trackers(g, "hits")))


def _publish(kind: str, count: int, rng: random.Random, **options: Any) -> dict[str, float]:
    """Publish ``count`` messages of ``kind``; returns task id -> publish time."""
    from tasks import noop, track, track_many, track_one

    sent: dict[str, float] = {}
    for _ in range(count):
        task_id = str(uuid.uuid4())
        sent[task_id] = time.time()
        if kind == "noop":
            noop.apply_async(task_id=task_id, **options)
        elif kind == "track_many":
            batch = [
                {"group_id": rng.choice(GROUPS), "data": EVENT} for _ in range(options["size"])
            ]
            track_many.apply_async(args=(batch,), task_id=task_id)
        else:
            task = track if kind in ("track", "bare") else track_one
            task.apply_async(args=(rng.choice(GROUPS), EVENT), task_id=task_id, **options)
    return sent


def _capacity(ctx: dict[str, Any], kind: str, count: int, per: int = 1) -> dict[str, Any]:
    dep, collector, rng, manager = ctx["dep"], ctx["collector"], ctx["rng"], ctx["manager"]
    before = _hits(manager)
    start = time.perf_counter()
    sent = _publish(kind, count, rng, **({"size": per} if kind == "track_many" else {}))
    publish_us = 1e6 * (time.perf_counter() - start) / count
    worker = dep.start_worker(f"cap-{kind}", loglevel="WARNING")
    try:
        missed = collector.wait_for(list(sent))
    finally:
        _stop(dep, worker)
    done = sorted(collector.done[i] for i in sent if i in collector.done)
    # Drain rate after the first applied event: the events applied after it
    # over the time it took. With batches, the first batch's events all share
    # its timestamp and are left out, as the first task is for one-per-message.
    after_first = sum(1 for t in done if t > done[0])
    applied = _hits(manager) - before
    expected = 0 if kind == "noop" else count * per
    if applied != expected:
        raise RuntimeError(f"{kind}: applied {applied} events, sent {expected}")
    events = count * per
    return {
        "scenario": kind,
        "events": events,
        "events_per_s": round(after_first * per / (done[-1] - done[0]), 1),
        "applied_exact": True,
        "monitor_missed_events": missed,
        "publish_us_per_call": round(publish_us, 1),
    }


def _bare(ctx: dict[str, Any], count: int, prefetch: int) -> dict[str, Any]:
    """The same ``track`` messages, received and acknowledged by a bare kombu consumer.

    The consumer runs in its own process (as a worker's main process does),
    started after the backlog was published.
    """
    from kombu import Queue

    from celery_app.app import app

    queue = Queue("bench.bare", routing_key="bench.bare")  # type: ignore[no-untyped-call]
    with app.connection_for_write() as conn:
        queue(conn.default_channel).declare()
    _publish("bare", count, ctx["rng"], queue=queue.name, routing_key=queue.name)
    spec = {
        "url": app.conf.broker_url,
        "transport_options": dict(app.conf.broker_transport_options),
        "queue": queue.name,
        "count": count,
        "prefetch": prefetch,
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--bare-consumer", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    stamps: list[float] = json.loads(proc.stdout.strip().splitlines()[-1])
    with app.connection_for_write() as conn:
        queue(conn.default_channel).delete()
    if len(stamps) != count:
        raise RuntimeError(f"bare consumer received {len(stamps)} of {count}")
    return {
        "scenario": "bare",
        "events": count,
        "events_per_s": round((count - 1) / (stamps[-1] - stamps[0]), 1),
        "applied_exact": True,
        "monitor_missed_events": 0,
    }


def bare_consumer(spec: dict[str, Any]) -> None:
    """Receive and acknowledge ``count`` messages; print their receive times as JSON."""
    from kombu import Connection, Consumer, Queue

    queue = Queue(spec["queue"], routing_key=spec["queue"])  # type: ignore[no-untyped-call]
    stamps: list[float] = []

    def on_message(message: Any) -> None:
        message.ack()
        stamps.append(time.time())

    with Connection(spec["url"], transport_options=spec["transport_options"]) as conn:
        channel = conn.channel()
        channel.basic_qos(0, spec["prefetch"], False)
        with Consumer(channel, queues=[queue], on_message=on_message, accept=["json"]):
            deadline = time.monotonic() + 300
            while len(stamps) < spec["count"] and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    continue
    print(json.dumps(stamps))


def _latency(ctx: dict[str, Any], kind: str, rate: float | None, count: int) -> dict[str, Any]:
    """Publish ``count`` events at ``rate``/s (None: as fast as possible) to a running worker."""
    collector, rng, manager = ctx["collector"], ctx["rng"], ctx["manager"]
    before = _hits(manager)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(count):
        if rate is not None:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sent.update(_publish(kind, 1, rng))
    offered = count / (time.perf_counter() - start)
    missed = collector.wait_for(list(sent))
    latencies = sorted(collector.done[i] - t for i, t in sent.items() if i in collector.done)
    if _hits(manager) - before != count:
        raise RuntimeError(f"{kind}: applied {_hits(manager) - before} of {count}")
    return {
        "scenario": kind,
        "offered_per_s": round(offered, 1),
        "events": count,
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
        "monitor_missed_events": missed,
    }


def _publisher_cost(ctx: dict[str, Any], kind: str, calls: int) -> list[dict[str, Any]]:
    """µs per ``track.delay()`` in this process, to a throwaway queue, several ways."""
    from kombu import Queue

    from celery_app.app import app
    from tasks import track

    rows = []
    queue = Queue("bench.publish", routing_key="bench.publish")  # type: ignore[no-untyped-call]
    opts = {"queue": queue.name, "routing_key": queue.name}
    options = dict(app.conf.broker_transport_options)
    ways = [("one reused connection (product settings)", options, False)]
    if kind == "rabbitmq":
        ways.append(
            (
                "one reused connection, no publisher confirms",
                {**options, "confirm_publish": False},
                False,
            )
        )
    ways.append(("a new connection per call", options, True))
    for label, transport, fresh in ways:
        n = max(calls // 10, 20) if fresh else calls
        with app.connection_for_write(transport_options=transport) as conn:
            producer = conn.Producer()
            track.apply_async(args=("warm", EVENT), producer=producer, **opts)
            start = time.perf_counter()
            for _ in range(n):
                if fresh:
                    with app.connection_for_write(transport_options=transport) as one:
                        track.apply_async(args=("bench-0", EVENT), producer=one.Producer(), **opts)
                else:
                    track.apply_async(args=("bench-0", EVENT), producer=producer, **opts)
            us = 1e6 * (time.perf_counter() - start) / n
            queue(conn.default_channel).delete()
        rows.append({"broker": kind, "way": label, "calls": n, "us_per_delay": round(us, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _stop(dep: Any, proc: Any) -> None:
    from cli import procs

    procs.stop(proc)
    if proc in dep.procs:
        dep.procs.remove(proc)


def bench_broker(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from celery_collector import Collector  # the task-event monitor

    from celery_app import configure, runtime
    from tests.support.celery_env import deployment
    from tracking import AccumulationTracker, CountTracker, KeyValueEQ

    out: dict[str, Any] = {"capacity": [], "latency": [], "publisher": []}
    with deployment(kind, tmp) as dep:
        configure(dep.settings)
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
        ctx = {"dep": dep, "collector": collector, "rng": random.Random(1), "manager": manager}
        try:
            warm = dep.start_worker("warm", loglevel="WARNING")
            collector.handshake()
            for scenario in ("noop", "track_one", "track"):  # pool processes, connections
                collector.wait_for(list(_publish(scenario, 100, ctx["rng"])))
            _stop(dep, warm)
            n = args.backlog
            for scenario, count, per in [
                ("noop", n, 1),
                ("track_one", n, 1),
                ("track", n, 1),
                ("track_many", args.many_batches, args.many_batch),
            ]:
                row = {"broker": kind, **_capacity(ctx, scenario, count, per)}
                out["capacity"].append(row)
                print(json.dumps(row), flush=True)
            row = {"broker": kind, **_bare(ctx, n, dep.settings.batch_prefetch)}
            out["capacity"].append(row)
            print(json.dumps(row), flush=True)
            capacity = {r["scenario"]: r["events_per_s"] for r in out["capacity"]}
            worker = dep.start_worker("latency", loglevel="WARNING")
            try:
                for scenario in ("track", "track_one"):
                    for load in (0.1, 0.5, 1.0):
                        rate = None if load == 1.0 else load * capacity[scenario]
                        count = (
                            args.latency_events
                            if rate is None
                            else int(min(args.latency_events, rate * args.latency_seconds))
                        )
                        row = {"broker": kind, "load": load, **_latency(ctx, scenario, rate, count)}
                        out["latency"].append(row)
                        print(json.dumps(row), flush=True)
                out["publisher"] = _publisher_cost(ctx, kind, args.publish_calls)
            finally:
                _stop(dep, worker)
        finally:
            collector.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", default="embedded,rabbitmq")
    parser.add_argument("--backlog", type=int, default=4000)
    parser.add_argument("--many-batches", type=int, default=40)
    parser.add_argument("--many-batch", type=int, default=500)
    parser.add_argument("--latency-events", type=int, default=2000)
    parser.add_argument("--latency-seconds", type=float, default=8.0)
    parser.add_argument("--publish-calls", type=int, default=2000)
    parser.add_argument("--out", default="celery")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the other brokers' rows of the results file (one run per broker)",
    )
    parser.add_argument("--markdown", type=Path, help="print the README tables of a results file")
    parser.add_argument("--bare-consumer", help=argparse.SUPPRESS)  # internal: the bare consumer
    args = parser.parse_args()
    if args.bare_consumer is not None:
        bare_consumer(json.loads(args.bare_consumer))
        return
    if args.markdown is not None:
        print(celery_report.markdown(json.loads(args.markdown.read_text())), end="")
        return
    from tests.support.celery_env import available

    path = RESULTS / f"{args.out}.json"
    result: dict[str, Any] = {"capacity": [], "latency": [], "publisher": [], "runs": {}}
    brokers = args.brokers.split(",")
    if args.append and path.exists():
        old = json.loads(path.read_text())
        for key in ("capacity", "latency", "publisher"):
            result[key] = [r for r in old[key] if r["broker"] not in brokers]
        result["runs"] = {b: r for b, r in old["runs"].items() if b not in brokers}
    for kind in brokers:
        reason = available(kind)
        if reason is not None:
            print(f"skipping {kind}: {reason}", flush=True)
            continue
        load_before = [round(x, 2) for x in os.getloadavg()]
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp:
            for key, rows in bench_broker(kind, args, Path(tmp)).items():
                result[key].extend(rows)
        result["runs"][kind] = {
            "started": started,
            # Other engineers' tests share the machine: record how busy it was.
            "loadavg_at_start": load_before,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "settings": {
                k: v
                for k, v in vars(args).items()
                if k not in ("markdown", "bare_consumer", "append", "brokers")
            },
        }
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    result["summary"] = celery_report.summary(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    celery_report.chart(result, RESULTS / f"{args.out}.png")
    print(celery_report.markdown(result), end="")


if __name__ == "__main__":
    main()
