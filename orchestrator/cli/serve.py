"""``orchestrator serve``: the HTTP server (the API, the web UI and ``/metrics``)."""

from __future__ import annotations

import click

from orchestrator.api.server import serve as start
from orchestrator.settings import DEFAULT_SERVE_HOST, DEFAULT_SERVE_PORT, get_settings


@click.command()
@click.option("--host", default=DEFAULT_SERVE_HOST, show_default=True, help="Where to listen.")
@click.option("--port", default=DEFAULT_SERVE_PORT, show_default=True, type=click.IntRange(0, 65535))
def serve(host: str, port: int) -> None:
    """The HTTP API, the web UI and /metrics; with no ORCHESTRATOR_API_TOKENS, loopback only."""
    start(get_settings(), host, port)
