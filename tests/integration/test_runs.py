"""Workflows run for real: PostgreSQL state, Redis broker, Celery worker processes."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.definition import plan_file
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine
from tests.conftest import ROOT, Cluster
from tests.conftest import write_workflow as write

pytestmark = pytest.mark.integration
STEPS = "tests.integration.steps"


def events_of(cluster: Cluster, run_id: str) -> list[dict[str, object]]:
    with cluster.repo.transaction() as tx:
        return tx.history(run_id)


def test_linear_example_runs_to_its_outputs(cluster: Cluster) -> None:
    cluster.start_worker()
    run_id = cluster.start(ROOT / "config/examples/linear.yaml", x=2, y=3)
    view = cluster.wait(run_id)
    assert view["status"] == "succeeded"
    assert view["outputs"] == {"result": 10}
    assert [s["status"] for s in view["steps"].values()] == ["succeeded"] * 3
    assert view["steps"]["report"]["output"] == "sent: (2 + 3) * 2 = 10"


def test_fork_join_runs_branches_in_parallel_and_joins_once(cluster: Cluster, tmp_path: Path) -> None:
    # Given three 0.5 s branches and a worker with three slots
    path = write(
        tmp_path,
        f"""
name: fork
steps:
  start: {{task: "{STEPS}:echo", with: {{value: 1}}}}
  a: {{needs: [start], task: "{STEPS}:nap", with: {{value: 1, seconds: 0.5}}}}
  b: {{needs: [start], task: "{STEPS}:nap", with: {{value: 2, seconds: 0.5}}}}
  c: {{needs: [start], task: "{STEPS}:nap", with: {{value: 3, seconds: 0.5}}}}
  join:
    needs: [a, b, c]
    task: "{STEPS}:total"
    with: {{values: ["${{{{ steps.a.output }}}}", "${{{{ steps.b.output }}}}", "${{{{ steps.c.output }}}}"]}}
""",
    )
    cluster.start_worker(concurrency=3)
    view = cluster.wait(cluster.start(path))
    assert view["status"] == "succeeded"
    assert view["steps"]["join"]["output"] == 6
    # Then the branches overlapped in time, and the join started after the last branch ended
    starts = [datetime.fromisoformat(view["steps"][s]["started_at"]) for s in "abc"]
    ends = [datetime.fromisoformat(view["steps"][s]["finished_at"]) for s in "abc"]
    assert max(starts) < min(ends)
    assert datetime.fromisoformat(view["steps"]["join"]["started_at"]) >= max(ends)
    assert view["steps"]["join"]["attempts"] == 1


def test_foreach_200_items_never_exceeds_its_concurrency(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: fan
inputs: {{type: object, properties: {{n: {{type: array}}}}}}
steps:
  make: {{task: "{STEPS}:echo", with: {{value: "${{{{ inputs.n }}}}"}}}}
  each:
    needs: [make]
    foreach: "${{{{ [i * 2 for i in [1]] if false else steps.make.output }}}}"
    concurrency: 10
    task: "{STEPS}:nap"
    with: {{value: "${{{{ item }}}}", seconds: 0.02}}
""",
    )
    # A list comprehension is not allowed: the definition is refused before anything runs.
    refused = cluster.cli("run", str(path), "--detach", "-in=[1]")
    assert refused.returncode == 2 and "comprehension" in refused.stderr

    path.write_text(
        path.read_text().replace(
            '"${{ [i * 2 for i in [1]] if false else steps.make.output }}"', '"${{ steps.make.output }}"'
        )
    )
    cluster.start_worker("--pool", "threads", concurrency=14)
    items = list(range(200))
    view = cluster.wait(cluster.start(path, n=items), timeout=120)
    assert view["status"] == "succeeded"
    assert view["steps"]["each"]["output"] == items
    assert view["steps"]["each"]["items"] == {"total": 200, "succeeded": 200}
    with cluster.repo.transaction() as tx:
        rows = tx.items(view["run_id"], "each")
    intervals = sorted((r.started_at, r.finished_at) for r in rows)
    peak = max(sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals)
    assert peak <= 10
    assert peak > 1, "items ran one at a time: concurrency was not used"


