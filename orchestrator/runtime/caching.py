"""What people do to the step cache: list its entries, clear them (the middleware fills it)."""

from __future__ import annotations

import logging
from typing import Any

from orchestrator import audit
from orchestrator.errors import UsageError
from orchestrator.runtime.operations import Who
from orchestrator.store import Repository, now

log = logging.getLogger(__name__)


def cached_entries(repo: Repository, workflow: str | None, step: str | None, limit: int) -> list[dict[str, Any]]:
    """Entries newest first, with whether each has expired."""
    at = now()
    with repo.transaction() as tx:
        entries = tx.cache_entries(workflow, step, limit)
    return [{**e.view(), "expired": e.expires_at is not None and e.expires_at <= at} for e in entries]


def clear_cache(repo: Repository, workflow: str | None, step: str | None, who: Who) -> int:
    """Delete entries (every one, a workflow's, or one step's); how many went."""
    if step is not None and workflow is None:
        raise UsageError(
            "--step needs --workflow: step ids are only unique within a workflow",
            {"--step": "step", "--workflow": "workflow"},
        )
    with repo.transaction() as tx:
        gone = tx.clear_cache(workflow, step)
        if gone:
            target = "cache" + (f":{workflow}" if workflow else "") + (f"/{step}" if step else "")
            audit.record(tx, who, "cache.clear", target, {"workflow": workflow, "step": step, "cleared": gone})
    log.info("%s cleared %d cache entries (workflow %s, step %s): %s", who.by, gone, workflow, step, who.reason)
    return gone
