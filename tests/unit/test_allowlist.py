"""The task module allowlist: a step calls only functions of the modules named by
ORCHESTRATOR_TASK_MODULES and the built-ins; validate imports nothing else; the worker refuses the
rest at call time, whatever the definition it runs was checked against."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.definition import build_plan, load_text
from orchestrator.definition.allowlist import Allowlist
from orchestrator.errors import InvalidDefinition, Severity, TaskNotAllowed, TaskNotFound, ValidationError
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.executor import resolve_function
from orchestrator.runtime.typed import resolve_model
from orchestrator.runtime.views import run_view
from orchestrator.settings import get_settings
from orchestrator.store import Repository
from tests.unit.harness import drive

Listed = Callable[[str], None]


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listed]:
    """Set ORCHESTRATOR_TASK_MODULES for this test (the settings are read again)."""

    def set_to(value: str) -> None:
        monkeypatch.setenv("ORCHESTRATOR_TASK_MODULES", value)
        get_settings.cache_clear()

    yield set_to
    get_settings.cache_clear()


@pytest.fixture
def loud_module(tmp_path: Path) -> Iterator[Path]:
    """An importable module ``loud_steps`` that leaves a file behind when it is imported."""
    marker = tmp_path / "imported"
    (tmp_path / "loud_steps.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\n\ndef f():\n    return 1\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield marker
    sys.path.remove(str(tmp_path))
    sys.modules.pop("loud_steps", None)


def problems(text: str, **options: object) -> dict[tuple[str | None, Severity], str]:
    loaded = load_text(text, "wf.yaml")
    try:
        plan = build_plan(loaded.workflow, loaded.source, **options)  # type: ignore[arg-type]
    except InvalidDefinition as exc:
        return {(p.step, p.severity): p.message for p in exc.problems}
    return {(p.step, p.severity): p.message for p in plan.warnings}


def test_a_listed_module_allows_itself_and_its_submodules_at_a_dot_boundary() -> None:
    allowed = Allowlist(("shop",))
    assert [allowed.allows(m) for m in ("shop", "shop.tasks", "shop.tasks.deep", "shopx", "shopx.tasks", "sho")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_the_built_ins_are_always_allowed_and_the_orchestrator_itself_never() -> None:
    for allowed in (Allowlist(), Allowlist(("orchestrator",))):
        assert allowed.allows("orchestrator.steps.http")
        assert allowed.allows("orchestrator.examples")
        assert not allowed.allows("orchestrator.worker.tasks")
        assert not allowed.allows("orchestrator")
        assert not allowed.allows("orchestrator.stepsx")


@pytest.fixture
def loud_package(tmp_path: Path) -> Iterator[Path]:
    """An importable package ``loudpkg`` whose ``__main__`` and ``_impl`` leave a file behind when
    imported; ``loudpkg.tasks`` re-exports ``_impl``'s ``charge``."""
    marker = tmp_path / "imported"
    package = tmp_path / "loudpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    loud = f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\n\ndef f():\n    return 1\n"
    (package / "__main__.py").write_text(loud)
    (package / "_impl.py").write_text(loud + "\ndef charge():\n    return 'charged'\n")
    (package / "tasks.py").write_text("def _helper():\n    return 0\n")
    sys.path.insert(0, str(tmp_path))
    yield marker
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == "loudpkg" or m.startswith("loudpkg.")]:
        del sys.modules[name]


def test_a_private_submodule_is_allowed_only_when_listed_itself() -> None:
    allowed = Allowlist(("shop", "billing._impl"))
    names = ("shop.__main__", "shop._impl", "shop.tasks._x", "shop.tasks", "billing._impl", "billing._impl.sub")
    assert [allowed.allows(m) for m in names] == [False, False, False, True, True, True]