def test_if_else_joined_with_any_succeeded(cluster: Cluster) -> None:
    cluster.start_worker()
    small = cluster.wait(cluster.start(ROOT / "config/examples/if-else.yaml", amount=20))
    large = cluster.wait(cluster.start(ROOT / "config/examples/if-else.yaml", amount=5000))
    assert small["status"] == large["status"] == "succeeded"
    assert small["steps"]["large-review"]["status"] == "skipped"
    assert small["steps"]["large-review"]["reason"].startswith("if was false")
    assert small["outputs"] == {"decision": "sent: reviewed 20 by clerk"}
    assert large["steps"]["small-review"]["status"] == "skipped"
    assert large["outputs"] == {"decision": "sent: reviewed 5000 by finance-lead"}


def test_failure_fails_fast_but_all_done_steps_run(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: failing
steps:
  slow: {{task: "{STEPS}:nap_marked", with: {{path: "{tmp_path / "slow-started"}", value: slow, seconds: 1.0}}}}
  broken: {{task: "{STEPS}:fail_once_started", with: {{path: "{tmp_path / "slow-started"}", message: card declined}}}}
  after-broken: {{needs: [broken], task: "{STEPS}:echo"}}
  after-slow: {{needs: [slow], task: "{STEPS}:echo"}}
  cleanup: {{needs: [broken, slow], trigger: all_done, task: "{STEPS}:echo", with: {{value: cleaned}}}}
""",
    )
    cluster.start_worker(concurrency=2)
    view = cluster.wait(cluster.start(path))
    steps = view["steps"]
    assert view["status"] == "failed"
    assert view["error"] == "broken: ValueError: card declined"
    assert steps["broken"]["status"] == "failed"
    assert steps["slow"]["status"] == "succeeded", "a running step finishes"
    assert steps["after-broken"]["status"] == "cancelled"
    assert steps["after-slow"]["status"] == "cancelled", "no new step starts after a failure"
    assert steps["cleanup"]["status"] == "succeeded"
    assert steps["cleanup"]["output"] == "cleaned"


def test_bad_output_and_unknown_task_fail_the_step_clearly(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: bad-output
steps:
  weird: {{task: "{STEPS}:unserialisable", retry: {{max_attempts: 3, delay: 10ms}}}}
  missing: {{task: "not.registered.anywhere", needs: [weird], trigger: all_done}}
""",
    )
    # After weird, whatever it did: in parallel, missing's quick failure could cancel weird while still queued
    cluster.start_worker()
    view = cluster.wait(cluster.start(path))
    assert view["status"] == "failed"
    weird = view["steps"]["weird"]
    assert weird["status"] == "failed"
    assert weird["attempts"] == 1, "a non-serialisable output is not retried"
    assert "OutputNotSerialisable: the step returned set, which is not JSON-serialisable" in weird["error"]
    missing = view["steps"]["missing"]
    assert missing["status"] == "failed"
    assert "no Celery task named 'not.registered.anywhere'" in missing["error"]


