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
_HOST = re.compile(r"(\[[0-9A-Fa-f:.%a-z]+\]|[A-Za-z0-9._%~-]*)(:[^/?#]*)?")  # the port is checked on its own
_MIN_FRAGMENT = 3  # shorter pieces of a password are not hunted in messages (they would mangle any text)


def redact_url(url: object) -> str:
    """``scheme://user:***@host:port/path`` (a query as ``?...``); ``scheme://***`` when the
    authority cannot be read; ``<not a URL>`` when there is no ``scheme://`` at all."""
    text = str(url)
    if "://" not in text:
        return "<not a URL>"
    scheme, rest = text.split("://", 1)
    if not _SCHEME.fullmatch(scheme):
        return "<not a URL>"
    if not _readable(rest):
        return f"{scheme}://***"
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
        parts.update(re.split(r"[@:/?#]", password))
    elif userinfo is not None and "@" in userinfo:
        parts.update(re.split(r"[@:/?#]", userinfo)[1:])
    if "?" in location:
        for pair in location.split("?", 1)[1].split("&"):
            value = pair.split("=", 1)[1] if "=" in pair else ""
            parts.update({value, unquote(value)})
    if ("://" not in text and ("@" in text or ":" in text)) or not _readable(rest):  # any piece may be the password
        parts.update(re.split(r"[@:/?#&=]", rest))
    return sorted((p for p in parts if len(p) >= _MIN_FRAGMENT), key=len, reverse=True)


def scrub(message: str, url: object) -> str:
    """``message`` with every secret part of ``url`` replaced by ``***``."""
    for part in secret_parts(url):
        message = message.replace(part, "***")
    return message


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """The userinfo and what follows it. It ends at the last ``@`` before the first ``/``; a ``?``
    or ``#`` there belongs to the password (SQLAlchemy reads ``u:Sup3r?S3cret@db/app`` so). With no
    ``@`` there, a ``user:`` followed by ``@`` further on is a password holding a ``/``, read up to
    that ``@`` as SQLAlchemy does. A path that starts at once (``sqlite:///file@x.db``) has none."""
    if rest.startswith("/"):
        return None, rest
    head = rest.split("/", 1)[0]
    if "@" in head:
        userinfo = head.rsplit("@", 1)[0]
    elif "@" in rest and ":" in head:
        userinfo = rest.split("@", 1)[0]
    else:
        return None, rest
    return userinfo, rest[len(userinfo) + 1 :]


def _readable(rest: str) -> bool:
    """Whether the authority parses as ``host[:port]`` entries once the userinfo is taken off: if
    not, what looks like the host may be part of the password, and nothing of it is shown."""
    _, location = _split_userinfo(rest)
    authority = re.split(r"[/?#]", location, maxsplit=1)[0]
    return all(_HOST.fullmatch(host) for host in authority.split(",")) if authority else True


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
    if not _readable(url.split("://", 1)[1]):
        raise UsageError(
            f"{variable} has a host that cannot be read ({shown}): in the user and password,"
            " write '@' as %40, '/' as %2F, '?' as %3F and '#' as %23"
        )


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
