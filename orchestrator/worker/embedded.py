"""The embedded default: a real Celery worker in this process, on a broker that needs no server.

Used by ``orchestrator run`` when no broker is configured: kombu's in-memory transport and a
thread pool, with SQLite for state. Messages go through Celery exactly as in production; nothing
runs in eager mode.
"""

from __future__ import annotations

import threading
from types import TracebackType

from celery.worker import WorkController
from celery.worker import state as worker_state

from orchestrator.worker import maintenance
from orchestrator.worker.app import app


class EmbeddedWorker:
    """A Celery worker on a background thread, for the lifetime of a ``with`` block."""

    def __init__(self, concurrency: int = 4) -> None:
        self.concurrency = concurrency
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._controller: WorkController | None = None

    def __enter__(self) -> EmbeddedWorker:
        import orchestrator.worker.tasks  # noqa: F401  (registers the tasks)

        app.set_current()
        self._controller = app.WorkController(
            app=app,
            pool="threads",
            concurrency=self.concurrency,
            hostname="embedded@localhost",
            loglevel="WARNING",
            ready_callback=lambda consumer: self._ready.set(),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self._thread = threading.Thread(target=self._controller.start, name="embedded-worker", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the embedded Celery worker did not start within 30 seconds")
        maintenance.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        maintenance.stop()
        worker_state.should_stop = 0
        # Celery's sync loop checks for shutdown between 2-second waits for a message, and waits
        # once more after the check fires: two no-op messages end both waits at once.
        for _ in range(2):
            app.send_task("celery.ping", queue=app.conf.task_default_queue)
        if self._thread is not None:
            self._thread.join(15)
        worker_state.should_stop = None
