"""ORCHESTRATOR_* variables that do not parse are usage errors naming the variable, not tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.errors import UsageError
from orchestrator.settings import get_settings


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ORCHESTRATOR_LOCAL_STEPS", "abc", "valid integer"),
        ("ORCHESTRATOR_LOCAL_BUDGET_S", "-1", "greater than or equal to 0"),
        ("ORCHESTRATOR_POISON_LIMIT", "x", "valid integer"),
    ],
)
def test_a_variable_that_does_not_parse_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(UsageError) as caught:
            get_settings()
    finally:
        monkeypatch.delenv(name)
        get_settings.cache_clear()
    assert caught.value.message.startswith(f"{name}: ") and says in caught.value.message


def test_the_cli_exits_2_with_one_line(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"ORCHESTRATOR_LOCAL_STEPS": "many", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "runs"], env=env, cwd=str(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: ORCHESTRATOR_LOCAL_STEPS: Input should be a valid integer, unable to parse string as an integer "
        "(got 'many')"
    ]
