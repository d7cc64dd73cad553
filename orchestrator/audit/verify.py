"""Walking the chain: the first record that was changed, removed or inserted.

The chain is read in pages of ``DEFAULT_AUDIT_CHUNK`` records, one short transaction each, so a
long trail is never held in memory and writers are not held back while it is walked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.audit.chain import GENESIS, HMAC_SHA256, SHA256, audit_key, digest
from orchestrator.settings import DEFAULT_AUDIT_CHUNK
from orchestrator.store import Repository


@dataclass
class Verified:
    """What ``verify`` found: ``bad_seq`` and ``problem`` are set when the chain is broken;
    ``needs_key`` when it cannot be checked without ``ORCHESTRATOR_AUDIT_KEY``."""

    records: int = 0
    head_seq: int | None = None
    head_hash: str | None = None
    bad_seq: int | None = None
    problem: str | None = None
    needs_key: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def chain(repo: Repository, chunk: int = DEFAULT_AUDIT_CHUNK) -> Iterator[dict[str, Any]]:
    """Every record in seq order, a page per transaction."""
    after = 0
    while True:
        with repo.transaction() as tx:
            page = tx.audit_chain(after, chunk)
        yield from page
        if len(page) < chunk:
            return
        after = int(page[-1]["seq"])


def verify(repo: Repository, key: bytes | None = None, chunk: int = DEFAULT_AUDIT_CHUNK) -> Verified:
    """Check every record's seq, previous hash, mode and hash, oldest first; stop at the first
    that does not hold. ``key``: default ``ORCHESTRATOR_AUDIT_KEY``."""
    key = key if key is not None else audit_key()
    found = Verified()
    expected, prev, before = 1, GENESIS, GENESIS
    for row in chain(repo, chunk):
        problem = _problem(row, expected, (prev, before), key)
        if problem is not None:
            found.bad_seq, found.problem = problem[0], problem[1]
            found.needs_key = problem[2]
            return found
        found.records += 1
        found.head_seq, found.head_hash = int(row["seq"]), str(row["hash"])
        expected, prev, before = int(row["seq"]) + 1, str(row["hash"]), prev
    return found


def _problem(
    row: dict[str, Any], expected: int, hashes: tuple[str, str], key: bytes | None
) -> tuple[int, str, bool] | None:
    """(the seq to name, the one-line message, whether it is the key that is missing), or None.
    ``hashes``: the previous record's hash and the one before it."""
    seq, (prev, before) = int(row["seq"]), hashes
    if seq != expected:
        gone = f"record {expected}" if seq == expected + 1 else f"records {expected} to {seq - 1}"
        return expected, f"{gone} removed: the chain goes from record {expected - 1} to record {seq}", False
    if row["prev_hash"] != prev and seq >= 2 and row["prev_hash"] == before:
        return seq - 1, f"record {seq - 1} was inserted: record {seq} follows record {seq - 2}", False
    if row["prev_hash"] != prev:
        return seq, f"record {seq} does not follow record {seq - 1}: a record was removed or inserted before it", False
    if row["mode"] == HMAC_SHA256 and key is None:
        return seq, f"record {seq} is an HMAC: set ORCHESTRATOR_AUDIT_KEY to verify the chain", True
    if row["mode"] == SHA256 and key is not None:
        return (
            seq,
            f"record {seq} is not an HMAC although ORCHESTRATOR_AUDIT_KEY is set: written without the key",
            False,
        )
    if row["mode"] not in (SHA256, HMAC_SHA256):
        return seq, f"record {seq} has an unknown mode {row['mode']!r}", False
    if digest(prev, row, key if row["mode"] == HMAC_SHA256 else None) != row["hash"]:
        return seq, f"record {seq} was changed or inserted: its hash does not match its content", False
    return None
