"""The benchmark's monitor: Celery task events, as Flower receives them.

A background thread captures ``task-succeeded``/``task-failed`` events from
the broker (Celery's event receiver), so the benchmark knows when each task
was applied by the worker (the event carries the worker's timestamp).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from celery_app.app import app
from tasks import noop


class Collector:
    """Collect ``task-succeeded``/``task-failed`` events in a background thread."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.lock = threading.Lock()
        self.receiver: Any = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("event receiver did not start")

    def _run(self) -> None:
        def ok(event: dict[str, Any]) -> None:
            with self.lock:
                self.done[event["uuid"]] = event["timestamp"]

        def bad(event: dict[str, Any]) -> None:
            with self.lock:
                self.failed[event["uuid"]] = event.get("exception", "")

        while True:  # reconnect if the broker drops the monitor's connection
            try:
                with app.connection_for_read() as conn:
                    self.receiver = app.events.Receiver(
                        conn, handlers={"task-succeeded": ok, "task-failed": bad}
                    )
                    self.ready.set()
                    self.receiver.capture(limit=None, timeout=None, wakeup=True)
                return
            except OSError:
                if self.receiver is not None and self.receiver.should_stop:
                    return
                time.sleep(1)

    def wait_for(self, ids: list[str], idle: float = 10.0) -> int:
        """Wait until every task reported; return how many events the monitor missed.

        Celery's task events travel over the broker's fanout (Redis pub/sub),
        which does not guarantee delivery to a monitor; a task whose event
        never arrives is counted as missed once no event came for ``idle``
        seconds (the applied-state check at the end is exact regardless).
        """
        last_count, last_change = -1, time.monotonic()
        while True:
            with self.lock:
                count = sum(1 for i in ids if i in self.done or i in self.failed)
            if count == len(ids):
                return 0
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > idle:
                if count < 0.99 * len(ids):
                    raise RuntimeError(f"only {count} of {len(ids)} tasks reported")
                return len(ids) - count
            time.sleep(0.05)

    def handshake(self) -> None:
        """Send no-ops until the monitor sees one: its subscription is live."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            task_id = str(uuid.uuid4())
            noop.apply_async(task_id=task_id)
            for _ in range(20):
                with self.lock:
                    if task_id in self.done:
                        return
                time.sleep(0.05)
        raise RuntimeError("the event monitor saw no task event in 60 s")

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)
