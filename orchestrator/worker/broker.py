"""kombu's Redis transport with one repair, so that a worker survives a broker outage.

Measured with celery 5.7.0, kombu 5.7.0, redis-py 8.2.0 (tests/chaos/test_broker.py): when the
connection to Redis is lost while a message is unacknowledged, Celery's consumer first calls
``Connection.collect()``. Closing the default channel there can fail part-way (its BRPOP read
raises a connection error, which kombu ignores), leaving the channel open; ``collect()`` then
detaches the transport from its connection (``transport.client = None``). Celery next calls
``connection.close()``, which closes that channel again: requeueing its unacknowledged message
needs a new Redis pool, built from ``transport.client.hostname``, and the ``AttributeError``
on ``None`` is not a connection error, so Celery reports "Unrecoverable error" and the worker
exits (4 of 5 trials of a 15 s outage with gossip and heartbeats on).

The repair: a channel whose transport is detached raises a connection error instead, which
kombu's close path ignores. The message is not lost: it stays in Redis's ``unacked`` hash, where
the reconciler finds it orphaned (worker/transport.py, ``_held``) and sends its step again rather
than wait for kombu's visibility timeout; the state store's lease decides who runs the step.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

TRANSPORT = "orchestrator.worker.broker:Transport"


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection was closed; its channel cannot reconnect")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """Our transport for a Redis URL; ``None`` (kombu's choice) for any other broker."""
    return TRANSPORT if broker_url.startswith(("redis://", "rediss://")) else None
