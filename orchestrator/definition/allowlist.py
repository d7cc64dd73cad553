"""Which functions a step may call: those of ``ORCHESTRATOR_TASK_MODULES``, and the built-ins.

A workflow file is data that anyone who can register or submit one writes; naming
``subprocess:check_output`` must not make a worker run it. So a module is imported only when it is
allowed (a listed ``shop`` allows ``shop`` and its public submodules, never ``shopx``, nor
``shop.__main__`` or ``shop._impl`` unless they are listed themselves: importing a module runs it), a
function is called only when it was defined in the listed package (``shop:os.system`` is refused), and
no step names a private attribute (``shop:_helper``). Of the orchestrator's own code, a step calls
exactly the built-in steps and the examples' public functions, never a helper beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from orchestrator.settings import get_settings

BUILTIN_STEPS = ("orchestrator.steps.http:request",)  # the built-in step functions, exactly
EXAMPLES = "orchestrator.examples"  # each of its public functions is a step
BUILTIN_MODULES = ("orchestrator.steps.http", EXAMPLES)  # the only orchestrator modules a step imports
INTERNAL = "orchestrator"  # its modules and its Celery task names are never a step's
VARIABLE = "ORCHESTRATOR_TASK_MODULES"
MOVED = {"tasks.examples": "orchestrator.examples", "tasks.http": "orchestrator.steps.http"}


def under(name: str, prefixes: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``prefixes`` or inside one, at a dot boundary."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def private(dotted: str) -> bool:
    """Whether a part of ``dotted`` starts with ``_`` (``_impl``, ``__main__``)."""
    return any(part.startswith("_") for part in dotted.split("."))


def moved_hint(module_name: str, attr: str) -> str:
    """For a module that moved in 0.2 (``tasks.examples``): where it is now, else nothing."""
    for old, new in MOVED.items():
        if under(module_name, (old,)):
            return f"; it moved: use '{new}{module_name[len(old) :]}:{attr}'"
    return ""


@dataclass(frozen=True)
class Allowlist:
    """The modules steps may call into, as listed (the built-ins are always added)."""

    listed: tuple[str, ...] = ()

    @classmethod
    def current(cls) -> Allowlist:
        """The allowlist of this process's settings."""
        return _of(get_settings().task_modules)

    def allows(self, module_name: str) -> bool:
        return _allows(self.listed, module_name)

    def refusal(self, task: str) -> str | None:
        """Why the step's ``task`` is refused before anything is imported, or None.
        A Celery task name is refused here only when it is an internal one; the worker checks the
        module of the task registered under it."""
        if ":" not in task:
            if under(task, (INTERNAL,)):
                return f"task '{task}' is refused: it is one of the orchestrator's own tasks"
            return None
        module_name, _, attr = task.partition(":")
        if private(attr):
            return f"task '{task}' is refused: a step may not name a private attribute (one starting with '_')"
        refusal = self.module_refusal(f"task '{task}'", module_name, attr)
        if refusal is None and module_name in BUILTIN_MODULES and not _builtin_step(task, module_name, attr):
            return f"task '{task}' is refused: it is not a built-in step (built-in: {_BUILTINS})"
        return refusal

    def module_refusal(self, what: str, module_name: str, attr: str = "") -> str | None:
        """Why ``module_name`` may not be imported for ``what`` (a task or a schema's model), or None."""
        if self.allows(module_name):
            return None
        if under(module_name, self.listed) and not under(module_name, (INTERNAL,)):
            return (
                f"{what} is refused: module '{module_name}' is private (a part starts with '_'); "
                f"list it in {VARIABLE} to allow it"
            )
        hint = moved_hint(module_name, attr)
        return f"{what} is refused: module '{module_name}' is not in {VARIABLE} ({self.described()}){hint}"

    def target_refusal(self, task: str, target: Any) -> str | None:
        """Why the resolved ``target`` may not be called, or None: it must have been defined in a
        built-in module or the listed package, so an allowed module's imports (``shop:os.system``)
        give nothing away. A listed package's private module counts (``shop.tasks`` may re-export
        ``shop._impl.charge``): an allowed module imported it, so nothing runs that had not run."""
        defined_in = getattr(target, "__module__", None)
        if not isinstance(defined_in, str):
            defined_in = type(target).__module__
        if _defines(self.listed, defined_in):
            return None
        return (
            f"task '{task}' is refused: it is defined in '{defined_in}', which is not in {VARIABLE} "
            f"({self.described()})"
        )

    def described(self) -> str:
        listed = ", ".join(self.listed) if self.listed else "unset"
        return f"{listed}; built-in: {_BUILTINS}"


_BUILTINS = ", ".join((*BUILTIN_STEPS, EXAMPLES))


def _builtin_step(task: str, module_name: str, attr: str) -> bool:
    return task in BUILTIN_STEPS or (module_name == EXAMPLES and "." not in attr)


@lru_cache(maxsize=8)
def _of(task_modules: str) -> Allowlist:
    return Allowlist(tuple(m.strip() for m in task_modules.split(",") if m.strip()))


@lru_cache(maxsize=4096)
def _allows(listed: tuple[str, ...], module_name: str) -> bool:
    """Whether ``module_name`` may be imported. Asked for every step a worker calls: remembered, as
    the answer never changes."""
    if module_name in BUILTIN_MODULES:
        return True
    if under(module_name, (INTERNAL,)):
        return False
    return any(
        module_name == prefix or (module_name.startswith(prefix + ".") and not private(module_name[len(prefix) + 1 :]))
        for prefix in listed
    )


@lru_cache(maxsize=4096)
def _defines(listed: tuple[str, ...], module_name: str) -> bool:
    """Whether a function defined in ``module_name`` is a built-in's or the listed package's."""
    if module_name in BUILTIN_MODULES:
        return True
    if under(module_name, (INTERNAL,)):
        return False
    return under(module_name, listed)
