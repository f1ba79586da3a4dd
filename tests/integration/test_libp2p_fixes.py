"""Each py-libp2p 0.8.1 workaround in gaia_p2p/net/libp2p_fixes.py, with the bug it guards against."""

from __future__ import annotations

import os

import multiaddr
import pytest
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID as KAD
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.io.trio import TrioTCPStream
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import PeerScorer, ScoreParams
from libp2p.tools.anyio_service import background_trio_service

from gaia_p2p.net import libp2p_fixes, scoring
from gaia_p2p.net.addrs import ipv6_available
from gaia_p2p.node.control import encode_uvarint
from gaia_p2p.node.runtime import run

from kad_attacker import (DialCounter, addr_of, add_provider_msg, bare_host, connect, fake_peers, find_node,
                          hold_kad_streams, kad_request, open_raw_streams, poisoning_handler, put_value_msg, running, streams_dead,
                          yamux_conn)
from swarm_helpers import node_config, wait_until

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
# Not a protobuf RPC: field 1 (subscriptions) with a length that runs past the end -> DecodeError.
MALFORMED_RPC = b"\x0a\xff\xff\xff\x0f\x01"


def _host():
    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(),
                    sec_opt=libp2p_fixes.noise_only_security(kp))


async def _send_raw_pubsub_frame(attacker, target_addr: str, frame: bytes) -> None:
    info = info_from_p2p_addr(multiaddr.Multiaddr(target_addr))
    await attacker.connect(info)
    stream = await attacker.new_stream(info.peer_id, [TProtocol("/meshsub/1.1.0")])
    await stream.write(encode_uvarint(len(frame)) + frame)


async def test_bug_a_upstream_pubsub_is_killed_by_one_malformed_frame():
    """Upstream behaviour (if this starts failing, 0.8.x fixed bug A and the guard may go)."""
    victim, attacker = _host(), _host()
    gs = GossipSub(protocols=[TProtocol("/meshsub/1.1.0")], **libp2p_fixes.gossipsub_options(
        heartbeat_s=1.0, degree=3, degree_low=2, degree_high=4, eclipse_protection=False))
    pubsub = Pubsub(victim, gs)
    with trio.fail_after(30):
        with pytest.raises(BaseException) as excinfo:
            async with victim.run(listen_addrs=[LOOPBACK]), attacker.run(listen_addrs=[LOOPBACK]):
                async with background_trio_service(pubsub), background_trio_service(gs):
                    await pubsub.wait_until_ready()
                    addr = f"{victim.get_addrs()[0]}"
                    await _send_raw_pubsub_frame(attacker, addr, MALFORMED_RPC)
                    await trio.sleep(10)  # the crash cancels this; reaching the end means no crash
                    raise AssertionError("unguarded pubsub survived the malformed frame")
    assert "DecodeError" in repr(excinfo.value) or "Error parsing message" in repr(excinfo.value), excinfo.value


async def test_bug_a_guarded_node_survives_malformed_frames(tmp_path):
    attacker = _host()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0))
            async with attacker.run(listen_addrs=[LOOPBACK]):
                for _ in range(3):
                    await _send_raw_pubsub_frame(attacker, node.addrs()[0], MALFORMED_RPC)
                await wait_until(lambda: node.statistics().pubsub_streams_rejected >= 3, "3 rejected pubsub streams", 20)
                gen = node.island.generation
                await wait_until(lambda: node.island.generation > gen + 5, "the island to keep evolving", 20, on=(node,))
            nursery.cancel_scope.cancel()


RAW = TProtocol("/gaia/test/raw/1.0.0")


class _Stream:
    """Stands for a stream where nothing is written to one (the pipeline keys its locks by stream)."""


def _framed(rpc) -> bytes:
    """An RPC as ``Pubsub.write_msg`` puts it on a stream: varint length, then the protobuf."""
    return encode_uvarint(rpc.ByteSize()) + rpc.SerializeToString()


async def _two_concurrent_writes(*, pipeline: bool) -> tuple[bytes, list[bytes]]:
    """Two 300 KB RPCs written at once through ``Pubsub.write_msg`` to one yamux stream between two
    real hosts on 127.0.0.1, as pubsub's sender task and ``send_recent_messages`` do; returns the
    bytes the receiver read and the two framed RPCs."""
    writer, reader = _host(), _host()
    # write_msg uses its Pubsub only to forget a peer whose stream failed: one on an idle host will do
    # (a Pubsub on ``writer`` would have to run, or its notifee blocks the connect).
    pubsub = Pubsub(_host(), GossipSub(protocols=[TProtocol("/meshsub/1.1.0")], **libp2p_fixes.gossipsub_options(
        heartbeat_s=1.0, degree=3, degree_low=2, degree_high=4, eclipse_protection=False)))
    if pipeline:
        libp2p_fixes.install_outgoing_rpc_pipeline(pubsub, stages=())
    rpcs = [rpc_pb2.RPC(publish=[rpc_pb2.Message(data=fill * 300_000, topicIDs=["t"])]) for fill in (b"a", b"b")]
    framed = [_framed(r) for r in rpcs]
    want = sum(map(len, framed))
    received = bytearray()
    all_read = trio.Event()

    async def read_all(stream) -> None:
        while len(received) < want:
            chunk = await stream.read(65536)
            if not chunk:
                break
            received.extend(chunk)
        all_read.set()

    reader.set_stream_handler(RAW, read_all)
    with trio.fail_after(30):
        async with writer.run(listen_addrs=[LOOPBACK]), reader.run(listen_addrs=[LOOPBACK]):
            info = info_from_p2p_addr(multiaddr.Multiaddr(f"{reader.get_addrs()[0]}"))
            await writer.connect(info)
            stream = await writer.new_stream(info.peer_id, [RAW])
            async with trio.open_nursery() as nursery:
                for rpc in rpcs:
                    nursery.start_soon(pubsub.write_msg, stream, rpc)
            await all_read.wait()
    return bytes(received), framed


async def test_bug_b_upstream_concurrent_writes_interleave_on_one_stream():
    """Upstream behaviour: yamux locks per 64 KB frame, not per write, so two RPCs written at once
    arrive as one byte soup no receiver can parse (if this starts failing, py-libp2p writes whole
    RPCs and B may go)."""
    received, (a, b) = await _two_concurrent_writes(pipeline=False)
    assert len(received) == len(a) + len(b)  # every byte arrived...
    assert received not in (a + b, b + a)  # ...but not as two whole RPCs
    assert b"b" * 1000 in received[:len(a)] and b"a" * 1000 in received[:len(a)]  # the first one, mixed


