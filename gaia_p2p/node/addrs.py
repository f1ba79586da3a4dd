"""Multiaddr checks for user input (no libp2p host needed, just the multiaddr package)."""

from __future__ import annotations

from gaia_p2p.errors import ConfigError


def _parse(addr: str, label: str, fix: str):  # noqa: ANN202
    from multiaddr import Multiaddr

    try:
        return Multiaddr(addr)
    except Exception as e:  # the multiaddr package raises many types for bad input
        raise ConfigError(f"config error: {label} = {addr!r} is not a multiaddr ({e}); {fix}") from None


def check_listen_addr(addr: str) -> None:
    fix = "pass e.g. --listen /ip4/127.0.0.1/tcp/0"
    ma = _parse(addr, "network.listen", fix)
    protos = [p.name for p in ma.protocols()]
    if len(protos) != 2 or protos[0] not in ("ip4", "ip6") or protos[1] != "tcp":
        raise ConfigError(f"config error: network.listen = {addr!r}, must be /ip4/HOST/tcp/PORT or "
                          f"/ip6/HOST/tcp/PORT; {fix}")


def check_peer_addr(addr: str, label: str, fix: str) -> None:
    ma = _parse(addr, label, fix)
    protos = [p.name for p in ma.protocols()]
    if "p2p" not in protos or "tcp" not in protos:
        raise ConfigError(f"config error: {label} = {addr!r} needs a /tcp/PORT and a /p2p/PEER_ID part; {fix}")
    try:
        from libp2p.peer.id import ID

        ID.from_base58(ma.value_for_protocol("p2p"))
    except Exception:
        raise ConfigError(f"config error: {label} = {addr!r} has an invalid peer id; {fix}") from None
