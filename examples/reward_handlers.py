"""Follow-up handlers: grant a reward when a tracker completes all its stages.

Make workers import this module::

    TRACKING_EVENT_HANDLERS='["examples.reward_handlers"]' tracking worker

Each handler runs as its own Celery task (``tasks.events.dispatch_event``,
``events`` queue), receives the event as a JSON dict, may raise to be
retried with backoff, and may chain tasks of its own. Delivery is
at-least-once: the worker skips an (event, handler) pair that already
succeeded, but a handler with external side effects should also dedupe by
``event["event_id"]`` (deterministic), as below.
"""

from __future__ import annotations

import logging
from typing import Any

from celery_app import on_event, runtime
from tracking import EVENT_TRACKER_ALL_COMPLETED

logger = logging.getLogger(__name__)

#: What each completed tracker is worth (tracker name -> coins).
REWARDS = {"logins": 10, "big-spender": 50}


@on_event(EVENT_TRACKER_ALL_COMPLETED)
def grant_reward(event: dict[str, Any]) -> None:
    """Credit the group's wallet once per completed tracker."""
    coins = REWARDS.get(event["name"], 1)
    client = runtime.redis_client()
    # Idempotent by event id: SET NX claims the grant, then the credit happens.
    # (A real app would do both in its own database transaction.)
    if client.set(runtime.key("reward", event["event_id"]), coins, nx=True, ex=30 * 86400):
        client.hincrby(runtime.key("wallet"), event["group_id"], coins)
        logger.info("granted %d coins to %s for %s", coins, event["group_id"], event["name"])


@on_event("STAGE_COMPLETED")
def congratulate(event: dict[str, Any]) -> None:
    """Handlers can be registered by event name too; this one only logs."""
    logger.info("%s reached stage %s of %s", event["group_id"], event["stage"] + 1, event["name"])