async def test_bug_b_pipeline_writes_whole_rpcs():
    received, (a, b) = await _two_concurrent_writes(pipeline=True)
    assert received in (a + b, b + a)


async def test_outgoing_rpc_pipeline_runs_its_stages_in_order_then_writes_once():
    """The order is the tuple's; the write (B) comes last; installing twice on one pubsub is refused."""
    seen: list[str] = []

    class Sink:
        async def write_msg(self, stream, rpc_msg) -> bool:
            seen.append(f"write senderRecord={rpc_msg.HasField('senderRecord')}")
            return True

    sink = Sink()
    libp2p_fixes.install_outgoing_rpc_pipeline(sink, stages=(
        ("first", lambda rpc: seen.append(f"first senderRecord={rpc.HasField('senderRecord')}")),
        *libp2p_fixes.OUTGOING_RPC_FIXES,
        ("last", lambda rpc: seen.append(f"last senderRecord={rpc.HasField('senderRecord')}")),
    ))
    assert sink.gaia_rpc_pipeline == ("first", "strip_sender_record", "strip_inlined_keys", "last", "serialized_write")
    assert await sink.write_msg(_Stream(), rpc_pb2.RPC(senderRecord=b"\x01" * 213)) is True
    assert seen == ["first senderRecord=True", "last senderRecord=False", "write senderRecord=False"]
    with pytest.raises(RuntimeError, match="installed already"):
        libp2p_fixes.install_outgoing_rpc_pipeline(sink)


async def test_bug_c_d_options_override_breaking_defaults(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0))
            gs = node.p2p.gossipsub
            assert gs.spam_protection_enabled is False
            assert gs.adaptive_gossip_enabled is False
            assert gs.eclipse_protection_enabled is False
            assert gs.heartbeat_interval == 0.5  # the test config; default 1 s, not libp2p's 120 s
            assert list(gs.protocols)[0] == "/meshsub/1.1.0"
            nursery.cancel_scope.cancel()


async def test_bug_c_burst_of_publishes_all_delivered(tmp_path):
    """With libp2p's spam protection (10 msg/s per forwarder, own publishes counted) a burst is dropped."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await nursery.start(run, node_config(tmp_path, 0))
            b = await nursery.start(run, node_config(tmp_path, 1, bootstrap=(a.addrs()[0],)))
            topic = "/gaia/test/burst/1"
            sub = await b.p2p.pubsub.subscribe(topic)
            await a.p2p.pubsub.subscribe(topic)
            await wait_until(lambda: b.peer_id in a.p2p.topic_peers(topic), "b subscribed as seen by a", 20)
            await wait_until(lambda: b.peer_id in {str(p) for p in a.p2p.gossipsub.mesh.get(topic, ())}, "b in a's mesh", 20)
            got: set[bytes] = set()
            all_in = trio.Event()

            async def drain() -> None:  # the subscription channel holds 32: drain it concurrently
                while len(got) < 40:
                    got.add((await sub.get()).data)
                all_in.set()

            nursery.start_soon(drain)
            for i in range(40):  # 50 msg/s: paced for the 32-RPC outbound queue, 5x spam protection's limit
                await a.p2p.pubsub.publish(topic, b"m%d" % i)
                await trio.sleep(0.02)
            with trio.move_on_after(15):
                await all_in.wait()
            assert len(got) == 40, sorted(got)
            nursery.cancel_scope.cancel()


async def _lone_publisher(*, bounded: bool):
    """A running pubsub with no peers, whose GossipSub heartbeat does not run (the test runs its
    cleanup step itself): returns ``publish(n)``, which publishes ``n`` more messages of 1 KB and
    returns the equivocation cache, and the GossipSub."""
    host = _host()
    gs = GossipSub(protocols=[TProtocol("/meshsub/1.1.0")], **libp2p_fixes.gossipsub_options(
        heartbeat_s=1.0, degree=3, degree_low=2, degree_high=4, eclipse_protection=False))
    if bounded:
        libp2p_fixes.bound_equivocation_cache(gs)
    pubsub = Pubsub(host, gs)
    published = [0]

    async def publish(n: int) -> dict:
        for _ in range(n):
            await pubsub.publish("t", b"%06d" % published[0] + b"x" * 1000)
            published[0] += 1
        return gs.equivocation_detection

    return host, pubsub, gs, publish


async def test_bug_f_upstream_equivocation_cache_is_trimmed_only_by_the_heartbeat_above_1000():
    """Upstream behaviour: every message seen is kept whole; only the heartbeat trims the cache, and
    only above 1000 entries (back to 500), so it holds 1000 full payloads for good and more between
    two heartbeats (if this starts failing, the cache got a real bound and F may go)."""
    host, pubsub, gs, publish = await _lone_publisher(bounded=False)
    with trio.fail_after(60):
        async with host.run(listen_addrs=[LOOPBACK]), background_trio_service(pubsub):
            await pubsub.wait_until_ready()
            await pubsub.subscribe("t")
            cache = await publish(1000)
            gs._periodic_security_cleanup()  # what each heartbeat runs
            assert len(cache) == 1000  # 1000 payloads stay: ~200 MB of 200 KB elites
            cache = await publish(1000)
            assert len(cache) == 2000  # nothing bounds it between two heartbeats
            assert sum(len(m.data) for m in cache.values()) >= 2000 * 1000
            gs._periodic_security_cleanup()
            assert len(cache) == 500


async def test_bug_f_equivocation_cache_is_bounded():
    host, pubsub, gs, publish = await _lone_publisher(bounded=True)
    with trio.fail_after(60):
        async with host.run(listen_addrs=[LOOPBACK]), background_trio_service(pubsub):
            await pubsub.wait_until_ready()
            await pubsub.subscribe("t")
            cache = await publish(2000)
            assert len(cache) == 512  # at every insertion, heartbeat or not
            assert {m.data[:6] for m in cache.values()} == {b"%06d" % i for i in range(2000 - 512, 2000)}  # the latest


def _plaintext_client():
    """A host that proposes plaintext only, as an attacker who wants an unauthenticated link would."""
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(),
                    sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})


async def _plaintext_connect(server) -> bool:
    """Whether a plaintext-only client gets a connection to ``server``; asserts that such a
    connection is indeed unencrypted on the server's side."""
    from libp2p.security.insecure.transport import InsecureSession

    client = _plaintext_client()
    info = info_from_p2p_addr(multiaddr.Multiaddr(f"{server.get_addrs()[0]}"))
    async with client.run(listen_addrs=[LOOPBACK]):
        try:
            with trio.fail_after(10):
                await client.connect(info)
        except SwarmException:
            return False
        await wait_until(lambda: server.get_network().get_connections(client.get_id()), "the server's side", 10)
        for conn in server.get_network().get_connections(client.get_id()):
            assert isinstance(conn.muxed_conn.secured_conn, InsecureSession)
        return True


