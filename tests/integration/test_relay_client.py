"""A relay client keeps its reservations while relays come and go (net/relay.py run_client), with
real hosts from ``open_p2p`` on 127.0.0.1: B (relay_client = on, one reservation wanted) connects to
two relays, reserves on one, advertises its circuit address; that relay stops; B reserves on the
other and advertises the new address."""

from __future__ import annotations

import dataclasses
import pytest
import trio

from gaia_p2p.config import NetworkConfig
from gaia_p2p.net.host import connect_to, open_p2p

pytestmark = pytest.mark.trio


def _key():
    from libp2p.crypto.ed25519 import create_new_key_pair

    return create_new_key_pair()


async def _until(pred, what: str, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s):
        while not pred():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def _serve(cfg: NetworkConfig, stop: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """One node in its own task (so it can stop while the others run), until ``stop``."""
    async with open_p2p(_key(), cfg, on_bad_stream=lambda p, e: None) as p2p:
        task_status.started(p2p)
        await stop.wait()


@pytest.mark.timeout(60)
async def test_reservation_moves_to_another_relay_when_its_relay_goes():
    base = NetworkConfig(listen=("/ip4/127.0.0.1/tcp/0",), keepalive_s=0)
    client_cfg = dataclasses.replace(base, relay_client="on", relay_reservations=1)
    stops = [trio.Event() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        relays = [await nursery.start(_serve, base, stops[i]) for i in range(2)]
        b = await nursery.start(_serve, client_cfg, stops[2])
        assert b.relay.client_on and not b.relay.service
        assert all(r.relay.service and not r.relay.client_on for r in relays)
        for r in relays:
            await connect_to(b, r.addrs()[0])
        await _until(lambda: len(b.relay.reservations) == 1, "a reservation", 20)
        first = next(iter(b.relay.reservations))
        assert len(b.relay.reservations) == 1  # relay_reservations = 1: not one per relay
        assert any(f"/p2p/{first}/p2p-circuit/p2p/{b.peer_id}" in a for a in b.addrs())
        gone = next(i for i, r in enumerate(relays) if r.peer_id == first)
        other = relays[1 - gone]
        stops[gone].set()
        await _until(lambda: other.peer_id in b.relay.reservations, "a reservation on the other relay", 20)
        assert first not in b.relay.reservations
        assert any(f"/p2p/{other.peer_id}/p2p-circuit/p2p/{b.peer_id}" in a for a in b.addrs())
        assert not any(f"/p2p/{first}/p2p-circuit" in a for a in b.addrs())
        snap = b.relay.snapshot()
        assert snap["stats"]["reservations_lost"] == 1 and snap["stats"]["reservations_made"] == 2
        assert other.relay.snapshot()["served_reservations"] == 1
        for s in stops:
            s.set()


@pytest.mark.timeout(30)
async def test_auto_follows_reachability():
    """relay_client = relay_service = auto: private -> reserves and stops serving the hop protocol;
    public again -> drops its reservation and serves again (what AutoNAT's on_change drives)."""
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID

    base = NetworkConfig(listen=("/ip4/127.0.0.1/tcp/0",), keepalive_s=0)
    stops = [trio.Event() for _ in range(2)]
    async with trio.open_nursery() as nursery:
        r = await nursery.start(_serve, base, stops[0])
        b = await nursery.start(_serve, base, stops[1])
        hop = str(PROTOCOL_ID)
        assert b.relay.service and not b.relay.client_on and hop in b.host.get_mux().handlers
        await connect_to(b, r.addrs()[0])
        b.relay.set_private(True)
        assert not b.relay.service and hop not in b.host.get_mux().handlers
        await _until(lambda: r.peer_id in b.relay.reservations, "a reservation once private", 20)
        b.relay.set_private(False)
        assert b.relay.service and hop in b.host.get_mux().handlers
        await _until(lambda: not b.relay.reservations and not b.relay.circuit_addrs, "reservations dropped once public", 20)
        for s in stops:
            s.set()


async def test_a_circuit_dial_to_a_peer_the_peerstore_no_longer_holds_fails_quietly():
    # py-libp2p's peerstore evicts peers past 1,000: discovery may dial one it named a moment ago.
    # The PeerStoreError once ended a node (a soak, docs/RELIABILITY.md); now it is a failed dial.
    from libp2p.peer.id import ID

    cfg = dataclasses.replace(NetworkConfig(), listen=("/ip4/127.0.0.1/tcp/0",), relay_client="on")
    with trio.fail_after(20):
        async with open_p2p(_key(), cfg, on_bad_stream=lambda p, e: None) as p2p:
            assert p2p.relay is not None
            assert await p2p.relay.dial(ID.from_pubkey(_key().public_key)) is False
