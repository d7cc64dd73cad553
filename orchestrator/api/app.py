"""The ASGI app of ``orchestrator serve``: ``/metrics`` for Prometheus, and a ``/api/v1`` router
(with its OpenAPI document at ``/api/v1/openapi.json``) that the HTTP API's routes join."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from orchestrator.api.auth import require
from orchestrator.api.tokens import Token
from orchestrator.report.metrics import Breakers, StoreCollector
from orchestrator.store import Repository

API_PREFIX = "/api/v1"


def create_app(repo: Repository, breakers: Breakers, tokens: list[Token], metrics_cache_s: float) -> FastAPI:
    app = FastAPI(title="orchestrator", openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None)
    app.state.tokens = tokens
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(repo, breakers, metrics_cache_s))

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(APIRouter(), prefix=API_PREFIX)
    return app
