"""``/api/v1`` routes: the report (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from orchestrator.api.deps import Store, Viewer
from orchestrator.report.compute import build_report, since_seconds
from orchestrator.report.formats import render

router = APIRouter(tags=["report"])
MEDIA = {"csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}


@router.get("/report", dependencies=[Viewer], response_model=None)
def report(
    store: Store,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str, Query(max_length=20, description="how far back: 30m, 12h, 7d")] = "7d",
    format: Literal["json", "csv", "html"] = "json",
) -> dict[str, Any] | Response:
    """Runs, success rates, step durations (p50/p95), retries, queue waits and the bottleneck."""
    found = build_report(store, since_seconds(since, "since"), workflow)
    if format == "json":
        return found
    return Response(render(found, format), media_type=MEDIA[format])