def test_a_listed_packages_private_modules_and_attributes_are_refused_without_importing_them(
    listed: Listed, loud_package: Path
) -> None:
    listed("loudpkg")
    found = problems(
        "name: t\nsteps:\n  a: {task: 'loudpkg.__main__:f'}\n  b: {task: 'loudpkg._impl:f'}\n"
        "  c: {task: 'loudpkg.tasks:_helper'}\n"
        "  d: {task: 'orchestrator.examples:add', output_schema: 'loudpkg._impl:M'}\n"
    )
    assert found == {
        ("a", Severity.ERROR): "task 'loudpkg.__main__:f' is refused: module 'loudpkg.__main__' is private "
        "(a part starts with '_'); list it in ORCHESTRATOR_TASK_MODULES to allow it",
        ("b", Severity.ERROR): "task 'loudpkg._impl:f' is refused: module 'loudpkg._impl' is private "
        "(a part starts with '_'); list it in ORCHESTRATOR_TASK_MODULES to allow it",
        ("c", Severity.ERROR): "task 'loudpkg.tasks:_helper' is refused: a step may not name a private attribute "
        "(one starting with '_')",
        ("d", Severity.ERROR): "output_schema 'loudpkg._impl:M' is refused: module 'loudpkg._impl' is private "
        "(a part starts with '_'); list it in ORCHESTRATOR_TASK_MODULES to allow it",
    }
    for task in ("loudpkg.__main__:f", "loudpkg._impl:f", "loudpkg.tasks:_helper"):
        with pytest.raises(TaskNotAllowed):
            resolve_function(task)
    assert not loud_package.exists() and "loudpkg.__main__" not in sys.modules


def test_a_function_a_listed_module_re_exports_from_its_private_module_is_allowed(
    listed: Listed, loud_package: Path
) -> None:
    listed("loudpkg")
    (loud_package.parent / "loudpkg" / "tasks.py").write_text("from loudpkg._impl import charge\n")
    assert problems("name: t\nsteps:\n  a: {task: 'loudpkg.tasks:charge'}\n") == {}
    assert resolve_function("loudpkg.tasks:charge")() == "charged"


def test_of_the_orchestrator_only_the_built_in_steps_and_the_examples_public_functions_are_steps() -> None:
    allowed = Allowlist(("orchestrator", "orchestrator.steps"))  # listing them changes nothing
    assert allowed.refusal("orchestrator.steps.http:request") is None
    assert allowed.refusal("orchestrator.examples:add") is None
    assert allowed.refusal("orchestrator.examples:write_draft") is None
    builtins = "(built-in: orchestrator.steps.http:request, orchestrator.examples)"
    for task in ("orchestrator.steps.http:shown", "orchestrator.examples:Path.home"):
        assert allowed.refusal(task) == f"task '{task}' is refused: it is not a built-in step {builtins}"
    for task in ("orchestrator.steps.guard:resolve", "orchestrator.steps:http"):
        module = task.partition(":")[0]
        assert allowed.refusal(task) == (
            f"task '{task}' is refused: module '{module}' is not in ORCHESTRATOR_TASK_MODULES "
            "(orchestrator, orchestrator.steps; built-in: orchestrator.steps.http:request, orchestrator.examples)"
        )
    assert "private attribute" in (allowed.refusal("orchestrator.examples:_check_feature") or "")
    assert not allowed.allows("orchestrator.steps") and not allowed.allows("orchestrator.steps.guard")


def test_what_the_examples_module_imports_is_not_a_step() -> None:
    found = problems(
        "name: t\nsteps:\n  a: {task: 'orchestrator.examples:ValidationError'}\n"
        "  b: {task: 'orchestrator.examples:Path'}\n  c: {task: 'orchestrator.examples:add'}\n"
    )
    assert "it is defined in 'orchestrator.errors', which is not in" in found[("a", Severity.ERROR)]
    assert "it is defined in 'pathlib', which is not in" in found[("b", Severity.ERROR)]
    assert ("c", Severity.ERROR) not in found
    with pytest.raises(TaskNotAllowed, match="it is defined in 'orchestrator.errors'"):
        resolve_function("orchestrator.examples:ValidationError")


def test_validate_refuses_a_module_outside_the_list_without_importing_it(listed: Listed, loud_module: Path) -> None:
    listed("tests")
    found = problems("name: t\nsteps:\n  a: {task: 'loud_steps:f'}\n  b: {task: 'subprocess:check_output'}\n")
    assert found == {
        ("a", Severity.ERROR): "task 'loud_steps:f' is refused: module 'loud_steps' is not in "
        "ORCHESTRATOR_TASK_MODULES (tests; built-in: orchestrator.steps.http:request, orchestrator.examples)",
        ("b", Severity.ERROR): "task 'subprocess:check_output' is refused: module 'subprocess' is not in "
        "ORCHESTRATOR_TASK_MODULES (tests; built-in: orchestrator.steps.http:request, orchestrator.examples)",
    }
    assert not loud_module.exists() and "loud_steps" not in sys.modules


