"""Keep beat's housekeeping out of the logs at the default level.

Beat sends ``drain_outbox`` every second and ``flush_dirty`` every few
seconds. Celery logs "Task ... received" and "Task ... succeeded" at INFO
for every task, and beat logs "Sending due task" for every send, which
buries the lines of real tasks. For the maintenance tasks only, those
records are demoted to DEBUG (shown with ``-l DEBUG``); failures, retries
and every other task are logged as before. The maintenance tasks log one
INFO line themselves when a run did something (see ``tasks.maintenance``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from celery_app.celeryconfig import QUEUE_MAINTENANCE, TASK_QUEUES

#: The housekeeping tasks (everything routed to the maintenance queue).
MAINTENANCE_TASKS = frozenset(
    name for name, queue in TASK_QUEUES.items() if queue == QUEUE_MAINTENANCE
)

#: Celery's loggers of per-task lines: received (worker main process),
#: succeeded (pool process), and beat's "Sending due task".
TASK_LINE_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.beat")


def _task_name(record: logging.LogRecord) -> object:
    args = record.args
    if isinstance(args, Mapping):
        return args.get("name")  # worker lines: "Task %(name)s[%(id)s] ..."
    if isinstance(args, tuple) and len(args) == 2:
        return args[1]  # beat: "Scheduler: Sending due task %s (%s)"
    return None


class QuietMaintenance(logging.Filter):
    """Demote INFO task lines of the maintenance tasks to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or _task_name(record) not in MAINTENANCE_TASKS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER = QuietMaintenance()


def install() -> None:
    """Attach the filter to Celery's task-line loggers (idempotent)."""
    for name in TASK_LINE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
