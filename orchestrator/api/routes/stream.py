"""``/api/v1`` routes: the live streams of server-sent events (see docs/http-api.md, "Live updates")."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from orchestrator.api.auth import require
from orchestrator.api.channels import Subscriber
from orchestrator.api.live import Hub, Stopped
from orchestrator.errors import NotFound, StateStoreError
from orchestrator.status import RunStatus

router = APIRouter()
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_ERROR = {"content": {"application/json": {"example": {"error": "..."}}}}
_EVENTS: dict[int | str, dict[str, object]] = {
    200: {"description": "server-sent events (docs/http-api.md, Live updates)", "content": {"text/event-stream": {}}}
}


class EventStream(StreamingResponse):
    """A subscriber's events as ``text/event-stream``; however the response ends (the run ended,
    the client went away, the subscriber was dropped), the hub forgets the subscriber."""

    def __init__(self, hub: Hub, subscriber: Subscriber) -> None:
        super().__init__(subscriber.events(hub.ping_s), media_type="text/event-stream", headers=_HEADERS)
        self.hub, self.subscriber = hub, subscriber

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.leave(self.subscriber)


@router.get(
    "/runs/stream",
    dependencies=[Depends(require("viewer"))],
    response_class=StreamingResponse,
    responses={
        **_EVENTS,
        400: {"description": "an unknown status", **_ERROR},
        503: {"description": "the server is stopping", **_ERROR},
    },
)
async def runs_stream(request: Request, workflow: str | None = None, status: str | None = None) -> Response:
    """A run summary each time a run matching the filters is created or changes status."""
    if status is not None and status not in {str(s) for s in RunStatus}:
        statuses = ", ".join(str(s) for s in RunStatus)
        return JSONResponse({"error": f"status {status!r} is not one of {statuses}"}, status_code=400)
    hub: Hub = request.app.state.hub
    try:
        return EventStream(hub, hub.follow_list(workflow, status))
    except Stopped as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)


@router.get(
    "/runs/{run_id}/stream",
    dependencies=[Depends(require("viewer"))],
    response_class=StreamingResponse,
    responses={
        **_EVENTS,
        404: {"description": "no such run", **_ERROR},
        503: {"description": "the state store cannot be read, or the server is stopping", **_ERROR},
    },
)
async def run_stream(request: Request, run_id: str) -> Response:
    """The run's full view, then each change; after the run has ended, ``end``."""
    hub: Hub = request.app.state.hub
    try:
        subscriber = await hub.follow_run(run_id)
    except NotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except (StateStoreError, Stopped) as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    return EventStream(hub, subscriber)
