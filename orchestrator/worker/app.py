"""The orchestrator's Celery app, configured for at-least-once delivery.

JSON only, late acks, requeue when a worker is lost, prefetch of one: a message is only taken off
the broker for good once its step's result is in the state store. ``celery -A
orchestrator.worker.app`` (and Flower) use this app.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from orchestrator.settings import DEFAULT_EMBEDDED_BROKER_URL, Settings, get_settings
from orchestrator.urls import check_url
from orchestrator.worker.broker import transport_for


def celery_config(settings: Settings) -> dict[str, Any]:
    embedded = settings.embedded
    if settings.broker_url:
        check_url("ORCHESTRATOR_BROKER_URL", settings.broker_url, "redis://host:6379/0")
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if embedded:
        transport_options = {"polling_interval": 0.005}
    return {
        "broker_url": settings.broker_url or DEFAULT_EMBEDDED_BROKER_URL,
        "broker_transport": transport_for(settings.broker_url or ""),  # survives an outage (worker/broker.py)
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "worker_hijack_root_logger": False,
        "worker_consumer": "orchestrator.worker.guard:GuardedConsumer",  # one line for a body it cannot decode
        "imports": ["orchestrator.worker.tasks", *settings.task_module_list],
        # Beat reads the workflows' schedules from the state store (no celerybeat-schedule file).
        "beat_scheduler": "orchestrator.schedule.beat:StoreScheduler",
        "beat_schedule": {
            "orchestrator-reconcile": {
                "task": "orchestrator.reconcile",
                "schedule": settings.reconcile_interval_s,
            }
        },
    }


def create_app(settings: Settings | None = None) -> Celery:
    celery = Celery("orchestrator")
    celery.conf.update(celery_config(settings or get_settings()))
    return celery


app = create_app()
