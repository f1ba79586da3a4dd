"""Every workaround for py-libp2p 0.8.1 lives here, each named after the bug it guards against.

See docs/LIBP2P.md for how each was found and what it cost. tests/integration/test_libp2p_fixes.py
shows each bug on the pinned py-libp2p, unpatched, next to the test of its fix: a
``test_bug_X_upstream_...`` for A, B, F, G, I, L, M, Q, R, S, T and W, the ``fixed=False`` cases for N, O, P
and P1, the first half of the J and K tests. The day py-libp2p is upgraded, the upstream tests
that fail name the fixes that may go. C/D are checked as the options a node runs with; H is
exercised by the partition in tests/e2e/test_netns.py (needs root and network namespaces).

How they are installed (by net/host.py):

- ``install_class_patches()``: H's keepalive, Q, R, S, T and W patch py-libp2p's classes, once per process
  (a second call is a no-op); ``upstream(cls, name)`` returns py-libp2p's own method.
- ``noise_only_security`` (G) and ``gossipsub_options`` (C/D) are arguments of ``new_host`` and
  ``GossipSub``.
- On each instance: F, J, K on the GossipSub; A, I on the Pubsub (I on its router too); N, O, P1 on
  the DHT; P on the swarm.
- ``install_outgoing_rpc_pipeline(pubsub, stages)``: the one replacement of ``Pubsub.write_msg``:
  the stages in the order given (``OUTGOING_RPC_FIXES``: L then M; the node appends its traffic
  counter), then the serialized write (B).

A. ``guard_pubsub_stream_handlers``: one malformed pubsub frame raises an uncaught protobuf
   ``DecodeError`` inside ``Pubsub.continuously_read_stream`` that ends ``host.run()`` and the whole
   ``trio.run``: any peer can kill any node. We reset that stream only, count and log it.
B. ``install_outgoing_rpc_pipeline``, its last step (upstream #793, made worse by #1407):
   ``write_msg`` from several tasks interleave the yamux frames of large RPCs on one stream; the
   receiver resets and the sender forgets the peer's subscription for good. A per-stream lock
   around py-libp2p's ``Pubsub.write_msg``.
C/D. ``gossipsub_options``: spam protection (10 msg/s per forwarder, counting our own publishes,
   silently dropping honest traffic), adaptive gossip (stretches the heartbeat to 30-60 s), eclipse
   protection with 3 distinct IPs (impossible on one machine) and the 120 s default heartbeat are
   all overridden.
F. ``bound_equivocation_cache``: GossipSub keeps every message it sees (full payload) in
   ``equivocation_detection``; only the heartbeat trims it, and only above 1000 entries (to 500):
   1000 full payloads stay for good (~200 MB of 200 KB elites), more between two heartbeats. A
   dict capped at 512 at every insertion.
G. ``noise_only_security``: ``new_host`` offers TLS, secio and plaintext next to Noise by default;
   a peer that proposes plaintext gets an unauthenticated, unencrypted link. We offer Noise only.
H. ``abort_connections``: nothing pings idle connections, so a partitioned peer stays connected for
   as long as TCP retransmits (~15 min, measured in network namespaces); and closing a connection
   whose TCP send buffer is full (a dead link we kept gossiping to) blocks. net/liveness.py pings;
   a dead peer's connections are closed gracefully with a deadline, then aborted at the socket
   (``abort_connections``, ``forget_peer``); every libp2p TCP socket gets kernel keepalive and
   TCP_USER_TIMEOUT (``_tcp_keepalive``, a class patch).
I. ``enforce_peer_scores`` (parameters in net/scoring.py): py-libp2p's ``PeerScorer`` counts a
   validator's rejection (P4) but little acts on it, and what does can be turned against honest peers:
   - ``allow_publish``/``allow_gossip`` for one topic read that topic's counters only (invalid
     telemetry leaves the migrants topic open): the score is summed over every topic, as go-libp2p does;
   - a disconnect deletes a peer's counters, so reconnecting wipes its score: P4 counters of a
     disconnected peer are kept and decayed, and forgotten below 0.01 (go's DecayToZero) or beyond
     4096 disconnected peers;
   - nothing prunes a graylisted peer from the mesh (only a mesh above ``degree_high`` is trimmed)
     and the mesh refill grafts any topic peer: each heartbeat now prunes graylisted peers and never
     grafts them (the v1.1 spec prunes at any negative score: see net/scoring.py for why not here);
   - the graylist is checked only on GRAFT and when forwarding: every control message (IHAVE, IWANT,
     GRAFT, PRUNE) of a graylisted peer is now dropped (its messages already are, by the publish gate
     before validation);
   - a validator can only accept or reject, so every rejection costs P4, and a cached rejection is
     charged again to every later forwarder of the same message: a sync validator calls
     ``ignore_message()`` for gossipsub's IGNORE (rate limits, our own errors), which is neither
     penalized nor cached.
J. ``stop_graft_churn``: "opportunistic grafting" runs at every heartbeat with a threshold every
   honest peer (score 0) meets: meshes grow past ``degree_high``, are pruned, grow again (~6
   GRAFT/PRUNE per node per second with 40 nodes, 58 % elite delivery). Switched off.
K. ``cap_gossip_peers``: IHAVE goes to max(6, 25 % of the non-mesh peers) per topic per heartbeat,
   fixed in the code; capped at ``network.gossip_peers`` (3).
L. ``strip_sender_record`` (a pipeline stage): a signed peer record (213 bytes) rides on every
   pubsub RPC we send.
M. ``strip_inlined_keys`` (a pipeline stage): the author's public key rides on every message copy,
   though an Ed25519 key is inlined in the ``from`` peer id (where receivers look first).
N. ``admit_only_answering_peers``: kad-dht adds to its routing table every peer a FIND_NODE answer
   names (with the addresses the answer claims), every peer it is about to query and every peer that
   opens a kad stream: one answer of 200 made-up peers filled a table from 0 to 202, served to every
   later asker. Only connected peers that identify lists as DHT servers get in; answers beyond k (20)
   peers are cut to the k closest (net/discovery.py dials the named ones as bounded candidates).
O. ``bound_kad_streams``: kad-dht serves 12 inbound streams at once and its reads have no deadline:
   12 idle (or 1 byte/s) streams from one peer refuse every honest FIND_NODE for as long as they stay.
   Each request gets ``KAD_IDLE_S`` (5 s), each peer ``KAD_STREAMS_PER_PEER`` (3) streams.
P. ``cap_inbound_streams``: every yamux SYN lives as a stream and a task until its 10 s negotiation
   timeout, without a per-peer limit (rcmgr counts streams globally only): one peer kept 2000 alive at
   once. ``INBOUND_STREAMS_PER_PEER`` (64) and ``INBOUND_STREAMS_TOTAL`` (1024), negotiation 5 s.
P1. ``refuse_dht_records``: the default validator stores and echoes PUT_VALUE of any key without a
   namespace (50,000 records of up to 1 MiB) and ADD_PROVIDER for any key; gaia uses neither: refused.
N, O, P, P1: tests/integration/test_libp2p_fixes.py (bug and fix) and test_dht_hostile.py (a node).
Q. ``_return_inbound_slots`` (a class patch): the inbound handler held its connection slot until
   the swarm ended, not the connection: after 128 inbound connections since start the node refused
   every new one. It now ends with its connection; the same wrapper applies the per-IP limit
   (core/limits.py).
R. ``_teardown_without_race`` (a class patch): ``Pubsub._teardown_if_connected`` (run by
   ``add_to_blacklist``) deleted a peer after an await during which ``_handle_dead_peer`` may have
   deleted it: the KeyError ended the host. A burst of bans (29 liars) crashed the node.
S. ``_ipv6_remote_address`` (a class patch): ``TrioTCPStream.get_remote_address`` accepts only a
   2-tuple from ``getpeername()``, and an IPv6 socket gives a 4-tuple, so every IPv6 connection
   has no remote address: the per-IP inbound limit (Q) treated IPv6 peers as "no IP" and let them
   all in, identify sent them no observed address, and AutoNAT could not dial them back. The
   (host, port) of the 4-tuple is returned.
W. ``_batch_window_updates`` (a class patch): a yamux stream sends a WINDOW_UPDATE frame after
   every ``read`` that leaves its receive window below full, whatever the amount: a pool results
   frame read as a length byte and a body cost its sender two 12-byte frames back, each one Noise
   frame, one socket write and one wakeup on both sides (12 % of a pool member's main-thread time,
   py-spy). As go-yamux does, credit now goes back once half the window has been read.
J, K, L and M measured with 40 node processes (scripts/scale.py, docs/BENCHMARKS.md "Scaling").
Not worked around (documented in the README): E, mesh isolation with more topic peers than
``degree_high`` (seen at 20 nodes in one process, not at 12; J may have been its cause, unverified).
"""

