"""``/api/v1`` routes: runs (see docs/http-api.md): list, submit, one run, its history, and what
operators do to it: cancel, pause, resume, retry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field

from orchestrator.api.deps import Body, Name, Operator, Runtime, Store, Viewer, who
from orchestrator.runtime import operations, repair
from orchestrator.runtime.pages import MAX_RUNS_PAGE, runs_page
from orchestrator.runtime.views import history_view, run_view
from orchestrator.status import RunStatus
from orchestrator.store.pages import RunFilter

router = APIRouter(tags=["runs"])


class Submit(Body):
    workflow: Annotated[str, Field(min_length=1, max_length=300, description="a registered name, or name@version")]
    inputs: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Name | None = None


class Retry(Body):
    step: Name | None = None
    from_: Name | None = Field(None, alias="from")


@router.get("/runs", dependencies=[Viewer])
def list_runs(
    store: Store,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    status: RunStatus | None = None,
    parent: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RUNS_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> dict[str, Any]:
    """Runs, newest first, a page at a time: pass ``cursor=<next_cursor>`` for the next page."""
    where = RunFilter(str(status) if status else None, workflow, parent, since, until)
    return runs_page(store, where, limit, cursor)


@router.post("/runs", status_code=201)
def submit(body: Submit, engine: Runtime, actor: Operator, response: Response) -> dict[str, Any]:
    """Start a run of a registered workflow; the same idempotency key gives back the same run (200)."""
    plan = operations.registered_plan(engine, body.workflow)
    done = operations.submit(engine, plan, body.inputs, body.idempotency_key, who(actor, body), via="api")
    if not done.created:
        response.status_code = 200
    return {"run_id": done.run_id, "created": done.created}


@router.get("/runs/{run_id}", dependencies=[Viewer])
def show_run(run_id: str, store: Store, attempts: bool = False) -> dict[str, Any]:
    """``status --json``; ``attempts=true`` adds each step's ``attempt_log``."""
    return run_view(store, run_id, with_attempts=attempts)


@router.get("/runs/{run_id}/history", dependencies=[Viewer])
def history(run_id: str, store: Store) -> list[dict[str, Any]]:
    """The run's event log, oldest first."""
    return history_view(store, run_id)


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: str, engine: Runtime, actor: Operator, body: Body | None = None) -> dict[str, Any]:
    """No new step starts; running steps are revoked; the run ends cancelled (``already``: it was)."""
    return operations.cancel(engine, run_id, who(actor, body)).as_json()


@router.post("/runs/{run_id}/pause")
def pause(run_id: str, engine: Runtime, actor: Operator, body: Body | None = None) -> dict[str, Any]:
    done = repair.pause(engine, run_id, who(actor, body))
    return {"run_id": done.run_id, "status": str(done.status)}


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, engine: Runtime, actor: Operator, body: Body | None = None) -> dict[str, Any]:
    done = repair.resume(engine, run_id, who(actor, body))
    return {"run_id": done.run_id, "status": str(done.status), "dispatched": len(done.dispatches)}


@router.post("/runs/{run_id}/retry")
def retry(run_id: str, engine: Runtime, actor: Operator, body: Retry | None = None) -> dict[str, Any]:
    """Run an ended run again from its failed steps, or only ``step``, or ``from`` a step on."""
    body = body or Retry()
    done = repair.retry(engine, run_id, who(actor, body), body.step, body.from_)
    return {"run_id": done.run_id, "steps": done.steps}
