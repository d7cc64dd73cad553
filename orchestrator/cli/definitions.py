"""``orchestrator validate`` and ``orchestrator schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from orchestrator.definition import Loaded, Workflow, build_plan, load_file, workflow_json_schema
from orchestrator.errors import InvalidDefinition, OrchestratorError, Problem, Severity
from orchestrator.runtime.operations import called_workflows
from orchestrator.settings import get_settings
from orchestrator.store import Repository


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@click.option(
    "--import-any",
    is_flag=True,
    help="Also import and check modules outside ORCHESTRATOR_TASK_MODULES (the workers still refuse them: a warning).",
)
def validate(files: tuple[str, ...], as_json: bool, import_any: bool) -> None:
    """Check workflow files statically; exit 0 when all are valid, 2 when not. Only the modules of
    ORCHESTRATOR_TASK_MODULES and the built-in steps are imported, unless --import-any."""
    problems: list[Problem] = []
    summaries = []
    loaded_files: dict[str, Loaded | InvalidDefinition] = {}
    for path in files:
        try:
            loaded_files[path] = load_file(path)
        except InvalidDefinition as exc:
            loaded_files[path] = exc
    together = {f.workflow.name: f.workflow for f in loaded_files.values() if isinstance(f, Loaded)}
    known = _known_workflows(together, problems)
    for path, loaded in loaded_files.items():
        try:
            if isinstance(loaded, InvalidDefinition):
                raise loaded
            plan = build_plan(loaded.workflow, loaded.source, known_workflows=known, import_any=import_any)
        except InvalidDefinition as exc:
            problems.extend(exc.problems)
            summaries.append({"file": path, "valid": False})
            continue
        problems.extend(plan.warnings)
        summaries.append(
            {
                "file": path,
                "valid": True,
                "workflow": plan.workflow.name,
                "version": plan.version,
                "steps": len(plan.order),
            }
        )
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if as_json:
        click.echo(json.dumps({"files": summaries, "problems": [_problem_json(p) for p in problems]}, indent=2))
    else:
        for problem in sorted(problems, key=lambda p: (p.source or "", p.line or 0)):
            click.echo(str(problem), err=True)
        for summary in summaries:
            if summary["valid"]:
                click.echo(f"{summary['file']}: valid ({summary['steps']} steps, version {summary['version']})")
    sys.exit(2 if errors else 0)


def _known_workflows(together: dict[str, Workflow], problems: list[Problem]) -> dict[str, Workflow]:
    """The workflows the files may call: those given together, then those registered in the
    configured store (when it can be read; validating never creates a store)."""
    known = dict(together)
    settings = get_settings()
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        return known
    try:
        repo = Repository.from_url(settings.database_url)
        with repo.transaction() as tx:
            for workflow in together.values():
                for name, found in called_workflows(tx, workflow).items():
                    known.setdefault(name, found)
    except OrchestratorError as exc:
        problems.append(Problem(f"registered workflows not checked: {exc.message}", severity=Severity.WARNING))
    return known


def _problem_json(problem: Problem) -> dict[str, object]:
    return {
        "file": problem.source,
        "line": problem.line,
        "step": problem.step,
        "severity": problem.severity.value,
        "message": problem.message,
    }


@click.command()
def schema() -> None:
    """Print the JSON Schema of the workflow file format (for editors)."""
    click.echo(json.dumps(workflow_json_schema(), indent=2))
