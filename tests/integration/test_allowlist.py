"""The allowlist on real workers: a definition stored without the checks (as one stored before the
allowlist existed) cannot make a worker call a function outside ORCHESTRATOR_TASK_MODULES. The step
fails once, for good, with an error naming the module and the variable, and is dead-lettered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.definition import build_plan, load_file
from orchestrator.runtime import versions
from orchestrator.runtime.engine import Engine, Recorder
from orchestrator.runtime.operations import Who
from tests.conftest import Cluster, write_workflow

pytestmark = pytest.mark.integration

OUTSIDE = """
name: outside
steps:
  shell:
    task: subprocess:check_output
    with: {args: [touch, MARKER]}
    retry: {max_attempts: 3, delay: 0s}
  own:
    needs: [shell]
    trigger: all_done                # runs after shell failed (in parallel, the run's failure could cancel it)
    task: orchestrator.submit
    with: {workflow: outside}
    retry: {max_attempts: 3, delay: 0s}
"""


def test_a_stored_definition_cannot_make_a_worker_call_outside_the_list(cluster: Cluster, tmp_path: Path) -> None:
    # Given a workflow naming subprocess and one of the orchestrator's own tasks: register refuses it...
    marker = tmp_path / "called"
    path = write_workflow(tmp_path, OUTSIDE.replace("MARKER", str(marker)))
    refused = cluster.cli("workflows", "register", str(path))
    assert refused.returncode == 2 and "task 'subprocess:check_output' is refused" in refused.stderr
    # ... so it is stored without the checks, as one stored before the allowlist existed would be
    plan = build_plan(load_file(str(path)).workflow, check_tasks=False)
    versions.register(Engine.create(cluster.repo, Recorder(), renew_leases=False), plan, Who("before the upgrade"))
    cluster.start_worker()
    # When it is run by name (a registered definition is not checked again before a worker calls it)
    run_id = cluster.start("outside")
    view = cluster.wait(run_id)
    # Then neither was called: each failed on its first attempt, not retried, naming the module
    assert not marker.exists()
    assert view["status"] == "failed"
    shell, own = view["steps"]["shell"], view["steps"]["own"]
    assert (shell["status"], shell["attempts"], own["status"], own["attempts"]) == ("failed", 1, "failed", 1)
    assert shell["error"] == (
        "TaskNotAllowed: task 'subprocess:check_output' is refused: module 'subprocess' is not in "
        "ORCHESTRATOR_TASK_MODULES (tests.integration.steps, tests; "
        "built-in: orchestrator.steps.http:request, orchestrator.examples)"
    )
    assert own["error"] == (
        "TaskNotAllowed: task 'orchestrator.submit' is refused: it is one of the orchestrator's own tasks"
    )
    entries = json.loads(cluster.cli("dlq", "list", "--json").stdout)
    assert sorted(e["step"] for e in entries) == ["own", "shell"]
