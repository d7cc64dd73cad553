"""``orchestrator worker``, ``beat``, ``flower`` and ``db upgrade``: the long-running processes and migration."""

from __future__ import annotations

import click

from orchestrator.settings import get_settings

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@click.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker for step execution (takes celery worker options, e.g. -c 4)."""
    from orchestrator.worker.app import app

    args = list(ctx.args)
    if "-Q" not in args and "--queues" not in args:
        args = ["-Q", get_settings().queue, *args]
    app.worker_main(["worker", *args])


@click.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat: the schedules in the state store and the periodic reconciler (takes celery
    beat options; -S/--scheduler replaces the state store's scheduler)."""
    from orchestrator.worker.app import app

    app.start(["beat", *ctx.args])


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--address", default=None, help="Where to listen (default FLOWER_ADDRESS, else 127.0.0.1).")
@click.pass_context
def flower(ctx: click.Context, address: str | None) -> None:
    """Run Flower on the orchestrator's app (takes Flower options, e.g. --port=5555); beyond
    127.0.0.1 only with credentials in FLOWER_BASIC_AUTH."""
    from orchestrator.worker.app import app
    from orchestrator.worker.flower import flower_argv

    app.start(flower_argv(address, list(ctx.args)))


@click.group()
def db() -> None:
    """The state store's schema."""


@db.command()
def upgrade() -> None:
    """Migrate the state store to the latest schema (safe to run again)."""
    from orchestrator.store.database import check_reachable, get_engine, redact
    from orchestrator.store.migrate import current
    from orchestrator.store.migrate import upgrade as run_upgrade

    url = get_settings().database_url
    check_reachable(get_engine(url))
    run_upgrade(url)
    click.echo(f"state store at {redact(url)} is at revision {current(url)}")
