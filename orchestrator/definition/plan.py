"""The execution plan: what the scheduler dispatches, compiled once from a valid model.

``build_plan`` runs every static check and either returns a ``Plan`` (with any warnings) or
raises ``InvalidDefinition`` listing every error. It is linear in steps + edges.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from orchestrator.definition import validation as check
from orchestrator.definition.allowlist import Allowlist
from orchestrator.definition.expression import References, Template, compile_template
from orchestrator.definition.graph import is_upstream, layer
from orchestrator.definition.loader import Source
from orchestrator.definition.machine import MachinePlan, VisitSteps, build_machine
from orchestrator.definition.model import On, RetryPolicy, Schedule, Step, Trigger, Workflow
from orchestrator.errors import ExpressionError, InvalidDefinition, Problem
from orchestrator.schedule.arithmetic import Spec
from orchestrator.settings import DEFAULT_STEP_TIMEOUT_S

_DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One step as the scheduler sees it: compiled expressions and effective options."""

    id: str
    step: Step
    needs: tuple[str, ...]
    dependents: tuple[str, ...]
    level: int
    condition: Template | None
    foreach: Template | None
    arguments: Template
    retry: RetryPolicy
    timeout: float | None
    asserts: tuple[Template, ...] = ()  # each must hold over output, inputs and upstream steps
    cache_key: Template | None = None  # the step's own cache key, when it gives one

    @property
    def task(self) -> str:
        return self.step.task or ""

    @property
    def kind(self) -> str:
        return self.step.kind

    @property
    def label(self) -> str:
        """What the step does, in a word: its task, or its wait or approval (for the DLQ and lists)."""
        if self.step.wait is not None:
            return f"wait:{self.step.wait.event}" if self.step.wait.event else f"wait:{self.step.wait.form}"
        if self.step.approval is not None:
            return "approval"
        if self.step.workflow is not None:
            return f"workflow:{self.step.workflow}"
        return self.task

    @property
    def trigger(self) -> Trigger:
        return self.step.trigger

    @property
    def is_join(self) -> bool:
        return len(self.needs) > 1


@dataclass(frozen=True)
class TriggerPlan:
    """One ``on`` entry, compiled: its ``if`` and ``inputs`` read ``run`` (after) or ``event``."""

    index: int
    on: On
    condition: Template | None
    inputs: Template


@dataclass(frozen=True)
class SchedulePlan:
    """One schedule, checked: when it fires, and its ``inputs``, which may read ``schedule``
    (name, workflow, fire_at, manual)."""

    schedule: Schedule
    spec: Spec
    inputs: Template

    @property
    def name(self) -> str:
        return self.schedule.name


@dataclass(frozen=True)
class Plan:
    workflow: Workflow
    order: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    steps: Mapping[str, StepPlan]
    outputs: Template
    warnings: tuple[Problem, ...]
    triggers: tuple[TriggerPlan, ...] = ()
    machine: MachinePlan | None = None
    compensations: Mapping[str, StepPlan] = field(default_factory=dict)  # by compensated step
    schedules: tuple[SchedulePlan, ...] = ()

    def first_rows(self) -> dict[str, int]:
        """The step rows a new run starts with, and how many needs each waits for: every step of
        a DAG; a state machine's initial state (each visit of a state adds its own row)."""
        if self.machine is not None:
            return {self.machine.initial: 0}
        return {s: len(self.steps[s].needs) for s in self.order}

    @cached_property
    def version(self) -> str:
        """The definition's content hash, which every run pins."""
        return self.workflow.content_hash()

    @property
    def roots(self) -> tuple[str, ...]:
        return self.levels[0] if self.levels else ()

    @property
    def joins(self) -> tuple[str, ...]:
        return tuple(s for s in self.order if self.steps[s].is_join)


