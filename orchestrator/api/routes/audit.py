"""``/api/v1`` routes: the audit trail (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from orchestrator import audit as trail
from orchestrator.api.deps import Store, Viewer
from orchestrator.settings import DEFAULT_AUDIT_LIST_LIMIT

router = APIRouter(tags=["audit"])
Filter = Annotated[str | None, Query(max_length=200)]
MAX_LIST = 500


@router.get("/audit", dependencies=[Viewer])
def list_records(
    store: Store,
    run: Filter = None,
    actor: Filter = None,
    action: Filter = None,
    since: Annotated[str | None, Query(max_length=20, description="a duration: 7d, 12h")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = DEFAULT_AUDIT_LIST_LIMIT,
) -> list[dict[str, Any]]:
    """``audit list --json``: records, newest first."""
    return trail.list_records(store, run, actor, action, since, limit, option="since")


@router.get("/audit/verify", dependencies=[Viewer])
def verify(store: Store) -> dict[str, Any]:
    """``audit verify --json``: whether the chain holds, else the first record changed, removed or inserted."""
    return trail.verify(store).as_json()
