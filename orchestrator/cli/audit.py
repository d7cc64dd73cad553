"""``orchestrator audit list|verify|export``: the audit trail, for people and for auditors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import click
from rich.table import Table

from orchestrator import audit as trail
from orchestrator.audit.trail import check_format, since_stamp
from orchestrator.cli.render import console
from orchestrator.errors import AuditChainBroken, UsageError
from orchestrator.runtime.connect import open_repository
from orchestrator.settings import DEFAULT_AUDIT_LIST_LIMIT


@click.group()
def audit() -> None:
    """Who changed what, when and why: list, verify, export."""


@audit.command(name="list")
@click.option("--run", "run_id", default=None, metavar="RUN", help="Only records about this run.")
@click.option("--actor", default=None, help="Only this actor's records.")
@click.option("--action", default=None, help="Only this action (run.cancel), or a prefix ending in * (run.*).")
@click.option("--since", default=None, help="Only records this recent: a duration such as 7d or 12h.")
@click.option("--limit", default=DEFAULT_AUDIT_LIST_LIMIT, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def list_(
    run_id: str | None, actor: str | None, action: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """Audit records, newest first."""
    records = trail.list_records(open_repository(), run_id, actor, action, since, limit)
    if as_json:
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    table = Table()
    for column in ("seq", "at", "actor", "action", "target", "reason"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(str(r["seq"]), r["at"], r["actor"], r["action"], r["target"], r["reason"] or "")
    console.print(table)


@audit.command()
@click.option("--json", "as_json", is_flag=True)
def verify(as_json: bool) -> None:
    """Walk the chain: exit 0 when every record holds, 1 naming the first changed, removed or inserted."""
    found = trail.verify(open_repository())
    if as_json:
        click.echo(json.dumps(found.as_json()))
        if not found.ok:
            sys.exit(2 if found.needs_key else 1)
        return
    if found.needs_key:
        raise UsageError(found.problem)
    if not found.ok:
        raise AuditChainBroken(f"the audit chain is broken at record {found.bad_seq}: {found.problem}")
    head = f"; head {found.head_seq} {found.head_hash}" if found.head_seq else ""
    click.echo(f"audit chain intact: {found.records} record(s){head}")


@audit.command()
@click.option("--format", "fmt", required=True, metavar="csv|json", help="csv or json.")
@click.option("--output", default=None, metavar="FILE", help="Write here (default: standard output).")
@click.option("--since", default=None, help="Only records this recent: a duration such as 30d.")
def export(fmt: str, output: str | None, since: str | None) -> None:
    """Every record in chain order, with its hashes, for auditors."""
    check_format(fmt)
    since_stamp(since)  # a bad duration is refused before anything is written
    with _opened(output) as out:
        count = trail.export(open_repository(), out, fmt, since)
    if output is not None:
        click.echo(f"exported {count} record(s) to {output}", err=True)


@contextmanager
def _opened(output: str | None) -> Iterator[IO[str]]:
    if output is None:
        yield sys.stdout
        return
    try:
        out = open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"--output: cannot write {output}: {exc.strerror}") from None
    with out:
        yield out