def build_plan(
    workflow: Workflow,
    source: Source | None = None,
    *,
    known_breakers: set[str] | frozenset[str] = frozenset(),
    check_tasks: bool = True,
    known_workflows: Mapping[str, Workflow] | None = None,
    allowlist: Allowlist | None = None,
    import_any: bool = False,
) -> Plan:
    """Check ``workflow`` statically and compile it; InvalidDefinition lists every error.
    ``known_workflows`` (by name) lets the check follow sub-workflow calls and warn of unknown ones.
    ``check_tasks``: tasks outside ``allowlist`` (default: this process's) are refused and the others
    are imported to check them; without it, only a given ``allowlist`` is checked, by name (a plan
    built from a stored definition checks nothing: the worker refuses a task when it calls it).
    ``import_any``: modules outside the allowlist are imported too, and a refusal is only a warning."""
    imports = check.Imports(allowlist, import_any, imports=check_tasks)
    with _collector_paused():
        return _build(workflow, source, known_breakers, check_tasks or allowlist is not None, known_workflows, imports)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Compiling allocates many small objects and no reference cycles worth collecting; pausing
    the cyclic GC keeps a 100,000-step plan linear instead of paying for repeated full passes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            _promote_young()
            gc.enable()


def _promote_young() -> None:
    """Move the young generations (mostly the plan just built) to the oldest one, as surviving
    two collections would, instead of tracing them all in the collection that follows ``enable``.
    Skipped when anything is frozen: ``unfreeze`` must not release another caller's ``gc.freeze``."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def _build(
    workflow: Workflow,
    source: Source | None,
    known_breakers: set[str] | frozenset[str],
    check_tasks: bool,
    known_workflows: Mapping[str, Workflow] | None,
    modules: check.Imports,
) -> Plan:
    report = check.Report(source or Source("<workflow>"))
    machine_like = workflow.is_machine
    needs = {s: () for s in workflow.states} if machine_like else check.known_needs(workflow, report)
    layering = layer(needs)
    check.report_cycles(layering.cycles, report)
    declared_inputs = check.check_inputs_schema(workflow, report)
    breakers = set(workflow.breakers) | set(known_breakers)
    for name, breaker in workflow.breakers.items():
        check.check_exception_names(breaker.exclude, ("breakers", name, "exclude"), report, modules)
    default_retry = _effective_retry(None, workflow, report, modules)
    upstream_cache: dict[str, frozenset[str]] = {}
    tasks: dict[str, tuple[str | None, bool]] = {}
    kind = "states" if machine_like else "steps"
    steps: dict[str, StepPlan] = {}
    for step_id, step in workflow.nodes.items():
        compiled = _compile_step(step_id, step, report)
        if compiled is None:
            continue
        condition, foreach, arguments, spec = compiled
        for where, template in (("if", condition), ("foreach", foreach), (spec, arguments)):
            if template is not None and not template.is_constant:
                refs = _task_refs(template.refs) if where == "with" and step.task is not None else template.refs
                if machine_like:  # states loop: any state's latest output may be read
                    _check_state_refs(step_id, where, refs, workflow, report)
                else:
                    _check_refs(step_id, where, refs, step, needs, layering.level_of, upstream_cache, report)
                if declared_inputs is not None:
                    check.check_input_refs(template.refs.inputs, declared_inputs, (kind, step_id, where), report)
        # Each guard below is its check's own first test, kept here to save a call per step.
        if step.trigger is not Trigger.ALL_SUCCEEDED:
            check.check_trigger(step_id, step, report)
        if step.breaker is not None:
            check.check_breaker(step_id, step.breaker, breakers, report)
        if check_tasks and step.task is not None:
            check.check_task(step_id, step.task, report, modules, tasks)
        if step.approval is not None:
            check.check_approval(step_id, step, report)
        if step.input_schema is not None or step.output_schema is not None:
            check.check_schemas(step_id, step, report, modules, modules.imports)
        asserts: tuple[Template, ...] = ()
        cache_key = None
        if step.assert_ or step.cache is not None:
            asserts, cache_key = _compile_checks(
                step_id, step, workflow, needs, layering.level_of, upstream_cache, report
            )
        if declared_inputs is not None and (asserts or cache_key is not None):
            check.check_input_refs(
                set().union(*(t.refs.inputs for t in (*asserts, cache_key) if t is not None)),
                declared_inputs,
                (kind, step_id, "assert"),
                report,
            )
        retry = default_retry
        if step.retry is not None:
            retry = _effective_retry(step, workflow, report, modules, step_id, default_retry)
        steps[step_id] = StepPlan(
            id=step_id,
            step=step,
            needs=needs[step_id],
            dependents=layering.dependents[step_id],
            level=layering.level_of.get(step_id, -1),
            condition=condition,
            foreach=foreach,
            arguments=arguments,
            retry=retry,
            timeout=_effective_timeout(step, workflow),
            asserts=asserts,
            cache_key=cache_key,
        )
    check.check_children(workflow, known_workflows, report)
    outputs = _compile_outputs(workflow, declared_inputs, report)
    triggers = _compile_triggers(workflow, report)
    schedules = _compile_schedules(workflow, report)
    machine = build_machine(workflow, declared_inputs, report) if machine_like else None
    compensations = _compile_compensations(workflow, declared_inputs, default_retry, report, modules, check_tasks)
    if report.has_errors:
        raise InvalidDefinition(report.problems)
    ordered = {step_id: steps[step_id] for step_id in layering.order}
    ordered.update({sp.id: sp for sp in compensations.values()})
    return Plan(
        workflow=workflow,
        order=layering.order,
        levels=layering.levels,
        steps=VisitSteps(ordered) if machine_like else ordered,
        outputs=outputs,
        warnings=tuple(report.problems),
        triggers=triggers,
        machine=machine,
        compensations=compensations,
        schedules=schedules,
    )


def _compile_step(
    step_id: str, step: Step, report: check.Report
) -> tuple[Template | None, Template | None, Template, str] | None:
    """A step's ``if``, ``foreach`` and ``with`` (or its wait or approval spec, named by the
    last value), or None after reporting each one that does not compile."""
    spec_key = _spec_key(step)
    compiled: list[Template | None] = []
    ok = True
    for where, value in (("if", step.if_), ("foreach", step.foreach), (spec_key, _spec(step))):
        if value is None:
            compiled.append(None)
            continue
        try:
            compiled.append(compile_template(value))
        except ExpressionError as exc:
            report.error(f"{where}: {exc.message}", ("steps", step_id, where))
            compiled.append(None)
            ok = False
    if not ok:
        return None
    condition, foreach, arguments = compiled
    assert arguments is not None
    return condition, foreach, arguments, spec_key


def _compile_checks(
    step_id: str,
    step: Step,
    workflow: Workflow,
    needs: Mapping[str, tuple[str, ...]],
    level_of: Mapping[str, int],
    upstream_cache: dict[str, frozenset[str]],
    report: check.Report,
) -> tuple[tuple[Template, ...], Template | None]:
    """A step's ``assert`` expressions (they read ``output`` too) and its cache key expression,
    with the references each may make checked like the step's ``with``."""
    if not step.assert_ and (step.cache is None or step.cache.key is None):
        return (), None
    asserts: list[Template] = []
    sources = [("assert", text) for text in step.assert_]
    if step.cache is not None and step.cache.key is not None:
        sources.append(("cache.key", step.cache.key))
    cache_key = None
    for where, text in sources:
        loc = ("states" if workflow.is_machine else "steps", step_id, where.split(".")[0])
        try:
            template = compile_template(text)
        except ExpressionError as exc:
            report.error(f"{where}: {exc.message}", loc)
            continue
        if template.is_constant:
            report.error(f"{where}: {text!r} is not an expression: write it as ${{{{ ... }}}}", loc)
            continue
        refs = References(set(template.refs.steps), set(template.refs.inputs), template.refs.uses_item)
        refs.places = template.refs.places - ({"output"} if where == "assert" else set())
        if workflow.is_machine:
            _check_state_refs(step_id, where, refs, workflow, report)
        else:
            _check_refs(step_id, where, refs, step, needs, level_of, upstream_cache, report, item_ok=True)
        if where == "assert":
            asserts.append(template)
        else:
            cache_key = template
    return tuple(asserts), cache_key


