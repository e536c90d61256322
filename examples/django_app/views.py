"""A minimal Django view that tracks an event with ``track.delay``.

Wire it in your ``urls.py``::

    from django.urls import path
    from examples.django_app.views import track_event

    urlpatterns = [path("users/<str:user_id>/events", track_event)]

Workers run with ``tracking worker`` next to the Django project (same
``TRACKING_*`` settings). The view only publishes; the worker applies the
event. The ``Idempotency-Key`` header becomes the event id, so a retried
request counts once.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tasks import track


@csrf_exempt
@require_POST
def track_event(request: HttpRequest, user_id: str) -> HttpResponse:
    """POST a JSON object: it is tracked for ``user_id``."""
    try:
        data = json.loads(request.body)
    except json.JSONDecodeError:
        return JsonResponse({"error": "the body must be JSON"}, status=400)
    if not isinstance(data, dict):
        return JsonResponse({"error": "the event must be a JSON object"}, status=400)
    key = request.headers.get("Idempotency-Key")
    result = track.delay(user_id, data, event_id=key)
    return JsonResponse({"task_id": result.id}, status=202)
