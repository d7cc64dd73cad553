"""Versions and rollback in-process on SQLite: registering makes a version active, ``activate`` and
``rollback`` move the active version, runs by name start on it, and runs in flight keep theirs."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.definition import Plan, build_plan, load_text
from orchestrator.errors import NotFound, UsageError
from orchestrator.runtime import operations, versions
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.signal import signal
from orchestrator.runtime.views import run_view
from tests.unit.harness import drive

ANA, BEN = Who("ana", "first cut"), Who("ben")
PRICE = """
name: price
steps:
  hold: {wait: {event: go, key: "${{ inputs.order }}"}}
  quote: {needs: hold, task: "m:quote", with: {rate: RATE}}
outputs: {rate: "${{ steps.quote.output.rate }}"}
"""


def plan_of(text: str) -> Plan:
    return build_plan(load_text(text).workflow, check_tasks=False)


def price(rate: int) -> Plan:
    return plan_of(PRICE.replace("RATE", str(rate)))


def start(engine: Engine, target: str, order: str) -> str:
    run_id = operations.submit(engine, operations.registered_plan(engine, target), {"order": order}).run_id
    drive(engine)
    return run_id


def finish(engine: Engine, order: str) -> None:
    signal(engine, "go", order, None, None, BEN)
    drive(engine)


def active(engine: Engine, name: str = "price") -> str | None:
    with engine.repo.transaction() as tx:
        return tx.active_version(name)


def history(engine: Engine, name: str = "price") -> list[dict[str, Any]]:
    with engine.repo.transaction() as tx:
        return tx.activations(name)


def test_register_activates_and_rollback_goes_back_while_a_run_in_flight_keeps_its_version(engine: Engine) -> None:
    v1, v2 = price(1), price(2)
    first = versions.register(engine, v1, ANA)
    assert (first.created, first.activated, first.previous) == (True, True, None)
    in_flight = start(engine, "price", "A")  # waits for its signal, on v1

    second = versions.register(engine, v2, BEN)
    assert (second.created, second.activated, second.previous) == (True, True, v1.version)
    on_v2 = start(engine, "price", "B")
    back = versions.rollback(engine, "price", Who("cy", "v2 quotes wrong"))
    on_v1 = start(engine, "price", "C")
    for order in "ABC":
        finish(engine, order)

    # Then: each run kept the version it started on, with that version's outputs
    runs = {r: run_view(engine.repo, r) for r in (in_flight, on_v2, on_v1)}
    assert [(v["version"], v["outputs"]) for v in runs.values()] == [
        (v1.version, {"rate": 1}),
        (v2.version, {"rate": 2}),
        (v1.version, {"rate": 1}),
    ]
    assert (back.version, back.previous, back.changed) == (v1.version, v2.version, True)
    assert active(engine) == v1.version
    listed = versions.versions_view(engine.repo, "price")
    assert [(v["version"], v["active"], v["runs"], v["registered_by"]) for v in listed] == [
        (v2.version, False, 1, "ben"),
        (v1.version, True, 2, "ana"),
    ]
    assert listed[1]["activations"][0] == {
        "at": listed[1]["activated_at"],
        "by": "cy",
        "action": "rollback",
        "reason": "v2 quotes wrong",
    }
    assert [a["action"] for a in listed[1]["activations"]] == ["rollback", "register"]


def test_rollback_is_an_undo_each_time_back_one_more_version(engine: Engine) -> None:
    v1, v2, v3 = price(1), price(2), price(3)
    for plan in (v1, v2, v3):
        versions.register(engine, plan, ANA)

    assert versions.rollback(engine, "price", BEN).version == v2.version
    assert versions.rollback(engine, "price", BEN).version == v1.version
    with pytest.raises(UsageError, match="workflow price has no earlier version to roll back to"):
        versions.rollback(engine, "price", BEN)
    assert active(engine) == v1.version and len(history(engine)) == 5

    # activate goes forward again; a rollback then undoes that activation
    versions.activate(engine, "price", v3.version[:6], BEN)
    assert versions.rollback(engine, "price", BEN).version == v1.version


def test_registering_a_known_version_activates_it_unless_no_activate(engine: Engine) -> None:
    v1, v2 = price(1), price(2)
    versions.register(engine, v1, ANA)
    versions.register(engine, v2, ANA)

    kept = versions.register(engine, v1, BEN, activate=False)
    assert (kept.created, kept.activated, active(engine)) == (False, False, v2.version)
    again = versions.register(engine, v1, BEN)
    assert (again.created, again.activated, again.previous, active(engine)) == (False, True, v2.version, v1.version)
    same = versions.register(engine, v1, BEN)
    assert (same.created, same.activated) == (False, False)
    assert len(history(engine)) == 3  # v1, v2, v1 again: registering the active one records nothing
    assert versions.versions_view(engine.repo, "price")[1]["registered_by"] == "ana"  # the first registration's


def test_no_activate_on_a_first_registration_leaves_nothing_to_run_by_name(engine: Engine) -> None:
    v1 = price(1)
    versions.register(engine, v1, ANA, activate=False)

    with pytest.raises(NotFound, match="workflow price has no active version"):
        operations.registered_plan(engine, "price")
    assert operations.registered_plan(engine, f"price@{v1.version[:4]}").version == v1.version
    assert versions.activate(engine, "price", v1.version, BEN).previous is None
    assert operations.registered_plan(engine, "price").version == v1.version


def test_name_at_version_pins_a_run_to_that_version(engine: Engine) -> None:
    v1, v2 = price(1), price(2)
    versions.register(engine, v1, ANA)
    versions.register(engine, v2, ANA)

    pinned = start(engine, f"price@{v1.version[:8]}", "A")
    finish(engine, "A")

    view = run_view(engine.repo, pinned)
    assert (view["version"], view["outputs"]) == (v1.version, {"rate": 1})
    assert active(engine) == v2.version


def test_unknown_and_ambiguous_versions_are_refused_and_nothing_is_stored(engine: Engine) -> None:
    registered = [price(rate) for rate in range(1, 40)]
    for plan in registered:
        versions.register(engine, plan, ANA)
    prefixes: dict[str, int] = {}
    for plan in registered:
        prefixes[plan.version[0]] = prefixes.get(plan.version[0], 0) + 1
    shared = next(p for p, n in prefixes.items() if n > 1)  # 39 versions over 16 first digits
    before = history(engine)

    with pytest.raises(UsageError, match=f"version '{shared}' of workflow price is ambiguous: it begins {shared}"):
        versions.activate(engine, "price", shared, BEN)
    with pytest.raises(NotFound, match="workflow price has no version 'nothex' "):
        versions.activate(engine, "price", "nothex", BEN)
    with pytest.raises(NotFound, match="no workflow named 'other' is registered"):
        versions.activate(engine, "other", registered[0].version, BEN)
    with pytest.raises(NotFound, match="no workflow named 'other' is registered"):
        versions.rollback(engine, "other", BEN)
    with pytest.raises(NotFound, match="workflow price has no version"):
        operations.registered_plan(engine, "price@0000000000000000")
    assert history(engine) == before


def test_a_version_of_another_workflow_is_not_one_of_this_one(engine: Engine) -> None:
    versions.register(engine, price(1), ANA)
    other = versions.register(engine, plan_of("name: other\nsteps:\n  a: {task: 'm:a'}\n"), ANA)

    with pytest.raises(NotFound, match=f"workflow price has no version '{other.version}'"):
        versions.activate(engine, "price", other.version, BEN)


def test_diff_is_a_unified_diff_of_the_snapshots_labelled_with_the_versions(engine: Engine) -> None:
    v1, v2 = price(1), price(2)
    versions.register(engine, v1, ANA)
    versions.register(engine, v2, ANA)

    before, after, text = versions.diff(engine.repo, "price", v1.version[:5], v2.version)

    assert (before, after) == (v1.version, v2.version)
    assert text.startswith(f"--- price@{v1.version}\n+++ price@{v2.version}\n@@")
    changed = [line for line in text.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert changed == ["-      rate: 1", "+      rate: 2"]
    assert versions.diff(engine.repo, "price", v1.version, v1.version)[2] == ""


def test_chains_follow_the_active_version(engine: Engine) -> None:
    versions.register(engine, plan_of("name: up\nsteps:\n  a: {task: 'm:a'}\n"), ANA)
    follower = "name: down\non: [{after: up}]\nsteps:\n  b: {task: 'm:TASK'}\n"
    first = versions.register(engine, plan_of(follower.replace("TASK", "one")), ANA)
    versions.register(engine, plan_of(follower.replace("TASK", "two")), ANA)
    versions.rollback(engine, "down", BEN)

    with engine.repo.transaction() as tx:
        assert tx.subscribers("after", "up") == [("down", first.version, 0)]
    upstream = operations.submit(engine, operations.registered_plan(engine, "up"), {}).run_id
    drive(engine)
    with engine.repo.transaction() as tx:
        chained = tx.runs(None, "down", 10)
    assert [r.version for r in chained] == [first.version]
    assert chained[0].started_by["after"]["run_id"] == upstream


def test_a_sub_workflow_step_may_pin_a_version_by_a_prefix_of_its_hash(engine: Engine) -> None:
    child = plan_of("name: kid\nsteps:\n  a: {task: m:a, with: {v: 1}}\noutputs: {v: '${{ steps.a.output.v }}'}\n")
    versions.register(engine, child, Who("ops"))
    versions.register(engine, plan_of("name: kid\nsteps:\n  a: {task: m:a, with: {v: 2}}\n"), Who("ops"))
    parent = plan_of(
        f"name: parent\nsteps:\n  k: {{workflow: 'kid@{child.version[:6]}'}}\n"
        "outputs: {k: '${{ steps.k.output }}'}\n"
    )
    versions.register(engine, parent, Who("ops"))

    run_id = operations.submit(engine, parent, {}).run_id
    drive(engine)
    view = run_view(engine.repo, run_id)
    assert (view["status"], view["outputs"]) == ("succeeded", {"k": {"v": 1}})  # the pinned v1, not the active v2

    wrong = plan_of("name: parent2\nsteps:\n  k: {workflow: 'kid@zzzz'}\n")
    run_id = operations.submit(engine, wrong, {}).run_id
    drive(engine)
    assert run_view(engine.repo, run_id)["error"] == (
        "k: ChildRunRefused: workflow kid has no version 'zzzz' (orchestrator workflows versions kid)"
    )
