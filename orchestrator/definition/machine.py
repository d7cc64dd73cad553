"""State machines: a workflow of ``states`` instead of ``steps``, each state a step that chooses
the next state (``next``, or the first of its ``transitions`` whose ``if`` holds) or ends the run.

Compiled once with the plan; the static checks refuse what could never run well: no ``initial``,
unknown targets, states nothing reaches, states from which no end can be reached, states that
say nowhere to go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.definition import validation as check
from orchestrator.definition.expression import Template, compile_template
from orchestrator.definition.model import EndStatus, State, Workflow
from orchestrator.errors import ExpressionError

_VISIT = re.compile(r"^(.+)#\d+$")


def state_of(row_step: str) -> str:
    """The state a visit's row belongs to: ``review#2`` (the second visit) -> ``review``."""
    found = _VISIT.match(row_step)
    return found.group(1) if found else row_step


def visit_name(state: str, visit: int) -> str:
    """The row name of a state's ``visit``-th visit: the first keeps the state's name."""
    return state if visit <= 1 else f"{state}#{visit}"


class VisitSteps(dict[str, Any]):
    """A machine's step plans by state, which also answer for a visit's row name (``review#2``)."""

    def __missing__(self, key: str) -> Any:
        state = state_of(key)
        if state == key:
            raise KeyError(key)
        return self[state]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, state_of(key))


@dataclass(frozen=True)
class Route:
    """One way out of a state: to ``to`` when ``condition`` holds (None: always)."""

    to: str
    condition: Template | None
    text: str


@dataclass(frozen=True)
class MachinePlan:
    initial: str
    max_transitions: int
    routes: Mapping[str, tuple[Route, ...]]
    ends: Mapping[str, EndStatus]
    gates: Mapping[str, Template]


def build_machine(workflow: Workflow, declared_inputs: set[str] | None, report: check.Report) -> MachinePlan | None:
    """Check the states' structure and compile their routes and gates."""
    states = workflow.states
    initial = workflow.initial
    if initial is None:
        report.error("a state machine needs initial: the state it starts in", ("initial",))
    elif initial not in states:
        report.error(f"initial names unknown state '{initial}'{check.hint(initial, states)}", ("initial",))
    routes: dict[str, tuple[Route, ...]] = {}
    gates: dict[str, Template] = {}
    for name, state in states.items():
        routes[name] = _routes(name, state, states, declared_inputs, report)
        if state.gate is not None:
            gate = _compile(name, "gate", list(state.gate.artifacts), report, allowed={"output"})
            if gate is not None:
                check.check_input_refs(gate.refs.inputs, declared_inputs, ("states", name, "gate"), report)
                gates[name] = gate
    ends = {name: state.end for name, state in states.items() if state.end is not None}
    if initial in states:
        _check_reach(initial, routes, ends, report)
    if report.has_errors or initial is None:
        return None
    return MachinePlan(initial, workflow.max_transitions, routes, ends, gates)


def _routes(
    name: str, state: State, states: Mapping[str, State], declared: set[str] | None, report: check.Report
) -> tuple[Route, ...]:
    if state.end is not None:
        return ()
    if state.next is None and not state.transitions:
        report.error("has no next, transitions or end: say where the machine goes from here", ("states", name))
        return ()
    found = []
    entries = [(state.next, None)] if state.next is not None else [(t.to, t.if_) for t in state.transitions]
    for index, (target, condition) in enumerate(entries):
        loc = ("states", name, "next") if state.next is not None else ("states", name, "transitions", index)
        if target not in states:
            report.error(f"goes to unknown state '{target}'{check.hint(target, states)}", loc)
            continue
        compiled = None
        if condition is not None:
            compiled = _compile(name, "transitions", condition, report, allowed={"output"}, loc=loc)
            if compiled is None:
                continue
            check.check_input_refs(compiled.refs.inputs, declared, loc, report)
        found.append(Route(target, compiled, str(condition) if condition is not None else "default"))
    return tuple(found)


def _compile(
    name: str,
    where: str,
    value: Any,
    report: check.Report,
    allowed: set[str],
    loc: tuple[Any, ...] | None = None,
) -> Template | None:
    loc = loc or ("states", name, where)
    try:
        template = compile_template(value)
    except ExpressionError as exc:
        report.error(f"{where}: {exc.message}", loc)
        return None
    for wrong in sorted(template.refs.places - allowed):
        report.error(f"{where}: '{wrong}' is not defined here", loc)
    if template.refs.uses_item:
        report.error(f"{where}: item and index are only defined inside a foreach step", loc)
    return template


def _check_reach(
    initial: str, routes: Mapping[str, tuple[Route, ...]], ends: Mapping[str, EndStatus], report: check.Report
) -> None:
    reached = {initial}
    todo = [initial]
    while todo:
        for route in routes[todo.pop()]:
            if route.to not in reached:
                reached.add(route.to)
                todo.append(route.to)
    for name in routes:
        if name not in reached:
            report.error(f"is unreachable: no transition from '{initial}' leads here", ("states", name))
    back: dict[str, set[str]] = {name: set() for name in routes}
    for name, outs in routes.items():
        for route in outs:
            back[route.to].add(name)
    ending = set(ends)
    todo = list(ending)
    while todo:
        for source in back[todo.pop()]:
            if source not in ending:
                ending.add(source)
                todo.append(source)
    for name in routes:
        if name in reached and name not in ending and name not in ends:
            report.error("has no path to an end state: a run here could never end", ("states", name))
