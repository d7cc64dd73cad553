"""Checks and the step cache through the CLI on the embedded default, as a user types it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.e2e.test_cli_runs import embedded, orchestrator

__all__ = ["embedded"]
TYPED = "tests.unit.typed_steps"

CACHED = f"""
name: billed
inputs: {{type: object, properties: {{q: {{type: integer}}}}}}
steps:
  bill:
    task: "{TYPED}:invoice"
    with: {{order: {{id: A1, quantity: "${{{{ inputs.q }}}}"}}, price: 2.5}}
    output_schema: "{TYPED}:Invoice"
    assert: "${{{{ output.total > 0 }}}}"
    cache: {{ttl: 1d}}
outputs: {{total: "${{{{ steps.bill.output.total }}}}"}}
"""


def test_a_cached_typed_step_runs_once_and_the_cache_is_listed_and_cleared(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "billed.yaml").write_text(CACHED)
    first = json.loads(orchestrator(embedded, tmp_path, "run", "billed.yaml", "-i", "q=2", "--json").stdout)
    second = json.loads(orchestrator(embedded, tmp_path, "run", "billed.yaml", "-i", "q=2", "--json").stdout)

    assert (first["status"], first["outputs"]) == ("succeeded", {"total": 5.0})
    assert "cached" not in first["steps"]["bill"]
    assert (second["outputs"], second["steps"]["bill"]["cached"], second["steps"]["bill"]["attempts"]) == (
        first["outputs"],
        True,
        0,
    )
    listed = orchestrator(embedded, tmp_path, "cache", "list", "--json")
    (entry,) = json.loads(listed.stdout)
    assert (entry["workflow"], entry["step"], entry["hits"], entry["run_id"]) == ("billed", "bill", 1, first["run_id"])
    assert entry["expires_at"] is not None and entry["expired"] is False

    refused = orchestrator(embedded, tmp_path, "cache", "clear", "--step", "bill")
    assert (refused.returncode, refused.stderr) == (
        2,
        "error: --step needs --workflow: step ids are only unique within a workflow\n",
    )
    cleared = orchestrator(
        embedded, tmp_path, "cache", "clear", "--workflow", "billed", "--step", "bill", "--by", "ops"
    )
    assert (cleared.returncode, cleared.stdout) == (0, "1 cache entry cleared\n")
    assert json.loads(orchestrator(embedded, tmp_path, "cache", "list", "--json").stdout) == []


def test_a_failed_check_exits_1_with_the_rule_in_the_error_and_the_dlq(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "billed.yaml").write_text(CACHED)
    result = orchestrator(embedded, tmp_path, "run", "billed.yaml", "-i", "q=0", "--json")

    assert result.returncode == 1
    expected = (
        "bill: ValidationError: parameter 'order' (Order) at $.order.quantity: Input should be greater than or "
        "equal to 1 (got 0)"
    )
    assert json.loads(result.stdout)["error"] == expected
    (entry,) = json.loads(orchestrator(embedded, tmp_path, "dlq", "list", "--json").stdout)
    assert (entry["step"], entry["error"], entry["attempts"]) == ("bill", expected.removeprefix("bill: "), 1)
    assert json.loads(orchestrator(embedded, tmp_path, "cache", "list", "--json").stdout) == []  # only successes


def test_bad_schemas_and_models_are_one_line_errors_exit_2_and_store_nothing(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text(
        f"""name: bad
steps:
  a:
    task: "{TYPED}:total"
    input_schema: {{type: objekt}}
    output_schema: "{TYPED}:NOT_A_MODEL"
"""
    )
    expected = [
        "bad.yaml:5: step 'a': input_schema is not a valid JSON Schema: 'objekt' is not valid under any of the given "
        "schemas",
        f"bad.yaml:6: step 'a': output_schema '{TYPED}:NOT_A_MODEL' is not a pydantic model (it is int)",
    ]
    validated = orchestrator(embedded, tmp_path, "validate", "bad.yaml")
    assert (validated.returncode, validated.stderr.splitlines()) == (2, expected)
    for command in (["run", "bad.yaml"], ["workflows", "register", "bad.yaml"]):  # the first, and how many more
        result = orchestrator(embedded, tmp_path, *command)
        assert (result.returncode, result.stderr) == (2, f"error: {expected[0]} (and 1 more)\n"), command
    with sqlite3.connect(tmp_path / "orchestrator.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in {"runs", "definitions", "workflows"} & tables:
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
