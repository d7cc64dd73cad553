from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.definition import load_bytes, load_file, load_text
from orchestrator.errors import InvalidDefinition

Write = Callable[..., Path]


def problems(path: Path) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        load_file(path)
    return [str(p) for p in info.value.problems]


def test_yaml_and_json_give_the_same_model(write: Write) -> None:
    data = {"name": "same", "steps": {"a": {"task": "m:f", "with": {"x": "${{ inputs.x }}"}}}}
    from_json = load_file(write(json.dumps(data), "wf.json")).workflow
    from_yaml = load_file(write("name: same\nsteps:\n  a: {task: m:f, with: {x: '${{ inputs.x }}'}}\n")).workflow
    assert from_json == from_yaml
    assert from_json.content_hash() == from_yaml.content_hash()


def test_unknown_key_names_file_line_step_and_suggests(write: Write) -> None:
    path = write("name: t\nsteps:\n  fetch:\n    task: m:f\n    neds: [x]\n")
    assert problems(path) == [f"{path}:5: step 'fetch': unknown key 'neds'; did you mean 'needs'?"]


def test_unknown_top_level_key_and_nested_retry_key(write: Write) -> None:
    path = write("name: t\nstep: {}\nsteps:\n  a:\n    task: m:f\n    retry: {max_attemps: 2}\n")
    found = problems(path)
    assert f"{path}:2: unknown key 'step'; did you mean 'steps'?" in found
    assert f"{path}:6: step 'a': unknown key 'max_attemps'; did you mean 'max_attempts'?" in found


def test_every_structural_problem_is_reported_at_once(write: Write) -> None:
    path = write(
        "name: Bad Name\nsteps:\n  a: {task: m:f, timeout: 5 minutes}\n"
        "  b: {task: m:f, retry: {max_attempts: 0, delay: -1s}}\n  c: {needs: [a]}\n"
    )
    found = "\n".join(problems(path))
    assert "name 'Bad Name' must match [a-z0-9_.-]+" in found
    assert "step 'a': timeout: invalid duration '5 minutes'" in found
    assert "step 'b': retry.max_attempts: Input should be greater than or equal to 1" in found
    assert "step 'b': retry.delay: invalid duration '-1s'" in found
    assert "step 'c': a step does exactly one of task, workflow, wait, approval" in found


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"   \n# only a comment\n", "is empty"),
        (b"\x00\x01\x02binary", "is a binary file"),
        (b"\xff\xfe\xfa not utf8", "is not UTF-8 text"),
        (b"name: x\nsteps:\n  a: {task: m:f\n", "invalid YAML"),
        (b"- a\n- b\n", "top level is list"),
        (b"!!python/object/apply:os.system ['echo hi']\n", "is not allowed: workflow files hold plain data"),
        (b"name: x\nsteps:\n  a: !!python/name:os.system {}\n", "is not allowed"),
        (b"name: x\nsteps:\n  a: {task: m:f}\n  a: {task: m:g}\n", "duplicate key 'a' (first at line 3)"),
        (b"name: x\nsteps:\n  1: {task: m:f}\n", "step id 1 must be a string"),
        (b"name: x\nsteps:\n  Fetch: {task: m:f}\n", "step id 'Fetch' must be a string of a-z"),
        (b"name: x\nsteps: {}\n", "a workflow has steps (a DAG) or states (a state machine), one of them"),
        (b"name: x\nsteps: " + b"[" * 1000 + b"]" * 1000, "nested more than"),
    ],
)
def test_bad_files_get_one_clear_line(content: bytes, message: str) -> None:
    with pytest.raises(InvalidDefinition) as info:
        load_bytes(content, "bad.yaml")
    assert message in str(info.value)
    assert "Traceback" not in str(info.value)


