"""Versions and rollback on real workers, PostgreSQL and Redis: runs by name, by the Celery submit
task, by the client and by a chain start on the active version; a run in flight keeps its own."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.definition import build_plan, load_text
from orchestrator.runtime import versions
from orchestrator.runtime.engine import Engine, Recorder
from orchestrator.runtime.operations import Who, activated
from orchestrator.store import Repository
from tests.conftest import Cluster
from tests.conftest import write_workflow as write

pytestmark = pytest.mark.integration
STEPS = "tests.integration.steps"

QUOTE = f"""
name: quote
on:
  - after: ping
    inputs: {{order: "${{{{ run.inputs.order }}}}"}}
inputs: {{type: object, required: [order], properties: {{order: {{type: string}}}}}}
steps:
  hold: {{wait: {{event: go, key: "${{{{ inputs.order }}}}"}}}}
  quote: {{needs: hold, task: "{STEPS}:echo", with: {{value: RATE}}}}
outputs: {{rate: "${{{{ steps.quote.output }}}}"}}
"""
PING = f"""
name: ping
steps:
  pong: {{task: "{STEPS}:echo", with: {{value: "${{{{ inputs.order }}}}"}}}}
"""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def register(cluster: Cluster, tmp_path: Path, text: str, name: str) -> str:
    out = ok(cluster.cli("workflows", "register", str(write(tmp_path, text, name)), "--json"))
    return str(json.loads(out)["version"])


def quote_for(cluster: Cluster, order: str, timeout: float = 60) -> Any:
    """The run of quote for ``order``, once one exists (it may start through a message)."""
    deadline = time.monotonic() + timeout
    while True:
        with cluster.repo.transaction() as tx:
            found = [r for r in tx.runs(None, "quote", 100) if r.inputs == {"order": order}]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no run of quote for order {order}"
        time.sleep(0.2)


def test_register_v2_then_rollback_while_a_run_of_v1_is_in_flight(cluster: Cluster, tmp_path: Path) -> None:
    v1 = register(cluster, tmp_path, QUOTE.replace("RATE", "1"), "v1.yaml")
    register(cluster, tmp_path, PING, "ping.yaml")
    cluster.start_worker()
    early, late = cluster.start("quote", order="A1"), cluster.start("quote", order="A2")  # both wait, on v1

    # When v2 is registered: runs by name, by the submit task, by the client and by a chain get it
    v2 = register(cluster, tmp_path, QUOTE.replace("RATE", "2"), "v2.yaml")
    cluster.start("quote", order="B")
    sent = cluster.python(
        "from orchestrator.worker.app import app\n"
        "from orchestrator.client import submit\n"
        "app.send_task('orchestrator.submit', kwargs={'workflow': 'quote', 'inputs': {'order': 'C'}})\n"
        "print(submit('quote', {'order': 'D'}))\n"
        f"print(submit('quote@{v1[:6]}', {{'order': 'P'}}))\n"
    )
    assert sent.returncode == 0, sent.stderr
    cluster.start("ping", order="E")
    ok(cluster.cli("signal", "go", "--key", "A1"))  # the early v1 run finishes while v2 is active

    # When rolled back: new runs get v1 again, by name and by the chain
    rolled = json.loads(ok(cluster.cli("workflows", "rollback", "quote", "--by", "ops", "--json")))
    cluster.start("quote", order="F")
    cluster.start("ping", order="G")
    ok(cluster.cli("signal", "go", "--key", "A2"))  # the late v1 run finishes after the rollback
    for order in "BCDEFGP":
        quote_for(cluster, order)
        ok(cluster.cli("signal", "go", "--key", order))

    # Then: every run ended on the version that was active when it started, with its outputs
    assert rolled == {"name": "quote", "version": v1, "previous": v2, "changed": True}
    expected = {"A1": v1, "A2": v1, "B": v2, "C": v2, "D": v2, "E": v2, "F": v1, "G": v1, "P": v1}
    ended = {order: cluster.wait(quote_for(cluster, order).id) for order in expected}
    assert {o: v["version"] for o, v in ended.items()} == expected
    rates = {o: {"rate": 1 if v == v1 else 2} for o, v in expected.items()}
    assert {o: v["outputs"] for o, v in ended.items()} == rates
    assert ended["A1"]["run_id"] == early and ended["A2"]["run_id"] == late
    assert {o for o, v in ended.items() if v.get("started_by")} == {"E", "G"}
    listed = json.loads(ok(cluster.cli("workflows", "versions", "quote", "--json")))
    assert [(v["version"], v["active"], v["runs"]) for v in listed] == [(v2, False, 4), (v1, True, 5)]
    assert (listed[1]["activated_by"], listed[1]["activations"][0]["action"]) == ("ops", "rollback")


def test_an_activation_waits_for_one_in_progress_and_the_last_one_wins(database_url: str) -> None:
    # Given two versions of a workflow, each subscribed to a different upstream
    repo = Repository.from_url(database_url)
    engine = Engine.create(repo, Recorder(), renew_leases=False)
    follower = "name: down\non: [{after: UP}]\nsteps:\n  b: {task: 'm:b'}\n"
    on_x, on_y = (build_plan(load_text(follower.replace("UP", up)).workflow, check_tasks=False) for up in "xy")
    for plan in (on_x, on_y):
        versions.register(engine, plan, Who("setup"))
    errors: list[BaseException] = []

    def activate_x() -> None:
        try:
            versions.activate(engine, "down", on_x.version, Who("second"))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    # When another process is activating y, and this one activates x meanwhile
    second = threading.Thread(target=activate_x)
    with repo.transaction() as tx:
        tx.lock_workflow("down")
        second.start()
        wait_for_a_lock_waiter(repo)  # the second activation waits for the first
        tx.activate("down", on_y.version, "activate", "first", None)
        activated(tx, on_y)
    second.join(60)

    # Then: the second activation ran after the first, and what starts runs is the active version's
    assert errors == [] and not second.is_alive()
    with repo.transaction() as tx:
        assert [a["by"] for a in tx.activations("down")[-2:]] == ["first", "second"]
        assert tx.active_version("down") == on_x.version
        assert tx.subscribers("after", "x") == [("down", on_x.version, 0)]
        assert tx.subscribers("after", "y") == []
    repo.engine.dispose()


def wait_for_a_lock_waiter(repo: Repository, timeout: float = 30) -> None:
    """Until some session of this database waits for an advisory lock."""
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'"
    )
    deadline = time.monotonic() + timeout
    with repo.engine.connect() as connection:
        while not connection.execute(waiting).scalar():
            assert time.monotonic() < deadline, "the second activation did not wait for the first"
            time.sleep(0.05)
            connection.rollback()


def test_two_workflows_calling_each_other_cannot_be_activated_at_the_same_time(database_url: str) -> None:
    # Given beta being registered (it calls alpha) while alpha is registered (it calls beta) at once
    repo = Repository.from_url(database_url)
    engine = Engine.create(repo, Recorder(), renew_leases=False)
    alpha = build_plan(load_text("name: alpha\nsteps:\n  b: {workflow: beta}\n").workflow, check_tasks=False)
    beta = build_plan(load_text("name: beta\nsteps:\n  a: {workflow: alpha}\n").workflow, check_tasks=False)
    errors: list[BaseException] = []

    def register_alpha() -> None:
        try:
            versions.register(engine, alpha, Who("second"))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    second = threading.Thread(target=register_alpha)
    with repo.transaction() as tx:
        tx.lock_workflow("beta")
        second.start()
        wait_for_a_lock_waiter(repo)  # one lock for every activation: alpha waits for beta
        tx.save_definition(beta.version, "beta", beta.workflow.snapshot())
        tx.register("beta", beta.version, "first")
        tx.activate("beta", beta.version, "register", "first", None)
        activated(tx, beta)
    second.join(60)

    # Then alpha, checked once beta is active, is refused: a workflow cannot call itself through others
    assert not second.is_alive() and len(errors) == 1
    assert "call" in str(errors[0]) and type(errors[0]).__name__ == "InvalidDefinition"
    with repo.transaction() as tx:
        assert tx.active_version("alpha") is None
    repo.engine.dispose()
