from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.store import Repository
from orchestrator.store.database import dispose_engines
from orchestrator.store.migrate import upgrade
from tests.unit.harness import Ledger


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    """A migrated SQLite state store of this test's own."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    yield Repository.from_url(url)
    dispose_engines(url)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def engine(repo: Repository, ledger: Ledger) -> Engine:
    """An engine on this test's store whose step functions write the ledger, with a recording transport."""
    return Engine.create(repo, Recorder(), ledger.resolve, timing=Timing(countdown_limit=60), renew_leases=False)


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a workflow file into a temporary folder and return its path."""

    def _write(text: str, name: str = "wf.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write
