"""Kademlia discovery: dial the bootstraps (retry with jitter), then refresh the routing table.

py-libp2p 0.8.1 fills the routing table only from the first self-lookup and inbound queries and
refreshes every 600 s, so early joiners never learn of later ones. We refresh every
``refresh_min_s`` while the table is small or still growing and back off to ``refresh_max_s`` once it
is stable; every routing-table peer we are not connected to is dialled (up to ``max_peers``).
"""

from __future__ import annotations

import random

import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.config import NetworkConfig
from gaia_p2p.node.host import P2P, connect_to

log = structlog.get_logger("gaia.discovery")

SMALL_TABLE = 4


async def dial_bootstrap(p2p: P2P, addr: str, *, attempts: int = 5, timeout_s: float = 10.0) -> bool:
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            peer = await connect_to(p2p, addr, timeout_s=timeout_s)
            log.info(logs.BOOTSTRAP_CONNECTED, peer_id=peer, addr=addr, attempt=attempt)
            return True
        except (Exception, trio.TooSlowError) as e:  # dial errors come in many libp2p types
            log.warning(logs.BOOTSTRAP_FAILED, addr=addr, attempt=attempt, error=f"{type(e).__name__}: {e}"[:200])
        await trio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 10.0)
    return False


async def run_discovery(p2p: P2P, bootstrap: tuple[str, ...], net: NetworkConfig) -> None:
    own = p2p.peer_id
    boots = [a for a in bootstrap if not a.endswith("/p2p/" + own)]
    if boots:
        async with trio.open_nursery() as nursery:
            for addr in boots:
                nursery.start_soon(dial_bootstrap, p2p, addr)
    known: set[str] = set()
    period = net.refresh_min_s
    while True:
        if boots and not p2p.connected_peers():
            for addr in boots:  # lost everyone: go back to the bootstraps
                await dial_bootstrap(p2p, addr, attempts=1)
        with trio.move_on_after(30):
            try:
                await p2p.dht.refresh_routing_table()
            except Exception as e:
                log.debug("dht_refresh_failed", error=f"{type(e).__name__}: {e}"[:200])
        grew = False
        connected = set(p2p.connected_peers())
        for pid in p2p.routing_table_peers():
            spid = str(pid)
            if spid == own:
                continue
            if spid not in known:
                known.add(spid)
                grew = True
                log.info(logs.PEER_DISCOVERED, peer_id=spid, routing_table_size=p2p.routing_table_size())
            if spid not in connected and len(connected) < net.max_peers:
                with trio.move_on_after(5):
                    try:
                        await p2p.host.connect(p2p.host.get_peerstore().peer_info(pid))
                        connected.add(spid)
                    except Exception as e:
                        log.debug("peer_dial_failed", peer_id=spid, error=f"{type(e).__name__}: {e}"[:200])
        if grew or p2p.routing_table_size() < SMALL_TABLE:
            period = net.refresh_min_s
        else:
            period = min(period * 2, net.refresh_max_s)
        await trio.sleep(period * (0.8 + 0.4 * random.random()))
