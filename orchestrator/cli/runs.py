"""``run``, ``status``, ``runs``, ``history``, ``cancel``: small handlers over the runtime."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from orchestrator.cli import render
from orchestrator.definition import Plan, plan_file
from orchestrator.errors import BrokerUnreachable, InputsError, UsageError, shown
from orchestrator.runtime import operations
from orchestrator.runtime.checks import check_payload, decode_text, parse_json, read_file
from orchestrator.runtime.connect import open_repository
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.views import RunWatch, history_view, run_view, runs_view
from orchestrator.settings import DEFAULT_POLL_INTERVAL_S, get_settings
from orchestrator.status import RunStatus
from orchestrator.store import Repository
from orchestrator.urls import redact_url, scrub
from orchestrator.worker.connect import open_engine


@click.command()
@click.argument("target", metavar="FILE-or-NAME")
@click.option(
    "-i", "--input", "pairs", multiple=True, metavar="KEY=VALUE", help="An input; VALUE is JSON if it parses."
)
@click.option("--inputs-file", type=click.Path(exists=True, dir_okay=False), help="A JSON or YAML object of inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print only the finished run as JSON.")
@click.option("--detach", is_flag=True, help="Print the run id and return at once.")
@click.option("--idempotency-key", default=None, help="The same key gives back the same run.")
@click.option("--dry-run", is_flag=True, help="Run no step and store nothing: show the path the run takes.")
@click.option("--mock", "mock_pairs", multiple=True, metavar="STEP=JSON", help="A step's output in a dry run.")
@click.option("--mocks", "mocks_file", type=click.Path(exists=True, dir_okay=False), help="STEP: output, JSON or YAML.")
@click.option(
    "--mocks-from", metavar="RUN", default=None, help="A recorded run's outputs as the mocks; show the changes."
)
@click.option("--by", default=None, help="Who acts (default: ORCHESTRATOR_ACTOR, else the OS user).")
@click.option("--reason", default=None, help="Why: recorded with the action.")
def run(
    target: str,
    pairs: tuple[str, ...],
    inputs_file: str | None,
    as_json: bool,
    detach: bool,
    idempotency_key: str | None,
    dry_run: bool,
    mock_pairs: tuple[str, ...],
    mocks_file: str | None,
    mocks_from: str | None,
    by: str | None,
    reason: str | None,
) -> None:
    """Start a run of a workflow file or registered workflow, and follow it to the end."""
    settings = get_settings()
    who = operations.Who(by or settings.default_actor, reason)
    inputs = parse_inputs(pairs, inputs_file)
    if dry_run or mock_pairs or mocks_file or mocks_from:
        if not dry_run:
            raise UsageError("--mock, --mocks and --mocks-from apply only with --dry-run")
        from orchestrator.cli.dry_run import dry_run_command

        dry_run_command(target, inputs, mock_pairs, mocks_file, mocks_from, as_json)
        return
    if detach and settings.embedded:
        raise UsageError("--detach needs workers to hand the run to: set ORCHESTRATOR_BROKER_URL")
    plan = plan_file(target) if _is_file(target) else None
    engine = open_engine(settings)
    repo = engine.repo
    if plan is None:
        plan = operations.registered_plan(engine, target)
    if settings.embedded:
        from orchestrator.worker.embedded import EmbeddedWorker

        with EmbeddedWorker():
            run_id = _submit(engine, plan, inputs, idempotency_key, as_json, who)
            view = follow(repo, run_id, as_json)
    else:
        check_broker()
        run_id = _submit(engine, plan, inputs, idempotency_key, as_json, who)
        if detach:
            click.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
            return
        view = follow(repo, run_id, as_json)
    if as_json:
        click.echo(json.dumps(view, indent=2))
    sys.exit(0 if view["status"] == RunStatus.SUCCEEDED else 1)


def _submit(
    engine: Engine, plan: Plan, inputs: dict[str, Any], key: str | None, quiet: bool, who: operations.Who
) -> str:
    submitted = operations.submit(engine, plan, inputs, key, who, via="cli")
    if not quiet:
        verb = "started" if submitted.created else "already exists for this idempotency key"
        click.echo(f"run {submitted.run_id} {verb} ({plan.workflow.name}, version {plan.version})", err=True)
    return submitted.run_id


def follow(repo: Repository, run_id: str, quiet: bool) -> dict[str, Any]:
    """Poll the state store until the run ends, showing its steps live unless ``quiet``: each poll
    reads only the events since the last, and the final view is the run's full view."""
    watch = RunWatch(repo, run_id)
    view = watch.view
    with render.live(quiet) as show:
        while True:
            show(view)
            if RunStatus(view["status"]).terminal:
                return view
            time.sleep(DEFAULT_POLL_INTERVAL_S)
            view = watch.poll()


