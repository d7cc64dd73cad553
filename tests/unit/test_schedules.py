"""Schedules in-process on SQLite, with an injected clock: activation replaces a workflow's
schedules, each tick starts one run however often it is looked at, overlap and catchup policies,
pause, resume and manual triggers, and inputs that fail the schema."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from orchestrator.definition import build_plan, load_text
from orchestrator.errors import InputsError, NotFound, UsageError
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.operations import Who
from orchestrator.runtime.schedules import fire_due, pause, resume, schedules_view, trigger
from orchestrator.runtime.views import runs_view
from orchestrator.schedule.arithmetic import Spec
from orchestrator.store import Repository, now
from tests.unit.harness import Ledger, drive

OPS = Who("ops", "maintenance")


def register(engine: Engine, text: str) -> None:
    operations.register(engine, build_plan(load_text(text).workflow, check_tasks=False))


def workflow(schedules: str, steps: str = 'work: {task: "m:work", with: {tick: "${{ inputs.tick }}"}}') -> str:
    return f"""
name: report
inputs: {{type: object, properties: {{tick: {{type: string}}}}}}
steps:
  {steps}
schedules:
{schedules}
"""


EVERY_10S = """
  - name: often
    every: 10s
    inputs: {tick: "${{ schedule.fire_at }}"}
    overlap: allow
