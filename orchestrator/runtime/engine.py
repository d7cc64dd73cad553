"""The runtime's parts, assembled once per process: the store, plans, step kinds, middleware,
leases and the transport that carries messages.

Nothing here imports Celery: the transport is whatever the caller hands in (the worker layer's
Celery transport in production, a recording one in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.definition import Plan, StepPlan, Workflow, build_plan
from orchestrator.definition.model import RetryDecision, State
from orchestrator.errors import InvalidDefinition, NotFound, Problem, shown
from orchestrator.runtime.chaining import after_run
from orchestrator.runtime.kinds import Kinds, default_kinds
from orchestrator.runtime.lease import Lease
from orchestrator.runtime.machine import MachineAdvancer
from orchestrator.runtime.middleware import Call, Stack, default_stack
from orchestrator.runtime.scheduler import Advancer, Dispatch
from orchestrator.settings import (
    DEFAULT_LEASE_S,
    DEFAULT_LOCAL_BUDGET_S,
    DEFAULT_LOCAL_STEPS,
    DEFAULT_MAX_COUNTDOWN_S,
    DEFAULT_POISON_LIMIT,
    DEFAULT_RECONCILE_STALE_S,
    DEFAULT_RECORD_PATIENCE_S,
)
from orchestrator.store import Repository, RunRow, StepRow, Tx

Resolver = Callable[[str], Callable[..., Any]]
log = logging.getLogger(__name__)


class Transport(Protocol):
    """How step messages leave and are taken back: the worker layer's concern."""

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish after the deciding transaction committed; failures must not raise."""

    def revoke(self, dispatch_ids: Sequence[str]) -> None:
        """Stop the executions of these messages if they are running."""

    def lost(self, rows: Sequence[StepRow]) -> set[str] | None:
        """The dispatch ids of ``rows`` (queued, message sent) whose message is known to be gone
        from the broker; None when the broker cannot tell."""


class Recorder:
    """A transport that keeps what it is given: for the embedded store checks and tests."""

    def __init__(self) -> None:
        self.sent: list[Dispatch] = []
        self.revoked: list[str] = []

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        self.sent.extend(dispatches)

    def revoke(self, dispatch_ids: Sequence[str]) -> None:
        self.revoked.extend(dispatch_ids)

    def lost(self, rows: Sequence[StepRow]) -> set[str] | None:
        return None


@dataclass(frozen=True)
class Timing:
    lease_s: float = DEFAULT_LEASE_S
    countdown_limit: float = DEFAULT_MAX_COUNTDOWN_S
    stale_s: float = DEFAULT_RECONCILE_STALE_S
    record_patience_s: float = DEFAULT_RECORD_PATIENCE_S
    poison_limit: int = DEFAULT_POISON_LIMIT
    local_steps: int = DEFAULT_LOCAL_STEPS
    local_budget_s: float = DEFAULT_LOCAL_BUDGET_S


class PlanCache:
    """Plans by definition version: a run's pinned definition is compiled once per process."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._versions: dict[str, str] = {}

    def add(self, plan: Plan) -> Plan:
        self._plans.setdefault(plan.version, plan)
        return plan

    def get(self, tx: Tx, version: str) -> Plan:
        plan = self._plans.get(version)
        if plan is None:
            snapshot = tx.definition(version)
            if snapshot is None:
                raise NotFound(f"no definition with version {shown(version)}")
            plan = self._plans[version] = build_plan(Workflow.model_validate(snapshot), check_tasks=False)
        return plan

    def cached(self, version: str) -> Plan | None:
        return self._plans.get(version)

    def of_run(self, tx: Tx, run_id: str) -> Plan:
        version = self._versions.get(run_id)
        if version is None:
            run = tx.run(run_id)
            if run is None:
                raise NotFound(f"no run {shown(run_id)}")
            version = self._versions[run_id] = run.version
            if len(self._versions) > 10_000:
                self._versions.pop(next(iter(self._versions)))
        return self.get(tx, version)


