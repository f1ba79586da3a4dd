"""Kademlia discovery: dial the bootstraps (retry with jitter), then refresh the routing table.

py-libp2p 0.8.1 fills the routing table only from the first self-lookup and inbound queries and
refreshes every 600 s, so early joiners never learn of later ones. We refresh after
``refresh_min_s`` and back off (x2) while the table grows, straight to ``refresh_max_s`` after a
round that added nothing; back to ``refresh_min_s`` when the table empties or we lost every
connection. A lookup costs ~28 KB at 40 nodes (20 queries, each answer
naming 20 peers with addresses), so lookups are few and the table fills another way: every peer a
lookup's answers named is a dial candidate (net/candidates.py: a few attempts each, with backoff,
at most 20 per naming peer), and every connected peer that serves the DHT goes into the table, at
the pace of connections, for free. Nothing enters the table for being named (libp2p_fixes N): a
peer that answers with made-up peers costs us a few failed dials, not the table.
"""

from __future__ import annotations


import numpy as np
import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.config import NetworkConfig
from gaia_p2p.net.host import P2P, connect_to

log = structlog.get_logger("gaia.discovery")

def forget_failed_dials(p2p: P2P, addr: str) -> None:
    """py-libp2p 0.8.1's swarm refuses to dial a peer for 60 s after every address of it failed once
    (``_NegativePeerCache``, ``SwarmException: ... recently failed all addresses``). A node cut off
    by a partition dials its bootstraps every couple of seconds; the first failure then locked it
    out for a minute after the heal (tests/e2e/test_netns.py waited 60 s for a bootstrap it could
    reach), and a peer's dial candidates (the table entries it lost) the same. Bootstrap and
    candidate dials have their own backoff, so they skip that cache."""
    cache = getattr(p2p.host.get_network(), "_negative_peer_cache", None)
    if cache is not None and "/p2p/" in addr:
        cache.evict(addr.rsplit("/p2p/", 1)[1])


async def dial_bootstrap(p2p: P2P, addr: str, rng: np.random.Generator, *, attempts: int = 5,
                         timeout_s: float = 10.0) -> bool:
    delay = 0.5
    for attempt in range(1, attempts + 1):
        forget_failed_dials(p2p, addr)
        try:
            peer = await connect_to(p2p, addr, timeout_s=timeout_s)
            log.info(logs.BOOTSTRAP_CONNECTED, peer_id=peer, addr=addr, attempt=attempt)
            return True
        except (Exception, trio.TooSlowError) as e:  # dial errors come in many libp2p types
            log.warning(logs.BOOTSTRAP_FAILED, addr=addr, attempt=attempt, error=f"{type(e).__name__}: {e}"[:200])
        await trio.sleep(delay * (0.5 + rng.random()))
        delay = min(delay * 2, 10.0)
    return False


# A full refresh (py-libp2p's: a lookup per non-empty bucket) in the first rounds, where a joiner
# learns of the far half of the network, then every 8th round; the others look up our own id only.
FULL_REFRESH_FIRST = 3
FULL_REFRESH_EVERY = 8
DIALS_PER_ROUND = 16  # candidates dialled per round at most (8 at a time)
TABLE = "routing-table"  # the source of candidates that were in our table and are not connected now


async def _dial(p2p: P2P, pid: str, limit: trio.CapacityLimiter, results: dict[str, bool]) -> None:
    from libp2p.peer.id import ID

    async with limit:
        ok = False
        forget_failed_dials(p2p, "/p2p/" + pid)  # candidates have their own backoff (net/candidates.py)
        with trio.move_on_after(5):
            try:
                peer = ID.from_base58(pid)
                await p2p.host.connect(p2p.host.get_peerstore().peer_info(peer))
                ok = True
            except Exception as e:  # dial errors come in many libp2p types
                log.debug("peer_dial_failed", peer_id=pid, error=f"{type(e).__name__}: {e}"[:200])
        if not ok and p2p.relay is not None:  # behind NAT: through a relay it reserved on
            ok = await p2p.relay.dial(ID.from_base58(pid))
        results[pid] = ok


async def self_lookup(p2p: P2P) -> None:
    """One lookup of our own id. py-libp2p's refresh also looks up a random key in every non-empty
    bucket: ~5x the queries (each answer carries 20 peers with addresses, ~1.4 KB); measured with 40
    nodes (scripts/scale.py), refreshing that way every 2 s cost ~20 KB/s per node, more than all
    the gossip. What the answers name becomes dial candidates (libp2p_fixes N), not table entries."""
    await p2p.dht.peer_routing.find_closest_peers_network(p2p.host.get_id().to_bytes())


