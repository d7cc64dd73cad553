"""Chaining and events in-process on SQLite: runs started by another run's end or by an emitted
event, exactly once per upstream, with the chain's length capped."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.definition import WorkflowBuilder, build_plan, load_text
from orchestrator.errors import InvalidDefinition, UsageError
from orchestrator.runtime import operations
from orchestrator.runtime.chaining import after_run
from orchestrator.runtime.emit import emit
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.views import history_view, run_view, runs_view
from orchestrator.settings import get_settings
from tests.unit.harness import Ledger, drive

OPS = Who("ops")


def register(engine: Engine, text: str) -> None:
    operations.register(engine, build_plan(load_text(text).workflow, check_tasks=False))


def start(engine: Engine, name: str, inputs: dict[str, Any]) -> str:
    run_id = operations.submit(engine, operations.registered_plan(engine, name), inputs).run_id
    drive(engine)
    return run_id


def runs_of(engine: Engine, workflow: str) -> list[dict[str, Any]]:
    return runs_view(engine.repo, None, workflow, 100)


ORDERS = """
name: orders
steps:
  price: {task: "m:price", with: {total: "${{ inputs.total }}"}}
outputs: {total: "${{ steps.price.output.total }}"}
"""
INVOICE = """
name: invoice
on:
  - after: orders
    if: ${{ run.outputs.total > 100 }}
    inputs: {order_run: "${{ run.id }}", total: "${{ run.outputs.total }}"}
steps:
  bill: {task: "m:bill", with: {total: "${{ inputs.total }}"}}
"""


def test_a_run_that_ends_starts_its_subscribers_once_when_their_if_holds(engine: Engine) -> None:
    register(engine, ORDERS)
    register(engine, INVOICE)

    big = start(engine, "orders", {"total": 250})
    small = start(engine, "orders", {"total": 50})

    # Then: only the big order started an invoice, with inputs from the upstream run
    invoices = runs_of(engine, "invoice")
    assert len(invoices) == 1
    assert invoices[0]["inputs"] == {"order_run": big, "total": 250}
    assert invoices[0]["status"] == "succeeded"
    assert invoices[0]["started_by"] == {
        "after": {"run_id": big, "workflow": "orders", "status": "succeeded"},
        "entry": 0,
    }
    assert ("run.chained", {"workflow": "invoice", "run_id": invoices[0]["run_id"]}) in [
        (e["kind"], e["detail"]) for e in history_view(engine.repo, big)
    ]
    assert ("run.chain_skipped", {"workflow": "invoice", "reason": "its if was false"}) in [
        (e["kind"], e["detail"]) for e in history_view(engine.repo, small)
    ]

    # When: the same upstream end is seen again (a redelivery): nothing new starts
    with engine.repo.transaction() as tx:
        run = tx.run(big)
        assert run is not None
        again = after_run(engine, tx, run)
    assert again.started == [] and again.already == 1
    assert len(runs_of(engine, "invoice")) == 1


def test_status_chooses_which_ends_start_a_run(engine: Engine) -> None:
    register(engine, "name: flaky\nsteps:\n  go: {wait: {event: never}}\n")
    register(
        engine,
        "name: cleanup\non:\n  - after: flaky\n    status: [failed, cancelled]\n"
        "    inputs: {was: '${{ run.status }}'}\nsteps:\n  tidy: {task: 'm:tidy'}\n",
    )
    run_id = start(engine, "flaky", {})
    operations.cancel(engine, run_id, OPS)
    drive(engine)
    assert [r["inputs"] for r in runs_of(engine, "cleanup")] == [{"was": "cancelled"}]


def test_an_emitted_event_starts_each_subscribed_workflow_once(engine: Engine, ledger: Ledger) -> None:
    for name in ("thumbnail", "index"):
        register(
            engine,
            f"name: {name}\non:\n  - event: invoice.uploaded\n    inputs: {{url: '${{{{ event.data.url }}}}'}}\n"
            f"steps:\n  work: {{task: 'm:{name}', with: {{url: '${{{{ inputs.url }}}}'}}}}\n",
        )

    done = emit(engine, "invoice.uploaded", {"url": "s3://a"}, OPS, emit_id="upload-1")
    drive(engine)
    again = emit(engine, "invoice.uploaded", {"url": "s3://a"}, OPS, emit_id="upload-1")

    assert sorted(w for w, _ in done.started) == ["index", "thumbnail"]
    assert again.duplicate and again.started == []
    assert sorted(ledger.calls) == ["m:index", "m:thumbnail"]
    shown = run_view(engine.repo, done.started[0][1])
    assert shown["started_by"] == {"event": {"name": "invoice.uploaded", "id": "upload-1", "by": "ops"}, "entry": 0}
    assert emit(engine, "nobody.listens", None, OPS).started == []


def test_a_chain_that_loops_back_on_itself_stops_at_the_depth_limit(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_CHAIN_DEPTH", "3")
    get_settings.cache_clear()
    try:
        register(
            engine,
            "name: again\non:\n  - after: again\n    inputs: {n: '${{ run.inputs.n + 1 }}'}\n"
            "steps:\n  step: {task: 'm:step'}\n",
        )
        first = start(engine, "again", {"n": 0})
    finally:
        get_settings.cache_clear()
    chain = sorted(runs_of(engine, "again"), key=lambda r: r["inputs"]["n"])
    assert [r["inputs"]["n"] for r in chain] == [0, 1, 2, 3]
    assert chain[0]["run_id"] == first
    last = [(e["kind"], e["detail"]) for e in history_view(engine.repo, chain[-1]["run_id"])]
    assert (
        "run.chain_skipped",
        {"workflow": "again", "reason": "the chain is 4 runs long; ORCHESTRATOR_MAX_CHAIN_DEPTH allows 3"},
    ) in last


def test_the_newest_registered_version_is_the_one_subscribed(engine: Engine) -> None:
    register(engine, ORDERS)
    register(engine, INVOICE)
    register(engine, "name: invoice\nsteps:\n  bill: {task: 'm:bill'}\n")  # no on: unsubscribed
    start(engine, "orders", {"total": 500})
    assert runs_of(engine, "invoice") == []


def test_on_entries_are_checked_statically() -> None:
    text = """
