"""Versions of a registered workflow: registering one, activating one, rolling back, and which
version a run by name starts on.

A version is the content hash of a definition, immutable once stored. Exactly one version of a
name is active: runs by name, sub-workflow steps, chains, events and schedules start on it; a run
in flight keeps the version it started on. Each change of the active version is appended to the
workflow's activation history, under a per-workflow lock, and ``operations.activated`` moves
what starts runs by itself (``on`` entries, schedules) to the new version in the same transaction.

``rollback`` is an undo: it undoes the newest activation not undone yet, so rolling back twice
after registering v1, v2 and v3 goes to v2, then v1; ``activate`` goes forward again.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from orchestrator import audit
from orchestrator.definition import Plan, build_plan
from orchestrator.definition.model import split_ref
from orchestrator.errors import NotFound, UsageError, shown
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who, activated, called_workflows
from orchestrator.settings import get_settings
from orchestrator.store import Repository, Tx


@dataclass(frozen=True)
class Registered:
    """What ``register`` did: stored a new version or not, made it active or not."""

    name: str
    version: str
    created: bool
    activated: bool
    previous: str | None  # the active version before


@dataclass(frozen=True)
class Activated:
    """What ``activate`` or ``rollback`` did; ``changed`` False: the version was active already."""

    name: str
    version: str
    previous: str | None
    changed: bool


def register(engine: Engine, plan: Plan, who: Who | None = None, activate: bool = True) -> Registered:
    """Store ``plan`` as a version of its workflow and, unless ``activate`` is False, make it the
    active one (also when it was registered before, and another version is active now).
    InvalidDefinition if it would call itself through the workflows active now."""
    engine.check_plan(plan)
    who = who or Who(get_settings().default_actor)
    name = plan.workflow.name
    with engine.repo.transaction() as tx:
        tx.lock_workflow(name)
        _check_calls(tx, plan)
        tx.save_definition(plan.version, name, plan.workflow.snapshot())
        created = tx.register(name, plan.version, who.by)
        previous = tx.active_version(name)
        done = Registered(name, plan.version, created, False, previous)
        if activate and previous != plan.version:
            tx.activate(name, plan.version, "register", who.by, who.reason)
            activated(tx, plan)
            done = Registered(name, plan.version, created, True, previous)
        if done.created or done.activated:
            detail = {"version": plan.version, "created": created, "activated": done.activated, "previous": previous}
            audit.record(tx, who, "workflow.register", f"workflow:{name}", detail)
        return done


def activate(engine: Engine, name: str, ref: str, who: Who) -> Activated:
    """Make version ``ref`` (a registered version of ``name``, or a unique prefix of one) active."""
    with engine.repo.transaction() as tx:
        tx.lock_workflow(name)
        version = resolve(tx, name, ref)
        return _switch(engine, tx, name, version, "activate", who)


def rollback(engine: Engine, name: str, who: Who) -> Activated:
    """Undo the newest activation of ``name`` not undone yet: what was active before it is again."""
    with engine.repo.transaction() as tx:
        tx.lock_workflow(name)
        _known(tx, name)
        stack = undo_stack(tx.activations(name))
        if len(stack) < 2:
            raise UsageError(
                f"workflow {name} has no earlier version to roll back to (orchestrator workflows versions {name})"
            )
        return _switch(engine, tx, name, stack[-2], "rollback", who)


def _switch(engine: Engine, tx: Tx, name: str, version: str, action: str, who: Who) -> Activated:
    previous = tx.active_version(name)
    if previous == version:
        return Activated(name, version, previous, False)
    plan = engine.plans.get(tx, version)
    _check_calls(tx, plan)
    tx.activate(name, version, action, who.by, who.reason)
    activated(tx, plan)
    audit.record(tx, who, f"workflow.{action}", f"workflow:{name}", {"version": version, "previous": previous})
    return Activated(name, version, previous, True)


def undo_stack(history: list[dict[str, Any]]) -> list[str]:
    """The versions a rollback goes back through, the active one last: each activation pushes its
    version, each rollback pops the one it undid."""
    stack: list[str] = []
    for entry in history:
        if entry["action"] == "rollback":
            if stack:
                stack.pop()
            if stack and stack[-1] == entry["version"]:
                continue
        stack.append(entry["version"])
    return stack


def _check_calls(tx: Tx, plan: Plan) -> None:
    """InvalidDefinition if ``plan``, once active, would call itself through the active versions
    of the workflows it calls."""
    known = called_workflows(tx, plan.workflow)
    known.pop(plan.workflow.name, None)
    build_plan(plan.workflow, known_workflows=known, check_tasks=False)


def _known(tx: Tx, name: str) -> list[dict[str, Any]]:
    registrations = tx.registrations(name)
    if not registrations:
        raise NotFound(f"no workflow named '{shown(name)}' is registered (orchestrator workflows list)")
    return registrations


def resolve(tx: Tx, name: str, ref: str) -> str:
    """The registered version of ``name`` that ``ref`` names: the whole hash or a unique prefix."""
    _known(tx, name)
    found = tx.versions_like(name, ref.strip().lower())
    if not found:
        raise NotFound(
            f"workflow {shown(name)} has no version '{shown(ref)}' (orchestrator workflows versions {shown(name)})"
        )
    if len(found) > 1:
        begins = ", ".join(found[:5])
        raise UsageError(
            f"version '{shown(ref)}' of workflow {shown(name)} is ambiguous: it begins {begins}; give more characters"
        )
    return found[0]


def resolve_target(tx: Tx, target: str) -> str:
    """The version a run of ``NAME`` (the active one) or ``NAME@VERSION`` (that one) starts on."""
    name, ref = split_ref(target)
    if ref is not None:
        return resolve(tx, name, ref)
    version = tx.active_version(name)
    if version is None:
        _known(tx, name)
        raise NotFound(
            f"workflow {shown(name)} has no active version (orchestrator workflows activate {shown(name)} VERSION)"
        )
    return version


def workflows_view(repo: Repository) -> list[dict[str, Any]]:
    """Every registered workflow: its active version (registered when) and how many versions it has."""
    with repo.transaction() as tx:
        rows = tx.registrations()
        active = tx.active_versions()
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = found.setdefault(row["name"], {"name": row["name"], "version": active.get(row["name"]), "versions": 0})
        entry["versions"] += 1
        if row["version"] == entry["version"]:
            entry["registered_at"] = row["registered_at"].isoformat()
    return [{"registered_at": None, **entry} for entry in found.values()]


def show_view(repo: Repository, name: str, ref: str | None = None) -> dict[str, Any]:
    """``workflows show --json``: the active version of ``name`` (or the one ``ref`` names) and its definition."""
    with repo.transaction() as tx:
        version = resolve_target(tx, f"{name}@{ref}" if ref else name)
        snapshot = tx.definition(version)
        active = tx.active_version(name)
    return {"name": name, "version": version, "active": version == active, "definition": snapshot}


def diff_view(repo: Repository, name: str, ref1: str, ref2: str) -> dict[str, Any]:
    """``workflows diff --json``."""
    before, after, text = diff(repo, name, ref1, ref2)
    return {"name": name, "from": before, "to": after, "diff": text}


def versions_view(repo: Repository, name: str) -> list[dict[str, Any]]:
    """Every registered version of ``name``, newest first: when and by whom it was registered,
    whether it is active, how many runs it has, and each time it was activated (newest first)."""
    with repo.transaction() as tx:
        registrations = _known(tx, name)
        active = tx.active_version(name)
        history = tx.activations(name)
        runs = tx.run_counts(name)
    views = []
    for row in registrations:
        version = row["version"]
        times = [_activation(h) for h in reversed(history) if h["version"] == version]
        views.append(
            {
                "version": version,
                "registered_at": row["registered_at"].isoformat(),
                "registered_by": row["registered_by"],
                "active": version == active,
                "runs": runs.get(version, 0),
                "activated_at": times[0]["at"] if times else None,
                "activated_by": times[0]["by"] if times else None,
                "activations": times,
            }
        )
    return views


def _activation(entry: dict[str, Any]) -> dict[str, Any]:
    at: datetime = entry["at"]
    return {"at": at.isoformat(), "by": entry["by"], "action": entry["action"], "reason": entry["reason"]}


def diff(repo: Repository, name: str, ref1: str, ref2: str) -> tuple[str, str, str]:
    """The two versions ``ref1`` and ``ref2`` name, and a unified diff of their YAML snapshots."""
    with repo.transaction() as tx:
        v1, v2 = resolve(tx, name, ref1), resolve(tx, name, ref2)
        before, after = tx.definition(v1) or {}, tx.definition(v2) or {}
    lines = difflib.unified_diff(
        _yaml(before).splitlines(keepends=True),
        _yaml(after).splitlines(keepends=True),
        fromfile=f"{name}@{v1}",
        tofile=f"{name}@{v2}",
    )
    return v1, v2, "".join(lines)


def _yaml(snapshot: dict[str, Any]) -> str:
    return yaml.safe_dump(snapshot, sort_keys=False, allow_unicode=True)
