"""Every workaround for py-libp2p 0.8.1 lives here, each named after the bug it guards against.

See ../shared/LIBP2P_NOTES.md for how each was reproduced on this machine; A-G have a test in
tests/integration/test_libp2p_fixes.py that reproduces the bug they guard against, H is exercised
by the partition in tests/e2e/test_netns.py (needs root and network namespaces).

A. ``guard_pubsub_stream_handlers``: one malformed pubsub frame raises an uncaught protobuf
   ``DecodeError`` inside ``Pubsub.continuously_read_stream`` that ends ``host.run()`` and the whole
   ``trio.run``: any peer can kill any node. We reset that stream only, count and log it.
B. ``serialize_pubsub_writes`` (upstream #793, made worse by #1407): ``write_msg`` from several tasks
   interleave yamux frames of large RPCs on one stream; the receiver resets and the sender forgets the
   peer's subscription for good. A per-stream lock around ``Pubsub.write_msg``.
C/D. ``gossipsub_options``: spam protection (10 msg/s per forwarder, counting our own publishes,
   silently dropping honest traffic), adaptive gossip (stretches the heartbeat to 30-60 s), eclipse
   protection with 3 distinct IPs (impossible on one machine) and the 120 s default heartbeat are
   all overridden.
F. ``bound_equivocation_cache``: GossipSub keeps every message it ever saw (full payload) in
   ``equivocation_detection``, an unbounded dict; we cap it.
G. ``noise_only_security``: ``new_host`` offers plaintext and secio next to Noise by default; a peer
   that proposes plaintext first gets an unauthenticated, unencrypted link. We offer Noise only.
H. ``abort_connections``: nothing pings idle connections, so a partitioned peer stays connected for
   as long as TCP retransmits (~15 min, measured in network namespaces); and closing a connection
   whose TCP send buffer is full (a dead link we kept gossiping to) blocks. node/liveness.py pings;
   a dead peer's connections are closed gracefully with a deadline, then aborted at the socket.
Not worked around (documented in the README): E, mesh isolation with more topic peers than
``degree_high`` (seen at 20 nodes in one process, not at 12).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
import trio

log = structlog.get_logger("gaia.libp2p_fixes")

# Offered in this order: 1.1.0 first (IDONTWANT of 1.2.0 doubles RPCs and CPU per hop here),
# 1.2.0 and 1.0.0 still accepted so any implementation can join.
MESHSUB_PROTOCOLS = ("/meshsub/1.1.0", "/meshsub/1.2.0", "/meshsub/1.0.0")


def gossipsub_options(*, heartbeat_s: float, degree: int, degree_low: int, degree_high: int,
                      eclipse_protection: bool) -> dict[str, Any]:
    """C, D and the heartbeat: keyword arguments for ``GossipSub``."""
    return dict(
        degree=degree,
        degree_low=degree_low,
        degree_high=degree_high,
        heartbeat_interval=heartbeat_s,  # default 120 s
        heartbeat_initial_delay=0.1,
        time_to_live=30,
        gossip_window=3,
        gossip_history=5,
        prune_back_off=10,
        spam_protection_enabled=False,  # C
        adaptive_gossip_enabled=False,  # D
        eclipse_protection_enabled=eclipse_protection,
    )


def guard_pubsub_stream_handlers(host: Any, pubsub: Any, on_bad_stream: Callable[[str, str], None]) -> None:
    """A: re-register the pubsub stream handlers so a bad frame resets that stream only."""
    original = pubsub.stream_handler

    async def guarded(stream: Any) -> None:
        try:
            await original(stream)
        except Exception as e:  # protobuf DecodeError and whatever else a hostile frame triggers
            try:
                peer = str(stream.muxed_conn.peer_id)
            except Exception:
                peer = "?"
            on_bad_stream(peer, f"{type(e).__name__}: {e}"[:200])
            try:
                await stream.reset()
            except Exception:
                pass
            try:
                pubsub._handle_dead_peer(stream.muxed_conn.peer_id)
            except Exception:
                pass

    for proto in pubsub.protocols:
        host.set_stream_handler(proto, guarded)
    pubsub.stream_handler = guarded


def serialize_pubsub_writes(pubsub: Any) -> None:
    """B: one writer at a time per stream, for whole RPCs."""
    original = pubsub.write_msg
    locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()

    async def write_msg(stream: Any, rpc_msg: Any) -> bool:
        lock = locks.get(stream)
        if lock is None:
            lock = locks[stream] = trio.Lock()
        async with lock:
            return await original(stream, rpc_msg)

    pubsub.write_msg = write_msg


class BoundedDict(OrderedDict):  # type: ignore[type-arg]
    """A dict that forgets its oldest entries beyond ``maxlen``."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.maxlen:
            self.popitem(last=False)


def bound_equivocation_cache(gossipsub: Any, maxlen: int = 512) -> None:
    """F: cap the per-node cache of seen messages used for equivocation detection."""
    gossipsub.equivocation_detection = BoundedDict(maxlen)


def noise_only_security(key_pair: Any) -> dict[Any, Any]:
    """G: security options for ``new_host(sec_opt=...)``: Noise only."""
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    return {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519().private_key)}


def _socket_streams(obj: Any, depth: int = 7) -> list[trio.SocketStream]:
    """The trio socket streams under a libp2p connection object (transport, security, muxer layers)."""
    found: list[trio.SocketStream] = []
    seen: set[int] = set()
    frontier = [obj]
    for _ in range(depth):
        nxt = []
        for o in frontier:
            if id(o) in seen or o is None or isinstance(o, (str, bytes, int, float)):
                continue
            seen.add(id(o))
            if isinstance(o, trio.SocketStream):
                found.append(o)
                continue
            try:
                nxt.extend(v for k, v in vars(o).items() if not k.startswith("__"))
            except TypeError:
                pass
        frontier = nxt
    return found


def abort_connections(host: Any, peer: Any) -> int:
    """H: close the sockets of every connection to ``peer`` at once (no goodbye on a dead link)."""
    n = 0
    for conn in list(host.get_network().get_connections(peer)):
        for stream in _socket_streams(conn):
            try:
                stream.socket.close()
                n += 1
            except Exception:
                pass
    return n


def forget_peer(host: Any, pubsub: Any, peer: Any) -> None:
    """H: after aborting a dead peer's sockets, make the swarm and pubsub forget it now (their own
    cleanup waits on reads that may never return)."""
    try:
        host.get_network().connections.pop(peer, None)
    except Exception:
        pass
    try:
        pubsub._handle_dead_peer(peer)
    except Exception:
        pass
