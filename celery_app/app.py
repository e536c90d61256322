"""The one Celery app of the product.

``celery -A celery_app worker`` finds it as ``celery_app.app``. The
configuration is the data in :mod:`celery_app.celeryconfig`, read lazily
(on first use, not at import), so importing the app to call
``track.delay`` in a web process costs nothing until the first publish.
Worker-process resources (the tracking manager, Redis clients) are built
per process on first use, see :mod:`celery_app.runtime`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from config.settings import Settings

app = Celery(
    "tracking",
    include=["tasks.tracking", "tasks.admin", "tasks.maintenance", "tasks.events"],
)
app.config_from_object("celery_app.celeryconfig")

# Signal handlers (per-process manager, metrics server, handler imports).
import celery_app.signals  # noqa: E402,F401  (registers receivers)
from celery_app.batching import BatchQueueConsumer  # noqa: E402

# tasks.track's queue on a channel of its own, at the batch prefetch.
app.steps["consumer"].add(BatchQueueConsumer)


def configure(settings: Settings) -> None:
    """Point this process's app and runtime at ``settings`` instead of the environment.

    For tests, the benchmark and the demo, which run against their own
    brokers and data directories in one process. Reconfigures the app,
    drops pooled broker connections made with the old configuration, and
    makes :func:`celery_app.runtime.get_manager` build from ``settings``.
    Task retry options (read when the tasks are defined) are unaffected.
    """
    from celery_app import celeryconfig, runtime  # noqa: PLC0415 - celeryconfig is lazy

    app.config_from_object(celeryconfig.build_config(settings), force=True)
    _drop_connections()
    runtime.use_settings(settings)


def _drop_connections() -> None:
    pool: Any = app._pool  # Celery has no public "reconnect" API
    if pool is not None:
        pool.force_close_all()
        app._pool = None
    amqp: Any = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
        # Its queues and routes were built from the old configuration (e.g.
        # classic queues where the new one declares quorum queues).
        for cached in ("queues", "router", "_rtable"):
            amqp.__dict__.pop(cached, None)