def test_a_5mb_file_is_refused_before_parsing(write: Write, tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: big\nsteps:\n" + b"  # filler line to make the file large\n" * 140_000)
    assert path.stat().st_size > 5_000_000
    assert problems(path) == [f"{path}: file is 5.2 MiB; the limit is 1 MiB"]


def test_json_errors_have_lines(write: Write) -> None:
    path = write('{\n  "name": "x",\n  "steps": {\n    "a": {"task": "m:f",}\n  }\n}\n', "wf.json")
    assert problems(path)[0].startswith(f"{path}:4: invalid JSON")


def test_json_duplicate_keys_are_refused(write: Write) -> None:
    path = write('{"name": "j", "steps": {"a": {"task": "m:f"}, "a": {"task": "m:g"}}}', "wf.json")
    assert problems(path) == [f"{path}: duplicate key 'a'"]


def test_json_nested_deep_is_refused() -> None:
    with pytest.raises(InvalidDefinition, match="nested more than"):
        load_text('{"name": "x", "steps": ' + "[" * 1000 + "]" * 1000 + "}", "deep.json", "json")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such file"]
    assert "is a directory" in problems(tmp_path)[0]


def test_needs_accepts_a_single_string() -> None:
    workflow = load_text("name: x\nsteps:\n  a: {task: m:f}\n  b: {task: m:f, needs: a}\n").workflow
    assert workflow.steps["b"].needs == ("a",)


def test_durations_are_seconds() -> None:
    workflow = load_text(
        "name: x\ndefaults: {timeout: 250ms}\nsteps:\n  a: {task: m:f, timeout: 2h,"
        " retry: {delay: 30s, max_delay: 1d}}\n"
    ).workflow
    assert workflow.defaults.timeout == 0.25
    step = workflow.steps["a"]
    assert (step.timeout, step.retry.delay, step.retry.max_delay) == (7200, 30, 86400)


def test_snapshot_round_trips_to_an_equal_model() -> None:
    workflow = load_file("config/examples/foreach.yaml").workflow
    again = load_text(json.dumps(workflow.snapshot()), "snapshot.json", "json").workflow
    assert again == workflow
    assert again.content_hash() == workflow.content_hash()


def _nested_aliases(levels: int) -> str:
    lines = ["name: lol", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append(f"steps: {{s: {{task: 'm:f', with: {{v: *a{levels}}}}}}}")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_after_a_bounded_expansion(write: Write) -> None:
    # Given a file of a few hundred bytes whose aliases expand to 9**7 values (minutes to read before)
    path = write(_nested_aliases(6), "lol.yaml")
    assert path.stat().st_size < 500
    started = time.monotonic()
    with pytest.raises(InvalidDefinition, match=r"lol\.yaml:\d+: holds more than 100,000 values .* aliases"):
        load_file(path)
    assert time.monotonic() - started < 2


def test_a_few_aliases_still_load() -> None:
    text = "name: ok\nsteps:\n  b: {task: 'm:g', with: &w {x: 1}}\n  c: {task: 'm:h', with: *w}\n"
    loaded = load_text(text)
    assert loaded.workflow.steps["c"].with_ == {"x": 1}


def test_a_control_character_is_one_clear_problem() -> None:
    with pytest.raises(InvalidDefinition, match=r"ctl\.yaml: invalid YAML: unacceptable character #x0001"):
        load_bytes(b"\x01name: w\n", "ctl.yaml")


def test_deep_flow_brackets_are_refused_before_the_yaml_scanner_reads_them() -> None:
    # PyYAML's scanner is quadratic in flow depth: 5,000 brackets took seconds
    started = time.monotonic()
    with pytest.raises(InvalidDefinition, match="nested more than 64 deep"):
        load_text("name: w\nsteps: " + "[" * 100_000 + "]" * 100_000, "deep.yaml")
    assert time.monotonic() - started < 0.5
    quoted = "name: w\nsteps: {a: {task: 'm:f', with: {x: '" + "[" * 300 + "', y: \"\\\\" + "{" * 300 + '"}}}\n'
    assert load_text(quoted).workflow.steps["a"].with_["x"] == "[" * 300
