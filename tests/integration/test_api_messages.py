"""The API's errors name the JSON fields of the request, not the CLI's options (``--step``):
where the runtime raises one message for both doors, the CLI's text is unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.errors import Refused, UsageError
from orchestrator.runtime.repair import RETRY_FIELDS
from tests.integration.api_support import auth, client_for, embedded_app, module_db, register  # noqa: F401

pytestmark = pytest.mark.integration
KEYED = "name: keyed\nsteps:\n  sign-off: {approval: {keyword: SHIP IT}}\n"


@pytest.fixture(scope="module")
def client(embedded_app: Any) -> TestClient:  # noqa: F811
    client = client_for(embedded_app)
    register(client, KEYED)
    return client


def error_of(answer: Any, status: int) -> str:
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    assert "--" not in message, message
    return str(message)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/cache/clear", {"step": "a"}, "step needs workflow: step ids are only unique within a workflow"),
        ("/cache/clear", {"reason": "a\u0000b"}, "reason must be at most 2000 characters (no NUL)"),
        ("/dlq/replay", {}, "name ids, or all (not both)"),
        ("/dlq/replay", {"ids": ["e-1"], "all": True}, "name ids, or all (not both)"),
        ("/dlq/replay", {"all": True, "inputs": {}}, "inputs replays named entries, not all"),
        ("/runs/r-1/retry", {"step": "a", "from": "b"}, "give step or from, not both"),
    ],
)
def test_a_usage_error_names_the_body_field(client: TestClient, path: str, body: dict[str, Any], expected: str) -> None:
    assert error_of(client.post("/api/v1" + path, json=body, headers=auth("admin")), 400) == expected


def test_a_wrong_keyword_names_the_keyword_field(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json={"workflow": "keyed"}, headers=auth("operator")).json()["run_id"]
    url = f"/api/v1/runs/{run_id}/steps/sign-off/approve"
    wrong = client.post(url, json={"keyword": "ship it"}, headers=auth("operator"))
    assert error_of(wrong, 409) == "approving 'sign-off' needs its keyword, quoted exactly (keyword)"


def test_a_duration_that_is_not_one_names_the_query_parameter(client: TestClient) -> None:
    assert error_of(client.get("/api/v1/audit?since=bogus", headers=auth("viewer")), 400).startswith("since: ")
    assert error_of(client.get("/api/v1/report?since=bogus", headers=auth("viewer")), 400).startswith("since: ")


def test_the_cli_keeps_its_options_in_the_same_error() -> None:
    retry = UsageError("give --step or --from, not both", RETRY_FIELDS)
    assert (retry.message, retry.api_message) == ("give --step or --from, not both", "give step or from, not both")
    succeeded = Refused("run r-1 succeeded; use --from STEP to run part of it again", {"--from STEP": "from (a step)"})
    assert succeeded.api_message == "run r-1 succeeded; use from (a step) to run part of it again"
    assert "--from STEP" in succeeded.message
    plain = UsageError("no such thing")
    assert plain.api_message == plain.message == "no such thing"
