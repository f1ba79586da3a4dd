"""Circuit relay v2 between real hosts on 127.0.0.1 (net/relay.py): every relay resource is bounded,
and what py-libp2p 0.8.1 gets wrong (fix U: RESERVE for another peer; fix V: two DCUtR initiators).

A = relay (hop), B = reserves on A, C and D = dial B through A (/ip4/127.0.0.1/tcp/PA/p2p/A/p2p-circuit/p2p/B).
"""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack

import multiaddr
import pytest
import trio

from gaia_p2p.net import libp2p_fixes, relay

pytestmark = pytest.mark.trio

LOOP = "/ip4/127.0.0.1/tcp/0"


def _host():
    from libp2p import create_yamux_muxer_option, new_host
    from libp2p.crypto.ed25519 import create_new_key_pair

    kp = create_new_key_pair()
    return new_host(key_pair=kp, listen_addrs=[multiaddr.Multiaddr(LOOP)], muxer_opt=create_yamux_muxer_option(),
                    sec_opt=libp2p_fixes.noise_only_security(kp), enable_mDNS=False, enable_upnp=False)


def _limits(**kw) -> relay.RelayLimitsCfg:
    base = dict(max_reservations=8, circuits_per_peer=4, circuit_bytes=1 << 20, circuit_s=600, reservation_ttl_s=600)
    return relay.RelayLimitsCfg(**(base | kw))


async def _lab(stack: AsyncExitStack, n: int, limits: relay.RelayLimitsCfg, *, upstream_hop: bool = False):
    """n hosts running; host 0 serves HOP (ours, or py-libp2p's own with upstream_hop), the others STOP."""
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
    from libp2p.relay.circuit_v2.resources import RelayLimits
    from libp2p.relay.circuit_v2.transport import CircuitV2Transport
    from libp2p.tools.anyio_service import background_trio_service

    hosts = [_host() for _ in range(n)]
    stats = Counter()
    protos, transports = [], []
    for i, h in enumerate(hosts):
        await stack.enter_async_context(h.run([multiaddr.Multiaddr(LOOP)]))
        if i == 0 and upstream_hop:
            p = CircuitV2Protocol(h, limits=RelayLimits(duration=600, data=1 << 20, max_circuit_conns=4,
                                                        max_reservations=8), allow_hop=True)
        else:
            p = relay.make_protocol(h, limits, hop=i == 0, stats=stats if i == 0 else Counter())
        await stack.enter_async_context(background_trio_service(p))
        await p.event_started.wait()
        protos.append(p)
        transports.append(CircuitV2Transport(h, p, RelayConfig(roles=RelayRole.STOP)))
    relay_addr = str(hosts[0].get_addrs()[0])
    for h in hosts[1:]:
        await h.connect(info_from_p2p_addr(multiaddr.Multiaddr(relay_addr)))
    return hosts, protos, transports, stats, relay_addr


async def _reserve(host, relay_id, peer_field=None) -> bool:
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID
    from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
    from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

    stream = await host.new_stream(relay_id, [PROTOCOL_ID])
    msg = HopMessage(type=HopMessage.RESERVE, peer=PeerId(id=(peer_field or host.get_id()).to_bytes()))
    with trio.fail_after(10):
        await write_delimited_msg(stream, msg)
        resp = await read_delimited_msg(stream, HopMessage)
    await stream.close()
    return resp.status == StatusCode.OK


async def _echo_server(host, got: list[int]) -> None:
    async def handler(stream):
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                got.append(len(data))
        except Exception:
            pass

    host.set_stream_handler("/test/sink/1", handler)


@pytest.mark.timeout(30)
async def test_bug_U_upstream_reserve_for_another_peer():
    """py-libp2p's hop handler reserves for whatever peer id the RESERVE names: B takes a slot in
    C's name (C never asked), so any connected peer can fill a relay with reservations for others."""
    async with AsyncExitStack() as stack:
        hosts, protos, _, _, _ = await _lab(stack, 3, _limits(), upstream_hop=True)
        a, b, c = hosts
        assert await _reserve(b, a.get_id(), peer_field=c.get_id())
        rm = protos[0].resource_manager
        assert rm.get_reservation(c.get_id()) is not None and rm.get_reservation(b.get_id()) is None


@pytest.mark.timeout(30)
async def test_fix_U_reservation_is_for_the_asker():
    async with AsyncExitStack() as stack:
        hosts, protos, _, stats, _ = await _lab(stack, 3, _limits())
        a, b, c = hosts
        assert await _reserve(b, a.get_id(), peer_field=c.get_id())
        rm = protos[0].resource_manager
        assert rm.get_reservation(b.get_id()) is not None and rm.get_reservation(c.get_id()) is None
        assert stats["reserve_spoofed"] == 1 and stats["reservations_granted"] == 1
        # the relay's peerstore now has B's circuit address (what DHT answers about B carry)
        assert any("/p2p-circuit/p2p/" + str(b.get_id()) in str(x) for x in a.get_peerstore().addrs(b.get_id()))


@pytest.mark.timeout(30)
async def test_reservations_are_bounded():
    async with AsyncExitStack() as stack:
        hosts, protos, _, stats, _ = await _lab(stack, 4, _limits(max_reservations=2))
        a = hosts[0]
        assert await _reserve(hosts[1], a.get_id()) and await _reserve(hosts[2], a.get_id())
        assert not await _reserve(hosts[3], a.get_id())  # the third: RESOURCE_LIMIT_EXCEEDED
        assert await _reserve(hosts[1], a.get_id())  # a refresh is not a new slot
        assert len(protos[0].resource_manager._reservations) == 2
        assert stats["reservations_refused_limit"] == 1 and stats["reservations_refreshed"] == 1


