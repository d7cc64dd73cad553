"""Where the HTTP step may connect, checked on the address it actually connects to.

Link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata services answer any
process on the machine with credentials, so a workflow that can name a URL must not reach them
unless ``ORCHESTRATOR_HTTP_ALLOW`` lists them. The check is on the resolved addresses, not the
name, and it lives in the connection itself (an httpcore network backend): each host is resolved
once per connection, every address it resolves to is checked, and the socket connects to a checked
address, so a DNS answer that changes between the check and the connect (rebinding) is never used.
Every redirect hop connects through the same backend.

The same backend bounds every socket operation by one deadline, so the step's ``timeout`` covers
the whole request: resolving, connecting, TLS, sending, and reading the whole body.

An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo) is refused
when the IPv4 address it carries is. Loopback and private (RFC 1918) addresses are allowed: services
next to the workers are what a workflow usually calls.

Not covered: a proxy (the step uses none: proxy variables and ``.netrc`` are ignored), and
addresses that only route to a blocked one through the network (a NAT64 prefix of the network's own,
a local forwarder).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED_NETWORKS: tuple[Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, AWS/GCP/Azure/OCI metadata at 169.254.169.254
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer (host agent, VM extensions' settings)
    ipaddress.ip_network("192.0.0.192/32"),  # Oracle Cloud metadata
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
BLOCKED_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-step-dns")


class AddressRefused(Exception):  # noqa: N818 - not an httpcore error: httpx passes it through unchanged
    """The host is, or resolves to, an address the HTTP step may not reach."""


class Policy:
    """The blocked addresses and names, minus what ``ORCHESTRATOR_HTTP_ALLOW`` lets through."""

    def __init__(self, allow: str = "") -> None:
        entries = [e.strip().lower() for e in allow.split(",") if e.strip()]
        self.allowed_networks: list[Network] = []
        self.allowed_names: set[str] = set()
        for entry in entries:
            try:
                self.allowed_networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.allowed_names.add(entry.rstrip("."))

    def name_refused(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in BLOCKED_NAMES and name not in self.allowed_names

    def address_refused(self, host: str, address: IPAddress) -> bool:
        if host.lower().rstrip(".") in self.allowed_names:
            return False
        return any(self._blocked(a) for a in _carried(address))

    def _blocked(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allowed_networks):
            return False
        return any(address in network for network in BLOCKED_NETWORKS)


def _carried(address: IPAddress) -> list[IPAddress]:
    """The address, and the IPv4 addresses an IPv6 one carries (each reaches that IPv4 host)."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    found: list[IPAddress] = [address]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    elif int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (not :: nor ::1)
        found.append(low32)
    if any(address in network for network in _NAT64):
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # the Teredo server and the client it relays for
    return found


def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """The host's addresses (getaddrinfo has no timeout of its own: it runs in a thread)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(timeout, 0.001))
    except FutureTimeout:
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than the request's timeout") from None
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self, timeout: float | None = None) -> float:
        """The time an operation may take: its own timeout, cut to what is left of the whole."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout(f"the whole request took longer than {self.seconds:g}s")
        return left if timeout is None else min(timeout, left)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to checked addresses, within one deadline."""

    def __init__(self, policy: Policy, deadline: Deadline) -> None:
        self.policy, self.deadline = policy, deadline
        self.tcp = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self.policy.name_refused(host):
            raise AddressRefused(f"{host} is a cloud metadata service (allow it with ORCHESTRATOR_HTTP_ALLOW)")
        addresses = resolve(host, port, self.deadline.left(timeout))
        refused = [a for a in addresses if self.policy.address_refused(host, a)]
        if refused or not addresses:
            shown = refused[0] if refused else "no address"
            raise AddressRefused(
                f"{host} resolves to {shown}, a link-local or metadata address (allow it with ORCHESTRATOR_HTTP_ALLOW)"
            )
        last: Exception | None = None
        for address in addresses:  # an address literal: the socket connects to exactly what was checked
            try:
                stream = self.tcp.connect_tcp(str(address), port, self.deadline.left(timeout), local_address)
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                last = exc
                continue
            return BoundedStream(stream, self.deadline)
        raise httpcore.ConnectError(f"cannot connect to {host}:{port}: {last}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise AddressRefused("the HTTP step does not connect to unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class BoundedStream(httpcore.NetworkStream):
    """A stream whose reads and writes never outlast the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
        self.stream, self.deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self.deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, self.deadline.left(timeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        secured = self.stream.start_tls(ssl_context, server_hostname, self.deadline.left(timeout))
        return BoundedStream(secured, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)
