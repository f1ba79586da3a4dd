"""IPv6 next to IPv4: nodes over /ip6/::1, AutoNAT over it (which needs libp2p_fixes S, tested in
test_libp2p_fixes.py), and starting on a host without IPv6."""

from __future__ import annotations

from contextlib import AsyncExitStack

import multiaddr
import numpy as np
import pytest
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from gaia_p2p.core.reachability import Reachability
from gaia_p2p.net import libp2p_fixes
from gaia_p2p.net.addrs import ipv6_available, usable_listen_addrs
from gaia_p2p.net.reachability import AutoNAT
from gaia_p2p.node.runtime import run

from swarm_helpers import node_config, wait_until

V6 = multiaddr.Multiaddr("/ip6/::1/tcp/0")

pytestmark = pytest.mark.skipif(not ipv6_available(), reason="this machine has no IPv6 loopback")


def _host():
    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(),
                    sec_opt=libp2p_fixes.noise_only_security(kp))


async def test_autonat_over_ipv6_loopback():
    """Needs S: without a remote address the server cannot see the requester's IP, and refuses."""
    libp2p_fixes.install_class_patches()
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            hosts = [_host() for _ in range(3)]
            for h in hosts:
                await stack.enter_async_context(h.run(listen_addrs=[V6]))
            a, *servers = hosts
            for s in servers:
                AutoNAT(s, rng=np.random.default_rng(0)).install()
                await a.connect(PeerInfo(s.get_id(), s.get_addrs()))
            client = AutoNAT(a, rng=np.random.default_rng(0), confirmations=2)
            client.install()
            assert sorted(await client.check_once()) == ["dialled_back"] * 2
            assert client.status == Reachability.PUBLIC
            assert client.snapshot()["dialled_at"][0].startswith("/ip6/::1/tcp/")


async def test_two_nodes_connect_over_ipv6_loopback(tmp_path):
    def v6(cfg):
        import dataclasses

        return dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, listen=("/ip6/::1/tcp/0",)))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(run, v6(node_config(tmp_path, 0)))
            boot = first.addrs()[0]
            assert boot.startswith("/ip6/::1/tcp/")
            second = await nursery.start(run, v6(node_config(tmp_path, 1, bootstrap=(boot,))))
            await wait_until(lambda: first.peer_id in second.p2p.connected_peers()
                             and second.peer_id in first.p2p.connected_peers(), "connected over ::1", 30)
            assert all(a.startswith("/ip6/::1/") for a in second.status()["addrs"])
            nursery.cancel_scope.cancel()


def test_a_host_without_ipv6_starts_on_ipv4_and_says_so():
    from structlog.testing import capture_logs

    listen = ("/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001")
    with capture_logs() as logs:
        assert usable_listen_addrs(listen, has_ipv6=lambda host: False) == ("/ip4/0.0.0.0/tcp/4001",)
    assert [e["event"] for e in logs] == ["ipv6_unavailable"] and logs[0]["dropped"] == ["/ip6/::/tcp/4001"]
    assert usable_listen_addrs(listen, has_ipv6=lambda host: True) == listen
    only6 = ("/ip6/::1/tcp/0",)  # nothing else to fall back on: keep it, the bind error will say why
    assert usable_listen_addrs(only6, has_ipv6=lambda host: False) == only6