def test_retries_follow_the_policy(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: retrying
steps:
  flaky: {{task: "{STEPS}:fail", retry: {{max_attempts: 3, backoff: fixed, delay: 200ms, jitter: false}}}}
""",
    )
    cluster.start_worker()
    view = cluster.wait(cluster.start(path))
    flaky = view["steps"]["flaky"]
    assert (view["status"], flaky["attempts"]) == ("failed", 3)
    log = flaky["attempt_log"]
    assert [a["number"] for a in log] == [1, 2, 3]
    assert all(a["status"] == "failed" and a["error"] == "ValueError: boom" for a in log)
    gaps = [
        (datetime.fromisoformat(b["started_at"]) - datetime.fromisoformat(a["finished_at"])).total_seconds()
        for a, b in zip(log, log[1:], strict=False)
    ]
    assert all(gap >= 0.19 for gap in gaps), gaps


def test_idempotent_submit_by_client_and_by_celery_message(cluster: Cluster) -> None:
    register = cluster.cli("workflows", "register", str(ROOT / "config/examples/linear.yaml"))
    assert register.returncode == 0, register.stderr
    cluster.start_worker()
    code = """
import json
from orchestrator.client import submit
from orchestrator.worker.app import app
first = submit("linear", {"x": 1, "y": 1}, idempotency_key="order-7")
second = submit("linear", {"x": 1, "y": 1}, idempotency_key="order-7")
app.send_task("orchestrator.submit", kwargs={"workflow": "linear", "inputs": {"x": 1, "y": 1},
              "idempotency_key": "order-7"})
app.send_task("orchestrator.submit", kwargs={"workflow": "linear", "inputs": {"x": 4, "y": 4},
              "idempotency_key": "order-8"})
print(json.dumps([first, second]))
"""
    result = cluster.python(code)
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert first == second
    assert cluster.wait(first)["outputs"] == {"result": 4}
    deadline = time.monotonic() + 30
    while True:
        with cluster.repo.transaction() as tx:
            runs = tx.runs(None, "linear", 10)
        if len(runs) >= 2 and all(r.status.terminal for r in runs):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.1)
    assert sorted(r.idempotency_key for r in runs) == ["order-7", "order-8"]
    assert all(r.status == "succeeded" for r in runs)


def test_two_workers_advancing_one_run_never_duplicate_a_step(cluster: Cluster, tmp_path: Path) -> None:
    # Given a run whose steps are all ready, advanced by eight threads at the same moment
    path = write(
        tmp_path,
        "name: wide\nsteps:\n"
        + "".join(f"  s{i}: {{task: '{STEPS}:echo', with: {{value: {i}}}}}\n" for i in range(40))
        + "  join: {task: '"
        + STEPS
        + ":echo', needs: ["
        + ", ".join(f"s{i}" for i in range(40))
        + "]}\n",
    )
    plan = plan_file(str(path))
    engine = Engine.create(cluster.repo)
    with cluster.repo.transaction() as tx:
        tx.save_definition(plan.version, plan.workflow.name, plan.workflow.snapshot())
        needs = {s: len(plan.steps[s].needs) for s in plan.order}
        tx.insert_run("00000000-0000-0000-0000-000000000001", "wide", plan.version, {}, None, needs)
    run_id = "00000000-0000-0000-0000-000000000001"
    barrier = threading.Barrier(8)
    results: list[int] = []

    def advance() -> None:
        barrier.wait()
        results.append(len(operations.advance(engine, run_id)))

    threads = [threading.Thread(target=advance) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one advance dispatched the 40 ready steps, once each
    assert sorted(results) == [0] * 7 + [40]
    queued = [e for e in events_of(cluster, run_id) if e["kind"] == "step.queued"]
    assert sorted(e["step"] for e in queued) == sorted(f"s{i}" for i in range(40))

    # And two real worker processes finishing those steps at once start the join exactly once
    for i in range(2):
        cluster.start_worker(concurrency=4, name=f"twin{i}")
    redispatch = cluster.python(
        "from orchestrator.runtime.reconciler import reconcile; from orchestrator.worker.tasks import engine;"
        "from orchestrator.runtime.engine import Timing; e = engine(); e.timing = Timing(stale_s=0); reconcile(e)"
    )
    assert redispatch.returncode == 0, redispatch.stderr
    view = cluster.wait(run_id)
    assert view["status"] == "succeeded"
    assert all(step["attempts"] == 1 for step in view["steps"].values())
    kinds = [(e["step"], e["kind"]) for e in events_of(cluster, run_id)]
    assert kinds.count(("join", "step.queued")) == 1
    assert kinds.count(("join", "step.succeeded")) == 1
    workers = {step["attempt_log"][0]["worker"] for step in view["steps"].values()}
    assert len(workers) > 1, "both worker processes took part"


def test_cancel_mid_run(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: cancellable
steps:
  first: {{task: "{STEPS}:nap", with: {{seconds: 0.1}}}}
  long: {{needs: [first], task: "{STEPS}:nap", with: {{seconds: 30}}}}
  never: {{needs: [long], task: "{STEPS}:echo"}}
""",
    )
    cluster.start_worker(concurrency=1)  # `long` runs where `first` ended, in the same execution
    run_id = cluster.start(path)
    deadline = time.monotonic() + 30
    from orchestrator.runtime.views import run_view

    while True:
        if run_view(cluster.repo, run_id)["steps"]["long"]["status"] == "running":
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    result = cluster.cli("cancel", run_id)
    assert result.returncode == 0, result.stderr
    assert "revoked 1 running step" in result.stdout
    view = cluster.wait(run_id, timeout=10)
    assert view["status"] == "cancelled"
    assert view["steps"]["first"]["status"] == "succeeded"
    assert view["steps"]["long"]["status"] == "cancelled"
    assert view["steps"]["never"]["status"] == "cancelled"
    assert cluster.cli("cancel", run_id).returncode == 0, "cancelling twice is harmless"
    kinds = [e["kind"] for e in events_of(cluster, run_id)]
    assert kinds[-1] == "run.cancelled"
    # The revoked step was stopped (the only process is free long before its 30 s nap would end),
    # and its worker is still healthy and takes new work
    again = cluster.wait(cluster.start(ROOT / "config/examples/linear.yaml", x=1, y=2), timeout=15)
    assert again["status"] == "succeeded"


