"""``${{ secrets.NAME }}``: where it may be written, where the value comes from, and where it never goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from orchestrator.definition import build_plan, load_text
from orchestrator.errors import InvalidDefinition, SecretMissing, SecretUnreadable, UsageError
from orchestrator.runtime import operations, secrets
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.operations import Who
from orchestrator.runtime.views import history_view, run_view
from orchestrator.settings import Settings, get_settings
from orchestrator.store import Repository
from tests.unit.harness import drive

VALUE = "s3cr3t-Planted-Value"
STEPS = "tests.integration.secret_steps"
WORKFLOW = f"""
name: uses-secret
inputs: {{type: object, properties: {{note: {{type: string}}}}}}
steps:
  use:
    task: {STEPS}:check
    with:
      token: "${{{{ secrets.API_TOKEN }}}}"
      header: "Bearer ${{{{ secrets.API_TOKEN }}}}"
      note: "${{{{ inputs.note }}}}"
  boom:
    needs: [use]
    task: {STEPS}:leak
    with: {{token: "${{{{ secrets.API_TOKEN }}}}"}}
"""


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = Fernet.generate_key().decode()
    monkeypatch.setenv("ORCHESTRATOR_SECRET_KEY", value)
    get_settings.cache_clear()
    yield value
    get_settings.cache_clear()


@pytest.fixture
def real(repo: Repository) -> Engine:
    return Engine.create(repo, Recorder(), timing=Timing(countdown_limit=0), renew_leases=False)


def _problems(text: str) -> list[str]:
    with pytest.raises(InvalidDefinition) as caught:
        build_plan(load_text(text).workflow, check_tasks=False)
    return [p.message for p in caught.value.problems]


def _step(**fields: str) -> str:
    lines = "".join(f"\n    {k}: {v}" for k, v in fields.items())
    return f"name: w\nsteps:\n  a:{lines}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_step(task="m:f", **{"if": '"${{ secrets.FLAG }}"'}), "'secrets' is not defined in a step's if"),
        (_step(task="m:f", **{"with": '{t: "${{ secrets.lower }}"}'}), "a secret is read whole"),
        (_step(task="m:f", **{"with": '{t: "${{ len(secrets.A) }}"}'}), "a secret is read whole"),
        (_step(task="m:f", **{"with": '{t: "${{ secrets }}"}'}), "a secret is read whole"),
        (_step(task="m:f", cache='{key: "${{ secrets.A }}"}'), "'secrets' is not defined in a step's cache.key"),
        (_step(task="m:f", **{"assert": '["${{ secrets.A == output }}"]'}), "a secret is read whole"),
        (_step(workflow="child", **{"with": '{t: "${{ secrets.A }}"}'}), "'secrets' is not defined in a step's with"),
        ('name: w\noutputs: {t: "${{ secrets.A }}"}\nsteps: {a: {task: "m:f"}}', "'secrets' is not defined in outputs"),
    ],
)
def test_secrets_are_refused_outside_a_tasks_with(text: str, expected: str) -> None:
    assert any(expected in p for p in _problems(text)), _problems(text)


def test_a_task_and_its_compensation_may_read_secrets() -> None:
    text = _step(
        task="m:f",
        **{"with": '{t: "Bearer ${{ secrets.API_TOKEN }}"}'},
        compensate='{task: "m:g", with: {t: "${{ secrets.API_TOKEN }}"}}',
    )
    plan = build_plan(load_text(text).workflow, check_tasks=False)
    assert secrets.uses(plan.steps["a"].arguments)


def test_the_environment_prefix_reads_no_other_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the Fernet key and the database URL in the environment, and one secret
    monkeypatch.setenv("ORCHESTRATOR_SECRET_KEY", "the-fernet-key")
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", "postgresql://u:pw@h/db")
    monkeypatch.setenv("ORCHESTRATOR_SECRETS_TOKEN", "from-env")
    lookup = secrets.Lookup(None, None)
    # Then only the prefixed variable is a secret
    assert lookup["TOKEN"] == "from-env"
    for name in ("KEY", "SECRET_KEY", "DATABASE_URL"):
        with pytest.raises(SecretMissing, match=f"secret {name} is not set"):
            lookup[name]
    # And no setting could ever be read as a secret
    assert not [f for f in Settings.model_fields if f.startswith("secrets")]


def test_stored_secrets_are_encrypted_and_need_their_key(repo: Repository, key: str) -> None:
    created = secrets.set_secret(repo, key, "API_TOKEN", VALUE, Who("alice", "rotate"))
    assert created and not secrets.set_secret(repo, key, "API_TOKEN", VALUE, Who("alice", None))
    with repo.engine.connect() as c:
        assert VALUE not in str(c.execute(sa.text("SELECT * FROM secrets")).all())
    assert secrets.Lookup(repo, key)["API_TOKEN"] == VALUE
    with pytest.raises(SecretUnreadable, match="is not its key"):
        secrets.Lookup(repo, Fernet.generate_key().decode())["API_TOKEN"]
    with pytest.raises(SecretUnreadable, match="ORCHESTRATOR_SECRET_KEY is not set"):
        secrets.Lookup(repo, None)["API_TOKEN"]
    assert [r["name"] for r in secrets.list_secrets(repo)] == ["API_TOKEN"]
    secrets.delete_secret(repo, "API_TOKEN", Who("alice", None))
    assert secrets.list_secrets(repo) == []


def test_a_bad_key_or_name_is_a_usage_error_that_never_shows_the_key() -> None:
    with pytest.raises(UsageError) as caught:
        secrets.Fernet("not-a-key-at-all")
    assert "not-a-key-at-all" not in caught.value.message
    with pytest.raises(UsageError, match="capitals"):
        secrets.check_name("api_token")


def _everything(repo: Repository) -> str:
    """Every row of every table, as text."""
    dump = []
    with repo.engine.connect() as c:
        for table in sa.inspect(c).get_table_names():
            dump.append(str(c.execute(sa.text(f'SELECT * FROM "{table}"')).all()))
    return "\n".join(dump)


def test_a_run_uses_the_value_and_stores_only_the_reference(real: Engine, key: str) -> None:
    # Given a stored secret, and a run input that quotes a secret's reference
    secrets.set_secret(real.repo, key, "API_TOKEN", VALUE, Who("alice", None))
    plan = build_plan(load_text(WORKFLOW).workflow)
    run_id = operations.submit(real, plan, {"note": "${{ secrets.API_TOKEN }}"}).run_id
    # When it runs: one step uses the secret, the next fails quoting it
    drive(real)
    # Then the function got the value; the input's text stayed text
    view = run_view(real.repo, run_id)
    assert view["steps"]["use"]["output"] == {"length": len(VALUE), "bearer": True, "note": "${{ secrets.API_TOKEN }}"}
    # And the error names the value redacted, and the value is stored nowhere
    assert view["steps"]["boom"]["error"] == "ValueError: the service refused the token '***' (token=***)"
    assert VALUE not in _everything(real.repo)
    assert VALUE not in str(view) + str(history_view(real.repo, run_id))
    assert "${{ secrets.API_TOKEN }}" in _everything(real.repo)


def test_a_missing_secret_fails_the_step_naming_it_and_is_not_retried(real: Engine, key: str) -> None:
    text = WORKFLOW.replace("needs: [use]", "needs: []").replace("name: uses-secret", "name: missing")
    text += "defaults: {retry: {max_attempts: 3, delay: 0s}}\n"
    run_id = operations.submit(real, build_plan(load_text(text).workflow), {"note": "n"}).run_id
    drive(real)
    step = run_view(real.repo, run_id)["steps"]["use"]
    assert step["status"] == "failed" and step["attempts"] == 1
    assert step["error"] == (
        "SecretMissing: secret API_TOKEN is not set"
        " (orchestrator secrets set API_TOKEN, or ORCHESTRATOR_SECRETS_API_TOKEN)"
    )


def test_redaction_covers_the_forms_a_traceback_shows() -> None:
    values = {"A": "line\nbreak", "B": "plain-value"}
    text = "x 'line\\nbreak' y line\nbreak z plain-value"
    assert secrets.redact(text, values) == "x '***' y *** z ***"
    data: Any = {"plain-value": ["plain-value!", 1]}
    assert secrets.redact_data(data, values) == {"***": ["***!", 1]}


def test_the_cli_never_prints_a_value(tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from orchestrator.cli import main

    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{tmp_path / 's.db'}")
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(main, ["secrets", "set", "API_TOKEN", "--reason", "r"], input=VALUE + "\n").exit_code == 0
    listed = runner.invoke(main, ["secrets", "list", "--json"])
    audit = runner.invoke(main, ["audit", "export", "--format", "json"])
    deleted = runner.invoke(main, ["secrets", "delete", "API_TOKEN"])
    again = runner.invoke(main, ["secrets", "delete", "API_TOKEN"])
    assert '"name": "API_TOKEN"' in listed.output and '"secret.set"' in audit.output
    assert '"secret.delete"' in runner.invoke(main, ["audit", "export", "--format", "json"]).output
    assert (deleted.exit_code, again.exit_code) == (0, 2)
    assert VALUE not in listed.output + audit.output + deleted.output + again.output


def test_a_step_that_returns_a_secret_stores_it_redacted_and_caches_it_so(real: Engine, key: str) -> None:
    secrets.set_secret(real.repo, key, "API_TOKEN", VALUE, Who("alice", None))
    text = f"""
