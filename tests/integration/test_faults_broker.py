"""The broker restarted while a caller is publishing with ``delay()``.

What the caller sees is Celery's publish retry policy (the product keeps
Celery's default: 3 retries, 0 to 1 s apart): a ``delay()`` during an
outage longer than about a second raises ``kombu.exceptions.OperationalError``;
one that returns was taken by the broker (RabbitMQ: with publisher
confirms; Redis: the LPUSH was answered). The caller here does what the
README tells callers to do: send the event again with the same
``event_id`` until ``delay()`` returns. Every row ends with an exact
count: none doubled (a raised ``delay()`` whose message did reach the
broker is absorbed by the event-id dedupe) and, on RabbitMQ, none lost; on
the Redis broker at most ``REDIS_BROKER_WINDOW`` (kombu's pop-then-record
window, see below).

Rows:

- RabbitMQ: ``rabbitmqctl stop_app`` for a few seconds, then ``start_app``
  (always, in ``finally``). This stops the machine's RabbitMQ for every
  user, so the outage is kept to about 3 s.
- The embedded Redis (broker and cache) stopped by its owner - this test
  process - and started again on the same files.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError

from celery_app import configure, runtime
from tasks import track
from tests.support.celery_env import FAST_REDELIVERY, Deployment, deployment, require, wait_until
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis]

OUTAGE_AFTER = 100  # events acknowledged before the broker goes away
AFTER_OUTAGE = 100  # events acknowledged after it is back, before the caller stops
MAX_EVENTS = 20_000  # a bound, never reached in a passing run
OUTAGE_SECONDS = 3.0


class Caller:
    """Publishes events, resending one with its event id until delay() returns.

    It keeps publishing until the outage is over (:attr:`outage_over` set)
    and AFTER_OUTAGE more events were taken, so the outage always lands
    mid-stream however slowly the broker goes down on a loaded machine.
    """

    def __init__(self) -> None:
        self.acked = 0
        self.raised: list[BaseException] = []
        self.failure: BaseException | None = None
        self.outage_over = threading.Event()
        self.acked_when_over: int | None = None

    def _done(self) -> bool:
        if not self.outage_over.is_set():
            return False
        if self.acked_when_over is None:
            self.acked_when_over = self.acked
        return self.acked >= self.acked_when_over + AFTER_OUTAGE

    def run(self, deadline: float) -> None:
        try:
            for index in range(MAX_EVENTS):
                if self._done():
                    return
                while True:
                    try:
                        track.delay("g", {"kind": "hit"}, event_id=f"e{index}")
                        break
                    except Exception as exc:
                        self.raised.append(exc)
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                self.acked += 1
                time.sleep(0.005)  # a steady stream, so the outage lands mid-stream
            raise AssertionError(f"the outage did not end within {MAX_EVENTS} events")
        except BaseException as exc:
            self.failure = exc


#: Events the Redis broker may lose per outage. kombu's Redis transport pops
#: a message (BRPOP) and records it as unacknowledged in a second command;
#: when the server goes away between the two, the popped message is gone
#: (seen here: 1 of 400 events in 1 of 5 runs, the event just before the
#: outage, never "received" by the worker). RabbitMQ has no such window.
REDIS_BROKER_WINDOW = 1


def _drained(dep: Deployment) -> bool:
    """The Redis broker holds nothing more: queues empty, nothing unacknowledged."""
    client = dep.redis()
    queued = sum(client.llen(key) for key in client.scan_iter(match="tracking*"))
    return queued == 0 and client.hlen("unacked") == 0


def _scenario(dep: Deployment, outage: Callable[[], None], allowed_loss: int = 0) -> Caller:
    manager = runtime.get_manager()
    manager.add_tracker("g", CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**9))
    dep.start_worker("w", concurrency=2)
    caller = Caller()
    thread = threading.Thread(target=caller.run, args=(time.monotonic() + 240,))
    thread.start()
    try:
        wait_until(lambda: caller.acked >= OUTAGE_AFTER, 120, "the first events to be published")
        outage()
    finally:
        caller.outage_over.set()
        thread.join(300)
    assert caller.failure is None, f"the caller gave up: {caller.failure!r}"
    sent = caller.acked

    def progress() -> float:
        try:
            return float(manager.get_trackers("g")[0].progress)
        except Exception:  # the cache may be coming back
            return -1.0

    if allowed_loss:
        # Done when every event is applied, or when the broker holds nothing
        # more and the count is steady (the window lost one).
        def settled() -> bool:
            if progress() == sent:
                return True
            if not _drained(dep):
                return False
            before = progress()
            time.sleep(2)  # nothing in flight either: the count holds still
            return progress() == before and _drained(dep)

        wait_until(settled, 240, "the broker to drain")
    else:
        wait_until(lambda: progress() == sent, 240, f"all {sent} events to be applied")
    observed = progress()
    assert sent - allowed_loss <= observed <= sent, f"{observed:g} of {sent} applied"
    # What the caller saw during the outage: a typed error from kombu.
    assert caller.raised, "no delay() call met the outage"
    assert all(isinstance(exc, OperationalError) for exc in caller.raised), caller.raised[:3]
    print(
        f"{dep.kind}: {observed:g} of {sent} applied, none twice; "
        f"delay() raised {len(caller.raised)} times"
    )
    return caller


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def test_rabbitmq_stop_app_start_app_during_delay(tmp_path: Path) -> None:
    require("rabbitmq")

    def outage() -> None:
        try:
            _rabbitmqctl("stop_app")
            time.sleep(OUTAGE_SECONDS)
        finally:
            _rabbitmqctl("start_app")  # the machine's RabbitMQ: always back

    with deployment("rabbitmq", tmp_path) as dep:
        configure(dep.settings)
        _scenario(dep, outage)  # exact: RabbitMQ has no pop-then-record window


def test_embedded_redis_owner_restart_during_delay(tmp_path: Path) -> None:
    require("embedded")
    with deployment("embedded", tmp_path, **FAST_REDELIVERY) as dep:
        configure(dep.settings)
        server = dep.embedded
        assert server is not None

        def outage() -> None:
            server.stop()  # SIGTERM: redis writes its AOF and exits
            try:
                time.sleep(OUTAGE_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    runtime.close()  # drop this process's connections to the old server
                server.start()

        _scenario(dep, outage, allowed_loss=REDIS_BROKER_WINDOW)
