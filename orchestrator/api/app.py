"""The ASGI app of ``orchestrator serve``: the REST API under ``/api/v1`` (OpenAPI at
``/api/v1/openapi.json``), live updates as server-sent events, the web UI at ``/`` and
``/metrics`` for Prometheus. Routes live in ``orchestrator.api.routes``, one module per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from orchestrator.api.auth import require
from orchestrator.api.live import Hub
from orchestrator.api.routes import ROUTERS
from orchestrator.api.tokens import Token
from orchestrator.report.metrics import Breakers, StoreCollector
from orchestrator.store import Repository

API_PREFIX = "/api/v1"


def create_app(repo: Repository, breakers: Breakers, tokens: list[Token], metrics_cache_s: float) -> FastAPI:
    hub = Hub(repo)

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
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(repo, breakers, metrics_cache_s))

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    from orchestrator.api.ui import mount_ui

    mount_ui(app)  # last: the UI's routes answer only what the API's did not
    return app
