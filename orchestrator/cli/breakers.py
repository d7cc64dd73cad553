"""``orchestrator breakers list|reset``: the shared circuit breakers."""

from __future__ import annotations

import json

import click
from rich.table import Table

from orchestrator.cli.control import who, who_options
from orchestrator.cli.render import console
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.connect import open_repository
from orchestrator.settings import get_settings


def _breakers() -> Breakers:
    settings = get_settings()
    return Breakers(open_repository(settings), settings.broker_url)


@click.group()
def breakers() -> None:
    """Circuit breakers shared by every worker."""


@breakers.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Every breaker that has been used: state, failures, opened at, next trial."""
    registry = _breakers()
    rows = registry.describe_all()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("name", "state", "failures", "opened at", "next trial at"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"], row["state"], str(row["failures"]), row["opened_at"] or "", row["next_trial_at"] or ""
        )
    console.print(table)


@breakers.command()
@click.argument("name")
@who_options
def reset(name: str, by: str | None, reason: str | None) -> None:
    """Close a breaker by hand: clear its failures and let calls through."""
    _breakers().reset(name, who(by, reason))
    click.echo(f"breaker {name} reset to closed")
