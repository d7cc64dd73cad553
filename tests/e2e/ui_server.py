"""``orchestrator serve`` for the browser tests, as a subprocess on the port given: exactly what
``orchestrator serve --host 127.0.0.1 --port PORT`` runs, with the test suite's step modules importable."""

from __future__ import annotations

import sys

from orchestrator.api.server import serve
from orchestrator.settings import get_settings


def main(port: int) -> None:
    serve(get_settings(), "127.0.0.1", port)


if __name__ == "__main__":
    main(int(sys.argv[1]))
