"""Process helpers shared by the file store (stale temp files), the embedded Redis
and the command line's child processes (``cli.procs``): liveness, a warm stop,
and children tied to their parent's life by a parent-death signal."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

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


class _Spawner:
    """One daemon thread per process that forks servers off the main thread.

    `PR_SET_PDEATHSIG` fires when the forking *thread* exits; a server
    started from a short-lived thread would die with that thread. Forking
    from a thread that lives as long as the process fixes that.
    """

    _lock = threading.Lock()
    _jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def call(cls, job: Callable[[], _T]) -> _T:
        """Run `job` on the spawner thread and return its result."""
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():  # new, or lost in a fork
                cls._jobs = queue.SimpleQueue()
                cls._thread = threading.Thread(
                    target=cls._loop, args=(cls._jobs,), name="tracking-redis-spawner", daemon=True
                )
                cls._thread.start()
            jobs = cls._jobs
        assert jobs is not None
        future: Future[_T] = Future()
        jobs.put((job, future))
        return future.result()

    @staticmethod
    def _loop(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
        while True:
            job, future = jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:
                    future.set_exception(exc)


def spawn_tied(cmd: list[str], *, cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start `cmd` as a child that gets SIGTERM when this process dies."""

    def popen() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(  # fixed argv, no shell
                cmd,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                # Own session: a Ctrl-C meant for the owner's terminal must not
                # stop the server under the owner's feet; it dies with the owner.
                start_new_session=True,
                # The hook only calls prctl and getppid (no locks, no imports),
                # which is safe in a child forked from a threaded process.
                preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509
            )

    if threading.current_thread() is threading.main_thread():
        return popen()
    return _Spawner.call(popen)
