"""Starting ``orchestrator serve``: the bind check, the app wired to the configured store, uvicorn,
and with no broker configured (the embedded default) a worker in this process for its lifetime,
so runs submitted or repaired through the API make progress."""

from __future__ import annotations

import socket
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from orchestrator.api.tokens import Token, parse_tokens
from orchestrator.errors import UsageError
from orchestrator.settings import DEFAULT_METRICS_CACHE_S, DEFAULT_SHUTDOWN_GRACE_S, LOOPBACK_HOSTS, Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def check_bind(host: str, tokens: list[Token]) -> None:
    """With no API token configured the server is open to whoever can reach it: loopback only."""
    if not tokens and host not in LOOPBACK_HOSTS:
        raise UsageError(
            f"refusing to listen on {host} with no ORCHESTRATOR_API_TOKENS configured: "
            "set tokens, or bind 127.0.0.1 or ::1"
        )


def serve(settings: Settings, host: str, port: int) -> None:
    tokens = parse_tokens(settings.api_tokens)
    check_bind(host, tokens)
    from orchestrator.api.app import create_app
    from orchestrator.runtime.breaker import Breakers
    from orchestrator.worker.connect import open_engine

    engine = open_engine(settings)
    registry = Breakers(engine.repo, settings.broker_url)
    app = create_app(engine.repo, registry.describe_all, tokens, DEFAULT_METRICS_CACHE_S, engine, registry)
    with _workers(settings):
        run_server(app, host, port)


def _workers(settings: Settings) -> AbstractContextManager[object]:
    """The embedded default's in-process worker; none when workers listen on a broker."""
    if not settings.embedded:
        return nullcontext()
    from orchestrator.worker.embedded import EmbeddedWorker

    return EmbeddedWorker()


def run_server(app: FastAPI, host: str, port: int) -> None:
    """uvicorn, but stopping ends the open event streams first: they never end by themselves, and
    uvicorn waits for every open response before it stops (at most DEFAULT_SHUTDOWN_GRACE_S)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await app.state.hub.stop()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_graceful_shutdown=DEFAULT_SHUTDOWN_GRACE_S
    )
    Server(config).run()
