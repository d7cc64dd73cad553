"""Static checks that need more than one key at a time: everything pydantic cannot see alone.

Each check appends to a ``Report`` rather than raising, so a user sees every problem at once.
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import SchemaError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from orchestrator.definition.allowlist import VARIABLE, Allowlist, moved_hint
from orchestrator.definition.duration import parse_duration
from orchestrator.definition.loader import Source
from orchestrator.definition.model import Schedule, Step, Trigger, Workflow, split_ref
from orchestrator.errors import Problem, Severity
from orchestrator.schedule.arithmetic import CATCHUPS, OVERLAPS, Spec, check_cron, time_zone

_BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
}


@dataclass
class Report:
    """Problems found so far, located through the source's line map."""

    source: Source
    problems: list[Problem] = field(default_factory=list)

    def error(self, message: str, loc: tuple[Any, ...] = (), step: str | None = None) -> None:
        self.problems.append(self.source.problem(message, loc, step))

    def warning(self, message: str, loc: tuple[Any, ...] = (), step: str | None = None) -> None:
        problem = self.source.problem(message, loc, step)
        self.problems.append(Problem(problem.message, problem.source, problem.line, problem.step, Severity.WARNING))

    @property
    def has_errors(self) -> bool:
        return any(p.severity is Severity.ERROR for p in self.problems)


def known_needs(workflow: Workflow, report: Report) -> dict[str, tuple[str, ...]]:
    """Each step's needs, with unknown, repeated and self needs reported and dropped."""
    ids = workflow.steps.keys()
    result: dict[str, tuple[str, ...]] = {}
    for step_id, step in workflow.steps.items():
        kept: list[str] = []
        for index, need in enumerate(step.needs):
            if need in ids and need != step_id and need not in kept:
                kept.append(need)
                continue
            loc = ("steps", step_id, "needs", index)
            if need == step_id:
                report.error("needs itself", loc)
            elif need not in ids:
                report.error(f"needs unknown step '{need}'{hint(need, ids)}", loc)
            else:
                report.error(f"needs '{need}' twice", loc)
        result[step_id] = tuple(kept)
    return result


def report_cycles(cycles: Iterable[Sequence[str]], report: Report) -> None:
    for cycle in cycles:
        report.error(f"cycle: {' -> '.join(cycle)}", ("steps", cycle[0], "needs"), cycle[0])


def check_trigger(step_id: str, step: Step, report: Report) -> None:
    if step.trigger is not Trigger.ALL_SUCCEEDED and not step.needs:
        report.warning(
            f"trigger {step.trigger.value} has no effect on a step without needs",
            ("steps", step_id, "trigger"),
        )


def check_inputs_schema(workflow: Workflow, report: Report) -> set[str] | None:
    """Check the inputs JSON Schema; the declared input names, or None when any name goes."""
    schema = workflow.inputs
    if schema is None:
        return None
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        report.error(f"inputs is not a valid JSON Schema at {path}: {exc.message}", ("inputs",))
        return None
    properties = schema.get("properties")
    return set(properties) if isinstance(properties, dict) else None


def inputs_problem(schema: dict[str, Any], inputs: Any) -> str | None:
    """The first thing the inputs schema refuses in constant ``inputs``, or None (also when the
    schema itself is invalid: that is reported on its own)."""
    try:
        validator = validator_for(schema)(schema)
        error = best_match(validator.iter_errors(inputs))
    except SchemaError:
        return None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"inputs do not match the workflow's inputs schema{' at ' + where if where else ''}: {error.message}"


def check_input_refs(names: Iterable[str], declared: set[str] | None, loc: tuple[Any, ...], report: Report) -> None:
    if declared is None:
        return
    for name in sorted(set(names) - declared):
        report.warning(f"inputs.{name} is not declared in the inputs schema{hint(name, declared)}", loc)


def check_exception_names(names: Iterable[str], loc: tuple[Any, ...], report: Report, modules: Imports) -> None:
    """Each name must be a builtin exception or an importable dotted path to one (a module outside
    the allowlist, and not imported yet, is not imported: the name is matched as text at run time)."""
    for index, name in enumerate(names):
        where = (*loc, index)
        if "." not in name:
            if name not in _BUILTIN_EXCEPTIONS:
                report.error(
                    f"unknown exception '{name}'{hint(name, _BUILTIN_EXCEPTIONS)}: use a builtin "
                    "name or a dotted path such as 'shop.errors.PaymentDeclined'",
                    where,
                )
            continue
        module_name, _, attr = name.rpartition(".")
        module = modules.module(module_name, loaded_ok=True)
        if isinstance(module, Exception):
            report.warning(f"cannot check exception '{name}': {_import_failure(module_name, module)}", where)
            continue
        value = getattr(module, attr, None)
        if not (isinstance(value, type) and issubclass(value, BaseException)):
            report.error(f"'{name}' is not an exception class", where)