@pytest.mark.timeout(30)
async def test_circuits_per_peer_and_no_reservation_are_refused():
    async with AsyncExitStack() as stack:
        hosts, _, transports, stats, relay_addr = await _lab(stack, 4, _limits(circuits_per_peer=1))
        a, b, c, d = hosts
        circ_b = multiaddr.Multiaddr(f"{relay_addr}/p2p-circuit/p2p/{b.get_id()}")
        with pytest.raises(Exception):  # B has no reservation yet: NO_RESERVATION
            with trio.fail_after(10):
                await transports[2].dial(circ_b)
        assert stats["circuits_refused"] == 1
        assert await _reserve(b, a.get_id())
        with trio.fail_after(10):
            await transports[2].dial(circ_b)  # C -> B: the one circuit B's reservation allows
        with pytest.raises(Exception):
            with trio.fail_after(10):
                await transports[3].dial(circ_b)  # D -> B: over circuits_per_peer
        assert stats["circuits_refused"] == 2
        assert relay.relayed_peers(c) == [str(b.get_id())] and relay.relayed_peers(d) == []
        # what a large fetch must not cross: C reaches B through the relay only, and D not at all
        ids = [str(h.get_id()) for h in hosts]
        assert relay.no_direct_path(c, ids[:2] + ids[3:]) == {ids[1], ids[3]}


async def _circuit_to_sink(hosts, transports, relay_addr, got: list[int]):
    """b reserves on the relay a and runs a sink; c dials b through a: c's stream to the sink."""
    a, b, c = hosts
    await _echo_server(b, got)
    assert await _reserve(b, a.get_id())
    with trio.fail_after(10):
        await transports[2].dial(multiaddr.Multiaddr(f"{relay_addr}/p2p-circuit/p2p/{b.get_id()}"))
        return await c.new_stream(b.get_id(), ["/test/sink/1"])


@pytest.mark.timeout(30)
async def test_circuit_bytes_are_bounded():
    """A circuit that has carried relay_circuit_bytes (both ways) is reset; no byte beyond it crosses."""
    limit = 16384
    async with AsyncExitStack() as stack:
        hosts, _, transports, stats, relay_addr = await _lab(stack, 3, _limits(circuit_bytes=limit))
        got: list[int] = []
        stream = await _circuit_to_sink(hosts, transports, relay_addr, got)
        with pytest.raises(Exception):
            with trio.fail_after(10):
                for _ in range(64):
                    await stream.write(b"x" * 4096)
                    await trio.sleep(0.01)  # let the relay forward or reset
        assert stats["bytes_relayed"] <= limit, stats
        assert sum(got) < 64 * 4096 and stats["circuits_ended_bytes"] >= 1, (sum(got), stats)


@pytest.mark.timeout(30)
async def test_circuit_duration_is_bounded(monkeypatch):
    """A circuit older than relay_circuit_s is reset at its next frame (the relay's clock is moved
    on rather than waited out)."""
    import time as real_time

    from libp2p.relay.circuit_v2 import protocol as hop_module

    offset = [0.0]

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return real_time.monotonic() + offset[0]

        def __getattr__(self, name):
            return getattr(real_time, name)

    monkeypatch.setattr(hop_module, "time", Clock())
    async with AsyncExitStack() as stack:
        hosts, _, transports, stats, relay_addr = await _lab(stack, 3, _limits(circuit_s=30))
        got: list[int] = []
        stream = await _circuit_to_sink(hosts, transports, relay_addr, got)
        with trio.fail_after(10):
            await stream.write(b"before")
        offset[0] = 31.0
        with pytest.raises(Exception):
            with trio.fail_after(10):
                for _ in range(50):
                    await stream.write(b"after")
                    await trio.sleep(0.05)
        assert stats["circuits_ended_duration"] >= 1, stats


async def test_fix_V_one_dcutr_initiator_per_pair():
    lo, hi = "12D3KooWA", "12D3KooWB"
    assert relay.should_initiate(lo, hi, {"inbound"}) and relay.should_initiate(hi, lo, {"inbound"})
    assert not relay.should_initiate(lo, hi, {"outbound"})
    # both dialled (two circuits) or unknown: exactly one of the two initiates
    for dirs in ({"inbound", "outbound"}, {"unknown"}, set()):
        assert relay.should_initiate(lo, hi, dirs) != relay.should_initiate(hi, lo, dirs)


@pytest.mark.timeout(30)
async def test_malformed_relay_messages_are_counted_and_the_relay_goes_on():
    """Garbage on the hop stream (not protobuf; a length over 64 KiB): each is answered, counted and
    logged; the relay then grants an honest reservation."""
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID
    from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
    from libp2p.relay.circuit_v2.utils import read_delimited_msg

    async with AsyncExitStack() as stack:
        hosts, protos, _, stats, _ = await _lab(stack, 3, _limits())
        a, b, c = hosts
        before = sum(relay.REJECTED.values())
        for junk in (b"\x05\xff\xff\xff\xff\xff", b"\xff\xff\x7f" + b"x" * 100):
            stream = await b.new_stream(a.get_id(), [PROTOCOL_ID])
            await stream.write(junk)
            with trio.fail_after(10):
                resp = await read_delimited_msg(stream, HopMessage)
            assert resp.status == StatusCode.MALFORMED_MESSAGE
            await stream.reset()
        assert sum(relay.REJECTED.values()) == before + 2, relay.REJECTED
        assert await _reserve(c, a.get_id())
        assert protos[0].resource_manager.get_reservation(c.get_id()) is not None
