"""``/api/v1`` routes: breakers (see docs/http-api.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
