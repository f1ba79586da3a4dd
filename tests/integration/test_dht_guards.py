"""libp2p_fixes N, O, P, P1 against bare py-libp2p 0.8.1 hosts: each test runs once on kad-dht / the
swarm as shipped (``fixed=False``: the bug shows) and once with the fix applied (``fixed=True``)."""

from __future__ import annotations

import os

import pytest
import trio
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.tools.anyio_service import background_trio_service

from gaia_p2p.node import libp2p_fixes

from kad_attacker import (DialCounter, addr_of, add_provider_msg, bare_host, connect, fake_peers, find_node,
                          hold_kad_streams, kad_request, poisoning_handler, put_value_msg, running,
                          streams_dead, yamux_conn)
from swarm_helpers import wait_until

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
            attacker.set_stream_handler(libp2p_fixes_kad(), poisoning_handler(fakes, answered))
            async with running(victim, attacker, asker), background_trio_service(dht):
                await connect(victim, addr_of(attacker))
                await wait_until(lambda: str(attacker.get_id()) in {str(p) for p in victim.get_connected_peers()}
                                 and libp2p_fixes_kad() in (victim.get_peerstore().get_protocols(attacker.get_id()) or []),
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


def libp2p_fixes_kad():
    from libp2p.kad_dht.common import PROTOCOL_ID

    return PROTOCOL_ID


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
            vid = await connect(attacker, addr_of(victim))
            await trio.sleep(0.5)
            vconn = yamux_conn(victim, attacker.get_id())
            aconn = yamux_conn(attacker, vid)
            aconn.muxed_conn.stream_backlog_semaphore = trio.Semaphore(10 ** 6)  # a hostile muxer has no backlog
            base = len(vconn.muxed_conn.streams)
            peak = 0
            held = []
            for i in range(RAW_OPENS):
                held.append(await aconn.muxed_conn.open_stream())
                if i % 50 == 0:
                    await trio.sleep(0)
                    peak = max(peak, len(vconn.muxed_conn.streams))
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