"""
WAITS = "hold: {wait: {event: go}}"  # a run that stays active until it is cancelled


def ticks(after: datetime, count: int, every: float = 10) -> list[datetime]:
    return Spec(every_s=every).upcoming(after, count)


def runs(engine: Engine) -> list[dict[str, Any]]:
    return list(reversed(runs_view(engine.repo, None, "report", 1000)))


def view(engine: Engine, name: str = "report/often") -> dict[str, Any]:
    return next(s for s in schedules_view(engine.repo) if s["name"] == name)


def fires(engine: Engine, name: str = "often") -> list[dict[str, Any]]:
    with engine.repo.transaction() as tx:
        return list(reversed(tx.fires("report", name)))


def test_each_tick_starts_one_run_of_the_active_version_however_often_it_is_seen(
    engine: Engine, repo: Repository, ledger: Ledger
) -> None:
    register(engine, workflow(EVERY_10S))
    first, second = ticks(now(), 2)

    # Two looks at the same instant, and a second "beat" with its own engine on the same store
    fire_due(engine, first + timedelta(seconds=1))
    fire_due(engine, first + timedelta(seconds=1))
    other = Engine.create(repo, Recorder(), ledger.resolve, timing=Timing(countdown_limit=60), renew_leases=False)
    fire_due(other, first + timedelta(seconds=2))
    fire_due(engine, second + timedelta(seconds=1))
    drive(engine)

    started = runs(engine)
    assert [r["inputs"] for r in started] == [{"tick": first.isoformat()}, {"tick": second.isoformat()}]
    assert all(r["status"] == "succeeded" for r in started)
    assert started[0]["started_by"] == {
        "schedule": {"name": "report/often", "fire_at": first.isoformat(), "manual": False}
    }
    assert [(f["fire_at"], f["outcome"]) for f in fires(engine)] == [(first, "started"), (second, "started")]
    assert ledger.calls == ["m:work", "m:work"]


def test_a_brand_new_schedule_owes_nothing_from_before_it_was_registered(engine: Engine) -> None:
    register(engine, workflow(EVERY_10S.replace("overlap: allow", "catchup: all\n    overlap: allow")))
    assert fire_due(engine, now()).ticks == []
    assert runs(engine) == []


def test_activation_replaces_the_schedules_and_keeps_a_surviving_name_paused(engine: Engine) -> None:
    register(engine, workflow(EVERY_10S + '  - name: nightly\n    cron: "0 2 * * *"\n    timezone: Europe/Paris\n'))
    assert [s["name"] for s in schedules_view(engine.repo)] == ["report/nightly", "report/often"]
    assert pause(engine, "report/often", OPS) is True
    before = view(engine)

    # A new version: often changes its interval, nightly is gone, weekly is new
    register(
        engine,
        workflow(EVERY_10S.replace("every: 10s", "every: 20s") + '  - name: weekly\n    cron: "0 6 * * 1"\n'),
    )

    listed = {s["name"]: s for s in schedules_view(engine.repo)}
    assert set(listed) == {"report/often", "report/weekly"}
    assert listed["report/often"]["paused"] is True and listed["report/often"]["paused_by"] == "ops"
    assert listed["report/often"]["every_s"] == 20 and listed["report/often"]["version"] != before["version"]
    assert listed["report/often"]["next"] == []  # paused: nothing is coming
    assert listed["report/weekly"]["paused"] is False and len(listed["report/weekly"]["next"]) == 3


def test_activate_and_rollback_bring_back_that_version_s_schedules(engine: Engine) -> None:
    from orchestrator.runtime import versions

    register(engine, workflow(EVERY_10S))
    register(engine, workflow('  - name: weekly\n    cron: "0 6 * * 1"\n'))
    assert [s["name"] for s in schedules_view(engine.repo)] == ["report/weekly"]

    versions.rollback(engine, "report", OPS)
    assert [(s["name"], s["every_s"]) for s in schedules_view(engine.repo)] == [("report/often", 10)]
    newest = versions.versions_view(engine.repo, "report")[0]["version"]
    versions.activate(engine, "report", newest, OPS)
    assert [s["name"] for s in schedules_view(engine.repo)] == ["report/weekly"]


def test_a_paused_schedule_fires_nothing_and_owes_nothing_once_resumed(engine: Engine) -> None:
    register(engine, workflow(EVERY_10S.replace("overlap: allow", "catchup: all\n    overlap: allow")))
    assert pause(engine, "report/often", OPS) is True
    assert pause(engine, "report/often", OPS) is False  # already
    later = ticks(now(), 3)
    assert fire_due(engine, later[-1] + timedelta(seconds=1)).ticks == []

    assert resume(engine, "report/often", OPS) is True
    assert resume(engine, "report/often", OPS) is False
    # The ticks passed while paused are not caught up; the next one fires
    assert fire_due(engine, now()).ticks == []
    upcoming = ticks(now(), 1)[0]
    assert [t[1] for t in fire_due(engine, upcoming + timedelta(seconds=1)).started] == [upcoming]


def test_a_manual_trigger_starts_a_run_now_recorded_as_manual(engine: Engine) -> None:
    register(engine, workflow(EVERY_10S))
    pause(engine, "report/often", OPS)

    done = trigger(engine, "report/often", OPS)
    drive(engine)

    [run] = runs(engine)
    assert run["run_id"] == done.run_id and run["status"] == "succeeded"
    assert run["inputs"] == {"tick": done.fire_at.isoformat()}
    assert run["started_by"]["schedule"] == {
        "name": "report/often",
        "fire_at": done.fire_at.isoformat(),
        "manual": True,
        "by": "ops",
        "reason": "maintenance",
    }
    assert view(engine)["last_run"] == {"run_id": done.run_id, "status": "succeeded"}
    assert [(f["kind"], f["outcome"], f["run_id"]) for f in fires(engine)] == [("manual", "started", done.run_id)]


def test_an_unknown_schedule_is_one_clear_error(engine: Engine) -> None:
    register(engine, workflow(EVERY_10S))
    with pytest.raises(NotFound, match="no schedule report/nope"):
        trigger(engine, "report/nope", OPS)
    with pytest.raises(UsageError, match="WORKFLOW/NAME"):
        pause(engine, "often", OPS)


def policy(overlap: str) -> str:
    return workflow(EVERY_10S.replace("overlap: allow", f"overlap: {overlap}"), WAITS)


def look(engine: Engine, at: datetime) -> list[tuple[str, str | None]]:
    found = [(outcome, run) for _, _, outcome, run, _ in fire_due(engine, at + timedelta(seconds=1)).ticks]
    drive(engine)
    return found


def statuses(engine: Engine) -> list[str]:
    return [r["status"] for r in runs(engine)]


def test_overlap_skip_starts_nothing_while_the_run_before_is_active(engine: Engine) -> None:
    register(engine, policy("skip"))
    one, two, three = ticks(now(), 3)
    [(outcome, first)] = look(engine, one)
    assert outcome == "started"
    assert look(engine, two) == [("skipped", None)]
    operations.cancel(engine, str(first))
    assert look(engine, three)[0][0] == "started"
    assert statuses(engine) == ["cancelled", "running"]


def test_overlap_allow_starts_every_tick(engine: Engine) -> None:
    register(engine, policy("allow"))
    one, two = ticks(now(), 2)
    look(engine, one)
    look(engine, two)
    assert statuses(engine) == ["running", "running"]


def test_overlap_buffer_one_keeps_one_tick_and_starts_it_when_the_run_before_ends(engine: Engine) -> None:
    register(engine, policy("buffer_one"))
    one, two, three, four = ticks(now(), 4)
    [(_, first)] = look(engine, one)
    assert look(engine, two) == [("buffered", None)]
    assert look(engine, three) == [("skipped", None)]  # one buffered tick at most
    assert view(engine)["pending_fire_at"] == two.isoformat()

    operations.cancel(engine, str(first))
    # The next look (before the next tick) starts the buffered tick
    [(outcome, buffered)] = look(engine, three + timedelta(seconds=2))
    assert outcome == "started"
    assert next(r for r in runs(engine) if r["run_id"] == buffered)["inputs"] == {"tick": two.isoformat()}
    assert view(engine)["pending_fire_at"] is None
    assert [(f["fire_at"], f["outcome"]) for f in fires(engine)] == [
        (one, "started"),
        (two, "started"),
        (three, "skipped"),
    ]
    assert look(engine, four) == [("buffered", None)]


def test_overlap_cancel_other_cancels_the_run_before_then_starts(engine: Engine) -> None:
    register(engine, policy("cancel_other"))
    one, two = ticks(now(), 2)
    [(_, first)] = look(engine, one)
    [(outcome, second)] = look(engine, two)
    assert outcome == "started"
    by_id = {r["run_id"]: r["status"] for r in runs(engine)}
    assert by_id == {first: "cancelled", second: "running"}


@pytest.mark.parametrize(("catchup", "expected"), [("none", 0), ("latest", 1), ("all", 5)])
def test_catchup_after_downtime_from_the_last_fire_recorded(engine: Engine, catchup: str, expected: int) -> None:
    text = EVERY_10S.replace("every: 10s", "every: 5m").replace(
        "overlap: allow", f"catchup: {catchup}\n    overlap: allow"
    )
    register(engine, workflow(text))
    one, *missed = ticks(now(), 6, every=300)
    look(engine, one)
    # Beat is down for five ticks and comes back 2 minutes after the last one (past the 60 s grace)
    back = missed[-1] + timedelta(minutes=2)
    started = [run for outcome, run in look(engine, back) if outcome == "started"]
    assert len(started) == expected
    assert view(engine)["last_fire_at"] == missed[-1].isoformat()
    assert look(engine, back) == []  # dealt with: never owed again


def test_catchup_all_is_capped_and_warns(engine: Engine) -> None:
    register(engine, workflow(EVERY_10S.replace("overlap: allow", "catchup: all\n    overlap: allow")))
    one = ticks(now(), 1)[0]
    look(engine, one)
    back = one + timedelta(seconds=10 * 150 + 5)
    assert len(fire_due(engine, back).started) == 100
    assert "the latest 100 ran" in str(view(engine)["warning"])


def test_schedule_inputs_that_fail_the_schema_start_nothing_and_warn(engine: Engine) -> None:
    text = workflow(EVERY_10S).replace("tick: {type: string}", "tick: {type: integer}")
    register(engine, text)
    one = ticks(now(), 1)[0]
    assert look(engine, one) == [("invalid", None)]
    assert runs(engine) == []
    assert f"tick {one.isoformat()} started no run: inputs.tick" in str(view(engine)["warning"])
    assert fires(engine)[0]["detail"].startswith("inputs.tick")
    with pytest.raises(InputsError):
        trigger(engine, "report/often", OPS)
    assert runs(engine) == []


def test_the_builder_and_the_json_schema_know_schedules() -> None:
    from orchestrator.definition import WorkflowBuilder, workflow_json_schema

    wf = WorkflowBuilder("report")
    wf.step("work", "m:work")
    assert wf.schedule("morning", cron="0 6 * * 1-5", timezone="Europe/Paris", catchup="none") == "report/morning"
    wf.schedule("often", every="30s", inputs={"at": "${{ schedule.fire_at }}"}, overlap="buffer_one")
    plan = build_plan(wf.build(), check_tasks=False)
    assert [(s.name, s.spec.text, s.schedule.catchup, s.schedule.overlap) for s in plan.schedules] == [
        ("morning", "cron 0 6 * * 1-5", "none", "skip"),
        ("often", "every 30s", "latest", "buffer_one"),
    ]
    schedule = workflow_json_schema()["$defs"]["Schedule"]  # type: ignore[index]
    assert schedule["properties"]["overlap"]["enum"] == ["skip", "buffer_one", "allow", "cancel_other"]
    assert schedule["properties"]["catchup"]["enum"] == ["none", "latest", "all"]
    assert schedule["required"] == ["name"] and schedule["additionalProperties"] is False


BAD = """\
name: nightly
inputs: {type: object, required: [region], properties: {region: {type: string}}}
steps:
  a: {task: "m:f"}
