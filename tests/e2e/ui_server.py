"""``orchestrator serve`` for the browser tests, as a subprocess on the port given.

With the REST routes in the app (once the API branches are merged) this is exactly what
``orchestrator serve --host 127.0.0.1 --port PORT`` runs. Until then it builds the same app and adds
the test stand-in for the routes the UI calls (``tests/e2e/ui_fake_api.py``)."""

from __future__ import annotations

import sys

from orchestrator.api.app import create_app
from orchestrator.api.server import serve
from orchestrator.api.tokens import parse_tokens
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.connect import open_repository
from orchestrator.settings import DEFAULT_METRICS_CACHE_S, get_settings


def has_api_routes() -> bool:
    from orchestrator.api.routes import ROUTERS

    return any(getattr(route, "path", None) == "/me" for router in ROUTERS for route in router.routes)


def main(port: int) -> None:
    settings = get_settings()
    if has_api_routes():
        serve(settings, "127.0.0.1", port)
        return
    import uvicorn

    from tests.e2e.ui_fake_api import install

    print("ui_server: the REST routes are not in this branch: using the test stand-in", flush=True)
    repo = open_repository(settings)
    registry = Breakers(repo, settings.broker_url)
    tokens = parse_tokens(settings.api_tokens)
    app = create_app(repo, lambda: [registry.describe(n) for n in registry.names()], tokens, DEFAULT_METRICS_CACHE_S)
    install(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]))
