"""The ``orchestrator`` command: one small handler per subcommand, no business logic here."""

from __future__ import annotations

import sys
from typing import Any

import click

from orchestrator.errors import OrchestratorError


class _Group(click.Group):
    """Turns any ``OrchestratorError`` into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OrchestratorError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="celery-orchestrator", prog_name="orchestrator")
def main() -> None:
    """A durable workflow orchestrator on Celery."""


def _register() -> None:
    from orchestrator.cli import (
        audit,
        breakers,
        cache,
        control,
        definitions,
        dlq,
        processes,
        report,
        runs,
        schedules,
        secrets,
        serve,
        workflows,
    )

    for command in (
        definitions.validate,
        definitions.schema,
        runs.run,
        runs.status,
        runs.runs,
        runs.history,
        runs.cancel,
        control.pause,
        control.resume,
        control.signal,
        control.emit,
        control.approvals,
        control.approve,
        control.reject,
        control.retry,
        control.skip,
        control.accept,
        workflows.workflows,
        processes.worker,
        processes.beat,
        processes.flower,
        processes.db,
        dlq.dlq,
        breakers.breakers,
        cache.cache,
        schedules.schedules,
        report.report,
        serve.serve,
        audit.audit,
        secrets.secrets,
    ):
        main.add_command(command)


_register()
