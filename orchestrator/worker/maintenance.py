"""Each worker's housekeeping thread: heartbeat this host, and reconcile what was lost.

Started when a worker is ready, stopped when it shuts down. Reconciling is idempotent, so every
worker may do it; the state store decides what is really stale.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals

from orchestrator.errors import OrchestratorError
from orchestrator.settings import get_settings

log = logging.getLogger(__name__)
_stop = threading.Event()
_thread: threading.Thread | None = None


def _loop(interval: float) -> None:
    from orchestrator.worker.tasks import runtime, send

    settings = get_settings()
    while not _stop.is_set():
        try:
            rt = runtime()
            rt.heartbeat()
            send(rt.reconcile(settings.reconcile_stale_s, settings.reconcile_stale_s))
        except OrchestratorError as exc:
            log.warning("maintenance: %s", exc.message)
        _stop.wait(interval)


@signals.worker_ready.connect
def _start(**_: Any) -> None:
    global _thread
    settings = get_settings()
    if settings.embedded or _thread is not None:
        return
    _stop.clear()
    interval = max(0.2, min(settings.reconcile_interval_s, settings.reconcile_stale_s / 3))
    _thread = threading.Thread(target=_loop, args=(interval,), name="orchestrator-maintenance", daemon=True)
    _thread.start()


@signals.worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    _stop.set()