from __future__ import annotations

import contextvars
import functools
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
MESHSUB_PROTOCOLS_12 = ("/meshsub/1.2.0", "/meshsub/1.1.0", "/meshsub/1.0.0")


def _peer_of(stream: Any) -> Any:
    """The remote peer id of a libp2p stream, None for an object that has none."""
    try:
        return stream.muxed_conn.peer_id
    except AttributeError:
        return None


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
        except Exception as e:
            # Broad on purpose: besides protobuf's DecodeError, a hostile RPC reaches gossipsub's
            # handle_rpc (IHAVE, IWANT, GRAFT, PRUNE, extensions) with fields of its choosing, and any
            # error raised there would end host.run(). Whatever it is, it is counted and logged by
            # on_bad_stream, and only this stream goes.
            peer = _peer_of(stream)
            on_bad_stream(str(peer) if peer is not None else "?", f"{type(e).__name__}: {e}"[:200])
            await stream.reset()  # NetStream.reset swallows its muxer's errors: it raises nothing of its own
            if peer is not None:
                pubsub._handle_dead_peer(peer)  # raises nothing, known or not (py-libp2p calls it bare)

    for proto in pubsub.protocols:
        host.set_stream_handler(proto, guarded)
    pubsub.stream_handler = guarded


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
            except OSError as e:  # closing a socket that is being torn down: it is gone either way
                log.debug("socket_close_failed", peer_id=str(peer), error=str(e)[:200])
    return n


def forget_peer(host: Any, pubsub: Any, peer: Any) -> None:
    """H: after aborting a dead peer's sockets, make the swarm and pubsub forget it now (their own
    cleanup waits on reads that may never return)."""
    host.get_network().connections.pop(peer, None)
    pubsub._handle_dead_peer(peer)  # raises nothing, known peer or not


# --------------------------------------------------------------------------------------------------
# I. peer scores that act

#: Set by a sync topic validator that rejects a message for a reason that is not the forwarder's fault.
_IGNORED: contextvars.ContextVar[bool] = contextvars.ContextVar("gaia_message_ignored", default=False)
#: A P4 counter below this is forgotten (go-libp2p's DecayToZero).
DECAY_TO_ZERO = 0.01
#: Disconnected peers whose P4 counters are kept at most (oldest forgotten first).
MAX_RETAINED_PEERS = 4096


def ignore_message() -> None:
    """I: gossipsub's IGNORE for the message being validated: dropped, not forwarded, and neither
    charged to the forwarder's score nor cached as invalid. Call it from a *sync* validator just before
    it returns False: sync validators run in the task of ``Pubsub.push_msg``, which reports the
    rejection to the scorer right after (an async validator runs in a child task: this would be lost)."""
    _IGNORED.set(True)


