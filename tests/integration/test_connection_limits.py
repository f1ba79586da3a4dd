"""Resource limits a stranger meets, on a real node over 127.0.0.1 (docs/RELIABILITY.md, "Limits")."""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr

from gaia_p2p.net import libp2p_fixes
from gaia_p2p.node.runtime import run

from swarm_helpers import node_config, wait_until

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def _client():
    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(), sec_opt=libp2p_fixes.noise_only_security(kp))


async def _try_connect(host, info) -> bool:
    try:
        with trio.fail_after(5):
            await host.connect(info)
        return True
    except Exception:
        return False


async def test_one_address_holds_at_most_max_inbound_per_ip_connections(tmp_path):
    """Many identities from one IP: the first ``max_inbound_per_ip`` get in, the rest are refused
    before any handshake; a slot comes back when one of them leaves."""
    cfg = node_config(tmp_path, 0)
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, max_inbound_per_ip=3, limits_exempt=()))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, cfg)
            info = info_from_p2p_addr(multiaddr.Multiaddr(node.addrs()[0]))
            async with AsyncExitStack() as stack:
                clients = [_client() for _ in range(5)]
                for c in clients:
                    await stack.enter_async_context(c.run(listen_addrs=[LOOPBACK]))
                ok = [await _try_connect(c, info) for c in clients[:4]]
                assert ok == [True, True, True, False], ok
                assert node.status()["connections"]["refused_per_ip"] >= 1
                await clients[0].disconnect(info.peer_id)
                await wait_until(lambda: node.status()["connections"]["open_inbound"] <= 2, "a client gone", 10)
                assert await _try_connect(clients[4], info)
            nursery.cancel_scope.cancel()


async def test_loopback_is_exempt_by_default(tmp_path):
    """The default exempts 127.0.0.0/8: a one-machine swarm shares one address."""
    cfg = node_config(tmp_path, 0)
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, max_inbound_per_ip=1))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, cfg)
            info = info_from_p2p_addr(multiaddr.Multiaddr(node.addrs()[0]))
            async with AsyncExitStack() as stack:
                clients = [_client() for _ in range(3)]
                for c in clients:
                    await stack.enter_async_context(c.run(listen_addrs=[LOOPBACK]))
                assert [await _try_connect(c, info) for c in clients] == [True] * 3
            nursery.cancel_scope.cancel()


async def test_one_peer_holds_at_most_three_connections(tmp_path):
    """Five dials from one identity leave the victim with three (``max_connections_per_peer``,
    host.py); py-libp2p alone kept all five (its trim spares connections younger than its grace period)."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0))
            info = info_from_p2p_addr(multiaddr.Multiaddr(node.addrs()[0]))
            client = _client()
            async with client.run(listen_addrs=[LOOPBACK]):
                for _ in range(5):
                    with trio.fail_after(5):
                        try:
                            await client.get_network().dial_addr(info.addrs[0], info.peer_id)
                        except Exception:  # the victim may close an extra one while we set it up
                            pass
                network = node.p2p.host.get_network()
                await wait_until(lambda: len(network.get_connections(client.get_id())) <= 3,
                                 "the victim to hold at most 3 connections of the client", 10)
                assert node.status()["connections"]["refused_per_peer"] == 2
            nursery.cancel_scope.cancel()
