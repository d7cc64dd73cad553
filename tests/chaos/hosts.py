"""Worker "hosts" for the drills: a network namespace each, joined to the machine by a veth pair,
with a hostname of its own (a UTS namespace) for the processes started in it.

PostgreSQL and Redis listen on 127.0.0.1 only, so a host reaches them through proxies listening
on the machine's end of its veth. Names carry a token unique to the test run (two runs at once
never collide) and everything is removed on close, whatever happened.
"""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
import uuid
from collections.abc import Sequence


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    probe = f"ocprobe{os.getpid()}{uuid.uuid4().hex[:4]}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"the `ip` command is not usable: {exc}"
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.0.0.0/8 that no interface of the machine uses."""
    used = _ip("-4", "-o", "addr").stdout
    for _ in range(100):
        net = ipaddress.IPv4Network((random.randrange(10 << 24, 11 << 24) & ~3, 30))
        if f" {net[1]}/" not in used and f" {net[2]}/" not in used:
            return net
    raise RuntimeError("no free /30 in 10.0.0.0/8")


class Host:
    """One namespace: ``address`` is the machine's end of the veth (where its proxies listen)."""

    def __init__(self, hostname: str) -> None:
        token = uuid.uuid4().hex[:6]
        self.hostname = hostname
        self.namespace = f"oc-{hostname}-{os.getpid()}-{token}"
        self.outside, self.inside = f"ocv{token}o", f"ocv{token}i"  # interface names: 15 characters at most
        subnet = _free_subnet()
        self.address, self.own_address = str(subnet[1]), str(subnet[2])
        try:
            self._build(subnet.prefixlen)
        except BaseException:
            self.close()
            raise

    def _build(self, prefix: int) -> None:
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _ip("link", "set", self.inside, "netns", self.namespace)
        _ip("addr", "add", f"{self.address}/{prefix}", "dev", self.outside)
        _ip("link", "set", self.outside, "up")
        inside = ["netns", "exec", self.namespace, "ip"]
        _ip(*inside, "addr", "add", f"{self.own_address}/{prefix}", "dev", self.inside)
        _ip(*inside, "link", "set", self.inside, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def prefix(self) -> Sequence[str]:
        """What runs a command on this host: in its namespace, under its hostname."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", "-c",
                f'hostname {self.hostname} && exec "$@"', "sh"]  # fmt: skip

    def cut(self) -> None:
        """Take the host off the network: its link goes down (packets are dropped, nothing is closed)."""
        _ip("link", "set", self.outside, "down")

    def restore(self) -> None:
        _ip("link", "set", self.outside, "up")

    def close(self) -> None:
        _ip("link", "del", self.outside, check=False)  # deletes its peer too
        _ip("netns", "del", self.namespace, check=False)
