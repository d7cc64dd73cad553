"""``orchestrator run FILE --dry-run``: the path a run would take, with mocked step outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from orchestrator.cli import render
from orchestrator.definition import Plan, build_plan, load_file
from orchestrator.definition.allowlist import Allowlist
from orchestrator.definition.model import Workflow
from orchestrator.errors import NotFound, UsageError, shown
from orchestrator.runtime.checks import check_payload, parse_json, read_file
from orchestrator.runtime.dry_run import Mocks, dry_run, mocks_from
from orchestrator.runtime.versions import resolve_target
from orchestrator.runtime.views import run_view
from orchestrator.settings import get_settings
from orchestrator.store import Repository


def dry_run_command(
    target: str,
    inputs: dict[str, Any],
    pairs: tuple[str, ...],
    mocks_file: str | None,
    recorded_run: str | None,
    as_json: bool,
) -> None:
    recorded = _recorded(recorded_run) if recorded_run else None
    plan = _plan(target)
    mocks = mocks_from(recorded) if recorded is not None else Mocks()
    mocks.outputs.update(_mocks_file(mocks_file) if mocks_file else {})
    mocks.outputs.update(_mock_pairs(pairs))
    done = dry_run(plan, inputs, mocks, recorded)
    if as_json:
        click.echo(json.dumps(done.as_json(), indent=2))
    else:
        render.print_dry_run(done.as_json())
    sys.exit(0 if done.view["status"] == "succeeded" else 1)


def _plan(target: str) -> Plan:
    """The plan to walk; nothing is imported, but a task the workers would refuse is refused here too."""
    allowed = Allowlist.current()
    if Path(target).exists() or target.endswith((".yaml", ".yml", ".json")):
        loaded = load_file(target)
        return build_plan(loaded.workflow, loaded.source, check_tasks=False, allowlist=allowed)
    with _store().transaction() as tx:  # a registered workflow (NAME or NAME@VERSION), read without writing
        snapshot = tx.definition(resolve_target(tx, target))
    if snapshot is None:
        raise NotFound(f"no workflow named '{shown(target)}' is registered, and no file of that name")
    return build_plan(Workflow.model_validate(snapshot), check_tasks=False, allowlist=allowed)


def _recorded(run_id: str) -> dict[str, Any]:
    return run_view(_store(), run_id)


def _store() -> Repository:
    repo = Repository.from_url(get_settings().database_url)
    repo.check()
    return repo


def _mock_pairs(pairs: tuple[str, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        step, sep, raw = pair.partition("=")
        if not sep or not step:
            raise UsageError(f"--mock takes STEP=JSON, not {pair!r}")
        try:
            found[step] = parse_json(raw, f"--mock {shown(step)}")
        except json.JSONDecodeError as exc:
            raise UsageError(f"--mock {step}: not JSON: {exc.msg} (column {exc.colno})") from None
    return found


def _mocks_file(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(read_file(path, "--mocks"))
    except yaml.YAMLError as exc:
        raise UsageError(f"--mocks {path}: not JSON or YAML: {shown(str(exc), 300)}") from None
    except RecursionError:
        raise UsageError(f"--mocks {path}: nested too deep") from None
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise UsageError(f"--mocks {path}: must map step ids to outputs")
    return check_payload(loaded, f"--mocks {path}")