@dataclass
class Engine:
    repo: Repository
    transport: Transport
    resolve: Resolver
    stack: Stack
    kinds: Kinds = field(default_factory=default_kinds)
    timing: Timing = field(default_factory=Timing)
    plans: PlanCache = field(default_factory=PlanCache)
    lease: Lease | None = None
    stopper: Callable[[Engine, list[str]], None] | None = None  # cancels child runs no step waits on
    waker: Callable[[Engine, int], list[Dispatch]] | None = None  # wakes a due waiting step in-process

    def __post_init__(self) -> None:
        if self.lease is None:
            self.lease = Lease(self.repo, self.timing.lease_s)

    @classmethod
    def create(
        cls,
        repo: Repository,
        transport: Transport | None = None,
        resolve: Resolver | None = None,
        *,
        timing: Timing | None = None,
        breakers: Any = None,
        renew_leases: bool = True,
    ) -> Engine:
        """The default assembly: task steps, the default middleware, breakers on the store."""
        from orchestrator.runtime.breaker import Breakers
        from orchestrator.runtime.children import stop_runs
        from orchestrator.runtime.executor import resolve_function
        from orchestrator.runtime.waking import wake_step

        timing = timing or Timing()
        stack = default_stack(poison_limit=timing.poison_limit, breakers=breakers or Breakers(repo, None), repo=repo)
        return cls(
            repo,
            transport or Recorder(),
            resolve or resolve_function,
            stack,
            timing=timing,
            lease=Lease(repo, timing.lease_s, renew=renew_leases),
            stopper=stop_runs,
            waker=wake_step,
        )

    def advancer(self, tx: Tx, plan: Plan, run: RunRow) -> Advancer:
        def retry(row: StepRow, sp: StepPlan, error: Exception) -> RetryDecision:
            return self.stack.retry_verdict(Call(row, plan, sp, {}), error)

        cls = MachineAdvancer if plan.machine is not None else Advancer
        return cls(
            tx,
            plan,
            run,
            self.kinds,
            self.stack.after_failed_for_good,
            retry=retry,
            wake_limit=self.timing.countdown_limit,
            runtime=self,
        )

    def after_run(self, tx: Tx, run: RunRow) -> tuple[list[Dispatch], list[dict[str, Any]]]:
        """A run just ended (its lock held): start what its end triggers (``on: after``)."""
        chained = after_run(self, tx, run)
        return chained.dispatches, chained.events(run.id)

    def check_plan(self, plan: Plan) -> Plan:
        """Refuse a definition that sets a step option no middleware of this engine handles."""
        if self.plans.cached(plan.version) is plan:
            return plan
        problems = []
        fields = State.model_fields  # a step's keys, and a state's
        for step_id, sp in plan.steps.items():
            used = {fields[f].alias or f for f in sp.step.model_fields_set}
            for option in sorted(used - self.stack.options):
                problems.append(Problem(f"option '{option}' is handled by no middleware here", step=step_id))
        if problems:
            raise InvalidDefinition(problems)
        return self.plans.add(plan)

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish messages; cancel the child runs no step waits on any more (the reconciler's
        sweep does it too, should this process die first)."""
        local = [d for d in dispatches if d.local and self.waker is not None]
        messages = [d for d in dispatches if d.stop_run is None and d not in local]
        if messages:
            self.transport.send(messages)
        stops = [d.stop_run for d in dispatches if d.stop_run is not None]
        if stops and self.stopper is not None:
            self.stopper(self, stops)
        for wake in local:  # a child run ended here: its parent's step goes on here, with no broker hop
            try:
                self.send(self.waker(self, wake.step_run_id))  # type: ignore[misc]
            except Exception as exc:  # the message does it instead (and the reconciler, at worst)
                log.warning("waking step %s in-process failed (%s); sending a message", wake.step_run_id, exc)
                self.transport.send([wake])
