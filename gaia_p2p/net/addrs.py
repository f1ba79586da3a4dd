"""Listen addresses this machine can actually use: IPv6 is in the defaults, but not every host has it."""

from __future__ import annotations

import socket

import multiaddr
import structlog

from gaia_p2p import logs

log = structlog.get_logger("gaia.addrs")


def ipv6_available(host: str = "::1") -> bool:
    """Whether an IPv6 socket can be bound to ``host`` here (no IPv6 stack, or the address is not
    configured: False)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def usable_listen_addrs(listen: tuple[str, ...], *, has_ipv6=ipv6_available) -> tuple[str, ...]:
    """``listen`` without the /ip6 addresses this host cannot bind, as long as another address is
    left: a node on a machine without IPv6 starts on IPv4 and says so (``ipv6_unavailable``). If
    nothing would be left, the list is returned as is and the bind error speaks for itself."""
    keep, dropped = [], []
    for addr in listen:
        if addr.startswith("/ip6/"):
            host = str(multiaddr.Multiaddr(addr).value_for_protocol("ip6"))
            if not has_ipv6("::1" if host == "::" else host):
                dropped.append(addr)
                continue
        keep.append(addr)
    if not dropped:
        return listen
    if not keep:
        return listen
    log.warning(logs.IPV6_UNAVAILABLE, dropped=dropped, listen=keep)
    return tuple(keep)
