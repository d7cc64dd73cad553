"""The audit trail through the CLI on the embedded default: --by and --reason on the commands that
change something, list, verify, export; tampering found with exit 1; bad input refused in one line
with exit 2."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_cli_runs import embedded, orchestrator

pytestmark = pytest.mark.e2e
__all__ = ["embedded"]

BROKEN = """
name: broken
steps:
  add: {task: orchestrator.examples:add, with: {a: "x", b: 1}}
"""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def trail(env: dict[str, str], cwd: Path, *filters: str) -> list[tuple[str, str, str | None]]:
    records = json.loads(ok(orchestrator(env, cwd, "audit", "list", "--json", *filters)))
    return [(r["action"], r["actor"], r["reason"]) for r in reversed(records)]


@pytest.fixture
def history(embedded: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A failed run started by ana, its dead letter discarded by ben and purged by the OS user's stand-in."""
    env = {**embedded, "ORCHESTRATOR_ACTOR": "ops"}
    (tmp_path / "broken.yaml").write_text(BROKEN)
    failed = orchestrator(env, tmp_path, "run", "broken.yaml", "--by", "ana", "--reason", "first try", "--json")
    assert failed.returncode == 1, failed.stderr
    [entry] = json.loads(ok(orchestrator(env, tmp_path, "dlq", "list", "--json")))
    ok(orchestrator(env, tmp_path, "dlq", "discard", entry["id"], "--by", "ben", "--reason", "bad input"))
    ok(orchestrator(env, tmp_path, "dlq", "purge", "--older-than", "0s"))
    ok(orchestrator(env, tmp_path, "breakers", "reset", "payments-api", "--reason", "vendor back"))
    return {**env, "RUN_ID": json.loads(failed.stdout)["run_id"]}


def test_commands_record_who_and_why_and_the_trail_lists_verifies_and_exports(
    history: dict[str, str], tmp_path: Path
) -> None:
    env = history
    assert trail(env, tmp_path) == [
        ("run.submit", "ana", "first try"),
        ("dlq.discard", "ben", "bad input"),
        ("dlq.purge", "ops", None),
        ("breaker.reset", "ops", "vendor back"),
    ]
    assert trail(env, tmp_path, "--run", env["RUN_ID"]) == [
        ("run.submit", "ana", "first try"),
        ("dlq.discard", "ben", "bad input"),
    ]
    assert trail(env, tmp_path, "--actor", "ops", "--action", "dlq.*", "--since", "1h") == [("dlq.purge", "ops", None)]
    assert ok(orchestrator(env, tmp_path, "audit", "verify")).startswith("audit chain intact: 4 record(s); head 4 ")
    ok(orchestrator(env, tmp_path, "audit", "export", "--format", "csv", "--output", "audit.csv"))
    rows = list(csv.DictReader((tmp_path / "audit.csv").open()))
    assert [(r["seq"], r["action"]) for r in rows] == [
        ("1", "run.submit"),
        ("2", "dlq.discard"),
        ("3", "dlq.purge"),
        ("4", "breaker.reset"),
    ]
    exported = json.loads(ok(orchestrator(env, tmp_path, "audit", "export", "--format", "json")))
    assert [r["hash"] for r in exported] == [r["hash"] for r in rows]
    assert exported[0]["detail"]["via"] == "cli"


def test_verify_exits_1_naming_a_record_changed_in_the_file(history: dict[str, str], tmp_path: Path) -> None:
    # Given the owner of the SQLite file drops the triggers and rewrites who did record 2
    db = sqlite3.connect(tmp_path / "orchestrator.db", isolation_level=None)
    db.execute("DROP TRIGGER audit_log_no_update")
    db.execute("UPDATE audit_log SET actor = 'ana' WHERE seq = 2")
    db.close()
    refused(orchestrator(history, tmp_path, "audit", "verify"), 1, "broken at record 2: record 2 was changed")
    result = orchestrator(history, tmp_path, "audit", "verify", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["bad_seq"] == 2


def test_an_hmac_chain_needs_its_key_to_verify(embedded: dict[str, str], tmp_path: Path) -> None:
    keyed = {**embedded, "ORCHESTRATOR_AUDIT_KEY": "s3cret"}
    ok(orchestrator(keyed, tmp_path, "breakers", "reset", "x", "--by", "ana"))
    ok(orchestrator(keyed, tmp_path, "audit", "verify"))
    refused(orchestrator(embedded, tmp_path, "audit", "verify"), 2, "record 1 is an HMAC: set ORCHESTRATOR_AUDIT_KEY")
    wrong = {**embedded, "ORCHESTRATOR_AUDIT_KEY": "guess"}
    refused(orchestrator(wrong, tmp_path, "audit", "verify"), 1, "record 1 was changed or inserted")


def test_bad_input_is_refused_in_one_line_with_exit_2(embedded: dict[str, str], tmp_path: Path) -> None:
    refused(orchestrator(embedded, tmp_path, "audit", "list", "--since", "yesterday"), 2, "--since")
    refused(orchestrator(embedded, tmp_path, "audit", "export", "--format", "csv", "--since", "soon"), 2, "--since")
    refused(
        orchestrator(embedded, tmp_path, "audit", "export", "--format", "xml"), 2, "--format must be one of csv, json"
    )
    unwritable = str(tmp_path / "missing" / "audit.csv")
    refused(
        orchestrator(embedded, tmp_path, "audit", "export", "--format", "csv", "--output", unwritable),
        2,
        f"--output: cannot write {unwritable}",
    )
