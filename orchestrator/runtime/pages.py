"""Paged views for the HTTP API: the run list a page at a time behind an opaque cursor, and one
step in detail with a page of its foreach items. The shapes are ``runs --json``'s and
``status --json``'s, read with queries bounded by the page, not by the size of the run."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from orchestrator.errors import NotFound, UsageError, shown
from orchestrator.runtime.views import annotate, attempt_view, spec_of, step_view, summary
from orchestrator.store import Repository, StepRow
from orchestrator.store.pages import RunFilter

MAX_RUNS_PAGE = 500
MAX_ITEMS_PAGE = 500


def encode_cursor(created_at: datetime, run_id: str) -> str:
    """The key of a page's last run, as an opaque token."""
    raw = json.dumps({"t": created_at.astimezone(UTC).isoformat(), "id": run_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The key a cursor holds; UsageError for anything this API did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        at = datetime.fromisoformat(data["t"])
        run_id = data["id"]
        if not isinstance(run_id, str) or at.tzinfo is None:
            raise ValueError(run_id)
        at = at.astimezone(UTC)
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError, OverflowError):
        raise UsageError("cursor: not a cursor this API handed out (use next_cursor as given)") from None
    return at, run_id


def utc(value: datetime | None, name: str) -> datetime | None:
    """A time as the store compares it: UTC (a time with no offset is taken as UTC)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise UsageError(f"{name}: {value.isoformat()} is out of range in UTC") from None


def runs_page(repo: Repository, where: RunFilter, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """``{"runs": [<run summary>], "next_cursor"}``, newest first; ``next_cursor`` None on the last page."""
    if not 1 <= limit <= MAX_RUNS_PAGE:
        raise UsageError(f"limit: must be 1 to {MAX_RUNS_PAGE}")
    after = decode_cursor(cursor) if cursor is not None else None
    where = RunFilter(where.status, where.workflow, where.parent, utc(where.since, "since"), utc(where.until, "until"))
    with repo.transaction() as tx:
        rows = tx.runs_page(where, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return {
        "runs": [summary(r) for r in rows],
        "next_cursor": encode_cursor(last.created_at, last.id) if last is not None else None,
    }


def step_detail(repo: Repository, run_id: str, step: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """One step as ``status --json`` shows it, with its ``attempt_log``, ``inputs`` and ``traceback``;
    for a foreach, ``item_list``: the items from index ``offset``, at most ``limit``."""
    if offset < 0 or not 1 <= limit <= MAX_ITEMS_PAGE:
        raise UsageError(f"items_offset must be 0 or more and items_limit 1 to {MAX_ITEMS_PAGE}")
    with repo.transaction() as tx:
        run = tx.run(run_id)
        if run is None:
            raise NotFound(f"no run {shown(run_id)}")
        row = tx.current_row(run_id, step)
        if row is None:
            raise NotFound(f"run {shown(run_id)} has no step '{shown(step)}'")
        spec = spec_of(tx.definition(run.version) or {}, row.step)
        counts = tx.item_counts(run_id, row.step)
        foreach = "foreach" in spec or counts is not None
        items = tx.items_page(run_id, row.step, offset, limit) if foreach else []
        attempts = tx.attempts([row.id, *(i.id for i in items)])
        decisions = tx.decisions([row.id]) if row.wait_kind == "approval" else []
        children = tx.children_of([row.id, *(i.id for i in items)])
    tries: dict[int, list[dict[str, Any]]] = {}
    for attempt in attempts:
        tries.setdefault(attempt["step_run_id"], []).append(attempt_view(attempt))
    view = step_view(row, counts, tries, items)
    annotate(view, row, spec, decisions, children, items)
    view["inputs"], view["traceback"] = row.inputs, row.traceback
    if foreach:
        view["item_list"] = [_item(i, children) for i in items]
    return view


def _item(item: StepRow, children: dict[int, str]) -> dict[str, Any]:
    return {
        "index": item.item_index,
        "status": str(item.status),
        "attempts": item.attempts,
        "output": item.output,
        "error": item.error,
        "child_run": children.get(item.id),
    }
