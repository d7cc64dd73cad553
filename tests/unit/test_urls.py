"""URLs in messages: shown without their password, however malformed."""

from __future__ import annotations

import pytest

from orchestrator.errors import UsageError
from orchestrator.store.database import redact
from orchestrator.urls import check_url, redact_url, scrub

PW = "Sup3rS3cretPassw0rd"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql+psycopg://alice:{PW}@db:5432/orders", "postgresql+psycopg://alice:***@db:5432/orders"),
        (f"postgresql://alice:Sup3r@{PW}@db/orders", "postgresql://***@db/orders"),
        (f"postgresql://alice:Sup3r:{PW}@db/orders", "postgresql://alice:***@db/orders"),
        (f"postgresql://alice:Sup3r/{PW}@db/orders", "postgresql://alice:***@db/orders"),
        (f"postgresql://alice@db/orders?password={PW}", "postgresql://alice@db/orders?..."),
        (f"alice:{PW}@db/orders", "<not a URL>"),
        (f"redis://:{PW}@cache:6379/0", "redis://:***@cache:6379/0"),
        (f"postgresql+psycopg://u:Sup3r?{PW}@db.internal:5432/app", "postgresql+psycopg://u:***@db.internal:5432/app"),
        (f"postgresql://u:Sup3r#{PW}@db/app?sslmode=require", "postgresql://u:***@db/app?..."),
        (f"postgresql://alice:123/{PW}@db/orders", "postgresql://alice:***@db/orders"),
        (f"postgresql://alice:a/{PW}@b@db/orders", "postgresql://***"),
        ("sqlite:///var/lib/a@b.db", "sqlite:///var/lib/a@b.db"),
        ("memory://", "memory://"),
    ],
)
def test_the_password_is_never_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown == redact(url)


def test_a_driver_message_loses_the_pieces_of_a_misread_password() -> None:
    url = f"postgresql://alice:Sup3r@{PW}@db/orders"
    message = f'could not translate host name "{PW}@db" to address'
    assert PW not in scrub(message, url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"alice:{PW}@db/orders", "needs scheme://"),
        (f"postgresql://alice:Sup3r@{PW}@db/orders", "unencoded '@'"),
        (f"postgresql://alice:{PW}@db:port/orders", "port that is not a number"),
        (f"postgresql://alice:a/{PW}@b@db/orders", "host that cannot be read"),
    ],
)
def test_a_url_every_parser_misreads_is_refused_without_its_password(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as caught:
        check_url("ORCHESTRATOR_DATABASE_URL", url, "postgresql+psycopg://user@host/db")
    assert PW not in caught.value.message and "Sup3r" not in caught.value.message


def test_a_password_holding_a_query_mark_is_accepted_and_never_shown() -> None:
    # Given a password with '?' (SQLAlchemy reads it whole), and a driver message quoting it
    url = f"postgresql+psycopg://u:Sup3r?{PW}@db.internal:5432/app"
    # Then the URL is accepted, and nothing of the password is shown
    check_url("ORCHESTRATOR_DATABASE_URL", url, "")
    assert PW not in scrub(f"password authentication failed: Sup3r?{PW}", url)


@pytest.mark.parametrize("url", ["postgresql://db:5432,db2:5433/x", "postgresql://[::1]:5432/x", "redis://h/0"])
def test_good_urls_pass(url: str) -> None:
    check_url("ORCHESTRATOR_DATABASE_URL", url, "")