def test_a_killed_worker_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    # Given a 50-step chain whose every step writes a ledger line as its last act
    ledger = tmp_path / "ledger.txt"
    lines = ["name: chain", "steps:"]
    for i in range(50):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  s{i}: {{task: '{STEPS}:ledger', with: {{path: '{ledger}', name: s{i}, seconds: 0.1}}{needs}}}")
    path = write(tmp_path, "\n".join(lines) + "\n")
    victim = cluster.start_worker(concurrency=1, name="victim")
    run_id = cluster.start(path)
    # When the worker is SIGKILLed while step 20 or later is running
    from orchestrator.runtime.views import run_view

    deadline = time.monotonic() + 60
    while True:
        steps = run_view(cluster.repo, run_id)["steps"]
        running = [name for name, s in steps.items() if s["status"] == "running"]
        if running and int(running[0][1:]) >= 20:
            break
        assert time.monotonic() < deadline, steps
        time.sleep(0.01)
    cluster.kill(victim)
    # Then a new worker finishes the run
    cluster.start_worker(concurrency=1, name="rescuer")
    view = cluster.wait(run_id, timeout=90)
    assert view["status"] == "succeeded"
    assert all(s["status"] == "succeeded" for s in view["steps"].values())
    # And every step succeeded exactly once, by the state store and by the ledger
    with cluster.repo.transaction() as tx:
        succeeded = [e["step"] for e in tx.history(run_id) if e["kind"] == "step.succeeded"]
    assert sorted(succeeded) == sorted(f"s{i}" for i in range(50))
    written = [line.split()[0] for line in ledger.read_text().splitlines()]
    assert sorted(written) == sorted(f"s{i}" for i in range(50))
    interrupted = [name for name, s in view["steps"].items() if s["attempts"] == 2]
    assert interrupted == running[:1], "the step that was running when the worker died ran again"


def test_a_registered_celery_task_runs_as_a_step(cluster: Cluster, tmp_path: Path) -> None:
    path = write(tmp_path, "name: celery-task\nsteps:\n  twice: {task: shop.double, with: {value: 21}}\n")
    cluster.start_worker()
    view = cluster.wait(cluster.start(path))
    assert (view["status"], view["steps"]["twice"]["output"]) == ("succeeded", 42)


