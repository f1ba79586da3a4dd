"""The libp2p host, pubsub and DHT behind one ``async with``: py-libp2p's Service API stays in here.

TCP + Noise + yamux (mplex offered too); identify and ping served by the host; GossipSub on
/meshsub/1.1.0 (1.2.0 and 1.0.0 accepted) with StrictSign; Kademlia on /ipfs/kad/1.0.0 in server mode.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import structlog
import trio

from gaia_p2p.config import NetworkConfig
from gaia_p2p.core.limits import InboundLimits
from gaia_p2p.errors import CheckpointError
from gaia_p2p.net import libp2p_fixes, scoring, traffic
from gaia_p2p.net.candidates import DialCandidates

log = structlog.get_logger("gaia.host")

IDENTITY_FILE = "identity.key"


def load_or_create_identity(data_dir: Path) -> Any:
    """The node's Ed25519 key pair, persisted (mode 0600) so the peer id survives restarts."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.identity_utils import load_identity, save_identity

    path = data_dir / IDENTITY_FILE
    if path.exists():
        try:
            return load_identity(path)
        except (ValueError, OSError) as e:
            raise CheckpointError(f"identity key {path} is unreadable ({e}); move it away to start with a "
                                  f"new peer id") from None
    key_pair = create_new_key_pair()
    tmp = path.with_suffix(".tmp")
    save_identity(key_pair, tmp)
    os.replace(tmp, path)
    return key_pair


_LIBP2P_LEVEL = [logging.ERROR]
_LIBP2P_HANDLER = logging.StreamHandler()
_LIBP2P_HANDLER.setFormatter(logging.Formatter("libp2p %(levelname)s %(name)s: %(message)s"))


def quiet_libp2p_logging(level: str | None = None) -> None:
    """libp2p's module loggers have propagate=False and no handler (so Python's last-resort handler
    prints bare lines), and some force INFO. Give every one of them our level and one handler.
    Called again after libp2p modules are imported, since their loggers appear at import."""
    if level is not None:
        _LIBP2P_LEVEL[0] = getattr(logging, level.upper(), logging.ERROR)
    lvl = _LIBP2P_LEVEL[0]
    for name in ["libp2p", *list(logging.root.manager.loggerDict)]:
        if name.startswith(("libp2p", "multiaddr", "anyio_service")):
            lg = logging.getLogger(name)
            lg.setLevel(lvl)
            if not lg.propagate and _LIBP2P_HANDLER not in lg.handlers:
                lg.addHandler(_LIBP2P_HANDLER)
    logging.getLogger("libp2p").propagate = False
    if _LIBP2P_HANDLER not in logging.getLogger("libp2p").handlers:
        logging.getLogger("libp2p").addHandler(_LIBP2P_HANDLER)


def check_listen_ports_free(listen: tuple[str, ...]) -> None:
    """py-libp2p binds with SO_REUSEPORT: a second node on a busy port starts silently and steals
    half the inbound connections. Probe each fixed port with a plain bind first."""
    import socket

    from gaia_p2p.errors import ConfigError

    for addr in listen:
        ma = multiaddr.Multiaddr(addr)
        port = int(ma.value_for_protocol("tcp"))
        if port == 0:
            continue
        family = socket.AF_INET6 if "/ip6/" in addr else socket.AF_INET
        host = ma.value_for_protocol("ip6" if family == socket.AF_INET6 else "ip4")
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError as e:
                raise ConfigError(f"config error: network.listen = {addr!r} cannot be used ({e.strerror}); "
                                  f"another process listens there: pass --listen with another port, or port 0 "
                                  f"for a free one") from None


