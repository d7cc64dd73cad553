"""A planted secret, used by real workers on PostgreSQL and Redis, appears in no stored row and no
output: not in the inputs, the events, the error of a step that quoted it, its dead-letter entry,
the audit trail, the CLI's views, nor the worker's log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from tests.conftest import Cluster, write_workflow

pytestmark = pytest.mark.integration
PLANTED = "pl4nted-Secret-Value-9f3c"
STEPS = "tests.integration.secret_steps"


@pytest.fixture
def echoing() -> Iterator[str]:
    """A service that answers 500 quoting the Authorization header it got (as some do)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = f"rejected credentials: {self.headers.get('Authorization')}".encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/charge"
    server.shutdown()


def _every_row(cluster: Cluster) -> str:
    with cluster.repo.engine.connect() as c:
        tables = sa.inspect(c).get_table_names()
        return "\n".join(f"{t}: {c.execute(sa.text(f'SELECT * FROM {t}')).all()}" for t in tables)


def test_a_planted_secret_is_stored_and_shown_nowhere(cluster: Cluster, tmp_path: Path, echoing: str) -> None:
    # Given a secret stored with the CLI, and workers that share its key
    key = Fernet.generate_key().decode()
    cluster.env.update(ORCHESTRATOR_SECRET_KEY=key, ORCHESTRATOR_TASK_MODULES=f"tests.integration.steps,{STEPS}")
    stored = cluster.cli("secrets", "set", "API_TOKEN", "--value", PLANTED, "--reason", "planted by the test")
    assert stored.returncode == 0, stored.stderr
    cluster.start_worker(concurrency=2)
    # When a run uses it: once well, once in a step that quotes it failing, once through the HTTP
    # step against a service that echoes it back
    path = write_workflow(
        tmp_path,
        f"""
name: secretive
defaults: {{retry: {{max_attempts: 2, delay: 100ms}}}}
steps:
  use:
    task: {STEPS}:check
    with: {{token: "${{{{ secrets.API_TOKEN }}}}", header: "Bearer ${{{{ secrets.API_TOKEN }}}}"}}
  call:
    needs: [use]
    task: orchestrator.steps.http:request
    with: {{url: "{echoing}", headers: {{Authorization: "Bearer ${{{{ secrets.API_TOKEN }}}}"}}}}
    retry: {{max_attempts: 1}}
  quote:
    needs: [call]
    trigger: all_done
    task: {STEPS}:leak
    with: {{token: "${{{{ secrets.API_TOKEN }}}}"}}
""",
    )
    run_id = cluster.start(path)
    view = cluster.wait(run_id, timeout=90)
    # Then the function got the value, and both failures were recorded without it
    assert view["status"] == "failed"
    assert view["steps"]["use"]["output"] == {"length": len(PLANTED), "bearer": True, "note": ""}
    assert view["steps"]["quote"]["error"] == "ValueError: the service refused the token '***' (token=***)"
    assert view["steps"]["call"]["error"].startswith("ServerError: HTTP 500 from http://127.0.0.1:")
    assert view["steps"]["call"]["error"].endswith("rejected credentials: ***")  # the step hides header values
    # And the value is in no row of any table, though the references are
    rows = _every_row(cluster)
    assert PLANTED not in rows
    assert "${{ secrets.API_TOKEN }}" in rows and "planted by the test" in rows
    # Nor in anything a person can print, nor in the worker's log
    entries = json.loads(cluster.cli("dlq", "list", "--json").stdout)
    assert {e["step"] for e in entries} == {"quote", "call"}
    outputs = [
        cluster.cli("status", run_id, "--json"),
        cluster.cli("history", run_id, "--json"),
        *(cluster.cli("dlq", "show", e["id"]) for e in entries),
        *(cluster.cli("dlq", "show", e["id"], "--json") for e in entries),
        cluster.cli("audit", "export", "--format", "json"),
        cluster.cli("audit", "export", "--format", "csv"),
        cluster.cli("secrets", "list", "--json"),
    ]
    for result in outputs:
        assert result.returncode == 0, (result.args, result.stderr)
        assert PLANTED not in result.stdout + result.stderr, result.args
    assert "token=***" in rows and "Traceback" in rows  # the error and its traceback were stored, redacted
    cluster.stop()
    assert PLANTED not in cluster.log("w0")
