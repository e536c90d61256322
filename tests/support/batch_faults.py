"""Fault injection for the batching tests, switched on by keys in the cache's Redis.

A worker imports this module when it is listed in ``TRACKING_EVENT_HANDLERS``
(only the batching tests do that). It wraps ``TrackingManager.track_many``
in every process of that worker; the wrapper does nothing unless a test set
one of these keys under the deployment's prefix:

- ``fault:pause``: hold every batch before it is applied, for as long as
  the key exists (each held batch adds its size to ``fault:held``), so a
  test can look at the broker while a batch is in a pool process, or kill
  the worker there.
- ``fault:fail-after``: a count; while it is positive, a batch is applied
  and then ``BackendError`` is raised, as when Redis applied the scripts
  but the reply was lost (a timeout). The retried batch must count once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from celery_app import runtime
from tracking.errors import BackendError
from tracking.manager import TrackingManager

_original = TrackingManager.track_many


def _faulty_track_many(
    self: TrackingManager, events: Sequence[tuple[str, dict[str, Any], str | None]]
) -> Any:
    client = runtime.redis_client()
    if client.exists(runtime.key("fault", "pause")):
        client.incrby(runtime.key("fault", "held"), len(events))
        while client.exists(runtime.key("fault", "pause")):
            time.sleep(0.05)
    results = _original(self, events)
    if int(client.decr(runtime.key("fault", "fail-after"))) >= 0:
        raise BackendError("injected: applied, then the reply was lost")
    return results


TrackingManager.track_many = _faulty_track_many  # type: ignore[method-assign]