async def sync_connected_into_table(p2p: P2P) -> None:
    """Every connected peer that serves the DHT into the routing table. py-libp2p fills the table
    only from lookups and inbound queries: a peer that dialled us for gossip, or that a lookup's
    dial met, may never get in. The gate (libp2p_fixes N) admits connected peers, before identify
    too (as kad-dht does); one that identify then shows not to serve the DHT is taken out here."""
    from libp2p.kad_dht.common import PROTOCOL_ID

    peerstore = p2p.host.get_peerstore()
    for pid in p2p.routing_table_peers():  # admitted before identify ran, and identify said no DHT
        protocols = peerstore.get_protocols(pid) if peerstore.has_peer(pid) else []
        if protocols and str(PROTOCOL_ID) not in protocols:
            p2p.dht.routing_table.remove_peer(pid)
    in_table = {str(pid) for pid in p2p.routing_table_peers()}
    for pid in p2p.host.get_connected_peers():
        p2p.candidates.connected(str(pid))
        if str(pid) not in in_table:
            with trio.move_on_after(2):
                try:
                    await p2p.dht.add_peer(pid)
                except Exception as e:
                    log.debug("dht_add_failed", peer_id=str(pid), error=f"{type(e).__name__}: {e}"[:200])


async def dial_candidates(p2p: P2P, room: int) -> dict[str, bool]:
    """Dial the candidates that are due (up to ``room`` and ``DIALS_PER_ROUND``): peers lookups
    named, and table entries we lost the connection to. A table entry we cannot reach leaves the
    table; it comes back once it is connected again."""
    from libp2p.peer.id import ID

    now = trio.current_time()
    connected = set(p2p.connected_peers())
    for pid in p2p.routing_table_peers():
        if str(pid) not in connected:
            p2p.candidates.offer(str(pid), TABLE, now, capped=False)  # bounded by the table
    results: dict[str, bool] = {}
    due = [p for p in p2p.candidates.due(now, min(room, DIALS_PER_ROUND)) if p not in connected]
    async with trio.open_nursery() as dials:
        limit = trio.CapacityLimiter(8)
        for pid in due:
            dials.start_soon(_dial, p2p, pid, limit, results)
    now = trio.current_time()
    isolated = not p2p.connected_peers()  # every dial failed and nobody else reaches us: our side is cut
    for pid, ok in results.items():
        p2p.candidates.dialled(pid, ok, now, isolated=isolated)
        if not ok:
            p2p.dht.routing_table.remove_peer(ID.from_base58(pid))
    p2p.candidates.prune(now)
    return results


async def run_discovery(p2p: P2P, bootstrap: tuple[str, ...], net: NetworkConfig,
                        rng: np.random.Generator) -> None:
    own = p2p.peer_id
    boots = [a for a in bootstrap if not a.endswith("/p2p/" + own)]
    if boots:
        async with trio.open_nursery() as nursery:
            for addr in boots:
                nursery.start_soon(dial_bootstrap, p2p, addr, rng)
    known: set[str] = set()
    refused_seen = 0
    period = net.refresh_min_s
    last_size = 0
    rounds = 0
    while True:
        if boots and not p2p.connected_peers():
            for addr in boots:  # lost everyone: go back to the bootstraps
                await dial_bootstrap(p2p, addr, rng, attempts=1)
        # a lookup needs a peer to ask: alone (a partition) it would only wait out dials to the dead
        # peers still in the table, delaying the next bootstrap dial by up to 30 s after a heal
        if p2p.connected_peers():
            with trio.move_on_after(30):
                try:
                    if rounds < FULL_REFRESH_FIRST or rounds % FULL_REFRESH_EVERY == 0:
                        await p2p.dht.refresh_routing_table()  # a lookup per non-empty bucket
                    else:
                        await self_lookup(p2p)
                except Exception as e:
                    log.debug("dht_refresh_failed", error=f"{type(e).__name__}: {e}"[:200])
            rounds += 1
        connected = set(p2p.connected_peers())
        await sync_connected_into_table(p2p)
        in_table = {str(pid) for pid in p2p.routing_table_peers()} - {own}
        for spid in sorted(in_table - known):
            log.info(logs.PEER_DISCOVERED, peer_id=spid, routing_table_size=len(in_table))
        known = in_table  # as bounded as the table: a peer that left and comes back is logged again
        # Dial what lookups told us of: in a small network one lookup names nearly everyone, so
        # connections (and, through them, the table) fill without more lookups.
        await dial_candidates(p2p, max(0, net.max_peers - len(connected)))
        refused = p2p.dht.gaia_table_stats["refused_not_connected"] + p2p.candidates.stats["refused_per_source"]
        if refused > refused_seen:
            log.info("dht_peers_refused", refused_not_connected=p2p.dht.gaia_table_stats["refused_not_connected"],
                     refused_not_dht_server=p2p.dht.gaia_table_stats["refused_not_dht_server"],
                     candidates=len(p2p.candidates), **{f"candidates_{k}": v for k, v in p2p.candidates.stats.items()})
            refused_seen = refused
        size = p2p.routing_table_size()
        if size == 0 or not connected:
            period = net.refresh_min_s
        elif size > last_size:  # still learning: look again soon, backing off
            period = min(period * 2, net.refresh_max_s)
        else:  # a round that taught nothing: the table is as full as lookups make it
            period = net.refresh_max_s
        last_size = size
        # sleep the period out, but wake at once when we lose every connection (a partition, a
        # restart of our only peers): then the bootstraps and the table are dialled again
        with trio.move_on_after(period * (0.8 + 0.4 * rng.random())):
            await trio.sleep(net.refresh_min_s)  # never spin, even while alone
            while p2p.connected_peers():
                await sync_connected_into_table(p2p)  # between lookups too: joiners dial us
                await trio.sleep(2.0)
