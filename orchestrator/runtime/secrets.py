"""Secrets for ``${{ secrets.NAME }}``: looked up on the worker when the step is called, and only there.

A step's ``with`` is rendered twice. When the step starts, ``secrets.NAME`` renders as the text
``${{ secrets.NAME }}`` (``REFERENCES``), so the stored inputs, events, dead letters and cache keys
hold the reference and never the value; a new value is used from the next call on, and a cached
output is not invalidated by one. When the function is called, the ``with`` is rendered again with
the values (``Lookup``), and those inputs go to the function alone. Rendering again, rather than
replacing the reference text in the stored inputs, matters: a run's input or an upstream output
that happens to contain ``${{ secrets.X }}`` stays that text and never turns into a secret.

Values come from, in order:
1. the environment variable ``ORCHESTRATOR_SECRETS_<NAME>`` (note the S: no setting starts with
   ``SECRETS_``, and ``ORCHESTRATOR_SECRET_KEY`` cannot be read as a secret, nor can any variable
   outside that prefix, such as ``ORCHESTRATOR_DATABASE_URL``);
2. the ``secrets`` table, each value a Fernet token under ``ORCHESTRATOR_SECRET_KEY``.

Every value a call looked up is redacted from its error and traceback before either is stored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from orchestrator.audit import Actor
from orchestrator.errors import NotFound, SecretMissing, SecretUnreadable, StateStoreError, UsageError
from orchestrator.settings import DEFAULT_CACHE_UNAVAILABLE_WAIT_S
from orchestrator.store import Repository, now

if TYPE_CHECKING:  # the scheduler imports this module, and the middleware import the scheduler
    from orchestrator.runtime.middleware import Call

ENV_PREFIX = "ORCHESTRATOR_SECRETS_"
NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
REDACTED = "***"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise UsageError(f"secret name {name[:80]!r}: use capitals, digits and _ (e.g. API_TOKEN), at most 64")
    return name


class _References(Mapping[str, str]):
    """``secrets`` as a step's stored inputs see it: every name is its own reference."""

    def __getitem__(self, name: str) -> str:
        return f"${{{{ secrets.{name} }}}}"

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


REFERENCES: Mapping[str, str] = _References()


class Fernet:
    """The table's cipher, under ``ORCHESTRATOR_SECRET_KEY`` (made by ``Fernet.generate_key()``)."""

    def __init__(self, key: str | None) -> None:
        from cryptography.fernet import Fernet as _Fernet

        if not key:
            raise UsageError(
                "ORCHESTRATOR_SECRET_KEY is not set: make one with "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            )
        try:
            self._fernet = _Fernet(key.encode())
        except (ValueError, TypeError):  # the key's own text is never shown
            raise UsageError("ORCHESTRATOR_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes)") from None

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str | None:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            return None


