"""An engine for the CLI and the Python client: the configured store, checked, with the Celery
transport, so what they decide is sent the way a worker sends it."""

from __future__ import annotations

from orchestrator.runtime.connect import open_repository
from orchestrator.runtime.engine import Engine
from orchestrator.settings import Settings, get_settings


def open_engine(settings: Settings | None = None) -> Engine:
    from orchestrator.worker.tasks import build_engine

    settings = settings or get_settings()
    return build_engine(settings, open_repository(settings))
