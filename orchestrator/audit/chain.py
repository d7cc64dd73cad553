"""The chain: each audit record's hash covers the previous record's hash and its own canonical
JSON, so changing, removing or inserting a record breaks every hash after it.

``hash = SHA-256(prev_hash + canonical JSON of the record)``, or an HMAC-SHA256 keyed by
``ORCHESTRATOR_AUDIT_KEY`` when it is set: then someone who can write to the database but lacks
the key cannot rebuild a chain that verifies. The record's ``mode`` says which was used, and is
hashed with it. Appends are serialised (``Tx.lock_audit``) so ``seq`` is gap-free and the chain
never forks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from orchestrator.settings import get_settings
from orchestrator.store import Tx

GENESIS = "0" * 64  # the previous hash of the first record
SHA256 = "sha256"
HMAC_SHA256 = "hmac-sha256"
HASHED = ("seq", "at", "actor", "action", "target", "reason", "detail", "mode")
_TARGET_CHARS = 400


class Actor(Protocol):
    """Who acts and why (``orchestrator.runtime.operations.Who``)."""

    @property
    def by(self) -> str: ...

    @property
    def reason(self) -> str | None: ...


def canonical(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as it is: one text for one value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stamp(at: datetime | None = None) -> str:
    """The one time format of the trail: UTC, microseconds, ``Z``; sorts as it happened."""
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def digest(prev_hash: str, record: dict[str, Any], key: bytes | None) -> str:
    """The hash of ``record`` (its hashed fields, as stored) after ``prev_hash``."""
    data = (prev_hash + canonical({name: record[name] for name in HASHED})).encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def audit_key() -> bytes | None:
    key = get_settings().audit_key
    return key.encode() if key else None


def record(tx: Tx, who: Actor, action: str, target: str, detail: dict[str, Any] | None = None) -> int:
    """Append one record inside ``tx``, the transaction of the change it records: both commit or
    neither does. Call it last in the transaction, after every run lock was taken: the append
    lock is held until commit, and taken after the others it cannot deadlock with them.
    Returns the record's seq."""
    key = audit_key()
    tx.lock_audit()
    row = _chained(tx.audit_head(), who, action, target, detail, key)
    tx.append_audit(row)
    return int(row["seq"])


def record_many(tx: Tx, who: Actor, action: str, targets: Sequence[tuple[str, dict[str, Any] | None]]) -> list[int]:
    """Append one record per ``(target, detail)``, in order, as ``record`` would one after the
    other (the same records, seqs and hashes), with one lock, one head read and one insert: a
    batch of changes (a ``dlq replay --all`` batch) costs three round trips, not three per record."""
    if not targets:
        return []
    key = audit_key()
    tx.lock_audit()
    head = tx.audit_head()
    rows = []
    for target, detail in targets:
        row = _chained(head, who, action, target, detail, key)
        rows.append(row)
        head = (int(row["seq"]), str(row["hash"]))
    tx.append_audits(rows)
    return [int(row["seq"]) for row in rows]


def _chained(
    head: tuple[int, str] | None,
    who: Actor,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
    key: bytes | None,
) -> dict[str, Any]:
    """The record appended after ``head`` (seq and hash of the newest record, None for the first)."""
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    row: dict[str, Any] = {
        "seq": seq,
        "at": stamp(),
        "actor": who.by,
        "action": action,
        "target": target[:_TARGET_CHARS],
        "reason": who.reason,
        "detail": None if detail is None else canonical(detail),
        "mode": SHA256 if key is None else HMAC_SHA256,
        "prev_hash": prev,
    }
    row["hash"] = digest(prev, row, key)
    return row
