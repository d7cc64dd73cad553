"""``orchestrator serve`` for the browser tests, as a subprocess: the same app ``serve`` builds, on
the port given. Until the REST routes are merged into this branch it adds the test stand-in
(``tests/e2e/ui_fake_api.py``); with them it adds nothing."""

from __future__ import annotations

import sys

import uvicorn

from orchestrator.api.app import create_app
from orchestrator.api.tokens import parse_tokens
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.connect import open_repository
from orchestrator.settings import DEFAULT_METRICS_CACHE_S, get_settings


def main(port: int) -> None:
    settings = get_settings()
    repo = open_repository(settings)
    registry = Breakers(repo, settings.broker_url)
    tokens = parse_tokens(settings.api_tokens)
    app = create_app(repo, lambda: [registry.describe(n) for n in registry.names()], tokens, DEFAULT_METRICS_CACHE_S)
    if not any(getattr(route, "path", None) == "/api/v1/me" for route in app.routes):
        from tests.e2e.ui_fake_api import install

        print("ui_server: the REST routes are not in this branch: using the test stand-in", flush=True)
        install(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]))
