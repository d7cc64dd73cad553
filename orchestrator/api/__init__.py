"""The HTTP side: an ASGI app (FastAPI on uvicorn) serving ``/metrics`` now, and the ``/api/v1``
routes and web UI as they arrive."""