def enforce_peer_scores(pubsub: Any) -> dict[str, int]:
    """I: make the score params given to ``GossipSub(score_params=...)`` act (see the module doc).
    Call once, after ``Pubsub(host, gossipsub)``. Returns live counters (also ``gossipsub.gaia_score_stats``):
    ``graylisted_rpcs`` (control messages dropped), ``mesh_pruned`` (graylisted peers pruned)."""
    from libp2p.exceptions import ValidationError

    gossipsub = pubsub.router
    scorer = gossipsub.scorer
    params = scorer.params
    stats = {"graylisted_rpcs": 0, "mesh_pruned": 0}
    retained: OrderedDict[Any, None] = OrderedDict()

    def score(peer: Any, topics: Any = None) -> float:
        """The peer's score over every topic it has counters in (``topics`` is ignored); reads the
        counters with ``.get`` so that asking about a peer never creates entries for it."""
        s = 0.0
        for counters, tp, sign in ((scorer.time_in_mesh, params.p1_time_in_mesh, 1.0),
                                   (scorer.first_message_deliveries, params.p2_first_message_deliveries, 1.0),
                                   (scorer.mesh_message_deliveries, params.p3_mesh_message_deliveries, 1.0),
                                   (scorer.invalid_messages, params.p4_invalid_messages, -1.0)):
            if tp.weight:
                s += sign * tp.weight * sum(min(v, tp.cap) for v in counters.get(peer, {}).values())
        behaviour = sum(d.get(peer, 0.0) for d in (scorer.behavior_penalty, scorer.graft_flood_penalties,
                                                   scorer.iwant_spam_penalties, scorer.ihave_spam_penalties,
                                                   scorer.equivocation_penalties))
        if behaviour > params.p5_behavior_penalty_threshold:
            s -= (behaviour - params.p5_behavior_penalty_threshold) * params.p5_behavior_penalty_weight
        if params.app_specific_score_fn is not None:
            scorer.update_app_specific_score(peer)
            s += scorer.app_specific_scores[peer] * params.p6_appl_slack_weight
        return s - scorer.ip_colocation_penalty(peer)

    scorer.score = score
    scorer.allow_publish = lambda peer, topics=None: score(peer) >= params.publish_threshold
    scorer.allow_gossip = lambda peer, topics=None: score(peer) >= params.gossip_threshold
    scorer.is_graylisted = lambda peer, topics=None: score(peer) < params.graylist_threshold
    scorer.allow_px_from = lambda peer, topics=None: score(peer) >= params.accept_px_threshold

    original_on_invalid = scorer.on_invalid_message

    def on_invalid_message(peer: Any, topic: str) -> None:
        if not _IGNORED.get():
            original_on_invalid(peer, topic)

    scorer.on_invalid_message = on_invalid_message

    original_remove = scorer.remove_peer

    def remove_peer(peer: Any) -> None:
        invalid = scorer.invalid_messages.pop(peer, None)
        original_remove(peer)
        if invalid and max(invalid.values()) >= DECAY_TO_ZERO:
            scorer.invalid_messages[peer] = invalid
            retained[peer] = None
            retained.move_to_end(peer)
            while len(retained) > MAX_RETAINED_PEERS:
                old, _ = retained.popitem(last=False)
                if old not in gossipsub.peer_protocol:
                    scorer.invalid_messages.pop(old, None)

    scorer.remove_peer = remove_peer

    original_heartbeat = scorer.on_heartbeat

    def on_heartbeat(dt_seconds: float = 1.0) -> None:
        original_heartbeat(dt_seconds)
        for peer in list(scorer.invalid_messages):
            counters = scorer.invalid_messages[peer]
            for topic in [t for t, v in counters.items() if v < DECAY_TO_ZERO]:
                del counters[topic]
            if not counters:
                del scorer.invalid_messages[peer]
                retained.pop(peer, None)

    scorer.on_heartbeat = on_heartbeat

    original_candidates = gossipsub._get_in_topic_gossipsub_peers_from_minus

    def candidates(topic: str, num_to_select: int, minus: Any, backoff_check: bool = False) -> list[Any]:
        graylisted = {p for p in pubsub.peer_topics.get(topic, ()) if score(p) < params.graylist_threshold}
        return original_candidates(topic, num_to_select, {*minus, *graylisted}, backoff_check)

    gossipsub._get_in_topic_gossipsub_peers_from_minus = candidates

    original_mesh_heartbeat = gossipsub.mesh_heartbeat

    def mesh_heartbeat() -> tuple[Any, Any]:
        to_graft, to_prune = original_mesh_heartbeat()
        for topic, peers in gossipsub.mesh.items():
            for peer in [p for p in peers if score(p) < params.graylist_threshold and p not in gossipsub.direct_peers]:
                peers.discard(peer)
                scorer.on_leave_mesh(peer, topic)
                stats["mesh_pruned"] += 1
                if topic in to_graft.get(peer, ()):  # grafted in this very heartbeat: just don't
                    to_graft[peer].remove(topic)
                    if not to_graft[peer]:
                        del to_graft[peer]
                elif topic not in to_prune[peer]:
                    to_prune[peer].append(topic)
        return to_graft, to_prune

    gossipsub.mesh_heartbeat = mesh_heartbeat

    original_handle_rpc = gossipsub.handle_rpc

    async def handle_rpc(rpc: Any, sender_peer_id: Any) -> None:  # a GRAFT included: no PRUNE in reply
        if score(sender_peer_id) < params.graylist_threshold:
            stats["graylisted_rpcs"] += 1
            return
        await original_handle_rpc(rpc, sender_peer_id)

    gossipsub.handle_rpc = handle_rpc

    original_validate = pubsub.validate_msg

    async def validate_msg(msg_forwarder: Any, msg: Any) -> None:
        _IGNORED.set(False)
        try:
            await original_validate(msg_forwarder, msg)
        except ValidationError:  # what validate_msg raises for a rejection (and caches)
            if _IGNORED.get():  # not cached: the next copy (maybe from an honest relay) is judged afresh
                pubsub.validation_cache._remove(pubsub._msg_id_constructor(msg))
            raise

    pubsub.validate_msg = validate_msg
    gossipsub.gaia_score_stats = stats
    return stats


