"""Loading and running the Redis cache's Lua scripts.

On Redis >= 7.0 the scripts are one Redis Functions library named after a
hash of their sources (``trk_<hash>``, loaded on first need and kept by
the server, also in its RDB: a new product version adds a library, an old
one can be removed with ``FUNCTION DELETE``), so the shared Lua helpers
are created once instead of on every call. Servers without Functions (the
embedded 6.2), or an ACL that refuses them, get the same scripts by
EVALSHA. On "Function not found" / NOSCRIPT (a restarted or failed-over
server) they are loaded again and the command or pipeline retried, which
is safe because the failed script did nothing and the index writes are
idempotent. The hot path sends its one command on a per-thread connection
of its own, outside redis-py's pool. Connection, timeout and server
errors raise :class:`CacheError`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from tracking.cache.redis.cluster import ClusterRouter
from tracking.cache.redis.codec import LAYOUT_VERSION, _s
from tracking.errors import CacheError

#: A command for :meth:`ScriptRunner._execute`: ``("script", name, keys, args)`` or
#: a Redis command whose key follows its name.
Command = tuple[Any, ...]

_SCRIPT_NAMES = (
    "apply",
    "install",
    "put",
    "remove",
    "reset",
    "expire",
    "clear_dirty",
    "evict",
    "settle",
)


def _load_sources() -> tuple[str, dict[str, str]]:
    """``lib.lua`` and each script's body."""
    folder = resources.files("tracking.cache").joinpath("lua")
    lib = folder.joinpath("lib.lua").read_text(encoding="utf-8")
    return lib, {
        name: folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in _SCRIPT_NAMES
    }


def _function_library(library: str, lib: str, bodies: dict[str, str]) -> str:
    """The scripts as one Redis Functions library (Redis >= 7.0).

    ``lib.lua``'s helpers are then created once, at load, instead of on
    every EVALSHA (about 9 µs per call). The script bodies run unchanged:
    ``KEYS`` and ``ARGV`` are library-level locals that each registered
    function sets before running its body (a function runs atomically, so
    no other call sees them), and ``redis.replicate_commands()`` is left
    out (functions always replicate effects).
    """
    parts = [f"#!lua name={library}", "local KEYS, ARGV", lib]
    for name, body in bodies.items():
        parts.append(f"local function run_{name}()")
        parts.append(body.replace("redis.replicate_commands()", ""))
        parts.append("end")
        parts.append(
            f"redis.register_function('{library}_{name}', "
            f"function(keys, args) KEYS, ARGV = keys, args return run_{name}() end)"
        )
    return "\n".join(parts)


