"""The web UI: static files shipped in the package (plain ES modules and CSS, no build step, no
CDN), served at ``/`` (the page) and ``/static/...`` (its assets).

Only regular files that resolve inside the static folder are served, with a content type from a
fixed list; anything else is a 404. Every answer carries a strict Content-Security-Policy: scripts,
styles and connections from this origin only, no inline script, nothing from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def static_file(relative: str, root: Path = STATIC_DIR) -> Path | None:
    """The file ``relative`` names inside ``root``, or None when it escapes the folder (``..``, an
    absolute path, a symlink pointing out), is not a regular file, or has a type not served."""
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    try:
        candidate = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
        return None
    if candidate.suffix not in CONTENT_TYPES:
        return None
    return candidate


def _serve(path: Path) -> Response:
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=HEADERS)


def _missing() -> Response:
    return JSONResponse({"error": "not found"}, status_code=404, headers=HEADERS)


def mount_ui(app: FastAPI) -> None:
    """``/`` answers the page; ``/static/{path}`` its assets. Hash routing (``#/runs/<id>``) keeps
    every other path free for the API."""

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _serve(STATIC_DIR / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return _serve(STATIC_DIR / "favicon.svg")

    @app.get("/static/{relative:path}", include_in_schema=False)
    def asset(relative: str) -> Response:
        found = static_file(relative)
        return _missing() if found is None else _serve(found)
