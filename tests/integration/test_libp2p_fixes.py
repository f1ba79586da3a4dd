"""Each py-libp2p 0.8.1 workaround in gaia_p2p/node/libp2p_fixes.py, with the bug it guards against."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from gaia_p2p.node import libp2p_fixes
from gaia_p2p.node.control import encode_uvarint
from gaia_p2p.node.runtime import run

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


async def test_bug_a_unguarded_pubsub_is_killed_by_one_malformed_frame():
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
                await wait_until(lambda: node.bad_streams >= 3, "3 rejected pubsub streams", 20)
                gen = node.island.generation
                await wait_until(lambda: node.island.generation > gen + 5, "the island to keep evolving", 20)
            nursery.cancel_scope.cancel()


async def test_bug_b_writes_to_one_stream_are_serialized():
    """Two RPCs written concurrently must not interleave their frames (upstream #793 / #1407)."""

    class FramedStream:
        """Writes in 3 yielding chunks, as yamux does per 64 KB frame."""

        def __init__(self) -> None:
            self.log: list[str] = []

        async def write(self, data: bytes) -> None:
            for i in range(3):
                self.log.append(data[:1].decode())
                await trio.sleep(0)

    class FakePubsub:
        async def write_msg(self, stream, rpc_msg) -> bool:
            await stream.write(rpc_msg)
            return True

    async def two_writers(pubsub) -> str:
        stream = FramedStream()
        async with trio.open_nursery() as n:
            n.start_soon(pubsub.write_msg, stream, b"a")
            n.start_soon(pubsub.write_msg, stream, b"b")
        return "".join(stream.log)

    assert await two_writers(FakePubsub()) not in ("aaabbb", "bbbaaa")  # the bug: interleaved frames
    fixed = FakePubsub()
    libp2p_fixes.serialize_pubsub_writes(fixed)
    assert await two_writers(fixed) in ("aaabbb", "bbbaaa")


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


def test_bug_f_equivocation_cache_is_bounded():
    d = libp2p_fixes.BoundedDict(512)
    for i in range(2000):
        d[i.to_bytes(4, "big")] = object()
    assert len(d) == 512
    assert b"\x00\x00\x07\xcf" in d and b"\x00\x00\x00\x00" not in d


async def test_bug_g_noise_only(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0))
            upgrader = node.p2p.host.get_network().upgrader
            protos = list(upgrader.security_multistream.transports)
            assert [str(p) for p in protos] == ["/noise"], protos
            nursery.cancel_scope.cancel()
