"""Test hosts in Linux network namespaces: each "host" is a namespace wired to a private switch namespace.

Only the namespaces this module creates carry the traffic (addresses 10.213.0.0/24 exist nowhere else); they are
deleted when the :class:`TestNetwork` closes. Needs root and iproute2, as CI has.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping, Sequence

SUBNET = "10.213.0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class TestNetwork:
    """Hosts named ``names`` on one switch; host ``names[i]`` has address ``10.213.0.<i + 1>``."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, names: Sequence[str]) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.switch = f"drp{self.tag}-sw"
        self.namespaces: dict[str, str] = {}
        self.addresses: dict[str, str] = {}
        self.links: dict[str, str] = {}
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, name in enumerate(names, start=1):
                ns = f"drp{self.tag}-{name}"
                _ip("netns", "add", ns)
                self.namespaces[name] = ns
                host_if, switch_if = f"eth{i}", f"p{self.tag}{i}"
                _ip(
                    "link", "add", host_if, "netns", ns, "type", "veth", "peer", "name", switch_if, "netns", self.switch
                )
                _ip("-n", self.switch, "link", "set", switch_if, "master", "br0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", host_if)
                _ip("-n", ns, "link", "set", host_if, "up")
                self.addresses[name] = f"{SUBNET}.{i}"
                self.links[name] = host_if
        except BaseException:
            self.close()
            raise

    def popen(self, host: str, argv: Sequence[str], env: Mapping[str, str], **kwargs: object) -> subprocess.Popen[str]:
        """Start ``argv`` on ``host`` (the process's PID is the command's own: ``ip netns exec`` execs it)."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespaces[host], *argv], env=dict(env), **kwargs)  # type: ignore[call-overload,no-any-return]

    def set_link(self, host: str, up: bool) -> None:
        """Plug or unplug ``host``'s cable."""
        _ip("-n", self.namespaces[host], "link", "set", self.links[host], "up" if up else "down")

    def host_of(self, pid: int) -> str | None:
        """Which host a process runs on."""
        done = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
        ns = done.stdout.strip()
        return next((name for name, n in self.namespaces.items() if n == ns), None)

    def close(self) -> None:
        for ns in [*self.namespaces.values(), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
