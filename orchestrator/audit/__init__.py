"""The audit trail: one record per change a person or a service made, hashed into a chain that
``verify`` walks.

Operations call ``record(tx, who, action, target, detail)`` inside the transaction of their
change (``record_many`` for a batch of changes of one action: the same records, one append).
Action names, by target:

- ``run:<id>``: ``run.submit`` (detail ``via``: cli, api, client, celery, schedule), ``run.cancel``,
  ``run.pause``, ``run.resume``, ``run.retry``, ``step.approve``, ``step.reject``, ``step.skip``,
  ``step.accept``
- ``event:<name>``: ``signal.send``, ``event.emit`` (the runs an emission started are in its detail)
- ``dlq:<entry id>``: ``dlq.replay``, ``dlq.discard``; ``dlq``: ``dlq.purge``
- ``breaker:<name>``: ``breaker.reset``
- ``workflow:<name>``: ``workflow.register``, ``workflow.activate``, ``workflow.rollback``
- ``schedule:<workflow/name>``: ``schedule.pause``, ``schedule.resume``, ``schedule.trigger``
- ``cache`` or ``cache:<workflow>[/<step>]``: ``cache.clear``
"""

from __future__ import annotations

from orchestrator.audit.chain import GENESIS, Actor, canonical, digest, record, record_many
from orchestrator.audit.trail import FORMATS, export, list_records
from orchestrator.audit.verify import Verified, verify

ACTIONS = (
    "run.submit",
    "run.cancel",
    "run.pause",
    "run.resume",
    "run.retry",
    "step.approve",
    "step.reject",
    "step.skip",
    "step.accept",
    "signal.send",
    "event.emit",
    "dlq.replay",
    "dlq.discard",
    "dlq.purge",
    "breaker.reset",
    "workflow.register",
    "workflow.activate",
    "workflow.rollback",
    "schedule.pause",
    "schedule.resume",
    "schedule.trigger",
    "cache.clear",
)

__all__ = [
    "ACTIONS",
    "FORMATS",
    "GENESIS",
    "Actor",
    "Verified",
    "canonical",
    "digest",
    "export",
    "list_records",
    "record",
    "record_many",
    "verify",
]
