"""Admission limits a node applies to strangers: pure bookkeeping, the shell asks and reports.

``InboundLimits`` bounds the inbound connections (still handshaking, or open) that one IP address
may hold. py-libp2p 0.8.1 caps inbound connections in total (``max_connections``) and per peer id,
but a stranger mints peer ids for free: one address with 1,000 identities would take every inbound
slot. Addresses in ``exempt`` (by default loopback: every node of a one-machine swarm shares
127.0.0.1) are not limited.

An IPv6 "address" here is its /64: one home connection or one server gets a whole /64 (2^64
addresses), so a per-/128 limit would limit nothing. An IPv4-mapped IPv6 address
(``::ffff:a.b.c.d``, from a dual-stack socket) counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable


class InboundLimits:
    def __init__(self, *, per_ip: int, exempt: Iterable[str] = ()) -> None:
        if per_ip < 1:
            raise ValueError(f"per_ip must be >= 1, got {per_ip}")
        self.per_ip = per_ip
        self.exempt = tuple(ipaddress.ip_network(c, strict=False) for c in exempt)
        self.held: Counter[str] = Counter()  # only addresses holding a connection: bounded by the slots
        self.refused: Counter[str] = Counter()  # reason -> count

    def _exempt(self, ip: str | None) -> bool:
        if ip is None:
            return True  # no IP transport (a relayed or in-memory link): the total cap still holds
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        return any(addr in net for net in self.exempt)

    @staticmethod
    def key(ip: str) -> str:
        """What one limit counts: the IPv4 address, or the /64 of an IPv6 one."""
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return ip
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.ipv4_mapped is not None:
                return str(addr.ipv4_mapped)
            return str(ipaddress.IPv6Network(f"{addr}/64", strict=False))
        return str(addr)

    def admit(self, ip: str | None) -> bool:
        """One inbound connection from ``ip`` wants in: True (and it is held until ``release``)
        or False (refused, counted)."""
        if self._exempt(ip):
            return True
        assert ip is not None
        ip = self.key(ip)
        if self.held[ip] >= self.per_ip:
            self.refused["per_ip"] += 1
            return False
        self.held[ip] += 1
        return True

    def release(self, ip: str | None) -> None:
        if self._exempt(ip):
            return
        assert ip is not None
        ip = self.key(ip)
        self.held[ip] -= 1
        if self.held[ip] <= 0:
            del self.held[ip]
