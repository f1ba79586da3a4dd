"""py-libp2p 0.8.1's swarm refuses to dial a peer for 60 s once every address of it failed
(``_NegativePeerCache``); discovery's bootstrap and candidate dials skip that cache
(``discovery.forget_failed_dials``), since they back off on their own."""

from __future__ import annotations

from types import SimpleNamespace

import multiaddr
import pytest
import trio

from gaia_p2p.net import libp2p_fixes
from gaia_p2p.net.discovery import forget_failed_dials

pytestmark = pytest.mark.trio


def _host(kp=None):
    from libp2p import create_yamux_muxer_option, new_host
    from libp2p.crypto.ed25519 import create_new_key_pair

    kp = kp or create_new_key_pair()
    return kp, new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(), sec_opt=libp2p_fixes.noise_only_security(kp),
                        enable_mDNS=False, enable_upnp=False)


@pytest.mark.timeout(30)
async def test_bug_negative_cache_upstream_locks_a_peer_out_after_one_failed_dial_and_forget_lets_it_in():
    import socket

    from libp2p.peer.peerinfo import info_from_p2p_addr

    with socket.socket() as s:  # a free port for B, known before B runs
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kp_b, _ = _host()
    _, a = _host()
    async with a.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        from libp2p.peer.id import ID

        addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{ID.from_pubkey(kp_b.public_key)}"
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        with pytest.raises(Exception):  # B is down
            with trio.fail_after(10):
                await a.connect(info)
        _, b = _host(kp_b)
        async with b.run([multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")]):
            with pytest.raises(Exception, match="recently failed"):  # B is up, but the swarm will not try
                with trio.fail_after(10):
                    await a.connect(info)
            forget_failed_dials(SimpleNamespace(host=a), addr)
            with trio.fail_after(10):
                await a.connect(info)
            assert b.get_id() in a.get_connected_peers()
