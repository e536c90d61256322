"""The worker liveness probe of ``docs/deploy.md`` and ``deploy/``, run for real.

The compose file and the Kubernetes sketch probe a worker with
``celery -A celery_app inspect ping -d celery@$HOSTNAME --timeout 10``.
Here a worker is started the way they start it (``tracking worker -Q ...``,
plus a unique ``-n`` because other runs share this machine's broker) and
the same command must exit 0 for it and 69 (``EX_UNAVAILABLE``) for a
worker that does not answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import procs
from tests.support.celery_env import REPO, Deployment, available, deployment, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: What ``celery inspect`` exits with when no node replied.
EX_UNAVAILABLE = 69


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    reason = available("redis")
    if reason:
        if os.environ.get("CI"):  # CI must run it: a missing service is a failure there
            pytest.fail(f"CI is set, so the probe test must run, but: {reason}", pytrace=False)
        pytest.skip(reason)
    with deployment("redis", tmp_path) as d:
        yield d


def _probe(dep: Deployment, node: str) -> subprocess.CompletedProcess[str]:
    """The probe command of deploy/docker-compose.yml with ``node`` for celery@$HOSTNAME."""
    probe = ["inspect", "ping", "-d", node, "--timeout", "10"]
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_app", *probe],
        env=dep.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_probe_passes_for_a_live_worker_and_fails_for_a_missing_one(dep: Deployment) -> None:
    node = f"probe-{dep.prefix}@{socket.gethostname()}"
    cmd = [sys.executable, "-m", "cli.main", "worker", "-Q", "tracking,admin,events,maintenance"]
    worker = procs.spawn(
        [*cmd, "-c", "1", "-n", node],
        env=dep.env,
        log=dep.data_dir / "worker.log",
        cwd=REPO,
        new_session=True,
    )
    dep.procs.append(worker)
    dep.logs["worker"] = dep.data_dir / "worker.log"

    def answered() -> subprocess.CompletedProcess[str] | None:
        assert worker.poll() is None, f"worker exited:\n{dep.log('worker')[-3000:]}"
        result = _probe(dep, node)
        return result if result.returncode == 0 else None

    alive = wait_until(answered, 120, "the probe to reach the worker", interval=1.0)
    assert "pong" in alive.stdout

    missing = _probe(dep, f"absent-{dep.prefix}@{socket.gethostname()}")
    assert missing.returncode == EX_UNAVAILABLE, missing.stdout + missing.stderr
    assert "No nodes replied" in missing.stdout + missing.stderr