def _task_refs(refs: References) -> References:
    """A task's ``with`` may read ``secrets``: the worker looks them up when it calls the function."""
    if "secrets" not in refs.places:
        return refs
    return References(refs.steps, refs.inputs, refs.uses_item, refs.places - {"secrets"})


def _spec_key(step: Step) -> str:
    return "with" if step.wait is None and step.approval is None else step.kind


def _spec(step: Step) -> Any:
    """What a step renders when it starts: a task's ``with``; a wait's event and key, or its
    timer (the rendered values are the step's stored inputs, and what it waits for); a
    sub-workflow's ``with``: its child's inputs."""
    if step.wait is not None:
        wait = step.wait
        if wait.event is not None:
            return {"event": wait.event, "key": "" if wait.key is None else wait.key, "timeout": wait.timeout}
        if wait.for_ is not None:
            return {"for": wait.for_}
        return {"until": wait.until}
    if step.approval is not None:
        return {"timeout": step.approval.timeout}
    return step.with_


def _check_refs(
    step_id: str,
    where: str,
    refs: References,
    step: Step,
    needs: Mapping[str, tuple[str, ...]],
    level_of: Mapping[str, int],
    cache: dict[str, frozenset[str]],
    report: check.Report,
    item_ok: bool = False,
) -> None:
    if not refs.places and not refs.uses_item and all(map(needs[step_id].__contains__, refs.steps)):
        return  # only direct needs are read: nothing to report
    loc = ("steps", step_id, where.split(".")[0])
    for ref in sorted(refs.steps):
        if ref not in needs:
            report.error(f"{where}: steps.{ref} is not a step{check.hint(ref, needs)}", loc)
        elif ref == step_id:
            report.error(f"{where}: a step cannot read its own output", loc)
        elif not is_upstream(ref, step_id, needs, level_of, cache):
            report.error(f"{where}: steps.{ref} is not upstream: add '{ref}' to needs", loc)
    for name in sorted(refs.places):
        report.error(f"{where}: '{name}' is not defined in a step's {where}", loc)
    if refs.uses_item and (step.foreach is None or (where != "with" and not item_ok)):
        place = "a foreach step's with" if step.foreach is not None else "a foreach step"
        report.error(f"{where}: item and index are only defined inside {place}", loc)


