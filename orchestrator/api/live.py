"""Live updates for server-sent events: one listener on the state store for every open stream
(PostgreSQL ``LISTEN``, or an SQLite poll of the event log), fanned out per run through one shared
``RunWatch`` (``orchestrator.api.channels``), so 200 streams on a run cost one poll per change."""

from __future__ import annotations

from typing import Any

from orchestrator.api.channels import ListChannel, RunChannel, Subscriber
from orchestrator.api.feeds import Change, PollFeed, PostgresFeed
from orchestrator.settings import (
    DEFAULT_LIVE_PING_S,
    DEFAULT_LIVE_POLL_S,
    DEFAULT_LIVE_QUEUE,
    DEFAULT_LIVE_STATUSES_KEPT,
)
from orchestrator.store import Repository, RunRow


class Hub:
    """Every stream of one server process, and the one feed of changes they all share."""

    def __init__(
        self,
        repo: Repository,
        poll_s: float = DEFAULT_LIVE_POLL_S,
        ping_s: float = DEFAULT_LIVE_PING_S,
        queue_limit: int = DEFAULT_LIVE_QUEUE,
    ) -> None:
        self.repo = repo
        self.ping_s, self.queue_limit = ping_s, queue_limit
        self.feed: PostgresFeed | PollFeed
        if repo.engine.dialect.name == "postgresql":
            self.feed = PostgresFeed(repo, self._changed)
        else:
            self.feed = PollFeed(repo, self._changed, poll_s)
        self._runs: dict[str, RunChannel] = {}
        self._list = ListChannel(repo, DEFAULT_LIVE_STATUSES_KEPT)

    async def start(self) -> None:
        await self.feed.start()

    async def stop(self) -> None:
        """Stop listening and end every stream (twice is once: ``serve`` stops the hub before
        uvicorn's shutdown, the app's lifespan again after it)."""
        await self.feed.stop()
        for channel in list(self._runs.values()):
            channel.close()
        self._list.close()

    async def follow_run(self, run_id: str) -> Subscriber:
        """A subscriber to one run: its full view first, then its changes (NotFound if no run)."""
        subscriber = Subscriber(self.queue_limit)
        try:
            await self._join(run_id, subscriber)
        except BaseException:  # NotFound, or the request cancelled: nothing is left behind
            self.leave(subscriber)
            raise
        return subscriber

    async def _join(self, run_id: str, subscriber: Subscriber) -> None:
        while True:
            channel = self._runs.get(run_id)
            if channel is None:
                channel = self._runs[run_id] = RunChannel(self.repo, run_id, self._forget)
                try:
                    await channel.open()
                finally:
                    if channel.closed:
                        self._forget(channel)
            try:
                joined = await channel.join(subscriber)
            finally:
                if not channel.subscribers:  # the run had ended: nobody to follow it for
                    channel.close()
            if joined:
                return

    def follow_list(self, workflow: str | None, status: str | None) -> Subscriber:
        """A subscriber to the run list: each run matching the filters as it shows up or changes status."""

        def want(run: RunRow) -> bool:
            return workflow in (None, run.workflow) and status in (None, str(run.status))

        subscriber = Subscriber(self.queue_limit, want)
        self._list.subscribers.add(subscriber)
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        """A stream has ended (its client went, or it was dropped): forget it, and a run's watch
        with its last subscriber."""
        subscriber.finish()
        if subscriber.channel is not None:
            subscriber.channel.leave(subscriber)
        self._list.subscribers.discard(subscriber)

    def counts(self) -> dict[str, Any]:
        """What the hub holds now: followed runs, their subscribers, list subscribers, busy tasks."""
        tasks = [c.task for c in self._runs.values()] + [self._list.task]
        return {
            "runs": len(self._runs),
            "run_subscribers": sum(len(c.subscribers) for c in self._runs.values()),
            "list_subscribers": len(self._list.subscribers),
            "busy": sum(1 for t in tasks if t is not None and not t.done()),
        }

    def _changed(self, change: Change) -> None:
        if change.runs is None:
            channels = list(self._runs.values())
        else:
            channels = [self._runs[r] for r in change.runs if r in self._runs]
        for channel in channels:
            channel.touch(change.resync)
        self._list.touch(change)

    def _forget(self, channel: RunChannel) -> None:
        if self._runs.get(channel.run_id) is channel:
            del self._runs[channel.run_id]