def stop_graft_churn(gossipsub: Any) -> None:
    """J: py-libp2p runs its "opportunistic grafting" at every heartbeat (the spec: every 60, and
    only when the mesh's median score is below a positive threshold), with a threshold of
    max(median * 0.5, min * 1.1, gossip_threshold) = 0 when every peer scores 0: every honest topic
    peer qualifies, so each heartbeat grafts more peers, the mesh passes degree_high and is pruned
    back to degree, and again. Measured with 40 node processes (scripts/scale.py): ~6 GRAFT/PRUNE
    per node per second, meshes that never settle, 58 % elite delivery. Honest peers all score 0
    here (scoring.py), so opportunistic grafting has nothing to find: it is switched off."""

    def no_opportunistic_grafting(topic: str, peers_to_graft: Any) -> int:
        return 0

    gossipsub._perform_opportunistic_grafting = no_opportunistic_grafting


def cap_gossip_peers(gossipsub: Any, gossip_peers: int) -> None:
    """K: at every heartbeat py-libp2p sends IHAVE, per topic with messages in the gossip window, to
    max(6, 25 % of the non-mesh topic peers), a count no option changes. IHAVEs carry only message
    ids, but each one is an RPC, and an RPC costs ~1-2 ms of CPU here whatever its size: with 40 node
    processes they were 8 of the 14 RPCs a node sent per second (scripts/scale.py). Over reliable
    TCP links the mesh delivers; gossip repairs the rare gap, for which a few peers suffice."""

    def gossip_peers_count(topic: str, total_peers: int) -> int:
        return max(0, min(gossip_peers, total_peers))

    gossipsub._get_adaptive_gossip_peers_count = gossip_peers_count


# --------------------------------------------------------------------------------------------------
# B, L, M: the outgoing-RPC pipeline

#: One step of the outgoing-RPC pipeline: a name (for logs and tests) and a function that reads or
#: changes the ``rpc_pb2.RPC`` in place. Stages are synchronous: they run before the stream's write
#: lock is taken, and they only read and clear protobuf fields, which raises nothing on an RPC.
RpcStage = tuple[str, Callable[[Any], None]]


def strip_sender_record(rpc_msg: Any) -> None:
    """L: py-libp2p attaches its signed peer record (``senderRecord``, 213 bytes here) to every
    pubsub RPC it sends (publishes, forwards, IHAVE/IWANT, GRAFT/PRUNE), and every receiver verifies
    its signature; identify already told each peer our addresses. On a 300-700 byte heartbeat that is
    a third of the bytes. Outgoing RPCs go without it (receivers accept RPCs without one, as they
    must for go-libp2p, which does not send it). The hello RPC (our subscriptions, written once per
    stream by ``Pubsub._handle_new_peer`` without ``write_msg``) keeps it."""
    if rpc_msg.HasField("senderRecord"):
        rpc_msg.ClearField("senderRecord")


@functools.lru_cache(maxsize=4096)
def _key_inlined(from_id: bytes) -> bool:
    from libp2p.peer.id import ID

    return ID(from_id).extract_public_key() is not None  # None for a hashed id or bytes that are no id


def strip_inlined_keys(rpc_msg: Any) -> None:
    """M: py-libp2p puts the author's public key (``key``, 36 bytes + framing for Ed25519) in every
    message it publishes, and every forward repeats it. For Ed25519 (our identities) the key is
    inlined in the ``from`` peer id, and receivers take it from there (py-libp2p's
    ``signature_validator`` tries the peer id first; the gossipsub spec and go-libp2p omit the key
    when it is inlined). The signature does not cover ``key``, so outgoing messages drop it when
    ``from`` inlines it (~5 % of a heartbeat's bytes, on every copy)."""
    for m in rpc_msg.publish:
        if m.key and _key_inlined(bytes(m.from_id)):
            m.ClearField("key")


#: The fixes' stages, in the order they run (L and M are independent of each other). A node appends
#: its traffic counter after them (net/host.py), so that what is counted is what is sent.
OUTGOING_RPC_FIXES: tuple[RpcStage, ...] = (
    ("strip_sender_record", strip_sender_record),  # L
    ("strip_inlined_keys", strip_inlined_keys),  # M
)


def install_outgoing_rpc_pipeline(pubsub: Any, stages: tuple[RpcStage, ...] = OUTGOING_RPC_FIXES) -> None:
    """Replace ``pubsub.write_msg``, through which py-libp2p sends every pubsub RPC but the hello
    (the per-peer sending task, ``flush_pending_messages``, ``send_recent_messages``), with one
    pipeline: each of ``stages`` in the given order, then py-libp2p's own ``write_msg`` under a
    per-stream lock (B, the step named ``serialized_write``). Once per pubsub: a second call
    raises, so that no stage can run twice; ``pubsub.gaia_rpc_pipeline`` names the steps.

    B: ``send_recent_messages`` and ``flush_pending_messages`` write to a peer's stream while that
    peer's sender task writes too (upstream #793, made worse by #1407). yamux takes its lock per
    64 KB frame, not per ``write``, so the frames of two large RPCs interleave, the receiver cannot
    parse them and resets the stream, and the sender forgets the peer's subscription for good."""
    if hasattr(pubsub, "gaia_rpc_pipeline"):
        raise RuntimeError(f"the outgoing-RPC pipeline is installed already: {pubsub.gaia_rpc_pipeline}")
    write_whole = pubsub.write_msg  # py-libp2p's Pubsub.write_msg: one stream.write of the framed RPC
    locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()
    apply = tuple(fn for _, fn in stages)

    async def write_msg(stream: Any, rpc_msg: Any) -> bool:
        for stage in apply:
            stage(rpc_msg)
        lock = locks.get(stream)
        if lock is None:
            lock = locks[stream] = trio.Lock()
        async with lock:  # B: one writer at a time per stream, for whole RPCs
            return bool(await write_whole(stream, rpc_msg))

    pubsub.write_msg = write_msg
    pubsub.gaia_rpc_pipeline = (*(name for name, _ in stages), "serialized_write")


