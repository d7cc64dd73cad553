"""linear, fanout, throughput: the orchestrator against raw Celery canvas on the same broker and flags."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from bench.env import Services
from orchestrator.definition import Plan, WorkflowBuilder, build_plan

POLL_S = 0.005


def chain_plan(n: int, name: str = "bench-linear") -> Plan:
    wf = WorkflowBuilder(name)
    previous = None
    for i in range(n):
        previous = wf.step(f"s{i}", "bench.tasks:noop", needs=[previous] if previous else [])
    return build_plan(wf.build(), check_tasks=False)


def fanout_plan() -> Plan:
    wf = WorkflowBuilder("bench-fanout", inputs={"type": "object", "properties": {"items": {"type": "array"}}})
    fan = wf.step("fan", "bench.tasks:noop", foreach="${{ inputs.items }}")
    wf.step("join", "bench.tasks:noop", needs=[fan])
    return build_plan(wf.build(), check_tasks=False)


def _wait(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark case did not finish in time")
        time.sleep(POLL_S)


class Ours:
    """Submit runs through the runtime (as ``orchestrator run`` does) and wait on the state store."""

    def __init__(self) -> None:
        from orchestrator.runtime import operations
        from orchestrator.settings import get_settings
        from orchestrator.store import Repository
        from orchestrator.worker.tasks import build_engine

        self.repo = Repository.from_url(get_settings().database_url)
        self.engine = build_engine(get_settings(), self.repo)
        self.operations = operations

    def run(self, plan: Plan, inputs_list: list[dict[str, Any]], timeout: float) -> float:
        start = time.perf_counter()
        run_ids = []
        for inputs in inputs_list:
            run_ids.append(self.operations.submit(self.engine, plan, inputs).run_id)
        _wait(lambda: self._all_done(run_ids), timeout)
        elapsed = time.perf_counter() - start
        with self.repo.transaction() as tx:
            statuses = {str(tx.run(r).status) for r in run_ids}  # type: ignore[union-attr]
        if statuses != {"succeeded"}:
            raise RuntimeError(f"benchmark runs ended {statuses}")
        return elapsed

    def _all_done(self, run_ids: list[str]) -> bool:
        import sqlalchemy as sa

        from orchestrator.store.tables import runs

        with self.repo.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(
                runs.c.id.in_(run_ids), runs.c.status.in_(["succeeded", "failed", "cancelled"])
            )
            return conn.execute(query).scalar() == len(run_ids)


class Raw:
    def __init__(self) -> None:
        from bench import tasks

        self.tasks = tasks
        self.redis = tasks.baseline.backend.client

    def chain(self, n: int, timeout: float) -> float:
        from celery import chain

        key = f"bench:{uuid.uuid4()}"
        start = time.perf_counter()
        chain(*[self.tasks.raw_noop.si() for _ in range(n)], self.tasks.mark.si(key)).apply_async()
        _wait(lambda: self.redis.exists(key), timeout)
        return time.perf_counter() - start

    def chord(self, n: int, timeout: float) -> float:
        from celery import chord, group

        key = f"bench:{uuid.uuid4()}"
        start = time.perf_counter()
        chord(group(self.tasks.raw_noop_result.si() for _ in range(n)), self.tasks.mark.si(key)).apply_async()
        _wait(lambda: self.redis.exists(key), timeout)
        return time.perf_counter() - start

    def many(self, n: int, timeout: float) -> float:
        from celery import group

        key = f"bench:{uuid.uuid4()}"
        start = time.perf_counter()
        group(self.tasks.count.si(key) for _ in range(n)).apply_async()
        _wait(lambda: int(self.redis.get(key) or 0) >= n, timeout)
        return time.perf_counter() - start


def line(name: str, n: int, baseline: float, ours: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "n": n,
        "baseline_s": round(baseline, 3),
        "ours_s": round(ours, 3),
        "ratio": round(ours / baseline, 2),
        **extra,
    }


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    linear_sizes = (20, 100) if quick else (100, 1000)
    fan_n = 200 if quick else 1000
    runs, steps = (10, 20) if quick else (50, 20)
    with services.worker("baseline"):
        raw = Raw()
        raw.chain(5, 30)  # warm up
        raw_linear = {n: raw.chain(n, 600) for n in linear_sizes}
        raw_fan = raw.chord(fan_n, 300)
        raw_many = raw.many(runs * steps, 300)
    with services.worker("ours"):
        ours = Ours()
        ours.run(chain_plan(5, "bench-warmup"), [{}], 30)
        our_linear = {n: ours.run(chain_plan(n), [{}], 600) for n in linear_sizes}
        our_fan = ours.run(fanout_plan(), [{"items": list(range(fan_n))}], 300)
        our_many = ours.run(chain_plan(steps, "bench-throughput"), [{} for _ in range(runs)], 300)
    for n in linear_sizes:
        yield line("linear", n, raw_linear[n], our_linear[n])
    yield line("fanout", fan_n, raw_fan, our_fan)
    yield line("throughput", runs * steps, raw_many, our_many, runs=runs, steps_per_run=steps)
