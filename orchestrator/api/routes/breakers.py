"""``/api/v1`` routes: circuit breakers (see docs/http-api.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from orchestrator.api.deps import Admin, Body, Registry, Viewer, who

router = APIRouter(tags=["breakers"])


@router.get("/breakers", dependencies=[Viewer])
def list_breakers(registry: Registry) -> list[dict[str, Any]]:
    """``breakers list --json``: every breaker that has been used."""
    return registry.describe_all()


@router.post("/breakers/{name}/reset")
def reset(name: str, registry: Registry, actor: Admin, body: Body | None = None) -> dict[str, Any]:
    """Close a breaker by hand; answers it as ``breakers list`` shows it."""
    return registry.reset_known(name, who(actor, body))
