"""``/api/v1`` routes: approvals waiting for a decision (see docs/http-api.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from orchestrator.api.deps import Store, Viewer
from orchestrator.runtime.views import approvals_view

router = APIRouter(tags=["approvals"])


@router.get("/approvals", dependencies=[Viewer])
def approvals(store: Store) -> list[dict[str, Any]]:
    """``approvals --json``: run, step, who may decide, since when, deadline."""
    return approvals_view(store)
