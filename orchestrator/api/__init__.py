"""The HTTP side: an ASGI app (FastAPI on uvicorn) serving the ``/api/v1`` routes, live updates,
the web UI and ``/metrics``; a thin door onto the same runtime operations as the CLI."""