@dataclass
class P2P:
    host: Any
    pubsub: Any
    gossipsub: Any
    dht: Any
    candidates: DialCandidates = field(default_factory=DialCandidates)  # peers lookups named, not met yet
    relay: Any = None  # net/relay.py Relay: circuits, reservations, hole punching

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id())

    def addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    def connected_peers(self) -> list[str]:
        return sorted(str(p) for p in self.host.get_connected_peers())

    def routing_table_size(self) -> int:
        return int(self.dht.get_routing_table_size())

    def routing_table_peers(self) -> list[Any]:
        return list(self.dht.routing_table.get_peer_ids())

    def dht_stats(self) -> dict[str, Any]:
        """What the DHT and muxer guards (libp2p_fixes N, O, P, P1) refused, and the dial candidates."""
        return {"table": dict(self.dht.gaia_table_stats), "kad_streams": dict(self.dht.gaia_stream_stats),
                "records": dict(self.dht.gaia_record_stats),
                "inbound_streams": dict(self.host.get_network().gaia_stream_stats),
                "candidates": len(self.candidates), "candidate_stats": dict(self.candidates.stats)}

    def no_direct_path(self, peers: Iterable[str]) -> frozenset[str]:
        """Of ``peers``, those we hold no direct connection to (net/relay.py)."""
        from gaia_p2p.net.relay import no_direct_path

        return no_direct_path(self.host, peers)

    def topic_peers(self, topic: str) -> list[str]:
        return sorted(str(p) for p in self.pubsub.peer_topics.get(topic, ()))

    def connection_stats(self) -> dict[str, Any]:
        """Connections opened since start and open now, by direction, and the inbound slots held:
        an operator's view of fix Q (held slots follow open inbound connections, never the total)."""
        network = self.host.get_network()
        now = Counter(str(c.direction)
                      for conns in network.connections.values() for c in conns)
        notifee = next(n for n in network.notifees if isinstance(n, _ConnectionNotifee))
        limiter = network._inbound_limiter
        return {"opened_inbound": notifee.opened["inbound"], "opened_outbound": notifee.opened["outbound"],
                "open_inbound": now["inbound"], "open_outbound": now["outbound"],
                "inbound_slots_held": int(limiter.borrowed_tokens), "inbound_slots": int(limiter.total_tokens),
                "refused_per_ip": network.gaia_inbound_limits.refused["per_ip"],
                "refused_per_peer": network.gaia_inbound_limits.refused["per_peer"],
                **({"relay": self.relay.snapshot()} if self.relay is not None else {})}


