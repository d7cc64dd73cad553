"""The dead-letter queue: steps that failed for good, to inspect, replay, discard and purge."""

from __future__ import annotations

from orchestrator.dlq.queue import discard, entry_view, list_entries, purge, replay, replay_all, show

__all__ = ["discard", "entry_view", "list_entries", "purge", "replay", "replay_all", "show"]
