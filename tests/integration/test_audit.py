"""The audit trail on PostgreSQL: a record per action, concurrent writers that never fork the chain,
a table the store will not let anyone UPDATE or DELETE, tampering by the database superuser (with
the triggers off) found at the right record, HMAC chains, and the services' actors through a real
worker and Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from orchestrator import audit
from orchestrator.audit.chain import digest
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.operations import Who
from orchestrator.settings import get_settings
from orchestrator.store import Repository
from tests.audit_scenario import covered, every_action, plan_of, recorded
from tests.conftest import Cluster
from tests.conftest import write_workflow as write
from tests.unit.harness import Ledger

pytestmark = pytest.mark.integration
ONE_STEP = "name: one\nsteps:\n  a: {task: 'm:a'}\n"


@pytest.fixture
def engine(database_url: str) -> Engine:
    repo = Repository.from_url(database_url)
    return Engine.create(repo, Recorder(), Ledger().resolve, timing=Timing(countdown_limit=60), renew_leases=False)


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORCHESTRATOR_AUDIT_KEY", "k3y")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("ORCHESTRATOR_AUDIT_KEY", raising=False)
    get_settings.cache_clear()


def superuser(database_url: str, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    """Write as the database superuser with triggers off (session_replication_role = replica)."""
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as c:
        c.execute("SET session_replication_role = replica")
        for statement in statements:
            sql, values = statement if isinstance(statement, tuple) else (statement, ())
            c.execute(sql, values)  # type: ignore[arg-type]


def test_every_action_gets_one_record_with_its_actor_and_reason(engine: Engine) -> None:
    expected = every_action(engine)
    assert recorded(engine) == expected
    assert {a for a, _, _ in expected} == covered()
    assert audit.verify(engine.repo).ok


def test_eight_concurrent_writers_never_fork_the_chain(engine: Engine) -> None:
    # Given 8 threads, each submitting runs (a run lock, then the audit lock) as fast as it can
    plan = plan_of(ONE_STEP)
    errors: list[BaseException] = []

    def write_runs(n: int) -> None:
        try:
            for _ in range(10):
                operations.submit(engine, plan, {}, None, Who(f"writer-{n}"), "client")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write_runs, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    found = audit.verify(engine.repo)
    assert (found.ok, found.records, found.head_seq) == (True, 80, 80)
    actors = [r["actor"] for r in audit.list_records(engine.repo, limit=1000)]
    assert sorted(set(actors)) == [f"writer-{n}" for n in range(8)] and len(actors) == 80


def test_the_store_refuses_update_delete_and_truncate(engine: Engine, database_url: str) -> None:
    every_action(engine)
    for statement in (
        "UPDATE audit_log SET actor = 'eve' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as c:
                c.execute(statement)
    assert audit.verify(engine.repo).ok


def test_a_field_changed_by_the_superuser_is_found(engine: Engine, database_url: str) -> None:
    every_action(engine)
    superuser(database_url, "UPDATE audit_log SET target = 'run:elsewhere' WHERE seq = 6")
    found = audit.verify(engine.repo)
    assert (found.ok, found.bad_seq) == (False, 6)
    assert "record 6 was changed" in (found.problem or "")


def test_a_record_deleted_by_the_superuser_is_found(engine: Engine, database_url: str) -> None:
    every_action(engine)
    superuser(database_url, "DELETE FROM audit_log WHERE seq = 7")
    assert audit.verify(engine.repo).bad_seq == 7
    # And one deleted with the later records renumbered to hide the gap
    superuser(database_url, "UPDATE audit_log SET seq = seq - 1 WHERE seq > 7")
    found = audit.verify(engine.repo)
    assert (found.bad_seq, found.problem) == (
        7,
        "record 7 does not follow record 6: a record was removed or inserted before it",
    )


def test_a_record_inserted_by_the_superuser_is_found(engine: Engine, database_url: str) -> None:
    every_action(engine)
    with engine.repo.transaction() as tx:
        [fourth] = tx.audit_chain(3, 1)
    fake = {**fourth, "seq": 5, "actor": "eve", "reason": "backdated", "prev_hash": fourth["hash"]}
    fake["hash"] = digest(fourth["hash"], fake, None)
    columns = ", ".join(fake)
    superuser(
        database_url,
        "UPDATE audit_log SET seq = -seq - 1 WHERE seq >= 5",
        "UPDATE audit_log SET seq = -seq WHERE seq < 0",
        (f"INSERT INTO audit_log ({columns}) VALUES ({', '.join(['%s'] * len(fake))})", tuple(fake.values())),
    )
    found = audit.verify(engine.repo)
    assert (found.bad_seq, found.problem) == (5, "record 5 was inserted: record 6 follows record 4")


def test_an_hmac_chain_rebuilt_without_the_key_is_found(engine: Engine, database_url: str, keyed: None) -> None:
    every_action(engine)
    assert audit.verify(engine.repo).ok
    # When someone without the key changes record 3 and rebuilds every hash after it (plain SHA-256)
    with engine.repo.transaction() as tx:
        rows = tx.audit_chain(0, 10_000)
    statements: list[str | tuple[str, tuple[object, ...]]] = []
    prev = rows[1]["hash"]
    for row in rows[2:]:
        row = {**row, "actor": "eve" if row["seq"] == 3 else row["actor"], "mode": "sha256", "prev_hash": prev}
        prev = digest(prev, row, None)
        update = "UPDATE audit_log SET actor = %s, mode = 'sha256', prev_hash = %s, hash = %s WHERE seq = %s"
        statements.append((update, (row["actor"], row["prev_hash"], prev, row["seq"])))
    superuser(database_url, *statements)
    found = audit.verify(engine.repo)
    assert (found.ok, found.bad_seq) == (False, 3)
    assert "not an HMAC although ORCHESTRATOR_AUDIT_KEY is set" in (found.problem or "")


def test_services_name_themselves_through_the_client_the_celery_tasks_and_the_cli(
    cluster: Cluster, tmp_path: Path
) -> None:
    wf = write(tmp_path, "name: svc\nsteps:\n  hold: {wait: {event: go, key: k}}\n")
    assert cluster.cli("workflows", "register", str(wf), "--by", "ops", "--reason", "new").returncode == 0
    cluster.start_worker()
    sent = cluster.python(
        "from orchestrator.worker.app import app\n"
        "app.send_task('orchestrator.submit', kwargs={'workflow': 'svc', 'actor': 'billing'})\n"
        "app.send_task('orchestrator.submit', kwargs={'workflow': 'svc'})\n"
    )
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 60
    while len(audit.list_records(cluster.repo, action="run.submit")) < 2:
        assert time.monotonic() < deadline, "the submit tasks did not run"
        time.sleep(0.2)
    called = cluster.python(
        "from orchestrator.client import submit, signal\n"
        "submit('svc', actor='shop', reason='order A1')\n"
        "signal('go', 'k', by='legacy')\n"
    )
    assert called.returncode == 0, called.stderr
    reset = cluster.cli("breakers", "reset", "payments-api", "--by", "ana", "--reason", "vendor fixed")
    assert reset.returncode == 0, reset.stderr
    listed = cluster.cli("audit", "list", "--json", "--limit", "100")
    records = list(reversed(json.loads(listed.stdout)))
    seen = [(r["action"], r["actor"], r["reason"], (r["detail"] or {}).get("via")) for r in records]
    assert seen[0] == ("workflow.register", "ops", "new", None)
    assert sorted(seen[1:3]) == [("run.submit", "billing", None, "celery"), ("run.submit", "service", None, "celery")]
    assert seen[3:] == [
        ("run.submit", "shop", "order A1", "client"),
        ("signal.send", "legacy", None, None),
        ("breaker.reset", "ana", "vendor fixed", None),
    ]
    verified = cluster.cli("audit", "verify")
    assert (verified.returncode, verified.stdout.startswith("audit chain intact: 6 record(s)")) == (0, True)
