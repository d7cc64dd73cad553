"""The dead-letter routes take a repeated id once: the batch is not refused for naming an entry twice."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.store import Repository
from orchestrator.store.rows import now
from tests.integration.api_support import auth, client_for, embedded_app, module_db, register  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(embedded_app: Any) -> TestClient:  # noqa: F811
    client = client_for(embedded_app)
    register(client, "name: gated\nsteps:\n  sign-off: {approval: {}}\n")
    return client


def entry_of(client: TestClient, repo: Repository) -> str:
    """An open dead-letter entry on the step of a new run."""
    run_id = client.post("/api/v1/runs", json={"workflow": "gated"}, headers=auth("operator")).json()["run_id"]
    entry_id = str(uuid.uuid4())
    with repo.transaction() as tx:
        row = tx.current_row(run_id, "sign-off")
        assert row is not None
        tx.insert_dead_letter(
            {
                "id": entry_id,
                "run_id": run_id,
                "step_run_id": row.id,
                "workflow": "gated",
                "step": "sign-off",
                "item_index": None,
                "task": "approval",
                "inputs": {},
                "error": "boom",
                "error_type": "RuntimeError",
                "traceback": None,
                "attempts": 1,
                "status": "open",
                "failed_at": now(),
            }
        )
    return entry_id


def test_a_discard_naming_an_entry_twice_discards_it_once(client: TestClient, embedded_app: Any) -> None:  # noqa: F811
    repo: Repository = embedded_app.state.repo
    first, second = entry_of(client, repo), entry_of(client, repo)
    answer = client.post("/api/v1/dlq/discard", json={"ids": [first, second, first]}, headers=auth("operator"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"discarded": 2}
    for entry_id in (first, second):
        assert client.get(f"/api/v1/dlq/{entry_id}", headers=auth("viewer")).json()["status"] == "discarded"
    records = client.get("/api/v1/audit?action=dlq.discard&limit=500", headers=auth("viewer")).json()
    assert sorted(r["target"] for r in records if r["target"] in (f"dlq:{first}", f"dlq:{second}")) == sorted(
        [f"dlq:{first}", f"dlq:{second}"]
    )
    # an entry already discarded is still refused when it is named once more in a later call
    again = client.post("/api/v1/dlq/discard", json={"ids": [first]}, headers=auth("operator"))
    assert again.status_code == 409 and "already discarded" in again.json()["error"]
