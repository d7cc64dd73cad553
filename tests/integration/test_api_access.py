"""Every ``/api/v1`` route with each role, over PostgreSQL: 401 with no token or a wrong one
(with ``WWW-Authenticate: Bearer``), 403 for a role too low, and for the role it needs the answer
a user would check. No broker: the actions are decided and recorded, no step runs."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.api.tokens import ROLES
from tests.integration.api_support import NAMES, auth, client_for, embedded_app, module_db, register  # noqa: F401

pytestmark = pytest.mark.integration

GATED = "name: gated\nsteps:\n  sign-off: {approval: {}}\n"
WAITER = "name: waiter\nsteps:\n  paid: {wait: {event: pay.ok, key: '${{ inputs.order }}'}}\n"
TIMED = "name: timed\nschedules:\n  - {name: tick, every: 1h}\nsteps:\n  nap: {wait: {for: 1h}}\n"
FLIP = "name: flip\nsteps:\n  s: {wait: {for: %s}}\n"

# (method, path, body, role needed, status, keys the answer has); {names} come from the set-up.
# The rows run in this order: a retry follows the rejection it mends, a resume its pause, an activate
# the rollback it undoes.
ROUTES: list[tuple[str, str, Any, str, int, set[str]]] = [
    ("GET", "/runs", None, "viewer", 200, {"runs", "next_cursor"}),
    ("GET", "/runs?workflow=gated&status=running&limit=2", None, "viewer", 200, {"runs", "next_cursor"}),
    ("POST", "/runs", {"workflow": "gated", "reason": "a test"}, "operator", 201, {"run_id", "created"}),
    ("GET", "/runs/{approve}", None, "viewer", 200, {"run_id", "workflow", "status", "steps"}),
    ("GET", "/runs/{approve}?attempts=true", None, "viewer", 200, {"run_id", "steps"}),
    ("GET", "/runs/{approve}/history", None, "viewer", 200, set()),
    ("GET", "/runs/{approve}/steps/sign-off", None, "viewer", 200, {"status", "attempt_log", "inputs", "traceback"}),
    ("GET", "/approvals", None, "viewer", 200, set()),
    ("POST", "/runs/{approve}/steps/sign-off/approve", {"comment": "ok"}, "operator", 200, {"approvals", "ended"}),
    ("POST", "/runs/{reject}/steps/sign-off/reject", {"comment": "no"}, "operator", 200, {"run_id", "step"}),
    ("POST", "/runs/{reject}/retry", {"reason": "again"}, "operator", 200, {"run_id", "steps"}),
    ("POST", "/runs/{skip}/steps/sign-off/skip", {}, "operator", 200, {"run_id", "step", "note"}),
    ("POST", "/runs/{accept}/steps/sign-off/accept", {"output": {"ok": True}}, "operator", 200, {"note"}),
    ("POST", "/runs/{pause}/pause", None, "operator", 200, {"run_id", "status"}),
    ("POST", "/runs/{pause}/resume", {}, "operator", 200, {"run_id", "status", "dispatched"}),
    ("POST", "/runs/{cancel}/cancel", {"reason": "done"}, "operator", 200, {"run_id", "status", "already", "revoked"}),
    ("POST", "/signals", {"event": "pay.ok", "key": "o-1", "data": {"n": 1}}, "operator", 200, {"kept", "delivered"}),
    ("POST", "/events", {"event": "nobody.listens"}, "operator", 200, {"event", "id", "started", "skipped"}),
    ("GET", "/dlq", None, "viewer", 200, set()),
    ("GET", "/dlq/no-such-entry", None, "viewer", 404, {"error"}),
    ("POST", "/dlq/replay", {"all": True}, "operator", 200, {"replayed", "runs", "refused"}),
    ("POST", "/dlq/discard", {"ids": ["no-such-entry"]}, "operator", 404, {"error"}),
    ("GET", "/breakers", None, "viewer", 200, set()),
    ("POST", "/breakers/no-such/reset", {}, "admin", 404, {"error"}),
    ("GET", "/workflows", None, "viewer", 200, set()),
    ("POST", "/workflows", {"definition": FLIP % "3h", "activate": False}, "admin", 201, {"version", "created"}),
    ("GET", "/workflows/gated", None, "viewer", 200, {"name", "version", "active", "definition"}),
    ("GET", "/workflows/flip/versions", None, "viewer", 200, set()),
    ("GET", "/workflows/flip/diff?from={flip1}&to={flip2}", None, "viewer", 200, {"from", "to", "diff"}),
    ("POST", "/workflows/flip/rollback", {}, "admin", 200, {"name", "version", "previous", "changed"}),
    ("POST", "/workflows/flip/activate", {"version": "{flip2}"}, "admin", 200, {"version", "changed"}),
    ("GET", "/schedules", None, "viewer", 200, set()),
    ("POST", "/schedules/timed/tick/pause", {}, "admin", 200, {"schedule", "changed"}),
    ("POST", "/schedules/timed/tick/resume", {}, "admin", 200, {"schedule", "changed"}),
    ("POST", "/schedules/timed/tick/trigger", {}, "admin", 200, {"schedule", "run_id", "fire_at"}),
    ("GET", "/cache", None, "viewer", 200, set()),
    ("POST", "/cache/clear", {"workflow": "gated"}, "admin", 200, {"cleared"}),
    ("GET", "/audit?limit=5", None, "viewer", 200, set()),
    ("GET", "/audit/verify", None, "viewer", 200, {"ok", "records"}),
    ("GET", "/report?since=1d", None, "viewer", 200, {"since", "until", "workflows"}),
    ("GET", "/me", None, "viewer", 200, {"name", "role"}),
]
IDS = [f"{m} {p}" for m, p, *_ in ROUTES]


@pytest.fixture(scope="module")
def client(embedded_app: Any) -> TestClient:  # noqa: F811
    return client_for(embedded_app)


@pytest.fixture(scope="module")
def names(client: TestClient) -> dict[str, str]:
    """Runs waiting for a decision, one per action, and the versions of ``flip``."""
    register(client, GATED)
    register(client, WAITER)
    register(client, TIMED)
    found = {"flip1": register(client, FLIP % "1h")["version"], "flip2": register(client, FLIP % "2h")["version"]}
    for action in ("approve", "reject", "skip", "accept", "pause", "cancel"):
        answer = client.post("/api/v1/runs", json={"workflow": "gated"}, headers=auth("operator"))
        assert answer.status_code == 201, answer.text
        found[action] = answer.json()["run_id"]
    return found


def request(client: TestClient, names: dict[str, str], row: tuple[Any, ...], role: str | None) -> Any:
    method, path, body = row[0], row[1].format(**names), row[2]
    if isinstance(body, dict):
        body = {k: names.get(v.strip("{}"), v) if isinstance(v, str) else v for k, v in body.items()}
    return client.request(method, "/api/v1" + path, json=body, headers=auth(role))


@pytest.mark.parametrize("row", ROUTES, ids=IDS)
def test_no_token_or_a_wrong_one_is_401(client: TestClient, names: dict[str, str], row: tuple[Any, ...]) -> None:
    missing = request(client, names, row, None)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"error": "a valid bearer token is needed"}
    method, path, body = row[0], row[1].format(**names), row[2]
    for header in ("Bearer not-a-token", f"Basic {TOKEN_OF_ADMIN}", TOKEN_OF_ADMIN, "Bearer "):
        wrong = client.request(method, "/api/v1" + path, json=body, headers={"Authorization": header})
        assert wrong.status_code == 401, (header, wrong.text)


TOKEN_OF_ADMIN = "tok-admin-3"


ACTIONS = [r for r in ROUTES if r[3] != "viewer"]


@pytest.mark.parametrize("row", ACTIONS, ids=[f"{m} {p}" for m, p, *_ in ACTIONS])
def test_a_role_too_low_is_403(client: TestClient, names: dict[str, str], row: tuple[Any, ...]) -> None:
    for role in ROLES[: ROLES.index(row[3])]:
        answer = request(client, names, row, role)
        assert answer.status_code == 403, (role, answer.text)
        assert answer.json() == {"error": f"{NAMES[role]} is a {role}: this needs {row[3]}"}


@pytest.mark.parametrize("row", ROUTES, ids=IDS)
def test_the_role_needed_is_answered(client: TestClient, names: dict[str, str], row: tuple[Any, ...]) -> None:
    answer = request(client, names, row, row[3])
    assert answer.status_code == row[4], answer.text
    found = answer.json()
    assert row[5] <= (set(found) if isinstance(found, dict) else set()), found
    assert "Traceback" not in answer.text


def test_the_answers_a_user_checks(client: TestClient, names: dict[str, str]) -> None:
    # The actions above were done as the tokens' names, and their effects are what the CLI shows
    listed = client.get("/api/v1/runs?workflow=gated&limit=500", headers=auth("viewer")).json()["runs"]
    runs = {r["run_id"]: r for r in listed}
    assert runs[names["approve"]]["status"] == "succeeded"
    assert runs[names["skip"]]["status"] == "succeeded"
    assert runs[names["cancel"]]["status"] == "cancelled"
    assert runs[names["pause"]]["status"] == "running"
    assert runs[names["reject"]]["status"] == "running"  # retried: waiting for a decision again
    accepted = client.get(f"/api/v1/runs/{names['accept']}", headers=auth("viewer")).json()
    assert accepted["status"] == "succeeded" and accepted["steps"]["sign-off"]["output"] == {"ok": True}
    records = client.get("/api/v1/audit?limit=500", headers=auth("viewer")).json()
    actors = {(r["action"], r["actor"]) for r in records}
    assert {("step.approve", "otto"), ("run.cancel", "otto"), ("workflow.register", "ada")} <= actors
    cancel = next(r for r in records if r["action"] == "run.cancel")
    assert cancel["reason"] == "done" and cancel["target"] == f"run:{names['cancel']}"
    assert client.get("/api/v1/me", headers=auth("operator")).json() == {"name": "otto", "role": "operator"}
    flip = client.get("/api/v1/workflows/flip", headers=auth("viewer")).json()
    assert flip["version"] == names["flip2"] and flip["active"] is True
    paused = client.get("/api/v1/schedules?workflow=timed", headers=auth("viewer")).json()
    assert [s["name"] for s in paused] == ["timed/tick"] and paused[0]["paused"] is False
