"""``/api/v1`` routes: who the caller is (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from orchestrator.api.auth import identify
from orchestrator.api.tokens import Token
from orchestrator.settings import get_settings

router = APIRouter(tags=["me"])


@router.get("/me")
def me(token: Annotated[Token | None, Depends(identify)]) -> dict[str, str]:
    """The token's name and role; with no token configured, the default actor as an admin."""
    if token is None:
        return {"name": get_settings().default_actor, "role": "admin"}
    return {"name": token.name, "role": token.role}