# --------------------------------------------------------------------------------------------------
# Class-level patches (H's keepalive, Q, R, S, T, W): every host of the process gets them, installed once by
# ``install_class_patches``; ``upstream`` keeps py-libp2p's own function for the tests that show
# each bug on the pinned version.

_UPSTREAM: dict[tuple[type, str], Any] = {}
_CLASS_PATCHES_INSTALLED = [False]


def _patch_class(cls: type, name: str, fn: Any) -> None:
    _UPSTREAM[(cls, name)] = getattr(cls, name)
    setattr(cls, name, fn)


def upstream(cls: type, name: str) -> Any:
    """py-libp2p's own ``cls.name``, patched or not."""
    return _UPSTREAM.get((cls, name), getattr(cls, name))


def install_class_patches() -> None:
    """H (kernel keepalive on every libp2p TCP socket), Q (inbound slots that come back), R (a
    ban that cannot crash the host), S (IPv6 remote addresses), T (the peerstore keeps our own
    key) and W (yamux window updates at half the window), on py-libp2p's classes. Once
    per process: a second call is a no-op, so each method is wrapped exactly once and ``upstream``
    always returns py-libp2p's own."""
    if _CLASS_PATCHES_INSTALLED[0]:
        return
    _CLASS_PATCHES_INSTALLED[0] = True
    _tcp_keepalive()
    _return_inbound_slots()
    _teardown_without_race()
    _ipv6_remote_address()
    _keep_own_key()
    _batch_window_updates()


# --------------------------------------------------------------------------------------------------
# W


def _batch_window_updates() -> None:
    """W: ``YamuxStream._auto_tune_and_send_window_update`` (run after every ``read``) sends a
    WINDOW_UPDATE for any shortfall of the receive window, so a stream of small frames costs a
    control frame back per read. go-yamux sends one only once the shortfall reaches half the window
    (``_grow_threshold``); reads below that return credit later, in one update. Above it
    py-libp2p's own method runs (its receive-window auto-tuning included). The sender never
    stalls: it still holds the other half of the window when the update is due."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    original = upstream(YamuxStream, "_auto_tune_and_send_window_update")

    async def _auto_tune_and_send_window_update(self: Any, *, bytes_read: int = 0) -> None:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        if self.target_recv_window - (self.recv_window + buffered) < self._grow_threshold():
            return
        await original(self, bytes_read=bytes_read)

    _patch_class(YamuxStream, "_auto_tune_and_send_window_update", _auto_tune_and_send_window_update)


# --------------------------------------------------------------------------------------------------
# S


def _ipv6_remote_address() -> None:
    """S: the remote (host, port) of an IPv6 TCP connection, which py-libp2p 0.8.1 returns as None
    (it expects getpeername() to give 2 values; IPv6 gives host, port, flowinfo, scope id)."""
    from libp2p.io.trio import TrioTCPStream

    original = upstream(TrioTCPStream, "get_remote_address")

    def get_remote_address(self: Any) -> tuple[str, int] | None:
        got = original(self)
        if got is not None:
            return got
        try:
            peer = self.stream.socket.getpeername()
        except (AttributeError, OSError):
            return None
        if isinstance(peer, tuple) and len(peer) == 4:
            self._cached_remote_address = (str(peer[0]), int(peer[1]))
            return self._cached_remote_address
        return None

    _patch_class(TrioTCPStream, "get_remote_address", get_remote_address)


# --------------------------------------------------------------------------------------------------
# T


def _keep_own_key() -> None:
    """T: py-libp2p 0.8.1's peerstore holds 1,000 peers; past that its periodic cleanup evicts the
    entries without addresses first, and the local peer's own entry (its key pair) has none. Once it
    is gone every identify request raises PeerStoreError out of the connection's nursery and the node
    dies: 1,000 visitors with fresh identities (a monitoring script) kill a public node. Entries that
    hold a private key (only the local peer's) are kept out of the eviction."""
    from libp2p.peer.peerstore import PeerStore

    original = upstream(PeerStore, "_enforce_peer_limit")

    def _enforce_peer_limit(self: Any) -> None:
        own = {pid: pd for pid, pd in self.peer_data_map.items() if pd.privkey is not None}
        for pid in own:
            del self.peer_data_map[pid]
        try:
            original(self)
        finally:
            self.peer_data_map.update(own)

    _patch_class(PeerStore, "_enforce_peer_limit", _enforce_peer_limit)


# --------------------------------------------------------------------------------------------------
# H, in the kernel

#: H: a silent link is probed after KEEPALIVE_IDLE_S, every KEEPALIVE_INTERVAL_S, declared dead after
#: KEEPALIVE_COUNT misses; data unacknowledged for USER_TIMEOUT_S ends the connection.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT, USER_TIMEOUT_S = 10, 5, 3, 25


def _tcp_keepalive() -> None:
    """H, in the kernel: every libp2p TCP socket gets SO_KEEPALIVE and TCP_USER_TIMEOUT (the
    constants above). A dead link then fails its reads, and py-libp2p closes the connection as for
    any reset, at no cost while the link carries traffic: the application pings (net/liveness.py)
    can stay rare on a large network."""
    import socket

    from libp2p.io.trio import TrioTCPStream

    original = upstream(TrioTCPStream, "__init__")
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT), ("TCP_USER_TIMEOUT", USER_TIMEOUT_S * 1000)):
        if hasattr(socket, name):  # Linux; other systems keep what they have
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))

    def init(self: Any, stream: Any) -> None:
        original(self, stream)
        try:
            for level, opt, value in opts:
                stream.socket.setsockopt(level, opt, value)
        except (OSError, AttributeError) as e:  # not a TCP socket (tests' fakes), or refused: keep going
            log.debug("tcp_keepalive_failed", error=f"{type(e).__name__}: {e}")

    _patch_class(TrioTCPStream, "__init__", init)


