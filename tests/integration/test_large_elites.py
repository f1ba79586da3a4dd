"""Elites too big to gossip (gaia-migration-v1, "Large elites"): announced, then fetched by the peers
they beat. Three real nodes on 127.0.0.1 with 100,000-parameter elites (400 KB, above the 256 KiB
any gossip copy may weigh, so impossible before announcements): the parameters cross by fetch only."""

from __future__ import annotations

import trio

from gaia_p2p.cli import render_status
from gaia_p2p.core import codec
from gaia_p2p.node.runtime import Node, run

from swarm_helpers import node_config, wait_until

DIM = 100_000


async def test_elites_of_100k_parameters_are_announced_and_fetched_never_gossiped(tmp_path):
    assert codec.max_elite_bytes(DIM) > codec.MAX_ELITE_BYTES
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            cfg = dict(dim=DIM, optimizer="openai-es", popsize=8, lr=0.05)
            nodes: list[Node] = [await nursery.start(run, node_config(tmp_path, 0, **cfg))]
            boot = nodes[0].addrs()[0]
            for i in (1, 2):
                nodes.append(await nursery.start(run, node_config(tmp_path, i, bootstrap=(boot,), **cfg)))

            def fetched_and_accepted() -> bool:
                return any(n.elites.stats["fetched"] >= 1 and n.island.counters.accepted >= 1 for n in nodes)

            await wait_until(fetched_and_accepted, "a node fetching an announced elite and accepting it", 60,
                             on=nodes)
            stats = [n.status()["elite_fetch"] for n in nodes]
            assert sum(s.get("announced", 0) for s in stats) >= 1, stats
            assert sum(s.get("announcement_queued", 0) for s in stats) >= 1, stats
            receiver = next(n for n in nodes if n.elites.stats["fetched"] >= 1 and n.island.counters.accepted >= 1)
            assert receiver.island.best_source in {n.peer_id for n in nodes} - {receiver.peer_id}
            line = next(x for x in render_status(receiver.status()).splitlines() if x.startswith("elite fetch"))
            assert "fetched " in line and "announcements received: " in line and "queued " in line, line
            # nothing was rejected: no gossip copy of 400 KB was ever tried (it would not even decode)
            assert not any(n.status()["migrants"]["rejected"].get("oversize") for n in nodes)
            # no message any of the three gossiped (they share the process's counters) could hold an
            # elite's parameters (4 bytes each): they went by fetch
            t = nodes[0].status()["traffic"]
            assert t["pubsub_publish_bytes_out"] > 0
            assert 0 < t["pubsub_publish_largest_out"] < 4 * DIM, t["pubsub_publish_largest_out"]
            assert t["by_protocol"].get("/gaia/elite/1.0.0", 0) > 4 * DIM
            nursery.cancel_scope.cancel()
