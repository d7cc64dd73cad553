"""Step checks and the step cache on real workers, PostgreSQL and Redis, through the CLI."""

from __future__ import annotations

import json
import subprocess
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.store import now
from orchestrator.store import tables as t
from tests.conftest import Cluster
from tests.conftest import write_workflow as write

pytestmark = pytest.mark.integration
TYPED = "tests.integration.typed_steps"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


CHECKS = {
    "schema-in": """
    task: "{typed}:refund"
    with: {{order_id: 7}}
    input_schema: {{type: object, properties: {{order_id: {{type: string}}}}}}""",
    "schema-out": """
    task: "{typed}:refund"
    with: {{order_id: A1}}
    output_schema: {{type: object, properties: {{total: {{minimum: 0}}}}}}""",
    "model-out": """
    task: "{typed}:refund"
    with: {{order_id: A1}}
    output_schema: {typed}:Invoice""",
    "asserted": """
    task: "{typed}:refund"
    with: {{order_id: A1}}
    assert: ["${{{{ output.total >= 0 }}}}"]""",
    "annotated": """
    task: "{typed}:invoice"
    with: {{order: {{id: A1, quantity: 0}}, price: 1, ledger: "{ledger}"}}""",
}
ERRORS = {
    "schema-in": "ValidationError: input_schema at $.order_id: 7 is not of type 'string' (got 7)",
    "schema-out": "ValidationError: output_schema at $.total: -1 is less than the minimum of 0 (got -1)",
    "model-out": f"ValidationError: output_schema ({TYPED}:Invoice) at $.total: Input should be greater than or "
    "equal to 0 (got -1) (and 1 more)",
    "asserted": 'ValidationError: assert ${{ output.total >= 0 }} failed (output: {"order_id": "A1", "total": -1})',
    "annotated": "ValidationError: parameter 'order' (Order) at $.order.quantity: Input should be greater than or "
    "equal to 1 (got 0)",
}


