"""Dry runs: the real scheduler over every example with mocked outputs, no step function called
and nothing written to the configured store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.definition import build_plan, load_file, load_text
from orchestrator.errors import UsageError
from orchestrator.runtime.dry_run import Mocks, dry_run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"


def plan_of(name: str) -> Any:
    loaded = load_file(EXAMPLES / name)
    return build_plan(loaded.workflow, loaded.source, check_tasks=False)


def ended(path: list[dict[str, Any]]) -> list[str]:
    """The path as STEP:STATUS (items as STEP[i]), transitions as FROM->TO."""
    found = []
    for entry in path:
        if "transition" in entry:
            found.append(f"{entry['transition']['from']}->{entry['transition']['to']}")
        else:
            step = entry["step"] + (f"[{entry['item']}]" if "item" in entry else "")
            found.append(f"{step}:{entry['status']}")
    return found


@pytest.mark.parametrize(
    ("example", "inputs", "mocks", "path", "outputs"),
    [
        (
            "linear.yaml",
            {"x": 1, "y": 2},
            {"add": 3, "scale": 6},
            ["add:succeeded", "scale:succeeded", "report:succeeded"],
            {"result": 6},
        ),
        (
            "fork-join.yaml",
            {"base": 1},
            {"join": 16},
            ["start:succeeded", "double:succeeded", "triple:succeeded", "plus-ten:succeeded", "join:succeeded"],
            {"total": 16},
        ),
        (
            "if-else.yaml",
            {"amount": 5},
            {"classify": "small", "small-review": {"reviewer": "clerk"}, "record": "ok"},
            ["classify:succeeded", "large-review:skipped", "small-review:succeeded", "record:succeeded"],
            {"decision": "ok"},
        ),
        (
            "foreach.yaml",
            {"order_id": "A1"},
            {"fetch": {"items": ["a", "b", "c"]}, "price": [0, 0, 0]},
            [
                "fetch:succeeded",
                "price[0]:succeeded",
                "price[1]:succeeded",
                "price[2]:succeeded",
                "price:succeeded",
                "charge:skipped",
                "notify:succeeded",
            ],
            {"charged": None},
        ),
        (
            "approval.yaml",
            {"order_id": "A1"},
            {"payment": {"amount": 42}, "sign-off": {"by": ["alice"]}, "ship": {"shipped": True}},
            [
                "fetch:succeeded",
                "payment:succeeded",
                "cool-off:succeeded",
                "sign-off:succeeded",
                "ship:succeeded",
            ],
            {"shipped": {"shipped": True}},
        ),
        (
            "feature-flow.yaml",
            {"feature": "search"},
            {"draft": {"revision": 1}, "review": {"decision": "approved"}, "publish": "done"},
            [
                "draft:succeeded",
                "draft->review",
                "review:succeeded",
                "review->publish",
                "publish:succeeded",
                "publish->done",
                "done:succeeded",
            ],
            {"published": "done"},
        ),
    ],
)
def test_every_example_runs_dry_with_mocks(
    example: str, inputs: dict[str, Any], mocks: dict[str, Any], path: list[str], outputs: Any
) -> None:
    done = dry_run(plan_of(example), inputs, Mocks(mocks))
    assert done.view["status"] == "succeeded", done.view
    assert ended(done.path) == path
    assert done.view["outputs"] == outputs


def test_a_mock_for_an_unknown_step_is_an_error() -> None:
    with pytest.raises(UsageError, match="--mock nope: the workflow has no step 'nope'"):
        dry_run(plan_of("linear.yaml"), {"x": 1, "y": 2}, Mocks({"nope": 1}))


def test_a_dry_run_shows_a_branch_that_fails_without_its_mock() -> None:
    plan = build_plan(
        load_text(
            "name: w\nsteps:\n  a: {task: m:a}\n  b: {needs: a, task: m:b, with: {x: '${{ steps.a.output.x }}'}}\n"
        ).workflow,
        check_tasks=False,
    )
    done = dry_run(plan, {}, Mocks())
    assert done.view["status"] == "failed"
    assert ended(done.path) == ["a:succeeded", "b:failed"]
    assert "cannot look up 'x' in null" in done.view["error"]


def _cli(tmp_path: Path, *args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    env.pop("ORCHESTRATOR_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )


def test_the_cli_dry_run_touches_no_store_and_refuses_bad_mocks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    example = str(EXAMPLES / "linear.yaml")
    result = _cli(tmp_path, example, "-i", "x=1", "-i", "y=2", "--dry-run", "--mock", "scale=6", "--json", url=url)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["dry_run"] is True and found["outputs"] == {"result": 6}
    assert not (tmp_path / "state.db").exists(), "a dry run writes no store"

    bad = _cli(tmp_path, example, "-i", "x=1", "-i", "y=2", "--dry-run", "--mock", "scale={oops", url=url)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --mock scale: not JSON"), bad.stderr
    unknown = _cli(tmp_path, example, "-i", "x=1", "-i", "y=2", "--dry-run", "--mock", "ghost=1", url=url)
    assert unknown.returncode == 2 and "no step 'ghost'" in unknown.stderr
    alone = _cli(tmp_path, example, "--mock", "scale=1", url=url)
    assert alone.returncode == 2 and "apply only with --dry-run" in alone.stderr
