"""Process helpers shared by the file store (stale temp files), the embedded Redis
and the command line's child processes (``cli.procs``)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as dead).

    Reads ``/proc/<pid>/stat`` so that a dead child not yet reaped (a zombie,
    common where PID 1 does not reap) is not taken for a live one; falls back
    to signal 0 where there is no procfs.
    """
    if pid <= 0:
        return False
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # pragma: no cover - no procfs: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = raw.rpartition(")")[2].split()[0]
    return state not in {"Z", "X"}


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Warm stop: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


@functools.cache
def _libc() -> ctypes.CDLL:
    # Loaded in the parent: the forked child must not run the dynamic loader.
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that ties a child's life to its parent (None off Linux).

    The child asks the kernel for SIGTERM when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``) and exits at once if the parent already
    died before that took effect. The signal fires when the *thread* that
    forked the child exits, so fork from a thread that lives as long as the
    process. The hook only calls prctl and getppid (no locks, no imports),
    which is safe in a child forked from a threaded process.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = _libc().prctl

    def setup() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup
