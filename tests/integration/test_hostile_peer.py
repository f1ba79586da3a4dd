"""A hostile peer against one real node: a real py-libp2p host (its own GossipSub + Pubsub, StrictSign,
Noise only, see attacker.py) connects to the victim, subscribes to its migrants topic and sends signed
messages. Each attack is checked on the victim's own counters: ``node.topic.rejected`` (the gossipsub
validator, by reason code), ``node.island.counters`` / ``banned`` / ``lies``, and ``node.status()``.
Throughout: the victim never crashes (its nursery does not raise), keeps evolving, status() works.
The last test checks the victim's gossipsub peer scores (gaia_p2p/net/scoring.py).

The victim (workers 0, rastrigin dim 10) is deterministic: claims are checked by re-evaluation.
"""

from __future__ import annotations

from collections import Counter

import trio
from libp2p.peer.id import ID

from gaia_p2p.core import codec
from gaia_p2p.net.scoring import GRAYLIST_THRESHOLD, peer_scores
from gaia_p2p.node.runtime import Node, run

from attacker import LIE_CLAIM, SENTINEL_TOPIC, honest_elite, lie_elite, malformed_payloads, open_attacker
from swarm_helpers import node_config, wait_until

PROBLEM = "rastrigin"
#: Between the paced attacks: the victim's per-sender bucket refills 2 tokens/s, so a message every
#: 0.6 s never finds it empty and each message meets the check it was built for.
PACE_S = 0.6


async def _keeps_evolving(node: Node, what: str, gens: int = 5) -> None:
    """The victim is alive: its generation advances, status() answers, nothing was counted as our bug."""
    gen = node.island.generation
    await wait_until(lambda: node.island.generation >= gen + gens, f"the victim to keep evolving ({what})", 20, on=(node,))
    st = node.status()
    assert st["island"]["generation"] >= gen + gens
    assert st["pubsub_streams_rejected"] == 0, st["pubsub_streams_rejected"]
    assert "internal_error" not in st["migrants"]["rejected"], st["migrants"]["rejected"]


async def test_malformed_messages_are_rejected_by_reason(tmp_path):
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0, problem=PROBLEM))
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], node.topic.topic)
                gen0 = node.island.generation
                expected: Counter[str] = Counter()
                for name, data, reason in malformed_payloads(node.exp_id, node.island.opt.dim):
                    t = trio.current_time()
                    await atk.publish(data)
                    expected[reason] += 1
                    await wait_until(lambda r=reason: node.topic.rejected[r] >= expected[r],
                                     f"{name!r} rejected as {reason!r}", 10)
                    await trio.sleep_until(t + PACE_S)
                assert dict(node.topic.rejected) == dict(expected)  # nothing else: not rate_limited, not internal_error
                assert set(expected) == {codec.MALFORMED, codec.OVERSIZE, codec.BAD_VERSION, codec.BAD_FIELD,
                                         codec.WRONG_EXPERIMENT, codec.WRONG_DIMENSION, codec.NON_FINITE}
                assert node.island.counters.received == 0  # none reached the island
                assert node.island.generation > gen0
                await _keeps_evolving(node, "after malformed messages")
                rejected = node.status()["migrants"]["rejected"]
                assert all(rejected[r] == n for r, n in expected.items()), rejected
                print("rejected by reason:", dict(node.topic.rejected))
            nursery.cancel_scope.cancel()


