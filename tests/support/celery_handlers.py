"""Follow-up event handlers used by the Celery integration tests.

The worker imports this module through ``TRACKING_EVENT_HANDLERS``. Each
handler appends the event it received to a Redis list under the test's
key prefix, so the test can count how often each handler ran per event.

With ``TRACKING_TEST_RECORD_RUNS`` set (to the worker's name), every
tracking task run is recorded too, and ``TRACKING_TEST_HOLD_AFTER`` makes a
pool process hold its tasks after applying them and before their
acknowledgement, so a SIGKILL is sure to hit messages in flight.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery_app import on_event, runtime
from tracking.events import EVENT_TRACKER_ALL_COMPLETED

RECEIVED = "received"
REWARDS = "rewards"


@on_event()
def record_every_event(event: dict[str, Any]) -> None:
    """Record every event (one list entry per run)."""
    runtime.redis_client().rpush(runtime.key(RECEIVED), json.dumps(event))


@on_event(EVENT_TRACKER_ALL_COMPLETED)
def grant_reward(event: dict[str, Any]) -> None:
    """Record a reward per completed tracker (the example's ALL_COMPLETED handler)."""
    runtime.redis_client().rpush(
        runtime.key(REWARDS), json.dumps([event["event_id"], event["group_id"], event["name"]])
    )


# -- kill-test instrumentation (only active when its environment entries are set) --
#: Record every ``track``/``track_many`` run (task id, worker, result) in a Redis list.
RECORD_ENV = "TRACKING_TEST_RECORD_RUNS"
#: After this many tracking tasks, a pool process holds each next one after applying
#: it and before the worker acknowledges it (the task's message stays in flight).
HOLD_ENV = "TRACKING_TEST_HOLD_AFTER"
RUNS = "runs"
HOLD_SECONDS = 600.0
_TRACKING_TASKS = ("tasks.track", "tasks.track_many")
_done = 0


def _runs_of(task_id: str, task: Any, args: Any, retval: Any) -> list[tuple[str, dict[str, Any]]]:
    """(message id, summary) of each message a run handled.

    ``tasks.track`` runs a batch of messages (celery-batches): one row per
    message, its id being the message's task id (what a redelivery keeps);
    its outcome lists the messages that were duplicates.
    """
    summary = retval if isinstance(retval, dict) else {}
    if task.name == "tasks.track":
        duplicates = summary.get("duplicate") or {}
        requests = args[0] if args else []
        return [(req.id, {"duplicate": req.id in duplicates}) for req in requests]
    return [(task_id, summary)]


def _record_run(task_id: str, task: Any, retval: Any, state: str, **extra: Any) -> None:
    """``task_postrun``: runs in the pool process after the task body, before the ack."""
    global _done
    if task.name not in _TRACKING_TASKS:
        return
    _done += 1
    hold_after = int(os.environ.get(HOLD_ENV, "0") or 0)
    held = hold_after > 0 and _done > hold_after
    rows = [
        json.dumps(
            {
                "task_id": message_id,
                "task": task.name,
                "worker": os.environ.get(RECORD_ENV, ""),
                "state": state,
                "held": held,
                "duplicate": bool(summary.get("duplicate")),
                "duplicates": int(summary.get("duplicates", 0)),
                "applied": int(summary.get("applied", 0)),
            }
        )
        for message_id, summary in _runs_of(task_id, task, extra.get("args"), retval)
    ]
    if rows:
        runtime.redis_client().rpush(runtime.key(RUNS), *rows)
    if held:
        time.sleep(HOLD_SECONDS)  # the test SIGKILLs the worker meanwhile


if os.environ.get(RECORD_ENV):
    from celery.signals import task_postrun

    task_postrun.connect(_record_run, weak=False)
