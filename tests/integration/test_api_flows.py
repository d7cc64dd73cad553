"""Runs driven over HTTP on a real worker process (PostgreSQL state, Redis broker): submitted
runs succeed, approvals and DLQ replays let runs finish, and the run list and a step's detail
page through what the store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.store import Repository
from tests.conftest import Cluster
from tests.integration.api_support import (  # noqa: F401
    STEPS,
    api_cluster,
    auth,
    client_for,
    cluster_app,
    ended,
    module_db,
    register,
    wait_for,
)

pytestmark = pytest.mark.integration

ADD = f"""
name: adder
inputs: {{type: object, required: [a], properties: {{a: {{type: integer}}}}}}
outputs: {{sum: "${{{{ steps.add.output }}}}"}}
steps:
  add: {{task: "{STEPS}:add", with: {{a: "${{{{ inputs.a }}}}", b: 2}}}}
"""
GATED = f"""
name: gated-ship
steps:
  sign-off: {{approval: {{keyword: SHIP IT}}}}
  ship: {{needs: [sign-off], task: "{STEPS}:echo", with: {{value: shipped}}}}
"""
FLAKY = f"""
name: flaky
inputs: {{type: object, properties: {{flag: {{type: string}}}}}}
steps:
  call: {{task: "{STEPS}:fails_until", with: {{flag: "${{{{ inputs.flag }}}}", value: fixed}}}}
"""
SLOW = f"""
name: slow
steps:
  nap: {{task: "{STEPS}:nap", with: {{seconds: 30}}}}
"""
FAN = f"""
name: fan
steps:
  each: {{foreach: "${{{{ inputs.items }}}}", task: "{STEPS}:echo", with: {{value: "${{{{ item }}}}"}}, concurrency: 9}}
"""
WAITER = """
name: waiter
inputs: {type: object, properties: {order: {type: string}}}
steps:
  paid: {wait: {event: pay.ok, key: "${{ inputs.order }}"}}
