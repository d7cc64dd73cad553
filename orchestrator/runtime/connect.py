"""Opening the state store as configured, with the checks every entry point needs."""

from __future__ import annotations

from orchestrator.settings import Settings, get_settings
from orchestrator.store import Repository
from orchestrator.store.migrate import upgrade


def open_repository(settings: Settings | None = None) -> Repository:
    """The configured store, reachable (else exit 3); an SQLite store is migrated on first use."""
    settings = settings or get_settings()
    repo = Repository.from_url(settings.database_url)
    repo.check()
    if repo.engine.dialect.name == "sqlite":
        upgrade(settings.database_url)
    return repo
