"""The housekeeping log filter: maintenance task lines to DEBUG, everything else untouched."""

from __future__ import annotations

import logging

from celery_app.quietlog import MAINTENANCE_TASKS, QuietMaintenance


def _record(logger: str, level: int, msg: str, args: tuple[object, ...]) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, msg, args, None)


def test_maintenance_lines_are_demoted_and_dropped_below_debug() -> None:
    logging.getLogger("celery.app.trace").setLevel(logging.INFO)
    quiet = QuietMaintenance()
    worker = _record(
        "celery.app.trace",
        logging.INFO,
        "Task %(name)s[%(id)s] succeeded",
        ({"name": "tasks.drain_outbox", "id": "x"},),
    )
    beat = _record(
        "celery.beat",
        logging.INFO,
        "Scheduler: Sending due task %s (%s)",
        ("drain-outbox", "tasks.drain_outbox"),
    )
    assert not quiet.filter(worker) and worker.levelname == "DEBUG"
    logging.getLogger("celery.beat").setLevel(logging.DEBUG)
    assert quiet.filter(beat) and beat.levelname == "DEBUG"  # shown with -l DEBUG
    assert {"tasks.drain_outbox", "tasks.flush_dirty"} <= MAINTENANCE_TASKS


def test_real_tasks_and_failures_are_untouched() -> None:
    quiet = QuietMaintenance()
    track = _record(
        "celery.app.trace", logging.INFO, "Task %(name)s received", ({"name": "tasks.track"},)
    )
    failed = _record(
        "celery.app.trace", logging.ERROR, "Task %(name)s failed", ({"name": "tasks.flush_dirty"},)
    )
    assert quiet.filter(track) and track.levelname == "INFO"
    assert quiet.filter(failed) and failed.levelname == "ERROR"
