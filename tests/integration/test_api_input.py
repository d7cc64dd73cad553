"""Bad input to the HTTP API, over PostgreSQL: malformed or mistyped bodies, a 10 MB body (with
and without Content-Length), unknown ids, path tricks and unknown routes. Every answer is one
``{"error"}`` line with the documented status; none is a 500 or carries a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.api_support import auth, client_for, embedded_app, module_db, register  # noqa: F401

pytestmark = pytest.mark.integration
TEN_MB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def client(embedded_app: Any) -> TestClient:  # noqa: F811
    client = client_for(embedded_app)
    register(client, "name: gated\nsteps:\n  sign-off: {approval: {}}\n")
    return client


def post(client: TestClient, path: str, content: bytes | Iterator[bytes], **headers: str) -> Any:
    return client.post(
        "/api/v1" + path, content=content, headers={**auth("admin"), "content-type": "application/json", **headers}
    )


def one_error(answer: Any, status: int) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in answer.text
    return str(body["error"])


@pytest.mark.parametrize(
    "path", ["/runs", "/signals", "/events", "/dlq/replay", "/workflows", "/runs/x/cancel", "/cache/clear"]
)
def test_malformed_json_is_400(client: TestClient, path: str) -> None:
    for raw in (b"{bad", b'{"workflow": ', b"\xff\xfe", b"[" * 5000, b"nul\x00l"):
        assert one_error(post(client, path, raw), 400)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/runs", {"workflow": 7}, "workflow"),
        ("/runs", {"workflow": "gated", "inputs": [1, 2]}, "inputs"),
        ("/runs", {"workflow": "gated", "surprise": 1}, "surprise"),
        ("/runs", {}, "workflow"),
        ("/runs", [1], "body"),
        ("/runs", {"workflow": "gated", "idempotency_key": ""}, "idempotency_key"),
        ("/runs", {"workflow": "gated", "reason": "r" * 2001}, "reason"),
        ("/signals", {"event": ["a"]}, "event"),
        ("/signals", {"key": "k"}, "event"),
        ("/events", {"event": "e", "id": 5}, "id"),
        ("/dlq/replay", {"ids": "abc"}, "ids"),
        ("/dlq/replay", {"ids": ["a"] * 1001}, "ids"),
        ("/dlq/discard", {"ids": []}, "ids"),
        ("/workflows", {"definition": 3}, "definition"),
        ("/workflows/gated/activate", {}, "version"),
        ("/runs/x/steps/sign-off/reject", {"comment": ""}, "comment"),
        ("/runs/x/steps/sign-off/accept", {}, "output"),
        ("/cache/clear", {"workflow": 1}, "workflow"),
    ],
)
def test_a_body_of_the_wrong_shape_is_400_naming_the_field(
    client: TestClient, path: str, body: Any, field: str
) -> None:
    answer = client.post("/api/v1" + path, json=body, headers=auth("admin"))
    assert one_error(answer, 400).startswith(field)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=100000",
        "limit=ten",
        "status=lost",
        "since=yesterday",
        "since=9999-12-31T23:59:59-23:00",
        "cursor=garbage",
        "cursor=e30",
    ],
)
def test_a_bad_run_list_query_is_400(client: TestClient, query: str) -> None:
    one_error(client.get(f"/api/v1/runs?{query}", headers=auth("viewer")), 400)


@pytest.mark.parametrize(
    "path",
    ["/dlq?limit=100000", "/audit?since=soon", "/audit?limit=0", "/report?since=never", "/report?format=pdf"],
)
def test_a_bad_query_elsewhere_is_400(client: TestClient, path: str) -> None:
    one_error(client.get("/api/v1" + path, headers=auth("viewer")), 400)


def test_a_10_mb_body_is_413_with_or_without_its_length(client: TestClient) -> None:
    body = b'{"workflow": "gated", "inputs": {"pad": "' + b"x" * TEN_MB + b'"}}'
    assert "ORCHESTRATOR_MAX_PAYLOAD" in one_error(post(client, "/runs", body), 413)

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    answer = post(client, "/runs", chunked())
    assert answer.request.headers.get("transfer-encoding") == "chunked"
    one_error(answer, 413)
    liar = post(client, "/runs", body[: 2 * 1024 * 1024], **{"content-length": "100"})
    assert liar.status_code in (400, 413)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/runs/no-such-run"),
        ("GET", "/runs/no-such-run/history"),
        ("GET", "/runs/no-such-run/steps/s"),
        ("POST", "/runs/no-such-run/cancel"),
        ("POST", "/runs/no-such-run/pause"),
        ("POST", "/runs/no-such-run/resume"),
        ("POST", "/runs/no-such-run/retry"),
        ("POST", "/runs/no-such-run/steps/s/approve"),
        ("POST", "/runs/no-such-run/steps/s/skip"),
        ("GET", "/dlq/no-such-entry"),
        ("GET", "/workflows/no-such-workflow"),
        ("GET", "/workflows/no-such-workflow/versions"),
        ("GET", "/workflows/gated?version=ffffffff"),
        ("POST", "/workflows/no-such-workflow/rollback"),
        ("POST", "/schedules/no/such/pause"),
        ("POST", "/schedules/no/such/trigger"),
        ("POST", "/breakers/no-such/reset"),
        ("GET", "/runs/%00"),
        ("GET", "/runs/" + "r" * 5000),
        ("GET", "/runs/..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/runs/..%2F..%2Fetc%2Fpasswd/history"),
        ("GET", "/dlq/..%2F..%2F..%2Fetc%2Fshadow"),
        ("GET", "/workflows/%2E%2E%2F%2E%2E"),
        ("GET", "/../../etc/passwd"),
        ("GET", "/nothing-here"),
        ("POST", "/runs/x/y/z"),
    ],
)
def test_unknown_ids_and_paths_are_404(client: TestClient, method: str, path: str) -> None:
    answer = client.request(method, "/api/v1" + path, headers=auth("admin"))
    one_error(answer, 404)


def test_a_method_a_route_does_not_take_is_405(client: TestClient) -> None:
    answer = client.delete("/api/v1/runs", headers=auth("admin"))
    one_error(answer, 405)
    assert answer.headers["allow"] == "GET, POST"


def test_the_actions_that_do_not_apply_are_409(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json={"workflow": "gated"}, headers=auth("operator")).json()["run_id"]
    retry = client.post(f"/api/v1/runs/{run_id}/retry", headers=auth("operator"))
    assert "retry applies to a run that ended" in one_error(retry, 409)
    resume = client.post(f"/api/v1/runs/{run_id}/resume", headers=auth("operator"))
    assert "not paused" in one_error(resume, 409)
    assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth("operator")).json()["already"] is False
    assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=auth("operator")).json()["already"] is True
    approve = client.post(f"/api/v1/runs/{run_id}/steps/sign-off/approve", headers=auth("operator"))
    assert "not waiting" in one_error(approve, 409)
    skip = client.post(f"/api/v1/runs/{run_id}/steps/sign-off/skip", headers=auth("operator"))
    one_error(skip, 409)


def test_an_invalid_definition_is_400_naming_the_problem(client: TestClient) -> None:
    for definition in ("name: Bad Name\nsteps: {}\n", "[1, 2", {"name": "x", "steps": {"s": {"task": 5}}}, ""):
        answer = client.post("/api/v1/workflows", json={"definition": definition}, headers=auth("admin"))
        one_error(answer, 400)


def test_an_unexpected_failure_is_500_logged_and_never_shown(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from orchestrator.api.routes import approvals

    def broken(_: Any) -> Any:
        raise RuntimeError("secret internals at /srv/app.py line 3")

    monkeypatch.setattr(approvals, "approvals_view", broken)
    with caplog.at_level(logging.ERROR, logger="orchestrator.api.errors"):
        answer = client.get("/api/v1/approvals", headers=auth("viewer"))
    assert answer.status_code == 500 and answer.json() == {"error": "internal error"}
    assert "secret internals" not in answer.text
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_a_store_that_cannot_be_reached_is_503_naming_it_without_its_password() -> None:
    from orchestrator.api.app import create_app
    from orchestrator.settings import get_settings
    from orchestrator.store import Repository
    from orchestrator.worker.tasks import build_engine

    repo = Repository.from_url("postgresql+psycopg://ops:hunter2@127.0.0.1:1/nowhere")
    app = create_app(repo, lambda: [], [], 0.0, build_engine(get_settings(), repo))
    answer = client_for(app).get("/api/v1/runs/r-1")
    message = one_error(answer, 503)
    assert "127.0.0.1:1" in message and "hunter2" not in message


def test_the_same_submit_sent_at_once_from_eight_clients_is_one_run(client: TestClient) -> None:
    # Given eight requests with one idempotency key, in flight together
    body = {"workflow": "gated", "idempotency_key": "order-42"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/api/v1/runs", json=body, headers=auth("operator")), range(8)))
    # Then exactly one created the run, and every answer names it
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["run_id"] for a in answers}) == 1
    listed = client.get("/api/v1/runs?workflow=gated&limit=500", headers=auth("viewer")).json()["runs"]
    assert [r["run_id"] for r in listed].count(answers[0].json()["run_id"]) == 1
    records = client.get("/api/v1/audit?action=run.submit&limit=500", headers=auth("viewer")).json()
    keyed = [r for r in records if (r["detail"] or {}).get("idempotency_key") == "order-42"]
    assert len(keyed) == 1


def test_a_broker_that_cannot_be_reached_is_503_naming_it_without_its_password(
    embedded_app: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.api.app import create_app
    from orchestrator.runtime.breaker import Breakers
    from orchestrator.settings import get_settings

    down = "redis://ops:hunter2@127.0.0.1:1/0"
    repo = embedded_app.state.repo
    app = create_app(repo, lambda: [], [], 0.0, embedded_app.state.engine, Breakers(repo, down))
    monkeypatch.setenv("ORCHESTRATOR_BROKER_URL", down)
    get_settings.cache_clear()
    try:
        for method, path in (("GET", "/api/v1/breakers"), ("POST", "/api/v1/breakers/pay/reset")):
            message = one_error(client_for(app).request(method, path), 503)
            assert "127.0.0.1:1" in message and "hunter2" not in message
    finally:
        monkeypatch.delenv("ORCHESTRATOR_BROKER_URL")
        get_settings.cache_clear()
