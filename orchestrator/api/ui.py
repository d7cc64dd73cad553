"""The web UI: static files shipped in the package, served at ``/`` (placeholder)."""

from __future__ import annotations

from fastapi import FastAPI


def mount_ui(app: FastAPI) -> None:
    return None
