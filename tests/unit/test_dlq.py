"""``dlq replay --all`` in batches, in-process on SQLite: every entry of a batch is judged on its own,
with one message and one audit record per entry replayed, and replaying again replays nothing."""

from __future__ import annotations

from orchestrator import audit
from orchestrator.dlq import discard, replay_all
from orchestrator.dlq.queue import Replayed
from orchestrator.runtime import operations, repair
from orchestrator.runtime.engine import Engine, Recorder
from tests.audit_scenario import ANA, BEN, FLAKY, plan_of, records_of
from tests.unit.harness import drive, state


def failed_runs(engine: Engine, n: int) -> list[tuple[str, str]]:
    """n runs of FLAKY, each failed with one open entry: (run id, entry id)."""
    plan = plan_of(FLAKY)
    run_ids = [operations.submit(engine, plan, {}, None, ANA).run_id for _ in range(n)]
    drive(engine)
    with engine.repo.transaction() as tx:
        return [(run_id, tx.dead_letters(run_id=run_id)[0].id) for run_id in run_ids]


def replay_every(engine: Engine, batch: int) -> Replayed:
    total = Replayed()
    for done in replay_all(engine, "flaky", batch=batch, who=BEN):
        total.merge(done)
    return total


def test_a_batch_replays_each_entry_that_still_can_be_and_leaves_the_others(engine: Engine) -> None:
    # Given five failed runs: one cancelled since (as a run cancelled while its step was failing
    # ends), one entry discarded, one step accepted by hand
    (good, _), (cancelled, refused), (_, discarded), (accepted, resolved), (other, _) = runs = failed_runs(engine, 5)
    with engine.repo.transaction() as tx:
        tx.update_run(cancelled, status="cancelled")
    discard(engine.repo, [discarded], ANA)
    repair.accept(engine, accepted, "charge", {"charged": 0}, ANA)
    recorder = engine.transport
    assert isinstance(recorder, Recorder)
    recorder.sent.clear()
    # When every open entry is replayed, two per batch
    done = replay_every(engine, batch=2)
    # Then the two replayable entries are replayed, the cancelled run's entry is refused and left open
    replayable = {e for r, e in runs if r in (good, other)}
    assert (set(done.entries), set(done.runs), done.refused) == (replayable, {good, other}, [refused])
    assert done.sent == len(recorder.sent) == 2
    with engine.repo.transaction() as tx:
        statuses = {e.id: e.status for e in tx.dead_letters(workflow="flaky")}
        steps = [tx.step_run(d.step_run_id) for d in recorder.sent]
    assert statuses == {
        **{e: "replayed" for e in replayable},
        refused: "open",
        discarded: "discarded",
        resolved: "resolved",
    }
    assert {s.run_id for s in steps if s is not None} == {good, other}
    assert state(engine, good) == ("running", {"charge": "queued"})
    assert state(engine, cancelled)[0] == "cancelled"
    # And one audit record per entry replayed, by who replayed it, in a chain that verifies
    replays = records_of(engine, action="dlq.replay")
    assert sorted(r["target"] for r in replays) == sorted(f"dlq:{e}" for e in replayable)
    assert {r["actor"] for r in replays} == {"ben"}
    assert audit.verify(engine.repo).ok
    # And replaying again replays nothing, sends nothing and records nothing
    again = replay_every(engine, batch=2)
    assert (again.entries, again.refused, again.sent) == ([], [refused], 0)
    assert len(recorder.sent) == 2
    assert len(records_of(engine, action="dlq.replay")) == 2