name: careless
steps:
  give:
    task: {STEPS}:give_back
    with: {{token: "${{{{ secrets.API_TOKEN }}}}"}}
    cache: {{}}
"""
    run_id = operations.submit(real, build_plan(load_text(text).workflow), {}).run_id
    drive(real)
    assert run_view(real.repo, run_id)["steps"]["give"]["output"] == {"token": "***", "said": "the token is ***"}
    assert VALUE not in _everything(real.repo)


def test_inputs_an_operator_corrected_are_kept_and_the_references_still_resolve(repo: Repository, key: str) -> None:
    # Given a step's with, and its inputs as a dead-letter replay corrected them
    secrets.set_secret(repo, key, "API_TOKEN", VALUE, Who("alice", None))
    text = f"""
name: replayed
steps:
  use:
    task: {STEPS}:check
    with: {{token: "${{{{ secrets.API_TOKEN }}}}", header: "no", note: "first"}}
"""
    arguments = build_plan(load_text(text).workflow).steps["use"].arguments
    corrected = {"token": "${{ secrets.API_TOKEN }}", "header": "fixed", "note": "${{ secrets.API_TOKEN }}"}
    # When the function's inputs are worked out
    merged = secrets.resolved(corrected, arguments, {}, secrets.Lookup(repo, key))
    # Then the reference where the template put it is resolved; what the operator wrote stays as written
    assert merged == {"token": VALUE, "header": "fixed", "note": "${{ secrets.API_TOKEN }}"}


def test_a_compensation_reads_the_output_it_undoes_and_a_secret(real: Engine, key: str) -> None:
    # Given a compensation whose with reads both the undone step's output and a secret
    secrets.set_secret(real.repo, key, "API_TOKEN", VALUE, Who("alice", None))
    text = f"""
