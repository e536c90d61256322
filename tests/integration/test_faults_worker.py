"""A worker frozen past the broker's visibility timeout: its message is applied once.

The Redis broker hands a message to a worker and keeps it in its
``unacked`` hash; when the worker does not acknowledge it within the
visibility timeout, another worker's restore sweep puts it back on the
queue. Here worker A is frozen with SIGSTOP while it holds a message (read
from the broker's ``unacked`` hash, so the precondition is checked, not
assumed), worker B takes the redelivered copy and applies it, then A is
resumed with SIGCONT and finishes its copy: the engine's event-id dedupe
must make the second application a no-op. The state ends exact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from tasks import track
from tests.support.celery_env import FAST_REDELIVERY, Deployment, deployment, require, wait_until
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis]

EVENTS = 300


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    require("redis")
    with deployment("redis", tmp_path, **FAST_REDELIVERY) as dep:
        configure(dep.settings)
        yield dep


def _held_task_ids(dep: Deployment) -> set[str]:
    """Task ids of the messages the broker counts as taken but not acknowledged."""
    raw = dep.redis().hgetall(f"{dep.prefix}:kombu:unacked")
    ids = set()
    for payload in raw.values():
        message = json.loads(payload)[0]
        ids.add(message["headers"]["id"])
    return ids


def _succeeded(log: str, task_id: str) -> list[str]:
    """The results the worker logged for ``task_id`` (one per execution)."""
    return re.findall(rf"track\[{re.escape(task_id)}\] succeeded in [^:]*: (.*)", log)


def test_sigstopped_worker_past_visibility_timeout_applies_once(dep: Deployment) -> None:
    manager = runtime.get_manager()
    manager.add_tracker("g", CountTracker("hits", [KeyValueEQ("kind", "hit")], 1_000_000))

    def progress() -> float:
        return float(manager.get_trackers("g")[0].progress)

    a = dep.start_worker("a", concurrency=1)
    for _ in range(EVENTS):
        track.delay("g", {"kind": "hit"})
    wait_until(lambda: progress() > 0, 60, "worker A to start applying")

    held: set[str] = set()
    try:
        for _attempt in range(50):  # freeze A while it holds a message
            os.killpg(a.pid, signal.SIGSTOP)
            time.sleep(0.2)  # let a pop that was in flight land in the unacked hash
            held = _held_task_ids(dep)
            if held:
                break
            os.killpg(a.pid, signal.SIGCONT)
            time.sleep(0.05)
        assert held, "could not freeze worker A while it held a message"
        assert progress() < EVENTS, "worker A finished before it could be frozen"

        dep.start_worker("b", concurrency=1)
        # B drains the queue, then (after the visibility timeout) takes A's message.
        for task_id in held:
            wait_until(
                lambda t=task_id: _succeeded(dep.log("b"), t),
                120,
                f"worker B to run A's message {task_id}",
            )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(a.pid, signal.SIGCONT)
    # After A resumes: a batching worker always has a BRPOP outstanding, and
    # kombu's Redis transport pops a message and records it as unacked in two
    # steps, so a frozen A may hold one popped message that is in neither the
    # queue nor the unacked hash until it runs again.
    wait_until(lambda: progress() == EVENTS, 120, f"all {EVENTS} events applied")

    # A wakes up and finishes its own copy (or runs it now): a duplicate.
    for task_id in held:
        wait_until(
            lambda t=task_id: _succeeded(dep.log("a"), t), 120, "worker A to finish its copy"
        )
        results = _succeeded(dep.log("a"), task_id) + _succeeded(dep.log("b"), task_id)
        assert len(results) == 2, results
        assert sum("'duplicate': True" in r for r in results) == 1, results
    assert progress() == EVENTS
    assert a.poll() is None
