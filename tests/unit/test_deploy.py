"""The Docker image and docker-compose.yml, read as files (no Docker here): the processes run as a
user that is not root, no password is written in the file, and no port is published unless asked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def instructions() -> list[tuple[str, str]]:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    return [(w[0].upper(), w[1].strip()) for w in (line.split(None, 1) for line in lines) if w and w[0][0] != "#"]


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, applied to every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise LookupError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return _VARIABLE.sub(one, value)


def services(env: dict[str, str], profiles: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The services compose would start, with the environment ``env``."""
    found = interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"], env)
    return {name: s for name, s in found.items() if not set(s.get("profiles", ())) - set(profiles)}


def test_the_image_runs_as_a_user_that_is_not_root_and_cannot_change_the_code() -> None:
    steps = instructions()
    users = [arg for op, arg in steps if op == "USER"]
    assert users, "the Dockerfile sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (op, _) in enumerate(steps) if op == "USER")
    assert all(op not in ("RUN", "COPY", "ADD") for op, _ in steps[last_user:])
    assert not any("--chown" in arg for op, arg in steps if op in ("COPY", "ADD"))


def test_compose_takes_the_database_password_from_the_environment() -> None:
    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        services({})
    started = services({"POSTGRES_PASSWORD": "s3cret-from-env"})
    assert started["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret-from-env"
    for name in ("worker", "beat", "migrate"):
        assert make_url(started[name]["environment"]["ORCHESTRATOR_DATABASE_URL"]).password == "s3cret-from-env"


def test_no_password_is_written_in_the_file() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in raw["services"].items():
        for key, value in dict(service.get("environment") or {}).items():
            if "PASSWORD" in key or "AUTH" in key:
                reference = _VARIABLE.fullmatch(str(value))
                assert reference is not None, (name, key)  # the value is the environment's, whole
                assert reference.group(2) == "?" or not reference.group(3), (name, key)  # no default secret
    url = make_url(_VARIABLE.sub("X", raw["x-environment"]["ORCHESTRATOR_DATABASE_URL"]))
    assert (url.username, url.password) == ("orchestrator", "X")


def test_no_port_is_published_unless_asked_for() -> None:
    env = {"POSTGRES_PASSWORD": "p"}
    assert {name: s["ports"] for name, s in services(env).items() if s.get("ports")} == {}
    assert "flower" not in services(env)
    flower = services(env, ("flower",))["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert services({**env, "FLOWER_PORT": "8555"}, ("flower",))["flower"]["ports"] == ["8555:5555"]
