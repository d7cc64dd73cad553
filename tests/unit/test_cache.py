"""The step cache in-process on SQLite: a hit is a succeeded step with no attempt and no call;
only successes are kept; the default key follows the function's source; ttl and clear end an
entry; a key expression that fails fails the step; two misses at once leave one entry."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.definition import build_plan, load_text
from orchestrator.runtime import operations
from orchestrator.runtime.caching import cached_entries, clear_cache
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.executor import Executor
from orchestrator.runtime.operations import Who
from orchestrator.runtime.views import history_view, run_view
from orchestrator.settings import get_settings
from orchestrator.store import Repository, now
from orchestrator.store import tables as t
from tests.unit import typed_steps
from tests.unit.harness import drive

PRICED = """
name: priced
inputs: {type: object, properties: {order_id: {type: string}, amount: {type: number}}}
steps:
  price:
    task: tests.unit.typed_steps:total
    with: {order_id: "${{ inputs.order_id }}", amount: "${{ inputs.amount }}"}
    cache: {}
  after:
    needs: [price]
    task: tests.unit.typed_steps:total
    with: {order_id: after, amount: "${{ steps.price.output.total }}"}
outputs: {total: "${{ steps.after.output.total }}"}
"""


@pytest.fixture
def real(repo: Repository) -> Engine:
    typed_steps.CALLS.clear()
    return Engine.create(repo, Recorder(), timing=Timing(countdown_limit=0), renew_leases=False)


def submit(engine: Engine, text: str, inputs: dict[str, Any], deliver: bool = True) -> str:
    run_id = operations.submit(engine, build_plan(load_text(text).workflow), inputs).run_id
    if deliver:
        drive(engine)
    return run_id


def test_a_hit_runs_nothing_spends_no_attempt_and_names_the_run_that_produced_it(real: Engine) -> None:
    first = submit(real, PRICED, {"order_id": "A1", "amount": 4})
    second = submit(real, PRICED, {"order_id": "A1", "amount": 4})
    other = submit(real, PRICED, {"order_id": "A2", "amount": 4})

    assert typed_steps.CALLS == ["total:A1", "total:after", "total:after", "total:A2", "total:after"]
    view = run_view(real.repo, second, with_attempts=True)
    assert (view["status"], view["outputs"]) == ("succeeded", {"total": 4})
    price = view["steps"]["price"]
    assert (price["status"], price["cached"], price["attempts"], price["attempt_log"]) == ("succeeded", True, 0, [])
    assert price["output"] == {"order_id": "A1", "total": 4}
    assert "cached" not in run_view(real.repo, first)["steps"]["price"]
    assert "cached" not in run_view(real.repo, other)["steps"]["price"]
    cached = [e for e in history_view(real.repo, second) if e["kind"] == "step.cached"]
    assert [(e["step"], e["detail"]) for e in cached] == [("price", {"from_run": first})]
    entries = cached_entries(real.repo, "priced", None, 10)
    assert sorted((e["run_id"], e["hits"]) for e in entries) == sorted([(first, 1), (other, 0)])


def test_only_successes_are_kept(real: Engine) -> None:
    failing = PRICED.replace("cache: {}", "cache: {}\n    output_schema: {properties: {total: {maximum: 1}}}")
    submit(real, failing, {"order_id": "A1", "amount": 4})
    submit(real, failing, {"order_id": "A1", "amount": 4})

    assert typed_steps.CALLS == ["total:A1", "total:A1"]
    assert cached_entries(real.repo, None, None, 10) == []


def test_a_key_expression_scopes_the_entry_and_its_failure_fails_the_step(real: Engine) -> None:
    keyed = PRICED.replace("cache: {}", 'cache: {key: "${{ inputs.order_id }}"}')
    submit(real, keyed, {"order_id": "K", "amount": 1})
    again = submit(real, keyed, {"order_id": "K", "amount": 99})  # the key ignores the amount
    assert typed_steps.CALLS.count("total:K") == 1
    assert run_view(real.repo, again)["outputs"] == {"total": 1}

    broken = PRICED.replace("cache: {}", 'cache: {key: "${{ inputs.order_id.missing }}"}')
    view = run_view(real.repo, submit(real, broken, {"order_id": "K", "amount": 1}))
    assert view["status"] == "failed"
    assert view["steps"]["price"]["error"].startswith("EvaluationError: cache.key: ")
    assert typed_steps.CALLS.count("total:K") == 1  # no silent miss: the function was not called


def test_ttl_and_clear_end_an_entry(real: Engine) -> None:
    timed = PRICED.replace("cache: {}", "cache: {ttl: 1h}")
    first = submit(real, timed, {"order_id": "T", "amount": 1})
    (entry,) = cached_entries(real.repo, "priced", "price", 10)
    assert entry["expires_at"] is not None and not entry["expired"]
    with real.repo.transaction() as tx:  # an hour passes
        tx.c.execute(sa.update(t.cache_entries).values(expires_at=now() - timedelta(seconds=1)))

    second = submit(real, timed, {"order_id": "T", "amount": 1})
    assert typed_steps.CALLS.count("total:T") == 2
    (entry,) = cached_entries(real.repo, "priced", "price", 10)
    assert (entry["run_id"], entry["hits"], entry["expired"]) == (second, 0, False)  # the expired one replaced
    assert first != second

    assert clear_cache(real.repo, "priced", "price", Who("ops", "stale prices")) == 1
    submit(real, timed, {"order_id": "T", "amount": 1})
    assert typed_steps.CALLS.count("total:T") == 3


@pytest.fixture
def edited_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "cache_edit_steps.py"
    sys.path.insert(0, str(tmp_path))
    monkeypatch.setenv("ORCHESTRATOR_TASK_MODULES", "tests,cache_edit_steps")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()
    sys.path.remove(str(tmp_path))
    sys.modules.pop("cache_edit_steps", None)


def test_editing_the_step_function_invalidates_its_entries(real: Engine, edited_module: Path) -> None:
    source = """
        CALLS = []

        def double(x):
            CALLS.append(x)
            return x * {factor}
    """
    edited_module.write_text(textwrap.dedent(source.format(factor=2)))
    module = importlib.import_module("cache_edit_steps")
    text = (
        "name: edited\nsteps:\n  d: {task: 'cache_edit_steps:double', with: {x: 5}, cache: {}}\n"
        "outputs: {d: '${{ steps.d.output }}'}"
    )
    assert run_view(real.repo, submit(real, text, {}))["outputs"] == {"d": 10}
    assert run_view(real.repo, submit(real, text, {}))["outputs"] == {"d": 10}
    assert module.CALLS == [5]

    edited_module.write_text(textwrap.dedent(source.format(factor=3)))
    module = importlib.reload(module)  # a worker started on the edited code
    assert run_view(real.repo, submit(real, text, {}))["outputs"] == {"d": 15}
    assert module.CALLS == [5]  # the reloaded module's ledger: the edited function ran


def test_two_misses_at_once_both_run_and_one_entry_results(real: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two runs whose cached step is queued, and a function that, while the first call runs,
    # delivers the second run's message (a second worker missing the same key at the same moment)
    first = submit(real, PRICED, {"order_id": "R", "amount": 2}, deliver=False)
    second = submit(real, PRICED, {"order_id": "R", "amount": 2}, deliver=False)
    recorder = real.transport
    assert isinstance(recorder, Recorder)
    (one, two), recorder.sent = recorder.sent, []
    calls: list[str] = []
    original = typed_steps.total

    def racing(order_id: str, amount: float) -> dict[str, Any]:
        calls.append(order_id)
        if len(calls) == 1:
            real.send(Executor(real).execute(two.step_run_id, two.dispatch_id))
        return original(order_id, amount)

    monkeypatch.setattr(typed_steps, "total", racing)
    # When the first delivery runs
    real.send(Executor(real).execute(one.step_run_id, one.dispatch_id))
    drive(real)

    # Then both called the function, both runs succeeded, and one entry (the first recorded) stands
    assert calls[:2] == ["R", "R"]
    assert [run_view(real.repo, r)["status"] for r in (first, second)] == ["succeeded", "succeeded"]
    (entry,) = cached_entries(real.repo, "priced", "price", 10)
    assert entry["run_id"] == second


def test_a_cache_that_cannot_be_read_defers_the_step_without_calling_it(
    real: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = submit(real, PRICED, {"order_id": "D", "amount": 1}, deliver=False)
    from orchestrator.errors import StateStoreError
    from orchestrator.runtime.middleware.cache import CacheMiddleware

    def unreadable(self: Any, key: str, at: Any) -> None:
        raise StateStoreError("the state store is unreachable")

    monkeypatch.setattr("orchestrator.store.cache.CacheQueries.cache_entry", unreadable)
    assert any(isinstance(m, CacheMiddleware) for m in real.stack.middleware)
    recorder = real.transport
    assert isinstance(recorder, Recorder)
    (message,), recorder.sent = recorder.sent, []
    real.send(Executor(real).execute(message.step_run_id, message.dispatch_id))

    assert typed_steps.CALLS == []
    view = run_view(real.repo, run_id, with_attempts=True)
    assert (view["steps"]["price"]["status"], view["steps"]["price"]["attempts"]) == ("queued", 0)
    deferred = [e for e in history_view(real.repo, run_id) if e["kind"] == "step.deferred"]
    assert deferred and "the cache cannot be read" in deferred[0]["detail"]["why"]


def test_a_cached_step_is_not_compensated_for_another_run_s_work(real: Engine) -> None:
    text = """
