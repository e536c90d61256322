"""A Redis server SIGKILLed and restarted in the middle of a stream of events.

The cache's Redis is a private ``redis-server`` (never the machine's
shared one) started with the persistence settings the README discusses,
and killed with SIGKILL - a crash: no shutdown save - then restarted on
the same files. The caller behaves like the ``track`` task: an event whose
call raised ``CacheError`` was not acknowledged and is sent again with the
same event id until it is acknowledged. Every row ends with the exact
expected progress:

- AOF with ``appendfsync always`` and ``everysec``, write-behind, Redis
  killed at an arbitrary moment (from another thread, possibly during a
  call): nothing acknowledged is lost and nothing counts twice. A process
  crash does not lose ``everysec``'s last second: Redis writes the AOF to
  the kernel before it replies, and only fsync is deferred; that second is
  lost only when the machine itself crashes, which this test cannot do.
- No persistence, write-behind, killed between two events: exactly the
  events acknowledged since the last flush are lost (the documented bound:
  one flush interval), the rest reloads from the store.
- No persistence, write-through, killed at an arbitrary moment: nothing
  lost, nothing doubled: every acknowledged event was in the store.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, redis_server, redis_server_binary
from tracking import CountTracker, FileDataStore, KeyValueEQ, RedisDataCache, TrackingManager
from tracking.errors import BackendError
from tracking.manager import Durability

pytestmark = [pytest.mark.redis]

EVENTS = 600
KILL_AFTER = 270  # acknowledged events before the crash
FLUSH_EVERY = 50  # write-behind: one "interval" of events
DOWN_SECONDS = 1.0


def _setup(server: RedisServer, tmp_path: Path, durability: Durability) -> TrackingManager:
    manager = TrackingManager(
        RedisDataCache(server.url, "rs"),
        FileDataStore(str(tmp_path / "store")),
        durability=durability,
    )
    manager.add_tracker("g", CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**9))
    manager.flush_dirty()
    return manager


def _until_acked(call: object, deadline: float, on_error: object = None) -> object:
    """Call until it returns (a backend error means: not acknowledged, send again)."""
    while True:
        try:
            return call()  # type: ignore[operator]
        except BackendError:
            if time.monotonic() > deadline:
                raise
            if on_error is not None:
                on_error()  # type: ignore[operator]
            time.sleep(0.02)


def _progress(manager: TrackingManager) -> float:
    return float(manager.get_trackers("g")[0].progress)


def _crash_and_restart(server: RedisServer) -> None:
    server.kill()
    time.sleep(DOWN_SECONDS)  # the outage the callers ride through
    server.start()


@pytest.mark.parametrize(
    ("options", "durability"),
    [
        (["--appendonly", "yes", "--appendfsync", "always"], "write-behind"),
        (["--appendonly", "yes", "--appendfsync", "everysec"], "write-behind"),
        (["--appendonly", "no"], "write-through"),
    ],
    ids=["aof-always", "aof-everysec", "no-aof-write-through"],
)
def test_redis_crash_mid_stream_loses_nothing_acknowledged(
    tmp_path: Path, options: list[str], durability: Durability
) -> None:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary")
    with redis_server(tmp_path / "redis", options) as server:
        manager = _setup(server, tmp_path, durability)
        acked = 0
        killed_at: list[float] = []

        def killer() -> None:
            while acked < KILL_AFTER:
                time.sleep(0.001)
            server.kill()  # at whatever point the stream is, possibly mid-call
            killed_at.append(time.monotonic())

        def restart_when_due() -> None:
            # Restarted from this (the main) thread: a child's parent-death
            # signal follows the thread that started it.
            due = killed_at and time.monotonic() > killed_at[0] + DOWN_SECONDS
            if due and server.proc is not None and server.proc.poll() is not None:
                server.start()

        thread = threading.Thread(target=killer)
        thread.start()
        deadline = time.monotonic() + 180
        try:
            for index in range(EVENTS):
                _until_acked(
                    lambda i=index: manager.track("g", {"kind": "hit"}, event_id=f"e{i}"),
                    deadline,
                    restart_when_due,
                )
                acked += 1
        finally:
            thread.join(60)
        assert killed_at, "the server was not crashed mid-stream"
        observed = _progress(manager)
        # Write-through without AOF: the in-flight event may have reached the
        # store before the crash failed its call; the resent copy is then
        # recognised by the event ids persisted with the group.
        assert observed == EVENTS, f"lost {EVENTS - observed:g} (negative: counted twice)"
        _until_acked(manager.flush_dirty, time.monotonic() + 60)
        [record] = FileDataStore(str(tmp_path / "store")).load_group("g")
        assert record.state["progress"] == observed


def test_redis_crash_without_persistence_loses_exactly_the_unflushed_interval(
    tmp_path: Path,
) -> None:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary")
    with redis_server(tmp_path / "redis", ["--appendonly", "no"]) as server:
        manager = _setup(server, tmp_path, "write-behind")
        deadline = time.monotonic() + 180
        flushed_at = 0
        for index in range(EVENTS):
            if index == KILL_AFTER:
                _crash_and_restart(server)
            _until_acked(
                lambda i=index: manager.track("g", {"kind": "hit"}, event_id=f"e{i}"), deadline
            )
            if (index + 1) % FLUSH_EVERY == 0:
                _until_acked(manager.flush_dirty, deadline)
                if index < KILL_AFTER:
                    flushed_at = index + 1
        lost = KILL_AFTER - flushed_at
        assert 0 < lost < FLUSH_EVERY  # the crash fell inside an interval
        assert _progress(manager) == EVENTS - lost
        [record] = FileDataStore(str(tmp_path / "store")).load_group("g")
        assert record.state["progress"] == EVENTS - lost
