"""``orchestrator schedules list|pause|resume|trigger``: the active versions' schedules."""

from __future__ import annotations

import json
from datetime import datetime

import click

from orchestrator.cli.control import act, who, who_options
from orchestrator.runtime import schedules as runtime
from orchestrator.runtime.connect import open_repository
from orchestrator.schedule.arithmetic import time_zone
from orchestrator.worker.connect import open_engine


@click.group()
def schedules() -> None:
    """Cron and interval schedules (named WORKFLOW/NAME), fired by ``orchestrator beat``."""


@schedules.command(name="list")
@click.option("--workflow", default=None, help="Only this workflow's schedules.")
@click.option("--json", "as_json", is_flag=True)
def list_(workflow: str | None, as_json: bool) -> None:
    """Every schedule: spec, time zone, next 3 fire times, last run and its status, paused."""
    found = runtime.schedules_view(open_repository(), workflow)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    lines = [("NAME", "SPEC", "TIMEZONE", "NEXT (LOCAL)", "LAST RUN", "PAUSED")]
    for row in found:
        last = row["last_run"]
        lines.append(
            (
                row["name"],
                row["spec"],
                row["timezone"],
                ", ".join(_local(at, row["timezone"]) for at in row["next"]) or "-",
                f"{last['run_id']} {last['status']}" if last else "-",
                f"yes (by {row['paused_by']})" if row["paused"] else "no",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for row in found:
        if row["warning"]:
            click.echo(f"{row['name']}: warning: {row['warning']}", err=True)


def _local(at: str, zone: str) -> str:
    return datetime.fromisoformat(at).astimezone(time_zone(zone)).strftime("%m-%d %H:%M:%S %Z")


@schedules.command()
@click.argument("name")
@who_options
def pause(name: str, by: str | None, reason: str | None) -> None:
    """No tick of NAME (WORKFLOW/NAME) fires until it is resumed; new versions keep it paused."""
    changed = runtime.pause(open_engine(), name, who(by, reason))
    click.echo(f"schedule {name} {'paused' if changed else 'was already paused'}")


@schedules.command()
@click.argument("name")
@who_options
def resume(name: str, by: str | None, reason: str | None) -> None:
    """NAME fires again from its next tick (the ticks passed while paused are not caught up)."""
    changed = runtime.resume(open_engine(), name, who(by, reason))
    click.echo(f"schedule {name} {'resumed' if changed else 'was not paused'}")


@schedules.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@who_options
def trigger(name: str, as_json: bool, by: str | None, reason: str | None) -> None:
    """Start a run of NAME now, recorded as manual (whatever its pause and overlap policy)."""
    actor = who(by, reason)
    done = act(lambda e: runtime.trigger(e, name, actor), lambda d: [d.run_id])
    if as_json:
        click.echo(json.dumps(done.as_json()))
        return
    click.echo(f"started run {done.run_id} of schedule {name} (manual, by {actor.by})")