async def test_flood_is_rate_limited_and_the_victim_keeps_evolving(tmp_path):
    n_flood = 100
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0, problem=PROBLEM))
            exp, dim = node.exp_id, node.island.opt.dim
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], node.topic.topic)
                await wait_until(lambda: node.island.best_params is not None, "the victim to hold a best", 10, on=(node,))
                # Written straight onto a stream of ours, one RPC frame each, back to back: through our
                # own Pubsub a burst would be thinned out by py-libp2p's 32-RPC outbound queue first.
                msgs = [atk.sign(honest_elite(exp, PROBLEM, dim, generation=i)) for i in range(n_flood)]
                stream = await atk.open_stream()
                gen0, t0 = node.island.generation, trio.current_time()
                await atk.send_frames(stream, msgs)
                isl = node.island

                def accounted() -> int:
                    return node.topic.rejected["rate_limited"] + isl.counters.received

                await wait_until(lambda: accounted() >= n_flood, "every flood message rate-limited or received", 20)
                flood_s, gen_flood = trio.current_time() - t0, node.island.generation
                limited, passed = node.topic.rejected["rate_limited"], isl.counters.received
                assert accounted() == n_flood
                # burst 10 plus 2/s for however long the victim took to read the flood
                assert 10 <= passed <= 10 + 2 * flood_s + 1, (passed, flood_s)
                assert limited >= n_flood - passed >= 70, limited
                assert set(node.topic.rejected) == {"rate_limited"}, node.topic.rejected
                # what passed was valid and true but poor: the island turned it down, never took it
                await wait_until(lambda: isl.counters.rejected.get("not_better", 0) + isl.counters.rejected.get(
                    "superseded", 0) >= passed, "the passed flood messages to be judged", 10, on=(node,))
                assert isl.counters.accepted == 0
                await _keeps_evolving(node, "after the flood")
                # the limit is a rate, not a ban: once the bucket refilled, our next message gets through
                await trio.sleep(1.0)  # 2 tokens at 2/s
                await atk.publish(honest_elite(exp, PROBLEM, dim, generation=n_flood))
                await wait_until(lambda: isl.counters.received == passed + 1, "a paced message after the flood", 10, on=(node,))
                print(f"flood: {n_flood} sent, {limited} rate_limited, {passed} received; victim read it in "
                      f"{flood_s:.2f} s, generation {gen0} -> {gen_flood} -> {node.island.generation}")
            nursery.cancel_scope.cancel()


async def test_liar_is_banned_blacklisted_and_never_accepted(tmp_path):
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0, problem=PROBLEM))
            isl, exp, dim = node.island, node.exp_id, node.island.opt.dim
            max_lies = isl.policy.max_lies
            assert max_lies == 3
            async with open_attacker() as atk:
                victim_id = await atk.join(node.addrs()[0], node.topic.topic)
                await wait_until(lambda: isl.best_params is not None, "the victim to hold a best", 10, on=(node,))
                assert isl.best_fitness < LIE_CLAIM  # so every lie looks better and gets re-evaluated
                for k in range(1, max_lies + 1):
                    t = trio.current_time()
                    await atk.publish(lie_elite(exp, dim, generation=k))
                    await wait_until(lambda k=k: isl.lies.get(atk.peer_id, 0) >= k, f"lie {k} caught", 10, on=(node,))
                    await trio.sleep_until(t + PACE_S)
                assert atk.peer_id in isl.banned
                # rastrigin is cheap to evaluate: the gossipsub validator re-evaluated each lie and
                # rejected it (so it was not forwarded, and we, its forwarder, paid P4); the island
                # counted the lies and banned us as if it had found them itself
                assert node.topic.rejected["claim_mismatch"] == max_lies
                assert isl.counters.accepted == 0 and isl.best_source != atk.peer_id
                assert node.p2p.pubsub.is_peer_blacklisted(ID.from_base58(atk.peer_id))
                assert atk.peer_id in node.status()["banned_peers"]
                assert node.status()["migrants"]["rejected"]["claim_mismatch"] == max_lies
                assert peer_scores(node.p2p.gossipsub)[atk.peer_id] < -25  # 3 x P4 (-10)
                received = isl.counters.received
                rejected_wire = sum(node.topic.rejected.values())
                assert received == 0 and rejected_wire == max_lies

                # The ban blacklists us in the victim's pubsub. That resets only the victim's stream to
                # us: our gossipsub still has the victim in its mesh and keeps routing to it. Two more
                # lies through our own pubsub, then a subscription queued behind them on the same stream.
                attacker_id = ID.from_base58(atk.peer_id)
                assert atk.victim_in_our_topic_view()
                for k in range(2):
                    await atk.publish(lie_elite(exp, dim, generation=10 + k))
                atk.queue_subscription(SENTINEL_TOPIC)
                await wait_until(lambda: attacker_id in node.p2p.pubsub.peer_topics.get(SENTINEL_TOPIC, ()),
                                 "the subscription behind the post-ban publishes", 10)
                # Two more written straight onto a fresh stream of ours, followed by a re-announced
                # subscription to the migrants topic (a banned peer trying to count as live again).
                stream = await atk.open_stream()
                await atk.send_frames(stream, [atk.sign(lie_elite(exp, dim, generation=20 + k)) for k in range(2)],
                                      subscribe=[node.topic.topic])
                await wait_until(lambda: atk.peer_id in node.p2p.topic_peers(node.topic.topic),
                                 "the re-announced subscription behind the raw frames", 10)
                await _keeps_evolving(node, "after the ban", gens=3)
                # All four were read, and the pubsub blacklist dropped them before validation:
                assert isl.counters.received == received  # nothing more reached the island
                assert isl.counters.rejected.get("banned", 0) == 0  # (so the island's own check never fired)
                assert sum(node.topic.rejected.values()) == rejected_wire
                assert isl.lies[atk.peer_id] == max_lies
                assert isl.counters.accepted == 0 and isl.best_source != atk.peer_id
                # pubsub lists the banned peer on the topic again, but the island does not count it as
                # live (a ring or random topology would otherwise waste its slot on a peer it drops)
                assert atk.peer_id not in isl.live_peers
                print(f"lies: {max_lies} caught -> banned {atk.peer_id[-8:]} (victim {victim_id[-8:]}); "
                      f"2 publishes + 2 raw frames after the ban dropped by the blacklist")
            nursery.cancel_scope.cancel()


