"""Showing a database or broker URL in a message without its password, however malformed it is.

The parsers we hand URLs to (SQLAlchemy, kombu, psycopg) each read a malformed URL their own way,
and each echoes what it read: an unencoded ``@`` in a password puts the password's tail in the host
psycopg prints, and kombu reads a URL without ``scheme://`` as an AMQP host name. So messages never
show what a parser made of a URL: they show ``redact_url`` of the text as given, which hides
everything up to the last ``@`` of the authority and every query value, and ``scrub`` removes what
may be secret from a library's own message.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_MIN_FRAGMENT = 3  # shorter pieces of a password are not hunted in messages (they would mangle any text)


def redact_url(url: object) -> str:
    """``scheme://user:***@host:port/path`` (a query as ``?...``); ``...`` after a scheme that
    cannot be told; ``<not a URL>`` when there is no ``scheme://`` at all."""
    text = str(url)
    if "://" not in text:
        return "<not a URL>"
    scheme, rest = text.split("://", 1)
    if not _SCHEME.fullmatch(scheme):
        return "<not a URL>"
    userinfo, location = _split_userinfo(rest)
    path, has_query = _without_query(location)
    if userinfo is None:
        shown = path
    elif "@" in userinfo:  # an unencoded '@': where the user name ends cannot be told
        shown = f"***@{path}"
    elif ":" in userinfo:
        shown = f"{userinfo.split(':', 1)[0]}:***@{path}"
    else:  # only a user name
        shown = f"{userinfo}@{path}"
    return f"{scheme}://{shown}{'?...' if has_query else ''}"


def ambiguous(url: object) -> bool:
    """Whether the authority holds more than one ``@`` (an unencoded one in the password): every
    parser then reads part of the password as the host."""
    text = str(url)
    if "://" not in text:
        return False
    userinfo, _ = _split_userinfo(text.split("://", 1)[1])
    return userinfo is not None and "@" in userinfo


def secret_parts(url: object) -> list[str]:
    """What of ``url`` must never be shown: its password (as written and decoded), the pieces an
    unencoded ``@``, ``:`` or ``/`` splits it into, and its query values; longest first."""
    text = str(url)
    parts: set[str] = set()
    rest = text.split("://", 1)[1] if "://" in text else text
    userinfo, location = _split_userinfo(rest)
    if userinfo is not None and ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        parts.update({password, unquote(password)})
        parts.update(re.split(r"[@:/]", password))
    elif userinfo is not None and "@" in userinfo:
        parts.update(re.split(r"[@:/]", userinfo)[1:])
    if "?" in location:
        for pair in location.split("?", 1)[1].split("&"):
            value = pair.split("=", 1)[1] if "=" in pair else ""
            parts.update({value, unquote(value)})
    if "://" not in text and ("@" in text or ":" in text):  # no scheme: any piece may be the password
        parts.update(re.split(r"[@:/]", text))
    return sorted((p for p in parts if len(p) >= _MIN_FRAGMENT), key=len, reverse=True)


def scrub(message: str, url: object) -> str:
    """``message`` with every secret part of ``url`` replaced by ``***``."""
    for part in secret_parts(url):
        message = message.replace(part, "***")
    return message


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """The userinfo (everything before the last ``@`` ahead of the path's query), and the rest.
    A path that starts at once (``sqlite:///file@x.db``) has no userinfo."""
    if rest.startswith("/"):
        return None, rest
    head = rest.split("?", 1)[0]
    if "@" not in head:
        return None, rest
    userinfo, _ = head.rsplit("@", 1)
    return userinfo, rest[len(userinfo) + 1 :]


def _without_query(location: str) -> tuple[str, bool]:
    path = location.split("#", 1)[0]
    if "?" in path:
        return path.split("?", 1)[0], True
    return path, False


def check_url(variable: str, url: str, example: str) -> None:
    """Refuse, naming ``variable`` and never the password, a URL that every parser would misread."""
    from orchestrator.errors import UsageError

    shown = redact_url(url)
    if shown == "<not a URL>":
        raise UsageError(f"{variable} is not a URL: it needs scheme://, e.g. {example}")
    if ambiguous(url):
        raise UsageError(f"{variable} has an unencoded '@' in its user or password ({shown}): write it as %40")
    if not all(_port_ok(host) for host in _hosts(url)):
        raise UsageError(f"{variable} has a port that is not a number ({shown})")


def _hosts(url: str) -> list[str]:
    """The ``host[:port]`` entries of the authority (PostgreSQL allows several, comma-separated)."""
    _, location = _split_userinfo(url.split("://", 1)[1])
    authority = re.split(r"[/?#]", location, maxsplit=1)[0]
    return authority.split(",") if authority else []


def _port_ok(host: str) -> bool:
    if host.startswith("["):  # an IPv6 address: [::1]:5432
        port = host.rsplit("]", 1)[1].removeprefix(":")
    else:
        port = host.rsplit(":", 1)[1] if ":" in host else ""
    return port == "" or port.isdigit()