name: undo-with-secret
steps:
  a:
    task: {STEPS}:give_back
    with: {{token: "x"}}
    compensate:
      task: {STEPS}:check
      with: {{token: "${{{{ secrets.API_TOKEN }}}}", header: "Bearer ${{{{ secrets.API_TOKEN }}}}",
             note: "${{{{ output.token }}}}"}}
  b:
    needs: [a]
    task: {STEPS}:leak
    with: {{token: "y"}}
    retry: {{max_attempts: 1}}
"""
    run_id = operations.submit(real, build_plan(load_text(text).workflow), {}).run_id
    # When b fails and a is undone
    drive(real)
    # Then the compensation ran with the value and the output it undoes
    view = run_view(real.repo, run_id)
    undo = view["steps"]["compensate:a"]
    assert undo["status"] == "succeeded", undo["error"]
    assert undo["output"] == {"length": len(VALUE), "bearer": True, "note": "x"}


def test_a_store_that_cannot_read_a_secret_defers_the_step_spending_no_attempt(
    real: Engine, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a step that reads a stored secret, and a store that fails when the secret is read
    from orchestrator.errors import StateStoreError
    from orchestrator.store.secrets import SecretQueries

    secrets.set_secret(real.repo, key, "API_TOKEN", VALUE, Who("alice", None))

    def unreachable(self: Any, name: str) -> str:
        raise StateStoreError("state store error at postgresql://db/app: server closed the connection unexpectedly")

    monkeypatch.setattr(SecretQueries, "secret_token", unreachable)
    text = WORKFLOW.replace("needs: [use]", "needs: [use]\n    if: ${{ false }}")
    run_id = operations.submit(real, build_plan(load_text(text).workflow), {"note": "n"}).run_id
    # When a worker takes the step
    drive(real)
    # Then the run goes on: the step comes back later, with no attempt spent and no call made
    view = run_view(real.repo, run_id)
    assert view["status"] == "running"
    assert (view["steps"]["use"]["status"], view["steps"]["use"]["attempts"]) == ("queued", 0)
    assert "a secret cannot be read" in str(history_view(real.repo, run_id))


def test_a_cache_hit_serves_a_step_whose_secret_is_gone(real: Engine, key: str) -> None:
    # Given a cached step that read a secret once, and the secret since deleted
    secrets.set_secret(real.repo, key, "API_TOKEN", VALUE, Who("alice", None))
    text = f"""
