"""``orchestrator validate`` and ``orchestrator schema``."""

from __future__ import annotations

import json
import sys

import click

from orchestrator.definition import build_plan, load_file, workflow_json_schema
from orchestrator.errors import InvalidDefinition, Problem, Severity


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def validate(files: tuple[str, ...], as_json: bool) -> None:
    """Check workflow files statically; exit 0 when all are valid, 2 when not."""
    problems: list[Problem] = []
    summaries = []
    for path in files:
        try:
            loaded = load_file(path)
            plan = build_plan(loaded.workflow, loaded.source)
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
