"""Workflow definitions: the model, its two front doors (files and Python), checks and the plan.

This layer imports neither Celery nor SQLAlchemy.
"""

from __future__ import annotations

from orchestrator.definition.builder import StepRef, WorkflowBuilder, index, inputs, item
from orchestrator.definition.loader import Loaded, Source, load_bytes, load_file, load_text
from orchestrator.definition.model import (
    Backoff,
    BreakerConfig,
    Defaults,
    RetryPolicy,
    Step,
    Trigger,
    Workflow,
)
from orchestrator.definition.plan import Plan, StepPlan, build_plan

__all__ = [
    "Backoff",
    "BreakerConfig",
    "Defaults",
    "Loaded",
    "Plan",
    "RetryPolicy",
    "Source",
    "Step",
    "StepPlan",
    "StepRef",
    "Trigger",
    "Workflow",
    "WorkflowBuilder",
    "build_plan",
    "index",
    "inputs",
    "item",
    "load_bytes",
    "load_file",
    "load_text",
    "plan_file",
    "workflow_json_schema",
]


def plan_file(path: str, *, check_tasks: bool = True) -> Plan:
    """Load, check and compile one workflow file."""
    loaded = load_file(path)
    return build_plan(loaded.workflow, loaded.source, check_tasks=check_tasks)


def workflow_json_schema() -> dict[str, object]:
    """The JSON Schema of the workflow file format, for editors."""
    schema = Workflow.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Orchestrator workflow"
    return schema
