"""The live streams of ``orchestrator serve`` (server-sent events), against a real uvicorn server:
a run's steps as a real worker runs them, the run list, one listener for every stream, the
listener's reconnection, the SQLite poll, disconnects that leave nothing behind, auth."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from orchestrator.api.feeds import APPLICATION_NAME, CHANNEL, EVERY_RUN, PollFeed
from orchestrator.api.tokens import Token
from orchestrator.store import Repository
from orchestrator.store.migrate import upgrade
from tests.conftest import ROOT, Cluster, write_workflow
from tests.integration.sse import EventReader, eventually, serving, step_status

HELD = """
name: held
steps:
  first: {task: tests.integration.stream_steps:hold, with: {path: "FIRST", value: 1}}
  second: {needs: [first], task: tests.integration.steps:add, with: {a: 1, b: 2}}
"""
TWICE_HELD = """
name: twice-held
steps:
  first: {task: tests.integration.stream_steps:hold, with: {path: "FIRST"}}
  second: {needs: [first], task: tests.integration.stream_steps:hold, with: {path: "SECOND"}}
"""
OTHER = """
name: other
steps:
  only: {task: tests.integration.steps:add, with: {a: 1, b: 1}}
"""
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def held(tmp_path: Path, text: str = HELD) -> tuple[Path, Path, Path]:
    """The workflow file, and the two files whose creation lets its steps finish."""
    first, second = tmp_path / "first.go", tmp_path / "second.go"
    text = text.replace('"FIRST"', f'"{first}"').replace('"SECOND"', f'"{second}"')
    return write_workflow(tmp_path, text, "held.yaml"), first, second


FEEDS = pytest.mark.parametrize("notify", [False, True], ids=["poll", "notify"])


def feed(cluster: Cluster, notify: bool) -> bool:
    """With ``notify``, the worker's and the CLI's connections set the trigger to NOTIFY (as
    ``ORCHESTRATOR_LIVE_NOTIFY`` does), for a server that LISTENs; else the server polls."""
    if notify:
        cluster.env["ORCHESTRATOR_LIVE_NOTIFY"] = "true"
    return notify


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=None))


@pytest.mark.integration
@FEEDS
def test_a_run_stream_shows_each_step_as_the_worker_runs_it(cluster: Cluster, tmp_path: Path, notify: bool) -> None:
    # Given a worker and a run whose first step holds until the test lets it go
    feed(cluster, notify)
    cluster.start_worker()
    workflow, first, _ = held(tmp_path)
    run_id = cluster.start(workflow)

    async def scenario() -> None:
        with serving(cluster.repo, notify=notify) as served:
            async with client() as http:
                stream = await EventReader(http, f"{served.url}/api/v1/runs/{run_id}/stream").open()
                assert stream.response is not None and stream.response.status_code == 200
                assert stream.response.headers["content-type"].startswith("text/event-stream")
                assert STREAM_HEADERS.items() <= dict(stream.response.headers).items()
                # The stream begins with the run's full view
                opening = await stream.next()
                assert opening is not None and opening.kind == "run"
                assert opening.data["run_id"] == run_id and set(opening.data["steps"]) == {"first", "second"}
                assert opening.data["steps"]["second"]["status"] == "pending"
                # When the first step is let go, its change arrives, holding only what changed
                first.touch()
                seen = await stream.until("change", lambda d: d["steps"].get("first", {}).get("status") == "succeeded")
                assert seen[-1].data["steps"]["first"]["output"] == 1
                assert "second" not in seen[-1].data["steps"] or seen[-1].data["steps"]["second"]["status"] != "pending"
                # Then the second step's success, the run's last change, and the end
                rest = await stream.until("end")
                changes = [e for e in seen + rest if e.kind == "change"]
                assert [step_status(e, "second") for e in changes if step_status(e, "second")][-1] == "succeeded"
                assert changes[-1].data["run"]["status"] == "succeeded"
                assert rest[-1].data == {"run_id": run_id, "status": "succeeded"}
                assert await stream.next() is None  # the server closed the stream
                await eventually(lambda: served.hub.counts()["runs"] == 0)

    asyncio.run(scenario())


@pytest.mark.integration
@FEEDS
def test_the_run_list_stream_shows_a_new_run_and_its_status_change(
    cluster: Cluster, tmp_path: Path, notify: bool
) -> None:
    # Given a worker, and a list stream that asks for one workflow's runs
    feed(cluster, notify)
    cluster.start_worker()
    workflow, first, _ = held(tmp_path)
    other = write_workflow(tmp_path, OTHER, "other.yaml")

    async def scenario() -> None:
        with serving(cluster.repo, notify=notify) as served:
            async with client() as http:
                stream = await EventReader(http, f"{served.url}/api/v1/runs/stream?workflow=held").open()
                assert stream.response is not None and stream.response.status_code == 200
                # When a run of another workflow and then one of this workflow start
                await asyncio.to_thread(cluster.start, other)
                run_id = await asyncio.to_thread(cluster.start, workflow)
                # Then the new run shows up, running, and the other workflow's never does
                seen = await stream.until("run", lambda d: d["run_id"] == run_id)
                assert seen[-1].data["status"] == "running" and seen[-1].data["workflow"] == "held"
                # And when it is let go, its end shows up too
                first.touch()
                seen += await stream.until("run", lambda d: d["run_id"] == run_id and d["status"] == "succeeded")
                assert {e.data["workflow"] for e in seen if e.kind == "run"} == {"held"}
                assert [e.data["status"] for e in seen if e.kind == "run"] == ["running", "succeeded"]
                await stream.close()
                await eventually(lambda: served.hub.counts()["list_subscribers"] == 0)

    asyncio.run(scenario())


def listeners(database_url: str) -> list[tuple[int, str, str]]:
    """The database's live-update listener connections: (pid, application name, last query)."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = (
            "SELECT pid, application_name, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND (application_name = %s OR query ILIKE 'LISTEN%%')"
        )
        return [(r[0], r[1], r[2]) for r in conn.execute(query, (APPLICATION_NAME,))]


