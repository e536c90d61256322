"""Prometheus metrics of the workers, safe with the prefork pool.

Prefork pool processes each count in their own memory; Prometheus'
multiprocess mode makes them write to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` which the worker's main process aggregates
when scraped. That mode is chosen by ``prometheus_client`` from the environment when it
is imported, so this module imports it only inside functions, and
:func:`start_server` (run by the main process at ``worker_init``, before
the pool forks) sets the directory and re-selects the value class in case
something imported ``prometheus_client`` earlier (the ``celery`` command
does, through Flower's plugin).

With ``TRACKING_METRICS_PORT`` unset nothing is served and metrics are
plain in-process counters (cheap, unobserved).

Metrics (all prefixed ``tracking_``):

- ``events_tracked_total`` events applied (duplicates excluded)
- ``events_duplicate_total`` events recognised as already applied
- ``completions_total`` trackers that completed all stages
- ``limited_total`` trackers limited by an event
- ``fired_events_total{event}`` follow-up events fired
- ``outbox_published_total`` handler tasks published from the outbox
- ``outbox_depth`` outbox entries seen by the last drain (capped by its batch)
- ``dirty_groups`` dirty groups seen by the last write-behind pass
- ``flush_duration_seconds`` time of a write-behind pass;
  ``last_flush_timestamp_seconds`` when the last one ended — flush lag is
  ``time() - tracking_last_flush_timestamp_seconds``
- ``errors_total{task,kind}`` task failures; kind is ``input`` (bad input,
  not retried), ``backend`` (retries exhausted), ``other``, or ``retry``
  (one count per retry)
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class Metrics:
    """The metric objects (created on first use, in the process that uses them)."""

    tracked: Any
    duplicates: Any
    completions: Any
    limited: Any
    fired: Any
    published: Any
    outbox_depth: Any
    dirty_groups: Any
    flush_duration: Any
    last_flush: Any
    errors: Any


@functools.cache
def metrics() -> Metrics:
    """The process's metrics (``prometheus_client`` imported here, not at module import)."""
    from prometheus_client import Counter, Gauge, Histogram  # noqa: PLC0415 - see module doc

    return Metrics(
        tracked=Counter("tracking_events_tracked", "Events applied to groups"),
        duplicates=Counter("tracking_events_duplicate", "Events already applied (deduplicated)"),
        completions=Counter("tracking_completions", "Trackers that completed all stages"),
        limited=Counter("tracking_limited", "Trackers limited by an event"),
        fired=Counter("tracking_fired_events", "Follow-up events fired", ["event"]),
        published=Counter("tracking_outbox_published", "Handler tasks published from the outbox"),
        outbox_depth=Gauge(
            "tracking_outbox_depth",
            "Outbox entries seen by the last drain (capped by its batch size)",
            multiprocess_mode="mostrecent",
        ),
        dirty_groups=Gauge(
            "tracking_dirty_groups",
            "Dirty groups seen by the last write-behind pass",
            multiprocess_mode="mostrecent",
        ),
        flush_duration=Histogram(
            "tracking_flush_duration_seconds", "Duration of a write-behind pass"
        ),
        last_flush=Gauge(
            "tracking_last_flush_timestamp_seconds",
            "Unix time the last write-behind pass ended",
            multiprocess_mode="mostrecent",
        ),
        errors=Counter("tracking_errors", "Task failures", ["task", "kind"]),
    )


def prepare_multiproc_dir(data_dir: Path) -> tuple[Path, bool]:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` (unless set) to a fresh directory.

    Returns the directory and whether this function chose it (so the worker
    removes it at shutdown; a directory given by the operator is kept).

    Must run before ``prometheus_client`` is imported in this process and
    before the pool forks. Files of a previous run are removed: counters
    restart at zero with the worker, as Prometheus expects.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    path = Path(configured) if configured else data_dir / "prometheus" / f"worker-{os.getpid()}"
    if path.exists():
        for child in path.iterdir():
            if child.suffix == ".db":
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    values: Any = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Already imported (the ``celery`` command loads Flower's plugin, which
        # imports prometheus_client): choose the value class again. Metrics
        # look it up when constructed, and ours are constructed later, in the
        # pool processes.
        values.ValueClass = values.get_value_class()
    return path, not configured


def start_server(port: int, data_dir: Path) -> tuple[Path, bool]:
    """Serve the aggregated metrics of all pool processes on ``port`` (all interfaces).

    Returns :func:`prepare_multiproc_dir`'s result.
    """
    path, made = prepare_multiproc_dir(data_dir)
    # Imported only now that the multiprocess directory is set (module docstring).
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, registry=registry)
    logger.info("Prometheus metrics on :%d (multiprocess dir %s)", port, path)
    return path, made


def mark_process_dead(pid: int) -> None:
    """Drop a finished pool process's live gauges (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess  # noqa: PLC0415 - see module doc

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def remove_multiproc_dir(path: Path) -> None:
    """Remove a directory made by :func:`prepare_multiproc_dir` at worker shutdown."""
    shutil.rmtree(path, ignore_errors=True)