async def test_bug_g_upstream_new_host_accepts_plaintext():
    """Upstream behaviour: ``new_host`` without ``sec_opt`` offers plaintext and secio next to Noise,
    and a peer that proposes plaintext gets an unencrypted, unauthenticated link (if this starts
    failing, the defaults changed and G may go)."""
    server = new_host(key_pair=create_new_key_pair())  # py-libp2p's defaults
    offered = [str(p) for p in server.get_network().upgrader.security_multistream.transports]
    assert "/plaintext/2.0.0" in offered and "/secio/1.0.0" in offered, offered
    with trio.fail_after(30):
        async with server.run(listen_addrs=[LOOPBACK]):
            assert await _plaintext_connect(server)


async def test_bug_g_noise_only_host_refuses_plaintext():
    server = _host()  # sec_opt=noise_only_security, as net/host.py builds it
    with trio.fail_after(30):
        async with server.run(listen_addrs=[LOOPBACK]):
            assert not await _plaintext_connect(server)
            assert not server.get_connected_peers()


async def test_bug_g_node_offers_noise_only(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0))
            upgrader = node.p2p.host.get_network().upgrader
            protos = list(upgrader.security_multistream.transports)
            assert [str(p) for p in protos] == ["/noise"], protos
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------------
# I. peer scores that act (no network: the scorer, the mesh heartbeat and push_msg driven directly)

T_MIGRANTS, T_TELEMETRY = "/gaia/test/migrants/1", "/gaia/test/telemetry/1"


def _peer():
    return ID.from_pubkey(create_new_key_pair().public_key)


def _scored_pubsub(*, enforce: bool):
    gs = GossipSub(protocols=[TProtocol("/meshsub/1.1.0")], score_params=scoring.score_params(heartbeat_s=1.0),
                   **libp2p_fixes.gossipsub_options(heartbeat_s=1.0, degree=3, degree_low=2, degree_high=4,
                                                    eclipse_protection=False))
    pubsub = Pubsub(_host(), gs, strict_signing=False)
    if enforce:
        libp2p_fixes.enforce_peer_scores(pubsub)
    return pubsub, gs


def _mesh_of(gs, pubsub, topic, peers) -> None:
    gs.mesh[topic] = set(peers)
    pubsub.peer_topics[topic] = set(peers)
    for p in peers:
        gs.peer_protocol[p] = TProtocol("/meshsub/1.1.0")


def _msg(topic: str, i: int):
    return rpc_pb2.Message(data=b"x", topicIDs=[topic], from_id=_peer().to_bytes(), seqno=i.to_bytes(8, "big"))


async def test_bug_i_upstream_scorer_does_not_act():
    """Upstream behaviour with our params (if this starts failing, py-libp2p changed and I may go)."""
    assert PeerScorer(ScoreParams()).params.p4_invalid_messages.cap == 0  # the default cap turns P4 off
    pubsub, gs = _scored_pubsub(enforce=False)
    bad, good = _peer(), _peer()
    for _ in range(20):
        gs.scorer.on_invalid_message(bad, T_TELEMETRY)
    assert gs.scorer.score(bad, [T_TELEMETRY]) == -200
    assert gs.scorer.allow_publish(bad, [T_MIGRANTS])  # one topic's gate ignores the other topic
    _mesh_of(gs, pubsub, T_MIGRANTS, [bad, good])
    gs.mesh_heartbeat()
    assert bad in gs.mesh[T_MIGRANTS]  # a graylisted peer stays in the mesh
    gs.scorer.remove_peer(bad)
    assert gs.scorer.score(bad, [T_TELEMETRY]) == 0  # a reconnect starts from a clean score


async def test_bug_i_enforced_scores_act():
    pubsub, gs = _scored_pubsub(enforce=True)
    scorer, stats = gs.scorer, gs.gaia_score_stats
    bad, good, fresh = _peer(), _peer(), _peer()
    for _ in range(9):
        scorer.on_invalid_message(bad, T_TELEMETRY)
    assert scorer.score(bad) == -90 and scorer.allow_publish(bad, [T_MIGRANTS])
    assert not scorer.allow_gossip(bad, [T_MIGRANTS])  # -45 crossed at the 5th
    scorer.on_invalid_message(bad, T_TELEMETRY)
    assert scorer.score(bad, [T_MIGRANTS]) == -100  # summed over topics
    assert not scorer.allow_publish(bad, [T_MIGRANTS]) and scorer.is_graylisted(bad, [T_MIGRANTS])
    assert scoring.peer_scores(gs) == {str(bad): -100.0}

    # the mesh: a graylisted peer is pruned, never grafted, and its control messages are dropped;
    # a peer with a few invalid messages (-50) is not
    mid = _peer()
    for _ in range(5):
        scorer.on_invalid_message(mid, T_MIGRANTS)
    _mesh_of(gs, pubsub, T_MIGRANTS, [bad, good, fresh, mid])
    gs.mesh[T_MIGRANTS] = {bad, mid}
    to_graft, to_prune = gs.mesh_heartbeat()
    assert gs.mesh[T_MIGRANTS] == {good, fresh, mid}, gs.mesh  # refilled to degree 3 without bad
    assert to_prune[bad] == [T_MIGRANTS] and bad not in to_graft and stats["mesh_pruned"] == 1
    await gs.handle_rpc(rpc_pb2.RPC(control=rpc_pb2.ControlMessage(
        graft=[rpc_pb2.ControlGraft(topicID=T_MIGRANTS)])), bad)
    assert stats["graylisted_rpcs"] == 1 and bad not in gs.mesh[T_MIGRANTS]

    # a disconnect keeps P4; decay forgets it once below 0.01 (10 invalid messages: ~10 half-lives)
    gs.remove_peer(bad)
    assert scorer.score(bad) == -100
    heartbeats = 0
    while scorer.invalid_messages.get(bad):
        scorer.on_heartbeat()
        heartbeats += 1
    assert 9.5 * 600 <= heartbeats <= 10.5 * 600, heartbeats  # 1 s heartbeats, 600 s half-life
    assert scorer.score(bad) == 0 and str(bad) not in scoring.peer_scores(gs)
    assert scoring.peer_scores(gs)[str(good)] == 0


