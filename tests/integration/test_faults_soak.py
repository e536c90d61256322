"""Soak: a steady load for a while; memory stays flat and the backlogs drain.

A real worker and beat on the embedded Redis (a private server: its
``used_memory`` is this test's alone) with a small dedupe bound, so that
the bound is reached during the warm-up. The caller sends ``track_many``
batches and single ``track`` calls at a steady rate to 20 groups whose
looping trackers fire follow-up events all the time. Checked:

- worker memory flat: the RSS of the worker and its pool processes at the
  end is within ``RSS_TOLERANCE`` of what it was after the warm-up;
- Redis memory flat: ``used_memory`` likewise within ``REDIS_TOLERANCE``;
- dedupe memory within its bound: every group's dedupe set and outcome
  hash hold at most ``dedupe_max_entries`` plus the trim slack (1/8);
- outbox and dirty sets drained once the load stops (beat's jobs);
- exact counts: every event sent is applied once.

1 minute in the normal suite; 10 minutes with the ``long`` marker
(``python -m pytest -m long tests/integration/test_faults_soak.py``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from cli.procs import celery_command
from tasks import track, track_many
from tests.support.celery_env import Deployment, deployment, require, wait_until
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis, pytest.mark.slow]

GROUPS = [f"s{i}" for i in range(20)]
DEDUPE_MAX = 400
BATCH = 50
RSS_TOLERANCE = (1.20, 16 << 20)  # end <= warm * 1.20 + 16 MiB
REDIS_TOLERANCE = (1.20, 2 << 20)  # end <= warm * 1.20 + 2 MiB


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    require("embedded")
    with deployment(
        "embedded",
        tmp_path,
        event_handlers=[],  # no handler writes of its own into Redis
        dedupe_max_entries=DEDUPE_MAX,
        flush_interval_seconds=1.0,
    ) as deployed:
        configure(deployed.settings)
        yield deployed


def _group_rss(pgid: int) -> int:
    """Bytes resident in every process of the process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue  # exited meanwhile
    return total


class Load:
    """Steady load: one batch of BATCH events and one single event every 0.1 s."""

    def __init__(self) -> None:
        self.sent = 0
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = [
                    {"group_id": GROUPS[(self.sent + i) % len(GROUPS)], "data": {"kind": "hit"}}
                    for i in range(BATCH)
                ]
                track_many.delay(batch)
                self.sent += BATCH
                track.delay(GROUPS[self.sent % len(GROUPS)], {"kind": "hit"})
                self.sent += 1
                time.sleep(0.1)
        except BaseException as exc:
            self.failure = exc


def _soak(dep: Deployment, seconds: float) -> None:
    manager = runtime.get_manager()
    for group in GROUPS:
        manager.add_tracker(
            group,
            CountTracker("hits", [KeyValueEQ("kind", "hit")], [25], loop_forever=True),
        )
        manager.add_tracker(group, CountTracker("total", [KeyValueEQ("kind", "hit")], 10**9))
    worker = dep.start_worker("w", concurrency=2)
    dep.start("beat", celery_command("beat", "-l", "INFO"))
    server = dep.embedded
    assert server is not None
    client = server.client()

    def used_memory() -> int:
        return int(client.info("memory")["used_memory"])

    load = Load()
    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        time.sleep(seconds / 4)  # warm-up: pools, caches, dedupe sets fill to their bound
        warm_rss, warm_redis, warm_sent = _group_rss(worker.pid), used_memory(), load.sent
        time.sleep(seconds * 3 / 4)
    finally:
        load.stop.set()
        thread.join(60)
    assert load.failure is None, repr(load.failure)
    sent = load.sent

    def total() -> float:
        return sum(float(manager.get_trackers(g, "total")[0].progress) for g in GROUPS)

    wait_until(lambda: total() == sent, 300, f"all {sent} events applied")
    cache = manager.data_cache
    wait_until(lambda: not cache.outbox(10), 120, "the outbox to drain")
    wait_until(lambda: not cache.dirty_groups(10), 120, "the dirty groups to be flushed")
    end_rss, end_redis = _group_rss(worker.pid), used_memory()

    prefix = dep.prefix
    dedupe = {g: client.zcard(f"{{{prefix}:{g}}}:d") for g in GROUPS}
    outcomes = {g: client.hlen(f"{{{prefix}:{g}}}:o") for g in GROUPS}
    bound = DEDUPE_MAX + DEDUPE_MAX // 8 + 1
    print(
        f"soak {seconds:g}s: {sent} events ({warm_sent} in warm-up); worker RSS "
        f"{warm_rss >> 20} -> {end_rss >> 20} MiB; Redis used_memory {warm_redis >> 10} -> "
        f"{end_redis >> 10} KiB; dedupe per group max {max(dedupe.values())} (bound {bound})"
    )
    assert total() == sent
    assert max(dedupe.values()) <= bound and max(outcomes.values()) <= bound
    assert min(dedupe.values()) >= DEDUPE_MAX  # the bound was reached: it is what held
    assert end_rss <= warm_rss * RSS_TOLERANCE[0] + RSS_TOLERANCE[1]
    assert end_redis <= warm_redis * REDIS_TOLERANCE[0] + REDIS_TOLERANCE[1]
    assert worker.poll() is None


def test_soak_one_minute(dep: Deployment) -> None:
    _soak(dep, 60.0)


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_soak_ten_minutes(dep: Deployment) -> None:
    _soak(dep, 600.0)
