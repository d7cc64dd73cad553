"""``/api/v1`` routes: the dead-letter queue (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from orchestrator import dlq
from orchestrator.api.deps import MAX_IDS, Body, Name, Operator, Runtime, Store, Viewer, who

router = APIRouter(tags=["dlq"])
Status = Literal["open", "replayed", "discarded", "resolved"]
MAX_LIST = 500


class Replay(Body):
    ids: Annotated[list[Name], Field(max_length=MAX_IDS)] = Field(default_factory=list)
    all: bool = False
    workflow: Name | None = None
    inputs: dict[str, Any] | None = Field(None, description="corrected inputs, with named ids only")


class Discard(Body):
    ids: Annotated[list[Name], Field(min_length=1, max_length=MAX_IDS)]


@router.get("/dlq", dependencies=[Viewer])
def list_entries(
    store: Store,
    status: Status | None = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
) -> list[dict[str, Any]]:
    """``dlq list --json``: entries, newest first."""
    return dlq.list_entries(store, status, workflow, limit)


@router.get("/dlq/{entry_id}", dependencies=[Viewer])
def show(entry_id: str, store: Store) -> dict[str, Any]:
    """``dlq show --json``: the exact inputs, the error and its traceback."""
    return dlq.show(store, entry_id)


@router.post("/dlq/replay")
def replay(body: Replay, engine: Runtime, actor: Operator) -> dict[str, Any]:
    """Re-execute failed steps (named ids, all or nothing; or ``all``, in batches); their runs resume."""
    ids = list(dict.fromkeys(body.ids))  # an id named twice is replayed once
    done = dlq.replay_selected(engine, ids, body.all, body.workflow, body.inputs, who(actor, body))
    return done.as_json()


@router.post("/dlq/discard")
def discard(body: Discard, store: Store, actor: Operator) -> dict[str, int]:
    """Mark entries discarded (all or nothing; an id named twice counts once)."""
    return {"discarded": dlq.discard(store, body.ids, who(actor, body))}
