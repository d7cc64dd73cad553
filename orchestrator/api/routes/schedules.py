"""``/api/v1`` routes: schedules (see docs/http-api.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
