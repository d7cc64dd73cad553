"""Live updates for server-sent events: one feed of changes from the state store for every open
stream (a poll of the event log, or opt-in on PostgreSQL ``LISTEN``), fanned out per run through one
shared ``RunWatch`` (``orchestrator.api.channels``), so 200 streams on a run cost one poll per change."""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The hub has stopped (the server is stopping): no new stream."""


class Hub:
    """Every stream of one server process, and the one feed of changes they all share."""

    def __init__(
        self,
        repo: Repository,
        poll_s: float = DEFAULT_LIVE_POLL_S,
        ping_s: float = DEFAULT_LIVE_PING_S,
        queue_limit: int = DEFAULT_LIVE_QUEUE,
        notify: bool = False,
    ) -> None:
        self.repo = repo
        self.ping_s, self.queue_limit = ping_s, queue_limit
        self.stopped = False
        self.feed: PostgresFeed | PollFeed
        if notify and repo.engine.dialect.name == "postgresql":
            self.feed = PostgresFeed(repo, self._changed)
        else:
            self.feed = PollFeed(repo, self._changed, poll_s)
        self._runs: dict[str, RunChannel] = {}
        self._list = ListChannel(repo, DEFAULT_LIVE_STATUSES_KEPT)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._list.seed)
        except Exception as exc:  # the list then tells each run it hears of, once
            log.warning("live updates: the open runs cannot be read: %s", exc)
        await self.feed.start()

    async def stop(self) -> None:
        """Stop listening, end every stream, refuse new ones (twice is once: ``serve`` stops the
        hub before uvicorn's shutdown, the app's lifespan again after it)."""
        self.stopped = True
        await self.feed.stop()
        for channel in list(self._runs.values()):
            channel.close()
        self._list.close()

    async def follow_run(self, run_id: str) -> Subscriber:
        """A subscriber to one run: its full view first, then its changes (NotFound if no run,
        Stopped once the hub has stopped)."""
        subscriber = Subscriber(self.queue_limit)
        try:
            await self._join(run_id, subscriber)
        except BaseException:  # NotFound, or the request cancelled: nothing is left behind
            self.leave(subscriber)
            raise
        return subscriber

    async def _join(self, run_id: str, subscriber: Subscriber) -> None:
        while True:
            if self.stopped:
                raise Stopped("the server is stopping")
            channel = self._runs.get(run_id)
            opening = channel is None
            if channel is None:
                channel = self._runs[run_id] = RunChannel(self.repo, run_id, self._forget)
            try:
                if opening:
                    await channel.open()
                joined = await channel.join(subscriber)
            finally:
                if not channel.subscribers:  # the run had ended, or open failed: nobody to follow it for
                    channel.close()
                if channel.closed:
                    self._forget(channel)
            if joined:
                return

    def follow_list(self, workflow: str | None, status: str | None) -> Subscriber:
        """A subscriber to the run list: each run matching the filters as it shows up or changes status."""

        def want(run: RunRow) -> bool:
            return workflow in (None, run.workflow) and status in (None, str(run.status))

        if self.stopped:
            raise Stopped("the server is stopping")
        subscriber = Subscriber(self.queue_limit, want)
        self._list.add(subscriber)
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
