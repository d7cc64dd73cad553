"""Rich tables for runs, steps and events; nothing here decides anything."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

_COLOURS = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "skipped": "dim",
    "running": "cyan",
    "queued": "yellow",
    "pending": "white",
    "waiting": "blue",
    "paused": "yellow",
}
console = Console()


def _status(value: str) -> str:
    return f"[{_COLOURS.get(value, 'white')}]{value}[/]"


def _short(value: Any, size: int = 60) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= size else text[: size - 3] + "..."


def run_table(view: dict[str, Any]) -> Table:
    title = f"{view['workflow']} run {view['run_id']}: {_status(view['status'])}"
    parent = view.get("parent")
    if parent:
        title += f"\nchild of run {parent['run_id']}" + (f", step {parent['step']}" if parent.get("step") else "")
    origin = view.get("started_by") or {}
    if "after" in origin:
        after = origin["after"]
        title += f"\nstarted by run {after['run_id']} of {after['workflow']} ({after['status']})"
    elif "event" in origin:
        title += f"\nstarted by event {origin['event']['name']} ({origin['event']['id']})"
    table = Table(title=title, title_justify="left")
    for column in ("step", "status", "attempts", "output / error"):
        table.add_column(column)
    for name, step in view["steps"].items():
        status = step["status"]
        if "items" in step:
            done = step["items"].get("succeeded", 0)
            status = f"{status} ({done}/{step['items']['total']})"
        detail = step["error"] or step.get("reason") or _waiting(step.get("waiting_for")) or _short(step["output"])
        if step.get("child_run") and "waiting_for" not in step:
            detail = f"child run {step['child_run']}: {detail}"
        table.add_row(
            name, _status(step["status"]) + status[len(step["status"]) :], str(step["attempts"]), _short(detail, 80)
        )
    if view.get("error"):
        table.caption = f"[red]{view['error']}[/]"
    elif view.get("outputs") is not None:
        table.caption = f"outputs: {_short(view['outputs'], 100)}"
    return table


def _waiting(what: dict[str, Any] | None) -> str | None:
    if not what:
        return None
    if "event" in what:
        key = f" (key {what['key']})" if what.get("key") else ""
        return f"waiting for {what['event']}{key}"
    if "timer" in what:
        return f"timer until {_when(what['timer'])}"
    if "retry_at" in what:
        return f"waits again at {_when(what['retry_at'])}"
    if "child_run" in what:
        return f"waiting for child run {what['child_run']}"
    return "waiting for approval (orchestrator approvals)"


@contextmanager
def live(quiet: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function to show the latest view: a live table on a terminal, the final one elsewhere."""
    if quiet:
        yield lambda view: None
        return
    if not console.is_terminal:
        latest: dict[str, Any] = {}
        yield latest.update
        if latest:
            console.print(run_table(latest))
        return
    with Live(console=console, refresh_per_second=8) as display:
        yield lambda view: display.update(run_table(view))


def print_run(view: dict[str, Any]) -> None:
    console.print(run_table(view))


def print_runs(views: list[dict[str, Any]]) -> None:
    """Run ids are printed whole, whatever the terminal's width: every command takes one."""
    wide = console.width >= 120
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("run", no_wrap=True, min_width=36)
    table.add_column("workflow", overflow="ellipsis", min_width=8, max_width=30)
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    if wide:
        table.add_column("finished", no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True)
    for v in views:
        times = [_when(v["created_at"])] + ([_when(v["finished_at"])] if wide else [])
        table.add_row(v["run_id"], v["workflow"], _status(v["status"]), *times, _short(v["error"], 50))
    console.print(table)


def _when(value: str | None) -> str:
    """An ISO time (UTC) as a short stamp: 12-02 13:16:06."""
    return "" if not value else value[5:19].replace("T", " ")


def print_approvals(found: list[dict[str, Any]]) -> None:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("run", no_wrap=True, min_width=36)
    for column in ("step", "approvers", "approved", "since", "deadline"):
        table.add_column(column, overflow="fold")
    for a in found:
        who = ", ".join(a["approvers"]) or "anyone"
        table.add_row(
            a["run_id"],
            a["step"],
            who,
            f"{len(a['approved_by'])}/{a['required']}",
            _when(a["since"]),
            _when(a["deadline"]) or "none",
        )
    console.print(table)


def print_history(events: list[dict[str, Any]]) -> None:
    table = Table()
    for column in ("at", "event", "step", "detail"):
        table.add_column(column)
    for e in events:
        step = e["step"] or ""
        if e["item_index"] is not None:
            step = f"{step}[{e['item_index']}]"
        table.add_row(e["at"], e["kind"], step, _short(e["detail"], 80))
    console.print(table)


def print_dead_letters(entries: list[dict[str, Any]]) -> None:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=36)  # whole: dlq show/replay/discard take it
    for column in ("workflow", "run", "step", "status", "attempts", "failed", "error"):
        table.add_column(column, overflow="ellipsis", no_wrap=True, min_width=6 if column != "error" else None)
    for e in entries:
        step = e["step"] if e["item_index"] is None else f"{e['step']}[{e['item_index']}]"
        table.add_row(
            e["id"],
            e["workflow"],
            e["run_id"],
            step,
            e["status"],
            str(e["attempts"]),
            _when(e["failed_at"]),
            _short(e["error"], 60),
        )
    console.print(table)


def print_dry_run(found: dict[str, Any]) -> None:
    """The path a dry run took, then its steps and outputs, then what changed from a recorded run."""
    path = Table(title=f"dry run of {found['workflow']}: {_status(found['status'])}", title_justify="left")
    for column in ("#", "step", "status", "why"):
        path.add_column(column)
    for number, entry in enumerate(found["path"], 1):
        if "transition" in entry:
            move = entry["transition"]
            path.add_row(str(number), f"{move['from']} -> {move['to']}", "transition", _short(move["reason"], 60))
            continue
        step = entry["step"] if "item" not in entry else f"{entry['step']}[{entry['item']}]"
        path.add_row(str(number), step, _status(entry["status"]), _short(entry.get("why"), 60))
    console.print(path)
    console.print(
        f"outputs: {_short(found.get('outputs'), 200)}" if not found.get("error") else f"[red]{found['error']}[/]"
    )
    if found.get("differences") is not None:
        if not found["differences"]:
            console.print("no difference from the recorded run")
        for change in found["differences"]:
            where = "outputs" if change.get("outputs") else f"step {change['step']}"
            console.print(f"{where}: recorded {_short(change['recorded'], 70)} -> now {_short(change['now'], 70)}")


def print_versions(views: list[dict[str, Any]]) -> None:
    """Versions whole (activate, diff and run NAME@VERSION take them), the active one marked."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("version", no_wrap=True, min_width=16)
    table.add_column("active", no_wrap=True, min_width=6)
    table.add_column("runs", no_wrap=True, justify="right")
    table.add_column("registered", overflow="fold")
    table.add_column("last activated", overflow="fold")
    for v in views:
        table.add_row(
            v["version"],
            "[green]active[/]" if v["active"] else "",
            str(v["runs"]),
            _stamp(v["registered_at"], v["registered_by"]),
            _stamp(v["activated_at"], v["activated_by"]),
        )
    console.print(table)


def _stamp(at: str | None, by: str | None) -> str:
    return "" if not at else f"{_when(at)} by {by or '?'}"
