"""``/api/v1`` routes: one step of a run (see docs/http-api.md): its detail, and deciding or
repairing it: approve, reject, skip, accept."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from orchestrator.api.deps import Body, Operator, Runtime, Store, Viewer, who
from orchestrator.runtime import approval, repair
from orchestrator.runtime.pages import MAX_ITEMS_PAGE, step_detail

router = APIRouter(tags=["steps"])
Comment = Annotated[str, Field(max_length=10_000)]


class Approve(Body):
    comment: Comment | None = None
    keyword: Annotated[str, Field(max_length=1000)] | None = None
    data: Any = None


class Reject(Body):
    comment: Annotated[str, Field(min_length=1, max_length=10_000)]


class Accept(Body):
    output: Any = Field(..., description="the step's output (checked against its output_schema)")


@router.get("/runs/{run_id}/steps/{step}", dependencies=[Viewer])
def show_step(
    run_id: str,
    step: str,
    store: Store,
    items_offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    items_limit: Annotated[int, Query(ge=1, le=MAX_ITEMS_PAGE)] = 100,
) -> dict[str, Any]:
    """The step's view with ``attempt_log``, ``inputs``, ``traceback`` and, for a foreach, a page of items."""
    return step_detail(store, run_id, step, items_offset, items_limit)


@router.post("/runs/{run_id}/steps/{step}/approve")
def approve(run_id: str, step: str, engine: Runtime, actor: Operator, body: Approve | None = None) -> dict[str, Any]:
    body = body or Approve()
    done = approval.decide(
        engine,
        run_id,
        step,
        who(actor, body),
        approval.APPROVED,
        comment=body.comment,
        keyword=body.keyword,
        data=body.data,
    )
    return done.as_json()


@router.post("/runs/{run_id}/steps/{step}/reject")
def reject(run_id: str, step: str, body: Reject, engine: Runtime, actor: Operator) -> dict[str, Any]:
    done = approval.decide(engine, run_id, step, who(actor, body), approval.REJECTED, comment=body.comment)
    return {"run_id": done.run_id, "step": done.step}


@router.post("/runs/{run_id}/steps/{step}/skip")
def skip(run_id: str, step: str, engine: Runtime, actor: Operator, body: Body | None = None) -> dict[str, Any]:
    done = repair.skip(engine, run_id, step, who(actor, body))
    return {"run_id": done.run_id, "step": step, "note": done.note}


@router.post("/runs/{run_id}/steps/{step}/accept")
def accept(run_id: str, step: str, body: Accept, engine: Runtime, actor: Operator) -> dict[str, Any]:
    done = repair.accept(engine, run_id, step, body.output, who(actor, body))
    return {"run_id": done.run_id, "step": step, "note": done.note}
