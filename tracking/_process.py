"""Process helpers shared by the file store (stale temp files) and the embedded Redis."""

from __future__ import annotations

import os
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
