"""A pool of three real nodes on 127.0.0.1 (core/pool.py): one search shared, replicas that agree,
a dead member's items done by the others, a lying member evicted."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import trio

from gaia_p2p.node.runtime import run
from tests.integration.swarm_helpers import node_config, wait_until

pytestmark = pytest.mark.trio
POPSIZE = 12


def pool_config(tmp_path, i, bootstrap=(), **pool):
    """LunarLander (real episodes, replayed bit-identically on one platform), short episodes: a
    generation takes long enough here for a pool to be worth it (on a test function the gossip
    round would be all there is)."""
    cfg = node_config(tmp_path, i, bootstrap=bootstrap, problem="lunarlander", sigma=0.5, popsize=POPSIZE)
    return replace(cfg, problem=replace(cfg.problem, max_steps=150), pool=replace(cfg.pool, name="t", **pool))


async def start_member(nursery, tmp_path, i, boot=(), **pool):
    return await nursery.start(run, pool_config(tmp_path, i, boot, **pool))


async def start_pool(nursery, tmp_path, n, **pool):
    first = await start_member(nursery, tmp_path, 0, **pool)
    boot = (first.addrs()[0],)
    return [first] + [await start_member(nursery, tmp_path, i, boot, **pool) for i in range(1, n)]


def one_log(nodes) -> bool:
    """Every member's log agrees up to the shortest one."""
    g = min(n.pool.generation for n in nodes)
    return len({n.pool.heads[g] for n in nodes}) == 1


async def all_members(nodes, k):
    await wait_until(lambda: all(len(n.pool.live_members()) == k for n in nodes), f"{k} members each", 45, on=nodes)


async def test_three_members_share_one_search_and_their_replicas_agree(tmp_path):
    with trio.fail_after(150):  # bounds for a loaded box; on an idle one this takes ~10 s
        async with trio.open_nursery() as nursery:
            nodes = await start_pool(nursery, tmp_path, 3)
            await all_members(nodes, 3)
            start = min(n.pool.generation for n in nodes)
            own0 = [n.pool.counters.own for n in nodes]
            sent0 = [n.island.counters.sent for n in nodes]
            keeper = nodes[0].pool.keeper()
            await wait_until(lambda: min(n.pool.generation for n in nodes) >= start + 30, "30 pooled generations",
                             90, on=nodes)
            assert one_log(nodes)
            # one member keeps the pool's resident and publishes it; the others publish nothing
            assert [n.pool.keeper() for n in nodes] == [keeper] * 3
            assert [n.island.keeps_resident for n in nodes] == [n.peer_id == keeper for n in nodes]
            emitted = {n.peer_id: n.island.counters.sent - s for n, s in zip(nodes, sent0)}
            assert emitted[keeper] >= 2 and sum(emitted.values()) == emitted[keeper], emitted
            gens = max(n.pool.generation for n in nodes) - start
            own = [n.pool.counters.own - o for n, o in zip(nodes, own0)]
            # each member did a part of the items, and together not much more than the items there were
            assert all(o > 0 for o in own), own
            assert sum(own) <= 1.5 * POPSIZE * gens, (own, gens)
            # one search: each live replica is exactly the genesis told the shared log (no await in
            # between, so the island cannot move while it is compared)
            from gaia_p2p.core.pool import ask_rng

            for n in nodes:
                opt, g = n.member.genesis(), n.island.generation
                for k, r in enumerate(n.pool.log[:g]):
                    opt.tell(opt.ask(ask_rng(n.pool.pid, k)), r.astype(np.float64))
                assert opt.mean.tobytes() == n.island.opt.mean.tobytes(), n.peer_id
            # gaia-node status shows the pool, its members and their record
            import json

            from gaia_p2p.cli import render_status

            doc = json.loads(json.dumps(nodes[0].status()))  # what the control socket sends
            text = render_status(doc)
            assert f"pool            {nodes[0].pool.pid}: 3 members" in text, text
            assert text.count("  member ..") == 2
            assert ("the resident kept by us" if nodes[0].peer_id == keeper else f"the resident kept by ..{keeper[-8:]}") in text
            other = next(n for n in nodes if n.peer_id != keeper)  # its best, if any, is not the pool's
            assert f"(the pool's resident is kept by ..{keeper[-8:]}" in render_status(json.loads(json.dumps(other.status())))
            # a generation the log passed while the runner held its Evaluate (a replay in between):
            # abandoned, not a crash of the node (pool_faults.py once saw "the island asks for
            # generation 226, the pool log is at 227" kill a member)
            from gaia_p2p.core.events import Evaluate

            m = nodes[1]
            passed = m.pool.generation - 1
            assert await m.member.evaluate_generation(Evaluate(passed, np.zeros((POPSIZE, 2)), np.zeros((0, 2)),
                                                               m.pool.seeds_for(passed), ())) is None
            at = m.pool.generation
            await wait_until(lambda: m.pool.generation > at + 2, "the member to go on", 30, on=nodes)
            # and the heartbeat (telemetry r5) tells watchers which pool, and the member's share
            from gaia_p2p.core.telemetry import decode_telemetry, encode_telemetry

            beat = decode_telemetry(encode_telemetry(nodes[0].heartbeat()))
            assert beat.pool is not None and beat.pool.pool_id == nodes[0].pool.pid and beat.pool.members == 3
            assert beat.pool.own == nodes[0].pool.counters.own > 0
            # r6: each says whether it keeps the pool's resident, so watchers rank the pool by the keeper
            assert [decode_telemetry(encode_telemetry(n.heartbeat())).pool.keeps for n in nodes] == \
                [n.peer_id == keeper for n in nodes]
            nursery.cancel_scope.cancel()


