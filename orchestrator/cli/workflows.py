"""``orchestrator workflows register|list|show``: definitions stored in the database."""

from __future__ import annotations

import json

import click
import yaml

from orchestrator.definition import plan_file
from orchestrator.errors import NotFound
from orchestrator.runtime import operations
from orchestrator.runtime.connect import open_repository
from orchestrator.worker.connect import open_engine


@click.group()
def workflows() -> None:
    """Workflow definitions stored in the database, versioned by content hash."""


@workflows.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def register(file: str) -> None:
    """Validate FILE and store it as the newest version of its workflow."""
    plan = plan_file(file)
    created = operations.register(open_engine(), plan)
    state = "registered" if created else "already registered"
    click.echo(f"{plan.workflow.name} version {plan.version} {state}")


@workflows.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Registered workflows, with their latest version."""
    with open_repository().transaction() as tx:
        rows = tx.registrations()
    latest: dict[str, dict[str, object]] = {}
    for row in rows:
        entry = latest.setdefault(
            row["name"],
            {
                "name": row["name"],
                "version": row["version"],
                "registered_at": row["registered_at"].isoformat(),
                "versions": 0,
            },
        )
        entry["versions"] = int(str(entry["versions"])) + 1
    if as_json:
        click.echo(json.dumps(list(latest.values()), indent=2))
        return
    for entry in latest.values():
        click.echo(f"{entry['name']}  {entry['version']}  {entry['registered_at']}  ({entry['versions']} versions)")


@workflows.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show(name: str, as_json: bool) -> None:
    """The latest registered definition of NAME."""
    with open_repository().transaction() as tx:
        version = tx.active_version(name)
        snapshot = tx.definition(version) if version else None
    if snapshot is None:
        raise NotFound(f"no workflow named '{name}' is registered")
    if as_json:
        click.echo(json.dumps({"name": name, "version": version, "definition": snapshot}, indent=2))
    else:
        click.echo(f"# version {version}")
        click.echo(yaml.safe_dump(snapshot, sort_keys=False).rstrip())
