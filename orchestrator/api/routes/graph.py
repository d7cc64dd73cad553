"""``/api/v1`` routes: graph (see docs/http-api.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
