"""``orchestrator workflows register|list|show|versions|activate|rollback|diff``: definitions stored
in the database, one immutable version per content hash, one version of each name active."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
import yaml

from orchestrator.cli import render
from orchestrator.cli.control import who, who_options
from orchestrator.definition import plan_file
from orchestrator.runtime import versions as runtime
from orchestrator.runtime.connect import open_repository
from orchestrator.worker.connect import open_engine


@click.group()
def workflows() -> None:
    """Workflow definitions stored in the database, versioned by content hash."""


@workflows.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-activate", is_flag=True, help="Store the version, but leave the active one as it is.")
@click.option("--json", "as_json", is_flag=True)
@who_options
def register(file: str, no_activate: bool, as_json: bool, by: str | None, reason: str | None) -> None:
    """Validate FILE and store it as a version of its workflow, made active unless --no-activate."""
    plan = plan_file(file)
    done = runtime.register(open_engine(), plan, who(by, reason), activate=not no_activate)
    if as_json:
        click.echo(json.dumps(asdict(done)))
        return
    state = "registered" if done.created else "already registered"
    was = f" (was {done.previous})" if done.previous else ""
    if done.activated:
        state += f"; activated{was}" if not done.created else f" and activated{was}"
    elif done.previous == done.version:
        state += ", and active"
    else:
        state += f", not activated (active: {done.previous or 'none'})"
    click.echo(f"{done.name} version {done.version} {state}")


@workflows.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Registered workflows, with their active version."""
    listed = runtime.workflows_view(open_repository())
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    for e in listed:
        click.echo(
            f"{e['name']}  {e['version'] or '(none active)'}  {e['registered_at'] or ''}  ({e['versions']} versions)"
        )


@workflows.command()
@click.argument("name")
@click.option("--version", "ref", default=None, metavar="VERSION", help="This version (or a unique prefix).")
@click.option("--json", "as_json", is_flag=True)
def show(name: str, ref: str | None, as_json: bool) -> None:
    """The active definition of NAME, or the version given."""
    view = runtime.show_view(open_repository(), name, ref)
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        click.echo(f"# version {view['version']}{' (active)' if view['active'] else ''}")
        click.echo(yaml.safe_dump(view["definition"], sort_keys=False).rstrip())


@workflows.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def versions(name: str, as_json: bool) -> None:
    """Every version of NAME, newest first: registered when and by whom, active, how many runs."""
    views = runtime.versions_view(open_repository(), name)
    if as_json:
        click.echo(json.dumps(views, indent=2))
    else:
        render.print_versions(views)


@workflows.command()
@click.argument("name")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True)
@who_options
def activate(name: str, version: str, as_json: bool, by: str | None, reason: str | None) -> None:
    """Make VERSION (or a unique prefix of it) the version runs of NAME start on."""
    _print_switch(runtime.activate(open_engine(), name, version, who(by, reason)), "activated", as_json)


@workflows.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@who_options
def rollback(name: str, as_json: bool, by: str | None, reason: str | None) -> None:
    """Re-activate the version that was active before the latest activation (again: the one before)."""
    _print_switch(runtime.rollback(open_engine(), name, who(by, reason)), "rolled back to", as_json)


def _print_switch(done: runtime.Activated, verb: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(done)))
    elif not done.changed:
        click.echo(f"{done.name} version {done.version} is already active")
    else:
        click.echo(f"{done.name} {verb} version {done.version} (was {done.previous or 'none'})")


@workflows.command()
@click.argument("name")
@click.argument("v1", metavar="V1")
@click.argument("v2", metavar="V2")
@click.option("--json", "as_json", is_flag=True)
def diff(name: str, v1: str, v2: str, as_json: bool) -> None:
    """A unified diff of two versions' definitions (nothing printed when they are the same)."""
    view = runtime.diff_view(open_repository(), name, v1, v2)
    if as_json:
        click.echo(json.dumps(view))
    else:
        click.echo(view["diff"], nl=False)
