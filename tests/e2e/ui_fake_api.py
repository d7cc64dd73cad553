"""A stand-in for the REST routes and streams of docs/http-api.md that the web UI's browser tests
use, for this branch only: the real routes and the SSE hub are built in other branches.

``tests/e2e/ui_server.py`` installs it only when the app has no ``/api/v1/me`` route, so once the
branches are merged the browser tests run against the real routes and this module is unused.
It follows the spec's shapes, calls the same runtime functions the CLI does, and polls the store
for the streams (the real hub listens instead)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from orchestrator.api.auth import require
from orchestrator.dlq import queue
from orchestrator.errors import NotFound, OrchestratorError
from orchestrator.runtime import approval
from orchestrator.runtime.operations import Who
from orchestrator.runtime.views import RunWatch, approvals_view, run_view, runs_view
from orchestrator.settings import get_settings
from orchestrator.worker.connect import open_engine

viewer = APIRouter(dependencies=[Depends(require("viewer"))])
Payload = Annotated[dict[str, Any] | None, Body()]
operator = APIRouter()


def _who(request: Request, actor: str | None, body: dict[str, Any]) -> Who:
    return Who(actor or get_settings().default_actor, body.get("reason"))


@viewer.get("/me")
def me(request: Request) -> dict[str, Any]:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    for token in request.app.state.tokens:
        if token.secret == given:
            return {"name": token.name, "role": token.role}
    return {"name": get_settings().default_actor, "role": "admin"}


@viewer.get("/workflows")
def workflows(request: Request) -> list[dict[str, Any]]:
    with request.app.state.repo.transaction() as tx:
        rows, active = tx.registrations(), tx.active_versions()
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = found.setdefault(row["name"], {"name": row["name"], "version": active.get(row["name"]), "versions": 0})
        entry["versions"] += 1
    return list(found.values())


@viewer.get("/runs")
def runs(request: Request, workflow: str | None = None, status: str | None = None, limit: int = 50) -> dict[str, Any]:
    return {"runs": runs_view(request.app.state.repo, status, workflow, limit), "next_cursor": None}


@viewer.get("/runs/stream")
async def runs_stream(request: Request, workflow: str | None = None, status: str | None = None) -> StreamingResponse:
    repo = request.app.state.repo

    async def events() -> AsyncIterator[str]:
        seen: dict[str, str] = {}
        first = True
        while not await request.is_disconnected():
            for run in await asyncio.to_thread(runs_view, repo, status, workflow, 100):
                if seen.get(run["run_id"]) != run["status"]:
                    if not first:
                        yield _event("run", run)
                    seen[run["run_id"]] = run["status"]
            first = False
            await asyncio.sleep(0.4)

    return StreamingResponse(events(), media_type="text/event-stream")


@viewer.get("/runs/{run_id}")
def run(request: Request, run_id: str, attempts: bool = False) -> dict[str, Any]:
    return run_view(request.app.state.repo, run_id, with_attempts=attempts)


@viewer.get("/runs/{run_id}/stream")
async def run_stream(request: Request, run_id: str) -> StreamingResponse:
    repo = request.app.state.repo
    watch = await asyncio.to_thread(RunWatch, repo, run_id)

    async def events() -> AsyncIterator[str]:
        view = watch.view
        yield _event("run", view)
        before = {name: json.dumps(step, sort_keys=True) for name, step in view["steps"].items()}
        status = view["status"]
        while not await request.is_disconnected():
            await asyncio.sleep(0.3)
            view = await asyncio.to_thread(watch.poll)
            now = {name: json.dumps(step, sort_keys=True) for name, step in view["steps"].items()}
            changed = {name: view["steps"][name] for name, text in now.items() if before.get(name) != text}
            if changed or view["status"] != status:
                yield _event("change", {"run": {k: v for k, v in view.items() if k != "steps"}, "steps": changed})
            before, status = now, view["status"]
            if watch.done:
                yield _event("end", {"run_id": run_id, "status": status})
                return

    return StreamingResponse(events(), media_type="text/event-stream")


@viewer.get("/runs/{run_id}/steps/{step}")
def step(request: Request, run_id: str, step: str, items_offset: int = 0, items_limit: int = 100) -> dict[str, Any]:
    view = run_view(request.app.state.repo, run_id, with_attempts=True)
    if step not in view["steps"]:
        raise NotFound(f"run {run_id} has no step {step}")
    found = dict(view["steps"][step])
    with request.app.state.repo.transaction() as tx:
        row = tx.current_row(run_id, step)
        items = tx.items(run_id, step) if "items" in found else []
    found["inputs"] = row.inputs if row is not None else None
    found["traceback"] = row.traceback if row is not None else None
    if "items" in found:
        page = items[items_offset : items_offset + min(items_limit, 500)]
        found["item_list"] = [
            {
                "index": i.item_index,
                "status": str(i.status),
                "attempts": i.attempts,
                "output": i.output,
                "error": i.error,
            }
            for i in page
        ]
    return found


@viewer.get("/approvals")
def approvals(request: Request) -> list[dict[str, Any]]:
    return approvals_view(request.app.state.repo)


@viewer.get("/dlq")
def dlq(request: Request, status: str | None = None, workflow: str | None = None, limit: int = 50) -> Any:
    return queue.list_entries(request.app.state.repo, status or None, workflow or None, limit)


@viewer.get("/dlq/{entry_id}")
def dlq_entry(request: Request, entry_id: str) -> Any:
    return queue.show(request.app.state.repo, entry_id)


@viewer.get("/workflows/{name}/versions")
def versions(request: Request, name: str) -> Any:
    from orchestrator.runtime.versions import versions_view

    return versions_view(request.app.state.repo, name)


@viewer.get("/workflows/{name}/diff")
def diff(request: Request, name: str, from_: str = Query(alias="from"), to: str = Query()) -> Any:
    from orchestrator.runtime.versions import diff as versions_diff

    before, after, text = versions_diff(request.app.state.repo, name, from_, to)
    return {"name": name, "from": before, "to": after, "diff": text}


@viewer.get("/schedules")
def schedules(request: Request) -> Any:
    from orchestrator.runtime.schedules import schedules_view

    return schedules_view(request.app.state.repo)


@viewer.get("/breakers")
def breakers(request: Request) -> Any:
    return request.app.state.breakers()


@viewer.get("/audit")
def audit(request: Request, limit: int = 50) -> Any:
    from orchestrator.audit import trail

    return trail.list_records(request.app.state.repo, None, None, None, None, limit)


@viewer.get("/report")
def report(request: Request, since: str = "7d", workflow: str | None = None) -> Any:
    from orchestrator.definition.duration import parse_duration
    from orchestrator.report.compute import build_report

    return json.loads(
        json.dumps(build_report(request.app.state.repo, parse_duration(since), workflow or None), default=str)
    )


@operator.post("/runs/{run_id}/steps/{step}/approve")
def approve(request: Request, run_id: str, step: str, body: Payload = None) -> Any:
    body = body or {}
    done = approval.decide(
        open_engine(),
        run_id,
        step,
        _who(request, _actor(request), body),
        "approved",
        comment=body.get("comment"),
        keyword=body.get("keyword"),
        data=body.get("data"),
    )
    return {
        "run_id": done.run_id,
        "step": step,
        "approvals": done.approvals,
        "required": done.required,
        "ended": done.ended,
    }


@operator.post("/dlq/replay")
def replay(request: Request, body: Payload = None) -> Any:
    body = body or {}
    done = queue.replay(open_engine(), body.get("ids", []), body.get("inputs"), _who(request, _actor(request), body))
    return {"replayed": done.entries, "runs": list(dict.fromkeys(done.runs)), "refused": done.refused}


@operator.post("/workflows/{name}/activate")
def activate(request: Request, name: str, body: Payload = None) -> Any:
    from dataclasses import asdict

    from orchestrator.runtime.versions import activate as activate_version

    body = body or {}
    who = _who(request, require("admin")(request), body)
    return asdict(activate_version(open_engine(), name, body["version"], who))


@operator.post("/schedules/{workflow}/{name}/{what}")
def schedule_action(request: Request, workflow: str, name: str, what: str, body: Payload = None) -> Any:
    from orchestrator.runtime import schedules as runtime

    who = _who(request, require("admin")(request), body or {})
    full = f"{workflow}/{name}"
    if what == "pause":
        return {"schedule": full, "changed": runtime.pause(open_engine(), full, who)}
    if what == "resume":
        return {"schedule": full, "changed": runtime.resume(open_engine(), full, who)}
    raise NotFound(f"no action {what}")


def _actor(request: Request) -> str | None:
    return require("operator")(request)


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def install(app: FastAPI) -> None:
    """Add the stand-in routes and the spec's error answers (``{"error"}``) to ``app``."""

    @app.exception_handler(OrchestratorError)
    async def refused(_: Request, exc: OrchestratorError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFound) else 409
        return JSONResponse({"error": str(exc)}, status_code=code)

    app.include_router(viewer, prefix="/api/v1")
    app.include_router(operator, prefix="/api/v1")
