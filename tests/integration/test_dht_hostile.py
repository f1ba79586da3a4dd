"""A gaia node against hostile DHT and muxer peers (issue 12, defects 3, 7, 8): real nodes and bare
py-libp2p attackers in one trio.run, 127.0.0.1 only."""

from __future__ import annotations

import os
from dataclasses import replace
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from libp2p.kad_dht.common import PROTOCOL_ID as KAD

from gaia_p2p.net import candidates, libp2p_fixes
from gaia_p2p.node.runtime import Node, run

from kad_attacker import (DialCounter, addr_of, bare_host, connect, fake_peers, find_node, hold_kad_streams,
                          open_raw_streams, poisoning_handler, running, streams_dead, yamux_conn)
from swarm_helpers import node_config, wait_until


@asynccontextmanager
async def victim_and_two_peers(tmp_path: Path) -> AsyncIterator[tuple[Node, Any, Any]]:
    """A gaia node, and two bare hosts connected to it: (victim, attacker, honest)."""
    attacker, honest = bare_host(), bare_host()
    async with trio.open_nursery() as nursery:
        victim: Node = await nursery.start(run, node_config(tmp_path, 0))
        async with running(attacker, honest):
            await connect(attacker, victim.addrs()[0])
            await connect(honest, victim.addrs()[0])
            yield victim, attacker, honest
            gen = victim.island.generation
            await wait_until(lambda: victim.island.generation > gen, "the island to keep evolving", 10, on=(victim,))
        nursery.cancel_scope.cancel()


async def test_one_peer_does_not_poison_discovery(tmp_path):
    """Defect 3: the victim bootstraps through a peer that answers every FIND_NODE with 200 made-up
    peers. None of them enters its routing table or its answers to others; the victim dials at most
    PER_SOURCE of them, MAX_ATTEMPTS times at most; an honest node joining through the victim
    finds it and is found."""
    attacker, asker = bare_host(), bare_host()
    counter = DialCounter()
    answered: list[str] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(counter.serve, 10)
            fakes = fake_peers(200, counter.ports)
            fake_ids = {str(p) for p, _ in fakes}
            attacker.set_stream_handler(KAD, poisoning_handler(fakes, answered))
            async with running(attacker, asker):
                # look up again every couple of seconds: the test waits for a second lookup through
                # the attacker, and the default backs off to 300 s once the table stops growing
                cfg = node_config(tmp_path, 0, bootstrap=(addr_of(attacker),))
                cfg = replace(cfg, network=replace(cfg.network, refresh_max_s=2.0))
                victim: Node = await nursery.start(run, cfg)
                honest: Node = await nursery.start(run, node_config(tmp_path, 1, bootstrap=(victim.addrs()[0],)))
                vid = victim.p2p.host.get_id()

                def table(n: Node) -> set[str]:
                    return {str(p) for p in n.p2p.routing_table_peers()}

                await wait_until(lambda: honest.peer_id in table(victim) and victim.peer_id in table(honest),
                                 "the honest node and the victim in each other's tables", 30)
                try:
                    await wait_until(lambda: counter.dials >= 20 and answered.count(victim.peer_id) >= 2,
                                     "the victim to dial the fakes it was told of", 60)
                except AssertionError as e:  # say how far it got: a slow machine or a lost lookup
                    raise AssertionError(f"{e}: {counter.dials} TCP dials to fake ports, "
                                         f"{answered.count(victim.peer_id)} answers to the victim, "
                                         f"{victim.p2p.dht_stats()}") from None
                assert not table(victim) & fake_ids
                assert table(victim) <= {str(attacker.get_id()), honest.peer_id}
                assert not table(honest) & fake_ids
                await connect(asker, victim.addrs()[0])
                served = await find_node(asker, vid, os.urandom(32))
                assert served is not None and not {str(p) for p in served} & fake_ids
                # one source's candidates are capped, and each is dialled a bounded number of times
                stats = victim.p2p.dht_stats()
                assert stats["candidates"] <= candidates.PER_SOURCE + 2
                assert stats["candidate_stats"]["refused_per_source"] > 0
                assert stats["table"]["refused_not_connected"] > 0
                print(f"victim table {sorted(table(victim))}; {len(answered)} answers from the attacker; "
                      f"TCP dials to fake ports {counter.dials}; dht stats {stats}")
            nursery.cancel_scope.cancel()


async def test_idle_kad_streams_leave_the_dht_server_on(tmp_path):
    """Defect 7: 12 kad streams held open by one peer; an honest FIND_NODE is still answered, and the
    held streams are reset after KAD_IDLE_S."""
    with trio.fail_after(60):
        async with victim_and_two_peers(tmp_path) as (victim, attacker, honest):
            vid = victim.p2p.host.get_id()
            held = await hold_kad_streams(attacker, vid, 12, drip=True)
            await trio.sleep(0.5)  # the victim's handlers start on what it accepted (nothing to await here)
            assert await find_node(honest, vid, os.urandom(32)) is not None
            dead = await streams_dead(held, 5 + 3)  # KAD_IDLE_S + 3
            assert all(dead), dead
            kad = victim.p2p.dht_stats()["kad_streams"]
            assert kad["refused_per_peer"] + len(held) == 12 and kad["idle_reset"] == len(held)
            assert await find_node(attacker, vid, os.urandom(32)) is not None  # a rate, not a ban


async def test_raw_yamux_opens_are_capped_and_cleaned(tmp_path):
    """Defect 8: 2000 yamux streams opened by one peer that never negotiate a protocol. The victim's
    live stream objects for that peer stay under the cap and are back at the baseline soon after;
    its other peers keep being served (an honest FIND_NODE)."""
    with trio.fail_after(60):
        async with victim_and_two_peers(tmp_path) as (victim, attacker, honest):
            await trio.sleep(0.5)
            base = len(yamux_conn(victim.p2p.host, attacker.get_id()).muxed_conn.streams)
            peak, vconn = await open_raw_streams(attacker, victim.p2p.host, 2000)
            print(f"peak {peak} live streams from one peer, baseline {base}")
            # the per-peer cap (64), plus the muxer's 10-stream accept queue and streams not yet checked
            assert peak <= 64 + 40
            t0 = trio.current_time()
            # the last streams admitted wait out the 5 s negotiation deadline (NEGOTIATE_S)
            await wait_until(lambda: len(vconn.muxed_conn.streams) <= base, "the victim's streams back to baseline",
                             20)
            inbound = victim.p2p.dht_stats()["inbound_streams"]
            print(f"back to baseline {trio.current_time() - t0:.1f} s after the last open; {inbound}")
            assert inbound["refused_per_peer"] > 1000
            assert await find_node(honest, victim.p2p.host.get_id(), os.urandom(32)) is not None
