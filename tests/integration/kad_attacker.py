"""Hostile DHT and muxer peers: bare py-libp2p hosts on 127.0.0.1 that speak /ipfs/kad/1.0.0 and
yamux by hand (no gaia node behind them). No pytest in here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamReset
from libp2p.kad_dht.common import PROTOCOL_ID as KAD
from libp2p.kad_dht.pb.kademlia_pb2 import Message, Record
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes

from gaia_p2p.net import libp2p_fixes

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
#: What opening a stream raises when the peer resets it during multistream-select (a refusal).
REFUSED = (StreamFailure, MuxedStreamError, StreamReset)  # a peer that refuses a stream resets it


def bare_host() -> Any:
    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(), sec_opt=libp2p_fixes.noise_only_security(kp))


def addr_of(host: Any) -> str:
    return f"{host.get_addrs()[0]}"


async def connect(host: Any, addr: str) -> ID:
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    with trio.fail_after(10):
        await host.connect(info)
    return info.peer_id


@dataclass
class DialCounter:
    """TCP listeners on 127.0.0.1 that count the connections made to them and close each at once:
    the 'unused ports' of the fake peers, so that every dial of a fake can be counted."""

    ports: list[int] = field(default_factory=list)
    dials: int = 0

    async def serve(self, n: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = [(await trio.open_tcp_listeners(0, host="127.0.0.1"))[0] for _ in range(n)]
        self.ports = [ln.socket.getsockname()[1] for ln in listeners]

        async def handler(stream: trio.SocketStream) -> None:
            self.dials += 1
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for ln in listeners:
                nursery.start_soon(trio.serve_listeners, handler, [ln])
            task_status.started()


def fake_peers(n: int, ports: list[int]) -> list[tuple[ID, list[bytes]]]:
    """``n`` made-up peer ids (fresh keys nobody holds), spread over ``ports`` on 127.0.0.1."""
    return [(ID.from_pubkey(create_new_key_pair().public_key),
             [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{ports[i % len(ports)]}").to_bytes()]) for i in range(n)]


def poisoning_handler(fakes: list[tuple[ID, list[bytes]]], answered: list[str]) -> Any:
    """A kad stream handler that answers every FIND_NODE with every one of ``fakes``."""

    async def handle(stream: Any) -> None:
        try:
            while True:
                req = Message()
                req.ParseFromString(await read_varint_prefixed_bytes(stream))
                resp = Message(type=Message.MessageType.FIND_NODE, key=req.key)
                for pid, addrs in fakes:
                    resp.closerPeers.add(id=pid.to_bytes(), addrs=addrs, connection=Message.ConnectionType.CAN_CONNECT)
                await stream.write(encode_varint_prefixed(resp.SerializeToString()))
                answered.append(str(stream.muxed_conn.peer_id))
        except Exception:  # the victim closed its query stream: the normal end
            return

    return handle


async def kad_request(host: Any, peer: ID, msg: Any, timeout_s: float = 10.0) -> Any:
    """One request on a fresh kad stream; the answer, or None when the peer reset or closed the
    stream without one."""
    with trio.fail_after(timeout_s):
        try:
            stream = await host.new_stream(peer, [KAD])
        except REFUSED:  # reset while multistream-select was still echoing: refused
            return None
        try:
            try:
                await stream.write(encode_varint_prefixed(msg.SerializeToString()))
                data = await read_varint_prefixed_bytes(stream)
            except Exception:  # reset (before or after our request) or EOF: no answer
                return None
            resp = Message()
            resp.ParseFromString(data)
            return resp
        finally:
            try:
                await stream.close()
            except Exception:
                pass


async def find_node(host: Any, peer: ID, key: bytes) -> list[ID] | None:
    resp = await kad_request(host, peer, Message(type=Message.MessageType.FIND_NODE, key=key))
    return None if resp is None else [ID(p.id) for p in resp.closerPeers]


def put_value_msg(key: bytes, value: bytes) -> Any:
    return Message(type=Message.MessageType.PUT_VALUE, key=key, record=Record(key=key, value=value))


def add_provider_msg(host: Any, key: bytes) -> Any:
    msg = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
    msg.providerPeers.add(id=host.get_id().to_bytes(), addrs=[a.to_bytes() for a in host.get_addrs()])
    return msg


async def hold_kad_streams(host: Any, peer: ID, n: int, drip: bool = False) -> list[Any]:
    """``n`` kad streams to ``peer`` (negotiated), on which nothing (or, with ``drip``, the first byte
    of a length prefix that announces more) is sent. Those the peer refused while they were being
    opened are left out."""
    streams = []
    for _ in range(n):
        try:
            s = await host.new_stream(peer, [KAD])
            if drip:
                await s.write(b"\x85")  # a varint that continues: the victim waits for the next byte
        except REFUSED:  # refused while opening, or reset as soon as it was open
            continue
        streams.append(s)
    return streams


async def stream_is_dead(stream: Any, timeout_s: float) -> bool:
    """True when a read on ``stream`` ends (reset or EOF) within ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        try:
            data = await stream.read(1)
            return not data
        except Exception:
            return True
    return False


async def streams_dead(streams: list[Any], timeout_s: float) -> list[bool]:
    """``stream_is_dead`` for each of ``streams``, all waited on at once."""
    dead = [False] * len(streams)

    async def one(i: int) -> None:
        dead[i] = await stream_is_dead(streams[i], timeout_s)

    async with trio.open_nursery() as nursery:
        for i in range(len(streams)):
            nursery.start_soon(one, i)
    return dead


@asynccontextmanager
async def running(*hosts: Any) -> AsyncIterator[None]:
    if not hosts:
        yield
        return
    async with hosts[0].run(listen_addrs=[LOOPBACK]):
        async with running(*hosts[1:]):
            yield


def yamux_conn(host: Any, peer: ID) -> Any:
    return host.get_network().get_connections(peer)[0]


async def open_raw_streams(attacker: Any, victim: Any, n: int) -> tuple[int, Any]:
    """``n`` yamux streams from ``attacker`` to ``victim`` (hosts, connected) that never start
    multistream-select, opened as fast as the muxer takes them. Returns the most stream objects the
    victim's muxer held for that connection at once (sampled), and that connection."""
    vconn = yamux_conn(victim, attacker.get_id())
    aconn = yamux_conn(attacker, victim.get_id())
    aconn.muxed_conn.stream_backlog_semaphore = trio.Semaphore(10 ** 6)  # a hostile muxer has no backlog
    peak = 0
    for i in range(n):
        await aconn.muxed_conn.open_stream()
        if i % 50 == 0:
            await trio.sleep(0)
            peak = max(peak, len(vconn.muxed_conn.streams))
    return peak, vconn
