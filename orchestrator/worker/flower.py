"""Flower on the orchestrator's Celery app, never open to the network without credentials.

Flower reads ``FLOWER_BASIC_AUTH`` (``user:password[,user:password]``) itself; this module only
decides where it may listen: anywhere with credentials, loopback only without them (Flower's own
default is every interface)."""

from __future__ import annotations

import os

from orchestrator.errors import UsageError
from orchestrator.settings import DEFAULT_FLOWER_ADDRESS, LOOPBACK_HOSTS


def flower_argv(address: str | None, extra: list[str]) -> list[str]:
    """The ``celery flower`` arguments, after checking that an open bind has credentials."""
    address = address or os.environ.get("FLOWER_ADDRESS") or DEFAULT_FLOWER_ADDRESS
    credentials = os.environ.get("FLOWER_BASIC_AUTH") or any(a.startswith("--basic-auth") for a in extra)
    if not credentials and address not in LOOPBACK_HOSTS:
        raise UsageError(
            f"refusing to start Flower on {address} without credentials: set FLOWER_BASIC_AUTH=user:password, "
            "or bind 127.0.0.1"
        )
    return ["flower", f"--address={address}", *extra]