# --------------------------------------------------------------------------------------------------
# Q. inbound connection slots that come back

class _InboundConn:
    """The connection one inbound handler upgraded, handed from ``upgrade_inbound_raw_conn`` (same
    task) to the watcher that ends the handler when that connection closes."""

    def __init__(self) -> None:
        self.upgraded = trio.Event()
        self.conn: Any = None


_INBOUND: contextvars.ContextVar[_InboundConn | None] = contextvars.ContextVar("gaia_inbound_conn", default=None)


def _return_inbound_slots() -> None:
    """Q: ``Swarm._handle_inbound_connection`` takes a slot of ``_inbound_limiter``
    (``max_connections - min_connections`` of them) and gives it back when
    ``_do_handle_inbound_connection`` returns; that handler keeps the connection's socket open by
    waiting on ``self.manager.wait_finished()``, the end of the *swarm*, not of the connection. Every
    inbound connection ever accepted keeps its slot (and its handler task) until shutdown: after
    ``max_connections`` of them (128 with our settings) the node refuses every inbound connection
    for good. The handler now ends when its own connection closes, which returns the slot.
    The same wrapper applies the per-IP admission limit a Swarm carries as ``gaia_inbound_limits``
    (core/limits.py), for the whole life of each inbound connection, handshake included, and
    closes an inbound connection beyond ``max_connections_per_peer`` right after the handshake.

    Class-level: every Swarm of the process gets it (``install_class_patches``)."""
    from libp2p.abc import IMuxedConn
    from libp2p.network.swarm import Swarm
    from multiaddr.exceptions import ProtocolLookupError

    original_do_handle = upstream(Swarm, "_do_handle_inbound_connection")
    original_upgrade = upstream(Swarm, "upgrade_inbound_raw_conn")

    async def upgrade_inbound_raw_conn(self: Any, raw_conn: Any, maddr: Any) -> Any:
        muxed = await original_upgrade(self, raw_conn, maddr)
        # py-libp2p trims a peer's extra connections only when they are older than its grace
        # period, and only while adding another: a burst of connections from one identity stays.
        # An inbound connection beyond max_connections_per_peer is closed at once.
        mine = self.connections.get(muxed.peer_id, [])
        if len(mine) > self.connection_config.max_connections_per_peer:
            limits = getattr(self, "gaia_inbound_limits", None)
            if limits is not None:
                limits.refused["per_peer"] += 1
            log.debug("inbound_refused", peer_id=str(muxed.peer_id), reason="per_peer")
            for conn in [c for c in mine if c.muxed_conn is muxed]:
                await conn.close()
        holder = _INBOUND.get()
        if holder is not None:
            holder.conn = muxed
            holder.upgraded.set()
        return muxed

    def remote_ip(swarm: Any, read_write_closer: Any) -> str | None:
        remote = swarm._build_remote_multiaddr(read_write_closer)
        for proto in ("ip4", "ip6"):
            try:
                return str(remote.value_for_protocol(proto)) if remote is not None else None
            except ProtocolLookupError:
                continue
        return None

    async def serve_until_closed(swarm: Any, read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        holder = _InboundConn()
        if isinstance(read_write_closer, IMuxedConn):  # QUIC and the like: no upgrade step
            holder.conn = read_write_closer
            holder.upgraded.set()
        token = _INBOUND.set(holder)
        try:
            async with trio.open_nursery() as nursery:
                async def end_with_connection() -> None:
                    await holder.upgraded.wait()
                    await holder.conn.event_closed.wait()
                    nursery.cancel_scope.cancel()  # ends the handler's wait for the swarm's end

                nursery.start_soon(end_with_connection)
                await original_do_handle(swarm, read_write_closer, maddr, failure_event)
                nursery.cancel_scope.cancel()  # the upgrade failed: nothing to wait for
        finally:
            _INBOUND.reset(token)

    async def do_handle_inbound_connection(self: Any, read_write_closer: Any, maddr: Any,
                                           failure_event: Any) -> None:
        limits = getattr(self, "gaia_inbound_limits", None)  # set by net/host.py
        ip = remote_ip(self, read_write_closer)
        if limits is not None and not limits.admit(ip):
            log.debug("inbound_refused", ip=ip, reason="per_ip")
            await read_write_closer.close()
            return
        try:
            await serve_until_closed(self, read_write_closer, maddr, failure_event)
        finally:
            if limits is not None:
                limits.release(ip)

    _patch_class(Swarm, "upgrade_inbound_raw_conn", upgrade_inbound_raw_conn)
    _patch_class(Swarm, "_do_handle_inbound_connection", do_handle_inbound_connection)


# --------------------------------------------------------------------------------------------------
# R. a ban that cannot crash the host

def _teardown_without_race() -> None:
    """R: ``Pubsub.add_to_blacklist`` runs ``_teardown_if_connected``, which awaits the reset of the
    peer's stream and then does ``del self.peers[peer_id]``; if the peer's stream died meanwhile
    (its writer failed on the reset stream, or the peer hung up), ``_handle_dead_peer`` has deleted
    it already, the ``KeyError`` escapes a task of the Pubsub service and ends ``host.run()``: 29
    lying identities banned in a burst while gossip flows crashed the node. Here the peer is taken
    out of ``peers`` before the await, and the rest of its state (outbound queue, router) is dropped
    as ``_handle_dead_peer`` does; what runs later finds nothing left to delete.

    Class-level: every Pubsub of the process gets it (``install_class_patches``)."""
    from libp2p.pubsub.pubsub import Pubsub

    async def _teardown_if_connected(self: Any, peer_id: Any) -> None:
        stream = self.peers.pop(peer_id, None)
        if stream is not None:
            queue = self.peer_queues.pop(peer_id, None)
            if queue is not None:
                queue.close()
            self.router.remove_peer(peer_id)
            await stream.reset()  # NetStream.reset swallows the errors of a stream that is gone already
        self._forget_all_subscriptions(peer_id)

    _patch_class(Pubsub, "_teardown_if_connected", _teardown_if_connected)


# --------------------------------------------------------------------------------------------------
# N, O, P, P1: the DHT and the muxer against a hostile peer


def _log_refusal(event: str, n: int, **fields: Any) -> None:
    """Log the 1st, 2nd, 4th, 8th... refusal of a kind (``n`` counts them): a flood of refused streams
    must not become a flood of log lines."""
    if n & (n - 1) == 0:
        log.warning(event, refused_so_far=n, **fields)


def admit_only_answering_peers(dht: Any, on_named: Callable[[Any, list[Any]], None] | None = None) -> dict[str, int]:
    """N: kad-dht's ``RoutingTable.add_peer`` takes whatever it is given, and it is given every peer a
    FIND_NODE answer names (``PeerRouting._query_peer_for_closest``, with the addresses the answer
    claims), every peer it is about to query (before the query, "regardless of query outcome"), every
    lookup result (``refresh_routing_table``) and every peer that opens a kad stream (without the
    server-mode check). One peer that answers with 200 made-up ids fills the table with them, and the
    table serves them to the next asker. Now a peer enters (or is refreshed in) the table only while it
    is connected to us (it answered on an authenticated connection) and, once identify has run, only
    if identify listed /ipfs/kad/1.0.0 (net/discovery.py drops connected peers that turn out not to
    serve the DHT). An answer naming more than k (20) peers, which no
    honest one does, is cut to the k closest to the key (the lookup would query every one of them:
    ~190 dials for one answer of 200), and the addresses only the cut ones had leave the peerstore.
    ``on_named(source, named_ids)`` sees each answer's peers (net/discovery.py makes them bounded
    dial candidates). Returns live counters."""
    from libp2p.kad_dht.common import BUCKET_SIZE, PROTOCOL_ID
    from libp2p.kad_dht.utils import sort_peer_ids_by_distance
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.peer.peerstore import PeerStoreError

    table, host = dht.routing_table, dht.host
    stats = {"admitted": 0, "refused_not_connected": 0, "refused_not_dht_server": 0, "answers_truncated": 0}
    original_add = table.add_peer

    async def add_peer(peer_obj: Any, *, skip_server_mode_check: bool = False) -> bool:
        pid = peer_obj.peer_id if isinstance(peer_obj, PeerInfo) else peer_obj
        if not host.get_network().get_connections(pid):
            stats["refused_not_connected"] += 1
            return False
        try:
            protocols = host.get_peerstore().get_protocols(pid) or []
        except PeerStoreError:
            protocols = []
        if protocols and str(PROTOCOL_ID) not in protocols:  # before identify: in, as kad-dht's own check does
            stats["refused_not_dht_server"] += 1
            return False
        # the peer id only: the peerstore's addresses, not the ones a third peer claimed for it
        added = bool(await original_add(pid))
        stats["admitted"] += int(added)
        return added

    table.add_peer = add_peer

    routing = dht.peer_routing
    original_query = routing._query_peer_for_closest

    async def query_peer_for_closest(peer: Any, target_key: bytes) -> list[Any]:
        peerstore = host.get_peerstore()
        known = set(peerstore.peer_ids())
        named = await original_query(peer, target_key)
        if len(named) > BUCKET_SIZE:  # more than an honest answer holds: keep the k closest to the key
            named = sort_peer_ids_by_distance(target_key, named)
            stats["answers_truncated"] += 1
            for pid in named[BUCKET_SIZE:]:
                if pid not in known:  # the addresses only this answer claimed leave the peerstore too
                    try:
                        peerstore.clear_peerdata(pid)
                    except PeerStoreError:
                        pass  # already evicted: the peerstore keeps 1000 peers
            named = named[:BUCKET_SIZE]
        if on_named is not None:
            on_named(peer, list(named))
        return named

    routing._query_peer_for_closest = query_peer_for_closest
    dht.gaia_table_stats = stats
    return stats


class _IdleDeadlineStream:
    """A kad stream as kad-dht's handler reads it: reads give up at a deadline that only an answer
    (a write) moves on, so a whole request must arrive within ``idle_s`` of the stream's start or of
    the previous answer, however it is dripped."""

    def __init__(self, stream: Any, idle_s: float) -> None:
        self._stream = stream
        self._idle_s = idle_s
        self._deadline = trio.current_time() + idle_s
        self.timed_out = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        with trio.move_on_at(self._deadline):
            return bytes(await self._stream.read(n))
        self.timed_out = True
        raise trio.TooSlowError(f"no complete kad request within {self._idle_s} s")

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)
        self._deadline = trio.current_time() + self._idle_s


