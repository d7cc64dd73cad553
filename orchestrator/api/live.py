"""Live updates for server-sent events: one listener on the state store, fanned out to every
open stream (placeholder: the hub arrives with the SSE routes)."""

from __future__ import annotations

from orchestrator.store import Repository


class Hub:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
