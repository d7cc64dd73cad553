"""``orchestrator validate`` and ``schema`` as a user runs them: a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.e2e
EXAMPLES = sorted(str(p) for p in Path("config/examples").glob("*.yaml"))


def orchestrator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=60)


def test_validate_accepts_the_examples() -> None:
    result = orchestrator("validate", *EXAMPLES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid (") == len(EXAMPLES) == 6


def test_validate_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsteps:\n  a: {task: m:f, needs: [c]}\n  b: {task: m:f, needs: [a]}\n"
        "  c: {task: m:f, needs: [b]}\n  d: {task: m:f, needs: [nope], breaker: x}\n"
    )
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: typo\nsteps:\n  a: {task: m:f, tiemout: 5s}\n")
    result = orchestrator("validate", str(bad), str(typo), *EXAMPLES)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert f"{bad}:3: step 'a': cycle: a -> b -> c -> a" in lines
    assert f"{bad}:6: step 'd': needs unknown step 'nope'" in lines
    assert any(line.startswith(f"{bad}:6: step 'd': unknown breaker 'x'") for line in lines)
    assert f"{typo}:3: step 'a': unknown key 'tiemout'; did you mean 'timeout'?" in lines
    assert "Traceback" not in result.stderr
    assert result.stdout.count(": valid (") == len(EXAMPLES)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01\xff", b"name: x\nsteps: [", b"!!python/object/apply:os.system ['true']"],
    ids=["empty", "binary", "malformed", "python-tag"],
)
def test_validate_bad_files_one_line_exit_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(content)
    result = orchestrator("validate", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(str(path))


def test_validate_json_output() -> None:
    result = orchestrator("validate", "--json", EXAMPLES[0])
    report = json.loads(result.stdout)
    assert report["files"][0]["valid"] is True
    assert report["problems"] == []


def test_schema_validates_the_examples_and_rejects_typos() -> None:
    result = orchestrator("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    for example in EXAMPLES:
        jsonschema.validate(yaml.safe_load(Path(example).read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "steps": {"a": {"task": "m:f", "neds": []}}}, schema)


def test_help_lists_commands() -> None:
    result = orchestrator("--help")
    assert result.returncode == 0
    assert "validate" in result.stdout and "schema" in result.stdout
