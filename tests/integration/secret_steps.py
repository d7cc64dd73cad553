"""Steps that use a secret: one returns what it can say without it, one fails quoting it."""

from __future__ import annotations

from typing import Any


def check(token: str, header: str, note: str = "") -> dict[str, Any]:
    """Proves the function got the value (its length and its prefix), without returning it."""
    return {"length": len(token), "bearer": header.startswith("Bearer ") and header[7:] == token, "note": note}


def leak(token: str) -> None:
    raise ValueError(f"the service refused the token {token!r} (token={token})")


def give_back(token: str) -> dict[str, str]:
    """A careless step: returns the secret it was given."""
    return {"token": token, "said": f"the token is {token}"}
