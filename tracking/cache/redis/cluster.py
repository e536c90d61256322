"""Sending the cache's commands to the right Redis Cluster node, one round trip per node.

redis-py's :class:`~redis.cluster.RedisCluster` routes ``FCALL`` by asking a
server for its keys (``COMMAND GETKEYS``: an extra round trip per call) and
its pipelines go through pool checkouts and retry wrappers. The cache knows
every command's key (a script's first key, else the key after the command
name), so :class:`ClusterRouter` computes the slot itself, looks the node
up in redis-py's slot table, and writes each node's commands on a raw
connection of its own (per thread and per node, outside redis-py's pools):
all nodes are written first, then each is read, so a batch costs one round
trip whatever the number of nodes. The hot path is one command on one node.

Replies that mean "not here" are followed and the command is sent again
(it did not run): ``MOVED`` refreshes the slot table, ``ASK`` sends
``ASKING`` and the command to the named node once, ``TRYAGAIN`` and
``CLUSTERDOWN`` wait a little (a failover or a slot migration in progress).
Other error replies go to ``recover`` (a node without the scripts loads
them, then the command is sent again) or back to the caller. A connection
or timeout error drops every connection of the batch (they may hold unread
replies), marks the slot table for a refresh before the next call (a failed
primary's replica takes over its slots) and propagates: whether the
commands ran is unknown, so the caller decides (the cache raises
:class:`~tracking.errors.CacheError`; event ids make a retried apply
idempotent).

Commands to different nodes have no order between them; commands to one
node keep their order. Callers that need "B after A" across nodes send B
after A's reply (see :mod:`tracking.cache.redis.indexes`).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ExecAbortError,
    MovedError,
    ResponseError,
    TryAgainError,
)

from tracking.errors import CacheError

#: How many times a batch is re-sent after redirections before giving up.
ATTEMPTS = 8
#: Pause before re-sending after TRYAGAIN / CLUSTERDOWN (seconds, grows per attempt).
BACKOFF = 0.05

#: Commands per node name: the node and what to send it, in order.
Batches = dict[str, tuple[ClusterNode, list[Sequence[Any]]]]

#: ``recover(error, node)``: whether the command may be sent again (scripts now loaded).
Recover = Callable[[ResponseError, ClusterNode], bool]


def slot_of(key: str | bytes) -> int:
    """The cluster hash slot of ``key`` (hash tags honoured)."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


