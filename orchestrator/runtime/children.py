"""Child runs that no step waits on any more: a parent that failed fast, a step skipped, accepted
or retried. They are cancelled right after the change that left them behind, and the reconciler's
sweep cancels any that a crash in between left running.
"""

from __future__ import annotations

import logging

from orchestrator.errors import NotFound, OrchestratorError, UsageError
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import cancel

log = logging.getLogger(__name__)
ORPHANED = "no step waits on this child run any more"


def stop_runs(engine: Engine, run_ids: list[str]) -> None:
    """Cancel these child runs (and theirs); one that already ended is left as it is."""
    for run_id in dict.fromkeys(run_ids):
        try:
            cancel(engine, run_id, reason=ORPHANED)
        except (UsageError, NotFound):
            continue  # it ended (or went) meanwhile: nothing to stop
        except OrchestratorError as exc:  # the reconciler's sweep tries again
            log.warning("could not cancel child run %s (%s); the reconciler will", run_id, exc.message)


def stop_orphans(engine: Engine, limit: int = 100) -> int:
    """The reconciler's sweep: cancel open child runs whose parent step no longer waits on them."""
    with engine.repo.transaction() as tx:
        orphans = tx.orphaned_children(limit)
    stop_runs(engine, orphans)
    return len(orphans)
