"""API tokens from ``ORCHESTRATOR_API_TOKENS`` (``name:role:token,...``); a token's name is the actor."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import UsageError

ROLES = ("viewer", "operator", "admin")  # each may do what the ones before it may


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    secret: str


def parse_tokens(text: str) -> list[Token]:
    """The configured tokens; a malformed entry is a usage error naming it (without its secret)."""
    found = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role, _, secret = rest.partition(":")
        if not name or role not in ROLES or not secret:
            raise UsageError(
                f"ORCHESTRATOR_API_TOKENS: entry {name or '?'!r} is not name:role:token "
                f"with a role of {', '.join(ROLES)}"
            )
        found.append(Token(name, role, secret))
    return found
