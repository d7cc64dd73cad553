"""The Redis transport's repair (orchestrator/worker/broker.py), on the exact sequence Celery's
consumer goes through when the broker connection is lost while a message is unacknowledged."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection, Exchange, Queue

from orchestrator.worker.broker import TRANSPORT

pytestmark = pytest.mark.integration


def _unacked_then_collected(redis_url: str, transport: str) -> Connection:
    """A connection holding one unacknowledged message, left as ``Connection.collect()`` leaves it
    when closing its channel failed part-way: the transport detached, the channel still open."""
    connection = Connection(redis_url, transport=transport)
    queue = Queue("drill", Exchange("drill", "direct"), "drill", channel=connection.default_channel)
    queue.declare()
    connection.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key="drill", declare=[queue])
    assert queue.get(no_ack=False) is not None
    connection._do_close_transport()
    return connection


def test_closing_after_the_transport_was_detached_keeps_the_message(redis_url: str) -> None:
    connection = _unacked_then_collected(redis_url, TRANSPORT)
    connection.close()  # kombu's own transport raises AttributeError here (below)
    # The message was not requeued by the close, and not lost: it waits in the unacked hash for
    # the visibility timeout
    assert redis.Redis.from_url(redis_url).hlen("unacked") == 1


def test_kombus_own_transport_still_fails_there(redis_url: str) -> None:
    """When this fails, kombu has fixed its close path and orchestrator/worker/broker.py can go."""
    connection = _unacked_then_collected(redis_url, "redis")
    with pytest.raises(AttributeError, match="hostname"):
        connection.close()
