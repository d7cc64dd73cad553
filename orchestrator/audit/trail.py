"""Reading the trail: filtered listings for people, full exports (CSV or JSON) for auditors."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from orchestrator.audit.chain import stamp
from orchestrator.audit.verify import chain
from orchestrator.definition.duration import parse_duration
from orchestrator.errors import UsageError
from orchestrator.settings import DEFAULT_AUDIT_LIST_LIMIT
from orchestrator.store import Repository

FORMATS = ("csv", "json")
COLUMNS = ("seq", "at", "actor", "action", "target", "reason", "detail", "mode", "prev_hash", "hash")


def since_stamp(since: str | None, option: str = "--since") -> str | None:
    """``--since 7d``: the ``at`` text that many seconds ago; UsageError for what is not a duration."""
    if since is None:
        return None
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    return stamp(datetime.now(UTC) - timedelta(seconds=seconds))


def view(row: dict[str, Any]) -> dict[str, Any]:
    """A record as the contract shows it, its detail parsed."""
    found = {name: row[name] for name in COLUMNS}
    found["detail"] = None if row["detail"] is None else json.loads(row["detail"])
    return found


def list_records(
    repo: Repository,
    run_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: str | None = None,
    limit: int = DEFAULT_AUDIT_LIST_LIMIT,
    option: str = "--since",
) -> list[dict[str, Any]]:
    """Records matching every filter, newest first; ``since`` a duration (``7d``), which a message
    calls ``option``."""
    at = since_stamp(since, option)
    with repo.transaction() as tx:
        rows = tx.audit_records(run_id=run_id, actor=actor, action=action, since=at, limit=limit)
    return [view(r) for r in rows]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def export(repo: Repository, out: IO[str], fmt: str, since: str | None = None) -> int:
    """Write every record (since ``since``) in chain order, streamed; how many were written.
    CSV keeps ``detail`` as the JSON text that was hashed, so an export can be verified offline."""
    check_format(fmt)
    at = since_stamp(since)
    rows = (r for r in chain(repo) if at is None or r["at"] >= at)
    return _csv(out, rows) if fmt == "csv" else _json(out, rows)


def _csv(out: IO[str], rows: Iterator[dict[str, Any]]) -> int:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count


def _json(out: IO[str], rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    out.write("[")
    for row in rows:
        out.write(("," if count else "") + "\n" + json.dumps(view(row), ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count