name: saga
steps:
  charge:
    task: tests.unit.typed_steps:charge
    with: {amount: 5}
    cache: {}
    compensate: {task: tests.unit.typed_steps:refund, with: {charge_id: "${{ output.charge_id }}"}}
  ship:
    needs: charge
    task: tests.unit.typed_steps:boom
    retry: {max_attempts: 1}
"""
    first = run_view(real.repo, submit(real, text, {}))
    second = run_view(real.repo, submit(real, text, {}))

    assert typed_steps.CALLS == ["charge:5", "boom", "refund:ch-1", "boom"]  # run 2 refunds nothing of run 1's
    assert (first["status"], first["compensated"]) == ("failed", True)
    assert second["status"] == "failed" and second["steps"]["charge"]["cached"] is True
    assert "compensate:charge" not in second["steps"]


def test_the_cache_keeps_what_the_function_returned_and_a_stricter_check_calls_it_again(real: Engine) -> None:
    def workflow(name: str, schema: str) -> str:
        return (
            f"name: {name}\nsteps:\n  p:\n    task: tests.unit.typed_steps:product\n    with: {{id: X}}\n"
            f"    cache: {{}}\n{schema}outputs: {{p: '${{{{ steps.p.output }}}}'}}\n"
        )

    slim = run_view(real.repo, submit(real, workflow("slim", "    output_schema: tests.unit.typed_steps:Slim\n"), {}))
    full = run_view(real.repo, submit(real, workflow("full", ""), {}))
    assert slim["outputs"] == {"p": {"id": "X"}}  # this step's schema shapes its own output
    assert full["outputs"] == {"p": {"id": "X", "price": 3.5, "extra": "kept"}}  # the cache kept all of it
    assert full["steps"]["p"]["cached"] is True and typed_steps.CALLS == ["product:X"]

    strict = "    assert: ['${{ output.price > 5 }}']\n"
    refused = run_view(real.repo, submit(real, workflow("strict", strict), {}))
    assert refused["status"] == "failed"  # the function ran again and its fresh value fails too
    assert typed_steps.CALLS == ["product:X", "product:X"]
    assert "cached" not in refused["steps"]["p"]


def test_expired_entries_are_purged_by_the_reconciler(real: Engine) -> None:
    from orchestrator.runtime.reconciler import reconcile

    submit(real, PRICED.replace("cache: {}", "cache: {ttl: 1h}"), {"order_id": "P", "amount": 1})
    submit(real, PRICED, {"order_id": "Q", "amount": 1})
    with real.repo.transaction() as tx:
        tx.c.execute(
            sa.update(t.cache_entries).where(t.cache_entries.c.expires_at.is_not(None)).values(expires_at=now())
        )
    reconcile(real)
    assert [e["expires_at"] for e in cached_entries(real.repo, None, None, 10)] == [None]


def test_a_retried_step_that_runs_again_is_no_longer_marked_cached(real: Engine) -> None:
    from orchestrator.runtime import repair

    submit(real, PRICED, {"order_id": "Z", "amount": 1})
    again = submit(real, PRICED, {"order_id": "Z", "amount": 1})
    assert run_view(real.repo, again)["steps"]["price"]["cached"] is True
    clear_cache(real.repo, None, None, Who("ops"))  # the entry goes: the retried step calls the function
    real.send(repair.retry(real, again, Who("ops"), from_step="price").dispatches)
    drive(real)
    price = run_view(real.repo, again)["steps"]["price"]
    assert ("cached" in price, price["attempts"]) == (False, 1)
