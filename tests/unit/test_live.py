"""The live-update hub without a server: one watch per run however many follow it, coalesced
polls, diffs that hold only what changed, full views on a resync, the run list's news, and slow
readers dropped rather than buffered."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.channels import Subscriber
from orchestrator.api.feeds import Change
from orchestrator.api.live import Hub
from orchestrator.runtime.views import RunWatch
from orchestrator.status import RunStatus
from orchestrator.store import Repository, now
from orchestrator.store.migrate import upgrade

RUN = "run-1"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    """A migrated SQLite store holding one running run of two steps."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    upgrade(url)
    repo = Repository.from_url(url)
    with repo.transaction() as tx:
        tx.save_definition("v1", "order", {"name": "order", "steps": {"fetch": {}, "charge": {}}})
        tx.insert_run(RUN, "order", "v1", {}, None, {"fetch": 0, "charge": 1})
        tx.update_run(RUN, status=RunStatus.RUNNING, started_at=now())
    return repo


def record(repo: Repository, step: str, kind: str, detail: dict[str, Any] | None = None, **row: Any) -> None:
    with repo.transaction() as tx:
        target = tx.steps(RUN)[step]
        if row:
            tx.update_step(target.id, **row)
        tx.add_events([{"run_id": RUN, "step": step, "item_index": None, "kind": kind, "detail": detail, "at": now()}])


async def drain(subscriber: Subscriber, wait: float = 0.3) -> list[tuple[str, Any]]:
    """The events queued for ``subscriber`` within ``wait`` seconds, parsed."""
    found = []
    stream = subscriber.events(ping_s=wait)
    async for chunk in stream:
        text = chunk.decode()
        if text.startswith(":"):
            break
        for event in text.split("\n\n")[:-1]:
            kind, data = event.split("\n")
            found.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    await stream.aclose()
    return found


def test_a_slow_reader_is_dropped_not_buffered() -> None:
    async def scenario() -> None:
        subscriber = Subscriber(limit=3)
        assert all(subscriber.push(f"event: change\ndata: {i}\n\n".encode()) for i in range(3))
        # When one more event finds its queue full, it is dropped: its stream ends with nothing queued
        assert not subscriber.push(b"event: change\ndata: 3\n\n")
        assert subscriber.dropped and not subscriber.push(b"event: change\ndata: 4\n\n")
        assert [e async for e in subscriber.events(ping_s=5)] == []

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_followers_of_a_run_share_one_watch_and_see_only_what_changed(repo: Repository) -> None:
    async def scenario() -> None:
        hub = Hub(repo)
        first, second = await hub.follow_run(RUN), await hub.follow_run(RUN)
        assert hub.counts() == {"runs": 1, "run_subscribers": 2, "list_subscribers": 0, "busy": 0}
        [(kind, view)] = await drain(first)
        assert kind == "run" and set(view["steps"]) == {"fetch", "charge"}
        # When one step starts, both followers get one change holding that step alone
        record(repo, "fetch", "step.running", {"attempt": 1}, status="running", attempts=1)
        hub._changed(Change(frozenset({RUN})))
        for subscriber in (first, second):
            changes = [e for e in await drain(subscriber) if e[0] == "change"]
            assert [set(data["steps"]) for _, data in changes] == [{"fetch"}]
            assert changes[0][1]["steps"]["fetch"]["status"] == "running"
            assert changes[0][1]["run"]["run_id"] == RUN and "steps" not in changes[0][1]["run"]
        # A resync sends the whole view again
        hub._changed(Change(None, resync=True))
        assert [kind for kind, _ in await drain(first)] == ["run"]
        # When the followers leave, the watch goes with the last one
        hub.leave(first)
        assert hub.counts()["runs"] == 1
        hub.leave(second)
        assert hub.counts()["runs"] == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_changes_during_a_poll_cost_one_more_poll_not_one_each(repo: Repository, monkeypatch: Any) -> None:
    polls = []
    polling = threading.Event()
    original = RunWatch.poll

    def slow_poll(self: RunWatch) -> dict[str, Any]:
        polls.append(1)
        polling.set()
        time.sleep(0.2)
        return original(self)

    monkeypatch.setattr(RunWatch, "poll", slow_poll)

    async def scenario() -> None:
        hub = Hub(repo)
        subscriber = await hub.follow_run(RUN)
        # When 100 notifications arrive, most of them while the first poll is under way
        hub._changed(Change(frozenset({RUN})))
        while not polling.is_set():
            await asyncio.sleep(0.01)
        for _ in range(99):
            hub._changed(Change(frozenset({RUN})))
        while hub.counts()["busy"]:
            await asyncio.sleep(0.05)
        # Then the run was polled twice: once for the first, once for all the others
        assert len(polls) == 2
        hub.leave(subscriber)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_list_tells_a_status_once_and_hears_of_many_runs_at_once(repo: Repository) -> None:
    async def scenario() -> None:
        hub = Hub(repo)
        running, failed = hub.follow_list(None, "running"), hub.follow_list("order", "failed")
        # When the store says "many runs changed" (a statement of too many runs to name)
        hub._changed(Change(None, since=datetime.now(UTC) - timedelta(minutes=5)))
        # Then the running run shows up on the list that asks for running runs, once
        [(kind, found)] = await drain(running)
        assert kind == "run" and found["run_id"] == RUN and found["status"] == "running"
        hub._changed(Change(frozenset({RUN})))
        assert await drain(running) == []
        # And when it fails, on the list that asks for failed runs of its workflow
        with repo.transaction() as tx:
            tx.update_run(RUN, status=RunStatus.FAILED, finished_at=now())
        hub._changed(Change(frozenset({RUN})))
        assert [data["status"] for _, data in await drain(failed)] == ["failed"]
        hub.leave(running)
        hub.leave(failed)
        assert hub.counts()["list_subscribers"] == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))