def _check_state_refs(state: str, where: str, refs: References, workflow: Workflow, report: check.Report) -> None:
    loc = ("states", state, where)
    for ref in sorted(refs.steps - workflow.states.keys()):
        report.error(f"{where}: steps.{ref} is not a state{check.hint(ref, workflow.states)}", loc)
    for name in sorted(refs.places):
        report.error(f"{where}: '{name}' is not defined in a state's {where}", loc)


def _compile_outputs(workflow: Workflow, declared: set[str] | None, report: check.Report) -> Template:
    try:
        outputs = compile_template(workflow.outputs)
    except ExpressionError as exc:
        report.error(f"outputs: {exc.message}", ("outputs",))
        return compile_template({})
    for ref in sorted(outputs.refs.steps - workflow.nodes.keys()):
        report.error(f"outputs: steps.{ref} is not a step{check.hint(ref, workflow.nodes)}", ("outputs",))
    if outputs.refs.uses_item:
        report.error("outputs: item and index are only defined inside a foreach step", ("outputs",))
    for name in sorted(outputs.refs.places):
        report.error(f"outputs: '{name}' is not defined in outputs", ("outputs",))
    check.check_input_refs(outputs.refs.inputs, declared, ("outputs",), report)
    return outputs


def _compile_triggers(workflow: Workflow, report: check.Report) -> tuple[TriggerPlan, ...]:
    """Each ``on`` entry's ``if`` and ``inputs``, which may read only ``run`` (an after entry) or
    ``event`` (an event entry): the started run's inputs come from there."""
    found = []
    for index, on in enumerate(workflow.on):
        kind = on.source[0]
        allowed = "run" if kind == "after" else "event"
        compiled: dict[str, Template | None] = {}
        for key, value in (("if", on.if_), ("inputs", on.inputs)):
            loc = ("on", index, key)
            if value is None:
                compiled[key] = None
                continue
            try:
                template = compiled[key] = compile_template(value)
            except ExpressionError as exc:
                report.error(f"on[{index}].{key}: {exc.message}", loc)
                continue
            refs = template.refs
            wrong = sorted(refs.places - {allowed}) + (["steps"] if refs.steps else [])
            wrong += (["inputs"] if refs.inputs else []) + (["item"] if refs.uses_item else [])
            for name in wrong:
                report.error(f"on[{index}].{key}: '{name}' is not defined here; an {kind} entry reads {allowed}", loc)
        inputs = compiled.get("inputs")
        if inputs is not None:
            found.append(TriggerPlan(index, on, compiled.get("if"), inputs))
    return tuple(found)