async def test_a_dead_members_items_are_done_by_the_others(tmp_path):
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            a, b = await start_pool(nursery, tmp_path, 2)
            doomed = trio.CancelScope()

            async def victim(task_status=trio.TASK_STATUS_IGNORED):
                with doomed:
                    await run(pool_config(tmp_path, 2, (a.addrs()[0],)), task_status=task_status)

            c = await nursery.start(victim)
            await all_members([a, b, c], 3)
            doomed.cancel()  # the member is gone mid-generation, without a word
            at_death = max(a.pool.generation, b.pool.generation)
            helped0 = a.pool.counters.helped + b.pool.counters.helped
            await wait_until(lambda: min(a.pool.generation, b.pool.generation) >= at_death + 20,
                             "20 generations after the death", 90, on=[a, b])
            assert a.pool.counters.helped + b.pool.counters.helped > helped0  # its items were taken over
            assert one_log([a, b])
            nursery.cancel_scope.cancel()


async def test_a_member_that_inflates_its_returns_is_evicted(tmp_path):
    # the first member checks every result of the others: a lie is caught at the first one that
    # enters its log; the second checks none and evicts the liar on the first one's accusation (or
    # on a duplicate of an item it evaluated too). The liar runs its own code: it trusts everyone (an
    # honest checker would find the honest members "wrong", evict them and fork off alone: that
    # case is fencing, tests/core/test_pool.py)
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            checker = await start_member(nursery, tmp_path, 0, check_share=1.0)
            honest = [checker, await start_member(nursery, tmp_path, 1, (checker.addrs()[0],), check_share=0.0)]
            liar = await start_member(nursery, tmp_path, 2, (honest[0].addrs()[0],), check_share=0.0)
            # it joins honestly and starts lying once it is a member (one that lies from its first
            # generation computes a past of its own, alone, and is fenced off: tests/core/test_pool.py)
            await all_members([*honest, liar], 3)
            real = liar.evaluator.evaluate

            async def inflated(X, seeds):
                return np.asarray(await real(X, seeds)) + 1.0

            liar.evaluator.evaluate = inflated
            liar.pool._compare = lambda *args: []
            try:
                await wait_until(lambda: all(liar.peer_id in n.pool.evicted for n in honest),
                                 "the liar evicted by both honest members", 90, on=honest)
            except AssertionError:  # what each member saw, for the one who reads the failure
                for n in [*honest, liar]:
                    st = n.pool.statistics()
                    print("DIAG", n.peer_id[-6:], {k: st[k] for k in ("generation", "members", "checks", "results_in",
                          "results_rejected", "replays", "evicted", "fenced", "records")},
                          dict(n.member.log_service.stats), "busy", n.pool.busy, "queued checks", len(n.pool.checks),
                          "round", None if n.pool.round is None else (n.pool.round.generation, n.pool.round.source))
                raise
            g = min(n.pool.generation for n in honest)
            await wait_until(lambda: min(n.pool.generation for n in honest) >= g + 10,
                             "10 generations after the eviction", 40, on=honest)
            assert all(liar.peer_id not in n.pool.live_members() for n in honest)
            assert all(liar.peer_id in n.status()["banned_peers"] or n.pool.evicted for n in honest)
            # the checker's accusation reached the other over the wire and was judged there
            assert sum(honest[1].pool.counters.accusations.values()) >= 1, honest[1].pool.counters.accusations
            import json

            from gaia_p2p.cli import render_status

            assert ", accusations " in render_status(json.loads(json.dumps(honest[1].status())))
            nursery.cancel_scope.cancel()


async def test_direct_transport_carries_every_result_and_cuts_off_a_broken_stream(tmp_path):
    # pool.transport = "direct": results over /gaia/pool/results/1.0.0, one stream per member pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr
    import multiaddr

    from gaia_p2p.node.control import encode_uvarint
    from gaia_p2p.node.pool import POOL_RESULTS_PROTOCOL
    from tests.integration.attacker import open_attacker

    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            nodes = await start_pool(nursery, tmp_path, 3, transport="direct")
            await all_members(nodes, 3)
            start = min(n.pool.generation for n in nodes)
            await wait_until(lambda: min(n.pool.generation for n in nodes) >= start + 10, "10 pooled generations",
                             90, on=nodes)
            assert one_log(nodes)
            for n in nodes:  # every result the pool took came over a direct stream, none over gossip
                assert n.member.direct.stats["received"] == n.pool.counters.results_in > 0, n.member.direct.stats
                assert n.status()["pool"]["transport"] == "direct"
            victim = nodes[0]
            async with open_attacker() as bad:
                await bad.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(victim.addrs()[0])))
                s1 = await bad.host.new_stream(victim.p2p.host.get_id(), [TProtocol(POOL_RESULTS_PROTOCOL)])
                await wait_until(lambda: bad.peer_id in victim.member.direct.inbound, "the stream taken", 10)
                try:  # reset as soon as it is negotiated: the open itself may fail here
                    await bad.host.new_stream(victim.p2p.host.get_id(), [TProtocol(POOL_RESULTS_PROTOCOL)])
                except Exception:
                    pass
                await wait_until(lambda: victim.member.direct.stats["refused_stream"] >= 1,
                                 "a second stream of one peer refused", 10)
                await s1.write(encode_uvarint(5) + b"\xc1\xc1\xc1\xc1\xc1")  # not msgpack
                await wait_until(lambda: bad.peer_id not in victim.member.direct.inbound, "the broken stream cut", 10)
                assert victim.member.topic.rejected["not_msgpack"] >= 1
                with trio.move_on_after(1):
                    try:
                        await s1.reset()
                    except Exception:
                        pass
            g = victim.pool.generation
            await wait_until(lambda: victim.pool.generation >= g + 3, "the pool going on", 40, on=nodes)
            nursery.cancel_scope.cancel()
