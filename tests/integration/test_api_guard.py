"""Cross-site writes and DNS rebinding: writes must be JSON and same-origin; with no token
configured only a loopback Host is served (docs/http-api.md, Auth)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.guard import hostname, same_origin
from orchestrator.api.tokens import parse_tokens
from orchestrator.settings import get_settings
from orchestrator.store import Repository
from orchestrator.store.migrate import upgrade

EVIL = "https://evil.example"
FORM = "application/x-www-form-urlencoded"


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokens: str) -> Any:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", url)
    monkeypatch.delenv("ORCHESTRATOR_BROKER_URL", raising=False)
    get_settings.cache_clear()
    upgrade(url)
    return create_app(Repository.from_url(url), list, parse_tokens(tokens), 0.0)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """No token configured (the local default), reached as http://127.0.0.1:8080."""
    yield TestClient(_app(tmp_path, monkeypatch, ""), base_url="http://127.0.0.1:8080", raise_server_exceptions=False)
    get_settings.cache_clear()


@pytest.fixture
def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """Tokens configured, reached under a public name."""
    app = _app(tmp_path, monkeypatch, "ada:admin:tok-admin")
    admin = {"Authorization": "Bearer tok-admin"}
    client = TestClient(app, base_url="https://orch.example.com", headers=admin, raise_server_exceptions=False)
    yield client
    get_settings.cache_clear()


def _error(answer: Any, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    body = answer.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    return str(body["error"])


@pytest.mark.parametrize(
    ("content_type", "body", "path"),
    [
        (FORM, "", "/api/v1/cache/clear"),
        (FORM, "x=1", "/api/v1/cache/clear"),
        ("text/plain", '{"workflow": "w"}', "/api/v1/runs"),
        ("multipart/form-data; boundary=x", "", "/api/v1/cache/clear"),
    ],
)
def test_what_a_cross_site_form_can_send_is_refused(local: TestClient, content_type: str, body: str, path: str) -> None:
    # A "simple" request (no preflight): with the evil page's Origin, and without any Origin
    cross = local.post(path, content=body, headers={"content-type": content_type, "origin": EVIL})
    _error(cross, 403)
    plain = local.post(path, content=body, headers={"content-type": content_type})
    assert "Content-Type: application/json" in _error(plain, 415)


def test_a_write_with_no_content_type_is_415_even_with_no_body(local: TestClient) -> None:
    _error(local.post("/api/v1/cache/clear"), 415)
    _error(local.delete("/api/v1/runs"), 415)


def test_a_json_write_from_another_origin_is_refused(local: TestClient) -> None:
    json_ct = {"content-type": "application/json"}
    for origin in (EVIL, "null", "http://127.0.0.1:9999", "https://127.0.0.1:8080", "http://localhost:8080"):
        _error(local.post("/api/v1/cache/clear", headers={**json_ct, "origin": origin}), 403)


def test_the_uis_own_writes_pass(local: TestClient) -> None:
    # What a browser sends for a same-origin fetch from the page at http://127.0.0.1:8080/
    same = {"content-type": "application/json", "origin": "http://127.0.0.1:8080"}
    assert local.post("/api/v1/cache/clear", headers=same).json() == {"cleared": 0}
    assert local.post("/api/v1/cache/clear", json={}, headers=same).status_code == 200
    with_charset = {"content-type": "Application/JSON; charset=utf-8"}
    assert local.post("/api/v1/cache/clear", headers=with_charset).status_code == 200
    # a GET from elsewhere is no write: the browser does not let the page read the answer
    assert local.get("/api/v1/runs", headers={"origin": EVIL}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "10.0.0.5:8080"])
@pytest.mark.parametrize("path", ["/", "/static/js/api.js", "/api/v1/runs", "/api/v1/me", "/metrics"])
def test_with_no_token_a_foreign_host_is_refused_everywhere(local: TestClient, host: str, path: str) -> None:
    _error(local.get(path, headers={"host": host}), 403)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:1234", "[::1]", "[::1]:8080"])
def test_with_no_token_a_loopback_host_is_served(local: TestClient, host: str) -> None:
    assert local.get("/", headers={"host": host}).status_code == 200
    assert local.get("/api/v1/me", headers={"host": host}).status_code == 200


def test_with_tokens_any_host_is_served_but_writes_stay_guarded(guarded: TestClient) -> None:
    assert guarded.get("/api/v1/me").json()["role"] == "admin"
    same = {"content-type": "application/json", "origin": "https://orch.example.com"}
    assert guarded.post("/api/v1/cache/clear", headers=same).status_code == 200
    with_port = {**same, "origin": "https://orch.example.com:443"}
    assert guarded.post("/api/v1/cache/clear", headers=with_port).status_code == 200
    _error(guarded.post("/api/v1/cache/clear", headers={**same, "origin": EVIL}), 403)
    _error(guarded.post("/api/v1/cache/clear", headers={"content-type": "text/plain"}), 415)


def test_host_and_origin_parsing() -> None:
    assert [hostname(h) for h in ("127.0.0.1:80", "[::1]:8080", "[::1]", "LocalHost", "[::1]x")] == [
        "127.0.0.1",
        "::1",
        "::1",
        "localhost",
        "",
    ]
    assert same_origin("http://127.0.0.1:8080", "http", "127.0.0.1:8080")
    assert same_origin("http://localhost", "http", "localhost:80")
    assert not same_origin("http://127.0.0.1:8080/", "http", "127.0.0.1:8080")
    assert not same_origin("http://127.0.0.1:8080", "http", None)
