"""Follow-up event handlers used by the Celery integration tests.

The worker imports this module through ``TRACKING_EVENT_HANDLERS``. Each
handler appends the event it received to a Redis list under the test's
key prefix, so the test can count how often each handler ran per event.
"""

from __future__ import annotations

import json
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