def test_each_check_fails_its_step_once_with_its_rule_and_a_dead_letter_entry(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_worker()
    runs = {}
    for name, body in CHECKS.items():
        step = body.format(typed=TYPED, ledger=tmp_path / "ledger")
        text = f"name: {name}\ndefaults: {{retry: {{max_attempts: 3, delay: 100ms}}}}\nsteps:\n  check:{step}\n"
        runs[name] = cluster.start(write(tmp_path, text, f"{name}.yaml"))

    for name, run_id in runs.items():
        view = cluster.wait(run_id)
        check = view["steps"]["check"]
        assert (view["status"], check["status"], check["attempts"], check["error"]) == (
            "failed",
            "failed",
            1,  # three attempts allowed: a failed check is never retried
            ERRORS[name],
        ), name
    entries = json.loads(ok(cluster.cli("dlq", "list", "--json")))
    assert sorted((e["workflow"], e["error"], e["attempts"]) for e in entries) == sorted(
        (name, error, 1) for name, error in ERRORS.items()
    )
    assert not (tmp_path / "ledger").exists()  # the annotated function was never called with a bad Order


def cached(tmp_path: Path, ttl: str | None = None) -> Path:
    cache = "{}" if ttl is None else f"{{ttl: {ttl}}}"
    return write(
        tmp_path,
        f"""
name: cached
inputs: {{type: object, properties: {{q: {{type: integer}}}}}}
steps:
  bill:
    task: "{TYPED}:invoice"
    with: {{order: {{id: A1, quantity: "${{{{ inputs.q }}}}"}}, price: 2.5, ledger: "{tmp_path / "ledger"}"}}
    output_schema: "{TYPED}:Invoice"
    cache: {cache}
outputs: {{bill: "${{{{ steps.bill.output }}}}"}}
""",
        "cached.yaml",
    )


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger"
    return path.read_text().splitlines() if path.exists() else []


def test_a_model_in_and_out_is_cached_across_runs_and_workers(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_worker(concurrency=1, name="w0")
    cluster.start_worker(concurrency=1, name="w1")
    path = cached(tmp_path)

    first = cluster.wait(cluster.start(path, q=3))
    runs = [cluster.wait(cluster.start(path, q=3)) for _ in range(3)]
    other = cluster.wait(cluster.start(path, q=4))

    assert first["status"] == "succeeded" and first["outputs"]["bill"]["total"] == 7.5
    assert calls(tmp_path) == ["invoice A1", "invoice A1"]  # q=3 once, q=4 once
    for view in runs:
        bill = view["steps"]["bill"]
        assert (view["status"], bill["cached"], bill["attempts"], view["outputs"]) == (
            "succeeded",
            True,
            0,
            first["outputs"],
        )
    assert "cached" not in other["steps"]["bill"]
    history = json.loads(ok(cluster.cli("history", runs[0]["run_id"], "--json")))
    assert [e["detail"] for e in history if e["kind"] == "step.cached"] == [{"from_run": first["run_id"]}]
    entries = json.loads(ok(cluster.cli("cache", "list", "--workflow", "cached", "--json")))
    assert sorted((e["step"], e["hits"], e["run_id"]) for e in entries) == sorted(
        [("bill", 3, first["run_id"]), ("bill", 0, other["run_id"])]
    )


def test_an_entry_ends_with_its_ttl_and_when_the_function_changes(cluster: Cluster, tmp_path: Path) -> None:
    # Given a step function in a module of the user's that workers import
    module = tmp_path / "user_steps.py"
    source = """
        from pathlib import Path

        def price(ledger, n):
            Path(ledger).open("a").write("price\\n")
            return n * {factor}
    """
    module.write_text(textwrap.dedent(source.format(factor=2)))
    cluster.env["PYTHONPATH"] += f":{tmp_path}"
    cluster.env["ORCHESTRATOR_TASK_MODULES"] += ",user_steps"
    path = write(
        tmp_path,
        f"""
name: user
steps:
  p: {{task: "user_steps:price", with: {{ledger: "{tmp_path / "ledger"}", n: 5}}, cache: {{ttl: 1h}}}}
outputs: {{p: "${{{{ steps.p.output }}}}"}}
""",
        "user.yaml",
    )
    worker = cluster.start_worker()
    assert cluster.wait(cluster.start(path))["outputs"] == {"p": 10}
    assert cluster.wait(cluster.start(path))["steps"]["p"].get("cached") is True
    assert calls(tmp_path) == ["price"]

    # When the entry's hour has passed, the next run calls the function again
    entries = json.loads(ok(cluster.cli("cache", "list", "--json")))
    assert [e["expired"] for e in entries] == [False] and entries[0]["expires_at"] is not None
    with cluster.repo.transaction() as tx:
        tx.c.execute(sa.update(t.cache_entries).values(expires_at=now() - timedelta(seconds=1)))
    listed = json.loads(ok(cluster.cli("cache", "list", "--json")))
    assert [e["expired"] for e in listed] in ([True], [])  # expired, or already purged by the reconciler
    assert cluster.wait(cluster.start(path))["steps"]["p"].get("cached") is None
    assert calls(tmp_path) == ["price", "price"]

    # When the function is edited and the workers restart on it, its old entries no longer apply
    module.write_text(textwrap.dedent(source.format(factor=3)))
    cluster.stop()
    cluster.workers.remove(worker)
    cluster.start_worker(name="w-new")
    view: dict[str, Any] = cluster.wait(cluster.start(path))
    assert (view["outputs"], view["steps"]["p"].get("cached")) == ({"p": 15}, None)
    assert calls(tmp_path) == ["price", "price", "price"]

    # And clear empties the cache by workflow
    assert ok(cluster.cli("cache", "clear", "--workflow", "user", "--by", "ops")).strip() == "2 cache entries cleared"
    assert json.loads(ok(cluster.cli("cache", "list", "--json"))) == []
