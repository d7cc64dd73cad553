"""``/api/v1`` routes: the report (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from orchestrator.api.deps import Store, Viewer
from orchestrator.definition.duration import parse_duration
from orchestrator.errors import UsageError
from orchestrator.report.compute import build_report
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
    try:
        since_s = parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"since: {exc}") from None
    found = build_report(store, since_s, workflow)
    if format == "json":
        return found
    return Response(render(found, format), media_type=MEDIA[format])
