"""``/api/v1`` routes: steps (see docs/http-api.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