name: cached-secret
steps:
  use:
    task: {STEPS}:check
    with: {{token: "${{{{ secrets.API_TOKEN }}}}", header: "Bearer ${{{{ secrets.API_TOKEN }}}}"}}
    cache: {{}}
"""
    plan = build_plan(load_text(text).workflow)
    first = operations.submit(real, plan, {}).run_id
    drive(real)
    secrets.delete_secret(real.repo, "API_TOKEN", Who("alice", None))
    # When the step runs again
    second = operations.submit(real, plan, {}).run_id
    drive(real)
    # Then the cache serves it: the missing secret is never needed
    step = run_view(real.repo, second)["steps"]["use"]
    assert (step["status"], step.get("cached")) == ("succeeded", True), step["error"]
    assert step["output"] == run_view(real.repo, first)["steps"]["use"]["output"]


@pytest.mark.parametrize("cache", ["", "\n    cache: {}"])
def test_a_missing_secret_is_no_failure_of_the_service_behind_a_breaker(real: Engine, key: str, cache: str) -> None:
    # Given a cached or uncached step behind a breaker, whose secret is not set
    from orchestrator.runtime.breaker import Breakers

    text = f"""
name: guarded
breakers: {{api: {{fail_max: 1, reset_timeout: 1h}}}}
steps:
  use:
    task: {STEPS}:check
    with: {{token: "${{{{ secrets.API_TOKEN }}}}", header: "x"}}
    breaker: api{cache}
"""
    run_id = operations.submit(real, build_plan(load_text(text).workflow), {}).run_id
    drive(real)
    # Then the step fails naming the secret, and the breaker counted nothing
    assert run_view(real.repo, run_id)["steps"]["use"]["error"].startswith("SecretMissing: secret API_TOKEN")
    assert Breakers(real.repo, None).describe("api")["failures"] == 0
