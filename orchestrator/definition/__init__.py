"""Workflow definitions: the model, its two front doors (files and Python), checks and the plan.

This layer imports neither Celery nor SQLAlchemy.
"""

from __future__ import annotations

import json
from typing import Any

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
    "plan_document",
    "plan_file",
    "workflow_json_schema",
]


def plan_file(path: str, *, check_tasks: bool = True) -> Plan:
    """Load, check and compile one workflow file."""
    loaded = load_file(path)
    return build_plan(loaded.workflow, loaded.source, check_tasks=check_tasks)


def plan_document(document: str | dict[str, Any], name: str = "<request>") -> Plan:
    """Load, check and compile a workflow sent as YAML or JSON text, or as a parsed JSON object,
    with the same limits and checks as a file."""
    if isinstance(document, str):
        loaded = load_bytes(document.encode("utf-8", "surrogatepass"), name, "yaml")
    else:
        loaded = load_bytes(json.dumps(document).encode(), name, "json")
    return build_plan(loaded.workflow, loaded.source)


def workflow_json_schema() -> dict[str, object]:
    """The JSON Schema of the workflow file format, for editors."""
    schema = Workflow.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Orchestrator workflow"
    return schema