def test_import_any_imports_and_checks_it_and_the_refusal_is_a_warning(listed: Listed, loud_module: Path) -> None:
    listed("")
    found = problems("name: t\nsteps:\n  a: {task: 'loud_steps:f'}\n  b: {task: 'loud_steps:g'}\n", import_any=True)
    assert found[("b", Severity.ERROR)] == "task 'loud_steps:g': module 'loud_steps' has no 'g'"
    assert found[("a", Severity.WARNING)].startswith("task 'loud_steps:f' is refused: module 'loud_steps' is not in")
    assert found[("a", Severity.WARNING)].endswith("(checked anyway: --import-any; the workers will refuse it)")
    assert loud_module.exists()


def test_a_listed_module_is_imported_and_checked(listed: Listed, loud_module: Path) -> None:
    listed("tests, loud_steps")
    assert problems("name: t\nsteps:\n  a: {task: 'loud_steps:f'}\n") == {}
    assert loud_module.exists()


def test_default_empty_allows_only_the_built_ins(listed: Listed) -> None:
    listed("")
    found = problems(
        "name: t\nsteps:\n  a: {task: 'orchestrator.examples:add'}\n  b: {task: 'tests.unit.allowed_steps:echo'}\n"
    )
    assert list(found) == [("b", Severity.ERROR)]
    assert "(unset; built-in: orchestrator.steps.http:request, orchestrator.examples)" in found[("b", Severity.ERROR)]


def test_an_allowed_modules_imports_give_nothing_away() -> None:
    found = problems(
        "name: t\nsteps:\n  a: {task: 'tests.unit.allowed_steps:subprocess.check_output'}\n"
        "  b: {task: 'tests.unit.allowed_steps:os.system'}\n"
        "  c: {task: 'tests.unit.allowed_steps:__loader__.load_module'}\n"
        "  d: {task: 'tests.unit.allowed_steps:echo'}\n"
    )
    assert found[("a", Severity.ERROR)] == (
        "task 'tests.unit.allowed_steps:subprocess.check_output' is refused: it is defined in 'subprocess', "
        "which is not in ORCHESTRATOR_TASK_MODULES "
        "(tests; built-in: orchestrator.steps.http:request, orchestrator.examples)"
    )
    assert "is refused: it is defined in 'posix'" in found[("b", Severity.ERROR)]
    assert found[("c", Severity.ERROR)] == (
        "task 'tests.unit.allowed_steps:__loader__.load_module' is refused: a step may not name a private attribute "
        "(one starting with '_')"
    )
    assert ("d", Severity.ERROR) not in found


def test_the_orchestrators_own_tasks_are_refused_by_name_and_by_module() -> None:
    found = problems(
        "name: t\nsteps:\n  a: {task: orchestrator.submit}\n  b: {task: 'orchestrator.worker.tasks:submit'}\n"
        "  c: {task: 'orchestrator.cli:main'}\n"
    )
    assert (
        found[("a", Severity.ERROR)]
        == "task 'orchestrator.submit' is refused: it is one of the orchestrator's own tasks"
    )
    assert "module 'orchestrator.worker.tasks' is not in ORCHESTRATOR_TASK_MODULES" in found[("b", Severity.ERROR)]
    assert "module 'orchestrator.cli' is not in ORCHESTRATOR_TASK_MODULES" in found[("c", Severity.ERROR)]


def test_compensate_tasks_and_states_are_checked_too() -> None:
    found = problems(
        "name: t\nsteps:\n  a:\n    task: 'tests.unit.allowed_steps:echo'\n"
        "    compensate: {task: 'shutil:rmtree', with: {path: /}}\n"
    )
    assert "task 'shutil:rmtree' is refused" in found[("a", Severity.ERROR)]
    machine = problems("name: m\ninitial: s\nstates:\n  s: {task: 'os:system', next: done}\n  done: {end: succeeded}\n")
    assert "task 'os:system' is refused" in machine[("s", Severity.ERROR)]


def test_a_schemas_model_outside_the_list_is_refused_without_importing_it(loud_module: Path) -> None:
    found = problems("name: t\nsteps:\n  a: {task: 'orchestrator.examples:add', output_schema: 'loud_steps:M'}\n")
    assert found[("a", Severity.ERROR)].startswith("output_schema 'loud_steps:M' is refused: module 'loud_steps'")
    with pytest.raises(ValidationError, match="output_schema 'loud_steps:M' is refused: module 'loud_steps' is not in"):
        resolve_model("loud_steps:M", "output_schema")
    assert not loud_module.exists()


def test_an_exception_name_outside_the_list_is_not_imported(loud_module: Path) -> None:
    found = problems(
        "name: t\nsteps:\n  a:\n    task: 'orchestrator.examples:add'\n    retry: {retry_on: [loud_steps.Err]}\n"
    )
    assert found == {
        ("a", Severity.WARNING): "cannot check exception 'loud_steps.Err': module 'loud_steps' is not in "
        "ORCHESTRATOR_TASK_MODULES (validate --import-any imports it)"
    }
    assert not loud_module.exists()