def _compile_schedules(workflow: Workflow, report: check.Report) -> tuple[SchedulePlan, ...]:
    """Each schedule's spec and ``inputs`` (which may read only ``schedule``); constant inputs are
    checked against the inputs schema now, so a schedule that could never start a run is refused."""
    found: list[SchedulePlan] = []
    seen: set[str] = set()
    for index, schedule in enumerate(workflow.schedules):
        spec = check.check_schedule(index, schedule, seen, report)
        where, loc = f"schedule '{schedule.name}'", ("schedules", index, "inputs")
        try:
            inputs = compile_template(schedule.inputs)
        except ExpressionError as exc:
            report.error(f"{where}: inputs: {exc.message}", loc)
            continue
        wrong = sorted(inputs.refs.places - {"schedule"}) + (["steps"] if inputs.refs.steps else [])
        wrong += (["inputs"] if inputs.refs.inputs else []) + (["item"] if inputs.refs.uses_item else [])
        for name in wrong:
            report.error(f"{where}: inputs: '{name}' is not defined here; a schedule's inputs read schedule", loc)
        if inputs.is_constant and workflow.inputs is not None and not wrong:
            problem = check.inputs_problem(workflow.inputs, schedule.inputs)
            if problem is not None:
                report.error(f"{where}: {problem}: the schedule could never start a run", loc)
        if spec is not None:
            found.append(SchedulePlan(schedule, spec, inputs))
    return tuple(found)


COMPENSATE_PREFIX = "compensate:"


def _compile_compensations(
    workflow: Workflow,
    declared: set[str] | None,
    default_retry: RetryPolicy,
    report: check.Report,
    modules: check.Imports,
    check_tasks: bool,
) -> dict[str, StepPlan]:
    """Each ``compensate`` as a task step of its own, named ``compensate:<step>``; its ``with``
    reads ``output`` (the compensated step's), ``inputs`` and any step."""
    found: dict[str, StepPlan] = {}
    for step_id, step in workflow.steps.items():
        spec = step.compensate
        if spec is None:
            continue
        loc = ("steps", step_id, "compensate")
        try:
            arguments = compile_template(spec.with_)
        except ExpressionError as exc:
            report.error(f"compensate: {exc.message}", loc)
            continue
        for ref in sorted(arguments.refs.steps - workflow.steps.keys()):
            report.error(f"compensate: steps.{ref} is not a step{check.hint(ref, workflow.steps)}", loc)
        for name in sorted(arguments.refs.places - {"output", "secrets"}):
            report.error(f"compensate: '{name}' is not defined here", loc)
        check.check_input_refs(arguments.refs.inputs, declared, loc, report)
        if check_tasks:
            check.check_task(step_id, spec.task, report, modules, loc=(*loc, "task"))
        as_step = Step.model_validate({"task": spec.task, "with": spec.with_})
        retry = default_retry if spec.retry is None else spec.retry.merged_over(default_retry)
        timeout = spec.timeout if spec.timeout is not None else _effective_timeout(as_step, workflow)
        name = COMPENSATE_PREFIX + step_id
        found[step_id] = StepPlan(name, as_step, (), (), -1, None, None, arguments, retry, timeout)
    return found


def _effective_retry(
    step: Step | None,
    workflow: Workflow,
    report: check.Report,
    modules: check.Imports,
    step_id: str | None = None,
    default: RetryPolicy = _DEFAULT_RETRY,
) -> RetryPolicy:
    own = workflow.defaults.retry if step is None else step.retry
    if own is None:  # most steps: nothing to check or merge
        return default
    loc = ("defaults", "retry") if step_id is None else ("steps", step_id, "retry")
    check.check_exception_names(own.retry_on, (*loc, "retry_on"), report, modules)
    check.check_exception_names(own.no_retry_on, (*loc, "no_retry_on"), report, modules)
    try:
        return own.merged_over(default)
    except ValueError as exc:
        report.error(f"retry: {_first_line(exc)}", loc)
        return default


def _effective_timeout(step: Step, workflow: Workflow) -> float | None:
    if step.timeout is not None:
        return step.timeout
    if workflow.defaults.timeout is not None:
        return workflow.defaults.timeout
    return DEFAULT_STEP_TIMEOUT_S


def _first_line(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if line.strip().startswith("Value error,"):
            return line.strip().removeprefix("Value error, ")
    return text.splitlines()[-1].strip() if text else type(exc).__name__
