"""Starting ``orchestrator serve``: the bind check, the app wired to the configured store, uvicorn,
and with no broker configured (the embedded default) a worker in this process for its lifetime,
so runs submitted or repaired through the API make progress."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from orchestrator.api.tokens import Token, parse_tokens
from orchestrator.errors import UsageError
from orchestrator.settings import DEFAULT_METRICS_CACHE_S, LOOPBACK_HOSTS, Settings


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
    import uvicorn

    from orchestrator.api.app import create_app
    from orchestrator.runtime.breaker import Breakers
    from orchestrator.worker.connect import open_engine

    engine = open_engine(settings)
    registry = Breakers(engine.repo, settings.broker_url)
    app = create_app(engine.repo, registry.describe_all, tokens, DEFAULT_METRICS_CACHE_S, engine, registry)
    with _workers(settings):
        uvicorn.run(app, host=host, port=port, log_level="info")


def _workers(settings: Settings) -> AbstractContextManager[object]:
    """The embedded default's in-process worker; none when workers listen on a broker."""
    if not settings.embedded:
        return nullcontext()
    from orchestrator.worker.embedded import EmbeddedWorker

    return EmbeddedWorker()