def test_a_redelivered_message_never_runs_a_finished_step_again(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    path = write(
        tmp_path, f"name: once\nsteps:\n  only: {{task: '{STEPS}:ledger', with: {{path: '{ledger}', name: only}}}}\n"
    )
    cluster.start_worker()
    view = cluster.wait(cluster.start(path))
    with cluster.repo.transaction() as tx:
        row = tx.steps(view["run_id"])["only"]
    # When the same message (same step, same dispatch token) arrives again, twice
    resend = cluster.python(
        "from orchestrator.worker.tasks import execute_step\n"
        f"for _ in range(2): execute_step.apply_async(({row.id}, '{row.dispatch_id}'))"
    )
    assert resend.returncode == 0, resend.stderr
    time.sleep(1.5)
    assert ledger.read_text().count("only") == 1
    assert cluster.wait(view["run_id"])["steps"]["only"]["attempts"] == 1


def test_a_message_lost_with_the_broker_is_dispatched_again(cluster: Cluster, tmp_path: Path) -> None:
    import redis

    # Given a run submitted while no worker runs, whose message the broker then loses
    run_id = cluster.start(ROOT / "config/examples/linear.yaml", x=5, y=5)
    redis.Redis.from_url(cluster.broker_url).flushdb()
    # When a worker starts, its reconciler finds the step still queued past the stale limit (3 s here)
    cluster.start_worker()
    view = cluster.wait(run_id, timeout=30)
    assert view["outputs"] == {"result": 20}
    kinds = [e["kind"] for e in events_of(cluster, run_id)]
    assert "step.redispatched" in kinds


def test_a_message_orphaned_in_unacked_by_a_lost_connection_is_dispatched_again(cluster: Cluster) -> None:
    import redis

    # Given a run whose step message a worker took off the queue ten minutes ago and then lost
    # with its connection (an outage): kombu leaves it in the unacked hash until the visibility
    # timeout, an hour here
    run_id = cluster.start(ROOT / "config/examples/linear.yaml", x=5, y=5)
    client = redis.Redis.from_url(cluster.broker_url)
    raw = client.rpop("orchestrator")
    assert raw is not None
    client.hset("unacked", "orphan-tag", json.dumps([json.loads(raw), "", "orchestrator"]))
    client.zadd("unacked_index", {"orphan-tag": time.time() - 600})
    # When a worker starts, its reconciler sends the step again instead of waiting for kombu
    cluster.start_worker()
    view = cluster.wait(run_id, timeout=30)
    assert view["outputs"] == {"result": 20}
    assert "step.redispatched" in [e["kind"] for e in events_of(cluster, run_id)]


def test_a_message_a_worker_just_took_is_not_declared_lost(redis_url: str) -> None:
    import uuid

    import redis

    from orchestrator.worker.transport import _lost_in_redis

    client = redis.Redis.from_url(redis_url)
    fresh, orphan = str(uuid.uuid4()), str(uuid.uuid4())
    for tag, token, taken in (("t1", fresh, time.time() - 5), ("t2", orphan, time.time() - 600)):
        body = {"body": "", "headers": {}, "properties": {"correlation_id": token}}
        client.hset("unacked", tag, json.dumps([body, "", "orchestrator"]))
        client.zadd("unacked_index", {tag: taken})
    rows = [SimpleNamespace(dispatch_id=token, queued_at=None) for token in (fresh, orphan)]
    try:
        assert _lost_in_redis(client, "orchestrator", rows) == {orphan}  # type: ignore[arg-type]
    finally:
        client.delete("unacked", "unacked_index")


def test_a_long_foreach_is_not_mistaken_for_a_lost_step(cluster: Cluster, tmp_path: Path) -> None:
    # Given a foreach that runs longer than the reconciler's stale limit (3 s here)
    path = write(
        tmp_path,
        f"""
name: long-fan
steps:
  each:
    foreach: [1, 2, 3, 4]
    concurrency: 1
    task: "{STEPS}:nap"
    with: {{value: "${{{{ item }}}}", seconds: 1.2}}
""",
    )
    cluster.start_worker()
    view = cluster.wait(cluster.start(path), timeout=60)
    # Then the step itself is never dispatched as if it were a lost task; only its items run
    assert view["status"] == "succeeded", view["steps"]
    assert view["steps"]["each"]["output"] == [1, 2, 3, 4]
    kinds = [e["kind"] for e in events_of(cluster, view["run_id"]) if e["item_index"] is None and e["step"] == "each"]
    assert "step.redispatched" not in kinds


def test_concurrent_first_submits_and_worker_registrations_do_not_collide(cluster: Cluster, tmp_path: Path) -> None:
    # Given a workflow the store has never seen, submitted by eight threads at once without keys
    plan = plan_file(str(write(tmp_path, f"name: brand-new\nsteps:\n  a: {{task: '{STEPS}:echo'}}\n")))
    barrier = threading.Barrier(8)
    run_ids: list[str] = []
    errors: list[BaseException] = []

    def submit_and_beat() -> None:
        engine = Engine.create(cluster.repo, renew_leases=False)
        barrier.wait()
        try:
            run_ids.append(operations.submit(engine, plan, {}).run_id)
            assert engine.lease is not None
            engine.lease.renew()
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=submit_and_beat) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every submit made its own run over one stored definition, and every worker got its own id
    assert errors == []
    assert len(set(run_ids)) == 8
    import sqlalchemy as sa

    from orchestrator.store import tables

    with cluster.repo.transaction() as tx:
        definitions = tx.c.execute(sa.select(sa.func.count()).select_from(tables.definitions)).scalar()
        workers = tx.c.execute(sa.select(sa.func.count()).select_from(tables.workers)).scalar()
    assert (definitions, workers) == (1, 8)