def check_task(
    step_id: str,
    task: str,
    report: Report,
    modules: Imports,
    seen: dict[str, tuple[str | None, bool]] | None = None,
    loc: tuple[Any, ...] | None = None,
) -> None:
    """A task outside the allowlist is refused, with nothing imported; a ``module:function`` task
    must resolve here, but a missing module is only a warning, since the workers' environment may
    have it. ``seen`` keeps each task's finding, so a task named by many steps is resolved once and
    reported on each of them."""
    loc = loc or ("steps", step_id, "task")
    if modules.refusal(modules.allowed.refusal(task), loc, report) or ":" not in task or not modules.imports:
        return
    found = seen.get(task) if seen is not None else None
    if found is None:
        found = task_problem(task, modules)
        if seen is not None:
            seen[task] = found
    problem, fatal = found
    if problem is not None:
        (report.error if fatal else report.warning)(problem, loc)


def task_problem(task: str, modules: Imports) -> tuple[str | None, bool]:
    """Why ``module:function`` does not resolve here, and whether that is an error (the module
    imports, the function is missing, not callable or defined outside the allowlist) or only a
    warning (no import here)."""
    module_name, _, attr = task.partition(":")
    module = modules.module(module_name)
    if isinstance(module, Exception):
        return f"task '{task}' not checked: {_import_failure(module_name, module, attr)}", False
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
    if target is None:
        return f"task '{task}': module '{module_name}' has no '{attr}'", True
    if not callable(target):
        return f"task '{task}' is not callable", True
    if modules.any and not modules.allowed.allows(module_name):
        return None, False  # the module's own refusal is reported already
    return modules.allowed.target_refusal(task, target), not modules.any


def check_schemas(step_id: str, step: Step, report: Report, modules: Imports, import_ok: bool) -> None:
    """``input_schema`` and ``output_schema`` must be valid JSON Schemas, or name a pydantic model
    (one that cannot be imported here is only a warning: the workers may have it)."""
    if step.input_schema is None and step.output_schema is None:
        return
    for key, schema in (("input_schema", step.input_schema), ("output_schema", step.output_schema)):
        loc = ("steps", step_id, key)
        if isinstance(schema, dict):
            try:
                validator_for(schema).check_schema(schema)
            except SchemaError as exc:
                report.error(f"{key} is not a valid JSON Schema: {exc.message}", loc)
                continue
            for ref in unresolvable_refs(schema):
                report.error(f"{key}: $ref '{ref}' cannot be resolved (only references inside the schema are)", loc)
        elif isinstance(schema, str) and import_ok:
            module_name, _, attr = schema.partition(":")
            refusal = modules.allowed.module_refusal(f"{key} '{schema}'", module_name, attr)
            if modules.refusal(refusal, loc, report):
                continue
            problem, fatal = model_problem(schema, modules)
            if problem is not None:
                (report.error if fatal else report.warning)(f"{key} {problem}", loc)