@pytest.mark.integration
@FEEDS
def test_fifty_streams_on_a_run_share_one_listener_and_all_get_the_end(
    cluster: Cluster, tmp_path: Path, notify: bool
) -> None:
    # Given a worker, a held run and fifty streams open on it
    feed(cluster, notify)
    cluster.start_worker()
    workflow, first, _ = held(tmp_path)
    run_id = cluster.start(workflow)

    async def scenario() -> None:
        with serving(cluster.repo, notify=notify) as served:
            async with client() as http:
                url = f"{served.url}/api/v1/runs/{run_id}/stream"
                streams = await asyncio.gather(*(EventReader(http, url).open() for _ in range(50)))
                for stream in streams:
                    assert (await stream.next()).kind == "run"  # type: ignore[union-attr]
                # Then the server holds one feed connection for all of them (LISTEN, or the poll), and one watch
                found = listeners(cluster.database_url)
                assert len(found) == 1 and found[0][1] == APPLICATION_NAME
                assert type(served.hub.feed).__name__ == ("PostgresFeed" if notify else "PollFeed")
                assert served.hub.counts()["runs"] == 1 and served.hub.counts()["run_subscribers"] == 50
                # When the run ends, every stream gets the step's change, then the end
                first.touch()
                for stream in streams:
                    seen = await stream.until("end")
                    assert "succeeded" in [step_status(e, "first") for e in seen]
                    assert seen[-1].data["status"] == "succeeded"
                    assert await stream.next() is None
                # And the run's watch is gone with its last subscriber
                await eventually(
                    lambda: served.hub.counts() == {"runs": 0, "run_subscribers": 0, "list_subscribers": 0, "busy": 0}
                )

    asyncio.run(scenario())