#: O: a kad request must be complete this long after the stream opened or the last answer.
KAD_IDLE_S = 5.0
#: O: inbound kad streams one peer may have at once (kad-dht serves 12 in all).
KAD_STREAMS_PER_PEER = 3


def bound_kad_streams(host: Any, dht: Any, *, idle_s: float = KAD_IDLE_S,
                      per_peer: int = KAD_STREAMS_PER_PEER) -> dict[str, int]:
    """O: ``KadDHT.handle_stream`` serves at most 12 inbound streams at once (a ``CapacityLimiter``)
    and resets every stream beyond that at once; its reads (``read_varint_prefixed_bytes_limited``)
    have no deadline, so 12 streams that send nothing, or a byte a second, hold all 12 slots for as
    long as they like and every honest FIND_NODE is reset. Each stream now gets ``idle_s`` per request
    (``_IdleDeadlineStream``: reset when it runs out) and each peer at most ``per_peer`` streams in
    the handler, so one peer holds at most ``per_peer`` of the 12 slots for at most ``idle_s``.
    Returns live counters."""
    from libp2p.kad_dht.common import PROTOCOL_ID

    stats = {"streams": 0, "refused_per_peer": 0, "idle_reset": 0}
    live: dict[Any, int] = {}  # peers with a stream in the handler now: at most 12 + refused ones in flight
    original = dht.handle_stream

    async def handle_stream(stream: Any) -> None:
        peer = _peer_of(stream)
        if live.get(peer, 0) >= per_peer:
            stats["refused_per_peer"] += 1
            _log_refusal("kad_stream_refused", stats["refused_per_peer"], peer_id=str(peer), reason="per_peer_cap",
                         cap=per_peer)
            await stream.reset()  # NetStream.reset raises nothing of its own (a gone stream is what we want)
            return
        live[peer] = live.get(peer, 0) + 1
        stats["streams"] += 1
        guarded = _IdleDeadlineStream(stream, idle_s)
        try:
            await original(guarded)
        finally:
            live[peer] -= 1
            if not live[peer]:
                del live[peer]
            if guarded.timed_out:
                stats["idle_reset"] += 1
                _log_refusal("kad_stream_refused", stats["idle_reset"], peer_id=str(peer), reason="idle", idle_s=idle_s)

    dht.handle_stream = handle_stream
    host.set_stream_handler(PROTOCOL_ID, handle_stream)
    dht.gaia_stream_stats = stats
    return stats


