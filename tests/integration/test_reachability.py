"""AutoNAT between real libp2p hosts on 127.0.0.1 (gaia_p2p/net/reachability.py), and the bug in
py-libp2p 0.8.1's own AutoNATService that made us write it."""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import numpy as np
import pytest
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.autonat import AutoNATService
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.peerinfo import PeerInfo
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from gaia_p2p.core.reachability import DialBackLimiter, Reachability
from gaia_p2p.net import libp2p_fixes
from gaia_p2p.net.reachability import AUTONAT_PROTOCOL, MAX_ASKED, MAX_CONCURRENT_DIALBACKS, MAX_OBSERVED, AutoNAT

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def _host():
    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(),
                    sec_opt=libp2p_fixes.noise_only_security(kp))


def _dead_port() -> int:
    """A port that was free a moment ago and has nothing behind it now (a closed listener)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def _hosts(n: int, listen=LOOPBACK):
    async with AsyncExitStack() as stack:
        hosts = [_host() for _ in range(n)]
        for h in hosts:
            await stack.enter_async_context(h.run(listen_addrs=[listen]))
        yield hosts


async def _connect(a, b) -> None:
    await a.connect(PeerInfo(b.get_id(), b.get_addrs()))


def _autonat(host, **kw) -> AutoNAT:
    svc = AutoNAT(host, rng=np.random.default_rng(0), **kw)
    svc.install()
    return svc


async def _raw_request(client, server, payload: bytes) -> Message:
    stream = await client.new_stream(server.get_id(), [TProtocol(AUTONAT_PROTOCOL)])
    await stream.write(encode_varint_prefixed(payload))
    answer = Message()
    answer.ParseFromString(await read_varint_prefixed_bytes_limited(stream, 4096))
    await stream.close()
    return answer


def _dial(client, addrs: list[str], peer_id: bytes | None = None) -> bytes:
    m = Message(type=Message.DIAL)
    m.dial.peer.id = peer_id if peer_id is not None else client.get_id().to_bytes()
    m.dial.peer.addrs.extend(multiaddr.Multiaddr(a).to_bytes() for a in addrs)
    return m.SerializeToString()


async def test_upstream_autonat_says_ok_to_a_node_nobody_can_dial():
    """py-libp2p 0.8.1's AutoNATService "dials back" with host.connect, which returns at once when a
    connection to the peer exists, and the requester always has one: it answers OK for an address
    with nothing behind it. If this starts failing, upstream fixed it and could replace our server."""
    with trio.fail_after(30):
        async with _hosts(2) as (client, server):
            AutoNATService(server, serve=True)
            await _connect(client, server)
            dead = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{_dead_port()}")
            status, addr = await AutoNATService(client, serve=False).query_server(
                server.get_id(), addrs=[dead.to_bytes()], timeout=10)
            assert status == Message.OK and addr == dead.to_bytes()  # a lie: nothing listens there


async def test_upstream_autonat_counts_a_peer_without_autonat_as_private():
    """Upstream's check_reachability records any failed query as 'cannot dial us', so peers that do
    not speak AutoNAT at all push a node towards PRIVATE. Ours does not count them (next test)."""
    with trio.fail_after(30):
        async with _hosts(2) as (client, other):
            await _connect(client, other)
            svc = AutoNATService(client, serve=False, confirmations=1)
            assert await svc.check_reachability([other.get_id()]) == 2  # AutoNATStatus.PRIVATE


async def test_a_peer_without_autonat_is_no_verdict():
    with trio.fail_after(30):
        async with _hosts(2) as (client, other):
            await _connect(client, other)
            svc = _autonat(client, confirmations=1)
            assert await svc.check_once() == ["no_answer"]
            assert svc.status == Reachability.UNKNOWN and svc.snapshot()["asked"] == 0


async def test_a_node_its_peers_can_dial_back_is_public():
    with trio.fail_after(60):
        async with _hosts(4) as (a, *servers):
            for s in servers:
                _autonat(s)
            client = _autonat(a, confirmations=2)
            assert client.snapshot()["text"] == "unknown (asked 0 peers)"
            for s in servers:
                await _connect(a, s)
            changed = []
            client.on_change(changed.append)
            async with trio.open_nursery() as nursery:
                async def wait() -> None:
                    changed.append(("event", await client.wait_changed()))

                nursery.start_soon(wait)
                await trio.sleep(0)  # the waiter is waiting
                assert sorted(await client.check_once()) == ["dialled_back"] * 3
            assert client.status == Reachability.PUBLIC
            assert changed == [Reachability.PUBLIC, ("event", Reachability.PUBLIC)]
            snap = client.snapshot()
            own = str(a.get_transport_addrs()[0])
            assert snap["asked"] == 3 and snap["dialled_back"] == 3 and snap["dialled_at"] == [own]
            assert snap["text"] == f"public (3 of 3 peers dialled us back at {own})"
            # identify told us where each peer saw us (py-libp2p's own manager drops loopback)
            assert snap["observed_addrs"] and all(o.startswith("/ip4/127.0.0.1/tcp/") for o in snap["observed_addrs"])
            # a second round asks nobody again before interval_s
            assert await client.check_once() == []


async def test_a_node_that_advertises_an_address_nobody_can_dial_is_private():
    with trio.fail_after(60):
        async with _hosts(3) as (a, *servers):
            srv = [_autonat(s) for s in servers]
            dead = f"/ip4/127.0.0.1/tcp/{_dead_port()}"
            # only the advertised address: not "the IP peers observed + our listen port" (which works here)
            client = _autonat(a, confirmations=2, advertised=lambda: [dead], guess_from_observed=False)
            for s in servers:
                await _connect(a, s)
            assert sorted(await client.check_once()) == ["dial_failed"] * 2
            assert client.status == Reachability.PRIVATE
            assert client.snapshot()["text"] == "private (no peer could dial us back; asked 2)"
            assert [s.stats["served_dial_failed"] for s in srv] == [1, 1]
            assert a.get_connected_peers()  # the failed dial-backs left our real connections alone


async def test_dial_back_goes_only_to_the_ip_the_request_came_from():
    """A stranger must not be able to use us to dial a third party: an address on another IP is
    never dialled (and neither is a request naming another peer id, or one over the limits)."""
    with trio.fail_after(30):
        async with _hosts(2) as (client, server):
            srv = _autonat(server)
            await _connect(client, server)
            answer = await _raw_request(client, server, _dial(client, ["/ip4/10.9.8.7/tcp/4001",
                                                                       "/ip6/2001:db8::1/tcp/4001"]))
            assert answer.dialResponse.status == Message.E_DIAL_REFUSED
            assert srv.stats["served_no_matching_addr"] == 1 and srv.stats["served_dialled_back"] == 0
            other = create_new_key_pair()
            from libp2p.peer.id import ID

            answer = await _raw_request(client, server, _dial(client, [str(client.get_transport_addrs()[0])],
                                                              peer_id=ID.from_pubkey(other.public_key).to_bytes()))
            assert answer.dialResponse.status == Message.E_BAD_REQUEST
            assert srv.stats["served_peer_id_mismatch"] == 1


async def test_dial_backs_are_rate_limited_per_peer_and_in_all():
    with trio.fail_after(30):
        async with _hosts(3) as (c1, c2, server):
            srv = _autonat(server, limiter=DialBackLimiter(per_peer_s=3600, per_peer_burst=2, global_per_s=1e-6,
                                                           global_burst=3))
            await _connect(c1, server)
            await _connect(c2, server)
            ok = [str(c1.get_transport_addrs()[0])]
            got = [(await _raw_request(c1, server, _dial(c1, ok))).dialResponse.status for _ in range(3)]
            assert got == [Message.OK, Message.OK, Message.E_DIAL_REFUSED]
            assert srv.stats["served_rate_peer"] == 1
            # the per-IP bucket (4 here) is shared by both clients on 127.0.0.1; the global one holds 3
            ok2 = [str(c2.get_transport_addrs()[0])]
            got = [(await _raw_request(c2, server, _dial(c2, ok2))).dialResponse.status for _ in range(2)]
            assert got == [Message.OK, Message.E_DIAL_REFUSED]
            assert srv.stats["served_rate_global"] == 1 and srv.stats["served_dialled_back"] == 3


async def test_garbage_requests_are_counted_and_the_server_keeps_serving():
    with trio.fail_after(30):
        async with _hosts(2) as (client, server):
            srv = _autonat(server)
            await _connect(client, server)
            for junk in (b"\xff\xff\xff", b"\xff\xff\xff\xff\x0f"):  # not protobuf; a 4 GiB length prefix
                stream = await client.new_stream(server.get_id(), [TProtocol(AUTONAT_PROTOCOL)])
                await stream.write(encode_varint_prefixed(junk) if len(junk) == 3 else junk)
                with pytest.raises(Exception):  # reset, no answer
                    await read_varint_prefixed_bytes_limited(stream, 4096)
            assert srv.stats["served_bad_request"] == 2
            answer = await _raw_request(client, server, Message(type=Message.DIAL_RESPONSE).SerializeToString())
            assert answer.dialResponse.status == Message.E_BAD_REQUEST and srv.stats["served_bad_request"] == 3
            answer = await _raw_request(client, server, _dial(client, [str(client.get_transport_addrs()[0])]))
            assert answer.dialResponse.status == Message.OK


def test_observed_addresses_are_bounded():
    class Conn:
        def __init__(self, i):
            self.muxed_conn = type("M", (), {"peer_id": f"peer{i}"})()
            self.is_closed = True  # py-libp2p's manager skips it

    class Manager:
        def record_observation(self, conn, observed, local):
            pass

    host = type("H", (), {"_observed_addr_manager": Manager(), "set_stream_handler": lambda *a: None})()
    svc = AutoNAT(host, rng=np.random.default_rng(0))
    svc.install()
    for i in range(MAX_OBSERVED + 10):
        host._observed_addr_manager.record_observation(Conn(i), multiaddr.Multiaddr(f"/ip4/1.2.3.4/tcp/{i + 1}"), [])
    assert len(svc.observed) == MAX_OBSERVED and "peer0" not in svc.observed


async def test_dial_backs_in_flight_are_bounded_and_the_rest_refused_not_queued():
    """Addresses that accept TCP and then say nothing hold a dial-back until its timeout: at most
    MAX_CONCURRENT_DIALBACKS at once, the next request is refused at once."""
    with trio.fail_after(30):
        silent = trio.socket.socket()
        await silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        async with _hosts(2) as (client, server):
            srv = _autonat(server, dial_timeout_s=3.0,
                           limiter=DialBackLimiter(per_peer_burst=100, global_burst=100, global_per_s=100))
            await _connect(client, server)
            answers: list[int] = []

            async def one() -> None:
                answers.append((await _raw_request(client, server, _dial(client, [f"/ip4/127.0.0.1/tcp/{port}"]))
                                ).dialResponse.status)

            async with trio.open_nursery() as nursery:
                for _ in range(MAX_CONCURRENT_DIALBACKS):
                    nursery.start_soon(one)
                while srv.dialbacks.value > 0:  # all four are dialling
                    await trio.sleep(0.01)
                nursery.start_soon(one)
            silent.close()
            assert answers[0] == Message.E_DIAL_REFUSED and srv.stats["served_busy"] == 1
            assert sorted(answers[1:]) == [Message.E_DIAL_ERROR] * MAX_CONCURRENT_DIALBACKS


def test_the_peers_asked_are_bounded():
    svc = AutoNAT(object(), rng=np.random.default_rng(0))
    for i in range(MAX_ASKED + 50):
        svc._note_asked(f"p{i}", float(i))
    svc._note_asked("p60", 1e6)  # asked again: moves to the newest end
    assert len(svc.last_asked) == MAX_ASKED and "p0" not in svc.last_asked and next(reversed(svc.last_asked)) == "p60"


def test_a_request_lists_observed_guesses_first_and_at_most_32_addresses():
    from gaia_p2p.core.reachability import MAX_REQUEST_ADDRS

    class Host:
        def get_transport_addrs(self):
            return [multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/4001"), multiaddr.Multiaddr("/ip6/::/tcp/4001")]

    pid = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    many = [f"/ip4/10.0.{i // 250}.{i % 250}/tcp/4001/p2p/{pid}" for i in range(100)]
    svc = AutoNAT(Host(), rng=np.random.default_rng(0), advertised=lambda: ["/ip4/0.0.0.0/tcp/4001", *many])
    svc.observed["peer"] = "/ip4/203.0.113.7/tcp/51234"  # an ephemeral port: we ask for our listen port there
    got = [str(multiaddr.Multiaddr(b)) for b in svc.request_addrs()]
    assert got[0] == "/ip4/203.0.113.7/tcp/4001" and len(got) == MAX_REQUEST_ADDRS
    assert "/ip4/0.0.0.0/tcp/4001" not in got and got[1] == "/ip4/10.0.0.0/tcp/4001"  # /p2p/ suffix dropped
