"""Starting ``orchestrator serve``: the bind check, the app wired to the configured store, uvicorn."""

from __future__ import annotations

from orchestrator.api.tokens import Token, parse_tokens
from orchestrator.errors import UsageError
from orchestrator.settings import DEFAULT_METRICS_CACHE_S, DEFAULT_SHUTDOWN_GRACE_S, LOOPBACK_HOSTS, Settings


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
    from orchestrator.runtime.connect import open_repository

    repo = open_repository(settings)
    registry = Breakers(repo, settings.broker_url)
    app = create_app(repo, lambda: [registry.describe(n) for n in registry.names()], tokens, DEFAULT_METRICS_CACHE_S)
    # open event streams never end by themselves: stopping waits this long for them, then ends them
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=DEFAULT_SHUTDOWN_GRACE_S)
