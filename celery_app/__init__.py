"""The Celery side of the product: the app, its configuration, signals and metrics.

``celery -A celery_app worker -Q tracking.batch,tracking,admin,events,maintenance`` runs a
worker; ``tracking worker`` does the same with the right defaults.
Handlers for follow-up events are registered with
:func:`celery_app.handlers.on_event`.
"""

from celery_app.app import app, configure
from celery_app.handlers import on_event, register_handler

__all__ = ["app", "configure", "on_event", "register_handler"]