@pytest.mark.integration
@FEEDS
def test_a_killed_listener_comes_back_and_its_streams_resync(cluster: Cluster, tmp_path: Path, notify: bool) -> None:
    # Given a worker, a run held twice and a stream on it
    feed(cluster, notify)
    cluster.start_worker()
    workflow, first, second = held(tmp_path, TWICE_HELD)
    run_id = cluster.start(workflow)

    async def scenario() -> None:
        with serving(cluster.repo, notify=notify) as served:
            async with client() as http:
                stream = await EventReader(http, f"{served.url}/api/v1/runs/{run_id}/stream").open()
                listing = await EventReader(http, f"{served.url}/api/v1/runs/stream?status=succeeded").open()
                assert (await stream.next()).kind == "run"  # type: ignore[union-attr]
                # When the feed's connection is killed (LISTEN, or the poll's), and the first step ends meanwhile
                await eventually(lambda: len(listeners(cluster.database_url)) == 1)
                [(pid, _, _)] = listeners(cluster.database_url)
                dsn = cluster.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
                first.touch()
                seen = []
                if notify:
                    # Then the listener reconnects, and the stream gets the full view again
                    seen += await stream.until("run")
                # And the first step's end shows: missed while the listener was down, or after it came back
                if not seen or step_status(seen[-1], "first") != "succeeded":
                    seen += await stream.until(
                        "change", lambda d: d["steps"].get("first", {}).get("status") == "succeeded"
                    )
                # And the feed is on a new connection
                await eventually(lambda: [p for p, _, _ in listeners(cluster.database_url)] not in ([], [pid]))
                # And changes flow again to the end
                second.touch()
                seen += await stream.until("end")
                assert seen[-1].data["status"] == "succeeded"
                # And the run list, too, hears of the run's end through the new connection
                ended = await listing.until("run")
                assert [(e.data["run_id"], e.data["status"]) for e in ended] == [(run_id, "succeeded")]

    asyncio.run(scenario())


