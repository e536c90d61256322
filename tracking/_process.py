"""Process helpers shared by the file store (stale temp files) and the embedded Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


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
