"""Sybil identities joining the migrants topic do not stretch an honest node's publish gap (issue 12,
defect 4): the node's network-size estimate (gaia_p2p/core/netsize.py) counts a peer only once it has
been there a minute, so 10 real py-libp2p hosts that join and leave within that minute leave the
estimate, and so the gap between the node's publishes, where they were."""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack

import trio

from gaia_p2p.core.netsize import SETTLE_S
from gaia_p2p.node.runtime import run

from attacker import open_attacker
from swarm_helpers import node_config, wait_until

N_SYBILS = 10


async def test_sybils_joining_the_topic_do_not_stretch_the_publish_gap(tmp_path):
    cfg = node_config(tmp_path, 0, problem="rastrigin")
    cfg = dataclasses.replace(cfg, migration=dataclasses.replace(cfg.migration, network_rate=0.5))
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, cfg)
            node.size.started_at -= SETTLE_S  # as if it had been up a minute: past its start-up grace
            isl = node.island
            await wait_until(lambda: isl.generation >= 3, "the node to run", 10, on=(node,))
            size0, gap0 = node.network_size(), isl.publish_gap()
            assert (size0, gap0) == (1, 2.0)  # alone: 1 node / 0.5 elites/s
            async with AsyncExitStack() as stack:
                sybils = [await stack.enter_async_context(open_attacker()) for _ in range(N_SYBILS)]
                t_join = trio.current_time()
                for s in sybils:
                    await s.join(node.addrs()[0], node.topic.topic)
                ids = {s.peer_id for s in sybils}
                await wait_until(lambda: ids <= set(node.p2p.topic_peers(node.topic.topic)),
                                 "the victim to see every sybil on the topic", 20)
                await wait_until(lambda: ids <= isl.live_peers, "the island to hear of them", 10, on=(node,))
                gen = isl.generation
                await wait_until(lambda: isl.generation >= gen + 3, "a few generations with them", 10, on=(node,))
                during = (node.network_size(), isl.publish_gap(), node.status()["network_size"])
                assert trio.current_time() - t_join < SETTLE_S  # still inside their first minute
                for s in sybils:  # they leave the topic, then their hosts stop
                    await s.pubsub.unsubscribe(node.topic.topic)
                await wait_until(lambda: not ids & set(node.p2p.topic_peers(node.topic.topic)),
                                 "the sybils to leave the topic", 20)
            gen = isl.generation
            await wait_until(lambda: isl.generation >= gen + 3, "a few generations without them", 10, on=(node,))
            after = (node.network_size(), isl.publish_gap())
            print(f"network_size / publish gap: before {size0} / {gap0} s, with {N_SYBILS} sybils "
                  f"{during[0]} / {during[1]} s, after {after[0]} / {after[1]} s")
            assert during == (1, 2.0, 1)
            assert after == (1, 2.0)
            nursery.cancel_scope.cancel()
