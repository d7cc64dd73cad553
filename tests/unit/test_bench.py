"""The bench's pure-Python case runs and prints the documented fields (its timings are not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compile_case_prints_one_json_line_per_size() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "compile"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["name"], line["n"]) for line in lines] == [("compile", 1000), ("compile", 10000)]
    for line in lines:
        assert set(line) == {"name", "n", "baseline_s", "ours_s", "ratio"}
        assert (
            line["ratio"] == round(line["ours_s"] / line["baseline_s"], 2)
            or abs(line["ratio"] - line["ours_s"] / line["baseline_s"]) < 0.01
        )


def test_unknown_case_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown case(s): nope" in result.stderr


def test_scale_group_runs_only_when_asked_for() -> None:
    from bench.__main__ import CASES, chosen_cases

    assert chosen_cases([], scale=False) == CASES
    assert chosen_cases([], scale=True) == ["scale"]
    assert chosen_cases(["runs"], scale=True) == ["runs", "scale"]
    assert chosen_cases(["scale"], scale=False) == ["scale"]


def test_drills_group_runs_only_when_named() -> None:
    from bench.__main__ import CASES, chosen_cases

    assert "drills" not in CASES and "drills" not in chosen_cases([], scale=True)
    assert chosen_cases(["drills"], scale=False) == ["drills"]


def test_scale_sizes_are_small_with_quick_and_overridden_by_the_environment() -> None:
    from bench.scale import QUICK, Sizes, sizes

    assert sizes(False, {}) == Sizes(items=100_000, runs=2_000, steps=10, concurrency=100, workers=4)
    assert sizes(True, {}) == QUICK
    assert sizes(True, {"BENCH_SCALE_ITEMS": "5000", "BENCH_SCALE_WORKERS": "2"}) == Sizes(
        items=5_000, runs=QUICK.runs, workers=2
    )
