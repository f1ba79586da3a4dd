"""/gaia/telemetry/1.0.0 against a real in-process node on 127.0.0.1 (protocols/gaia-telemetry-v1.md, "Pull")."""

from __future__ import annotations

import dataclasses

import multiaddr
import numpy as np
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from gaia_p2p.net import libp2p_fixes
from gaia_p2p.node import pull
from gaia_p2p.node.control import encode_uvarint, read_frame
from gaia_p2p.node.runtime import UNHEARD_PULL_EVERY_S, Node, run

from swarm_helpers import node_config, wait_until


def _client():
    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(), sec_opt=libp2p_fixes.noise_only_security(kp))


async def test_a_pull_returns_the_heartbeat_now_and_bad_or_fast_askers_are_refused(tmp_path):
    # no gossiped heartbeat within the test: what the client learns comes over the stream
    cfg = dataclasses.replace(node_config(tmp_path, 0), telemetry_interval_s=3600.0)
    client = _client()
    with trio.fail_after(60):
        async with client.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            async with trio.open_nursery() as nursery:
                a: Node = await nursery.start(run, cfg)
                await wait_until(lambda: a.island.generation >= 5, "node A to run 5 generations", 20, on=(a,))
                await client.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.addrs()[0])))
                t, outcome = await pull.pull(client, a.peer_id, a.exp_id)
                assert outcome == "pulled"
                assert 5 <= t.generation <= a.island.generation
                assert t.algorithm == "cmaes" and t.best_fitness is not None

                assert await pull.pull(client, a.peer_id, "f" * 32) == (None, "refused_wrong_experiment")

                # hostile bytes: refused with a reason, counted, the node goes on
                stream = await client.new_stream(ID.from_base58(a.peer_id), [TProtocol(pull.TELEMETRY_PROTOCOL)])
                await stream.write(encode_uvarint(3) + b"\xc1\xc1\xc1")
                assert pull.decode_response(await read_frame(stream, 4096), experiment_id=a.exp_id) in (
                    "bad_request", "rate_limited")

                # a burst of 3, then 0.5/s per asker
                outcomes = [(await pull.pull(client, a.peer_id, a.exp_id))[1] for _ in range(8)]
                assert "refused_rate_limited" in outcomes, outcomes
                st = a.status()["telemetry_pull"]
                assert st["served"] >= 1 and st["refused_wrong_experiment"] == 1 and st["refused_rate_limited"] >= 1
                gen = a.island.generation
                await wait_until(lambda: a.island.generation > gen + 3, "A to keep running", 20, on=(a,))
                nursery.cancel_scope.cancel()


async def test_the_pull_loop_fills_a_view_from_every_connected_island_without_gossip(tmp_path):
    """What `gaia-node watch` runs: the stalest connected island first, at a bounded pace."""
    from collections import Counter

    from gaia_p2p.node.netview import NetView

    client = _client()
    view, stats = NetView(), Counter()
    with trio.fail_after(60):
        async with client.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            async with trio.open_nursery() as nursery:
                nodes: list[Node] = []
                for i in range(2):
                    cfg = dataclasses.replace(node_config(tmp_path, i), telemetry_interval_s=3600.0)
                    nodes.append(await nursery.start(run, cfg))
                for n in nodes:
                    await client.connect(info_from_p2p_addr(multiaddr.Multiaddr(n.addrs()[0])))
                peers = lambda: sorted(str(p) for p in client.get_connected_peers())  # noqa: E731
                nursery.start_soon(lambda: pull.pull_loop(
                    client, nodes[0].exp_id, peers=peers,
                    last_seen=lambda: {p: r["time"] for p, r in view.islands.items()},
                    on_pulled=view.add, rate=10.0, max_age=1.0, stats=stats, rng=np.random.default_rng(3)))
                await wait_until(lambda: set(view.islands) == {n.peer_id for n in nodes}, "both islands pulled", 20)
                # and again once they are max_age old: the view keeps up
                await wait_until(lambda: stats["pulled"] >= 4, "a second round of pulls", 20)
                assert set(stats) == {"pulled"}, stats
                assert all(n.heartbeats.stats["served"] >= 1 for n in nodes)
                nursery.cancel_scope.cancel()


async def test_a_node_pulls_the_heartbeat_of_a_peer_it_never_heard_from_once(tmp_path):
    """Gossiped heartbeats 3600 s apart: the two nodes still see each other in their network view
    within seconds, by one pull each (node/runtime.py, _pull_unheard), and do not pull again."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await nursery.start(run, dataclasses.replace(node_config(tmp_path, 0), telemetry_interval_s=3600.0))
            b = await nursery.start(run, dataclasses.replace(node_config(tmp_path, 1, bootstrap=(a.addrs()[0],)),
                                                             telemetry_interval_s=3600.0))
            await wait_until(lambda: b.peer_id in a.netview.islands and a.peer_id in b.netview.islands,
                             "each node's view holding the other", 20)
            assert all(n.status()["network"]["islands"] for n in (a, b))
            assert a.heartbeats.stats["pull_pulled"] == b.heartbeats.stats["pull_pulled"] == 1
            assert a.heartbeats.stats["served"] == b.heartbeats.stats["served"] == 1
            await trio.sleep(2 * UNHEARD_PULL_EVERY_S + 0.5)  # two more pull periods: no one new, no pull
            assert a.heartbeats.stats["pull_pulled"] == b.heartbeats.stats["pull_pulled"] == 1
            nursery.cancel_scope.cancel()
