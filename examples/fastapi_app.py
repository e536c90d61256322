"""A minimal FastAPI app that tracks events with ``track.delay``.

Run (with a worker and beat started by ``tracking worker`` / ``tracking beat``
as the same user, so they share the embedded Redis in the user data directory, or the same
``TRACKING_*`` URLs)::

    pip install -r examples/requirements.txt
    uvicorn examples.fastapi_app:api

    curl -X POST localhost:8000/users/alice/trackers \\
         -H 'content-type: application/json' \\
         -d '{"type": "CountTracker", "name": "logins",
              "conditions": [{"type": "KeyValueEQ", "key": "kind", "value": "login"}],
              "target": [3, 10]}'
    curl -X POST localhost:8000/users/alice/events -H 'content-type: application/json' \\
         -d '{"kind": "login"}'
    curl localhost:8000/users/alice/trackers

Publishing is all the request does: the worker applies the event, and an
``Idempotency-Key`` header becomes the event id, so a retried request
counts once.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Header, HTTPException

from celery_app import runtime
from tasks import track
from tracking import TrackingError
from tracking.errors import ConflictingNameError
from tracking.spec import tracker_from_spec

api = FastAPI(title="tracking example")


@api.post("/users/{user_id}/events", status_code=202)
def post_event(
    user_id: str, event: dict[str, Any], idempotency_key: str | None = Header(default=None)
) -> dict[str, str]:
    """Queue one event for the user's trackers."""
    result = track.delay(user_id, event, event_id=idempotency_key)
    return {"task_id": result.id}


@api.post("/users/{user_id}/trackers", status_code=201)
def post_tracker(user_id: str, spec: dict[str, Any]) -> dict[str, str]:
    """Add a tracker (a JSON spec) to the user, synchronously.

    Through the manager rather than ``add_tracker.delay``: the tracker is in
    Redis and the store when the response goes out, so every event posted
    afterwards counts toward it (a queued ``add_tracker`` may run after
    them; see the README's "Ordering").
    """
    try:
        tracker = tracker_from_spec(spec)
        runtime.get_manager().add_tracker(user_id, tracker)
    except ConflictingNameError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except TrackingError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return {"name": tracker.name}


@api.get("/users/{user_id}/trackers")
def get_trackers(user_id: str) -> list[dict[str, Any]]:
    """Read progress directly (a read needs no worker)."""
    try:
        trackers = runtime.get_manager().get_trackers(user_id)
    except TrackingError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return [t.to_spec(include_state=True) for t in trackers]
