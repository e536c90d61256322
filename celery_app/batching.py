"""The worker's consumer of ``tasks.track`` messages: its own channel, its own prefetch.

Batching single ``track`` messages (see :mod:`tasks.batching`) only pays
when the worker holds hundreds of them unacknowledged at once, while every
other queue (``admin``, ``events``, ``maintenance``, ``tracking``) should
stay at prefetch 1 so that a busy or dying worker holds back as little as
possible. Celery applies one prefetch limit to all queues of a worker's task
consumer, so this bootstep takes the ``tracking.batch`` queue out of that
consumer and consumes it on a channel of its own with
``TRACKING_BATCH_PREFETCH`` (``basic_qos`` on RabbitMQ, the channel's QoS on
the Redis transport).

Messages it receives go through Celery's own task handler
(:meth:`celery.worker.consumer.Consumer.create_task_handler`): the task's
strategy decides what happens, so ``tasks.track`` (a batch task) buffers
them and any other task sent to this queue by mistake runs as usual.

The step is active only when the worker was asked to consume
``tracking.batch`` (the default: every queue; ``-Q`` chooses).

Consuming starts only when the worker's event loop is up, as for Celery's
own task consumer: a broker pushes a backlog the moment a queue is
consumed, and any blocking broker call made while the worker is still
starting (the remote-control step declares its exchange) delivers it. A
full batch handed to the prefork pool before the pool was wired to the
event loop used to stop the worker with "Unrecoverable error".
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from kombu.messaging import Consumer

from celery_app.celeryconfig import QUEUE_TRACK_BATCH


class BatchQueueConsumer(bootsteps.ConsumerStep):  # type: ignore[misc]  # Celery is untyped
    """Consume ``tracking.batch`` on a separate channel with the batch prefetch."""

    # Strategies are registered by the Tasks step; ours starts after it.
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        queues = parent.app.amqp.queues
        self.enabled = QUEUE_TRACK_BATCH in queues.consume_from
        self.queue = queues[QUEUE_TRACK_BATCH] if self.enabled else None
        if self.enabled:
            # Runs before the Tasks step builds the task consumer: it will
            # not consume this queue at the worker-wide prefetch.
            queues.deselect([QUEUE_TRACK_BATCH])
        self.parent = parent

    def start(self, c: Any) -> None:
        """Open the channel and build the consumer; consume now only without an event loop."""
        channel = c.connection.channel()
        self.consumers = self.get_consumers(channel)
        if c.hub is None:  # the blocking loop: the pool takes work at once
            self._consume()

    def register_with_event_loop(self, c: Any, hub: Any) -> None:
        """Called by Celery once the pool is on the event loop (on every consumer restart)."""
        self._consume()

    def _consume(self) -> None:
        for consumer in self.consumers or []:
            consumer.consume()  # kombu skips queues it already consumes

    def get_consumers(self, channel: Any) -> list[Any]:
        """One kombu consumer on the batch queue, this channel's prefetch set first."""
        if not self.enabled:
            return []
        from celery_app import runtime  # noqa: PLC0415 - settings of this worker

        channel.basic_qos(0, runtime.settings().batch_prefetch, False)
        return [
            Consumer(  # type: ignore[no-untyped-call]
                channel,
                queues=[self.queue],
                on_message=self.parent.create_task_handler(),
                accept=["json"],
                no_ack=False,
            )
        ]
