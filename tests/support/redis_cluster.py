"""A throwaway local Redis Cluster: six ``redis-server --cluster-enabled yes`` processes.

Three primaries with one replica each, on free loopback ports, in a temporary
directory; ``cluster-node-timeout`` is short so that a killed primary's
replica takes over within a few seconds. :class:`LocalCluster` starts it,
waits until every node reports ``cluster_state:ok`` and agrees on the
slots, and stops every process it started by its PID (never by name).

Used by the pytest fixture in :mod:`tests.support.redis_fixtures` and by
``bench/cluster_bench.py``. Needs ``redis-server`` and ``redis-cli``
(Debian's ``redis-server`` / ``redis-tools`` packages).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

PRIMARIES = 3
NODE_TIMEOUT_MS = 1500


def _die_with_parent() -> None:
    """In the forked child: get SIGTERM when the process that started it dies (Linux), so a
    test run killed without its teardown leaves no servers behind on the shared machine."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the teardown still stops them
        pass


class ClusterUnavailable(RuntimeError):
    """redis-server / redis-cli are missing or the cluster did not form."""


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1, whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port + 10000 > 65535:
                sock.close()
                continue
            bus = socket.socket()
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                sock.close()
                continue
            finally:
                bus.close()
            held.append(sock)
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


@dataclass
class LocalCluster:
    """A running local cluster; :meth:`start` it, :meth:`stop` it (idempotent)."""

    #: Replicas per primary (three primaries): 1 for the tests, 0 for a benchmark
    #: that separates the cost of replication from the cost of the cluster.
    replicas: int = 1
    ports: list[int] = field(default_factory=list)
    directory: Path | None = None
    pids: dict[int, int] = field(default_factory=dict)
    _procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The product's cluster URL (every node as a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)

    def start(self, *, timeout: float = 60.0) -> LocalCluster:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise ClusterUnavailable(
                "redis-server and redis-cli are needed for the Redis Cluster tests "
                "(Debian: apt-get install redis-server redis-tools)"
            )
        self.directory = Path(tempfile.mkdtemp(prefix="trk-cluster-"))
        try:
            self._start(server, cli, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, server: str, cli: str, timeout: float) -> None:
        assert self.directory is not None
        self.ports = _free_ports(PRIMARIES * (1 + self.replicas))
        for port in self.ports:
            self._spawn(server, port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait_ping(port, deadline)
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=max(deadline - time.monotonic(), 5),
            check=False,
        )
        if create.returncode != 0:
            raise ClusterUnavailable(f"redis-cli --cluster create failed: {create.stdout[-2000:]}")
        self.wait_ok(deadline - time.monotonic())

    def _spawn(self, server: str, port: int) -> None:
        assert self.directory is not None
        node_dir = self.directory / str(port)
        node_dir.mkdir(exist_ok=True)
        log = open(node_dir / "redis.log", "wb")  # noqa: SIM115 - closed right after the fork
        try:
            proc = subprocess.Popen(
                [
                    server,
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                    *("--cluster-config-file", str(node_dir / "nodes.conf")),
                    *("--dir", str(node_dir), "--save", "", "--appendonly", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
        finally:
            log.close()
        self.pids[port] = proc.pid
        self._procs[port] = proc

    def _wait_ping(self, port: int, deadline: float) -> None:
        while True:
            try:
                if self.node(port).ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"redis-server on port {port} did not start")
            time.sleep(0.05)

    def wait_ok(self, timeout: float = 60.0, ports: list[int] | None = None) -> None:
        """Until every (live) node says ``cluster_state:ok``, all agree on the slots and
        every replica has synced with its primary."""
        deadline = time.monotonic() + timeout
        live = ports if ports is not None else [p for p in self.ports if p in self.pids]
        while True:
            try:
                states = [self.node(p).cluster("info")["cluster_state"] for p in live]
                layouts = {self._layout(p) for p in live}
                if all(s == "ok" for s in states) and len(layouts) == 1 and self._synced(live):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise ClusterUnavailable("the local cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def _synced(self, live: list[int]) -> bool:
        """Whether every live replica's link to its primary is up (initial sync done)."""
        for port in live:
            info = self.node(port).info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def _layout(self, port: int) -> str:
        """The slot ranges and their primaries' ports as the node at ``port`` sees them."""
        rows = self.node(port).execute_command("CLUSTER", "SLOTS")
        return str(sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in rows))

    def primaries(self) -> dict[int, list[tuple[int, int]]]:
        """Port of each live primary -> its slot ranges (as one live node sees it)."""
        live = next(p for p in self.ports if p in self.pids)
        found: dict[int, list[tuple[int, int]]] = {}
        for start, end, primary, *_ in self.node(live).execute_command("CLUSTER", "SLOTS"):
            found.setdefault(int(primary[1]), []).append((int(start), int(end)))
        return found

    def replica_of(self, primary_port: int) -> int:
        """The port of ``primary_port``'s replica."""
        node_id = self.node(primary_port).execute_command("CLUSTER", "MYID")
        for line in self.node(primary_port).execute_command("CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[3] == node_id:
                return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise ClusterUnavailable(f"no replica of {primary_port}")

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash: no shutdown, no save)."""
        pid = self.pids.pop(port)
        os.kill(pid, signal.SIGKILL)
        self._procs[port].wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a killed node again with its old cluster config: it rejoins (a failed-over
        primary comes back as a replica of the node that replaced it)."""
        server = shutil.which("redis-server")
        if server is None:
            raise ClusterUnavailable("redis-server is gone")
        self._spawn(server, port)
        self._wait_ping(port, time.monotonic() + 30)

    def stop(self) -> None:
        for port, pid in list(self.pids.items()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            proc = self._procs.pop(port, None)
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            del self.pids[port]
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
