"""The audit trail in-process on SQLite: a record per action with its actor and reason, in the
transaction of its change; an append-only table; a chain that ``verify`` walks to the first
record that was changed, removed or inserted."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator import audit
from orchestrator.audit.chain import digest
from orchestrator.errors import Refused
from orchestrator.runtime import operations, repair
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.settings import get_settings
from orchestrator.store import Repository, Tx
from tests.audit_scenario import ANA, BEN, GATE, covered, every_action, plan_of, recorded, records_of
from tests.unit.harness import drive


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORCHESTRATOR_AUDIT_KEY", "k3y")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("ORCHESTRATOR_AUDIT_KEY", raising=False)
    get_settings.cache_clear()


def raw(repo: Repository) -> sqlite3.Connection:
    """The database file opened as its owner would, triggers and all."""
    path = repo.engine.url.database
    assert path is not None
    return sqlite3.connect(path, isolation_level=None)


def test_every_action_gets_one_record_with_its_actor_and_reason_and_the_chain_verifies(engine: Engine) -> None:
    expected = every_action(engine)
    assert recorded(engine) == expected
    assert {a for a, _, _ in expected} == covered()
    assert audit.verify(engine.repo).ok
    assert [r["seq"] for r in records_of(engine)] == list(range(len(expected), 0, -1))


def test_list_filters_by_run_actor_action_and_time(engine: Engine) -> None:
    every_action(engine)
    [submit] = [r for r in records_of(engine, action="run.submit") if r["detail"]["via"] == "client"]
    run_id = submit["target"].removeprefix("run:")
    about = [r["action"] for r in reversed(records_of(engine, run_id=run_id))]
    assert about == ["run.submit", "dlq.replay", "dlq.discard", "run.retry", "step.accept"]
    assert {r["actor"] for r in records_of(engine, actor="ben")} == {"ben"}
    assert {r["action"] for r in records_of(engine, action="workflow.*")} == {
        "workflow.register",
        "workflow.rollback",
        "workflow.activate",
    }
    assert len(records_of(engine, since="1h")) == len(records_of(engine))


def test_a_refused_change_and_a_change_of_nothing_record_nothing(engine: Engine) -> None:
    run_id = operations.submit(engine, plan_of(GATE), {"order": "A"}, None, ANA).run_id
    drive(engine)
    repair.pause(engine, run_id, ANA)
    repair.pause(engine, run_id, BEN)  # already paused: no change
    with pytest.raises(Refused):
        repair.skip(engine, run_id, "ship", BEN)  # ship is pending: refused, rolled back
    assert [a for a, _, _ in recorded(engine)] == ["run.submit", "run.pause"]


def test_a_change_whose_transaction_fails_leaves_no_record(engine: Engine) -> None:
    # Given a change that fails after its record was appended, in the same transaction
    with pytest.raises(RuntimeError), engine.repo.transaction() as tx:
        audit.record(tx, ANA, "run.cancel", "run:x")
        raise RuntimeError("the change failed")
    assert recorded(engine) == []


def test_a_record_that_cannot_be_written_leaves_no_change(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Tx, record: dict[str, object]) -> None:
        raise RuntimeError("the audit log is full")

    monkeypatch.setattr(Tx, "append_audit", refuse)
    with pytest.raises(RuntimeError, match="full"):
        operations.submit(engine, plan_of(GATE), {"order": "A"}, None, ANA)
    with engine.repo.transaction() as tx:
        assert tx.runs(None, None, 10) == []


def test_steps_running_to_the_end_add_no_record_and_a_key_seen_before_adds_none(engine: Engine) -> None:
    plan = plan_of(
        "name: three\nsteps:\n  a: {task: 'm:a'}\n  b: {needs: a, task: 'm:b'}\n  c: {needs: b, task: 'm:c'}\n"
    )
    first = operations.submit(engine, plan, {}, "order-1", ANA, "cli")
    drive(engine)
    again = operations.submit(engine, plan, {}, "order-1", BEN, "cli")
    assert (again.run_id, again.created) == (first.run_id, False)
    assert recorded(engine) == [("run.submit", "ana", "release 42")]


def test_a_service_names_itself_or_is_the_configured_actor_or_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_ACTOR", raising=False)
    get_settings.cache_clear()
    assert (operations.service("shop", "A1"), operations.service()) == (Who("shop", "A1"), Who("service"))
    monkeypatch.setenv("ORCHESTRATOR_ACTOR", "billing")
    get_settings.cache_clear()
    assert operations.service() == Who("billing")
    get_settings.cache_clear()


def test_the_store_refuses_update_and_delete_of_a_record(engine: Engine) -> None:
    every_action(engine)
    for statement in ("UPDATE audit_log SET actor = 'eve' WHERE seq = 1", "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.repo.engine.begin() as c:
            c.exec_driver_sql(statement)
    assert audit.verify(engine.repo).ok


def tamper(repo: Repository, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    """Change the file as its owner can: drop the triggers, write, put them back."""
    c = raw(repo)
    triggers = [r[0] for r in c.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'")]
    c.execute("DROP TRIGGER audit_log_no_update")
    c.execute("DROP TRIGGER audit_log_no_delete")
    for statement in statements:
        sql, values = statement if isinstance(statement, tuple) else (statement, ())
        c.execute(sql, values)
    for sql in triggers:
        c.execute(sql)
    c.close()


def test_verify_names_a_changed_record(engine: Engine) -> None:
    every_action(engine)
    tamper(engine.repo, "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 5")
    found = audit.verify(engine.repo)
    assert (found.ok, found.bad_seq) == (False, 5)
    assert "record 5 was changed" in (found.problem or "")


def test_verify_names_a_removed_record(engine: Engine) -> None:
    every_action(engine)
    tamper(engine.repo, "DELETE FROM audit_log WHERE seq = 4")
    found = audit.verify(engine.repo)
    assert (found.bad_seq, found.problem) == (4, "record 4 removed: the chain goes from record 3 to record 5")


def test_verify_names_an_inserted_record(engine: Engine) -> None:
    # Given a record slipped in at seq 3, the later ones moved up, its hash right for its place
    every_action(engine)
    with engine.repo.transaction() as tx:
        [second] = tx.audit_chain(1, 1)
    fake = {**second, "seq": 3, "actor": "eve", "reason": "backdated", "prev_hash": second["hash"]}
    fake["hash"] = digest(second["hash"], fake, None)
    columns = ", ".join(fake)
    tamper(
        engine.repo,
        "UPDATE audit_log SET seq = -seq - 1 WHERE seq >= 3",
        "UPDATE audit_log SET seq = -seq WHERE seq < 0",
        (f"INSERT INTO audit_log ({columns}) VALUES ({', '.join('?' * len(fake))})", tuple(fake.values())),
    )
    found = audit.verify(engine.repo)
    assert (found.bad_seq, found.problem) == (3, "record 3 was inserted: record 4 follows record 2")


def test_verify_names_an_inserted_record_whose_hash_is_wrong(engine: Engine) -> None:
    every_action(engine)
    head = audit.verify(engine.repo).head_seq or 0
    with engine.repo.transaction() as tx:
        [last] = tx.audit_chain(head - 1, 1)
    fake = {**last, "seq": head + 1, "actor": "eve", "prev_hash": last["hash"], "hash": "f" * 64}
    columns = ", ".join(fake)
    tamper(
        engine.repo, (f"INSERT INTO audit_log ({columns}) VALUES ({', '.join('?' * len(fake))})", tuple(fake.values()))
    )
    found = audit.verify(engine.repo)
    assert found.bad_seq == head + 1
    assert "changed or inserted" in (found.problem or "")


def test_a_batch_of_records_is_the_records_one_by_one(engine: Engine) -> None:
    # Given the same three changes recorded one by one, then as one batch, after a first record
    targets = [("dlq:a", {"step": "one"}), ("dlq:b", None), ("dlq:c", {"step": "three"})]
    with engine.repo.transaction() as tx:
        audit.record(tx, ANA, "cache.clear", "cache")
    with engine.repo.transaction() as tx:
        singles = [audit.record(tx, BEN, "dlq.replay", target, detail) for target, detail in targets]
    with engine.repo.transaction() as tx:
        batch = audit.record_many(tx, BEN, "dlq.replay", targets)
        assert audit.record_many(tx, BEN, "dlq.replay", []) == []
    assert (singles, batch) == ([2, 3, 4], [5, 6, 7])
    found = audit.verify(engine.repo)
    assert (found.ok, found.records) == (True, 7)

    def kept(r: dict[str, object]) -> tuple[object, ...]:
        return r["actor"], r["action"], r["target"], r["reason"], r["detail"]

    newest_first = records_of(engine, action="dlq.replay")
    assert [kept(r) for r in newest_first[:3]] == [kept(r) for r in newest_first[3:]]


def test_eight_concurrent_writers_never_fork_the_chain(engine: Engine) -> None:
    def write(n: int) -> None:
        for i in range(10):
            with engine.repo.transaction() as tx:
                audit.record(tx, operations.Who(f"writer-{n}"), "cache.clear", f"cache:w{n}/{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = audit.verify(engine.repo)
    assert (found.ok, found.records, found.head_seq) == (True, 80, 80)


def test_an_hmac_chain_rebuilt_without_the_key_is_detected(engine: Engine, keyed: None) -> None:
    every_action(engine)
    assert audit.verify(engine.repo).ok
    # When someone without the key changes record 2 and rebuilds every hash after it
    with engine.repo.transaction() as tx:
        rows = tx.audit_chain(0, 10_000)
    statements, prev = [], rows[0]["hash"]
    for row in rows[1:]:
        row = {**row, "actor": "eve" if row["seq"] == 2 else row["actor"], "mode": "sha256", "prev_hash": prev}
        prev = digest(prev, row, None)
        statements.append(
            f"UPDATE audit_log SET actor = '{row['actor']}', mode = 'sha256', prev_hash = '{row['prev_hash']}', "
            f"hash = '{prev}' WHERE seq = {row['seq']}"
        )
    tamper(engine.repo, *statements)
    found = audit.verify(engine.repo)
    assert (found.ok, found.bad_seq) == (False, 2)
    assert "not an HMAC" in (found.problem or "")
    # And one that guesses a key is caught too
    tamper(engine.repo, *[s.replace("mode = 'sha256'", "mode = 'hmac-sha256'") for s in statements])
    assert audit.verify(engine.repo).bad_seq == 2


def test_an_hmac_chain_without_the_key_says_so(engine: Engine, keyed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    every_action(engine)
    monkeypatch.delenv("ORCHESTRATOR_AUDIT_KEY")
    get_settings.cache_clear()
    found = audit.verify(engine.repo)
    assert (found.ok, found.needs_key, found.bad_seq) == (False, True, 1)
