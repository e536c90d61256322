"""A standby beat takes over the schedule when the active one is SIGKILLed (redbeat).

With ``TRACKING_BEAT_SCHEDULER=redbeat`` two ``tracking beat`` processes
run at once; celery-redbeat's lock in the cache's Redis lets one send the
schedule while the other waits. The test kills the active beat (a lost
host: no chance to release the lock) and checks the standby takes the lock
and sends the periodic jobs, which land in the broker's ``maintenance``
queue. No worker is needed: the jobs stay queued and the deployment's
prefix is deleted at teardown.

Only positive signals are asserted (which beat logged that it took the
lock, the queue growing while that beat lives), each with a generous
bounded wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import procs
from tests.support.celery_env import REPO, Deployment, available, deployment, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LOCK_TIMEOUT = 10
ACQUIRED = "Acquired lock"


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    reason = available("redis")
    if reason:
        if os.environ.get("CI"):  # CI must run it: a missing service is a failure there
            pytest.fail(f"CI is set, so the beat failover test must run, but: {reason}")
        pytest.skip(reason)
    with deployment(
        "redis", tmp_path, beat_scheduler="redbeat", beat_lock_timeout_seconds=LOCK_TIMEOUT
    ) as d:
        yield d


def _start_beat(dep: Deployment, name: str) -> subprocess.Popen[bytes]:
    """``tracking beat`` in its own session (so a SIGKILL takes exactly it).

    At INFO, where redbeat logs taking the lock; beat's "Sending due task"
    lines of the housekeeping jobs are at DEBUG (``celery_app.quietlog``), so
    the sends are watched in the broker's queue instead.
    """
    log = dep.data_dir / f"{name}.log"
    proc = procs.spawn(
        [sys.executable, "-m", "cli.main", "beat", "-l", "INFO"],
        env=dep.env,
        log=log,
        cwd=REPO,
        new_session=True,
    )
    dep.procs.append(proc)
    dep.logs[name] = log
    return proc


def _queued(dep: Deployment) -> int:
    """Messages waiting in the broker's ``maintenance`` queue (kombu's list key)."""
    return int(dep.redis().llen(f"{dep.prefix}:kombu:maintenance"))


def test_standby_beat_takes_over_when_the_active_one_dies(dep: Deployment) -> None:
    first = _start_beat(dep, "beat-a")
    wait_until(
        lambda: ACQUIRED in dep.log("beat-a") or first.poll() is not None,
        120,
        "the first beat to take the lock",
    )
    assert first.poll() is None, dep.log("beat-a")[-3000:]
    wait_until(lambda: _queued(dep) >= 3, 120, "the first beat's jobs in the queue")

    second = _start_beat(dep, "beat-b")
    wait_until(
        lambda: "beat: Starting" in dep.log("beat-b") or second.poll() is not None,
        120,
        "the second beat to start",
    )
    # While the first one lives, the second one waits for the lock; the first keeps sending.
    queued = _queued(dep)
    wait_until(lambda: _queued(dep) >= queued + 5, 120, "the first beat to keep sending")
    assert second.poll() is None, dep.log("beat-b")[-3000:]
    assert ACQUIRED not in dep.log("beat-b")

    with contextlib.suppress(ProcessLookupError):
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    wait_until(
        lambda: ACQUIRED in dep.log("beat-b") or second.poll() is not None,
        180,
        "the standby beat to take the lock",
    )
    assert second.poll() is None, dep.log("beat-b")[-3000:]
    queued = _queued(dep)  # the first beat is dead: what arrives now, the second one sent
    wait_until(lambda: _queued(dep) >= queued + 3, 120, "the standby beat's jobs in the queue")