schedules:
  - name: one
    cron: "61 * * * *"
    inputs: {region: eu}
  - name: two
    every: 500ms
    inputs: {region: eu}
  - name: one
    cron: "0 6 * * *"
    every: 5m
    timezone: Mars/Olympus
    catchup: sometimes
    overlap: queue
    inputs: {region: eu}
  - name: four
    inputs: {region: 3}
"""


def test_every_schedule_problem_is_its_own_located_line() -> None:
    from orchestrator.errors import InvalidDefinition

    loaded = load_text(BAD, "bad.yaml")
    with pytest.raises(InvalidDefinition) as caught:
        build_plan(loaded.workflow, loaded.source, check_tasks=False)
    lines = [str(p) for p in caught.value.problems]
    assert lines == [
        "bad.yaml:7: schedule 'one': invalid cron expression '61 * * * *': "
        "[61 * * * *] is not acceptable, out of range",
        "bad.yaml:10: schedule 'two': every is '500ms'; a schedule fires at most once a second",
        "bad.yaml:12: schedule 'one': the name is used by another schedule of this workflow",
        "bad.yaml:12: schedule 'one': give exactly one of cron or every (it has both)",
        "bad.yaml:15: schedule 'one': unknown time zone 'Mars/Olympus': use an IANA name such as UTC or Europe/Paris",
        "bad.yaml:16: schedule 'one': unknown catchup 'sometimes' (one of none, latest, all)",
        "bad.yaml:17: schedule 'one': unknown overlap 'queue' (one of skip, buffer_one, allow, cancel_other)",
        "bad.yaml:19: schedule 'four': give exactly one of cron or every (it has neither)",
        "bad.yaml:20: schedule 'four': inputs do not match the workflow's inputs schema at region: "
        "3 is not of type 'string': the schedule could never start a run",
    ]


def test_the_beat_scheduler_fires_from_the_store_and_outlives_an_outage(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    from orchestrator.schedule.beat import StoreScheduler
    from orchestrator.store import clock
    from orchestrator.worker.app import app

    register(engine, workflow(EVERY_10S))
    scheduler = StoreScheduler(app=app)
    assert set(scheduler.schedule) == {"orchestrator-reconcile"}  # celery's own entries, in memory
    scheduler._engine = engine
    first = ticks(now(), 1)[0]
    monkeypatch.setattr(clock, "now", lambda: first + timedelta(seconds=1))  # the store's clock

    # When beat ticks: the due tick fires from the store, and beat sleeps no longer than its poll
    assert 0 <= scheduler.tick() <= scheduler.poll_s
    drive(engine)
    assert [r["inputs"] for r in runs(engine)] == [{"tick": first.isoformat()}]

    # When the store goes away: the look is logged and beat goes on ticking
    broken = Repository.from_url(f"sqlite:///{tmp_path / 'missing' / 'state.db'}")
    scheduler._engine = Engine.create(broken, Recorder())
    scheduler._next_look = 0.0
    assert 0 <= scheduler.tick() <= scheduler.poll_s
    assert "schedules not checked (StateStoreError" in caplog.text


def test_beat_s_cache_of_next_ticks_skips_only_what_is_not_due(engine: Engine) -> None:
    register(engine, workflow(EVERY_10S))
    one, two = ticks(now(), 2)
    cache: dict[Any, datetime] = {}
    assert fire_due(engine, one - timedelta(seconds=1), cache=cache).ticks == []
    assert list(cache.values()) == [one]
    assert [t[1] for t in fire_due(engine, one + timedelta(seconds=1), cache=cache).started] == [one]
    assert fire_due(engine, one + timedelta(seconds=2), cache=cache).ticks == []
    assert [t[1] for t in fire_due(engine, two + timedelta(seconds=1), cache=cache).started] == [two]


def test_schedule_actions_and_the_runs_ticks_start_are_audited(engine: Engine) -> None:
    from orchestrator import audit

    register(engine, workflow(EVERY_10S))
    pause(engine, "report/often", OPS)
    resume(engine, "report/often", OPS)
    run_id = trigger(engine, "report/often", OPS).run_id
    fire_due(engine, at=now() + timedelta(seconds=15))  # a tick of every 10s has come by then
    with engine.repo.transaction() as tx:
        records = [(r["actor"], r["action"], r["target"]) for r in tx.audit_records(limit=100)]
    assert ("ops", "schedule.pause", "schedule:report/often") in records
    assert ("ops", "schedule.resume", "schedule:report/often") in records
    assert ("ops", "schedule.trigger", "schedule:report/often") in records
    assert ("ops", "run.submit", f"run:{run_id}") not in records  # a manual run is the trigger's record
    assert any(a == "schedule:report/often" and action == "run.submit" for a, action, _ in records)
    assert audit.verify(engine.repo).ok
