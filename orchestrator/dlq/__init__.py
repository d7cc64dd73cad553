"""The dead-letter queue: steps that failed for good, to inspect, replay, discard and purge."""

from __future__ import annotations

from orchestrator.dlq.queue import (
    check_selection,
    discard,
    entry_view,
    list_entries,
    purge,
    replay,
    replay_all,
    replay_selected,
    show,
)

__all__ = [
    "check_selection",
    "discard",
    "entry_view",
    "list_entries",
    "purge",
    "replay",
    "replay_all",
    "replay_selected",
    "show",
]
