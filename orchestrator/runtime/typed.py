"""Typed artifacts at a step's boundary: data checked against a JSON Schema or a pydantic model,
and a ``module:function`` checked against its own annotations.

Every violation is a ``ValidationError`` (never retried) that names the rule, the JSON path and a
short excerpt of the bad value, so the error and the dead-letter entry say what to fix.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from orchestrator.definition.allowlist import Allowlist
from orchestrator.errors import ValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")

EXCERPT_CHARS = 80


def check(schema: dict[str, Any] | str, data: Any, rule: str) -> Any:
    """``data`` as ``schema`` accepts it (a model's JSON form for a model), or ValidationError."""
    if isinstance(schema, dict):
        validator = _validator(json.dumps(schema, sort_keys=True))
        try:
            error = best_match(validator.iter_errors(data))
        except Unresolvable as exc:
            raise ValidationError(f"{rule}: the schema's $ref cannot be resolved: {_short(str(exc))}") from None
        except RecursionError:
            raise ValidationError(f"{rule}: the data is nested too deeply to check") from None
        if error is not None:
            where = json_path(error.absolute_path)
            raise ValidationError(f"{rule} at {where}: {_short(error.message)} (got {excerpt(error.instance)})")
        return data
    model = resolve_model(schema, rule)
    try:
        return model.model_validate(data).model_dump(mode="json")
    except pydantic.ValidationError as exc:
        raise ValidationError(f"{rule} ({schema}) {_first(exc)}") from None
    except RecursionError:
        raise ValidationError(f"{rule} ({schema}): the data is nested too deeply to check") from None


@functools.lru_cache(maxsize=512)
def _validator(schema_text: str) -> Any:
    """A validator that resolves only references inside the schema: no $ref reaches the network."""
    schema = json.loads(schema_text)
    return validator_for(schema, default=Draft202012Validator)(schema, registry=Registry())


_MODELS: dict[str, type[pydantic.BaseModel]] = {}


def resolve_model(ref: str, rule: str) -> type[pydantic.BaseModel]:
    """``module:Model``, imported once it imports (a failure is not remembered: the next attempt,
    after a deploy, may find it)."""
    found = _MODELS.get(ref)
    if found is not None:
        return found
    module_name, _, attr = ref.partition(":")
    refusal = Allowlist.current().module_refusal(f"{rule} '{ref}'", module_name, attr)
    if refusal is not None:
        raise ModelNotAllowed(refusal)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # a user's module may fail in any way; the step says how
        raise ModelNotImportable(f"{rule}: cannot import '{module_name}': {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not (isinstance(target, type) and issubclass(target, pydantic.BaseModel)):
        raise ValidationError(f"{rule}: '{ref}' is not a pydantic model")
    _MODELS[ref] = target
    return target


class ModelNotImportable(ValidationError):
    """The schema's model cannot be imported on this worker (retried: a deploy may bring it)."""

    retryable = True


class ModelNotAllowed(ModelNotImportable):
    """The schema's model is in a module this process may not import (ORCHESTRATOR_TASK_MODULES).
    A worker fails the attempt for good, as its settings will not change under it; ``accept``, whose
    settings may differ from the workers', skips the check as for a model it cannot import."""

    retryable = False


@dataclass(frozen=True)
class Signature:
    """A function's annotated parameters and return value, as pydantic adapters built once."""

    parameters: dict[str, pydantic.TypeAdapter[Any]]
    returns: pydantic.TypeAdapter[Any] | None
    names: dict[str, str]  # parameter (or "return") -> the annotation as written, for errors

    def inputs(self, data: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments as the function's annotations have them: a value an annotation
        accepts as it is reaches the function unchanged (``2`` for a ``float``); one it converts
        (a model from a JSON object, a datetime from a string) reaches it converted."""
        if not self.parameters:
            return data
        converted = dict(data)
        for name, adapter in self.parameters.items():
            if name in data:
                try:
                    converted[name] = _unchanged_if_equal(data[name], adapter.validate_python(data[name]))
                except pydantic.ValidationError as exc:
                    rule = f"parameter '{name}' ({self.names[name]})"
                    raise ValidationError(f"{rule} {_first(exc, ('$', name))}") from None
        return converted

    def output(self, value: Any) -> Any:
        """The return value checked against its annotation, as JSON data: the value itself when
        the annotation accepts it as it is, else the value as the annotation converts it."""
        if self.returns is None:
            return to_data(value)
        try:
            valid = self.returns.validate_python(value)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"return value ({self.names['return']}) {_first(exc)}") from None
        if _unchanged_if_equal(value, valid) is value:
            return to_data(value)
        return self.returns.dump_python(valid, mode="json")


def _unchanged_if_equal(raw: Any, valid: Any) -> Any:
    try:
        return raw if valid is raw or bool(valid == raw) else valid
    except Exception:  # a user's __eq__ may raise: the converted value it is
        return valid


_UNCHECKED = (Any, inspect.Parameter.empty, object)


def _checked(hint: Any) -> bool:
    return not any(hint is unchecked for unchecked in _UNCHECKED)


def per_function(compute: Callable[[Callable[..., Any]], T]) -> Callable[[Callable[..., Any]], T]:
    """``compute`` done once per step function (an unhashable callable: each time)."""
    cached = functools.lru_cache(maxsize=1024)(compute)

    def lookup(function: Callable[..., Any]) -> T:
        try:
            return cached(function)
        except TypeError:  # unhashable
            return compute(function)

    return functools.wraps(compute)(lookup)


@per_function
def signature_of(function: Callable[..., Any]) -> Signature:
    """Built once per function; annotations that cannot be resolved are not checked (logged)."""
    try:
        hints = typing.get_type_hints(function)
        parameters = inspect.signature(function).parameters
    except Exception as exc:  # forward references the module cannot resolve, builtins, C functions
        log.warning("the annotations of %r are not checked: %s", function, exc)
        return Signature({}, None, {})
    adapters: dict[str, pydantic.TypeAdapter[Any]] = {}
    names: dict[str, str] = {}
    for name, parameter in parameters.items():
        hint = hints.get(name, inspect.Parameter.empty)
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or not _checked(hint):
            continue
        adapter = _adapter(function, name, hint)
        if adapter is not None:
            adapters[name], names[name] = adapter, _name(hint)
    returns = hints.get("return", Any)
    checked_return = _adapter(function, "return", returns) if _checked(returns) else None
    if checked_return is not None:
        names["return"] = _name(returns)
    return Signature(adapters, checked_return, names)


def _adapter(function: Callable[..., Any], name: str, hint: Any) -> pydantic.TypeAdapter[Any] | None:
    """An adapter for one annotation; None (not checked, logged) for a type pydantic cannot check,
    such as a client class or an iterator: the function runs as it did before annotations were checked."""
    try:
        return pydantic.TypeAdapter(hint)
    except Exception as exc:  # PydanticSchemaGenerationError, and whatever a user's type raises
        log.warning("%s of %r is not checked: %s", name, function, str(exc).splitlines()[0] if str(exc) else exc)
        return None


def to_data(value: Any) -> Any:
    """A pydantic model (or a container of them) as its JSON form; other values as they are."""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple) and any(isinstance(v, pydantic.BaseModel) for v in value):
        return [to_data(v) for v in value]
    if isinstance(value, dict) and any(isinstance(v, pydantic.BaseModel) for v in value.values()):
        return {k: to_data(v) for k, v in value.items()}
    return value


def json_path(parts: Iterable[Any], root: tuple[Any, ...] = ("$",)) -> str:
    """``('items', 0, 'price')`` -> ``$.items[0].price``."""
    text = ""
    for part in (*root, *parts):
        if part == "$" and not text:
            text = "$"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}"
    return text


def excerpt(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


def _first(exc: pydantic.ValidationError, root: tuple[Any, ...] = ("$",)) -> str:
    error = exc.errors(include_url=False)[0]
    where = json_path(error.get("loc", ()), root)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"at {where}: {_short(error['msg'])} (got {excerpt(error.get('input'))}){more}"


def _short(message: str) -> str:
    return message if len(message) <= 200 else message[:197] + "..."


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


__all__ = [
    "ModelNotAllowed",
    "ModelNotImportable",
    "Signature",
    "check",
    "excerpt",
    "json_path",
    "resolve_model",
    "signature_of",
    "to_data",
]