def check_broker() -> None:
    """Exit 3 when the broker cannot be reached; the message shows the URL as configured, redacted
    (kombu's own rendering of a malformed URL can carry the password)."""
    from orchestrator.worker.app import app

    url = str(app.conf.broker_url)
    connection = app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # kombu raises transport-specific errors; all mean unreachable
        raise BrokerUnreachable(f"cannot reach the broker at {redact_url(url)}: {scrub(str(exc), url)}") from None
    finally:
        connection.release()


def parse_inputs(pairs: tuple[str, ...], inputs_file: str | None) -> dict[str, Any]:
    """``--inputs-file`` first, then each ``-i key=value`` (JSON when it parses, else a string).
    Each is UTF-8, no larger than ORCHESTRATOR_MAX_PAYLOAD and not nested too deep (exit 2)."""
    inputs: dict[str, Any] = {}
    if inputs_file:
        inputs.update(_inputs_file(inputs_file))
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-i takes key=value, not {shown(pair)!r}")
        what = f"-i {shown(decode_text(key, '-i'))}"
        try:
            inputs[key] = parse_json(raw, what)
        except json.JSONDecodeError:
            inputs[key] = decode_text(raw, what)
    return inputs


def _inputs_file(path: str) -> dict[str, Any]:
    text = read_file(path, "--inputs-file")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputsError(f"{path}: not JSON or YAML: {shown(str(exc), 300)}") from None
    except RecursionError:
        raise InputsError(f"{path}: nested too deep") from None
    if not isinstance(loaded, dict):
        raise InputsError(f"{path}: inputs must be an object")
    return check_payload(loaded, f"--inputs-file {path}")


def _is_file(target: str) -> bool:
    return Path(target).exists() or target.endswith((".yaml", ".yml", ".json"))


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True)
def status(run_id: str, as_json: bool) -> None:
    """One run and all its steps."""
    view = run_view(open_repository(), run_id, with_attempts=True)
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        render.print_run(view)


@click.command()
@click.option("--status", "status_", type=click.Choice([s.value for s in RunStatus]), default=None)
@click.option("--workflow", default=None)
@click.option("--parent", default=None, metavar="RUN", help="Only the child runs of this run's steps.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def runs(status_: str | None, workflow: str | None, parent: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    views = runs_view(open_repository(), status_, workflow, limit, parent)
    if as_json:
        click.echo(json.dumps(views, indent=2))
    else:
        render.print_runs(views)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True)
def history(run_id: str, as_json: bool) -> None:
    """The run's event log, oldest first."""
    events = history_view(open_repository(), run_id)
    if as_json:
        click.echo(json.dumps(events, indent=2))
    else:
        render.print_history(events)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--by", default=None, help="Who acts (default: ORCHESTRATOR_ACTOR, else the OS user).")
@click.option("--reason", default=None, help="Why: recorded with the action.")
def cancel(run_id: str, by: str | None, reason: str | None) -> None:
    """Stop a run: no new step starts, running steps are revoked, the run ends cancelled."""
    who = operations.Who(by or get_settings().default_actor, reason)
    done = operations.cancel(open_engine(), run_id, who)
    revoked = f"; revoked {len(done.revoked)} running step(s)" if done.revoked else ""
    click.echo(f"run {run_id} {'was already cancelled' if done.already else 'cancelled'}{revoked}")
