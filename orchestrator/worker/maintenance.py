"""Each worker's housekeeping thread: reconcile what was lost, every few seconds.

Started when a worker is ready (and by the embedded worker), stopped when it shuts down.
Reconciling is idempotent, so every worker may do it; the state store decides what is really
stale. The thread survives any error: a dead housekeeping thread would strand steps silently.
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


def reconcile_safely() -> None:
    """One reconciling pass; an error is logged, never raised (the next pass tries again)."""
    from orchestrator.runtime.reconciler import reconcile
    from orchestrator.worker.tasks import engine

    try:
        reconcile(engine())
    except OrchestratorError as exc:
        log.warning("maintenance: %s", exc.message)
    except Exception:  # a pool timeout, a driver error, a bug: log it whole and keep going
        log.exception("maintenance: reconciling failed; trying again next pass")


def _loop(interval: float) -> None:
    while not _stop.wait(interval):
        reconcile_safely()


def start() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    settings = get_settings()
    _stop.clear()
    interval = max(0.2, min(settings.reconcile_interval_s, settings.reconcile_stale_s / 3, settings.lease_s / 3))
    _thread = threading.Thread(target=_loop, args=(interval,), name="orchestrator-maintenance", daemon=True)
    _thread.start()


def stop() -> None:
    _stop.set()
    if _thread is not None and _thread is not threading.current_thread():
        _thread.join(10)


@signals.worker_ready.connect
def _start(**_: Any) -> None:
    start()


@signals.worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    stop()