async def test_bug_i_validator_reject_and_ignore():
    """push_msg: a REJECT costs the forwarder 10 and is cached; an IGNORE costs nothing and is not cached;
    once below the publish threshold the forwarder's messages are not even validated."""
    pubsub, gs = _scored_pubsub(enforce=True)
    calls = {"n": 0}

    def validator(forwarder, msg) -> bool:
        calls["n"] += 1
        if msg.data == b"ignore":
            libp2p_fixes.ignore_message()
        return False

    pubsub.set_topic_validator(T_MIGRANTS, validator, is_async_validator=False)
    relay, attacker = _peer(), _peer()
    ignored = _msg(T_MIGRANTS, 1)
    ignored.data = b"ignore"
    for _ in range(3):
        await pubsub.push_msg(relay, ignored)
    assert calls["n"] == 3 and gs.scorer.score(relay) == 0  # judged afresh each time, never charged
    for i in range(12):
        await pubsub.push_msg(attacker, _msg(T_MIGRANTS, 100 + i))
    assert calls["n"] == 3 + 10  # the 11th and 12th were dropped by the publish gate before validation
    assert gs.scorer.score(attacker) == -100
    rejected = _msg(T_MIGRANTS, 7)
    await pubsub.push_msg(relay, rejected)
    await pubsub.push_msg(_peer(), rejected)  # the cached verdict: not validated again, still charged
    assert calls["n"] == 14 and gs.scorer.score(relay) == -10


# --------------------------------------------------------------------------------------------------
# J. opportunistic grafting at every heartbeat; K. IHAVE fan-out (no network: the router driven directly)

def _gossipsub_with_topic_peers(n_mesh: int, n_others: int):
    gs = GossipSub(protocols=[TProtocol("/meshsub/1.1.0")], score_params=scoring.score_params(heartbeat_s=1.0),
                   **libp2p_fixes.gossipsub_options(heartbeat_s=1.0, degree=4, degree_low=3, degree_high=8,
                                                    eclipse_protection=False))
    pubsub = Pubsub(_host(), gs, strict_signing=False)
    gs.pubsub = pubsub
    mesh, others = [_peer() for _ in range(n_mesh)], [_peer() for _ in range(n_others)]
    _mesh_of(gs, pubsub, T_MIGRANTS, mesh)
    pubsub.peer_topics[T_MIGRANTS] |= set(others)
    for p in others:
        gs.peer_protocol[p] = TProtocol("/meshsub/1.1.0")
    return gs, mesh, others


def test_bug_j_opportunistic_grafting_churns_a_healthy_mesh():
    from collections import defaultdict

    gs, mesh, _ = _gossipsub_with_topic_peers(4, 30)
    grafts: defaultdict = defaultdict(list)
    grafted = sum(gs._perform_opportunistic_grafting(T_MIGRANTS, grafts) for _ in range(10))
    assert grafted > 0 and len(gs.mesh[T_MIGRANTS]) > 4  # upstream: a full, all-honest mesh keeps growing

    gs, mesh, _ = _gossipsub_with_topic_peers(4, 30)
    libp2p_fixes.stop_graft_churn(gs)
    grafts = defaultdict(list)
    for _ in range(10):
        peers_to_graft, peers_to_prune = gs.mesh_heartbeat()
        assert not peers_to_graft and not peers_to_prune
        assert gs._perform_opportunistic_grafting(T_MIGRANTS, grafts) == 0
    assert gs.mesh[T_MIGRANTS] == set(mesh)


def test_bug_k_ihave_fanout_is_capped():
    gs, mesh, others = _gossipsub_with_topic_peers(4, 30)
    assert gs._get_adaptive_gossip_peers_count(T_MIGRANTS, len(others)) >= 6  # upstream: max(6, 25 %)
    libp2p_fixes.cap_gossip_peers(gs, 3)
    assert gs._get_adaptive_gossip_peers_count(T_MIGRANTS, len(others)) == 3
    assert gs._get_adaptive_gossip_peers_count(T_MIGRANTS, 2) == 2


async def test_bug_h_kernel_keepalive_on_every_libp2p_socket(tmp_path):
    """Every TCP socket of a node (dialled and accepted) has keepalive and a user timeout."""
    import socket

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await nursery.start(run, node_config(tmp_path, 0))
            b = await nursery.start(run, node_config(tmp_path, 1, bootstrap=(a.addrs()[0],)))
            await wait_until(lambda: a.peer_id in b.p2p.connected_peers() and b.peer_id in a.p2p.connected_peers(),
                             "a and b connected", 30)
            for node, other in ((a, b), (b, a)):
                conns = node.p2p.host.get_network().get_connections(ID.from_base58(other.peer_id))
                socks = [s for c in conns for s in libp2p_fixes._socket_streams(c)]
                assert socks, "no socket found under the connection"
                for s in socks:
                    assert s.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                    if hasattr(socket, "TCP_USER_TIMEOUT"):
                        assert s.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 25_000
            nursery.cancel_scope.cancel()


def _decode_framed(data: bytes):
    """The RPC in one ``stream.write`` of ``Pubsub.write_msg`` (varint length, then the protobuf)."""
    length, shift, i = 0, 0, 0
    while True:
        byte = data[i]
        length |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            break
    assert len(data) == i + length, "one write, one whole RPC"
    return rpc_pb2.RPC.FromString(data[i:])


async def _publish_and_capture(*, pipeline: bool):
    """A publishes one message to B, both real pubsubs (GossipSub, StrictSign) on 127.0.0.1; returns
    the publish RPCs A actually wrote to its stream to B (decoded from the bytes written), the
    message B's subscription delivered, and A's host."""
    from contextlib import AsyncExitStack

    (ha, gsa, psa), (hb, gsb, psb) = _pubsub_host(), _pubsub_host()
    if pipeline:
        libp2p_fixes.install_outgoing_rpc_pipeline(psa)  # the fixes' stages, as a node has them
    writes: list[bytes] = []
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            for h, gs, ps in ((ha, gsa, psa), (hb, gsb, psb)):
                await stack.enter_async_context(h.run(listen_addrs=[LOOPBACK]))
                await stack.enter_async_context(background_trio_service(ps))
                await stack.enter_async_context(background_trio_service(gs))
                await ps.wait_until_ready()
            sub = await psb.subscribe(T_MIGRANTS)
            await psa.subscribe(T_MIGRANTS)
            await hb.connect(info_from_p2p_addr(multiaddr.Multiaddr(f"{ha.get_addrs()[0]}")))
            await wait_until(lambda: hb.get_id() in gsa.mesh.get(T_MIGRANTS, ()), "b in a's mesh", 20)
            stream = psa.peers[hb.get_id()]
            write = stream.write

            async def capture(data: bytes) -> None:
                writes.append(bytes(data))
                await write(data)

            stream.write = capture
            await psa.publish(T_MIGRANTS, b"elite")
            got = await sub.get()
    published = [rpc for rpc in map(_decode_framed, writes) if rpc.publish]
    assert len(published) == 1, published
    return published[0], got, ha