def test_the_old_module_names_get_a_hint_naming_the_new_ones(listed: Listed) -> None:
    listed("")
    found = problems("name: t\nsteps:\n  a: {task: 'tasks.examples:add'}\n  b: {task: 'tasks.http:request'}\n")
    assert found[("a", Severity.ERROR)].endswith("; it moved: use 'orchestrator.examples:add'")
    assert found[("b", Severity.ERROR)].endswith("; it moved: use 'orchestrator.steps.http:request'")
    # A user whose own package is called tasks (and lists it) gets the hint when the old name is not there
    listed("tasks")
    with pytest.raises(
        TaskNotFound, match=r"cannot import 'tasks.examples'.*it moved: use 'orchestrator.examples:add'"
    ):
        resolve_function("tasks.examples:add")


def test_validate_hints_at_the_new_name_when_a_listed_tasks_package_lacks_the_old_module(listed: Listed) -> None:
    listed("tasks")  # a user's own package called tasks, listed, without the examples in it
    found = problems("name: t\nsteps:\n  a: {task: 'tasks.examples:add'}\n")
    assert found == {
        ("a", Severity.WARNING): "task 'tasks.examples:add' not checked: module 'tasks.examples' is not importable "
        "here; it moved: use 'orchestrator.examples:add'"
    }


def test_the_worker_refuses_a_stored_definition_at_call_time_and_does_not_retry(repo: Repository) -> None:
    # Given: a definition stored without the checks (as registered, or submitted from elsewhere)
    text = (
        "name: t\nsteps:\n  a:\n    task: 'subprocess:check_output'\n    with: {args: [id]}\n"
        "    retry: {max_attempts: 3, delay: 0s}\n"
    )
    plan = build_plan(load_text(text).workflow, check_tasks=False)
    engine = Engine.create(repo, Recorder(), timing=Timing(countdown_limit=60), renew_leases=False)
    # When it runs on a worker with the default resolver
    run_id = operations.submit(engine, plan, {}).run_id
    drive(engine)
    # Then the step fails once, for good, naming the module and the variable
    view = run_view(repo, run_id)
    step = view["steps"]["a"]
    assert (view["status"], step["status"], step["attempts"]) == ("failed", "failed", 1)
    assert step["error"].startswith(
        "TaskNotAllowed: task 'subprocess:check_output' is refused: module 'subprocess' is not in "
        "ORCHESTRATOR_TASK_MODULES"
    )


def test_the_worker_resolves_celery_task_names_only_from_allowed_modules(listed: Listed) -> None:
    import tests.unit.allowed_steps  # noqa: F401  (registers tests.allowed_echo)
    from orchestrator.worker.tasks import resolve_task

    listed("tests")
    assert resolve_task("tests.allowed_echo")(text="hi") == "hi"
    assert resolve_task("tests.unit.allowed_steps:echo")(text="hi") == "hi"
    for name, why in (
        ("orchestrator.submit", "it is one of the orchestrator's own tasks"),
        ("orchestrator.execute_step", "it is one of the orchestrator's own tasks"),
        ("celery.backend_cleanup", "it is defined in 'celery.app.builtins'"),
    ):
        with pytest.raises(TaskNotAllowed, match=why):
            resolve_task(name)
    listed("shop")
    with pytest.raises(TaskNotAllowed, match="it is defined in 'tests.unit.allowed_steps', which is not in"):
        resolve_task("tests.allowed_echo")


def test_dry_run_refuses_what_the_workers_would(listed: Listed, tmp_path: Path) -> None:
    from orchestrator.cli.dry_run import _plan

    listed("")
    path = tmp_path / "wf.yaml"
    path.write_text("name: t\nsteps:\n  a: {task: 'subprocess:check_output'}\n")
    with pytest.raises(InvalidDefinition, match="task 'subprocess:check_output' is refused"):
        _plan(str(path))


def test_the_built_in_http_step_resolves_and_its_helpers_do_not(listed: Listed) -> None:
    listed("orchestrator")  # even listing the whole package admits no helper as a step
    from orchestrator.steps.http import request

    assert resolve_function("orchestrator.steps.http:request") is request
    for helper in ("orchestrator.steps.guard:resolve", "orchestrator.steps.http:shown", "orchestrator.examples:Path"):
        with pytest.raises(TaskNotAllowed):
            resolve_function(helper)
