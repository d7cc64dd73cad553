from __future__ import annotations

import pytest

from orchestrator import examples
from orchestrator.definition import WorkflowBuilder, build_plan, index, inputs, item, load_file
from orchestrator.errors import InvalidDefinition


def build_order_pipeline() -> WorkflowBuilder:
    wf = WorkflowBuilder(
        "order-pipeline",
        description="Price and charge an order",
        inputs={"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}},
        defaults={
            "retry": {"max_attempts": 3, "backoff": "exponential", "delay": "1s", "max_delay": "1m", "jitter": True},
            "timeout": "5m",
        },
    )
    fetch = wf.step("fetch", examples.fetch_order, with_={"order_id": inputs.order_id})
    price = wf.step(
        "price",
        examples.price_item,
        needs=[fetch],
        foreach=fetch.output["items"],
        concurrency=2,
        with_={"item": item, "position": index},
    )
    charge = wf.step(
        "charge",
        examples.charge,
        needs=[price],
        if_="${{ sum(steps.price.output) > 0 }}",
        with_={"order_id": inputs.order_id, "amount": "${{ sum(steps.price.output) }}"},
    )
    wf.step(
        "notify",
        "orchestrator.examples:notify",
        needs=[charge],
        trigger="all_done",
        with_={"message": "order ${{ inputs.order_id }} done"},
    )
    wf.output("charged", charge.output)
    return wf


def test_builder_and_yaml_give_identical_models() -> None:
    built = build_order_pipeline().build()
    loaded = load_file("config/examples/foreach.yaml").workflow
    # The YAML writes foreach as steps.fetch.output.items; the builder as ['items'].
    assert built.steps["price"].foreach == "${{ steps.fetch.output['items'] }}"
    assert built.model_copy(update={"steps": {**built.steps, "price": loaded.steps["price"]}}) == loaded


def test_builder_models_plan() -> None:
    plan = build_plan(build_order_pipeline().build())
    assert plan.order == ("fetch", "price", "charge", "notify")


def test_builder_reports_duplicate_ids_and_model_errors() -> None:
    wf = WorkflowBuilder("dup")
    wf.step("a", "m:f")
    wf.step("a", "m:g")
    with pytest.raises(InvalidDefinition, match="duplicate step id 'a'"):
        wf.build()
    bad = WorkflowBuilder("bad")
    bad.step("a", "m:f", retry={"max_attemps": 2})
    with pytest.raises(InvalidDefinition, match="did you mean 'max_attempts'"):
        bad.build()


def test_hyphenated_step_refs_use_subscripts() -> None:
    wf = WorkflowBuilder("h")
    first = wf.step("fetch-order", "m:f")
    wf.step("use", "m:f", needs=[first], with_={"x": first.output})
    assert wf.build().steps["use"].with_ == {"x": "${{ steps['fetch-order'].output }}"}


def test_lambdas_are_refused() -> None:
    with pytest.raises(TypeError, match="not an importable function"):
        WorkflowBuilder("l").step("a", lambda: 1)
