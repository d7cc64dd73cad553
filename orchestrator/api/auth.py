"""Bearer-token checks for the HTTP routes: the token's name is the actor."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request

from orchestrator.api.tokens import ROLES, Token


def require(role: str) -> Callable[[Request], str | None]:
    """A FastAPI dependency: the request's bearer token must hold ``role`` or a higher one; with no
    token configured (the server then listens on loopback only) every request passes."""

    def check(request: Request) -> str | None:
        tokens: list[Token] = request.app.state.tokens
        if not tokens:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        for token in tokens:
            if scheme.lower() == "bearer" and hmac.compare_digest(token.secret.encode(), given.encode()):
                if ROLES.index(token.role) < ROLES.index(role):
                    raise HTTPException(403, f"{token.name} is a {token.role}: this needs {role}")
                return token.name
        raise HTTPException(401, "a valid bearer token is needed", headers={"WWW-Authenticate": "Bearer"})

    return check