async def test_bug_l_upstream_every_rpc_carries_a_signed_peer_record():
    """Upstream behaviour: the publish RPC py-libp2p writes carries its signed peer record (if this
    starts failing, py-libp2p stopped sending it and L may go)."""
    rpc, _, _ = await _publish_and_capture(pipeline=False)
    assert rpc.HasField("senderRecord") and len(rpc.senderRecord) > 150, rpc.ByteSize()


async def test_bug_l_pipeline_sends_rpcs_without_sender_records():
    rpc, got, _ = await _publish_and_capture(pipeline=True)
    assert not rpc.HasField("senderRecord")
    assert got.data == b"elite"  # and the receiver took it


async def test_bug_m_upstream_message_copies_carry_the_inlined_key():
    """Upstream behaviour: the message copy py-libp2p writes carries its author's Ed25519 key, which
    its ``from`` id already inlines (if this starts failing, M may go)."""
    rpc, _, author = await _publish_and_capture(pipeline=False)
    [msg] = rpc.publish
    assert msg.key == author.get_public_key().serialize()
    assert ID(msg.from_id).extract_public_key() == author.get_public_key()


async def test_bug_m_pipeline_sends_copies_without_the_key_and_they_verify():
    rpc, got, _ = await _publish_and_capture(pipeline=True)
    [msg] = rpc.publish
    assert msg.key == b"" and msg.signature
    assert got.data == b"elite"  # the receiver (StrictSign) verified it with the key from the id


async def test_bug_m_messages_go_without_the_inlined_key_and_still_verify():
    """Upstream puts the Ed25519 key next to the ``from`` id that already inlines it; the fix drops
    it on the way out, and py-libp2p's own validator still verifies the signature (and still
    rejects a tampered message)."""
    from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX
    from libp2p.pubsub.validators import signature_validator

    kp = create_new_key_pair()
    author = ID.from_pubkey(kp.public_key)
    msg = rpc_pb2.Message(data=b"elite", topicIDs=[T_MIGRANTS], from_id=author.to_bytes(), seqno=(1).to_bytes(8, "big"))
    sig = kp.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key, msg.signature = kp.public_key.serialize(), sig  # what Pubsub.publish does
    size_with_key = msg.ByteSize()

    pubsub, _ = _scored_pubsub(enforce=False)
    sent: list = []

    async def capture(stream, rpc_msg):
        sent.append(rpc_msg)
        return True

    pubsub.write_msg = capture
    libp2p_fixes.install_outgoing_rpc_pipeline(pubsub)
    await pubsub.write_msg(_Stream(), rpc_pb2.RPC(publish=[msg]))
    [out] = sent[0].publish
    assert out.key == b"" and size_with_key - out.ByteSize() >= 36
    wire = rpc_pb2.Message.FromString(out.SerializeToString())
    assert signature_validator(wire)
    wire.data = b"elitE"
    assert not signature_validator(wire)


# ---------------------------------------------------------------- Q: inbound slots come back

def _bare_host(max_connections: int):
    from libp2p.network.config import ConnectionConfig

    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(), sec_opt=libp2p_fixes.noise_only_security(kp),
                    connection_config=ConnectionConfig(max_connections=max_connections, min_connections=0,
                                                       low_watermark=0, high_watermark=max_connections))


async def _connect_and_hang_up(server, n: int) -> int:
    """``n`` clients in a row, each a fresh identity that connects to ``server`` and hangs up (as
    ``gaia-node status --peer`` does); returns how many connected."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(f"{server.get_addrs()[0]}"))
    ok = 0
    for _ in range(n):
        client = _host()
        async with client.run(listen_addrs=[LOOPBACK]):
            try:
                with trio.fail_after(5):
                    await client.connect(info)
                    await client.new_stream(info.peer_id, [TProtocol("/ipfs/id/1.0.0")])
                ok += 1
            except Exception:
                pass
            await client.disconnect(info.peer_id)
    return ok


async def _wait_slots_returned(server, want_borrowed: int) -> None:
    limiter = server.get_network()._inbound_limiter
    await wait_until(lambda: limiter.borrowed_tokens <= want_borrowed, f"<= {want_borrowed} inbound slots held", 10)


async def test_bug_q_upstream_inbound_slots_never_come_back(monkeypatch):
    """Upstream behaviour: each inbound connection keeps its slot after it closed (if this starts
    failing, py-libp2p returns the slot itself and fix Q may go)."""
    from libp2p.network.swarm import Swarm

    for name in ("_do_handle_inbound_connection", "upgrade_inbound_raw_conn"):
        monkeypatch.setattr(Swarm, name, libp2p_fixes.upstream(Swarm, name))
    server = _bare_host(max_connections=6)
    with trio.fail_after(90):
        async with server.run(listen_addrs=[LOOPBACK]):
            assert await _connect_and_hang_up(server, 6) == 6
            await wait_until(lambda: not server.get_connected_peers(), "every client gone", 10)
            assert server.get_network()._inbound_limiter.borrowed_tokens == 6  # 0 peers, 6 slots held
            assert await _connect_and_hang_up(server, 2) == 0  # deaf for good


async def test_bug_q_inbound_slots_come_back_when_connections_close():
    from libp2p.network.swarm import Swarm

    libp2p_fixes.install_class_patches()
    assert Swarm._do_handle_inbound_connection is not libp2p_fixes.upstream(Swarm, "_do_handle_inbound_connection")
    server = _bare_host(max_connections=6)
    with trio.fail_after(120):
        async with server.run(listen_addrs=[LOOPBACK]):
            assert await _connect_and_hang_up(server, 18) == 18  # three times the cap, in a row
            await _wait_slots_returned(server, 0)


def test_class_patches_install_once():
    """A second ``install_class_patches`` changes nothing (no method wrapped twice), and ``upstream``
    still gives py-libp2p's own functions, not ours."""
    from libp2p.io.trio import TrioTCPStream
    from libp2p.network.swarm import Swarm

    patched = [(Swarm, "_do_handle_inbound_connection"), (Swarm, "upgrade_inbound_raw_conn"),
               (Pubsub, "_teardown_if_connected"), (TrioTCPStream, "__init__"),
               (TrioTCPStream, "get_remote_address")]
    libp2p_fixes.install_class_patches()
    ours = [getattr(cls, name) for cls, name in patched]
    originals = [libp2p_fixes.upstream(cls, name) for cls, name in patched]
    libp2p_fixes.install_class_patches()
    assert [getattr(cls, name) for cls, name in patched] == ours
    assert [libp2p_fixes.upstream(cls, name) for cls, name in patched] == originals
    for fn, original in zip(ours, originals):
        assert fn is not original and original.__module__.startswith("libp2p."), original


