"""The Celery beat scheduler of ``orchestrator beat``: the schedules live in the state store.

Beat keeps sending its static entries (``beat_schedule``: the reconciler) the usual way, and every
``ORCHESTRATOR_BEAT_POLL_S`` it reads the schedules from the store and fires the due ticks
itself, each claimed in the transaction that starts its run. So a schedule registered, changed or
paused takes effect without restarting beat, any number of beats may run at once, and there is no
``celerybeat-schedule`` file: nothing is kept in the process that the store does not hold.

A store that cannot be reached is logged, and tried again at the next look; beat never exits
for it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from celery.beat import Scheduler

from orchestrator.runtime.engine import Engine
from orchestrator.settings import get_settings

log = logging.getLogger(__name__)
SCHEDULER = "orchestrator.schedule.beat:StoreScheduler"


class StoreScheduler(Scheduler):
    """Celery's in-memory scheduler for the static entries, plus a look at the store's schedules
    every ``poll_s`` seconds, between the entries' ticks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.poll_s = get_settings().beat_poll_s
        self._engine: Engine | None = None
        self._next_look = 0.0
        self._next_ticks: dict[Any, datetime] = {}
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.monotonic() >= self._next_look:
            self.look()
            self._next_look = time.monotonic() + self.poll_s
        delay = super().tick(*args, **kwargs)
        return max(0.0, min(delay, self._next_look - time.monotonic()))

    def look(self) -> None:
        """Fire what is due now; any failure is logged and the next look tries again."""
        from orchestrator.runtime.schedules import fire_due

        try:
            fire_due(self.engine(), cache=self._next_ticks)
        except Exception as exc:  # the store or the broker away, or a bug: beat must keep beating
            log.error("beat: schedules not checked (%s: %s); trying again in %gs", type(exc).__name__, exc, self.poll_s)

    def engine(self) -> Engine:
        if self._engine is None:
            from orchestrator.worker.connect import open_engine

            self._engine = open_engine()
        return self._engine

    @property
    def info(self) -> str:
        return f"    . schedules -> the state store, read every {self.poll_s:g}s"
