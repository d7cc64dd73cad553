"""``orchestrator cache list|clear``: step outputs kept by ``cache:``, shared by every worker."""

from __future__ import annotations

import json

import click
from rich.table import Table

from orchestrator.cli.control import who, who_options
from orchestrator.cli.render import console
from orchestrator.runtime.caching import cached_entries, clear_cache
from orchestrator.runtime.connect import open_repository


@click.group()
def cache() -> None:
    """Cached step outputs."""


@cache.command(name="list")
@click.option("--workflow", default=None, help="Only this workflow's entries.")
@click.option("--step", default=None, help="Only this step's entries.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def list_(workflow: str | None, step: str | None, limit: int, as_json: bool) -> None:
    """Entries, newest first: key, workflow and step, created, expires, hits."""
    entries = cached_entries(open_repository(), workflow, step, limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    table = Table()
    for column in ("key", "workflow", "step", "created", "expires", "hits", "from run"):
        table.add_column(column, overflow="fold")
    for e in entries:
        expires = e["expires_at"] or "never"
        table.add_row(e["key"][:16], e["workflow"], e["step"], e["created_at"], expires, str(e["hits"]), e["run_id"])
    console.print(table)


@cache.command()
@click.option("--workflow", default=None, help="Only this workflow's entries.")
@click.option("--step", default=None, help="Only this step's entries (with --workflow).")
@who_options
def clear(workflow: str | None, step: str | None, by: str | None, reason: str | None) -> None:
    """Delete cached entries: all of them, a workflow's, or one step's; the next run calls the step again."""
    gone = clear_cache(open_repository(), workflow, step, who(by, reason))
    click.echo(f"{gone} cache entr{'y' if gone == 1 else 'ies'} cleared")
