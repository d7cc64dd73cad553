"""``/api/v1`` routes: registered workflows and their versions (see docs/http-api.md)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field

from orchestrator.api.deps import Admin, Body, Runtime, Store, Viewer, who
from orchestrator.definition import plan_document
from orchestrator.runtime import versions

router = APIRouter(tags=["workflows"])
Ref = Annotated[str, Query(min_length=1, max_length=64)]


class Register(Body):
    definition: dict[str, Any] | Annotated[str, Field(max_length=1024 * 1024)] = Field(
        ..., description="the workflow as a JSON object, or as YAML or JSON text"
    )
    activate: bool = True


class Activate(Body):
    version: Annotated[str, Field(min_length=1, max_length=64)]


@router.get("/workflows", dependencies=[Viewer])
def list_workflows(store: Store) -> list[dict[str, Any]]:
    """``workflows list --json``: registered workflows, with their active version."""
    return versions.workflows_view(store)


@router.post("/workflows", status_code=201)
def register(body: Register, engine: Runtime, actor: Admin, response: Response) -> dict[str, Any]:
    """Validate the definition and store it as a version of its workflow (201 when it is new)."""
    done = versions.register(engine, plan_document(body.definition), who(actor, body), activate=body.activate)
    if not done.created:
        response.status_code = 200
    return asdict(done)


@router.get("/workflows/{name}", dependencies=[Viewer])
def show(name: str, store: Store, version: Ref | None = None) -> dict[str, Any]:
    """``workflows show --json``: the active definition, or the version given (or a unique prefix)."""
    return versions.show_view(store, name, version)


@router.get("/workflows/{name}/versions", dependencies=[Viewer])
def list_versions(name: str, store: Store) -> list[dict[str, Any]]:
    return versions.versions_view(store, name)


@router.get("/workflows/{name}/diff", dependencies=[Viewer])
def diff(
    name: str,
    store: Store,
    from_: Annotated[str, Query(alias="from", min_length=1, max_length=64)],
    to: Ref,
) -> dict[str, Any]:
    """``workflows diff --json``: a unified diff of two versions' definitions."""
    return versions.diff_view(store, name, from_, to)


@router.post("/workflows/{name}/activate")
def activate(name: str, body: Activate, engine: Runtime, actor: Admin) -> dict[str, Any]:
    return asdict(versions.activate(engine, name, body.version, who(actor, body)))


@router.post("/workflows/{name}/rollback")
def rollback(name: str, engine: Runtime, actor: Admin, body: Body | None = None) -> dict[str, Any]:
    return asdict(versions.rollback(engine, name, who(actor, body)))
