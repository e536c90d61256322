"""A Celery task that receives single messages and runs them in batches.

Built on ``celery-batches`` (:class:`celery_batches.Batches`): its strategy
buffers the task's messages in the worker's main process and hands them to
a pool process together, flushed every ``flush_every`` messages or every
``flush_interval`` seconds after the first one, whichever comes first.

What this class changes, and why (read in celery-batches 0.11's source):

- **Acknowledgement follows the outcome of each message.** The library
  acknowledges every message of a batch once the pool returns, even when
  the batch raised (``apply_batches_task`` logs the exception and returns
  ``None``), and passes no error callback, so a pool process that dies
  leaves its batch unacknowledged until the worker restarts. Here
  :meth:`flush` settles each message from the outcome the batch returned
  (see :func:`outcome`): applied or bad input -> acknowledged (with a
  ``task-succeeded`` or ``task-failed`` event, so Flower and monitors see
  each message); retried -> acknowledged after its copy was published;
  anything else -- the batch raised, the pool process died, a retry could
  not be published -> rejected with requeue, so the broker delivers it
  again. Nothing is acknowledged before its event is applied.
- **Backend errors follow the base task's retry policy.** A batch cannot
  call ``self.retry`` (there is no single request), so :meth:`retry_batch`
  does what :meth:`tasks.base.TrackingTask.retry` does for one task, per
  message: republish it with the same task id, ``retries + 1`` and the
  base policy's countdown (:func:`tasks.base.retry_countdown`, capped by
  ``retry_backoff_max``; ``max_retries``, unlimited by default), then
  acknowledge the original; a copy that cannot be published requeues the
  original instead. The event id is the task id, so an event
  that was applied before the error counts once.

The worker consumes the batch queue on a channel of its own, at a prefetch
large enough for batches (:mod:`celery_app.batching`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from celery_batches import Batches, SimpleRequest, consume_queue
from celery_batches.trace import apply_batches_task

from celery_app import metrics
from tasks.base import TrackingTask, retry_countdown

logger = logging.getLogger(__name__)

#: Outcome kinds a batch reports per message id; a missing id was applied.
FAILED, RETRIED, REQUEUE, DUPLICATE = "failed", "retried", "requeue", "duplicate"


def outcome() -> dict[str, dict[str, str]]:
    """An empty outcome: ``{kind: {task id: reason}}`` for the messages not simply applied."""
    return {FAILED: {}, RETRIED: {}, REQUEUE: {}, DUPLICATE: {}}


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``, as Celery shows an exception in a task-failed event."""
    return f"{type(exc).__name__}: {exc}"


