"""Bearer-token checks for the HTTP routes: the token's name is the actor."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request

from orchestrator.api.tokens import ROLES, Token


def identify(request: Request) -> Token | None:
    """The request's token; None when no token is configured (every request passes). 401 with
    ``WWW-Authenticate: Bearer`` when tokens are configured and none of them is given."""
    tokens: list[Token] = request.app.state.tokens
    if not tokens:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    found = None
    for token in tokens:  # every token is compared, in constant time: no timing tells which matched
        if hmac.compare_digest(token.secret.encode(), given.encode()) and scheme.lower() == "bearer":
            found = found or token
    if found is None:
        raise HTTPException(401, "a valid bearer token is needed", headers={"WWW-Authenticate": "Bearer"})
    return found


def require(role: str) -> Callable[[Request], str | None]:
    """A FastAPI dependency: the request's bearer token must hold ``role`` or a higher one; with no
    token configured (the server then listens on loopback only) every request passes."""

    def check(request: Request) -> str | None:
        token = identify(request)
        if token is None:
            return None
        if ROLES.index(token.role) < ROLES.index(role):
            raise HTTPException(403, f"{token.name} is a {token.role}: this needs {role}")
        return token.name

    return check
