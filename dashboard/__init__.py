"""A read-only web dashboard for people: groups, trackers, progress, events.

``tracking dashboard`` serves it (Starlette app, Jinja2 templates,
uvicorn). It reads the same deployment as the workers (``config.Settings``:
the embedded Redis by default, a Redis server, any store) and never writes
tracker state. See :mod:`dashboard.app` and :mod:`dashboard.source`.
"""

from dashboard.app import create_app
from dashboard.server import check_exposure, serve

__all__ = ["check_exposure", "create_app", "serve"]
