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
