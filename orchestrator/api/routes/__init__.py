"""The ``/api/v1`` routes, one module per resource; each module's ``router`` joins the app."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.api.routes import (
    approvals,
    audit,
    breakers,
    cache,
    dlq,
    graph,
    me,
    report,
    runs,
    schedules,
    signals,
    steps,
    stream,
    workflows,
)

# stream before runs: /runs/stream must not be read as the run id "stream"
ROUTERS: list[APIRouter] = [
    stream.router,
    runs.router,
    steps.router,
    graph.router,
    signals.router,
    approvals.router,
    dlq.router,
    breakers.router,
    workflows.router,
    schedules.router,
    cache.router,
    audit.router,
    report.router,
    me.router,
]