class Lookup(Mapping[str, str]):
    """``secrets`` as the function's call sees it: each name read once, and remembered for
    redaction. A name that is set nowhere fails the step with ``SecretMissing``, naming it."""

    def __init__(self, repo: Repository | None, key: str | None) -> None:
        self.repo, self.key = repo, key
        self.seen: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.seen:
            self.seen[name] = self._read(name)
        return self.seen[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(self.seen)

    def __len__(self) -> int:
        return len(self.seen)

    def _read(self, name: str) -> str:
        value = os.environ.get(ENV_PREFIX + name)
        if value is not None:
            return value
        token = None
        if self.repo is not None:
            with self.repo.transaction() as tx:
                token = tx.secret_token(name)
        if token is None:
            raise SecretMissing(f"secret {name} is not set (orchestrator secrets set {name}, or {ENV_PREFIX}{name})")
        try:
            value = Fernet(self.key).decrypt(token)
        except UsageError as exc:
            raise SecretUnreadable(f"secret {name} cannot be decrypted: {exc.message}") from None
        if value is None:
            raise SecretUnreadable(f"secret {name} cannot be decrypted: ORCHESTRATOR_SECRET_KEY is not its key")
        return value


def redact(text: str, values: Mapping[str, str] | list[str]) -> str:
    """``text`` with each value (and its ``repr`` form, as tracebacks and reprs show it) replaced."""
    found = list(values.values()) if isinstance(values, Mapping) else list(values)
    for value in sorted({v for v in found if v}, key=len, reverse=True):
        for form in {value, repr(value)[1:-1], value.encode("unicode_escape").decode()}:
            text = text.replace(form, REDACTED)
    return text


def redact_data(value: Any, values: Mapping[str, str]) -> Any:
    """JSON data with each value redacted from its strings (a step that returns a secret)."""
    if isinstance(value, str):
        return redact(value, values) if values else value
    if isinstance(value, list):
        return [redact_data(v, values) for v in value]
    if isinstance(value, dict):
        return {redact(k, values): redact_data(v, values) for k, v in value.items()}
    return value


def resolved(stored: dict[str, Any], template: Any, context: Mapping[str, Any], lookup: Lookup) -> dict[str, Any]:
    """The function's inputs: the ``with`` rendered with the values, wherever the stored inputs are
    still what the references rendered to. A value an operator replaced (``dlq replay
    --inputs-file``) is kept as given, and a reference text in it is not looked up."""
    as_stored = template.render({**context, "secrets": REFERENCES})
    with_values = template.render({**context, "secrets": lookup})
    merged: dict[str, Any] = _merge(stored, as_stored, with_values)
    return merged


def resolve_call(call: Call, lookup: Lookup) -> SecretMissing | SecretUnreadable | None:
    """Give the function's inputs their values (``row.inputs`` keep the references). A store that
    cannot be read defers the step, spending no attempt, as the cache and the checks do; a secret
    that is not set or cannot be decrypted is returned, to fail the attempt only if nothing serves
    the step without the function (a cache hit does)."""
    from orchestrator.runtime.middleware import Defer

    try:
        call.inputs = resolved(call.inputs, call.step.arguments, call.context(), lookup)
    except StateStoreError as exc:
        retry_at = now() + timedelta(seconds=DEFAULT_CACHE_UNAVAILABLE_WAIT_S)
        raise Defer(f"a secret cannot be read ({exc.message}); no call was made", retry_at) from None
    except (SecretMissing, SecretUnreadable) as exc:
        return exc
    return None


def _merge(stored: Any, as_stored: Any, with_values: Any) -> Any:
    if stored == as_stored:
        return with_values
    if isinstance(stored, dict) and isinstance(as_stored, dict) and isinstance(with_values, dict):
        return {k: _merge(v, as_stored[k], with_values[k]) if k in as_stored else v for k, v in stored.items()}
    return stored


def uses(template: Any) -> bool:
    """Whether a rendered ``with`` reads ``secrets``: only then is it rendered again at the call."""
    return "secrets" in template.refs.places


# What people do to the table: each change is audited (name and whether it was new, never the value)


def set_secret(repo: Repository, key: str | None, name: str, value: str, who: Actor) -> bool:
    """Encrypt and store ``value`` under ``name``; True when the name is new."""
    from orchestrator import audit
    from orchestrator.store import now

    check_name(name)
    if not value:
        raise UsageError(f"secret {name}: the value is empty")
    token = Fernet(key).encrypt(value)
    with repo.transaction() as tx:
        created = tx.put_secret(name, token, now())
        audit.record(tx, who, "secret.set", f"secret:{name}", {"created": created})
    return created


def delete_secret(repo: Repository, name: str, who: Actor) -> None:
    from orchestrator import audit

    with repo.transaction() as tx:
        if not tx.delete_secret(check_name(name)):
            raise NotFound(f"secret {name} is not set")
        audit.record(tx, who, "secret.delete", f"secret:{name}")


def list_secrets(repo: Repository) -> list[dict[str, Any]]:
    """Names and times (the values stay encrypted, and are not even read)."""
    with repo.transaction() as tx:
        rows = tx.secret_names()
    return [{"name": r["name"], "created_at": _iso(r["created_at"]), "updated_at": _iso(r["updated_at"])} for r in rows]


def _iso(at: Any) -> str:
    return at.isoformat() if hasattr(at, "isoformat") else str(at)
