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

import httpx
import pytest

from orchestrator.api import channels
from orchestrator.api.app import create_app
from orchestrator.api.channels import ListChannel, Subscriber
from orchestrator.api.feeds import Change, LogReader
from orchestrator.api.live import Hub, Stopped
from orchestrator.errors import StateStoreError
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


def test_the_list_tells_a_status_once(repo: Repository) -> None:
    async def scenario() -> None:
        hub = Hub(repo)
        running, failed = hub.follow_list(None, "running"), hub.follow_list("order", "failed")
        # When the feed names the run (it was running before the hub started: nothing remembered)
        hub._changed(Change(frozenset({RUN})))
        # Then the running run shows up on the list that asks for running runs, once
        [(kind, found)] = await drain(running)
        assert kind == "run" and found["run_id"] == RUN and found["status"] == "running"
        hub._changed(Change(frozenset({RUN})))
        assert await drain(running) == []
        # A change naming no run is for the followed runs alone: the list reads nothing
        hub._changed(Change(None, since=datetime.now(UTC) - timedelta(minutes=5), resync=True))
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


def test_a_busy_run_is_joined_not_reopened_for_ever(repo: Repository, monkeypatch: Any) -> None:
    # Given a run whose first full view takes 50 ms, and which changes every 20 ms
    # (the reviewer's /tmp/rev/livelock.py: 53 full opens in 3 s, and follow_run never returned)
    opens = []

    class SlowWatch(RunWatch):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            opens.append(1)
            time.sleep(0.05)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(channels, "RunWatch", SlowWatch)

    async def scenario() -> None:
        hub = Hub(repo)

        async def busy() -> None:
            while True:
                hub._changed(Change(frozenset({RUN})))
                await asyncio.sleep(0.02)

        changes = asyncio.create_task(busy())
        try:
            # When a client follows it, then it joins the run's one channel, opened once
            subscriber = await asyncio.wait_for(hub.follow_run(RUN), 3)
        finally:
            changes.cancel()
        assert len(opens) == 1 and hub.counts()["run_subscribers"] == 1
        [(kind, _)] = [e for e in await drain(subscriber) if e[0] == "run"]
        hub.leave(subscriber)
        assert hub.counts()["runs"] == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_resync_of_many_open_runs_tells_the_list_only_news(repo: Repository) -> None:
    # Given 300 more open runs, already running when the hub starts, and a list subscriber
    # (the reviewer's /tmp/rev/listflood.py: every open run was sent, and with more than 256 the
    # subscriber was dropped)
    ids = [f"run-{i:04}" for i in range(300)]
    with repo.transaction() as tx:
        for run_id in ids:
            tx.insert_run(run_id, "order", "v1", {}, None, {"fetch": 0})
            tx.update_run(run_id, status=RunStatus.RUNNING, started_at=now())

    async def scenario() -> None:
        hub = Hub(repo, poll_s=60)
        await hub.start()
        try:
            subscriber = hub.follow_list(None, None)
            # When the feed resyncs naming all of them (each logged a step's event while it was away)
            hub._changed(Change(frozenset(ids + [RUN]), resync=True))
            # Then nothing is sent, for no status is news, and the subscriber stays
            assert await drain(subscriber) == []
            assert not subscriber.dropped and hub.counts()["list_subscribers"] == 1
            # And when one of them fails, that alone is told
            with repo.transaction() as tx:
                tx.update_run(ids[7], status=RunStatus.FAILED, finished_at=now())
            hub._changed(Change(frozenset(ids), resync=True))
            assert [(d["run_id"], d["status"]) for _, d in await drain(subscriber)] == [(ids[7], "failed")]
        finally:
            await hub.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_run_list_read_that_fails_is_tried_again(repo: Repository, monkeypatch: Any) -> None:
    # Given a list subscriber, and a store that fails the list's first read
    failures = []
    original = ListChannel._read

    def flaky(self: ListChannel, runs: set[str]) -> Any:
        if not failures:
            failures.append(1)
            raise StateStoreError("the state store is away")
        return original(self, runs)

    monkeypatch.setattr(ListChannel, "_read", flaky)

    async def scenario() -> None:
        hub = Hub(repo)
        hub._list._retry_s = 0.05
        subscriber = hub.follow_list(None, None)
        # When the run ends, and the read of its change fails
        with repo.transaction() as tx:
            tx.update_run(RUN, status=RunStatus.SUCCEEDED, finished_at=now())
        hub._changed(Change(frozenset({RUN})))
        # Then the run is read again, and shows as ended
        assert [d["status"] for _, d in await drain(subscriber, 1.0)] == ["succeeded"]
        assert failures == [1]
        hub.leave(subscriber)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_stopped_hub_refuses_new_streams(repo: Repository) -> None:
    async def scenario() -> None:
        app = create_app(repo, lambda: [], [], 0.0)
        hub: Hub = app.state.hub
        await hub.stop()
        # After stop, no new subscriber, whether to a run or to the list
        with pytest.raises(Stopped):
            await hub.follow_run(RUN)
        with pytest.raises(Stopped):
            hub.follow_list(None, None)
        assert hub.counts() == {"runs": 0, "run_subscribers": 0, "list_subscribers": 0, "busy": 0}
        # And the closed list channel takes none either
        late = Subscriber(3)
        assert not hub._list.add(late) and late.ended
        # The routes say so: a 503 with a JSON error, no stream left open
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            for path in (f"/api/v1/runs/{RUN}/stream", "/api/v1/runs/stream"):
                response = await http.get(path)
                assert response.status_code == 503 and "stopping" in response.json()["error"]

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_log_reader_sees_late_commits_and_forgets_old_runs() -> None:
    # Given a reader from id 10 whose reads look again 60 s back
    reader = LogReader(10, window_s=60)
    sql, params = reader.query()
    assert params == {"next": 10, "floor": 10}
    assert reader.take([("a", 12, 1, 1), ("b", 13, 1, 1)]) == {"a", "b"}
    # When id 11 of run a commits after 12 and 13 were read: a's count above the floor grew
    reader.query()
    assert reader.take([("a", 12, 2, 2), ("b", 13, 1, 1)]) == {"a"}
    # The same rows again: nothing new
    reader.query()
    assert reader.take([("a", 12, 2, 2), ("b", 13, 1, 1)]) == frozenset()
    # Once the window has gone by, the floor moves up to the old high mark, and runs below it are forgotten
    reader.window_s = 0
    _, params = reader.query()
    assert params["next"] == 13
    assert reader.take([("a", 12, 2, 0), ("b", 13, 1, 0)]) == frozenset()
    assert reader.floor == 13 and reader._known == {}
    _, params = reader.query()
    assert params == {"next": 13, "floor": 13}
    assert reader.take([("b", 14, 1, 1)]) == {"b"}
