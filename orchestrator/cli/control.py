"""Waits, events, approvals and repairs: ``signal``, ``emit``, ``approvals``, ``approve``, ``reject``, ``pause``,
``resume``, ``retry``, ``skip``, ``accept``. Small handlers over ``orchestrator.runtime``.

Every command that changes a run takes ``--by`` (default ``ORCHESTRATOR_ACTOR``, else the OS
user) and ``--reason``, recorded with the event it causes. With no broker configured (the
embedded default) a command that starts steps runs an in-process worker until the runs it
touched are quiet again: ended, paused, or only waiting.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from orchestrator.cli.runs import check_broker
from orchestrator.errors import PayloadTooLarge, UsageError
from orchestrator.runtime import approval, repair
from orchestrator.runtime.checks import parse_json, read_file
from orchestrator.runtime.connect import open_repository
from orchestrator.runtime.emit import emit as emit_event
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.signal import signal as send_signal
from orchestrator.runtime.views import approvals_view
from orchestrator.settings import DEFAULT_POLL_INTERVAL_S, get_settings
from orchestrator.store import Repository
from orchestrator.worker.connect import open_engine

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def who_options(command: F) -> F:
    command = click.option("--reason", default=None, help="Why: recorded with the action.")(command)
    return click.option("--by", default=None, help="Who acts (default: ORCHESTRATOR_ACTOR, else the OS user).")(command)


def who(by: str | None, reason: str | None) -> Who:
    return Who(by or get_settings().default_actor, reason)


def json_option(value: str | None, option: str) -> Any:
    """``--data``/``--output``: JSON text, ``@FILE`` for a file, ``-`` for standard input; UTF-8, no
    larger than ORCHESTRATOR_MAX_PAYLOAD and not nested too deep (exit 2)."""
    if value is None:
        return None
    text: str | bytes = value
    if value == "-":
        limit = get_settings().max_payload_bytes
        text = sys.stdin.buffer.read(limit + 1)
        if len(text) > limit:
            raise PayloadTooLarge(f"{option} - (standard input) is over {limit} bytes (ORCHESTRATOR_MAX_PAYLOAD)")
    elif value.startswith("@"):
        text = read_file(value[1:], option)
    try:
        return parse_json(text, option)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def act(action: Callable[[Engine], T], touched: Callable[[T], Iterable[str]]) -> T:
    """Run ``action`` where its messages reach workers: the configured broker, or (embedded) a
    worker in this process, kept until the runs it touched are quiet."""
    settings = get_settings()
    engine = open_engine(settings)
    if not settings.embedded:
        check_broker()
        return action(engine)
    from orchestrator.worker.embedded import EmbeddedWorker

    with EmbeddedWorker():
        result = action(engine)
        for run_id in dict.fromkeys(touched(result)):
            until_quiet(engine.repo, run_id)
    return result


def until_quiet(repo: Repository, run_id: str) -> None:
    while True:
        with repo.transaction() as tx:
            run = tx.run(run_id)
            busy = run is not None and not run.status.terminal and tx.has_active_steps(run_id)
        if not busy:
            return
        time.sleep(DEFAULT_POLL_INTERVAL_S)


@click.command()
@click.argument("event")
@click.option("--key", default=None, help="The correlation key (default: none).")
@click.option("--run", "run_id", default=None, help="Only steps of this run.")
@click.option("--data", default=None, help="The event's data: JSON, @FILE or - (stdin).")
@click.option("--id", "signal_id", default=None, help="The signal's id: the same id sent again does nothing.")
@click.option("--json", "as_json", is_flag=True)
@who_options
def signal(
    event: str,
    key: str | None,
    run_id: str | None,
    data: str | None,
    signal_id: str | None,
    as_json: bool,
    by: str | None,
    reason: str | None,
) -> None:
    """Complete the steps waiting on EVENT and KEY; prints how many (0: kept for a step that waits later)."""
    payload = json_option(data, "--data")
    done = act(
        lambda e: send_signal(e, event, key, payload, run_id, who(by, reason), signal_id),
        lambda d: [r for r, _ in d.delivered],
    )
    if as_json:
        click.echo(json.dumps(done.as_json()))
        return
    if done.duplicate:
        click.echo(f"signal {signal_id} was handled before: nothing done")
        return
    for run, step in done.delivered:
        click.echo(f"completed step {step} of run {run}")
    if done.kept:
        click.echo(f"0 steps waiting on {event} (key {done.key!r}): the signal is kept for the step that waits for it")
    else:
        click.echo(f"{len(done.delivered)} step(s) completed")


@click.command()
@click.argument("event")
@click.option("--data", default=None, help="The event's data: JSON, @FILE or - (stdin).")
@click.option("--id", "emit_id", default=None, help="The emission's id: the same id sent again starts nothing.")
@click.option("--json", "as_json", is_flag=True)
@who_options
def emit(event: str, data: str | None, emit_id: str | None, as_json: bool, by: str | None, reason: str | None) -> None:
    """Start the workflows whose ``on`` names EVENT; prints the runs started."""
    payload = json_option(data, "--data")
    done = act(lambda e: emit_event(e, event, payload, who(by, reason), emit_id), lambda d: [r for _, r in d.started])
    if as_json:
        click.echo(json.dumps(done.as_json()))
        return
    if done.duplicate:
        click.echo(f"event {done.id} was emitted before: nothing new started")
        return
    for workflow, run_id in done.started:
        click.echo(f"started run {run_id} of {workflow}")
    for workflow, why in done.skipped:
        click.echo(f"{workflow}: not started ({why})")
    click.echo(f"{len(done.started)} run(s) started by {event}")


@click.command()
@click.option("--json", "as_json", is_flag=True)
def approvals(as_json: bool) -> None:
    """Approvals waiting for a decision: run, step, who may decide, since when, deadline."""
    from orchestrator.cli import render

    found = approvals_view(open_repository())
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        render.print_approvals(found)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.argument("step")
@click.option("--comment", default=None)
@click.option("--keyword", default=None, help="The approval's keyword, quoted exactly.")
@click.option("--data", default=None, help="Data for the approval's inputs schema: JSON, @FILE or -.")
@who_options
def approve(
    run_id: str,
    step: str,
    comment: str | None,
    keyword: str | None,
    data: str | None,
    by: str | None,
    reason: str | None,
) -> None:
    """Approve a waiting approval step."""
    payload = json_option(data, "--data")
    actor = who(by, reason)
    done = act(
        lambda e: approval.decide(e, run_id, step, actor, "approved", comment=comment, keyword=keyword, data=payload),
        lambda d: [d.run_id],
    )
    left = f"; {done.required - done.approvals} more needed" if not done.ended else "; the step succeeded"
    click.echo(f"{actor.by} approved {step} of run {run_id} ({done.approvals}/{done.required}){left}")


@click.command()
@click.argument("run_id", metavar="RUN")
@click.argument("step")
@click.option("--comment", required=True, help="Why it is rejected.")
@who_options
def reject(run_id: str, step: str, comment: str, by: str | None, reason: str | None) -> None:
    """Reject a waiting approval step: it fails with ApprovalRejected, never retried."""
    actor = who(by, reason)
    act(lambda e: approval.decide(e, run_id, step, actor, "rejected", comment=comment), lambda d: [d.run_id])
    click.echo(f"{actor.by} rejected {step} of run {run_id}")


@click.command()
@click.argument("run_id", metavar="RUN")
@who_options
def pause(run_id: str, by: str | None, reason: str | None) -> None:
    """No new step starts; running steps finish and are recorded; waits keep waiting."""
    done = repair.pause(open_engine(), run_id, who(by, reason))
    click.echo(f"run {run_id} {'was already paused' if done.note else 'paused'}")


@click.command()
@click.argument("run_id", metavar="RUN")
@who_options
def resume(run_id: str, by: str | None, reason: str | None) -> None:
    """Resume a paused run: what is ready is dispatched."""
    done = act(lambda e: repair.resume(e, run_id, who(by, reason)), lambda d: [d.run_id])
    click.echo(f"run {run_id} resumed ({len(done.dispatches)} step(s) sent)")


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--step", default=None, help="Only this failed step (and what did not succeed after it).")
@click.option("--from", "from_step", default=None, help="This step and everything downstream, whatever their status.")
@who_options
def retry(run_id: str, step: str | None, from_step: str | None, by: str | None, reason: str | None) -> None:
    """Run an ended run again from its failed steps; succeeded steps keep their outputs."""
    done = act(lambda e: repair.retry(e, run_id, who(by, reason), step, from_step), lambda d: [d.run_id])
    click.echo(f"run {run_id} retried: {', '.join(done.steps)} run again")


@click.command()
@click.argument("run_id", metavar="RUN")
@click.argument("step")
@who_options
def skip(run_id: str, step: str, by: str | None, reason: str | None) -> None:
    """A failed or waiting step is skipped; the run goes on."""
    done = act(lambda e: repair.skip(e, run_id, step, who(by, reason)), lambda d: [d.run_id])
    click.echo(f"step {step} of run {run_id} skipped" + (f"; {done.note}" if done.note else ""))


@click.command()
@click.argument("run_id", metavar="RUN")
@click.argument("step")
@click.option("--output", "output_", required=True, help="The step's output: JSON, @FILE or -.")
@who_options
def accept(run_id: str, step: str, output_: str, by: str | None, reason: str | None) -> None:
    """A failed or waiting step succeeds with this output; the run goes on."""
    value = json_option(output_, "--output")
    done = act(lambda e: repair.accept(e, run_id, step, value, who(by, reason)), lambda d: [d.run_id])
    click.echo(f"step {step} of run {run_id} accepted" + (f"; {done.note}" if done.note else ""))
