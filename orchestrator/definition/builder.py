"""The Python front door: build the same ``Workflow`` model a YAML file describes, without YAML.

wf = WorkflowBuilder("order-pipeline")
fetch = wf.step("fetch", fetch_order, with_={"order_id": inputs.order_id})
price = wf.step("price", price_item, needs=[fetch], foreach=fetch.output["items"],
                with_={"item": item})
workflow = wf.build()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.definition.loader import Source, model_workflow
from orchestrator.definition.model import Workflow
from orchestrator.errors import InvalidDefinition, Problem


class Expr:
    """A reference into run data; ``str()`` gives its ``${{ }}`` form."""

    __slots__ = ("_path",)

    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Expr:
        if name.startswith("__"):
            raise AttributeError(name)
        return Expr(f"{self._path}.{name}")

    def __getitem__(self, key: str | int) -> Expr:
        return Expr(f"{self._path}[{key!r}]")

    @property
    def expression(self) -> str:
        return self._path

    def __str__(self) -> str:
        return f"${{{{ {self._path} }}}}"

    def __repr__(self) -> str:
        return f"Expr({self._path!r})"


inputs = Expr("inputs")
item = Expr("item")
index = Expr("index")


class StepRef:
    """What ``WorkflowBuilder.step`` returns: use it in ``needs`` and for its output."""

    def __init__(self, step_id: str) -> None:
        self.id = step_id
        plain = step_id.replace("-", "_") == step_id
        base = f"steps.{step_id}" if plain else f"steps[{step_id!r}]"
        self.output = Expr(f"{base}.output")
        self.status = Expr(f"{base}.status")

    def __repr__(self) -> str:
        return f"StepRef({self.id!r})"


class WorkflowBuilder:
    """Collects steps, outputs and breakers; ``build`` validates them into a ``Workflow``."""

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self._data: dict[str, Any] = {"name": name, "steps": {}}
        if description is not None:
            self._data["description"] = description
        if inputs is not None:
            self._data["inputs"] = dict(inputs)
        if defaults is not None:
            self._data["defaults"] = _plain(defaults)
        self._problems: list[Problem] = []

    def step(
        self,
        step_id: str,
        task: str | Callable[..., Any],
        *,
        needs: Iterable[StepRef | str] = (),
        with_: Mapping[str, Any] | None = None,
        if_: Any = None,
        foreach: Any = None,
        **options: Any,
    ) -> StepRef:
        """Add a task step; ``options`` are the other step keys (trigger, retry, timeout, ...)."""
        spec: dict[str, Any] = {"task": task_name(task)}
        for key, value in (("with", with_), ("foreach", foreach)):
            if value is not None:
                spec[key] = _plain(value)
        return self._add(step_id, spec, needs, if_, options)

    def workflow(
        self,
        step_id: str,
        workflow: str,
        *,
        needs: Iterable[StepRef | str] = (),
        with_: Mapping[str, Any] | None = None,
        if_: Any = None,
        foreach: Any = None,
        **options: Any,
    ) -> StepRef:
        """Add a step that runs the registered workflow ``workflow`` (NAME or NAME@VERSION) as a
        child run with ``with_`` as its inputs; its output is the child's outputs."""
        spec: dict[str, Any] = {"workflow": workflow}
        for key, value in (("with", with_), ("foreach", foreach)):
            if value is not None:
                spec[key] = _plain(value)
        return self._add(step_id, spec, needs, if_, options)

    def wait(
        self,
        step_id: str,
        *,
        event: str | None = None,
        key: Any = None,
        timeout: Any = None,
        for_: Any = None,
        until: Any = None,
        needs: Iterable[StepRef | str] = (),
        if_: Any = None,
        **options: Any,
    ) -> StepRef:
        """Add a step that waits for ``event`` (with ``key``, up to ``timeout``), or a timer
        (``for_`` a duration, or ``until`` a time)."""
        given = {"event": event, "key": key, "timeout": timeout, "for": for_, "until": until}
        wait = {k: _plain(v) for k, v in given.items() if v is not None}
        return self._add(step_id, {"wait": wait}, needs, if_, options)

    def approval(
        self,
        step_id: str,
        *,
        needs: Iterable[StepRef | str] = (),
        if_: Any = None,
        options: Mapping[str, Any] | None = None,
        **approval: Any,
    ) -> StepRef:
        """Add a step that waits for people to decide (approvers, required, keyword, timeout,
        on_timeout, inputs); ``options`` are other step keys (trigger, retry, ...)."""
        return self._add(step_id, {"approval": _plain(approval)}, needs, if_, dict(options or {}))

    def _add(
        self, step_id: str, spec: dict[str, Any], needs: Iterable[StepRef | str], if_: Any, options: Mapping[str, Any]
    ) -> StepRef:
        if step_id in self._data["steps"]:
            self._problems.append(Problem(f"duplicate step id '{step_id}'", "<builder>", step=step_id))
        if needs:
            spec["needs"] = [n.id if isinstance(n, StepRef) else n for n in needs]
        if if_ is not None:
            spec["if"] = _plain(if_)
        spec.update({key.rstrip("_"): _plain(value) for key, value in options.items()})
        self._data["steps"][step_id] = spec
        return StepRef(step_id)

    def output(self, name: str, value: Any) -> None:
        self._data.setdefault("outputs", {})[name] = _plain(value)

    def breaker(self, name: str, **config: Any) -> str:
        self._data.setdefault("breakers", {})[name] = _plain(config)
        return name

    def schedule(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: str | float | None = None,
        timezone: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        catchup: str | None = None,
        overlap: str | None = None,
    ) -> str:
        """Add a schedule (``cron`` in ``timezone``, or ``every`` an interval); returns its name,
        ``workflow/name``, as ``orchestrator schedules`` shows it."""
        given = {"cron": cron, "every": every, "timezone": timezone, "inputs": inputs}
        given |= {"catchup": catchup, "overlap": overlap}
        spec = {"name": name, **{k: _plain(v) for k, v in given.items() if v is not None}}
        self._data.setdefault("schedules", []).append(spec)
        return f"{self._data['name']}/{name}"

    def build(self) -> Workflow:
        if self._problems:
            raise InvalidDefinition(self._problems)
        return model_workflow(_plain(self._data), Source("<builder>"))


def task_name(task: str | Callable[..., Any]) -> str:
    """``module:function`` for a function, or the string as given."""
    if isinstance(task, str):
        return task
    module = getattr(task, "__module__", None)
    qualname = getattr(task, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(f"{task!r} is not an importable function: pass 'module:function'")
    return f"{module}:{qualname}"


def _plain(value: Any) -> Any:
    """Data with every ``Expr`` turned into its ``${{ }}`` text."""
    if isinstance(value, Expr | StepRef):
        return str(value.output if isinstance(value, StepRef) else value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