class TrackingBatchTask(Batches, TrackingTask):  # type: ignore[misc]  # Celery is untyped
    """Batches whose messages are settled one by one (see the module docstring).

    Subclasses (the task function) take ``requests`` (a list of
    :class:`celery_batches.SimpleRequest`) and return :func:`outcome`.
    """

    abstract = True
    #: The one-task-per-message task that eager calls (``apply``,
    #: ``task_always_eager``) run, so that callers' tests see the same
    #: result and the same typed errors as with one task per message.
    single_task_name: str | None = None

    def apply(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Run the message eagerly through :attr:`single_task_name` (a batch of one otherwise)."""
        if self.single_task_name is not None:
            single = self.app.tasks[self.single_task_name]
            return single.apply(args, kwargs, *rest, **options)
        return super().apply(args, kwargs, *rest, **options)

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:  # noqa: N802 - Celery's name
        """celery-batches' strategy, logging each received message as Celery's own does.

        Celery builds the strategy again each time the consumer (re)starts,
        e.g. after a lost broker connection. The worker's event loop cleared
        its timer then, but celery-batches still holds the flush timer's
        reference and would never start a new one (a batch would wait for
        ``flush_every`` messages); and the messages buffered on the old
        connection cannot be acknowledged any more (the broker delivers them
        again). Both are reset here.
        """
        tref: Any = getattr(self, "_tref", None)
        if tref is not None:
            tref.cancel()
            self._tref = None
        dropped = len(list(consume_queue(self._buffer))) + len(list(consume_queue(self._pending)))
        if dropped:
            logger.warning(
                "consumer restarted: %d buffered track messages left to redelivery", dropped
            )
        handler = super().Strategy(task, app, consumer)
        if not logger.isEnabledFor(logging.INFO):
            return handler
        name = self.name

        def logged(message: Any, *args: Any, **kwargs: Any) -> Any:
            result = handler(message, *args, **kwargs)
            logger.info("Task %s[%s] received", name, (message.headers or {}).get("id"))
            return result

        return logged

    def flush(self, requests: Sequence[Any]) -> Any:
        """Hand the batch to a pool process; settle each message when it returns."""
        started = time.monotonic()
        batch = ([SimpleRequest.from_request(r) for r in requests],)

        def on_return(result: Any) -> None:
            self._settle(requests, result, time.monotonic() - started)

        def on_error(exc_info: Any) -> None:
            # The pool process died (WorkerLostError) or the job could not run.
            logger.error("track batch of %d lost its pool process: %r", len(requests), exc_info)
            self._settle(requests, None, time.monotonic() - started)

        return self._pool.apply_async(
            apply_batches_task,
            (self, batch, 0, None),
            callback=on_return,
            error_callback=on_error,
        )

    def _settle(self, requests: Sequence[Any], result: Any, runtime: float) -> None:
        if not isinstance(result, dict):
            # The batch raised (celery-batches logged it) or its process died.
            for req in requests:
                req.reject(requeue=True)
            return
        failed, retried, requeue = result[FAILED], result[RETRIED], result[REQUEUE]
        duplicate = result[DUPLICATE]
        info = logger.isEnabledFor(logging.INFO)
        for req in requests:
            if req.id in requeue:
                req.reject(requeue=True)
                continue
            req.acknowledge()
            if req.id in failed:
                req.send_event("task-failed", exception=failed[req.id], traceback="")
                # Celery's wording, so operators (and log searches) find it.
                logger.warning("Task %s[%s] raised: %s", self.name, req.id, failed[req.id])
            elif req.id in retried:
                req.send_event("task-retried", exception=retried[req.id], traceback="")
            else:
                req.send_event("task-succeeded", result=None, runtime=runtime)
                if info:  # as Celery logs a task's success (one line per message)
                    logger.info(
                        "Task %s[%s] succeeded in %.4fs: %r",
                        self.name,
                        req.id,
                        runtime,
                        {"duplicate": req.id in duplicate},
                    )

    def retry_batch(
        self, requests: Sequence[SimpleRequest], exc: BaseException, into: dict[str, dict[str, str]]
    ) -> None:
        """Retry each message after a backend error, by the base task's policy.

        Republishes each one (same id, ``retries + 1``, backoff countdown)
        and records it as retried; past ``max_retries`` it is failed
        instead; if the copy cannot be published it is requeued.
        """
        reason = describe(exc)
        errors = metrics.metrics().errors
        with self.app.producer_or_acquire() as producer:
            for req in requests:
                retries = int((req.request_dict or {}).get("retries") or 0)
                if self.max_retries is not None and retries >= self.max_retries:
                    into[FAILED][req.id] = reason
                    errors.labels(task=self.name, kind="backend").inc()
                    continue
                countdown = retry_countdown(retries, self.retry_backoff_max)
                try:
                    self.apply_async(
                        args=req.args,
                        kwargs=req.kwargs,
                        task_id=req.id,
                        countdown=countdown,
                        retries=retries + 1,
                        producer=producer,
                    )
                except Exception:
                    logger.warning("could not publish the retry of %s; requeued", req.id)
                    into[REQUEUE][req.id] = reason
                    errors.labels(task=self.name, kind="requeued").inc()
                    continue
                into[RETRIED][req.id] = reason
                errors.labels(task=self.name, kind="retry").inc()
                logger.info(
                    "Task %s[%s] retry: Retry in %ss: %s", self.name, req.id, countdown, reason
                )
        logger.warning("track batch: backend error, %d messages retried: %s", len(requests), reason)