async def test_replayed_message_is_delivered_once(tmp_path):
    """Same from + seqno = same gossipsub message id: the seen cache drops the replay before validation."""
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0, problem=PROBLEM))
            isl, exp, dim = node.island, node.exp_id, node.island.opt.dim
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], node.topic.topic)
                await wait_until(lambda: isl.best_params is not None, "the victim to hold a best", 10, on=(node,))
                original = atk.sign(honest_elite(exp, PROBLEM, dim, generation=1))
                await atk.publish_msg(original)  # the normal path
                await wait_until(lambda: isl.counters.received == 1, "the original message", 10, on=(node,))
                # Replayed twice, byte for byte (same seqno and signature), then a fresh message behind
                # them on the same stream: once the fresh one is in, the replays were read too.
                fresh = atk.sign(honest_elite(exp, PROBLEM, dim, generation=2))
                stream = await atk.open_stream()
                await atk.send_frames(stream, [original, original, fresh])
                await wait_until(lambda: isl.counters.received >= 2, "the fresh message behind the replays", 10, on=(node,))
                await _keeps_evolving(node, "after the replay", gens=3)
                assert isl.counters.received == 2  # original once + fresh; the replays never reached the island
                assert sum(node.topic.rejected.values()) == 0  # nor the validator (no rate_limited either)
            nursery.cancel_scope.cancel()


