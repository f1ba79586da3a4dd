"""Keepalive: ping every connected peer; drop the ones that stopped answering.

Without it, a partitioned peer stays "connected" for as long as TCP retransmits (~15 min): nothing
in py-libp2p 0.8.1 sends keepalives, so the mesh, the ring topology and `status` keep a dead peer
(measured with network namespaces: tests/e2e/test_netns.py). A peer that misses ``misses``
consecutive pings (each bounded by ``timeout_s``) is disconnected; the discovery loop dials it
again once it answers (it stays in the routing table).
"""

from __future__ import annotations

from typing import Any

import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.node import libp2p_fixes

log = structlog.get_logger("gaia.liveness")


async def keep_alive(p2p: Any, *, interval_s: float, timeout_s: float, misses: int = 2,
                     max_concurrent: int = 8) -> None:
    from libp2p.host.ping import PingService

    service = PingService(p2p.host)
    missed: dict[Any, int] = {}
    limiter = trio.CapacityLimiter(max_concurrent)

    async def probe(peer: Any) -> None:
        async with limiter:
            ok = False
            with trio.move_on_after(timeout_s):
                try:
                    await service.ping(peer, 1)
                    ok = True
                except Exception:  # reset stream, closed connection, protocol error: all "no answer"
                    ok = False
            if ok:
                missed.pop(peer, None)
                return
            missed[peer] = missed.get(peer, 0) + 1
            if missed[peer] >= misses:
                missed.pop(peer, None)
                log.warning(logs.PEER_UNRESPONSIVE, peer_id=str(peer), misses=misses, timeout_s=timeout_s)
                with trio.move_on_after(min(timeout_s, 2.0)):
                    try:
                        await p2p.host.disconnect(peer)
                    except Exception as e:
                        log.debug("peer_disconnect_failed", peer_id=str(peer), error=f"{type(e).__name__}: {e}")
                if p2p.host.get_network().get_connections(peer):
                    # a graceful close blocks on a dead link with a full send buffer: abort it
                    aborted = libp2p_fixes.abort_connections(p2p.host, peer)
                    log.info("peer_connections_aborted", peer_id=str(peer), sockets=aborted)

    while True:
        await trio.sleep(interval_s)
        peers = list(p2p.host.get_connected_peers())
        for gone in set(missed) - set(peers):
            missed.pop(gone, None)
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(probe, peer)
