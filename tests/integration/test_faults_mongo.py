"""The Mongo store stopped under load, then started again.

A real worker and beat run on the machine's Redis (broker and cache) with
a Mongo wire-compatible test server as the store (SQLite engine: its data
survives the restart; it is a test server, not MongoDB). While a caller
keeps sending events, the store is stopped for ``OUTAGE`` seconds and
started again on the same port and file. Checked, exactly:

- tracking continues during the outage: every event sent while the store
  is down is applied in Redis before the store comes back (write-behind:
  a store outage never fails ``track`` for a group already in Redis);
- flush lag recovers: after the restart the store catches up with Redis
  (beat's ``flush_dirty``) without anyone stepping in;
- nothing lost or duplicated: Redis and the store both end at exactly the
  number of events sent.

The CI variant stops the store for 10 s; the ``long`` one (deselected by
default) for 60 s: ``python -m pytest -m long tests/integration/test_faults_mongo.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from cli.procs import celery_command
from tasks import track
from tests.support.celery_env import deployment, free_port, require, wait_until
from tests.support.mongo_env import MongoEnvUnavailable, MongoTestServer, ensure_venv
from tracking import CountTracker, KeyValueEQ
from tracking.factory import store_from_settings

pytestmark = [pytest.mark.redis, pytest.mark.mongo]

GROUPS = [f"g{i}" for i in range(4)]
RATE_SLEEP = 0.02  # between two track.delay() calls: a steady load


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[MongoTestServer]:
    try:
        python = ensure_venv()
    except MongoEnvUnavailable as exc:
        if __import__("os").environ.get("CI"):
            pytest.fail(f"CI is set, so the Mongo tests must run, but: {exc}")
        pytest.skip(str(exc))
    server = MongoTestServer(
        python, engine="sqlite", sqlite_path=tmp_path / "store.sqlite", port=free_port()
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Load:
    """Sends hits round-robin to GROUPS until stopped; counts what was sent."""

    def __init__(self) -> None:
        self.sent = 0
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                index = self.sent
                track.delay(GROUPS[index % 4], {"kind": "hit"}, event_id=f"e{index}")
                self.sent += 1
                time.sleep(RATE_SLEEP)
        except BaseException as exc:
            self.failure = exc


def _outage_scenario(tmp_path: Path, mongo: MongoTestServer, outage: float) -> None:
    require("redis")
    assert mongo.uri is not None
    base, _, query = mongo.uri.partition("/?")
    store_url = f"{base}/trk_faults?{query}&serverSelectionTimeoutMS=2000"
    with deployment("redis", tmp_path, store_url=store_url, flush_interval_seconds=1.0) as dep:
        configure(dep.settings)
        manager = runtime.get_manager()
        for group in GROUPS:
            manager.add_tracker(group, CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**9))
        dep.start_worker("w", concurrency=3)
        dep.start("beat", celery_command("beat", "-l", "INFO"))

        def in_redis() -> float:
            return sum(float(manager.get_trackers(g)[0].progress) for g in GROUPS)

        def in_store() -> float:
            store = store_from_settings(dep.settings)
            try:
                return sum(float(r.state["progress"]) for g in GROUPS for r in store.load_group(g))
            finally:
                store.close()

        load = Load()
        thread = threading.Thread(target=load.run)
        thread.start()
        try:
            wait_until(lambda: in_store() >= 20, 120, "the store to receive the first flushes")
            mongo.stop()
            down_at = time.monotonic()
            sent_at_stop = load.sent
            time.sleep(outage)  # the outage, under load
            # Tracking continued: what was sent during the outage is applied
            # in Redis while the store is still down.
            sent_during = load.sent
            assert sent_during > sent_at_stop, "no load during the outage"
            wait_until(
                lambda: in_redis() >= sent_during, 120, "events sent during the outage in Redis"
            )
            assert not mongo.running
            print(
                f"store down {time.monotonic() - down_at:.0f}s; sent {sent_during - sent_at_stop}"
            )
            mongo.start()
            time.sleep(3)  # some load after the restart too
        finally:
            load.stop.set()
            thread.join(60)
        assert load.failure is None, repr(load.failure)
        total = load.sent
        wait_until(lambda: in_redis() == total, 180, f"all {total} events in Redis")
        wait_until(lambda: in_store() == total, 180, "the store to catch up (flush lag)")
        assert in_redis() == total and in_store() == total


def test_mongo_store_outage_under_load_ci(tmp_path: Path, mongo: MongoTestServer) -> None:
    _outage_scenario(tmp_path, mongo, outage=10.0)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_mongo_store_outage_under_load_60s(tmp_path: Path, mongo: MongoTestServer) -> None:
    _outage_scenario(tmp_path, mongo, outage=60.0)