async def test_invalid_messages_graylist_the_sender_and_spare_honest_peers(tmp_path):
    """Each rejected message costs its forwarder 10 points (P4): the 10th puts the attacker below the
    graylist threshold (-95). From then on the victim drops its messages before validation, drops its
    control messages, prunes it from the mesh and refuses it back; an honest peer on the same machine
    (127.0.0.1, so no IP-colocation penalty) keeps a score of 0 both ways and keeps receiving."""
    from libp2p.pubsub.pb import rpc_pb2

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, node_config(tmp_path, 0, problem=PROBLEM))
            honest = await nursery.start(run, node_config(tmp_path, 1, bootstrap=(node.addrs()[0],), problem=PROBLEM))
            gs, topic, exp, dim = node.p2p.gossipsub, node.topic.topic, node.exp_id, node.island.opt.dim
            honest_id = ID.from_base58(honest.peer_id)
            await wait_until(lambda: honest_id in gs.mesh.get(topic, ()), "the honest peer in the victim's mesh", 20)
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], topic)
                attacker_id = ID.from_base58(atk.peer_id)
                await wait_until(lambda: attacker_id in gs.mesh[topic], "the attacker in the victim's mesh", 20)
                payloads = malformed_payloads(exp, dim)
                assert len(payloads) == 10
                scores = []
                for k, (name, data, _reason) in enumerate(payloads, 1):
                    t = trio.current_time()
                    await atk.publish(data)
                    await wait_until(lambda k=k: sum(node.topic.rejected.values()) >= k, f"invalid message {k}", 10)
                    scores.append(peer_scores(gs)[atk.peer_id])
                    await trio.sleep_until(t + PACE_S)
                assert all(s > GRAYLIST_THRESHOLD for s in scores[:9]), scores
                assert scores[-1] < GRAYLIST_THRESHOLD, scores
                assert -100 <= scores[-1] < -99, scores  # 10 x -10, decayed with a 600 s half-life
                await wait_until(lambda: attacker_id not in gs.mesh[topic], "the attacker pruned from the mesh", 5)

                # (a) ignored: an invalid and a valid message written straight onto a stream of its own,
                # then a GRAFT through its pubsub; a subscription behind each shows they were read
                honest_sent = honest.island.counters.sent
                rejected, received, stats = dict(node.topic.rejected), node.island.counters.received, \
                    dict(gs.gaia_score_stats)
                stream = await atk.open_stream()
                await atk.send_frames(stream, [atk.sign(payloads[0][1]), atk.sign(honest_elite(exp, PROBLEM, dim))],
                                      subscribe=[SENTINEL_TOPIC])
                await wait_until(lambda: attacker_id in node.p2p.pubsub.peer_topics.get(SENTINEL_TOPIC, ()),
                                 "the subscription behind the two messages", 10)
                atk.gossipsub.send_rpc(atk.victim, rpc_pb2.RPC(control=rpc_pb2.ControlMessage(
                    graft=[rpc_pb2.ControlGraft(topicID=topic)])))
                atk.queue_subscription(SENTINEL_TOPIC + "/2")
                await wait_until(lambda: attacker_id in node.p2p.pubsub.peer_topics.get(SENTINEL_TOPIC + "/2", ()),
                                 "the subscription behind the GRAFT", 10)
                r0 = honest.island.counters.received
                await _keeps_evolving(node, "after the graylisting", gens=3)
                assert dict(node.topic.rejected) == rejected  # neither message was validated
                # whatever reached the victim's island since came from the honest peer
                assert node.island.counters.received - received <= honest.island.counters.sent - honest_sent
                assert gs.gaia_score_stats["graylisted_rpcs"] > stats["graylisted_rpcs"]  # the GRAFT at least
                assert attacker_id not in gs.mesh[topic]
                assert peer_scores(gs)[atk.peer_id] < GRAYLIST_THRESHOLD

                # (b) the honest peer: score 0 both ways, still in the mesh, still receiving the victim's elites
                await wait_until(lambda: honest.island.counters.received > r0, "a migrant from the victim", 20, on=(honest,))
                assert peer_scores(gs)[honest.peer_id] >= 0
                assert peer_scores(honest.p2p.gossipsub)[node.peer_id] >= 0
                assert honest_id in gs.mesh[topic]
                print(f"attacker score after each invalid message: {scores}; honest: "
                      f"{peer_scores(gs)[honest.peer_id]} (victim's view), "
                      f"{peer_scores(honest.p2p.gossipsub)[node.peer_id]} (honest's view); stats {gs.gaia_score_stats}")
            nursery.cancel_scope.cancel()