class _ConnectionNotifee:
    """Logs peer_connected / peer_disconnected (first connection / last connection)."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.opened: Counter[str] = Counter()

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        self.opened[str(conn.direction)] += 1  # "inbound" | "outbound" | "unknown"
        peer = conn.muxed_conn.peer_id
        if len(network.get_connections(peer)) <= 1:
            log.info("peer_connected", peer_id=str(peer), n_peers=len(network.connections))

    async def disconnected(self, network: Any, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id
        if not network.get_connections(peer):
            log.info("peer_disconnected", peer_id=str(peer), n_peers=len(network.connections))

    async def listen(self, network: Any, maddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, maddr: Any) -> None:
        pass


@asynccontextmanager
async def open_p2p(key_pair: Any, net: NetworkConfig, *,
                   on_bad_stream: Callable[[str, str], None]) -> AsyncIterator[P2P]:
    from libp2p import create_yamux_muxer_option, new_host
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
    from libp2p.network.config import ConnectionConfig
    from libp2p.pubsub.gossipsub import GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service

    quiet_libp2p_logging()  # again: the imports above created more loggers
    libp2p_fixes.install_class_patches()  # H's keepalive, Q, R, S, T: once per process
    traffic.install()  # wire-byte counters, on the same classes
    listen = [multiaddr.Multiaddr(a) for a in net.listen]
    # Small watermarks: the defaults (min 50, low 100) make the auto-connector dial every peer it
    # ever heard of. DHT lookups connect to the peers they query anyway (docs/LIBP2P.md, "What it costs").
    conn_cfg = ConnectionConfig(
        max_connections=max(net.max_peers * 2, 32),
        min_connections=0,
        low_watermark=0,
        high_watermark=max(net.max_peers * 2, 32),
        max_connections_per_peer=3,
        dial_timeout=5.0,
        inbound_stream_protocol_negotiation_timeout=libp2p_fixes.NEGOTIATE_S,  # P (default 10 s)
    )
    host = new_host(
        key_pair=key_pair,
        listen_addrs=listen,
        muxer_opt=create_yamux_muxer_option(),
        sec_opt=libp2p_fixes.noise_only_security(key_pair),
        connection_config=conn_cfg,
        enable_mDNS=False,
        enable_upnp=False,
    )
    gossipsub = GossipSub(
        protocols=list(libp2p_fixes.MESHSUB_PROTOCOLS_12 if net.meshsub == "1.2" else libp2p_fixes.MESHSUB_PROTOCOLS),
        **libp2p_fixes.gossipsub_options(
            heartbeat_s=net.heartbeat_s, degree=net.degree, degree_low=net.degree_low,
            degree_high=net.degree_high, eclipse_protection=net.eclipse_protection,
        ),
        score_params=scoring.score_params(heartbeat_s=net.heartbeat_s),
    )
    libp2p_fixes.bound_equivocation_cache(gossipsub)
    libp2p_fixes.stop_graft_churn(gossipsub)
    libp2p_fixes.cap_gossip_peers(gossipsub, net.gossip_peers)
    pubsub = Pubsub(host, gossipsub, strict_signing=True, max_inbound_rpc_size=net.max_rpc_bytes)
    libp2p_fixes.guard_pubsub_stream_handlers(host, pubsub, on_bad_stream)
    libp2p_fixes.enforce_peer_scores(pubsub)
    traffic.count_pubsub_copies(pubsub)
    # Every outgoing RPC, in this order: trimmed (L, M), counted as it is sent, written whole (B).
    libp2p_fixes.install_outgoing_rpc_pipeline(pubsub, stages=(
        *libp2p_fixes.OUTGOING_RPC_FIXES,
        ("count_rpc_out", traffic.count_rpc_out),
    ))
    host.get_network().gaia_inbound_limits = InboundLimits(per_ip=net.max_inbound_per_ip,
                                                           exempt=net.limits_exempt)  # fix Q applies it
    # One TCP attempt per dial (py-libp2p's swarm makes 4, 0.1-0.4 s apart): every loop that dials
    # (bootstraps, discovery's candidates) retries with its own backoff, and a lookup that meets a
    # made-up peer should pay one refused connect for it, not four.
    from libp2p.network.config import RetryConfig

    host.get_network().retry_config = RetryConfig(max_retries=0)
    libp2p_fixes.cap_inbound_streams(host)
    dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
    candidates = DialCandidates()
    own = host.get_id()

    def on_named(source: Any, named: list[Any]) -> None:
        now = trio.current_time()
        network = host.get_network()
        for pid in named:
            if pid != own and not network.get_connections(pid):
                candidates.offer(str(pid), str(source), now)

    libp2p_fixes.admit_only_answering_peers(dht, on_named)
    libp2p_fixes.bound_kad_streams(host, dht)
    libp2p_fixes.refuse_dht_records(dht)
    host.get_network().register_notifee(_ConnectionNotifee(host))
    from gaia_p2p.net import relay as relay_mod

    rel = relay_mod.build(host, net)  # before identify runs: it lists the relay protocols
    host.get_network().register_notifee(relay_mod.WakeNotifee(rel))

    async with host.run(listen_addrs=listen):
        async with background_trio_service(pubsub), background_trio_service(gossipsub):
            await pubsub.wait_until_ready()
            async with background_trio_service(dht), trio.open_nursery() as relay_nursery:
                await relay_nursery.start(relay_mod.run, rel)
                yield P2P(host=host, pubsub=pubsub, gossipsub=gossipsub, dht=dht, candidates=candidates,
                          relay=rel)
                relay_nursery.cancel_scope.cancel()


async def connect_to(p2p: P2P, addr: str, *, timeout_s: float = 10.0) -> str:
    """Dial ``addr`` (with /p2p/ID), add it to the DHT routing table; returns its peer id."""
    from libp2p.peer.peerinfo import info_from_p2p_addr

    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    with trio.fail_after(timeout_s):
        await p2p.host.connect(info)
    await p2p.dht.add_peer(info.peer_id)
    return str(info.peer_id)