class ClusterRouter:
    """Per-node raw connections and the send/read/redirect loop for one cluster client."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._local = threading.local()
        self._lock = threading.Lock()
        # weak: a finished thread's connections go with its thread-local slot
        self._all: weakref.WeakSet[Any] = weakref.WeakSet()
        self._stale = False

    # -- topology --------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the slot table from the cluster (after MOVED or a lost node)."""
        self._stale = False
        self.cluster.nodes_manager.initialize()

    def node_for_slot(self, slot: int) -> ClusterNode:
        if self._stale:
            self.refresh()
        node: ClusterNode = self.cluster.nodes_manager.get_node_from_slot(slot)
        return node

    def primaries(self) -> list[ClusterNode]:
        if self._stale:
            self.refresh()
        return list(self.cluster.get_primaries())  # type: ignore[no-untyped-call]

    def node_at(self, host: str, port: int) -> ClusterNode:
        node = self.cluster.nodes_manager.get_node(host=host, port=port)
        if node is None:
            self.refresh()
            node = self.cluster.nodes_manager.get_node(host=host, port=port)
        if node is None:
            raise CacheError(f"Redis cache error: cluster node {host}:{port} is unknown")
        return node

    # -- connections -------------------------------------------------------------

    def _connections(self) -> dict[str, Any]:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conns, local.pid = {}, os.getpid()
        conns: dict[str, Any] = local.conns
        return conns

    def connection(self, node: ClusterNode) -> Any:
        """This thread's raw connection to ``node`` (opened on first use)."""
        conns = self._connections()
        conn = conns.get(node.name)
        if conn is None:
            pool = node.redis_connection.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            conns[node.name] = conn
            with self._lock:
                self._all.add(conn)
        return conn

    def _drop(self, names: Sequence[str]) -> None:
        conns = self._connections()
        for name in names:
            conn = conns.pop(name, None)
            if conn is not None:
                conn.disconnect()
        self._stale = True

    def close(self) -> None:
        with self._lock:
            every = list(self._all)
            self._all = weakref.WeakSet()
        for conn in every:
            conn.disconnect()
        self._local = threading.local()

    # -- sending -----------------------------------------------------------------

    def _send(
        self, batches: dict[str, tuple[ClusterNode, list[Sequence[Any]]]]
    ) -> dict[str, list[Any]]:
        """Write every node's commands, then read every reply (error replies as values)."""
        names = list(batches)
        try:
            for name in names:
                node, commands = batches[name]
                conn = self.connection(node)
                conn.send_packed_command(conn.pack_commands(commands))
            replies: dict[str, list[Any]] = {}
            for name in names:
                node, commands = batches[name]
                conn = self.connection(node)
                got: list[Any] = []
                for _ in commands:
                    try:
                        got.append(conn.read_response())
                    except ResponseError as exc:
                        got.append(exc)
                replies[name] = got
            return replies
        except BaseException:
            self._drop(names)
            raise

    def run_packed(
        self,
        key: str | bytes,
        packed: bytes,
        command: Callable[[], Sequence[Any]],
        recover: Recover,
    ) -> Any:
        """One command on ``key``'s node, already encoded: the hot path.

        Its reply; an error reply that calls for a redirection or a script
        load goes through :meth:`run` (the command did not run) with the
        command as ``command()`` builds it (a list, made only then); any
        other error reply is raised.
        """
        node = self.node_for_slot(slot_of(key))
        conn = self.connection(node)
        try:
            conn.send_packed_command([packed])
            return conn.read_response()
        except ResponseError as exc:
            if not self._redirect(exc, {}, 0, node, recover, 0):
                raise
        except BaseException:
            self._drop([node.name])
            raise
        reply = self.run([(key, command())], recover)[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def run(
        self,
        commands: Sequence[tuple[str | bytes, Sequence[Any]]],
        recover: Recover,
        *,
        transaction: bool = False,
        trailer: Sequence[Any] | None = None,
    ) -> list[Any]:
        """Run ``(routing key, command)`` pairs; each result in order (error replies as values).

        With ``transaction`` every key must be in one slot: the commands go
        in one ``MULTI``/``EXEC`` (a redirection re-sends the whole block),
        followed by ``trailer`` on the same connection when given (its
        reply is appended to the results: ``WAIT`` counts the replicas
        that have this connection's writes).
        """
        results: list[Any] = [None] * len(commands)
        slots = [slot_of(key) for key, _ in commands]
        pending = list(range(len(commands)))
        asking: dict[int, ClusterNode] = {}
        for attempt in range(ATTEMPTS):
            if transaction:
                node = asking.get(0) or self.node_for_slot(slots[0])
                block: list[Sequence[Any]] = [("ASKING",)] if 0 in asking else []
                block += [("MULTI",), *(c for _, c in commands), ("EXEC",)]
                if trailer is not None:
                    block.append(trailer)
                got = self._send({node.name: (node, block)})[node.name]
                executed = got[-2] if trailer is not None else got[-1]
                errors = [r for r in got if isinstance(r, ResponseError)]
                if not errors and isinstance(executed, list):
                    return list(executed) + ([got[-1]] if trailer is not None else [])
                first = next((e for e in errors if not isinstance(e, ExecAbortError)), errors[0])
                retry_all = self._redirect(first, asking, 0, node, recover, attempt)
                if not retry_all:
                    raise first
                continue
            batches: Batches = {}
            placed: dict[str, list[tuple[int, bool]]] = {}
            for i in pending:
                node = asking.get(i) or self.node_for_slot(slots[i])
                entry = batches.setdefault(node.name, (node, []))
                where = placed.setdefault(node.name, [])
                if i in asking:
                    entry[1].append(("ASKING",))
                    where.append((i, False))
                entry[1].append(commands[i][1])
                where.append((i, True))
            asking = {}
            replies = self._send(batches)
            retry: list[int] = []
            for name, where in placed.items():
                node = batches[name][0]
                for (i, is_command), reply in zip(where, replies[name], strict=True):
                    if not is_command:
                        continue
                    if isinstance(reply, ResponseError) and self._redirect(
                        reply, asking, i, node, recover, attempt
                    ):
                        retry.append(i)
                    else:
                        results[i] = reply
            if not retry:
                return results
            pending = sorted(retry)
        raise CacheError("Redis cache error: the cluster kept redirecting the cache's commands")

    def _redirect(
        self,
        error: ResponseError,
        asking: dict[int, ClusterNode],
        index: int,
        node: ClusterNode,
        recover: Recover,
        attempt: int,
    ) -> bool:
        """Whether a command that got ``error`` should be sent again (after what it needs)."""
        if isinstance(error, MovedError):
            self.refresh()
            return True
        if isinstance(error, AskError):
            asking[index] = self.node_at(error.host, error.port)
            return True
        if isinstance(error, TryAgainError | ClusterDownError):
            time.sleep(BACKOFF * (attempt + 1))
            self._stale = True
            return True
        return recover(error, node)
