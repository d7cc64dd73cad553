"""``/api/v1`` routes: signals and events (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from orchestrator.api.deps import Body, Name, Operator, Runtime, who
from orchestrator.runtime.emit import emit as emit_event
from orchestrator.runtime.signal import signal as send_signal

router = APIRouter(tags=["signals"])
Event = Annotated[str, Field(min_length=1, max_length=200, description="letters, digits and . _ : / -")]


class Signal(Body):
    event: Event
    key: Annotated[str, Field(max_length=1000)] | None = None
    run_id: Name | None = None
    data: Any = None
    id: Name | None = None


class Emit(Body):
    event: Event
    data: Any = None
    id: Annotated[str, Field(min_length=1, max_length=150)] | None = None


@router.post("/signals")
def signal(body: Signal, engine: Runtime, actor: Operator) -> dict[str, Any]:
    """Complete the steps waiting on ``event`` and ``key``, or keep the signal for one that waits later."""
    return send_signal(engine, body.event, body.key, body.data, body.run_id, who(actor, body), body.id).as_json()


@router.post("/events")
def emit(body: Emit, engine: Runtime, actor: Operator) -> dict[str, Any]:
    """Start the workflows whose ``on`` names the event."""
    return emit_event(engine, body.event, body.data, who(actor, body), body.id).as_json()