def unresolvable_refs(schema: dict[str, Any]) -> list[str]:
    """The ``$ref`` values in ``schema`` that do not resolve inside it (nothing is fetched)."""
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = Registry().with_resource("", resource).resolver()
    refs: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Unresolvable:
                    refs.append(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(set(refs))


def model_problem(ref: str, modules: Imports) -> tuple[str | None, bool]:
    """Why ``module:Model`` is not a pydantic model here, and whether that is an error (it is
    importable and not a model) or only a warning (it cannot be imported here)."""
    from pydantic import BaseModel

    module_name, _, attr = ref.partition(":")
    module = modules.module(module_name)
    if isinstance(module, Exception):
        return f"'{ref}' not checked: {_import_failure(module_name, module, attr)}", False
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
    if target is None:
        return f"'{ref}': module '{module_name}' has no '{attr}'", True
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        return f"'{ref}' is not a pydantic model (it is {type(target).__name__})", True
    return None, False


def check_approval(step_id: str, step: Step, report: Report) -> None:
    """An approval's inputs schema must itself be a valid JSON Schema."""
    if step.approval is None or step.approval.inputs is None:
        return
    schema = step.approval.inputs
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        report.error(f"approval.inputs is not a valid JSON Schema: {exc.message}", ("steps", step_id, "approval"))


def check_children(workflow: Workflow, known: Mapping[str, Workflow] | None, report: Report) -> None:
    """A workflow may not call itself, directly or through the workflows it calls (when their names
    are static); with ``known`` (the files given together and the registered definitions), a child
    found in neither is a warning: it may be registered before the run."""
    for step_id, step in workflow.nodes.items():
        if step.workflow is None:
            continue
        name = split_ref(step.workflow)[0]
        loc = ("steps", step_id, "workflow")
        path = _call_path(name, workflow.name, known or {})
        if path is not None:
            through = " -> ".join([workflow.name, *path])
            report.error(f"a workflow cannot call itself ({through}): nesting would never end", loc)
        elif known is not None and name not in known:
            report.warning(f"workflow '{name}' is not registered (orchestrator workflows register FILE)", loc)


def _call_path(start: str, target: str, known: Mapping[str, Workflow]) -> list[str] | None:
    """The chain of static calls from ``start`` back to ``target``, if there is one."""
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        name = frontier.pop()
        if name == target:
            path: list[str] = []
            at: str | None = name
            while at is not None:
                path.append(at)
                at = parents[at]
            return list(reversed(path))
        for step in known[name].nodes.values() if name in known else ():
            if step.workflow is not None:
                child = split_ref(step.workflow)[0]
                if child not in parents:
                    parents[child] = name
                    frontier.append(child)
    return None


def check_breaker(step_id: str, name: str | None, known: Mapping[str, Any] | set[str], report: Report) -> None:
    if name is not None and name not in known:
        listed = ", ".join(sorted(known)) or "none are declared"
        report.error(
            f"unknown breaker '{name}'{hint(name, known)} (declared: {listed})",
            ("steps", step_id, "breaker"),
        )


@dataclass
class Imports:
    """The modules the checks import, each once. Only allowed modules are imported (see
    ``allowlist``), unless ``any`` is set (``validate --import-any``): then a step outside the
    allowlist is a warning, since the workers will still refuse it, and its module is checked."""

    allowlist: Allowlist | None = None  # None: this process's, read when first needed
    any: bool = False
    imports: bool = True  # False: tasks are only checked against the allowlist, by name
    found: dict[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> Allowlist:
        if self.allowlist is None:
            self.allowlist = Allowlist.current()
        return self.allowlist

    def refusal(self, problem: str | None, loc: tuple[Any, ...], report: Report) -> bool:
        """Report ``problem`` (a refusal); whether the check must stop there (nothing imported)."""
        if problem is None:
            return False
        if self.any:
            report.warning(f"{problem} (checked anyway: --import-any; the workers will refuse it)", loc)
            return False
        report.error(problem, loc)
        return True

    def module(self, module_name: str, loaded_ok: bool = False) -> Any:
        """The module, or the exception importing it raised (cached either way); a module the
        allowlist refuses is not imported (the exception says so). ``loaded_ok``: one this process
        has already imported may be looked at, since that runs no code (for exception names)."""
        if loaded_ok and module_name in sys.modules:
            return sys.modules[module_name]
        if module_name not in self.found:
            if not self.any and not self.allowed.allows(module_name):
                self.found[module_name] = _NotAllowed(module_name)
                return self.found[module_name]
            try:
                self.found[module_name] = importlib.import_module(module_name)
            except Exception as exc:  # a user's module may fail in any way; the failure is reported
                self.found[module_name] = exc
        return self.found[module_name]


class _NotAllowed(Exception):
    """A module outside the allowlist, so not imported for a check."""


def _import_failure(module_name: str, exc: Exception, attr: str = "") -> str:
    if isinstance(exc, _NotAllowed):
        return f"module '{module_name}' is not in {VARIABLE} (validate --import-any imports it)"
    if isinstance(exc, ModuleNotFoundError):
        return f"module '{module_name}' is not importable here{moved_hint(module_name, attr)}"
    return f"importing '{module_name}' failed: {type(exc).__name__}: {exc}"


def check_schedule(index: int, schedule: Schedule, seen: set[str], report: Report) -> Spec | None:
    """One schedule's spec, or None after reporting each of its problems on its own line."""
    where = f"schedule '{schedule.name}'"
    loc: tuple[Any, ...] = ("schedules", index)
    before = _errors(report)
    if schedule.name in seen:
        report.error(f"{where}: the name is used by another schedule of this workflow", (*loc, "name"))
    seen.add(schedule.name)
    if (schedule.cron is None) == (schedule.every is None):
        given = "both" if schedule.cron is not None else "neither"
        report.error(f"{where}: give exactly one of cron or every (it has {given})", loc)
    every = None
    if schedule.every is not None:
        try:
            every = parse_duration(schedule.every)
        except ValueError as exc:
            report.error(f"{where}: every: {exc}", (*loc, "every"))
        if every is not None and every < 1:
            report.error(
                f"{where}: every is {schedule.every!r}; a schedule fires at most once a second", (*loc, "every")
            )
    for key, value, check in (("cron", schedule.cron, check_cron), ("timezone", schedule.timezone, time_zone)):
        try:
            if value is not None:
                check(value)
        except ValueError as exc:
            report.error(f"{where}: {exc}", (*loc, key))
    for key, value, allowed in (("catchup", schedule.catchup, CATCHUPS), ("overlap", schedule.overlap, OVERLAPS)):
        if value not in allowed:
            report.error(
                f"{where}: unknown {key} '{value}'{hint(value, allowed)} (one of {', '.join(allowed)})", (*loc, key)
            )
    if _errors(report) > before:
        return None
    return Spec(schedule.cron, every, schedule.timezone)


def _errors(report: Report) -> int:
    return sum(1 for p in report.problems if p.severity is Severity.ERROR)


def hint(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""
