"""This process's leases: a worker id issued by the database, and the steps it is running.

A process that runs steps registers once (lazily, after any fork) and renews, every third of the
lease, its heartbeat and the leases of the steps it holds, all on the database's clock. A step is
held only while its execution is under way in this process: one whose execution ended in any way,
even by a bug, is dropped, so its lease lapses and the reconciler takes it over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from orchestrator.settings import DEFAULT_LEASE_S
from orchestrator.store import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    """Who holds a claim: the database's worker id and a readable name (host:pid)."""

    id: int
    name: str


class Lease:
    """The worker identity and held steps of one process."""

    def __init__(self, repo: Repository, lease_s: float = DEFAULT_LEASE_S, renew: bool = True) -> None:
        self.repo = repo
        self.lease_s = lease_s
        self._renew = renew
        self._holder: Holder | None = None
        self._pid = os.getpid()
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> Holder:
        """This process's worker identity, registered on first use (and again after a fork)."""
        if self._holder is None or self._pid != os.getpid():
            self._reset_after_fork()
            name = f"{socket.gethostname()}:{os.getpid()}"
            with self.repo.transaction() as tx:
                self._holder = Holder(tx.register_worker(name), name)
            self._start()
        return self._holder

    def hold(self, step_run_id: int) -> None:
        with self._lock:
            self._held.add(step_run_id)

    def drop(self, step_run_id: int) -> None:
        with self._lock:
            self._held.discard(step_run_id)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def renew(self) -> None:
        """One heartbeat: extend the leases of the steps this process is running."""
        holder = self.holder()
        with self.repo.transaction() as tx:
            alive = tx.renew_leases(holder.id, self.held(), self.lease_s)
        if not alive:  # judged dead and forgotten while cut off: come back under a new id
            log.warning("worker %s (id %s) was forgotten by the state store; registering again", holder.name, holder.id)
            self._holder = None

    def stop(self) -> None:
        self._stop.set()

    def _start(self) -> None:
        if not self._renew or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="orchestrator-lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = max(0.1, self.lease_s / 3)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except Exception:  # never let the heartbeat die: leases would lapse under live steps
                log.exception("renewing leases failed; trying again in %.1fs", interval)

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._held = set()
            self._lock = threading.Lock()
            self._stop = threading.Event()
            self._thread = None
