"""Worker lifecycle hooks: per-process resources, handlers and the metrics server.

- ``worker_init`` (main process, before the pool forks): start the
  Prometheus server when ``TRACKING_METRICS_PORT`` is set, and import the
  event handlers so a bad ``TRACKING_EVENT_HANDLERS`` fails the worker at
  start.
- ``worker_process_init`` (each pool process, after the fork): drop what
  the child inherited and build its own manager before the first task.
- ``worker_process_shutdown``: close the manager, retire its gauges.
- ``worker_init``, ``worker_process_init``, ``beat_init``: demote the
  housekeeping tasks' per-task log lines to DEBUG (:mod:`celery_app.quietlog`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery.signals import (
    beat_init,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from celery_app import activity, handlers, metrics, quietlog, runtime

logger = logging.getLogger(__name__)

#: The multiprocess metrics directory this worker made (removed at shutdown).
_made_dirs: list[Path] = []


def _on_worker_init(**_: Any) -> None:
    quietlog.install()  # pool processes inherit it through the fork
    settings = runtime.settings()
    handlers.load_handlers(settings.event_handlers)
    if settings.metrics_port is not None:
        path, made = metrics.start_server(settings.metrics_port, settings.data_dir)
        if made:
            _made_dirs.append(path)


def _on_worker_process_init(**_: Any) -> None:
    quietlog.install()  # inherited from the main process; also for spawned pools
    runtime.reset_after_fork()
    settings = runtime.settings()
    handlers.load_handlers(settings.event_handlers)
    try:
        runtime.get_manager()
    except Exception:  # the first task will retry building it, and report the error
        logger.exception("could not build the tracking manager in pool process %d", os.getpid())


def _on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    activity.flush_counts()  # the dashboard's last second of counts, before the connection goes
    runtime.close()
    metrics.mark_process_dead(pid or os.getpid())


def _on_worker_shutdown(**_: Any) -> None:
    while _made_dirs:  # only directories we made ourselves
        metrics.remove_multiproc_dir(_made_dirs.pop())


def _on_beat_init(**_: Any) -> None:
    quietlog.install()


worker_init.connect(_on_worker_init, weak=False)
beat_init.connect(_on_beat_init, weak=False)
worker_process_init.connect(_on_worker_process_init, weak=False)
worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False)
worker_shutdown.connect(_on_worker_shutdown, weak=False)
