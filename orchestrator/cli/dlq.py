"""``orchestrator dlq list|show|replay|discard|purge``: the dead-letter queue."""

from __future__ import annotations

import json

import click

from orchestrator.cli import render
from orchestrator.cli.control import who, who_options
from orchestrator.cli.runs import check_broker, follow, parse_inputs
from orchestrator.definition.duration import parse_duration
from orchestrator.dlq import check_selection, list_entries, replay_selected
from orchestrator.dlq import discard as discard_entries
from orchestrator.dlq import purge as purge_entries
from orchestrator.dlq import show as show_entry
from orchestrator.dlq.queue import STATUSES, Replayed
from orchestrator.errors import UsageError
from orchestrator.runtime.connect import open_repository
from orchestrator.settings import get_settings
from orchestrator.worker.connect import open_engine


@click.group()
def dlq() -> None:
    """Steps that failed for good: inspect, replay, discard, purge."""


@dlq.command(name="list")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--workflow", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def list_(status: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    """Dead-letter entries, newest first."""
    entries = list_entries(open_repository(), status, workflow, limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    else:
        render.print_dead_letters(entries)


@dlq.command()
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
def show(entry_id: str, as_json: bool) -> None:
    """One entry: the exact inputs, the error and its traceback."""
    entry = show_entry(open_repository(), entry_id)
    if as_json:
        click.echo(json.dumps(entry, indent=2))
        return
    for key, value in entry.items():
        if key != "traceback":
            click.echo(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    if entry.get("traceback"):
        click.echo("traceback:\n" + entry["traceback"].rstrip())


@dlq.command()
@click.argument("entry_ids", metavar="ID...", nargs=-1)
@click.option("--all", "replay_every", is_flag=True, help="Replay every open entry (in batches).")
@click.option("--workflow", default=None, help="With --all: only this workflow's entries.")
@click.option("--inputs-file", type=click.Path(exists=True, dir_okay=False), help="Corrected inputs (JSON/YAML).")
@click.option("--json", "as_json", is_flag=True)
@who_options
def replay(
    entry_ids: tuple[str, ...],
    replay_every: bool,
    workflow: str | None,
    inputs_file: str | None,
    as_json: bool,
    by: str | None,
    reason: str | None,
) -> None:
    """Re-execute failed steps with their recorded (or corrected) inputs; their runs resume."""
    check_selection(entry_ids, replay_every, bool(inputs_file))
    settings = get_settings()
    engine = open_engine(settings)
    inputs = parse_inputs((), inputs_file) if inputs_file else None
    actor = who(by, reason)
    if not settings.embedded:
        check_broker()
        _report(replay_selected(engine, entry_ids, replay_every, workflow, inputs, actor), as_json)
        return
    from orchestrator.worker.embedded import EmbeddedWorker

    with EmbeddedWorker():
        done = replay_selected(engine, entry_ids, replay_every, workflow, inputs, actor)
        for run_id in dict.fromkeys(done.runs):
            follow(engine.repo, run_id, quiet=True)
    _report(done, as_json)


def _report(result: Replayed, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    click.echo(
        f"replayed {len(result.entries)} entr{'y' if len(result.entries) == 1 else 'ies'}"
        f" ({len(set(result.runs))} run(s) resumed)"
    )
    if result.refused:
        click.echo(f"left open {len(result.refused)} entr(ies) of cancelled runs: {', '.join(result.refused)}")


@dlq.command()
@click.argument("entry_ids", metavar="ID...", nargs=-1, required=True)
@who_options
def discard(entry_ids: tuple[str, ...], by: str | None, reason: str | None) -> None:
    """Mark entries discarded: looked at, not to be replayed."""
    count = discard_entries(open_repository(), entry_ids, who(by, reason))
    click.echo(f"discarded {count} entr{'y' if count == 1 else 'ies'}")


@dlq.command()
@click.option("--older-than", "older_than", required=True, help="An age, e.g. 30d or 12h.")
@click.option("--include-open", is_flag=True, help="Also delete entries nobody has replayed or discarded.")
@who_options
def purge(older_than: str, include_open: bool, by: str | None, reason: str | None) -> None:
    """Delete replayed and discarded entries older than an age."""
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    count = purge_entries(open_repository(), seconds, include_open, who(by, reason))
    click.echo(f"purged {count} entr{'y' if count == 1 else 'ies'}")
