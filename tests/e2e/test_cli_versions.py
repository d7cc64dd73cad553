"""Versions through the CLI on the embedded default: register, versions, activate, rollback, diff,
run NAME@VERSION; and the bad input a user types, refused in one line with nothing changed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.definition import load_text
from tests.e2e.test_cli_runs import embedded, orchestrator

pytestmark = pytest.mark.e2e
__all__ = ["embedded"]

SUM = """
name: sum
steps:
  add: {task: orchestrator.examples:add, with: {a: 1, b: B}}
outputs: {result: "${{ steps.add.output }}"}
"""
HINT = "(orchestrator workflows versions sum)"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def register(env: dict[str, str], cwd: Path, b: int, *args: str) -> dict[str, Any]:
    path = cwd / f"sum-{b}.yaml"
    path.write_text(SUM.replace("B", str(b)))
    return dict(json.loads(ok(orchestrator(env, cwd, "workflows", "register", path.name, "--json", *args))))


def listed(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    return list(json.loads(ok(orchestrator(env, cwd, "workflows", "versions", "sum", "--json"))))


def result_of(env: dict[str, str], cwd: Path, target: str) -> tuple[str, Any]:
    view = json.loads(ok(orchestrator(env, cwd, "run", target, "--json")))
    return view["version"], view["outputs"]["result"]


def test_register_versions_activate_rollback_and_diff(embedded: dict[str, str], tmp_path: Path) -> None:
    env = {**embedded, "ORCHESTRATOR_ACTOR": "ana"}
    v1 = register(env, tmp_path, 1)["version"]
    second = register(env, tmp_path, 2, "--by", "ben", "--reason", "b is 2")
    v2 = second["version"]
    assert (second["created"], second["activated"], second["previous"]) == (True, True, v1)
    assert result_of(env, tmp_path, "sum") == (v2, 3)

    # versions: newest first, who registered each, which is active, how many runs
    versions = listed(env, tmp_path)
    assert [(v["version"], v["registered_by"], v["active"], v["runs"]) for v in versions] == [
        (v2, "ben", True, 1),
        (v1, "ana", False, 0),
    ]
    assert versions[0]["activations"][0]["reason"] == "b is 2"
    table = ok(orchestrator(env, tmp_path, "workflows", "versions", "sum"))
    assert v1 in table and v2 in table and "active" in table

    # rollback: back to v1, recorded with who did it
    rolled = orchestrator(env, tmp_path, "workflows", "rollback", "sum", "--by", "cy")
    assert ok(rolled).strip() == f"sum rolled back to version {v1} (was {v2})"
    assert result_of(env, tmp_path, "sum") == (v1, 2)
    assert (listed(env, tmp_path)[1]["activated_by"], listed(env, tmp_path)[1]["active"]) == ("cy", True)

    # activate by a prefix, run a pinned version, list and show the active one
    activated = orchestrator(env, tmp_path, "workflows", "activate", "sum", v2[:7])
    assert ok(activated).strip() == f"sum activated version {v2} (was {v1})"
    again = orchestrator(env, tmp_path, "workflows", "activate", "sum", v2)
    assert ok(again).strip() == f"sum version {v2} is already active"
    assert result_of(env, tmp_path, f"sum@{v1[:6]}") == (v1, 2)
    workflows = json.loads(ok(orchestrator(env, tmp_path, "workflows", "list", "--json")))
    assert [(w["name"], w["version"], w["versions"]) for w in workflows] == [("sum", v2, 2)]
    shown = json.loads(ok(orchestrator(env, tmp_path, "workflows", "show", "sum", "--version", v1[:5], "--json")))
    assert (shown["version"], shown["active"]) == (v1, False)
    assert shown["definition"]["steps"]["add"]["with"] == {"a": 1, "b": 1}

    # diff: a unified diff labelled with the versions
    diff = ok(orchestrator(env, tmp_path, "workflows", "diff", "sum", v1[:6], v2[:6]))
    assert diff.splitlines()[:2] == [f"--- sum@{v1}", f"+++ sum@{v2}"]
    assert "-      b: 1\n+      b: 2\n" in diff


def test_registering_again_and_no_activate(embedded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "sum-1.yaml").write_text(SUM.replace("B", "1"))
    (tmp_path / "sum-2.yaml").write_text(SUM.replace("B", "2"))
    first = ok(orchestrator(embedded, tmp_path, "workflows", "register", "sum-1.yaml"))
    kept = ok(orchestrator(embedded, tmp_path, "workflows", "register", "sum-2.yaml", "--no-activate"))
    v1, v2 = first.split()[2], kept.split()[2]

    assert first.strip() == f"sum version {v1} registered and activated"
    assert kept.strip() == f"sum version {v2} registered, not activated (active: {v1})"
    same = ok(orchestrator(embedded, tmp_path, "workflows", "register", "sum-1.yaml"))
    assert same.strip() == f"sum version {v1} already registered, and active"
    back = ok(orchestrator(embedded, tmp_path, "workflows", "register", "sum-2.yaml"))
    assert back.strip() == f"sum version {v2} already registered; activated (was {v1})"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["activate", "sum", "0000"], f"error: workflow sum has no version '0000' {HINT}"),
        (["activate", "nope", "0000"], "error: no workflow named 'nope' is registered (orchestrator workflows list)"),
        (["rollback", "nope"], "error: no workflow named 'nope' is registered (orchestrator workflows list)"),
        (["diff", "sum", "0000", "0001"], f"error: workflow sum has no version '0000' {HINT}"),
        (["show", "sum", "--version", "zz"], f"error: workflow sum has no version 'zz' {HINT}"),
        (["rollback", "sum"], f"error: workflow sum has no earlier version to roll back to {HINT}"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    embedded: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    v1 = register(embedded, tmp_path, 1)["version"]
    before = listed(embedded, tmp_path)

    refused = orchestrator(embedded, tmp_path, "workflows", *args)

    assert (refused.returncode, refused.stderr.splitlines(), refused.stdout) == (2, [message], "")
    assert listed(embedded, tmp_path) == before
    assert before[0]["version"] == v1 and before[0]["active"]


def test_an_ambiguous_prefix_and_an_unknown_pinned_version(embedded: dict[str, str], tmp_path: Path) -> None:
    # Given two versions whose hashes begin with the same digit (of 17, two must)
    hashes = {b: load_text(SUM.replace("B", str(b))).workflow.content_hash() for b in range(17)}
    b1, b2 = next((b, c) for b in hashes for c in hashes if b < c and hashes[b][0] == hashes[c][0])
    shared = hashes[b1][0]
    register(embedded, tmp_path, b1)
    register(embedded, tmp_path, b2)
    before = listed(embedded, tmp_path)

    refused = orchestrator(embedded, tmp_path, "workflows", "activate", "sum", shared, "--by", "ana")
    run = orchestrator(embedded, tmp_path, "run", "sum@ffffffffffffffff")

    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith(f"error: version '{shared}' of workflow sum is ambiguous: it begins {shared}")
    assert (run.returncode, run.stderr.strip()) == (
        2,
        f"error: workflow sum has no version 'ffffffffffffffff' {HINT}",
    )
    assert listed(embedded, tmp_path) == before
    assert json.loads(ok(orchestrator(embedded, tmp_path, "runs", "--json"))) == []
