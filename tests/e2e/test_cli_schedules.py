"""Schedules through the CLI as a user runs it, on the embedded default: bad schedules refused by
``validate`` and ``register`` (exit 2, nothing stored), then ``schedules list``, ``pause``,
``resume`` and ``trigger``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_runs import embedded, orchestrator

pytestmark = pytest.mark.e2e
__all__ = ["embedded"]

GOOD = """\
name: report
inputs: {type: object, properties: {at: {type: string}}}
steps:
  say: {task: orchestrator.examples:notify, with: {message: "${{ inputs.at }}"}}
outputs: {said: "${{ steps.say.output }}"}
schedules:
  - name: morning
    cron: "0 6 * * 1-5"
    timezone: Europe/Paris
    inputs: {at: "${{ schedule.fire_at }}"}
  - name: often
    every: 30s
    inputs: {at: "${{ schedule.fire_at }}"}
    catchup: none
    overlap: buffer_one
"""
BAD = """\
name: report
steps:
  say: {task: orchestrator.examples:notify, with: {message: hi}}
schedules:
  - {name: a, cron: "0 25 * * *"}
  - {name: b, cron: "0 6 * * *", timezone: Europe/Atlantis}
  - {name: c, every: 0.5}
  - {name: c, every: 1m, catchup: maybe}
  - {name: e, every: 1m, cron: "* * * * *", overlap: wait}
"""


def test_bad_schedules_are_one_line_each_exit_2_and_nothing_is_stored(embedded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)

    result = orchestrator(embedded, tmp_path, "validate", "bad.yaml")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bad.yaml:5: schedule 'a': invalid cron expression '0 25 * * *': [0 25 * * *] is not acceptable, out of range",
        "bad.yaml:6: schedule 'b': unknown time zone 'Europe/Atlantis': use an IANA name such as UTC or Europe/Paris",
        "bad.yaml:7: schedule 'c': every is 0.5; a schedule fires at most once a second",
        "bad.yaml:8: schedule 'c': the name is used by another schedule of this workflow",
        "bad.yaml:8: schedule 'c': unknown catchup 'maybe' (one of none, latest, all)",
        "bad.yaml:9: schedule 'e': give exactly one of cron or every (it has both)",
        "bad.yaml:9: schedule 'e': unknown overlap 'wait' (one of skip, buffer_one, allow, cancel_other)",
    ]
    registered = orchestrator(embedded, tmp_path, "workflows", "register", "bad.yaml")
    assert registered.returncode == 2 and len(registered.stderr.splitlines()) == 1
    listed = orchestrator(embedded, tmp_path, "schedules", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_list_pause_resume_and_trigger(embedded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "report.yaml").write_text(GOOD)
    assert orchestrator(embedded, tmp_path, "workflows", "register", "report.yaml").returncode == 0

    listed = json.loads(orchestrator(embedded, tmp_path, "schedules", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["report/morning", "report/often"]
    morning = listed[0]
    assert set(morning) >= {"name", "workflow", "spec", "timezone", "next", "last_run", "paused"}
    assert morning["workflow"] == "report" and morning["spec"] == "cron 0 6 * * 1-5"
    assert morning["timezone"] == "Europe/Paris" and len(morning["next"]) == 3
    assert morning["last_run"] is None and morning["paused"] is False
    assert (listed[1]["catchup"], listed[1]["overlap"]) == ("none", "buffer_one")

    paused = orchestrator(embedded, tmp_path, "schedules", "pause", "report/often", "--by", "alice", "--reason", "x")
    assert paused.returncode == 0 and paused.stdout.strip() == "schedule report/often paused"
    table = orchestrator(embedded, tmp_path, "schedules", "list", "--workflow", "report").stdout
    assert "yes (by alice)" in table.splitlines()[2]

    # A manual trigger runs now, paused or not, with an in-process worker on the embedded default
    triggered = orchestrator(embedded, tmp_path, "schedules", "trigger", "report/often", "--by", "bob", "--json")
    assert triggered.returncode == 0, triggered.stderr
    done = json.loads(triggered.stdout)
    status = json.loads(orchestrator(embedded, tmp_path, "status", done["run_id"], "--json").stdout)
    assert status["status"] == "succeeded" and status["outputs"] == {"said": f"sent: {done['fire_at']}"}
    runs = json.loads(orchestrator(embedded, tmp_path, "runs", "--json").stdout)
    assert runs[0]["started_by"]["schedule"]["manual"] is True and runs[0]["started_by"]["schedule"]["by"] == "bob"
    often = json.loads(orchestrator(embedded, tmp_path, "schedules", "list", "--json").stdout)[1]
    assert often["last_run"] == {"run_id": done["run_id"], "status": "succeeded"}

    resumed = orchestrator(embedded, tmp_path, "schedules", "resume", "report/often")
    assert resumed.returncode == 0 and resumed.stdout.strip() == "schedule report/often resumed"

    unknown = orchestrator(embedded, tmp_path, "schedules", "trigger", "report/nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: no schedule report/nope (orchestrator schedules list)"