class ScriptRunner:
    """The script and connection plumbing :class:`RedisDataCache` is built on.

    On one server (``redis.Redis``) commands go in redis-py pipelines and the
    hot path on a raw connection; on a cluster (``RedisCluster``) everything
    goes through a :class:`~tracking.cache.redis.cluster.ClusterRouter`.
    """

    _client: redis.Redis | RedisCluster
    key_prefix: str

    def _init_scripts(self, client: redis.Redis | RedisCluster) -> None:
        """Load the sources and prepare the per-thread hot connections."""
        self._client = client
        self._router = ClusterRouter(client) if isinstance(client, RedisCluster) else None
        self._set_sources(*_load_sources())
        self._layout_ok = False
        self._local = threading.local()
        self._lock = threading.Lock()
        # weak: a finished thread's connection goes with its thread-local slot
        self._raw_connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def _close_connections(self) -> None:
        """Drop every hot-path connection this object opened."""
        with self._lock:
            raw = list(self._raw_connections)
            self._raw_connections = weakref.WeakSet()
        for conn in raw:
            conn.disconnect()
        self._local = threading.local()
        if self._router is not None:
            self._router.close()

    def _server(self) -> redis.Redis:
        """The one-server client (only called on paths that are not the cluster's)."""
        client = self._client
        assert isinstance(client, redis.Redis)
        return client

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Every redis-py error as :class:`CacheError` (cluster ones are not all RedisErrors)."""
        try:
            yield
        except (RedisError, RedisClusterException) as exc:
            raise CacheError(f"Redis cache error: {exc}") from exc

    def _set_sources(self, lib: str, bodies: dict[str, str]) -> None:
        """Derive both forms of the scripts (and their names) from their sources."""
        self._sources = {name: lib + "\n" + body for name, body in bodies.items()}
        self._shas = {
            name: hashlib.sha1(src.encode()).hexdigest() for name, src in self._sources.items()
        }
        digest = hashlib.sha1("\0".join(self._sources.values()).encode()).hexdigest()
        self._library = "trk_" + digest[:16]
        self._library_source = _function_library(self._library, lib, bodies)
        #: FCALL until the server turns out not to know it (Redis < 7.0)
        self._functions = True

    def _invocation(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """The command that runs script ``name``: FCALL, or EVALSHA on Redis < 7.0."""
        if self._functions:
            return ["FCALL", f"{self._library}_{name}", len(keys), *keys, *args]
        return ["EVALSHA", self._shas[name], len(keys), *keys, *args]

    def _recoverable(self, error: object, node: ClusterNode | None = None) -> bool:
        """Whether ``error`` means the server lacks our scripts; if so, provide them.

        A server restarted or failed over without them answers NOSCRIPT or
        "Function not found"; a server without Redis Functions answers
        "unknown command" to FCALL (and an ACL may refuse it: NOPERM), after
        which this cache uses EVALSHA. The failed command did nothing, so
        the caller runs it again. On a cluster each primary has its own
        scripts: they are loaded on every primary and on ``node``, the one
        that answered (a replica promoted since the last load, say).
        """
        if not isinstance(error, ResponseError):
            return False
        text = str(error)
        lowered = text.lower()
        if (
            self._functions
            and "fcall" in lowered
            and ("unknown command" in lowered or "noperm" in lowered)
        ):
            self._functions = False
        elif not (isinstance(error, NoScriptError) or "Function not found" in text):
            return False
        if self._router is None:
            self._load_scripts(self._server())
        else:
            with self._errors():
                nodes = {n.name: n for n in self._router.primaries()}
            if node is not None:
                nodes[node.name] = node
            for each in nodes.values():
                self._load_scripts(each.redis_connection)
        return True

    def _guard_layout(self) -> None:
        """Before this instance's first write: record :data:`LAYOUT_VERSION` under the
        prefix, or refuse a prefix that holds another one.

        Called at the top of every path that sends commands which write
        (scripts, pipelines, the hot path); after the first success it is an
        attribute check. Per instance, not per server: a release of another
        layout may have loaded its scripts on the same server for another
        prefix. Releases from before this check wrote no layout key; their
        layout is 1.
        """
        if self._layout_ok:
            return
        key = f"{self.key_prefix}:layout"
        commands: list[tuple[Any, ...]] = [("SET", key, LAYOUT_VERSION, "NX"), ("GET", key)]
        with self._errors():
            if self._router is not None:
                found = self._router.run([(key, c) for c in commands], self._recoverable)[1]
            else:
                pipe = self._server().pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                found = pipe.execute()[1]
        if isinstance(found, Exception):
            raise CacheError(f"Redis cache error: {found}")
        if found is None or _s(found) != str(LAYOUT_VERSION):
            raise CacheError(
                f"Redis cache error: key prefix {self.key_prefix!r} holds data layout "
                f"{_s(found) if found is not None else 'unknown'} (key {key}); this release "
                f"reads and writes layout {LAYOUT_VERSION}. Run it under another "
                "TRACKING_KEY_PREFIX after draining the old one (docs/deploy.md, Upgrades)"
            )
        self._layout_ok = True

    def _load_scripts(self, client: redis.Redis) -> None:
        """Load the library (or, without Redis Functions, every script) on one server."""
        with self._errors():
            if self._functions:
                try:
                    client.execute_command(  # type: ignore[no-untyped-call]
                        "FUNCTION", "LOAD", self._library_source
                    )
                    return
                except ResponseError as exc:
                    if "already exists" in str(exc).lower():
                        return
                    # no Redis Functions (< 7.0), or not allowed to load them: EVALSHA
                    self._functions = False
            for name, source in self._sources.items():
                sha = client.script_load(source)
                if _s(sha) != self._shas[name]:
                    raise CacheError(f"Redis returned an unexpected SHA for script {name}")

    def _routed(self, commands: Sequence[Command], *, transaction: bool = False) -> list[Any]:
        """Run commands on a cluster, each on its key's node; raise the first error reply.

        One round trip per call (the nodes are written, then read); no order
        between nodes (see :mod:`tracking.cache.redis.cluster`).
        """
        assert self._router is not None
        self._guard_layout()
        pairs: list[tuple[Any, Sequence[Any]]] = []
        for command in commands:
            if command[0] == "script":
                _, name, keys, args = command
                pairs.append((keys[0], self._invocation(name, keys, args)))
            else:
                pairs.append((command[1], command))
        with self._errors():
            results = self._router.run(pairs, self._recoverable, transaction=transaction)
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results

    def _execute_phases(self, *phases: Sequence[Command]) -> list[Any]:
        """Each phase's commands after the previous phase's; the results of all, in order.

        On one server that is one pipeline (a server runs a connection's
        commands in order); on a cluster each phase is sent after the
        previous one's replies, one round trip per non-empty phase.
        """
        if self._router is None:
            return self._execute([c for phase in phases for c in phase])
        results: list[Any] = []
        for phase in phases:
            if phase:
                results += self._routed(phase)
        return results

    def _execute(
        self, commands: Sequence[tuple[Any, ...]], *, transaction: bool = False
    ) -> list[Any]:
        """Run commands in one pipeline (one round trip); ``("script", name, keys, args)``
        runs one of our scripts. If the server lacks them, provide them and run it all
        again (safe: the failed script did nothing and the other commands are idempotent).
        On a cluster: :meth:`_routed` (no order between nodes).
        """
        if self._router is not None:
            return self._routed(commands, transaction=transaction)
        self._guard_layout()
        with self._errors():
            for attempt in range(3):
                pipe = self._server().pipeline(transaction=transaction)
                for command in commands:
                    if command[0] == "script":
                        _, name, keys, args = command
                        pipe.execute_command(*self._invocation(name, keys, args))  # type: ignore[no-untyped-call]
                    else:
                        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                results: list[Any] = pipe.execute(raise_on_error=False)
                missing = [r for r in results if isinstance(r, ResponseError)]
                if attempt < 2 and missing and self._recoverable(missing[0]):
                    continue
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return results
        raise CacheError("scripts vanished again right after loading them")  # pragma: no cover

    def _raw_connection(self) -> Any:
        """This thread's own connection to the one server (opened on first use)."""
        local = self._local
        conn: Any = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            pool = self._server().connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
            with self._lock:
                self._raw_connections.add(conn)
        return conn

    def _transaction_then_wait(
        self, commands: Sequence[Command], replicas: int, timeout_ms: int
    ) -> tuple[list[Any], int]:
        """``commands`` (one slot) in one MULTI/EXEC, then ``WAIT replicas timeout_ms`` on the
        same connection (one round trip); the results and how many replicas acknowledged."""
        wait = ("WAIT", replicas, timeout_ms)
        self._guard_layout()
        if self._router is not None:
            pairs = [(c[1], c) for c in commands]
            with self._errors():
                got = self._router.run(pairs, self._recoverable, transaction=True, trailer=wait)
            return got[:-1], int(got[-1])
        conn = self._raw_connection()
        block: list[Sequence[Any]] = [("MULTI",), *commands, ("EXEC",), wait]
        try:
            conn.send_packed_command(conn.pack_commands(block))
            replies = [conn.read_response() for _ in block]
        except BaseException as exc:
            conn.disconnect()  # replies may be left unread
            self._local.conn = None
            if isinstance(exc, RedisError):
                raise CacheError(f"Redis cache error: {exc}") from exc
            raise
        return list(replies[-2]), int(replies[-1])

    def _hot_script(self, pack: Callable[[], bytes]) -> Any:
        """A script and then its index write, ``pack()`` encoded, on this thread's own connection.

        ``pack`` is called again on a retry (the server may have turned out
        to need EVALSHA meanwhile). Both commands go out in one write (one
        round trip), bypassing redis-py's pool: no pool checkout/release,
        retry wrapper or response callback (about 20 µs per call with
        redis-py 8). Returns
        the script's reply. The connection is per thread and per process
        (a forked child opens its own); any error other than an error
        reply drops it, so the next call reconnects.
        """
        self._guard_layout()
        conn = self._raw_connection()
        local = self._local
        for attempt in range(3):
            try:
                conn.send_packed_command([pack()])
                failed: ResponseError | None = None
                try:
                    reply = conn.read_response()
                except ResponseError as exc:
                    failed = exc  # the index write's reply must still be read
                conn.read_response()
                if failed is not None:
                    raise failed
                return reply
            except ResponseError as exc:
                if attempt == 2 or not self._recoverable(exc):
                    raise CacheError(f"Redis cache error: {exc}") from exc
            except BaseException as exc:
                conn.disconnect()
                local.conn = None
                if isinstance(exc, RedisError):
                    raise CacheError(f"Redis cache error: {exc}") from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script as a single command (no pipeline object)."""
        if self._router is not None:
            return self._routed([("script", name, keys, args)])[0]
        self._guard_layout()
        with self._errors():
            for attempt in range(3):
                try:
                    return self._server().execute_command(*self._invocation(name, keys, args))  # type: ignore[no-untyped-call]
                except ResponseError as exc:
                    if attempt == 2 or not self._recoverable(exc):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover
