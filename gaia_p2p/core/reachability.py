"""Reachability (AutoNAT) policy: is this node public, private or not known yet?

Pure: no clocks, no sockets, no global random. ``now`` and an ``rng`` are arguments. The shell
(`net/reachability.py`) asks peers to dial us back and feeds their verdicts here; it also serves
other peers' requests, and asks :func:`dialback_targets` and :class:`DialBackLimiter` what it may
dial. Why a node cares: a private node cannot be dialled, so a relay layer must give it a relayed
address; a public one can serve as a relay or a DCUtR peer.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from gaia_p2p.core.schedule import TokenBucket


class Reachability(StrEnum):
    PUBLIC = "public"  # peers dialled us back on an address we advertised
    PRIVATE = "private"  # peers tried and failed: behind a NAT or a firewall
    UNKNOWN = "unknown"  # not enough verdicts yet


@dataclass(frozen=True)
class Verdict:
    server: str  # the peer that tried to dial us back
    ok: bool
    at: float  # on the `now` clock of the caller
    addr: str | None = None  # the address it reached us at (ok only)


#: verdicts kept at most (one per server, the oldest dropped first)
MAX_VERDICTS = 16


class ReachabilityTracker:
    """Verdicts of the last peers asked, one per peer, and the status they add up to.

    A status needs ``confirmations`` agreeing verdicts no older than ``ttl_s``, and more of them
    than of the other kind: one lying or oddly placed peer (on our LAN, say) cannot flip a node. In
    between, the status stays where it was (hysteresis, as AutoNAT v1 recommends), and verdicts that
    have all expired bring it back to unknown."""

    def __init__(self, *, confirmations: int = 2, ttl_s: float = 600.0, max_verdicts: int = MAX_VERDICTS) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be >= 1")
        self.confirmations, self.ttl_s, self.max_verdicts = confirmations, ttl_s, max_verdicts
        self.verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self.status = Reachability.UNKNOWN

    def record(self, verdict: Verdict) -> Reachability | None:
        """Take one verdict; returns the new status if it changed, else None."""
        self.verdicts.pop(verdict.server, None)  # a peer's latest verdict replaces its older one
        self.verdicts[verdict.server] = verdict
        while len(self.verdicts) > self.max_verdicts:
            self.verdicts.popitem(last=False)
        return self.update(verdict.at)

    def live(self, now: float) -> list[Verdict]:
        return [v for v in self.verdicts.values() if now - v.at <= self.ttl_s]

    def update(self, now: float) -> Reachability | None:
        """Recompute the status at ``now``; returns it if it changed, else None."""
        live = self.live(now)
        ok = sum(v.ok for v in live)
        failed = len(live) - ok
        new = self.status
        if not live:
            new = Reachability.UNKNOWN
        elif ok >= self.confirmations and ok > failed:
            new = Reachability.PUBLIC
        elif failed >= self.confirmations and failed > ok:
            new = Reachability.PRIVATE
        if new == self.status:
            return None
        self.status = new
        return new

    def summary(self, now: float) -> dict[str, object]:
        """What ``status`` shows: the status, how many peers answered and how many dialled us back."""
        live = self.live(now)
        ok = [v for v in live if v.ok]
        return {"status": str(self.status), "asked": len(live), "dialled_back": len(ok),
                "confirmations": self.confirmations,
                "dialled_at": sorted({v.addr for v in ok if v.addr}),
                "verdicts": {v.server: {"ok": v.ok, "age_s": round(now - v.at, 1)} for v in live}}


def describe(summary: dict[str, object]) -> str:
    """The status line in words, e.g. "public (3 of 3 peers dialled us back at /ip4/...)"."""
    status, asked, ok = summary.get("status"), int(summary.get("asked") or 0), int(summary.get("dialled_back") or 0)
    at = list(summary.get("dialled_at") or [])  # type: ignore[call-overload]
    where = f" at {', '.join(map(str, at[:3]))}" if at else ""
    if status == Reachability.PUBLIC:
        return f"public ({ok} of {asked} peers dialled us back{where})"
    if status == Reachability.PRIVATE:
        if ok == 0:
            return f"private (no peer could dial us back; asked {asked})"
        return f"private (only {ok} of {asked} peers dialled us back{where})"
    if asked == 0:
        return "unknown (asked 0 peers)"
    return (f"unknown ({ok} of {asked} peers dialled us back; "
            f"{summary.get('confirmations')} agreeing answers needed)")


def pick_servers(connected: list[str], last_asked: dict[str, float], *, now: float, k: int,
                 retry_after_s: float, rng: np.random.Generator) -> list[str]:
    """Up to ``k`` connected peers to ask this round, none asked in the last ``retry_after_s``
    (so the same peer is not asked again and again while others wait), in random order."""
    due = sorted(p for p in set(connected) if now - last_asked.get(p, -float("inf")) >= retry_after_s)
    if len(due) <= k:
        return [due[int(i)] for i in rng.permutation(len(due))]
    return [due[int(i)] for i in rng.choice(len(due), size=k, replace=False)]


def normalize_ip(ip: str) -> str | None:
    """One spelling per address (``::ffff:1.2.3.4`` is 1.2.3.4, ``0:0::1`` is ``::1``); None if not an IP."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


#: addresses of one dial-back request that are looked at / dialled at most
MAX_REQUEST_ADDRS = 32
MAX_DIALBACK_ADDRS = 4


def dialback_targets(addrs: list[tuple[str, int] | None], observed_ip: str | None, *,
                     max_addrs: int = MAX_DIALBACK_ADDRS) -> list[int]:
    """Indexes of the requested addresses we may dial back: only those on the IP the request came
    from (so nobody can make us dial a third party: AutoNAT's amplification rule), with a real
    port, each (ip, port) once, at most ``max_addrs``. ``addrs`` are the requester's addresses as
    (ip, tcp port), None where an entry is not a TCP address; only the first MAX_REQUEST_ADDRS are
    looked at."""
    want = normalize_ip(observed_ip) if observed_ip else None
    if want is None:
        return []
    out: list[int] = []
    seen: set[tuple[str, int]] = set()
    for i, entry in enumerate(addrs[:MAX_REQUEST_ADDRS]):
        if entry is None:
            continue
        ip, port = normalize_ip(entry[0]), entry[1]
        if ip != want or not 1 <= port <= 65535 or (ip, port) in seen:
            continue
        seen.add((ip, port))
        out.append(i)
        if len(out) >= max_addrs:
            break
    return out


class DialBackLimiter:
    """How often we dial others back: per requesting peer, per requesting IP (peer ids cost
    nothing) and in all. Each is a token bucket; a refused request is answered E_DIAL_REFUSED."""

    def __init__(self, *, per_peer_s: float = 30.0, per_peer_burst: float = 2, global_per_s: float = 1.0,
                 global_burst: float = 8, max_keys: int = 1024, exempt_ips: tuple[str, ...] = ()) -> None:
        # exempt_ips (CIDRs, network.limits_exempt): the per-IP bucket skips them, since every node of
        # a one-machine swarm asks from 127.0.0.1; the per-peer and global buckets still hold
        self.exempt = tuple(ipaddress.ip_network(c, strict=False) for c in exempt_ips)
        self.peer = TokenBucket(1.0 / per_peer_s, per_peer_burst, max_keys=max_keys)
        self.ip = TokenBucket(1.0 / per_peer_s, 2 * per_peer_burst, max_keys=max_keys)
        self.all = TokenBucket(global_per_s, global_burst, max_keys=1)

    def _exempt(self, ip: str) -> bool:
        norm = normalize_ip(ip)
        return norm is not None and any(ipaddress.ip_address(norm) in net for net in self.exempt)

    def allow(self, peer: str, ip: str, now: float) -> str | None:
        """None if a dial-back is allowed now, else the name of the limit that refused it."""
        if not self.peer.allow(peer, now):
            return "rate_peer"
        if not self._exempt(ip) and not self.ip.allow(ip, now):
            return "rate_ip"
        if not self.all.allow("", now):
            return "rate_global"
        return None