def sqlite_run(tmp_path: Path, workflow: Path) -> tuple[Repository, subprocess.Popen[bytes]]:
    """``orchestrator run`` on the embedded default (SQLite, an in-process worker), in the background."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_BROKER_URL"}
    env.update({"ORCHESTRATOR_DATABASE_URL": url, "PYTHONPATH": str(ROOT)})
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(workflow)], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    return Repository.from_url(url), process


def test_on_sqlite_the_polling_hub_streams_the_same_changes(tmp_path: Path) -> None:
    # Given a run on the embedded default, and a stream on it from a server on the same SQLite file
    workflow, first, second = held(tmp_path, TWICE_HELD)
    repo, process = sqlite_run(tmp_path, workflow)

    def started() -> list[str]:
        with repo.transaction() as tx:
            return [r.id for r in tx.runs(None, None, 1)]

    async def scenario() -> None:
        await eventually(lambda: bool(started()), timeout=60)
        [run_id] = started()
        with serving(repo) as served:
            assert type(served.hub.feed).__name__ == "PollFeed"
            async with client() as http:
                stream = await EventReader(http, f"{served.url}/api/v1/runs/{run_id}/stream").open()
                assert (await stream.next()).kind == "run"  # type: ignore[union-attr]
                # When each step is let go in turn, each change arrives, then the end
                first.touch()
                await stream.until("change", lambda d: d["steps"].get("first", {}).get("status") == "succeeded")
                second.touch()
                seen = await stream.until("end")
                assert "succeeded" in [step_status(e, "second") for e in seen]
                assert seen[-1].data == {"run_id": run_id, "status": "succeeded"}

    try:
        asyncio.run(scenario())
        assert process.wait(60) == 0, (tmp_path / "run.log").read_text()
    finally:
        process.kill()
        process.wait()
        repo.engine.dispose()


def test_streams_that_end_leave_nothing_behind_and_an_unknown_run_is_404(tmp_path: Path) -> None:
    # Given a run on SQLite whose step is held, a server, three streams on the run and one on the list
    workflow, first, _ = held(tmp_path)
    repo, process = sqlite_run(tmp_path, workflow)

    def started() -> list[str]:
        with repo.transaction() as tx:
            return [r.id for r in tx.runs(None, None, 1)]

    async def scenario() -> None:
        await eventually(lambda: bool(started()), timeout=60)
        [run_id] = started()
        with serving(repo) as served:
            served.hub.ping_s = 0.2
            async with client() as http:
                url = f"{served.url}/api/v1/runs/{run_id}/stream"
                streams = await asyncio.gather(*(EventReader(http, url).open() for _ in range(3)))
                listing = await EventReader(http, f"{served.url}/api/v1/runs/stream").open()
                await eventually(lambda: served.hub.counts()["run_subscribers"] == 3)
                # A quiet stream is kept alive with comments
                assert [e.kind for e in await streams[0].until("ping")] == ["run", "ping"]
                # When two clients go away mid-stream, the server forgets them, not the run
                await streams[0].close()
                await streams[1].close()
                await eventually(lambda: served.hub.counts()["run_subscribers"] == 1)
                assert served.hub.counts()["runs"] == 1
                # When the last one goes too, the run's watch goes with it, and no task is left
                await streams[2].close()
                await listing.close()
                await eventually(
                    lambda: served.hub.counts() == {"runs": 0, "run_subscribers": 0, "list_subscribers": 0, "busy": 0}
                )
                # A run that does not exist is a 404 with a JSON error, before any stream starts
                missing = await http.get(f"{served.url}/api/v1/runs/no-such-run/stream")
                assert missing.status_code == 404
                assert missing.headers["content-type"] == "application/json"
                assert "no run" in missing.json()["error"]
                bad = await http.get(f"{served.url}/api/v1/runs/stream?status=sideways")
                assert bad.status_code == 400 and "sideways" in bad.json()["error"]
                assert served.hub.counts()["runs"] == 0
        first.touch()

    try:
        asyncio.run(scenario())
        assert process.wait(60) == 0, (tmp_path / "run.log").read_text()
    finally:
        process.kill()
        process.wait()
        repo.engine.dispose()


def test_streams_need_a_viewer_token_when_tokens_are_configured(tmp_path: Path) -> None:
    # Given a server with a viewer's token configured, and a run that has ended
    workflow = write_workflow(tmp_path, OTHER, "other.yaml")
    repo, process = sqlite_run(tmp_path, workflow)
    assert process.wait(60) == 0, (tmp_path / "run.log").read_text()
    with repo.transaction() as tx:
        [run_id] = [r.id for r in tx.runs(None, None, 1)]

    async def scenario() -> None:
        with serving(repo, [Token("ui", "viewer", "v-secret")]) as served:
            async with client() as http:
                for path in (f"/api/v1/runs/{run_id}/stream", "/api/v1/runs/stream"):
                    # Without a token, or with a wrong one: 401
                    assert (await http.get(served.url + path)).status_code == 401
                    wrong = await http.get(served.url + path, headers={"Authorization": "Bearer nope"})
                    assert wrong.status_code == 401
                # With the viewer's token: the stream, here the ended run's view and its end
                viewer = {"Authorization": "Bearer v-secret"}
                stream = await EventReader(http, f"{served.url}/api/v1/runs/{run_id}/stream", viewer).open()
                assert stream.response is not None and stream.response.status_code == 200
                assert [e.kind for e in await stream.until("end")] == ["run", "end"]
                assert await stream.next() is None
                listing = await EventReader(http, f"{served.url}/api/v1/runs/stream", viewer).open()
                assert listing.response is not None and listing.response.status_code == 200
                await listing.close()

    try:
        asyncio.run(scenario())
    finally:
        repo.engine.dispose()


@pytest.mark.integration
def test_one_notification_per_statement_that_logs_events(database_url: str) -> None:
    # Given a listener on the event log's channel, and 300 runs
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as writer:
        listener.execute(f"LISTEN {CHANNEL}")
        # A connection that has not opted in notifies nothing (the default: no lock at commit)
        writer.execute("INSERT INTO definitions VALUES ('v0', 'wf', '{}', now())")
        writer.execute(
            "INSERT INTO runs (id, workflow, version, status, inputs, created_at) "
            "VALUES ('quiet', 'wf', 'v0', 'running', '{}', now())"
        )
        writer.execute("INSERT INTO events (run_id, kind, at) VALUES ('quiet', 'step.queued', now())")
        assert [n.payload for n in listener.notifies(timeout=0.5)] == []
        writer.execute("SET orchestrator.live_notify = on")
        writer.execute("INSERT INTO definitions VALUES ('v1', 'wf', '{}', now())")
        writer.execute(
            "INSERT INTO runs (id, workflow, version, status, inputs, created_at) "
            "SELECT md5(i::text)::uuid::text, 'wf', 'v1', 'running', '{}', now() FROM generate_series(1, 300) i"
        )
        three = sorted(r[0] for r in writer.execute("SELECT id FROM runs WHERE id <> 'quiet' ORDER BY id LIMIT 3"))
        # When one statement logs six events of three runs, and another one event of each of the 300
        writer.execute(
            "INSERT INTO events (run_id, kind, at) SELECT id, 'step.queued', now() FROM runs, generate_series(1, 2) "
            "WHERE id = ANY(%s)",
            (three,),
        )
        writer.execute(
            "INSERT INTO events (run_id, kind, at) SELECT id, 'step.queued', now() FROM runs WHERE id <> 'quiet'"
        )
        # Then the first notification names each run once, and the second, too many to name, says so
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
    assert len(notes) == 2 and sorted(notes[0].split(",")) == three
    assert notes[1] == EVERY_RUN


def test_serve_stops_promptly_with_streams_open(tmp_path: Path) -> None:
    # Given `orchestrator serve` on the embedded default, with a client streaming the run list
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_BROKER_URL"}
    env.update({"ORCHESTRATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}", "PYTHONPATH": str(ROOT)})
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    async def scenario() -> None:
        await eventually(lambda: b"Uvicorn running" in log.read_bytes() or process.poll() is not None, 60)
        async with client() as http:
            stream = await EventReader(http, f"http://127.0.0.1:{port}/api/v1/runs/stream").open()
            # When the server is asked to stop
            process.send_signal(signal.SIGTERM)
            # Then the stream ends, and the server exits at once, cleanly (no waiting on the stream)
            assert await stream.next(timeout=10) is None
            exit_code = await asyncio.to_thread(process.wait, 10)
            assert exit_code in (0, -signal.SIGTERM), log.read_text()  # uvicorn re-raises the signal it stopped on
            assert "ERROR" not in log.read_text() and "timeout graceful shutdown" not in log.read_text()

    try:
        asyncio.run(scenario())
    finally:
        process.kill()
        process.wait()


@pytest.mark.integration
def test_the_poll_sees_an_event_committed_late_with_a_lower_id(database_url: str) -> None:
    # Given the poll feed on PostgreSQL, and two runs
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    repo = Repository.from_url(database_url)
    poll = PollFeed(repo, lambda change: None, 60)
    with psycopg.connect(dsn) as late, psycopg.connect(dsn, autocommit=True) as early:
        early.execute("INSERT INTO definitions VALUES ('v1', 'wf', '{}', now())")
        early.execute(
            "INSERT INTO runs (id, workflow, version, status, inputs, created_at) "
            "SELECT id, 'wf', 'v1', 'running', '{}', now() FROM unnest(ARRAY['late', 'early']) id"
        )
        try:
            assert poll._read() == frozenset()  # the first read: from the log's end
            # When one transaction logs an event (its id taken) but commits after another's, of a higher id
            late.execute("INSERT INTO events (run_id, kind, at) VALUES ('late', 'step.running', now())")
            early.execute("INSERT INTO events (run_id, kind, at) VALUES ('early', 'step.running', now())")
            assert poll._read() == {"early"}
            late.commit()
            # Then the next read still sees the late one's run, and once only
            assert poll._read() == {"late"}
            assert poll._read() == frozenset()
        finally:
            poll._engine.dispose()
