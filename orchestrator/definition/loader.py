"""Reading workflow files: YAML (``safe_load`` semantics only) and JSON, with located errors.

Every problem names the file, the line and the step, and says what to fix; nothing here prints a
traceback for a user's mistake.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from orchestrator.definition.model import Workflow, known_keys
from orchestrator.errors import InvalidDefinition, Problem, shown
from orchestrator.settings import DEFAULT_MAX_DEFINITION_BYTES, DEFAULT_MAX_DEFINITION_NODES, DEFAULT_MAX_NESTING

Loc = tuple[Any, ...]


@dataclass
class Source:
    """Where a definition came from, and the line of each key path in it."""

    name: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest located prefix of ``loc``."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, message: str, loc: Loc = (), step: str | None = None) -> Problem:
        if step is None and len(loc) >= 2 and loc[0] in ("steps", "states") and isinstance(loc[1], str):
            step = loc[1]
        return Problem(message, self.name, self.line_of(loc), step)


@dataclass(frozen=True)
class Loaded:
    workflow: Workflow
    source: Source


def load_file(path: str | Path) -> Loaded:
    """Read, parse and model one workflow file; InvalidDefinition says everything wrong."""
    path = Path(path)
    source = Source(str(path))
    try:
        size = path.stat().st_size
        if size > DEFAULT_MAX_DEFINITION_BYTES:
            raise _invalid(source, f"file is {size / 2**20:.1f} MiB; the limit is {_limit()}")
        raw = path.read_bytes()
    except IsADirectoryError:
        raise _invalid(source, "is a directory, not a workflow file") from None
    except FileNotFoundError:
        raise _invalid(source, "no such file") from None
    except OSError as exc:
        raise _invalid(source, f"cannot read: {exc.strerror}") from None
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    return load_bytes(raw, source.name, fmt)


def load_bytes(raw: bytes, name: str = "<workflow>", fmt: str = "yaml") -> Loaded:
    source = Source(name)
    if len(raw) > DEFAULT_MAX_DEFINITION_BYTES:
        raise _invalid(source, f"file is {len(raw) / 2**20:.1f} MiB; the limit is {_limit()}")
    if b"\x00" in raw:
        raise _invalid(source, "is a binary file, not YAML or JSON")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(source, f"is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    return load_text(text, name, fmt)


def load_text(text: str, name: str = "<workflow>", fmt: str = "yaml") -> Loaded:
    source = Source(name)
    if not text.strip():
        raise _invalid(source, "is empty: a workflow needs at least a name and steps")
    data = _parse_json(text, source) if fmt == "json" else _parse_yaml(text, source)
    return Loaded(model_workflow(data, source), source)


def model_workflow(data: Any, source: Source) -> Workflow:
    """Build the model from parsed data; pydantic's errors become located, hinted problems."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "nothing"
        raise _invalid(source, f"top level is {kind}; a workflow is a mapping with name and steps")
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise InvalidDefinition(_problems(exc.errors(), source)) from None


def _problems(errors: list[ErrorDetails], source: Source) -> list[Problem]:
    problems = []
    for error in errors:
        loc = tuple(error["loc"])
        problems.append(source.problem(_message(error, loc), loc))
    return problems


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    key = loc[-1] if loc else None
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(key), known_keys(loc[:-1]), n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        return f"unknown key '{key}'{suggestion}"
    if kind == "missing":
        return f"missing required key '{key}'"
    where = _dotted(loc)
    if len(loc) >= 2 and loc[0] == "steps" and loc[-1] == "[key]":
        return f"step id {error['input']!r} must be a string of a-z, 0-9, _ and -"
    if kind == "string_pattern_mismatch" and key == "name":
        return f"name {error['input']!r} must match [a-z0-9_.-]+"
    if kind == "string_pattern_mismatch" and key == "task":
        return f"task {error['input']!r} must be 'module:function' or a Celery task name"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _dotted(loc: Loc) -> str:
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "steps":
        parts = parts[2:]
    return ".".join(str(p) for p in parts if p != "[key]")


def _limit() -> str:
    return f"{DEFAULT_MAX_DEFINITION_BYTES / 2**20:g} MiB"


def _invalid(source: Source, message: str, line: int | None = None) -> InvalidDefinition:
    return InvalidDefinition([Problem(message, source.name, line)])


