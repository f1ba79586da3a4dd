"""/gaia/elite/1.0.0 between real in-process nodes on 127.0.0.1 (protocols/gaia-elite-v1.md)."""

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

from gaia_p2p.core import codec
from gaia_p2p.core.experiment import ProblemConfig, experiment_id
from gaia_p2p.core.types import Elite
from gaia_p2p.net import libp2p_fixes
from gaia_p2p.node import fetch
from gaia_p2p.node.control import encode_uvarint, read_frame
from gaia_p2p.node.runtime import Node, run

from swarm_helpers import node_config, wait_until

NEVER = 10**9  # a migration interval no test reaches: the node never publishes on gossip


def _quiet(cfg, **migration):
    return dataclasses.replace(cfg, migration=dataclasses.replace(cfg.migration, interval=NEVER, **migration))


async def test_a_joining_node_fetches_the_best_of_a_node_that_never_publishes(tmp_path):
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a: Node = await nursery.start(run, _quiet(node_config(tmp_path, 0, problem="rastrigin")))
            await wait_until(lambda: a.island.generation >= 40, "node A to run 40 generations", 30, on=(a,))
            boot = a.addrs()[0]
            # B barely moves (tiny sigma), so A's best is far better than anything B finds alone
            b: Node = await nursery.start(run, _quiet(node_config(tmp_path, 1, bootstrap=(boot,), problem="rastrigin",
                                                                  sigma=1e-4)))
            await wait_until(lambda: b.elites.stats["fetched"] >= 1 and b.island.counters.accepted >= 1,
                             "B to fetch A's best and accept it", 30)
            assert a.island.counters.sent == 0  # nothing went over gossip: it came over the stream
            assert a.elites.stats["served"] >= 1
            assert b.island.counters.received == b.elites.stats["fetched"]  # every migrant B saw was fetched
            st = b.status()
            assert st["elite_fetch"]["fetched"] >= 1
            # A asks B too (B joined A's topic), but B has nothing better than A: a few bytes, no elite
            await wait_until(lambda: a.elites.stats["answered_not_better"] + a.elites.stats["fetched"] >= 1,
                             "A's own join fetch to get an answer", 30)
            nursery.cancel_scope.cancel()


async def test_ring_nodes_pull_from_their_predecessor(tmp_path):
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a: Node = await nursery.start(run, _quiet(node_config(tmp_path, 0), topology="ring"))
            boot = a.addrs()[0]
            b: Node = await nursery.start(run, _quiet(node_config(tmp_path, 1, bootstrap=(boot,)), topology="ring"))
            # with two nodes each is the other's predecessor: both pull, every PULL_MIN_S at most
            await wait_until(lambda: sum(n.elites.stats["fetched"] + n.elites.stats["answered_not_better"]
                                         for n in (a, b)) >= 2, "ring pulls answered", 40)
            assert a.island.counters.sent == b.island.counters.sent == 0
            assert a.island.counters.rejected.get("topology", 0) == b.island.counters.rejected.get("topology", 0) == 0
            nursery.cancel_scope.cancel()


async def test_a_hostile_responder_is_rejected_with_a_reason_and_the_node_goes_on(tmp_path):
    """A peer answering the elite protocol with garbage, then with an elite of the wrong dimension:
    each answer is counted under its reason and nothing reaches the island."""
    small = Elite(experiment_id=experiment_id(ProblemConfig(name="sphere", dim=10)), generation=1, fitness=-1.0,
                  seeds=(1,), params=np.zeros(3, dtype=np.float32), algorithm="cmaes")
    answers = [b"\xc1garbage", fetch.encode_response(elite=codec.encode_elite(small))]
    kp = create_new_key_pair()
    evil = new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(),
                    sec_opt=libp2p_fixes.noise_only_security(kp))

    async def handler(stream):
        await read_frame(stream, fetch.MAX_REQUEST_BYTES)
        data = answers.pop(0)
        await stream.write(encode_uvarint(len(data)) + data)
        await stream.close()

    evil.set_stream_handler(TProtocol(fetch.ELITE_PROTOCOL), handler)
    with trio.fail_after(60):
        async with evil.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            async with trio.open_nursery() as nursery:
                b: Node = await nursery.start(run, _quiet(node_config(tmp_path, 1)))
                evil_id = str(ID.from_pubkey(kp.public_key))
                addr = f"{evil.get_addrs()[0]}"
                addr = addr if "/p2p/" in addr else f"{addr}/p2p/{evil_id}"
                await b.p2p.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
                assert await b.elites.fetch(evil_id, None) == (None, "failed_malformed")
                assert await b.elites.fetch(evil_id, None) == (None, "failed_wrong_dimension")
                assert b.island.experiment_id == small.experiment_id  # so dim is what fails
                assert (b.elites.stats["failed_malformed"], b.elites.stats["failed_wrong_dimension"]) == (1, 1)
                assert b.island.counters.received == 0
                gen = b.island.generation
                await wait_until(lambda: b.island.generation > gen + 5, "B to keep running", 20, on=(b,))
                nursery.cancel_scope.cancel()