async def test_node_answers_status_after_more_queries_than_it_has_inbound_slots(tmp_path):
    """Defect 1 end to end on a node: more than its inbound capacity (32) of ``status --peer`` queries (each a
    fresh identity, as the CLI makes), then an honest peer still connects and the last query answers."""
    import dataclasses

    from gaia_p2p.node.control import query_peer_status

    cfg = node_config(tmp_path, 0)
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, max_peers=4))  # 32 inbound slots
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, cfg)
            addr = node.addrs()[0]
            for i in range(40):
                status = await query_peer_status(addr, timeout_s=10)
                assert status["peer_id"] == node.peer_id, i
            peer = _host()
            async with peer.run(listen_addrs=[LOOPBACK]):
                with trio.fail_after(10):
                    await peer.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
            await _wait_slots_returned(node.p2p.host, 1)
            conns = node.status()["connections"]
            assert conns["opened_inbound"] >= 41 > conns["inbound_slots"] == 32, conns
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- R: a burst of bans

def _pubsub_host():
    h = _host()
    gs = GossipSub(protocols=[TProtocol("/meshsub/1.1.0")], **libp2p_fixes.gossipsub_options(
        heartbeat_s=1.0, degree=3, degree_low=2, degree_high=4, eclipse_protection=False))
    return h, gs, Pubsub(h, gs)


async def _ban_burst_while_publishing(n_banned: int) -> int:
    """A victim publishing steadily to ``n_banned`` subscribed peers bans them all at once (as the
    island does after a burst of lies); returns the victim's pubsub peers 2 s later."""
    from contextlib import AsyncExitStack

    victim, banned = _pubsub_host(), [_pubsub_host() for _ in range(n_banned)]
    async with AsyncExitStack() as stack:
        for h, gs, ps in (victim, *banned):
            await stack.enter_async_context(h.run(listen_addrs=[LOOPBACK]))
            await stack.enter_async_context(background_trio_service(ps))
            await stack.enter_async_context(background_trio_service(gs))
            await ps.wait_until_ready()
            await ps.subscribe("t")
        info = info_from_p2p_addr(multiaddr.Multiaddr(f"{victim[0].get_addrs()[0]}"))
        for h, _, _ in banned:
            await h.connect(info)
        vps = victim[2]
        await wait_until(lambda: len(vps.peers) == n_banned, "every peer on pubsub", 20)
        async with trio.open_nursery() as nursery:
            async def publish_steadily() -> None:
                for i in range(100_000):
                    await vps.publish("t", b"x" * 2000 + str(i).encode())
                    await trio.sleep(0.001)

            nursery.start_soon(publish_steadily)
            await trio.sleep(0.5)  # traffic flowing (the race needs writers on the streams being reset)
            for h, _, _ in banned:
                vps.add_to_blacklist(h.get_id())
            await trio.sleep(2)  # a crash ends the whole service tree within this
            nursery.cancel_scope.cancel()
        return len(vps.peers)


async def test_bug_r_upstream_ban_burst_crashes_pubsub(monkeypatch):
    """Upstream behaviour (if this starts failing, _teardown_if_connected was fixed and R may go)."""
    monkeypatch.setattr(Pubsub, "_teardown_if_connected", libp2p_fixes.upstream(Pubsub, "_teardown_if_connected"))
    with trio.fail_after(60):
        with pytest.raises(BaseException) as excinfo:
            await _ban_burst_while_publishing(8)
    assert "KeyError" in repr(excinfo.value), excinfo.value


async def test_bug_r_ban_burst_leaves_pubsub_running():
    libp2p_fixes.install_class_patches()
    with trio.fail_after(60):
        assert await _ban_burst_while_publishing(8) == 0
# --------------------------------------------------------------------------------------------------
# N, O, P, P1: each test runs once on kad-dht / the swarm as shipped (fixed=False: the bug shows) and
# once with the fix (fixed=True). Node-level versions: tests/integration/test_dht_hostile.py.
FAKES = 200


@pytest.mark.parametrize("fixed", [False, True])
async def test_bug_n_named_peers_enter_the_routing_table(fixed):
    """One FIND_NODE answer naming 200 made-up peers: py-libp2p puts them in the table (and serves them
    to the next asker); with N only the connected DHT server that answered gets in."""
    victim, attacker, asker = bare_host(), bare_host(), bare_host()
    dht = KadDHT(victim, DHTMode.SERVER)
    named: list[tuple[str, int]] = []
    if fixed:
        libp2p_fixes.admit_only_answering_peers(dht, lambda src, ids: named.append((str(src), len(ids))))
    counter = DialCounter()
    answered: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(counter.serve, 10)
            fakes = fake_peers(FAKES, counter.ports)
            fake_ids = {str(p) for p, _ in fakes}
            attacker.set_stream_handler(KAD, poisoning_handler(fakes, answered))
            async with running(victim, attacker, asker), background_trio_service(dht):
                await connect(victim, addr_of(attacker))
                await wait_until(lambda: str(attacker.get_id()) in {str(p) for p in victim.get_connected_peers()}
                                 and KAD in (victim.get_peerstore().get_protocols(attacker.get_id()) or []),
                                 "identify of the attacker", 10)
                dialled = count_dials(victim)
                await dht.peer_routing.find_closest_peers_network(victim.get_id().to_bytes())
                assert answered, "the lookup never asked the attacker"
                table = {str(p) for p in dht.routing_table.get_peer_ids()}
                await connect(asker, addr_of(victim))
                served = await find_node(asker, victim.get_id(), os.urandom(32))
                assert served is not None
                served_fakes = len({str(p) for p in served} & fake_ids)
                in_store = len({str(p) for p in victim.get_peerstore().peer_ids()} & fake_ids)
                fakes_dialled = len(set(dialled) & fake_ids)
                print(f"fixed={fixed}: {fakes_dialled} fakes dialled ({len(dialled)} dials), peerstore {in_store} fakes, table {len(table)} ({len(table & fake_ids)} fakes), served {served_fakes} "
                      f"fakes of {len(served)}, {len(answered)} answers, dials to fake ports {counter.dials}")
                if not fixed:
                    assert len(table & fake_ids) >= 20 and served_fakes >= 10 and fakes_dialled > 20
                else:
                    assert table <= {str(attacker.get_id())}, table & fake_ids
                    assert served_fakes == 0
                    assert dht.gaia_table_stats["refused_not_connected"] >= 20
                    # each answer was cut to k: lookups (ours, and the one KadDHT runs at start) dialled at
                    # most k fakes per answer, and the peerstore kept no more
                    assert (str(attacker.get_id()), 20) in named
                    assert fakes_dialled <= 20 * len(answered) and in_store <= 20 * len(answered), len(answered)
                    assert dht.gaia_table_stats["answers_truncated"] >= 1

            nursery.cancel_scope.cancel()