"""


@pytest.fixture(scope="module")
def client(cluster_app: Any) -> TestClient:  # noqa: F811
    client = client_for(cluster_app)
    for text in (ADD, GATED, FLAKY, SLOW, WAITER):
        register(client, text)
    return client


@pytest.fixture(scope="module")
def repo(api_cluster: Cluster) -> Repository:  # noqa: F811
    return api_cluster.repo


def submit(client: TestClient, workflow: str, inputs: dict[str, Any], **more: Any) -> Any:
    return client.post("/api/v1/runs", json={"workflow": workflow, "inputs": inputs, **more}, headers=auth("operator"))


def test_a_submitted_run_succeeds_and_the_same_key_gives_the_same_run(client: TestClient, repo: Repository) -> None:
    first = submit(client, "adder", {"a": 40}, idempotency_key="order-1")
    again = submit(client, "adder", {"a": 40}, idempotency_key="order-1")
    assert first.status_code == 201 and first.json()["created"] is True
    assert again.status_code == 200 and again.json() == {"run_id": first.json()["run_id"], "created": False}
    run_id = first.json()["run_id"]
    wait_for(repo, run_id, ended)
    view = client.get(f"/api/v1/runs/{run_id}", headers=auth("viewer")).json()
    assert view["status"] == "succeeded" and view["outputs"] == {"sum": 42}
    assert view["steps"]["add"]["status"] == "succeeded"
    history = client.get(f"/api/v1/runs/{run_id}/history", headers=auth("viewer")).json()
    kinds = [e["kind"] for e in history]
    assert kinds[0] == "run.started" and "step.succeeded" in kinds
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)
    records = client.get(f"/api/v1/audit?run={run_id}", headers=auth("viewer")).json()
    assert [(r["action"], r["actor"]) for r in records] == [("run.submit", "otto")]
    bad = submit(client, "adder", {"a": "forty"})
    assert bad.status_code == 400 and "inputs" in bad.json()["error"]


def test_approving_the_waiting_step_finishes_the_run(client: TestClient, repo: Repository) -> None:
    run_id = submit(client, "gated-ship", {}).json()["run_id"]
    wait_for(repo, run_id, lambda v: v["steps"]["sign-off"]["status"] == "waiting")
    waiting = client.get("/api/v1/approvals", headers=auth("viewer")).json()
    assert [(a["run_id"], a["step"]) for a in waiting if a["run_id"] == run_id] == [(run_id, "sign-off")]
    url = f"/api/v1/runs/{run_id}/steps/sign-off"
    wrong = client.post(f"{url}/approve", json={"keyword": "ship it"}, headers=auth("operator"))
    assert wrong.status_code == 409 and "keyword" in wrong.json()["error"]
    unsaid = client.post(f"{url}/reject", json={}, headers=auth("operator"))
    assert unsaid.status_code == 400 and unsaid.json()["error"].startswith("comment:")
    done = client.post(f"{url}/approve", json={"keyword": "SHIP IT", "comment": "go"}, headers=auth("operator"))
    assert done.status_code == 200
    assert done.json() == {"run_id": run_id, "step": "sign-off", "approvals": 1, "required": 1, "ended": True}
    view = wait_for(repo, run_id, ended)
    assert view["status"] == "succeeded" and view["steps"]["ship"]["output"] == "shipped"
    late = client.post(f"{url}/approve", json={"keyword": "SHIP IT"}, headers=auth("operator"))
    assert late.status_code == 409 and "not waiting" in late.json()["error"]


def test_a_dead_letter_replayed_over_http_resumes_its_run(client: TestClient, repo: Repository, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    run_id = submit(client, "flaky", {"flag": str(flag)}).json()["run_id"]
    assert wait_for(repo, run_id, ended)["status"] == "failed"
    entries = [e for e in client.get("/api/v1/dlq?status=open", headers=auth("viewer")).json() if e["run_id"] == run_id]
    assert [(e["step"], e["status"]) for e in entries] == [("call", "open")]
    entry = client.get(f"/api/v1/dlq/{entries[0]['id']}", headers=auth("viewer")).json()
    assert "ConnectionError" in entry["error"] and "Traceback" in entry["traceback"]
    step = client.get(f"/api/v1/runs/{run_id}/steps/call", headers=auth("viewer")).json()
    assert step["status"] == "failed" and step["inputs"] == {"flag": str(flag), "value": "fixed"}
    assert "ConnectionError" in step["traceback"] and len(step["attempt_log"]) == 1
    flag.write_text("")
    replayed = client.post("/api/v1/dlq/replay", json={"ids": [entry["id"], entry["id"]]}, headers=auth("operator"))
    assert replayed.status_code == 200
    assert replayed.json() == {"replayed": [entry["id"]], "runs": [run_id], "refused": []}
    view = wait_for(repo, run_id, ended)
    assert view["status"] == "succeeded" and view["steps"]["call"]["output"] == "fixed"
    twice = client.post("/api/v1/dlq/replay", json={"ids": [entry["id"]]}, headers=auth("operator"))
    assert twice.status_code == 409 and "already replayed" in twice.json()["error"]


def test_cancelling_twice_and_repairs_that_do_not_apply(client: TestClient, repo: Repository) -> None:
    run_id = submit(client, "slow", {}).json()["run_id"]
    wait_for(repo, run_id, lambda v: v["steps"]["nap"]["status"] == "running")
    retry = client.post(f"/api/v1/runs/{run_id}/retry", json={}, headers=auth("operator"))
    assert retry.status_code == 409 and "retry applies to a run that ended" in retry.json()["error"]
    first = client.post(f"/api/v1/runs/{run_id}/cancel", json={"reason": "too slow"}, headers=auth("operator"))
    assert first.status_code == 200
    assert first.json()["already"] is False and first.json()["status"] == "cancelled"
    assert len(first.json()["revoked"]) == 1
    second = client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth("operator"))
    assert second.status_code == 200 and second.json()["already"] is True
    assert client.get(f"/api/v1/runs/{run_id}", headers=auth("viewer")).json()["status"] == "cancelled"
    paused = client.post(f"/api/v1/runs/{run_id}/pause", headers=auth("operator"))
    assert paused.status_code == 409 and "already ended" in paused.json()["error"]
    resumed = client.post(f"/api/v1/runs/{run_id}/resume", headers=auth("operator"))
    assert resumed.status_code == 409


def test_a_signal_completes_the_waiting_step(client: TestClient, repo: Repository) -> None:
    run_id = submit(client, "waiter", {"order": "o-77"}).json()["run_id"]
    wait_for(repo, run_id, lambda v: v["steps"]["paid"]["status"] == "waiting")
    sent = client.post(
        "/api/v1/signals", json={"event": "pay.ok", "key": "o-77", "data": {"paid": 3}}, headers=auth("operator")
    )
    assert sent.status_code == 200
    assert sent.json() == {
        "event": "pay.ok",
        "key": "o-77",
        "delivered": [{"run_id": run_id, "step": "paid"}],
        "kept": False,
        "duplicate": False,
    }
    view = wait_for(repo, run_id, ended)
    assert view["status"] == "succeeded" and view["steps"]["paid"]["output"] == {"paid": 3}
    unknown = client.post("/api/v1/signals", json={"event": "pay.ok", "run_id": "nope"}, headers=auth("operator"))
    assert unknown.status_code == 404


def test_the_run_list_pages_newest_first_without_gaps(client: TestClient, repo: Repository) -> None:
    ids = [submit(client, "adder", {"a": i}).json()["run_id"] for i in range(7)]
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = "workflow=adder&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/api/v1/runs?{query}", headers=auth("viewer")).json()
        assert len(page["runs"]) <= 3
        seen += page["runs"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    listed = [r["run_id"] for r in seen]
    assert len(listed) == len(set(listed)) and set(ids) <= set(listed)
    keys = [(r["created_at"], r["run_id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    newest = seen[0]["created_at"]
    since = client.get("/api/v1/runs", params={"workflow": "adder", "since": newest}, headers=auth("viewer")).json()
    assert [r["created_at"] for r in since["runs"]] == [newest] * len(since["runs"]) and since["runs"]
    until = client.get("/api/v1/runs", params={"workflow": "adder", "until": newest}, headers=auth("viewer")).json()
    assert newest not in [r["created_at"] for r in until["runs"]]
    assert client.get("/api/v1/runs?cursor=garbage", headers=auth("viewer")).status_code == 400
    assert client.get("/api/v1/runs?limit=100000", headers=auth("viewer")).status_code == 400
    for run_id in ids:
        wait_for(repo, run_id, ended)


def test_a_foreach_step_shows_a_page_of_its_items(client: TestClient, repo: Repository) -> None:
    register(client, FAN)
    run_id = submit(client, "fan", {"items": list(range(250))}).json()["run_id"]
    assert wait_for(repo, run_id, ended)["status"] == "succeeded"
    url = f"/api/v1/runs/{run_id}/steps/each"
    page = client.get(f"{url}?items_offset=100&items_limit=50", headers=auth("viewer")).json()
    assert page["status"] == "succeeded" and page["items"] == {"total": 250, "succeeded": 250}
    assert [i["index"] for i in page["item_list"]] == list(range(100, 150))
    assert page["item_list"][0] == {
        "index": 100,
        "status": "succeeded",
        "attempts": 1,
        "output": 100,
        "error": None,
        "child_run": None,
    }
    assert sorted(page["item_attempts"], key=int) == [str(i) for i in range(100, 150)]
    assert page["attempts"] == 250 and len(page["output"]) == 250
    whole = client.get(f"/api/v1/runs/{run_id}?attempts=true", headers=auth("viewer")).json()["steps"]["each"]
    assert {k: v for k, v in page.items() if k not in ("item_list", "item_attempts", "inputs", "traceback")} == {
        k: v for k, v in whole.items() if k != "item_attempts"
    }
    last = client.get(f"{url}?items_offset=240", headers=auth("viewer")).json()
    assert [i["index"] for i in last["item_list"]] == list(range(240, 250))
    assert client.get(f"{url}?items_limit=501", headers=auth("viewer")).status_code == 400
    assert client.get(f"/api/v1/runs/{run_id}/steps/nope", headers=auth("viewer")).status_code == 404