def _parse_json(text: str, source: Source) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise _invalid(source, f"duplicate key '{key}'")
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise _invalid(source, f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise _invalid(source, f"nested more than {DEFAULT_MAX_NESTING} deep") from None
    _check_depth(data, source)
    source.lines.update(_json_lines(text))
    return data


def _json_lines(text: str) -> dict[Loc, int]:
    """Lines of key paths in a JSON file, read through the YAML composer (JSON is YAML)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return {}
    lines: dict[Loc, int] = {}
    if node is not None:
        for _ in _walk(node, (), lines, None):
            pass
    return lines


class _Loader(yaml.SafeLoader):
    """``safe_load`` with YAML 1.2 booleans: only true and false are booleans, so the key ``on``
    (as in GitHub Actions) is the text ``on``, not True."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


_FLOW_STARTS = frozenset("\n:-[{,?")  # what a flow collection's bracket follows (spaces aside)


def _check_flow_depth(text: str, source: Source) -> None:
    """PyYAML's scanner is quadratic in the depth of flow collections (``[[[[...``: 5,000 deep
    took seconds before its composer ran out of stack), so their depth is counted first. The count
    is an estimate (quoted scalars are skipped, a bracket in a plain one may count), hence the
    margin over the real limit."""
    if text.count("[") + text.count("{") <= 4 * DEFAULT_MAX_NESTING:
        return
    depth = 0
    last = "\n"
    quote = ""  # inside a quoted scalar: the quote that ends it
    for char in text:
        if quote:
            if char == quote and (quote == "'" or last != "\\"):  # only double quotes have escapes
                quote = ""
            last = "\0" if char == "\\" and last == "\\" else char
            continue
        if char in "'\"" and last in _FLOW_STARTS:
            quote = char
        elif char in "[{" and last in _FLOW_STARTS:
            depth += 1
            if depth > 2 * DEFAULT_MAX_NESTING:
                raise _invalid(source, f"nested more than {DEFAULT_MAX_NESTING} deep")
        elif char in "]}":
            depth = max(depth - 1, 0)
        if char not in " \t":
            last = char


def _parse_yaml(text: str, source: Source) -> Any:
    _check_flow_depth(text, source)
    try:
        loader = _Loader(text)  # reads the text's first characters already: it may refuse them
    except yaml.YAMLError as exc:
        raise _invalid(source, f"invalid YAML: {shown(str(exc).splitlines()[0], 200)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise _invalid(source, "is empty: a workflow needs at least a name and steps")
        duplicates = list(_walk(node, (), source.lines, source))
        if duplicates:
            raise InvalidDefinition(duplicates)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_problem(exc, source) from None
    except yaml.YAMLError as exc:
        raise _invalid(source, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise _invalid(source, f"nested more than {DEFAULT_MAX_NESTING} deep") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError, source: Source) -> InvalidDefinition:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    problem = exc.problem or "invalid YAML"
    if "could not determine a constructor" in problem or "!!python" in str(exc):
        tag = problem.split("tag '", 1)[-1].rstrip("'")
        problem = f"the tag {tag} is not allowed: workflow files hold plain data only"
    return _invalid(source, f"invalid YAML: {problem}", line)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: Source | None) -> Iterator[Problem]:
    """Record the line of every key path; yield a problem per duplicate key; cap the depth, and
    the number of values after anchors and aliases are expanded (each alias is walked again, so a
    few hundred bytes of nested aliases would otherwise take minutes here and in the model)."""
    stack: list[tuple[yaml.Node, Loc]] = [(node, loc)]
    walked = 0
    while stack:
        current, path = stack.pop()
        walked += 1
        if walked > DEFAULT_MAX_DEFINITION_NODES:
            if source is None:  # only reading the lines of a JSON file (which has no aliases): enough
                return
            raise _too_many_nodes(source, current)
        if len(path) > DEFAULT_MAX_NESTING and source is not None:
            raise _invalid(source, f"nested more than {DEFAULT_MAX_NESTING} deep", current.start_mark.line + 1)
        lines.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                line = key_node.start_mark.line + 1
                if key in seen and source is not None:
                    yield Problem(
                        f"duplicate key '{key}' (first at line {seen[key]})",
                        source.name,
                        line,
                        path[1] if len(path) >= 2 and path[0] == "steps" else None,
                    )
                seen.setdefault(key, line)
                lines[path + (key,)] = line
                stack.append((value_node, path + (key,)))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                stack.append((item, path + (index,)))


def _too_many_nodes(source: Source, node: yaml.Node) -> InvalidDefinition:
    message = (
        f"holds more than {DEFAULT_MAX_DEFINITION_NODES:,} values once its anchors and aliases are expanded:"
        " use fewer aliases (or write the values out)"
    )
    return _invalid(source, message, node.start_mark.line + 1)


def _check_depth(data: Any, source: Source) -> None:
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > DEFAULT_MAX_NESTING:
            raise _invalid(source, f"nested more than {DEFAULT_MAX_NESTING} deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
