"""The ASGI app of ``orchestrator serve``: the REST API under ``/api/v1`` (OpenAPI at
``/api/v1/openapi.json``), live updates as server-sent events, the web UI at ``/`` and
``/metrics`` for Prometheus. Routes live in ``orchestrator.api.routes``, one module per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from orchestrator.api import errors
from orchestrator.api.auth import require
from orchestrator.api.deps import plain_path
from orchestrator.api.guard import Guard
from orchestrator.api.limits import BodyLimit
from orchestrator.api.live import Hub
from orchestrator.api.routes import ROUTERS
from orchestrator.api.tokens import Token
from orchestrator.report.metrics import Breakers, StoreCollector
from orchestrator.runtime.breaker import Breakers as BreakerRegistry
from orchestrator.runtime.engine import Engine
from orchestrator.settings import get_settings
from orchestrator.store import Repository

API_PREFIX = "/api/v1"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def create_app(
    repo: Repository,
    breakers: Breakers,
    tokens: list[Token],
    metrics_cache_s: float,
    engine: Engine | None = None,
    breaker_registry: BreakerRegistry | None = None,
    live_notify: bool | None = None,
) -> FastAPI:
    """The app over ``repo``; ``engine`` (default: one built from the settings, on ``repo``) is
    what actions decide and send their messages with, one for the app's lifetime;
    ``breaker_registry`` the breakers the routes show and reset (default: the configured ones);
    ``live_notify`` whether live updates LISTEN (default: ``ORCHESTRATOR_LIVE_NOTIFY``) or poll."""
    hub = Hub(repo, notify=get_settings().live_notify if live_notify is None else live_notify)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(
        title="orchestrator",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.tokens = tokens
    app.state.repo = repo
    app.state.breakers = breakers
    app.state.hub = hub
    app.state.engine = engine or _engine(repo)
    app.state.registry = breaker_registry or BreakerRegistry(repo, get_settings().broker_url)
    errors.install(app)
    # the guard runs inside the body limit (the body is read whole before it refuses anything)
    app.add_middleware(Guard, prefix=API_PREFIX, is_open=lambda: not app.state.tokens)
    app.add_middleware(BodyLimit, limit=lambda: get_settings().max_payload_bytes)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(repo, breakers, metrics_cache_s))

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(plain_path)])

    app.add_api_route(f"{API_PREFIX}/{{path:path}}", _unknown, methods=_METHODS, include_in_schema=False)
    from orchestrator.api.ui import mount_ui

    mount_ui(app)  # last: the UI's routes answer only what the API's did not
    return app


def _unknown(request: Request) -> None:
    """Under /api/v1, what no route answers: 405 for a known path, else 404 (never the UI)."""
    allowed = _allowed(request.scope["path"])
    if allowed:
        raise HTTPException(405, f"{request.method} is not allowed here", headers={"Allow": ", ".join(allowed)})
    raise HTTPException(404, f"no such route: {request.url.path[:200]}")


def _allowed(path: str) -> list[str]:
    """The methods the API's routes take at ``path`` (none: the path is unknown)."""
    inner = path[len(API_PREFIX) :]
    found: set[str] = set()
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(inner):
                found |= route.methods or set()
    return sorted(found)


def _engine(repo: Repository) -> Engine:
    from orchestrator.worker.tasks import build_engine

    return build_engine(get_settings(), repo)
