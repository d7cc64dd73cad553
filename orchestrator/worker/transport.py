"""The Celery transport: sends step messages, revokes running ones, and tells the reconciler
which messages the broker has lost.

A message's Celery task id is its dispatch token, so the broker can be asked about it by id:
- Redis: the queue is a list (newest at the left) and delivered-but-unacknowledged messages sit in
  the ``unacked`` hash; a message is lost when it is in neither, or has sat unacknowledged longer
  than a live worker would hold it (its consumer's connection was lost);
- the in-memory broker of the embedded default lives and dies with its process: a message sent by
  an earlier process is gone;
- any other broker cannot tell (the reconciler then waits much longer before sending again).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import redis
from celery import Celery, Task, group
from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as KombuOperationalError

from orchestrator.runtime.scheduler import Dispatch
from orchestrator.store import StepRow
from orchestrator.worker.publish import batchable, monitoring, publish, time_limits

log = logging.getLogger(__name__)
_ID = re.compile(rb'"correlation_id": ?"([0-9a-fA-F-]{36})"')
_PUBLISHED = re.compile(rb'"published_at": ?([0-9.]+)')
_SCAN_CHUNK = 500
_SCAN_LIMIT = 200_000
_MARGIN_S = 30.0
_HELD_S = 120.0  # an unacknowledged message taken longer ago than this, whose step has not started, is lost

Unsent = Callable[[Sequence[Dispatch]], None]
_PROCESS_STARTED = datetime.now(UTC)  # the in-memory broker's messages are this process's only


class CeleryTransport:
    def __init__(self, app: Celery, unsent: Unsent | None = None) -> None:
        self.app = app
        self.unsent = unsent
        self.started = _PROCESS_STARTED
        url = str(app.conf.broker_url or "")
        self.redis = redis.Redis.from_url(url) if url.startswith(("redis://", "rediss://")) else None
        self.memory = url.startswith("memory://")
        self._batchable: bool | None = None

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish step messages: on Redis, a batch through one producer and one pipeline
        (``publish``); elsewhere, several at once as one Celery group. A batch that fails goes
        again through Celery's path, with its retries (a message the failed pipeline did deliver
        is then sent twice, and its second delivery is refused by the claim). A failure to publish
        is not raised: the steps are held in the state store and the reconciler sends them again."""
        wakes = [d for d in dispatches if d.wake]
        if wakes:
            self._wake(wakes)
            dispatches = [d for d in dispatches if not d.wake]
        if not dispatches:
            return
        from orchestrator.worker.tasks import execute_step

        published = {"published_at": time.time()}
        if self.batched(execute_step):
            try:
                publish(self.app, execute_step, dispatches, published)
                return
            except (KombuError, redis.RedisError, OSError) as exc:
                log.warning(
                    "could not publish %d step message(s) in a batch: %s; trying Celery's path", len(dispatches), exc
                )
        self._send_group(execute_step, dispatches, published)

    def batched(self, task: Task) -> bool:
        if self._batchable is None:
            self._batchable = batchable(self.app, task)
        return self._batchable

    def _send_group(self, task: Task, dispatches: Sequence[Dispatch], published: dict[str, float]) -> None:
        signatures = [
            task.signature(
                (d.step_run_id, d.dispatch_id),
                task_id=d.dispatch_id,
                countdown=d.countdown or None,
                immutable=True,
                headers=published,
                **time_limits(d.timeout),
                **monitoring(d),
            )
            for d in dispatches
        ]
        try:
            if len(signatures) == 1:
                signatures[0].apply_async()
            else:
                group(signatures).apply_async()
        except (KombuOperationalError, redis.RedisError, OSError) as exc:
            log.warning(
                "could not publish %d step message(s): %s; they are held for the reconciler", len(signatures), exc
            )
            self._unsent(dispatches)

    def _wake(self, wakes: Sequence[Dispatch]) -> None:
        """Wake-up messages for waits due soon. Losing one loses nothing: the step's due time is in
        the state store, and the reconciler's sweep fires it."""
        from orchestrator.worker.tasks import wake

        try:
            for d in wakes:
                wake.apply_async((d.step_run_id,), countdown=d.countdown or None)
        except (KombuOperationalError, redis.RedisError, OSError) as exc:
            log.warning("could not publish %d wake-up message(s): %s; the reconciler fires them", len(wakes), exc)

    def _unsent(self, dispatches: Sequence[Dispatch]) -> None:
        if self.unsent is None:
            return
        try:
            self.unsent(dispatches)
        except Exception as exc:  # the store is down too: the reconciler's broker check finds them
            log.warning("could not mark %d unsent step message(s): %s", len(dispatches), exc)

    def revoke(self, dispatch_ids: Sequence[str]) -> None:
        if dispatch_ids and not self.memory:
            self.app.control.revoke(list(dispatch_ids), terminate=True, signal="SIGTERM")

    def lost(self, rows: Sequence[StepRow]) -> set[str] | None:
        if self.memory:
            return {r.dispatch_id for r in rows if r.dispatch_id and (r.queued_at or self.started) < self.started}
        if self.redis is None:
            return None
        try:
            return _lost_in_redis(self.redis, str(self.app.conf.task_default_queue), rows)
        except redis.RedisError as exc:
            log.warning("cannot look for lost messages in Redis: %s", exc)
            return set()


