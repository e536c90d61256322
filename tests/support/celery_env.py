"""Real Celery deployments for the integration tests: brokers, workers, Flower.

A :class:`Deployment` is one isolated set-up: its own data directory, key
prefix, broker namespace and settings, expressed as ``TRACKING_*``
environment entries for worker/beat/Flower subprocesses and as a
:class:`config.Settings` for the test process (which publishes with the
product's own ``track.delay`` after :func:`celery_app.configure`).

Brokers:

- ``embedded``: the test process starts (and owns) an embedded Redis for
  the deployment's data directory; it is broker and cache.
- ``redis``: the machine's Redis, ``$TRACKING_TEST_REDIS_URL`` (as for
  every other Redis test) or else 127.0.0.1:6379 database
  ``TRACKING_TEST_REDIS_DB`` (default 13), with every key under the
  deployment's unique prefix (kombu's ``global_keyprefix`` for the
  broker); teardown deletes exactly those keys.
- ``rabbitmq``: the machine's RabbitMQ, in a vhost created for the
  deployment (``rabbitmqctl``) and deleted afterwards; the cache is the
  machine's Redis as above.
- ``rabbitmq-cluster``: RabbitMQ as above, the cache a Redis Cluster whose
  ``redis+cluster://`` URL the caller passes as ``redis_url`` (the
  ``cluster_redis_url`` fixture); teardown deletes the prefix's keys on
  every primary.

Everything listens on localhost only and every process is stopped (warm
shutdown, SIGKILL after 45 s) at teardown. A deployment whose services are
missing is skipped locally but fails with ``CI`` set (:func:`require`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from celery_app import runtime
from cli import procs
from config.settings import Settings
from tracking.cache.redis import RedisDataCache
from tracking.cache.redis.client import client_from_url, is_cluster_url
from tracking.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]
RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
TEST_REDIS_DB = int(os.environ.get("TRACKING_TEST_REDIS_DB", "13"))
#: The machine's Redis (cache, and broker of the ``redis`` kind): the same
#: ``TRACKING_TEST_REDIS_URL`` the other Redis tests honour.
MACHINE_REDIS_URL = os.environ.get("TRACKING_TEST_REDIS_URL") or (
    f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
)
HANDLERS = "tests.support.celery_handlers"

#: Deployment settings under which a dead worker's messages come back within
#: seconds on a Redis broker: a 10 s visibility timeout, and kombu sweeping for
#: expired unacknowledged messages every second (its default for the prefork
#: event loop is every 10 x 10 s); retries back off at most 5 s.
FAST_REDELIVERY: dict[str, Any] = {
    "visibility_timeout_seconds": 10,
    "retry_backoff_max_seconds": 5,
    "broker_transport_options": {"unacked_restore_interval": 1, "unacked_restore_throttle": 1},
}


def next_minute_boundary(min_lead: float) -> datetime:
    """The next whole UTC minute at least ``min_lead`` seconds away (calendar-reset tests)."""
    now = datetime.now(UTC)
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if (boundary - now).total_seconds() < min_lead:
        boundary += timedelta(minutes=1)
    return boundary


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout``.

    The deadline only bounds a hung test; nothing asserts on durations.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass
class Deployment:
    """One isolated broker + cache + store set-up and the processes started on it."""

    kind: str
    data_dir: Path
    prefix: str
    env: dict[str, str]
    settings: Settings
    cache_url: str
    vhost: str | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)
    #: The embedded Redis this test process owns (kind ``embedded``), to restart it.
    embedded: EmbeddedRedis | None = None

    def redis(self) -> Any:
        """A client on the cache's Redis (a ``RedisCluster`` for a cluster)."""
        return client_from_url(self.cache_url)

    def key(self, *parts: str) -> str:
        """A service key (as ``celery_app.runtime.key`` builds it in the workers)."""
        return ":".join((self.prefix, "svc", *parts))

    def start_worker(
        self,
        name: str = "w1",
        *,
        concurrency: int = 2,
        pool: str = "prefork",
        loglevel: str = "INFO",
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a worker on all queues and wait until it is ready."""
        log = self.data_dir / f"worker-{name}.log"
        full_name = f"{name}-{self.prefix}@localhost"
        proc = procs.spawn(
            procs.worker_command(
                name=full_name, concurrency=concurrency, pool=pool, loglevel=loglevel
            ),
            # A crash in native code leaves its Python traceback in the log.
            env={"PYTHONFAULTHANDLER": "1", **self.env, **(extra_env or {})},
            log=log,
            cwd=REPO,
            new_session=True,
        )
        self.procs.append(proc)
        self.logs[name] = log
        wait_until(
            lambda: proc.poll() is not None or " ready." in _read(log) or _pinged(name, self),
            60,
            f"worker {name} to be ready ({log})",
        )
        assert proc.poll() is None, (
            f"worker {name} exited with {proc.returncode}:\n{_read(log)[-3000:]}"
        )
        return proc

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Any:
        """Start another process (beat, Flower) in this deployment."""
        log = self.data_dir / f"{name}.log"
        proc = procs.spawn(cmd, env={**self.env, **(env or {})}, log=log, cwd=REPO)
        self.procs.append(proc)
        self.logs[name] = log
        return proc

    def broker_backlog(self) -> int:
        """Redis brokers: messages queued plus delivered-but-unacknowledged (kombu's keys).

        0 means every message published so far was acknowledged (or lost in
        kombu's pop-then-record window): the broker has nothing more to deliver.
        """
        if self.kind == "rabbitmq":
            raise ValueError("broker_backlog reads a Redis broker's keys")
        kp = f"{self.prefix}:kombu:" if self.kind == "redis" else ""
        client = self.redis()
        try:
            total = int(client.hlen(f"{kp}unacked"))
            for queue in procs.ALL_QUEUES.split(","):
                for name in client.scan_iter(match=f"{kp}{queue}*", count=1000):
                    if client.type(name) == b"list":
                        total += int(client.llen(name))
            return total
        finally:
            client.close()

    def log(self, name: str) -> str:
        """The output so far of the process started as ``name``."""
        return _read(self.logs[name])

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its pool processes (its own process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        """Warm-stop one process started here; its exit code."""
        self.procs.remove(proc)
        return procs.stop(proc)

    def stop_all(self) -> None:
        """Warm-stop every process started here (SIGKILL after 45 s)."""
        while self.procs:
            procs.stop(self.procs.pop())


def _pinged(name: str, dep: Deployment) -> bool:
    """Whether the worker answers a control ping (its log may be quiet at WARNING)."""
    from celery_app.app import app

    try:
        replies = app.control.ping(destination=[f"{name}-{dep.prefix}@localhost"], timeout=0.5)
    except Exception:
        return False
    return bool(replies)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def available(kind: str) -> str | None:
    """None when ``kind`` can run here, else why not."""
    if kind in ("redis", "rabbitmq") and not _redis_answers(MACHINE_REDIS_URL):
        return f"no Redis answers at {MACHINE_REDIS_URL} (set TRACKING_TEST_REDIS_URL)"
    if kind in ("rabbitmq", "rabbitmq-cluster"):
        if not port_open(RABBIT_HOST, RABBIT_PORT):
            return "no RabbitMQ on 127.0.0.1:5672"
        if shutil.which("rabbitmqctl") is None:
            return "rabbitmqctl not found (needed to create a private vhost)"
    return None


def require(kind: str) -> None:
    """Skip the calling test when ``kind`` cannot run here; with ``CI`` set, fail it.

    CI must exercise every broker: a missing RabbitMQ, ``rabbitmqctl`` or
    Redis there is a broken set-up, not a reason to pass.
    """
    import pytest

    reason = available(kind)
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the {kind} deployment must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def deployment(kind: str, tmp_path: Path, **overrides: Any) -> Iterator[Deployment]:
    """Set up an isolated deployment of ``kind``; tear down everything it made."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "key_prefix": prefix,
        "event_handlers": [HANDLERS],
        "flush_interval_seconds": 1.0,
        **overrides,
    }
    server: EmbeddedRedis | None = None
    vhost: str | None = None
    machine_url = MACHINE_REDIS_URL
    try:
        if kind == "embedded":
            server = EmbeddedRedis(data_dir).start()
            cache_url = server.url
            if values.get("redis_url"):  # a cache of the test's own; the broker stays here
                values.setdefault("broker_url", server.broker_url)
                cache_url = str(values["redis_url"])
        elif kind == "redis":
            cache_url = machine_url
            values["redis_url"] = machine_url
            values["broker_url"] = machine_url
            values["broker_transport_options"] = {
                **values.get("broker_transport_options", {}),
                "global_keyprefix": f"{prefix}:kombu:",
            }
        elif kind in ("rabbitmq", "rabbitmq-cluster"):
            vhost = f"trk-test-{prefix}"
            _rabbitmqctl("add_vhost", vhost)
            _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            if kind == "rabbitmq":
                values["redis_url"] = machine_url
            cache_url = machine_url = str(values["redis_url"])
            values["broker_url"] = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
        else:
            raise ValueError(kind)
        env = procs.settings_env(**values)
        env["PYTHONPATH"] = str(REPO)
        settings = Settings(**{k: v for k, v in values.items()})
        dep = Deployment(kind, data_dir, prefix, env, settings, cache_url, vhost, embedded=server)
        try:
            yield dep
        finally:
            dep.stop_all()
            _reset_test_process()
    finally:
        if kind in ("redis", "rabbitmq", "rabbitmq-cluster"):
            _delete_prefix(machine_url, prefix)
        if vhost is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _rabbitmqctl("delete_vhost", vhost)
        if server is not None:
            server.stop()


def _reset_test_process() -> None:
    runtime.use_settings(None)


def _delete_prefix(url: str, prefix: str) -> None:
    if is_cluster_url(url):  # the cache's flush walks every primary
        cache = RedisDataCache(url, prefix)
        try:
            cache.flush()
        finally:
            cache.close()
        return
    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for name in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(name)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        for name in client.scan_iter(match=f"{{{prefix}:*", count=1000):
            batch.append(name)
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def received(dep: Deployment, name: str = "received") -> list[Any]:
    """What the test handlers recorded (see ``tests.support.celery_handlers``)."""
    return [json.loads(raw) for raw in dep.redis().lrange(dep.key(name), 0, -1)]
