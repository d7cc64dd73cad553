"""What every route is handed: the actor (from its token), the engine and the store of the app,
and the fields every action body shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.auth import require
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.settings import get_settings
from orchestrator.store import Repository

Name = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=2000)]
MAX_IDS = 1000  # ids one request may name


class Body(BaseModel):
    """An action body: a JSON object of known fields only; ``reason`` is recorded with the action."""

    model_config = ConfigDict(extra="forbid")

    reason: Text | None = None


def actor(role: str) -> Callable[..., str]:
    """A dependency: the name the action is done as, once the token is checked for ``role``."""
    check = require(role)

    def named(request: Request) -> str:
        return check(request) or get_settings().default_actor

    return named


def plain_path(request: Request) -> None:
    """A path naming a run, step, entry, workflow... with a NUL character names nothing that can
    exist (the store cannot even hold one): 404 before any route reads it."""
    if any("\x00" in value for value in request.path_params.values()):
        raise HTTPException(404, "no such object: the path holds a NUL character")


def who(name: str, body: Body | None) -> Who:
    return Who(name, body.reason if body is not None else None)


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def registry_of(request: Request) -> Breakers:
    registry: Breakers = request.app.state.registry
    return registry


def repo_of(request: Request) -> Repository:
    repo: Repository = request.app.state.repo
    return repo


Viewer = Depends(require("viewer"))
Operator = Annotated[str, Depends(actor("operator"))]
Admin = Annotated[str, Depends(actor("admin"))]
Store = Annotated[Repository, Depends(repo_of)]
Runtime = Annotated[Engine, Depends(engine_of)]
Registry = Annotated[Breakers, Depends(registry_of)]