def _lost_in_redis(client: redis.Redis, queue: str, rows: Sequence[StepRow]) -> set[str]:
    """Ids of ``rows``' messages in neither the queue nor the unacknowledged hash.

    The queue is read from its oldest end and only as far as needed: candidates are the oldest
    queued steps, so a backlog is recognised after reading about as many messages as candidates.
    """
    wanted = {r.dispatch_id: r for r in rows if r.dispatch_id}
    for found in _held(client, time.time() - _HELD_S):
        wanted.pop(found, None)
    if not wanted:
        return set()
    newest = max((r.queued_at or datetime.now(UTC)).timestamp() for r in wanted.values())
    start, read = -_SCAN_CHUNK, 0
    while wanted and read < _SCAN_LIMIT:
        chunk = client.lrange(queue, start, start + _SCAN_CHUNK - 1)
        for item in reversed(chunk):  # oldest first
            raw = _bytes(item)
            match = _ID.search(raw)
            if match:
                wanted.pop(match.group(1).decode(), None)
            published = _PUBLISHED.search(raw)
            if published and float(published.group(1)) > newest + _MARGIN_S:
                return set(wanted)  # past every candidate's time in a FIFO queue: the rest are lost
        if len(chunk) < _SCAN_CHUNK:
            return set(wanted)  # read the whole queue: whatever was not in it is lost
        read += len(chunk)
        start -= _SCAN_CHUNK
    return set()  # too long to read to the end: a backlog, nothing is declared lost


def _held(client: redis.Redis, since: float) -> set[str]:
    """Ids of the messages a worker took off the queue after ``since`` and has not acknowledged.

    An older entry of the ``unacked`` hash is an orphan: kombu puts a message back only when the
    consumer that took it closes cleanly, or after the visibility timeout (an hour by default).
    A consumer whose connection to Redis was lost (an outage, a partition) leaves its messages
    there, and the steps they carry would wait that hour. The candidates are steps due for longer
    than the stale limit and still not started, so a live worker holding them is rare (its pool was
    full all that time); sending one again then costs a message, whose older copy the claim refuses.
    """
    entries = client.hgetall("unacked")
    if not entries:
        return set()
    tags = list(entries)
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.zscore("unacked_index", tag)  # one round trip; ZMSCORE would need Redis 6.2
    taken_at = pipe.execute()
    held: set[str] = set()
    for tag, at in zip(tags, taken_at, strict=True):
        if at is None or at >= since:  # no index entry: kombu is between its two writes
            held.update(found.decode() for found in _ID.findall(_bytes(entries[tag])))
    return held


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
