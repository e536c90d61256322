"""Start and stop worker, beat and Flower processes tied to their parent.

Used by ``tracking demo``, the integration tests and the benchmark. Each
child gets a parent-death signal (``PR_SET_PDEATHSIG`` = SIGTERM on Linux),
so nothing outlives a parent that is killed, and is stopped with a warm
shutdown (SIGTERM), waiting long enough for a busy prefork worker (about
30 s was seen here) before SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tracking._process import die_with_parent, stop_process

ALL_QUEUES = "tracking.batch,tracking,admin,events,maintenance"
#: Warm shutdown of a busy prefork worker took ~32 s here; allow 45 s.
WARM_SHUTDOWN_SECONDS = 45.0


def celery_command(*args: str) -> list[str]:
    """``python -m celery -A celery_app <args>`` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "celery_app", *args]


def worker_command(
    *,
    name: str,
    concurrency: int = 2,
    queues: str = ALL_QUEUES,
    pool: str = "prefork",
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> list[str]:
    """The worker argv used by the CLI, the tests and the benchmark."""
    return celery_command(
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-P",
        pool,
        "-n",
        name,
        "-l",
        loglevel,
        "--without-mingle",
        "--without-gossip",
        *extra,
    )


def spawn(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | IO[bytes] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` as a child that gets SIGTERM when this process dies.

    ``env`` entries are added to this process's environment; output goes
    to ``log`` (a path, appended) or is discarded. ``new_session`` puts the
    child in its own session and process group (so it can be signalled
    with its pool processes, and a terminal's Ctrl-C reaches only us).
    """
    full_env = {**os.environ, **(env or {})}
    with contextlib.ExitStack() as stack:
        out: IO[bytes] | int
        if log is None:
            out = subprocess.DEVNULL
        elif isinstance(log, Path):
            out = stack.enter_context(log.open("ab"))
        else:
            out = log
        return subprocess.Popen(  # fixed argv, no shell
            list(cmd),
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=new_session,
            preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl + getppid
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = WARM_SHUTDOWN_SECONDS) -> int:
    """Warm shutdown (SIGTERM), wait up to ``timeout``, then SIGKILL; return the exit code."""
    return stop_process(proc, timeout)


def settings_env(**values: object) -> dict[str, str]:
    """``TRACKING_*`` environment entries for settings (lists as JSON)."""
    env = {}
    for name, value in values.items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"TRACKING_{name.upper()}"] = text
    return env
