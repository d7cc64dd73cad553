"""Step messages published in one go: one kombu producer, one Redis pipeline for a whole batch.

Celery's ``apply_async`` (and a ``group`` of them) spends about 0.2 ms of Python per message on
options, routing and declaring the queue again, then makes a round trip to Redis for each. Here
each message is built by Celery's own message builder (``app.amqp.as_task_v2``) with the options
``send_task`` would give it, and published by ``Producer.publish`` inside ``Producer.batch()``
(kombu's Redis pipeline): the worker receives the same message, with the same headers and
properties, as from ``apply_async``. Only what ``batchable`` recognises takes this path; anything
else (another broker, publish signals or sent events, custom routes) keeps Celery's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task, signals
from kombu import Producer, Queue

from orchestrator.runtime.scheduler import Dispatch
from orchestrator.settings import DEFAULT_HARD_TIMEOUT_GRACE_S

# The options ``send_task_message`` takes itself; the others become message properties.
_SENDER_OPTIONS = frozenset(
    {
        "exchange",
        "routing_key",
        "queue",
        "event_dispatcher",
        "retry",
        "retry_policy",
        "serializer",
        "delivery_mode",
        "compression",
        "declare",
        "headers",
        "exchange_type",
        "timeout",
        "confirm_timeout",
    }
)
_BATCH_COMMANDS = 1_000


@dataclass(frozen=True)
class Route:
    """Where and how a task's messages go, worked out once per batch as ``send_task`` would."""

    queue: Queue
    delivery_mode: Any
    serializer: str
    compression: str | None
    properties: dict[str, Any]
    time_limits: tuple[Any, Any]


def batchable(app: Celery, task: Task) -> bool:
    """Whether ``publish`` sends what ``apply_async`` would: a Redis broker whose kombu batches
    publishes, the default routing to a direct exchange, no result to track, and nobody listening
    for publish signals or sent events (those fire per message, from Celery's path only)."""
    conf = app.conf
    return (
        str(conf.broker_url or "").startswith(("redis://", "rediss://"))
        and hasattr(Producer, "batch")
        and not conf.task_routes
        and not conf.task_send_sent_event
        and not conf.task_inherit_parent_priority
        and bool(task.ignore_result)
        and not signals.before_task_publish.receivers
        and not signals.after_task_publish.receivers
        and not signals.task_sent.receivers
        and _route(app, task).queue.exchange.type == "direct"
    )


def publish(app: Celery, task: Task, dispatches: Sequence[Dispatch], headers: dict[str, Any]) -> None:
    """Publish one step message per dispatch through one producer and one pipeline. Raises what
    the broker raised (kombu's ``BatchPublishError`` when a pipeline failed: delivery uncertain)."""
    route = _route(app, task)
    root_id, parent_id = _lineage(app)
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(route.queue)
        with producer.batch(max_size=_BATCH_COMMANDS):
            for d in dispatches:
                _publish_one(app, task, producer, route, d, headers, root_id, parent_id)


def _publish_one(
    app: Celery,
    task: Task,
    producer: Producer,
    route: Route,
    d: Dispatch,
    headers: dict[str, Any],
    root_id: str | None,
    parent_id: str | None,
) -> None:
    shown = monitoring(d)
    limits = time_limits(d.timeout)
    message = app.amqp.as_task_v2(
        d.dispatch_id,
        task.name,
        (d.step_run_id, d.dispatch_id),
        None,
        countdown=d.countdown or None,
        reply_to=app.thread_oid,
        time_limit=limits.get("time_limit", route.time_limits[0]),
        soft_time_limit=limits.get("soft_time_limit", route.time_limits[1]),
        root_id=root_id,
        parent_id=parent_id,
        shadow=shown.get("shadow"),
        ignore_result=True,
        argsrepr=shown.get("argsrepr"),
        kwargsrepr=shown.get("kwargsrepr"),
    )
    message_headers, properties, body, _ = message
    message_headers.update(headers)
    properties.update(route.properties)
    properties.update({k: v for k, v in shown.items() if k != "shadow"})
    producer.publish(
        body,
        exchange="",
        routing_key=route.queue.name,
        serializer=route.serializer,
        compression=route.compression,
        retry=False,
        delivery_mode=route.delivery_mode,
        headers=message_headers,
        **properties,
    )


def _route(app: Celery, task: Task) -> Route:
    """``send_task``'s options for ``task``: its own, routed; a direct exchange is published to
    as the anonymous exchange with the queue's name as routing key, as ``send_task_message`` does."""
    options = {k: v for k, v in task._get_exec_options().items() if v is not None}
    limits = (options.pop("time_limit", None), options.pop("soft_time_limit", None))
    options.pop("expires", None)
    routed = app.amqp.router.route(options, task.name, None, None, task)
    queue = routed.get("queue") or app.amqp.default_queue
    if isinstance(queue, str):
        queue = app.amqp.queues[queue]
    delivery_mode = routed.get("delivery_mode") or queue.exchange.delivery_mode or app.conf.task_default_delivery_mode
    return Route(
        queue=queue,
        delivery_mode=delivery_mode,
        serializer=routed.get("serializer") or app.conf.task_serializer,
        compression=routed.get("compression") or app.conf.task_compression,
        properties={k: v for k, v in routed.items() if k not in _SENDER_OPTIONS},
        time_limits=limits,
    )


def _lineage(app: Celery) -> tuple[str | None, str | None]:
    """The root and parent task ids ``send_task`` gives a message sent from inside a task."""
    parent = app.current_worker_task
    if not parent:
        return None, None
    return parent.request.root_id or parent.request.id, parent.request.id


def monitoring(d: Dispatch) -> dict[str, str]:
    """How Flower and the worker's log name a step message: ``workflow.step`` (Celery's ``shadow``
    name) and readable arguments (``argsrepr``/``kwargsrepr``) naming the run, the step, the item and
    the attempt. These ride in the headers; the body stays the two ids the task needs."""
    if d.label is None:
        return {}
    about: dict[str, object] = {"run": d.label.run_id, "step": d.label.step}
    if d.label.item_index is not None:
        about["item"] = d.label.item_index
    if d.label.attempt is not None:
        about["attempt"] = d.label.attempt
    return {
        "shadow": f"{d.label.workflow}.{d.label.step}",
        "argsrepr": repr((d.step_run_id, d.dispatch_id)),
        "kwargsrepr": repr(about),
    }


def time_limits(timeout: float | None) -> dict[str, float]:
    """A step's timeout as Celery time limits: the soft one raises inside the step (a failed attempt
    that follows the retry policy); the hard one, a little later, kills a step that ignores it."""
    if not timeout:
        return {}
    return {"soft_time_limit": timeout, "time_limit": timeout + DEFAULT_HARD_TIMEOUT_GRACE_S}
