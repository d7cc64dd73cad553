"""``orchestrator report`` on SQLite: a seeded history with known durations and failures gives the
expected figures, in all four formats; bad input is one line and exit 2."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.report.compute import build_report
from orchestrator.report.formats import render, shown
from orchestrator.settings import get_settings
from orchestrator.store import Repository
from tests.report_history import AT, check_report, history, seed

WEEK = 7 * 86400.0


@pytest.fixture
def seeded(repo: Repository) -> Repository:
    seed(repo, history())
    return repo


def test_the_figures_are_those_of_the_seeded_history(seeded: Repository) -> None:
    report = build_report(seeded, WEEK, at=AT)
    check_report(report, history(), AT - timedelta(days=7))
    shop = next(wf for wf in report["workflows"] if wf["workflow"] == "shop")
    # Given four succeeded runs whose price step is slowest, and one run failed at price after a retry
    assert shop["success_rate"] == 0.8
    price = next(s for s in shop["steps"] if s["step"] == "price")
    assert (price["failure_rate"], price["retries_per_run"], price["attempts"]) == (0.2, 0.2, 6)
    # Then the typical run's critical path is fetch -> price -> charge, and price is its bottleneck
    path = shop["critical_path"]
    assert [s["step"] for s in path["steps"]] == ["fetch", "price", "charge"]
    assert path["bottleneck"] == "price"
    assert [s["share"] for s in path["steps"]] == [round(3 / 16.25, 4), round(11.25 / 16.25, 4), round(2 / 16.25, 4)]
    assert [p["bucket"] for p in shop["timeline"]] == ["2026-11-30", "2026-12-01"]


def test_the_window_and_the_workflow_filter(seeded: Repository) -> None:
    assert [wf["workflow"] for wf in build_report(seeded, WEEK, "mail", at=AT)["workflows"]] == ["mail"]
    ten_days = build_report(seeded, 10 * 86400.0, "mail", at=AT)["workflows"][0]
    assert ten_days["runs"] == 4  # the run of nine days ago is in
    assert build_report(seeded, 60.0, at=AT)["workflows"] == []


def test_json_csv_table_and_html_show_the_same_figures(seeded: Repository) -> None:
    report = build_report(seeded, WEEK, at=AT)
    assert json.loads(render(report, "json")) == report
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    by_key = {(r["kind"], r["workflow"], r["step"]): r for r in rows}
    shop = next(wf for wf in report["workflows"] if wf["workflow"] == "shop")
    assert float(by_key[("workflow", "shop", "")]["duration_p95_s"]) == shop["duration_p95_s"]
    for step in shop["steps"]:
        row = by_key[("step", "shop", step["step"])]
        assert float(row["duration_p50_s"]) == step["duration_p50_s"]
        assert float(row["queue_p95_s"]) == step["queue_p95_s"]
    assert by_key[("step", "shop", "price")]["critical_share"] == str(shop["critical_path"]["steps"][1]["share"])
    table = render(report, "table")
    assert "bottleneck: price" in table and shown(shop["duration_p95_s"], "s") in table
    html = render(report, "html")
    figures = dict(re.findall(r"data-figure='([^']+)'>([^<]*)<", html))
    assert figures["shop/price/duration_p95_s"] == shown(15.0, "s")
    assert figures["shop//success_rate"] == "80.0%"


def test_the_html_needs_no_network(seeded: Repository) -> None:
    html = render(build_report(seeded, WEEK, at=AT), "html")
    assert "<svg" in html
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)
    assert "<script" not in html and "@import" not in html


@pytest.fixture
def cli_store(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repository]:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", str(repo.engine.url))
    get_settings.cache_clear()
    yield repo
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "a week"], "error: --since: invalid duration 'a week'"),
        (["--format", "pdf"], "error: --format: unknown format 'pdf'"),
        (["--output", "/nonexistent-dir/report.html"], "error: --output: cannot write /nonexistent-dir/report.html"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli_store: Repository, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["report", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_the_command_writes_the_report(cli_store: Repository, tmp_path: Path) -> None:
    seed(cli_store, history())
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["report", "--since", "3650d", "--format", "json", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert {wf["workflow"] for wf in json.loads(out.read_text())["workflows"]} == {"mail", "shop"}
