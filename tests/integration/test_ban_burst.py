"""Issue 12, defect 2: a burst of bans must not crash the node.

Many liars, each a real py-libp2p host connected to the victim, send over a pubsub stream of its own 3
false claims each on sphere (max_lies 3) at the same moment, while the victim gossips with an
honest node: the victim bans all of them within a second or two. py-libp2p 0.8.1's
``_teardown_if_connected`` crashed the host on such a burst (fix R in libp2p_fixes.py).
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

from gaia_p2p.node.runtime import run

from attacker import elite_bytes, lie_params, open_attacker
from swarm_helpers import node_config, wait_until

LIARS = 20


async def test_a_burst_of_bans_leaves_the_node_running(tmp_path):
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            victim = await nursery.start(run, node_config(tmp_path, 0))
            await nursery.start(run, node_config(tmp_path, 1, bootstrap=(victim.addrs()[0],)))
            topic, exp, dim = victim.topic.topic, victim.exp_id, victim.island.opt.dim
            await wait_until(lambda: victim.island.best_params is not None, "the victim to hold a best", 20, on=(victim,))
            async with AsyncExitStack() as stack:
                liars = [await stack.enter_async_context(open_attacker()) for _ in range(LIARS)]
                for a in liars:
                    await a.join(victim.addrs()[0], topic)
                # sphere's optimum is 0: a claim of 0 beats any resident, so every one is checked
                lies = [elite_bytes(exp, lie_params(dim), 0.0, generation=g + 1) for g in range(3)]
                # each over a pubsub stream of its own, not through its mesh (which the victim,
                # at degree_high 5, prunes most of them from)
                streams = [await a.open_stream() for a in liars]
                async with trio.open_nursery() as burst:
                    for a, stream in zip(liars, streams):
                        burst.start_soon(a.send_frames, stream, [a.sign(data) for data in lies])
                ids = {a.peer_id for a in liars}
                await wait_until(lambda: ids <= victim.island.banned, f"all {LIARS} liars banned", 60, on=(victim,))
                gen = victim.island.generation
                await wait_until(lambda: victim.island.generation > gen + 5, "the victim to keep evolving", 20, on=(victim,))
                assert victim.status()["peer_id"] == victim.peer_id
            nursery.cancel_scope.cancel()
