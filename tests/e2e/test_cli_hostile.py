"""Hostile data on the command line: nesting deeper than any decoder recurses, bytes that are not
UTF-8, files over ORCHESTRATOR_MAX_PAYLOAD, YAML aliases that expand without bound. Each is one
line on stderr and exit 2 (bad usage or input), never a traceback, and nothing is stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_runs import EXAMPLES, embedded

__all__ = ["embedded"]
DEEP = "[" * 10000 + "]" * 10000
LINEAR = str(EXAMPLES / "linear.yaml")


def cli(env: dict[str, str], cwd: Path, *args: str | bytes, stdin: bytes | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, cwd=cwd, capture_output=True, input=stdin, timeout=120
    )
    return done.returncode, done.stderr.decode("utf-8", "replace")


def _laughs(levels: int = 8) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nx: 1\ny: 2\n"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    found = {
        "not-utf8.yaml": b"x: 1\ny: \xff\xfe\n",
        "big.json": json.dumps({"x": 1, "y": 2, "pad": "a" * 2_000_000}).encode(),
        "laughs.yaml": _laughs().encode(),
        "deep.yaml": ("x: 1\ny: " + DEEP + "\n").encode(),
        "deep.json": DEEP.encode(),
    }
    for name, content in found.items():
        (tmp_path / name).write_bytes(content)
    return {name: tmp_path / name for name in found}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", LINEAR, "-i", "x=1", "-i", "y=" + DEEP), "error: -i y is nested more than 64 deep"),
        (("run", LINEAR, "-i", "x=1", "-i", b"y=\xff\xfe"), "error: -i y is not UTF-8 text"),
        (("run", LINEAR, "-i", "x=1", "-i", b"\xff=1"), "error: -i is not UTF-8 text"),
        (("run", LINEAR, "--inputs-file", "{not-utf8.yaml}"), "is not UTF-8 text"),
        (("run", LINEAR, "--inputs-file", "{big.json}"), "is larger than 1048576 bytes (ORCHESTRATOR_MAX_PAYLOAD)"),
        (("run", LINEAR, "--inputs-file", "{laughs.yaml}"), "the limit is 1048576 bytes (ORCHESTRATOR_MAX_PAYLOAD)"),
        (("run", LINEAR, "--inputs-file", "{deep.yaml}"), "nested"),
        (("signal", "paid", "--data", DEEP), "error: --data is nested more than 64 deep"),
        (("signal", "paid", "--data", "@{not-utf8.yaml}"), "is not UTF-8 text"),
        (("signal", "paid", "--data", "@{big.json}"), "is larger than 1048576 bytes"),
        (("signal", "paid", "--data", b'"\xff"'), "error: --data is not UTF-8 text"),
        (("emit", "paid", "--data", "@{deep.json}"), "error: --data is nested more than 64 deep"),
        (("approve", "some-run", "a-step", "--data", DEEP), "error: --data is nested more than 64 deep"),
        (("accept", "some-run", "a-step", "--output", DEEP), "error: --output is nested more than 64 deep"),
        (("run", LINEAR, "-i", "x=1", "-i", "y=2", "--dry-run", "--mock", "add=" + DEEP), "is nested more than 64"),
        (("run", LINEAR, "-i", "x=1", "-i", "y=2", "--dry-run", "--mocks", "{laughs.yaml}"), "the limit is 1048576"),
        (("run", LINEAR, "-i", "x=1", "-i", "y=2", "--dry-run", "--mocks", "{not-utf8.yaml}"), "is not UTF-8 text"),
    ],
)
def test_hostile_data_is_one_line_and_exit_2(
    embedded: dict[str, str], tmp_path: Path, files: dict[str, Path], args: tuple[str | bytes, ...], message: str
) -> None:
    # "{name}" is the path of a file above, "@{name}" the same with @ (as --data takes a file)
    resolved = [_resolved(a, files) for a in args]
    code, stderr = cli(embedded, tmp_path, *resolved)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr[-2000:]
    assert message in stderr
    assert len(stderr) < 400
    assert not (tmp_path / "orchestrator.db").exists() or _no_runs(embedded, tmp_path)


def test_standard_input_over_the_limit_is_refused(embedded: dict[str, str], tmp_path: Path) -> None:
    code, stderr = cli(embedded, tmp_path, "signal", "paid", "--data", "-", stdin=b'"' + b"a" * 2_000_000 + b'"')
    assert (code, stderr) == (2, "error: --data - (standard input) is over 1048576 bytes (ORCHESTRATOR_MAX_PAYLOAD)\n")


def _resolved(arg: str | bytes, files: dict[str, Path]) -> str | bytes:
    if isinstance(arg, bytes):
        return arg
    for name, path in files.items():
        arg = arg.replace("{" + name + "}", str(path))
    return arg


def _no_runs(env: dict[str, str], cwd: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "runs", "--json"], env=env, cwd=cwd, capture_output=True, text=True
    )
    return json.loads(done.stdout) == []


def test_a_value_within_the_limits_still_runs(embedded: dict[str, str], tmp_path: Path) -> None:
    env = {**embedded, "ORCHESTRATOR_MAX_PAYLOAD": "2MiB"}
    (tmp_path / "inputs.json").write_text(json.dumps({"x": 1, "y": 2, "note": "é" * 100}))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", LINEAR, "--inputs-file", "inputs.json", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"result": 6}
    assert os.path.exists(tmp_path / "orchestrator.db")
