"""Keepalive: ping every connected peer; drop the ones that stopped answering.

Without it, a partitioned peer stays "connected" for as long as TCP retransmits (~15 min): nothing
in py-libp2p 0.8.1 sends keepalives, so the mesh, the ring topology and `status` keep a dead peer
(measured with network namespaces: tests/e2e/test_netns.py). Every ``interval_s`` each connected
peer gets a ping (at most one in flight per peer, each bounded by ``timeout_s``); a peer with no
answer for ``dead_after_s`` is disconnected: gracefully with a short deadline, then its sockets are
aborted and pubsub forgets it (a close can block on a dead link, see libp2p_fixes H). The discovery
loop dials it again once it answers (it stays in the routing table).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.net import libp2p_fixes

log = structlog.get_logger("gaia.liveness")


def probe_period(interval_s: float, n_peers: int, rate_per_s: float) -> float:
    """Seconds between two pings of one peer: ``interval_s``, stretched so that all peers together
    get at most ``rate_per_s`` pings per second (0: no stretch). Each ping opens a stream (~0.4 KB on
    the wire, ~2 ms of CPU here): with one ping per peer every 5 s, 40 peers would cost more than
    everything else a node sends."""
    if rate_per_s <= 0:
        return interval_s
    return max(interval_s, n_peers / rate_per_s)


async def keep_alive(p2p: Any, *, interval_s: float, timeout_s: float, dead_after_s: float,
                     rate_per_s: float = 0.0, rng: np.random.Generator) -> None:
    """Ping every connected peer each ``probe_period`` (>= interval_s); a peer silent for
    ``dead_after_s`` scaled by the same stretch is dropped."""
    from libp2p.host.ping import PingService

    service = PingService(p2p.host)
    last_ok: dict[Any, float] = {}
    last_probe: dict[Any, float] = {}
    in_flight: set[Any] = set()

    async def probe(peer: Any) -> None:
        in_flight.add(peer)
        try:
            with trio.move_on_after(timeout_s):
                try:
                    await service.ping(peer, 1)
                    last_ok[peer] = trio.current_time()
                except Exception:  # reset stream, closed connection, protocol error: no answer
                    pass
        finally:
            in_flight.discard(peer)

    async def drop(peer: Any) -> None:
        log.warning(logs.PEER_UNRESPONSIVE, peer_id=str(peer), silent_s=round(trio.current_time() - last_ok[peer], 1))
        last_ok.pop(peer, None)
        with trio.move_on_after(2.0):
            try:
                await p2p.host.disconnect(peer)
            except Exception as e:
                log.debug("peer_disconnect_failed", peer_id=str(peer), error=f"{type(e).__name__}: {e}")
        if p2p.host.get_network().get_connections(peer):
            aborted = libp2p_fixes.abort_connections(p2p.host, peer)
            libp2p_fixes.forget_peer(p2p.host, p2p.pubsub, peer)
            log.info("peer_connections_aborted", peer_id=str(peer), sockets=aborted)

    # Probes and drops run in this nursery so that a probe stuck in libp2p never stalls the loop.
    async with trio.open_nursery() as nursery:
        while True:
            await trio.sleep(interval_s)
            now = trio.current_time()
            peers = list(p2p.host.get_connected_peers())
            for gone in set(last_ok) - set(peers):
                last_ok.pop(gone, None)
                last_probe.pop(gone, None)
            period = probe_period(interval_s, len(peers), rate_per_s)
            dead_after = dead_after_s * period / interval_s
            due = []
            for peer in peers:
                last_ok.setdefault(peer, now)  # newly seen: give it a full grace period
                last_probe.setdefault(peer, now - period * rng.random())  # spread first probes
                if now - last_ok[peer] > dead_after:
                    nursery.start_soon(drop, peer)
                elif peer not in in_flight and now - last_probe[peer] >= period - 1e-3:
                    due.append(peer)
            # A few per tick, longest-waiting first: py-libp2p's PingService opens streams under one
            # lock, so a burst of probes queues behind the slowest and times out (measured with 40
            # nodes: every peer "silent" for 4 periods, dropped, redialled).
            due.sort(key=lambda peer: last_probe[peer])
            per_tick = len(due) if rate_per_s <= 0 else max(1, math.ceil(rate_per_s * interval_s))
            for peer in due[:per_tick]:
                last_probe[peer] = now
                nursery.start_soon(probe, peer)
