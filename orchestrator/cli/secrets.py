"""``orchestrator secrets set|list|delete``: the encrypted secrets table (``${{ secrets.NAME }}``)."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from orchestrator.cli.control import who, who_options
from orchestrator.cli.render import console
from orchestrator.errors import UsageError
from orchestrator.runtime import secrets as store
from orchestrator.runtime.connect import open_repository
from orchestrator.settings import get_settings


@click.group()
def secrets() -> None:
    """Secrets for ${{ secrets.NAME }}, encrypted under ORCHESTRATOR_SECRET_KEY."""


@secrets.command(name="set")
@click.argument("name")
@click.option(
    "--value",
    default=None,
    help="The value (visible to other users in the process list and kept in shell history: prefer stdin).",
)
@who_options
def set_(name: str, value: str | None, by: str | None, reason: str | None) -> None:
    """Store a secret: the value from --value, else standard input, else a hidden prompt."""
    store.check_name(name)
    key = get_settings().secret_key_text
    store.Fernet(key)  # a missing or bad key is refused before anything is read
    if value is None:
        value = _read_value(name)
    created = store.set_secret(open_repository(), key, name, value, who(by, reason))
    click.echo(f"secret {name} {'set' if created else 'replaced'}")


def _read_value(name: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.read().removesuffix("\n").removesuffix("\r")
    value: str = click.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
    if not value:
        raise UsageError(f"secret {name}: the value is empty")
    return value


@secrets.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Stored secrets: names and times, never values."""
    rows = store.list_secrets(open_repository())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("name", "created at", "updated at"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["created_at"], row["updated_at"])
    console.print(table)


@secrets.command()
@click.argument("name")
@who_options
def delete(name: str, by: str | None, reason: str | None) -> None:
    """Delete a stored secret (a step that reads it then fails with SecretMissing)."""
    store.delete_secret(open_repository(), name, who(by, reason))
    click.echo(f"secret {name} deleted")