name: bad
on:
  - after: orders
    inputs: {a: "${{ event.data }}", b: "${{ inputs.x }}"}
  - event: e
    status: [failed]
steps:
  s: {task: "m:s", with: {x: "${{ run.id }}"}}
"""
    with pytest.raises(InvalidDefinition) as caught:
        build_plan(load_text(text).workflow, check_tasks=False)
    found = "\n".join(str(p) for p in caught.value.problems)
    assert "status applies only to an after entry" in found

    text = text.replace("    status: [failed]\n", "")
    with pytest.raises(InvalidDefinition) as caught:
        build_plan(load_text(text).workflow, check_tasks=False)
    found = "\n".join(str(p) for p in caught.value.problems)
    assert "on[0].inputs: 'event' is not defined here; an after entry reads run" in found
    assert "on[0].inputs: 'inputs' is not defined here; an after entry reads run" in found
    assert "step 's': with: 'run' is not defined in a step's with" in found


def test_an_event_name_and_its_data_are_checked(engine: Engine) -> None:
    with pytest.raises(UsageError, match="is not an event name"):
        emit(engine, "bad name!", None, OPS)
    with pytest.raises(UsageError, match="not JSON"):
        emit(engine, "fine", float("nan"), OPS)


def test_the_on_key_reads_as_on_in_yaml_not_as_true() -> None:
    workflow = load_text("name: a\non:\n  - event: go\nsteps:\n  s: {task: 'm:s'}\n").workflow
    assert workflow.on[0].event == "go"
    builder = WorkflowBuilder("b")
    builder.step("s", "m:s")
    assert builder.build().on == ()


def test_a_long_workflow_name_and_emission_id_still_make_one_key_the_store_can_hold(engine: Engine) -> None:
    name = "a-workflow-with-a-rather-long-name-" + "x" * 60
    register(engine, f"name: {name}\non:\n  - event: go\nsteps:\n  s: {{task: 'm:s'}}\n")
    long_id = "i" * 150
    first = emit(engine, "go", None, OPS, emit_id=long_id)
    again = emit(engine, "go", None, OPS, emit_id=long_id)
    assert len(first.started) == 1 and again.duplicate
    with engine.repo.transaction() as tx:
        run = tx.run(first.started[0][1])
    assert run is not None and run.idempotency_key is not None and len(run.idempotency_key) <= 200