#: P: inbound streams (negotiating or served) one peer may have at once, and all peers together.
INBOUND_STREAMS_PER_PEER = 64
INBOUND_STREAMS_TOTAL = 1024
#: P: multistream-select on an inbound stream must be done within this (py-libp2p: 10 s).
NEGOTIATE_S = 5.0


def cap_inbound_streams(host: Any, *, per_peer: int = INBOUND_STREAMS_PER_PEER,
                        total: int = INBOUND_STREAMS_TOTAL) -> dict[str, int]:
    """P: every yamux SYN becomes a ``YamuxStream``, a ``NetStream`` and a task that waits up to the
    negotiation timeout (10 s) for multistream-select, with no limit per peer: a peer that opens
    streams as fast as it can and never negotiates keeps rate x 10 s of them alive (~600 at once from
    one in-process peer here, each a few KB with its task). py-libp2p removes each one after the
    timeout, but the process keeps the memory its peak took. The resource manager's stream limit is
    one global count (``ResourceManager.acquire_stream``; the per-peer and per-protocol limits of
    ``libp2p.rcmgr`` are not consulted by the swarm), so we count in the swarm's stream handler,
    which runs before negotiation: a stream beyond ``per_peer`` for its peer, or ``total`` in all, is
    reset at once. The negotiation deadline itself is ``NEGOTIATE_S`` (ConnectionConfig in host.py).
    Returns live counters."""
    swarm = host.get_network()
    original = swarm.common_stream_handler
    stats = {"refused_per_peer": 0, "refused_total": 0, "live": 0}
    live: dict[Any, int] = {}  # one entry per peer with a live inbound stream: bounded by ``total``

    async def handler(net_stream: Any) -> None:
        peer = _peer_of(net_stream)
        n = live.get(peer, 0)
        if n >= per_peer or stats["live"] >= total:
            key = "refused_per_peer" if n >= per_peer else "refused_total"
            stats[key] += 1
            _log_refusal("inbound_stream_refused", stats[key], peer_id=str(peer),
                         reason="per_peer_cap" if n >= per_peer else "total_cap")
            await net_stream.reset()  # NetStream.reset raises nothing of its own
            return
        live[peer] = n + 1
        stats["live"] += 1
        try:
            await original(net_stream)
        finally:
            stats["live"] -= 1
            live[peer] -= 1
            if not live[peer]:
                del live[peer]

    swarm.set_stream_handler(handler)
    swarm.gaia_stream_stats = stats
    return stats


class _RejectEveryRecord:
    """A ``NamespacedValidator`` stand-in that knows no namespace (kad-dht's own ``put_value`` and
    ``get_value`` call it too): every record is refused, and counted."""

    strict_validation = True

    def __init__(self, stats: dict[str, int]) -> None:
        self._stats = stats
        self._validators: dict[str, Any] = {}

    def validate(self, key: str, value: bytes) -> None:
        from libp2p.records.utils import InvalidRecordType

        self._stats["records_refused"] += 1
        _log_refusal("dht_record_refused", self._stats["records_refused"], key=key[:64], size=len(value))
        raise InvalidRecordType("this node stores no DHT records")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


def refuse_dht_records(dht: Any) -> dict[str, int]:
    """P1: kad-dht's default validator is not strict: a PUT_VALUE of any key without a namespace is
    stored (up to 50,000 records of up to 1 MiB each, ``MAX_VALUE_STORE_SIZE``, ``MAX_RECORD_SIZE``)
    and echoed, and ADD_PROVIDER records are kept for any number of keys (20 providers each, 10
    messages per 10 s per peer). gaia uses neither (no put_value/get_value/provide in gaia_p2p): every
    record and provider announcement is refused and counted. Returns live counters."""
    stats = {"records_refused": 0, "providers_refused": 0}
    dht.validator = _RejectEveryRecord(stats)
    dht.validator_changed = True

    def add_provider(key: bytes, provider: Any) -> None:
        stats["providers_refused"] += 1
        _log_refusal("dht_provider_refused", stats["providers_refused"], key=bytes(key[:32]).hex())

    dht.provider_store.add_provider = add_provider
    dht.gaia_record_stats = stats
    return stats