def count_dials(host):
    """The peer ids ``host``'s swarm is asked to dial, one entry per dial."""
    net = host.get_network()
    calls: list[str] = []
    original = net.dial_peer

    async def dial_peer(peer_id, *args, **kwargs):
        calls.append(str(peer_id))
        return await original(peer_id, *args, **kwargs)

    net.dial_peer = dial_peer
    return calls


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("drip", [False, True])
async def test_bug_o_idle_kad_streams_switch_off_the_dht_server(fixed, drip):
    """12 kad streams from one peer that send nothing (or one byte of a length prefix) take all 12
    of kad-dht's handler slots for as long as they stay open: an honest FIND_NODE is reset. With O
    one peer gets 3 slots, and each stream is reset after KAD_IDLE_S without a complete request."""
    victim, attacker, honest = bare_host(), bare_host(), bare_host()
    dht = KadDHT(victim, DHTMode.SERVER)
    if fixed:
        libp2p_fixes.bound_kad_streams(victim, dht)
    with trio.fail_after(60):
        async with running(victim, attacker, honest), background_trio_service(dht):
            vid = await connect(attacker, addr_of(victim))
            await connect(honest, addr_of(victim))
            held = await hold_kad_streams(attacker, vid, 12, drip=drip)
            await trio.sleep(0.5)  # let the victim's handlers start on all 12 (nothing to await on its side)
            answer = await find_node(honest, vid, os.urandom(32))
            t0 = trio.current_time()
            dead = await streams_dead(held, libp2p_fixes.KAD_IDLE_S + 3)
            waited = trio.current_time() - t0
            print(f"fixed={fixed} drip={drip}: honest answered {answer is not None}, attacker streams ended "
                  f"{sum(dead)}/{len(held)} within {waited:.1f} s")
            if not fixed:
                assert answer is None  # reset: the server is off for honest peers
                assert len(held) == 12 and not any(dead)
            else:
                assert answer is not None
                assert all(dead)
                assert dht.gaia_stream_stats["refused_per_peer"] == 12 - libp2p_fixes.KAD_STREAMS_PER_PEER
                assert dht.gaia_stream_stats["idle_reset"] == libp2p_fixes.KAD_STREAMS_PER_PEER
                assert await find_node(honest, vid, os.urandom(32)) is not None  # and still afterwards


RAW_OPENS = 2000


@pytest.mark.parametrize("fixed", [False, True])
async def test_bug_p_unnegotiated_yamux_streams_pile_up(fixed):
    """2000 raw yamux stream opens that never start multistream-select: py-libp2p keeps each one (a
    YamuxStream, a NetStream, a task) until its 10 s negotiation timeout, hundreds at once from one
    peer. With P a peer has at most INBOUND_STREAMS_PER_PEER; the rest are reset at once, and the
    victim's stream objects are back at the baseline soon after the opens end."""
    victim, attacker = bare_host(), bare_host()
    if fixed:
        libp2p_fixes.cap_inbound_streams(victim)
    with trio.fail_after(90):
        async with running(victim, attacker):
            await connect(attacker, addr_of(victim))
            await trio.sleep(0.5)
            base = len(yamux_conn(victim, attacker.get_id()).muxed_conn.streams)
            peak, vconn = await open_raw_streams(attacker, victim, RAW_OPENS)
            t_end = trio.current_time()
            while trio.current_time() - t_end < 1.0:
                peak = max(peak, len(vconn.muxed_conn.streams))
                await trio.sleep(0.05)
            print(f"fixed={fixed}: peak {peak} live victim streams from one peer (baseline {base})")
            if not fixed:
                assert peak > 3 * libp2p_fixes.INBOUND_STREAMS_PER_PEER
            else:
                # the cap, plus the muxer's 10-stream accept queue and streams between accept and the check
                assert peak <= libp2p_fixes.INBOUND_STREAMS_PER_PEER + 40, peak
                assert victim.get_network().gaia_stream_stats["refused_per_peer"] > RAW_OPENS // 2
                await wait_until(lambda: len(vconn.muxed_conn.streams) <= base, "the victim's streams back to baseline",
                                 10 + 5)
                assert not vconn.is_closed  # the attacker's connection itself stays: only its streams go


@pytest.mark.parametrize("fixed", [False, True])
async def test_bug_p1_dht_stores_junk_records(fixed):
    """PUT_VALUE of a key without a namespace is stored and echoed by kad-dht as shipped; with P1 it
    is refused (stream reset, nothing stored), as is every ADD_PROVIDER."""
    victim, attacker = bare_host(), bare_host()
    dht = KadDHT(victim, DHTMode.SERVER)
    if fixed:
        libp2p_fixes.refuse_dht_records(dht)
    n = 50
    with trio.fail_after(60):
        async with running(victim, attacker), background_trio_service(dht):
            vid = await connect(attacker, addr_of(victim))
            echoed = 0
            for i in range(n):
                resp = await kad_request(attacker, vid, put_value_msg(f"junk-{i}".encode(), os.urandom(1000)))
                echoed += resp is not None
            await kad_request(attacker, vid, add_provider_msg(attacker, os.urandom(32)))
            stored, providers = dht.get_value_store_size(), len(dht.provider_store.providers)
            print(f"fixed={fixed}: {echoed}/{n} echoed, {stored} stored, {providers} provider keys")
            if not fixed:
                assert echoed == n and stored == n and providers == 1
            else:
                assert echoed == 0 and stored == 0 and providers == 0
                assert dht.gaia_record_stats == {"records_refused": n, "providers_refused": 1}


# S: IPv6 remote addresses

V6_LOOPBACK = multiaddr.Multiaddr("/ip6/::1/tcp/0")


