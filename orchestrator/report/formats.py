"""A report as text: a table for people, JSON and CSV for tools, HTML (see ``html.py``) to share."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "csv", "html")
CSV_COLUMNS = (
    "kind",
    "workflow",
    "step",
    "runs",
    "succeeded",
    "failed",
    "success_rate",
    "attempts",
    "duration_p50_s",
    "duration_p95_s",
    "failure_rate",
    "retries_per_run",
    "queue_p50_s",
    "queue_p95_s",
    "critical_share",
)


def render(report: dict[str, Any], format: str) -> str:
    if format == "json":
        return json.dumps(report, indent=2) + "\n"
    if format == "csv":
        return to_csv(report)
    if format == "html":
        from orchestrator.report.html import to_html

        return to_html(report)
    return to_table(report)


def shown(value: Any, unit: str = "") -> str:
    """A figure as the table and the HTML show it: rates in percent, seconds with their unit."""
    if value is None:
        return "-"
    if unit == "%":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value:.3f}s"
    return f"{value:g}" if isinstance(value, float) else str(value)


def shares(workflow: dict[str, Any]) -> dict[str, float]:
    path = workflow["critical_path"] or {"steps": []}
    return {s["step"]: s["share"] for s in path["steps"]}


def to_csv(report: dict[str, Any]) -> str:
    """One row per workflow (``kind`` workflow) and per step (``kind`` step); empty cells where a
    figure does not apply."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for wf in report["workflows"]:
        writer.writerow({**wf, "kind": "workflow", "step": "", "steps": None})
        on_path = shares(wf)
        for step in wf["steps"]:
            writer.writerow(
                {**step, "kind": "step", "workflow": wf["workflow"], "critical_share": on_path.get(step["step"])}
            )
    return out.getvalue()


def to_table(report: dict[str, Any]) -> str:
    out = io.StringIO()
    console = Console(file=out, width=140, no_color=True, highlight=False)
    scope = f" of {report['workflow']}" if report["workflow"] else ""
    console.print(f"Runs{scope} created from {report['since']} to {report['until']}")
    runs = Table("workflow", "runs", "succeeded", "failed", "cancelled", "active", "success", "p50", "p95")
    for wf in report["workflows"]:
        runs.add_row(
            wf["workflow"],
            *(str(wf[k]) for k in ("runs", "succeeded", "failed", "cancelled", "active")),
            shown(wf["success_rate"], "%"),
            shown(wf["duration_p50_s"], "s"),
            shown(wf["duration_p95_s"], "s"),
        )
    console.print(runs)
    for wf in report["workflows"]:
        console.print(_steps_table(wf))
        path = wf["critical_path"]
        if path:
            chain = " -> ".join(f"{s['step']} {shown(s['share'], '%')}" for s in path["steps"])
            console.print(
                f"critical path ({shown(path['duration_s'], 's')}): {chain}; bottleneck: {path['bottleneck']}"
            )
    return out.getvalue()


def _steps_table(wf: dict[str, Any]) -> Table:
    table = Table(
        "step",
        "runs",
        "attempts",
        "p50",
        "p95",
        "failures",
        "retries/run",
        "queue p50",
        "queue p95",
        "critical",
        title=f"{wf['workflow']}: steps",
    )
    on_path = shares(wf)
    for s in wf["steps"]:
        table.add_row(
            s["step"],
            str(s["runs"]),
            str(s["attempts"]),
            shown(s["duration_p50_s"], "s"),
            shown(s["duration_p95_s"], "s"),
            shown(s["failure_rate"], "%"),
            shown(s["retries_per_run"]),
            shown(s["queue_p50_s"], "s"),
            shown(s["queue_p95_s"], "s"),
            shown(on_path.get(s["step"]), "%"),
        )
    return table
