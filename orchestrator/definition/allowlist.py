"""Which modules a step may call: those named by ``ORCHESTRATOR_TASK_MODULES``, and the built-ins.

A workflow file is data that anyone who can register or submit one writes; naming
``subprocess:check_output`` must not make a worker run it. So a module is imported only when it is
allowed (a listed ``shop`` allows ``shop`` and ``shop.*``, never ``shopx``), and a function is called
only when it was defined in an allowed module (``shop:os.system`` is refused). The orchestrator's own
modules are never allowed, listed or not, except the built-in steps and the examples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from orchestrator.settings import get_settings

BUILTIN_MODULES = ("orchestrator.steps", "orchestrator.examples")
INTERNAL = "orchestrator"  # its modules and its Celery task names are never a step's
VARIABLE = "ORCHESTRATOR_TASK_MODULES"
MOVED = {"tasks.examples": "orchestrator.examples", "tasks.http": "orchestrator.steps.http"}


def under(name: str, prefixes: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``prefixes`` or inside one, at a dot boundary."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


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
        if any(part.startswith("__") for part in attr.split(".")):
            return f"task '{task}' is refused: a step may not name a dunder attribute"
        return self.module_refusal(f"task '{task}'", module_name, attr)

    def module_refusal(self, what: str, module_name: str, attr: str = "") -> str | None:
        """Why ``module_name`` may not be imported for ``what`` (a task or a schema's model), or None."""
        if self.allows(module_name):
            return None
        hint = moved_hint(module_name, attr)
        return f"{what} is refused: module '{module_name}' is not in {VARIABLE} ({self.described()}){hint}"

    def target_refusal(self, task: str, target: Any) -> str | None:
        """Why the resolved ``target`` may not be called, or None: it must have been defined in an
        allowed module, so an allowed module's imports (``shop:os.system``) give nothing away."""
        defined_in = getattr(target, "__module__", None)
        if not isinstance(defined_in, str):
            defined_in = type(target).__module__
        if self.allows(defined_in):
            return None
        return (
            f"task '{task}' is refused: it is defined in '{defined_in}', which is not in {VARIABLE} "
            f"({self.described()})"
        )

    def described(self) -> str:
        listed = ", ".join(self.listed) if self.listed else "unset"
        return f"{listed}; built-in: {', '.join(BUILTIN_MODULES)}"


@lru_cache(maxsize=8)
def _of(task_modules: str) -> Allowlist:
    return Allowlist(tuple(m.strip() for m in task_modules.split(",") if m.strip()))


@lru_cache(maxsize=4096)
def _allows(listed: tuple[str, ...], module_name: str) -> bool:
    """Asked for every step a worker calls: remembered, as the answer never changes."""
    if under(module_name, BUILTIN_MODULES):
        return True
    if under(module_name, (INTERNAL,)):
        return False
    return under(module_name, listed)