async def _remote_of_inbound(a, b):
    await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
    with trio.fail_after(10):
        while not a.get_network().get_connections(b.get_id()):
            await trio.sleep(0.01)
    return a.get_network().get_connections(b.get_id())[0].muxed_conn.get_remote_address()


@pytest.mark.skipif(not ipv6_available(), reason="this machine has no IPv6 loopback")
async def test_bug_s_upstream_ipv6_connections_have_no_remote_address(monkeypatch):
    """py-libp2p 0.8.1 (TrioTCPStream.get_remote_address wants a 2-tuple; IPv6 gives 4). If this
    fails, upstream fixed S and the patch may go."""
    monkeypatch.setattr(TrioTCPStream, "get_remote_address", libp2p_fixes.upstream(TrioTCPStream, "get_remote_address"))
    with trio.fail_after(30):
        a, b = _host(), _host()
        async with a.run(listen_addrs=[V6_LOOPBACK]), b.run(listen_addrs=[V6_LOOPBACK]):
            assert await _remote_of_inbound(a, b) is None


@pytest.mark.skipif(not ipv6_available(), reason="this machine has no IPv6 loopback")
async def test_bug_s_fixed_ipv6_connections_have_their_remote_address():
    libp2p_fixes.install_class_patches()
    with trio.fail_after(30):
        a, b = _host(), _host()
        async with a.run(listen_addrs=[V6_LOOPBACK]), b.run(listen_addrs=[V6_LOOPBACK]):
            remote = await _remote_of_inbound(a, b)
            assert remote is not None and remote[0] == "::1"


def _crowded_peerstore(host, n: int = 1001) -> None:
    """More peers than py-libp2p's peerstore holds (1,000), each with an address, as 1,000 visitors
    with fresh identities leave behind; then its periodic cleanup (every 300 s) runs."""
    from libp2p.crypto.ed25519 import create_new_key_pair as new_key

    ps = host.get_peerstore()
    for k in range(n):
        kp = new_key()
        pid = ID.from_pubkey(kp.public_key)
        ps.add_addrs(pid, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{20000 + k}")], 3600)
        ps.add_pubkey(pid, kp.public_key)
    ps._cleanup_expired_records()


def test_bug_t_upstream_a_full_peerstore_evicts_our_own_key(monkeypatch):
    """py-libp2p 0.8.1 (PeerStore._enforce_peer_limit evicts entries without addresses first; ours
    has none). If this fails, upstream fixed T and the patch may go."""
    from libp2p.peer.peerstore import PeerStore, PeerStoreError

    monkeypatch.setattr(PeerStore, "_enforce_peer_limit", libp2p_fixes.upstream(PeerStore, "_enforce_peer_limit"))
    host = _host()
    _crowded_peerstore(host)
    with pytest.raises(PeerStoreError):
        host.get_public_key()  # what identify calls for every peer that asks: the node dies there


async def test_bug_t_fixed_a_node_with_a_full_peerstore_still_answers_identify():
    from libp2p.identity.identify.identify import ID as IDENTIFY, parse_identify_response

    libp2p_fixes.install_class_patches()
    with trio.fail_after(30):
        a, b = _host(), _host()
        _crowded_peerstore(a)
        assert len(a.get_peerstore().peer_data_map) <= 1001  # bounded: 1,000 peers and our own entry
        a.get_public_key()
        async with a.run(listen_addrs=[LOOPBACK]), b.run(listen_addrs=[LOOPBACK]):
            await b.connect(info_from_p2p_addr(multiaddr.Multiaddr(f"{a.get_addrs()[0]}")))
            stream = await b.new_stream(a.get_id(), [IDENTIFY])
            got = parse_identify_response(await stream.read(8192))
            assert got.public_key == a.get_public_key().serialize()


async def _window_updates_for(frames: list[bytes]) -> tuple[bytes, int]:
    """Write ``frames`` on one yamux stream, read them as a results reader does (length, then body):
    what arrived and how many WINDOW_UPDATE frames the reader sent back."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    from gaia_p2p.node.control import read_frame

    sent = [0]
    send_window_update = YamuxStream.send_window_update

    async def counted(self, increment: int, skip_lock: bool = False) -> None:
        if increment > 0:
            sent[0] += 1
        await send_window_update(self, increment, skip_lock)

    writer, reader = _host(), _host()
    received = bytearray()
    all_read = trio.Event()

    async def read_all(stream) -> None:
        for _ in frames:
            received.extend(await read_frame(stream, 1 << 20))
        all_read.set()

    reader.set_stream_handler(RAW, read_all)
    YamuxStream.send_window_update = counted
    try:
        with trio.fail_after(30):
            async with writer.run(listen_addrs=[LOOPBACK]), reader.run(listen_addrs=[LOOPBACK]):
                info = info_from_p2p_addr(multiaddr.Multiaddr(f"{reader.get_addrs()[0]}"))
                await writer.connect(info)
                stream = await writer.new_stream(info.peer_id, [RAW])
                for frame in frames:
                    await stream.write(encode_uvarint(len(frame)) + frame)
                await all_read.wait()
    finally:
        YamuxStream.send_window_update = send_window_update
    return bytes(received), sent[0]


SMALL_FRAMES = [bytes([i % 256]) * 90 for i in range(200)]  # 200 results messages of 90 bytes


async def test_bug_w_upstream_every_read_sends_a_window_update(monkeypatch):
    """py-libp2p 0.8.1: each read that leaves the window short sends an update (2 reads per frame
    here). If this fails, upstream batches its window updates and W may go."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    name = "_auto_tune_and_send_window_update"
    libp2p_fixes.install_class_patches()
    monkeypatch.setattr(YamuxStream, name, libp2p_fixes.upstream(YamuxStream, name))
    received, updates = await _window_updates_for(SMALL_FRAMES)
    assert received == b"".join(SMALL_FRAMES)
    assert updates >= len(SMALL_FRAMES), updates


async def test_bug_w_fixed_window_updates_come_at_half_the_window():
    libp2p_fixes.install_class_patches()
    received, updates = await _window_updates_for(SMALL_FRAMES)  # 18 KB: well below half a window
    assert received == b"".join(SMALL_FRAMES)
    assert updates == 0, updates
    # 4 MB in frames of 100 KB: the writer blocks on a full window many times over and is never left
    # waiting for good; the updates are a few per window, not one per read.
    big = [bytes([i]) * 100_000 for i in range(40)]
    received, updates = await _window_updates_for(big)
    assert received == b"".join(big)
    assert 4 <= updates <= 40, updates
