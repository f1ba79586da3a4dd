"""Network namespaces for multi-host e2e tests: N host namespaces, each with one veth (`eth0`) to a
bridge that lives in its own namespace, so the root namespace is never touched.

Only addresses inside the namespaces made here are used (a private 10.213.X.0/24). Everything is
removed by `NetnsLab.close()`: deleting a namespace destroys the veths and the bridge inside it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

from cli_helpers import GAIA, NodeProc


def sh(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def netns_unavailable_reason() -> str | None:
    """Why namespaces can't be used here (None if they can): not root, no `ip`, `ip netns add` fails."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 `ip` not installed"
    probe = f"gaia-ns-probe-{os.getpid()}-{random.randrange(1 << 30):x}"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


class NetnsLab:
    """`n` host namespaces gaia-ns-<tag>-{0..n-1} plus gaia-ns-<tag>-br holding bridge `br0`.

    Host i has `eth0` = 10.213.<subnet>.<i+1>/24; its bridge-side peer is `v<i>` in the bridge ns.
    """

    def __init__(self, n: int) -> None:
        self.tag = f"{os.getpid() % 10000}{random.randrange(1 << 16):04x}"
        self.subnet = random.randrange(1, 255)
        self.hosts = [f"gaia-ns-{self.tag}-{i}" for i in range(n)]
        self.br_ns = f"gaia-ns-{self.tag}-br"
        self.created: list[str] = []

    def addr(self, i: int) -> str:
        return f"10.213.{self.subnet}.{i + 1}"

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def setup(self) -> NetnsLab:
        self._add_ns(self.br_ns)
        sh("ip", "-n", self.br_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.br_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.hosts):
            self._add_ns(ns)
            # both ends made inside the namespaces: the root namespace never sees them
            sh("ip", "-n", self.br_ns, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", self.br_ns, "link", "set", f"v{i}", "master", "br0")
            sh("ip", "-n", self.br_ns, "link", "set", f"v{i}", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return self

    # faults -------------------------------------------------------------------------------------
    def partition(self, i: int, inside: bool = False) -> None:
        """Cut host i's cable: its bridge port goes down (carrier lost on both ends); with inside=True
        its own eth0 goes down instead (the address and route disappear in its namespace)."""
        if inside:
            sh("ip", "-n", self.hosts[i], "link", "set", "eth0", "down")
        else:
            sh("ip", "-n", self.br_ns, "link", "set", f"v{i}", "down")

    def heal(self, i: int, inside: bool = False) -> None:
        if inside:
            sh("ip", "-n", self.hosts[i], "link", "set", "eth0", "up")
            sh("ip", "-n", self.hosts[i], "addr", "replace", f"{self.addr(i)}/24", "dev", "eth0")
        else:
            sh("ip", "-n", self.br_ns, "link", "set", f"v{i}", "up")

    def limit_rate(self, i: int, rate: str = "1mbit") -> None:
        """tbf on both directions of host i's link (its eth0 egress and its bridge port's egress)."""
        for ns, dev in ((self.hosts[i], "eth0"), (self.br_ns, f"v{i}")):
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
               "burst", "16kbit", "latency", "400ms")

    def unlimit_rate(self, i: int) -> None:
        for ns, dev in ((self.hosts[i], "eth0"), (self.br_ns, f"v{i}")):
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)

    def qdisc(self, i: int) -> str:
        return sh("ip", "netns", "exec", self.hosts[i], "tc", "-s", "qdisc", "show", "dev", "eth0").stdout

    def close(self) -> list[str]:
        """Delete every namespace made (veths and bridge go with them); returns what failed."""
        failed = []
        for ns in reversed(self.created):
            r = sh("ip", "netns", "del", ns, check=False)
            if r.returncode != 0:
                failed.append(f"{ns}: {r.stderr.strip()}")
        self.created.clear()
        return failed

    def leftovers(self) -> list[str]:
        names = sh("ip", "netns", "list", check=False).stdout
        return [line.split()[0] for line in names.splitlines() if line.startswith(f"gaia-ns-{self.tag}-")]


class NsNodeProc(NodeProc):
    """A gaia-node started with `ip netns exec NS`, listening on a namespace address."""

    def __init__(self, tmp: Path, name: str, ns: str, listen: str, *args: str) -> None:
        super().__init__(tmp, name, *args)
        self.ns = ns
        self.listen = listen

    def start(self, *extra: str) -> NsNodeProc:
        empty = self.data_dir.parent / "no_bootstrap.toml"
        empty.write_text("bootstrap = []\n")
        self.log = open(self.log_path, "a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *GAIA, "start", "--data-dir", str(self.data_dir),
             "--listen", self.listen, "--set", f"network.bootstrap_file={empty}", "--log-format", "json",
             *self.args, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return self



def iptables_unavailable_reason() -> str | None:
    """Why NAT can't be emulated here (None if it can): namespaces unusable or no `iptables`."""
    why = netns_unavailable_reason()
    if why:
        return why
    if shutil.which("iptables") is None:
        return "iptables not installed (apt-get install -y iptables; .ci/run does it)"
    return None


class NatLab(NetnsLab):
    """A public host and `homes` home networks behind NAT routers, all on one WAN bridge.

    WAN 10.213.<subnet>.0/24: host 0 (public, `hosts[0]`) is .1, router k is .(k+2) (`hosts[k+1]`).
    Home k: router `lan0` 10.<101+k>.<subnet>.1/24, host `homes[k]` `eth0` 10.<101+k>.<subnet>.2/24
    with its default route via the router. Routers forward, drop new connections coming in on
    `eth0` (a home router's stateful firewall) and MASQUERADE out of `eth0`
    (`--random-fully` with `random_fully=True`: a new random source port per mapping, so the port a
    peer saw is not the port the next connection gets); they have no default route, so a home dials
    nothing but the WAN. Deleting the namespaces removes veths, rules and conntrack with them.
    """

    def __init__(self, homes: int = 2, random_fully: bool = False) -> None:
        super().__init__(1 + homes)
        self.random_fully = random_fully
        self.homes = [f"gaia-ns-{self.tag}-h{k}" for k in range(homes)]

    def router(self, k: int) -> str:
        return self.hosts[k + 1]

    def wan_addr(self, k: int) -> str:
        return self.addr(k + 1)

    def home_addr(self, k: int) -> str:
        return f"10.{101 + k}.{self.subnet}.2"

    def setup(self) -> NatLab:
        super().setup()
        for k, home in enumerate(self.homes):
            r = self.router(k)
            self._add_ns(home)
            sh("ip", "-n", r, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", home)
            sh("ip", "-n", r, "addr", "add", f"10.{101 + k}.{self.subnet}.1/24", "dev", "lan0")
            sh("ip", "-n", r, "link", "set", "lan0", "up")
            sh("ip", "-n", home, "addr", "add", f"{self.home_addr(k)}/24", "dev", "eth0")
            sh("ip", "-n", home, "link", "set", "eth0", "up")
            sh("ip", "-n", home, "route", "add", "default", "via", f"10.{101 + k}.{self.subnet}.1")
            sh("ip", "netns", "exec", r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            sh("ip", "netns", "exec", r, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j",
               "MASQUERADE", *(["--random-fully"] if self.random_fully else []))
            # a home router's stateful firewall: unsolicited connections from the WAN are dropped,
            # not answered with a RST (Linux's own answer for a port nothing listens on), which
            # would tear down the router's half-open mapping before the peer's SYN arrives
            for chain in ("INPUT", "FORWARD"):
                sh("ip", "netns", "exec", r, "iptables", "-A", chain, "-i", "eth0", "-m", "conntrack",
                   "--ctstate", "NEW", "-j", "DROP")
        return self

    def nat_rules(self, k: int) -> str:
        r = self.router(k)
        return (sh("ip", "netns", "exec", r, "iptables", "-t", "nat", "-S", "POSTROUTING").stdout
                + sh("ip", "netns", "exec", r, "iptables", "-S").stdout)
