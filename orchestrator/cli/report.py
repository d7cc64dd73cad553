"""``orchestrator report``: a small handler over ``orchestrator.report``."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.errors import UsageError
from orchestrator.report.compute import build_report, since_seconds
from orchestrator.report.formats import FORMATS, render
from orchestrator.runtime.connect import open_repository


@click.command()
@click.option("--workflow", default=None, help="Only this workflow's runs.")
@click.option("--since", default="7d", show_default=True, help="How far back: runs created in the last 30m, 12h, 7d...")
@click.option("--format", "format_", default="table", show_default=True, help="table, json, csv or html.")
@click.option("--output", default=None, metavar="FILE", help="Write the report here instead of printing it.")
def report(workflow: str | None, since: str, format_: str, output: str | None) -> None:
    """Runs, success rates, step durations (p50/p95), retries, queue waits and the bottleneck."""
    since_s = since_seconds(since)
    if format_ not in FORMATS:
        raise UsageError(f"--format: unknown format {format_!r}: use one of {', '.join(FORMATS)}")
    text = render(build_report(open_repository(), since_s, workflow), format_)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--output: cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"report written to {output}", err=True)
