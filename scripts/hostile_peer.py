#!/usr/bin/env python3
"""Hostile peers against one real gaia node, summed up as the markdown table of docs/RELIABILITY.md.

    python scripts/hostile_peer.py          # 75 s on 2 loaded cores; prints the table to stdout

One victim node in this process (rastrigin, dim 10, workers 0, 127.0.0.1, default limits: per-sender
bucket 10 messages refilled at 2/s, max_lies 3). Every attack comes from a fresh attacker identity, a
real py-libp2p host with its own GossipSub + Pubsub (StrictSign, the node's gossipsub options, Noise
only): tests/integration/attacker.py, the helpers of tests/integration/test_hostile_peer.py, imported
from there. Every number is read from the victim's own counters (gossipsub validator rejections by
reason, island counters) as differences before/after the attack; "dropped" is what was sent minus
what the validator or the island counted. "crashes" is 0 when the victim's generation advanced
after the attack and status() answered; a crash of the victim would end this script with its
traceback instead of a table. "score" is the victim's gossipsub score for that attacker once the row
is done (gaia_p2p/net/scoring.py). An honest node (migration off, so that it adds nothing to the
victim's migrant counters) is connected to the victim throughout; its score in the victim's view, and
the victim's in its view, are printed below the table.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from attacker import (  # noqa: E402
    LIE_CLAIM,
    SENTINEL_TOPIC,
    honest_elite,
    lie_elite,
    lie_params,
    malformed_payloads,
    open_attacker,
    true_fitness,
)

from gaia_p2p import logs  # noqa: E402
from gaia_p2p.config import Config, build_config  # noqa: E402
from gaia_p2p.net.scoring import GOSSIP_THRESHOLD, GRAYLIST_THRESHOLD, PUBLISH_THRESHOLD, peer_scores  # noqa: E402
from gaia_p2p.node.runtime import Node, run  # noqa: E402

PROBLEM, DIM = "rastrigin", 10
PACE_S = 0.6


@dataclass
class Row:
    attack: str
    sent: str
    rejected: str
    accepted: int
    crashes: str
    score: str = ""


async def wait(pred: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    with trio.move_on_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)
        return
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def snapshot(node: Node) -> Counter[str]:
    c: Counter[str] = Counter()
    for reason, n in node.topic.rejected.items():
        c[reason] += n
    for reason, n in node.island.counters.rejected.items():
        c["island: " + reason] += n
    c["_received"] = node.island.counters.received
    c["_accepted"] = node.island.counters.accepted
    return c


def wire_total(node: Node) -> int:
    return sum(node.topic.rejected.values())


async def alive(node: Node) -> str:
    gen = node.island.generation
    try:
        await wait(lambda: node.island.generation >= gen + 3, "the victim to keep evolving", 20)
        st = node.status()
    except Exception as e:  # reported in the table, not raised: the table is the point
        return f"stalled ({type(e).__name__})"
    bad = st["pubsub_streams_rejected"] + st["migrants"]["rejected"].get("internal_error", 0)
    return "0" if not bad else f"0 ({bad} internal errors)"


def score_of(node: Node, peer_id: str) -> str:
    s = peer_scores(node.p2p.gossipsub).get(peer_id)
    return "-" if s is None else f"{s:g}"


async def row(node: Node, attack: str, sent: int | str, before: Counter[str], n_sent: int | None = None,
              attacker: str = "") -> Row:
    after = snapshot(node)
    delta = {k: after[k] - before[k] for k in after if after[k] - before[k]}
    received, accepted = delta.pop("_received", 0), delta.pop("_accepted", 0)
    wire = {k: v for k, v in delta.items() if not k.startswith("island: ")}
    parts = [f"{k} {v}" for k, v in sorted(wire.items())]
    parts += [f"{k} {v}" for k, v in sorted(delta.items()) if k.startswith("island: ")]
    n = n_sent if n_sent is not None else (sent if isinstance(sent, int) else 0)
    dropped = n - sum(wire.values()) - received
    if dropped:
        parts.append(f"dropped before validation {dropped}")
    score = score_of(node, attacker) if attacker else "-"
    return Row(attack, str(sent), "; ".join(parts) or "-", accepted, await alive(node), score)


async def main(args: argparse.Namespace) -> tuple[list[Row], dict[str, object]]:
    from libp2p.peer.id import ID

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gaia-hostile-") as tmp:
        empty = Path(tmp) / "no_bootstrap.toml"
        empty.write_text("bootstrap = []\n")

        def config(name: str, seed: int, bootstrap: tuple[str, ...] = (), migration: bool = True) -> Config:
            return build_config(env={}, overrides={
                "": {"data_dir": Path(tmp) / name, "checkpoint_interval_s": 3600.0},
                "problem": {"name": PROBLEM, "dim": DIM},
                "island": {"seed": seed},
                "migration": {"enabled": migration},
                "network": {"listen": ("/ip4/127.0.0.1/tcp/0",), "bootstrap": bootstrap,
                            "bootstrap_file": str(empty), "heartbeat_s": 0.5},
                "evaluation": {"workers": 0},
            })

        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            node: Node = await nursery.start(run, config("victim", args.seed))
            isl, exp, dim = node.island, node.exp_id, node.island.opt.dim
            gs, topic = node.p2p.gossipsub, node.topic.topic
            honest: Node = await nursery.start(run, config("honest", args.seed + 1, (node.addrs()[0],), False))
            await wait(lambda: ID.from_base58(honest.peer_id) in gs.mesh.get(topic, ()),
                       "the honest node in the victim's mesh", 20)
            await wait(lambda: isl.best_params is not None, "the victim's first best")
            gen_start = isl.generation

            # 1. malformed messages, one fresh attacker each, through the attacker's own pubsub
            for name, data, _reason in malformed_payloads(exp, dim):
                async with open_attacker() as atk:
                    await atk.join(node.addrs()[0], node.topic.topic)
                    before, w = snapshot(node), wire_total(node)
                    await atk.publish(data)
                    await wait(lambda w=w: wire_total(node) > w, f"{name} to be judged")
                    rows.append(await row(node, name, 1, before, attacker=atk.peer_id))

            # 1b. all of them from one attacker, then one more invalid and one valid message written
            # straight onto a stream of its own (the victim pruned it from its mesh, so the attacker's own
            # gossipsub no longer routes to the victim), a subscription behind them shows they were read
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], node.topic.topic)
                aid = ID.from_base58(atk.peer_id)
                before, graylist_scores = snapshot(node), []
                payloads = malformed_payloads(exp, dim)
                for name, data, _reason in payloads:
                    t, w = trio.current_time(), wire_total(node)
                    await atk.publish(data)
                    await wait(lambda w=w: wire_total(node) > w, f"{name} to be judged")
                    graylist_scores.append(peer_scores(gs)[atk.peer_id])
                    await trio.sleep_until(t + PACE_S)
                await wait(lambda: aid not in gs.mesh.get(topic, ()), "the graylisted attacker pruned from the mesh")
                stream = await atk.open_stream()
                await atk.send_frames(stream, [atk.sign(payloads[0][1]), atk.sign(honest_elite(exp, PROBLEM, dim))],
                                      subscribe=[SENTINEL_TOPIC + "/graylist"])
                await wait(lambda: aid in node.p2p.pubsub.peer_topics.get(SENTINEL_TOPIC + "/graylist", ()),
                           "the sentinel behind the graylisted attacker's messages")
                r = await row(node, f"all {len(payloads)} from one attacker, then 1 invalid + 1 valid",
                              f"{len(payloads)} + 2", before, n_sent=len(payloads) + 2, attacker=atk.peer_id)
                r.rejected = r.rejected.replace("dropped before validation", "dropped by the score gate")
                rows.append(r)
                graylist_info = {"scores": graylist_scores, "in_mesh": aid in gs.mesh.get(topic, ()),
                                 "stats": dict(gs.gaia_score_stats)}

            # 2. flood: 100 valid-format, true-but-poor elites, back to back on one stream
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], node.topic.topic)
                msgs = [atk.sign(honest_elite(exp, PROBLEM, dim, generation=i)) for i in range(100)]
                before, stream = snapshot(node), await atk.open_stream()
                r0, w0, g0, tf = isl.counters.received, node.topic.rejected["rate_limited"], isl.generation, \
                    time.monotonic()
                await atk.send_frames(stream, msgs)
                await wait(lambda: isl.counters.received - r0 + node.topic.rejected["rate_limited"] - w0 >= 100,
                           "the flood to be judged", 20)
                flood = {"read_s": round(time.monotonic() - tf, 2), "generations_during": isl.generation - g0}
                passed = isl.counters.received - r0
                await wait(lambda: sum(isl.counters.rejected.values()) - sum(
                    v for k, v in before.items() if k.startswith("island: ")) >= passed, "the island's verdicts")
                rows.append(await row(node, "flood: 100 valid-format elites, back to back", 100, before,
                                      attacker=atk.peer_id))

            # 3. lies: valid format, claim -0.001, real fitness -262.5; max_lies = 3
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], node.topic.topic)
                before = snapshot(node)
                for k in range(1, isl.policy.max_lies + 1):
                    t = trio.current_time()
                    await atk.publish(lie_elite(exp, dim, generation=k))
                    await wait(lambda k=k: isl.lies.get(atk.peer_id, 0) >= k, f"lie {k}")
                    await trio.sleep_until(t + PACE_S)
                banned = atk.peer_id in isl.banned
                real = true_fitness(PROBLEM, lie_params(dim))
                rows.append(await row(node, f"lies: claim {LIE_CLAIM}, real {real:g} (max_lies 3)",
                                      isl.policy.max_lies, before, attacker=atk.peer_id))
                # after the ban: twice through the attacker's own pubsub (its gossipsub still routes to
                # the victim), then twice raw on a stream of its own followed by a re-announced
                # subscription to the migrants topic; a subscription behind each pair is the sentinel
                # that shows the victim read them
                aid = ID.from_base58(atk.peer_id)
                before = snapshot(node)
                for k in range(2):
                    await atk.publish(lie_elite(exp, dim, generation=10 + k))
                atk.queue_subscription(SENTINEL_TOPIC)
                await wait(lambda: aid in node.p2p.pubsub.peer_topics.get(SENTINEL_TOPIC, ()), "the sentinel")
                stream = await atk.open_stream()
                await atk.send_frames(stream, [atk.sign(lie_elite(exp, dim, generation=20 + k)) for k in range(2)],
                                      subscribe=[node.topic.topic])
                await wait(lambda: atk.peer_id in node.p2p.topic_peers(node.topic.topic), "the re-subscription")
                r = await row(node, "after the ban: 2 publishes + 2 raw frames", 4, before, attacker=atk.peer_id)
                r.rejected = r.rejected.replace("dropped before validation", "dropped by the pubsub blacklist")
                rows.append(r)
                ban_info = {"banned": banned, "blacklisted": node.p2p.pubsub.is_peer_blacklisted(aid),
                            "banned_in_topic_peers": atk.peer_id in node.p2p.topic_peers(node.topic.topic),
                            "banned_in_island_live_peers": atk.peer_id in isl.live_peers}

            # 4. replay: one valid message, then the same bytes (same seqno, same signature) twice
            async with open_attacker() as atk:
                await atk.join(node.addrs()[0], node.topic.topic)
                before, r0 = snapshot(node), isl.counters.received
                original = atk.sign(honest_elite(exp, PROBLEM, dim, generation=1))
                await atk.publish_msg(original)
                await wait(lambda: isl.counters.received > r0, "the original")
                fresh_msg = atk.sign(honest_elite(exp, PROBLEM, dim, generation=2))
                stream = await atk.open_stream()
                await atk.send_frames(stream, [original, original, fresh_msg])
                await wait(lambda: isl.counters.received >= r0 + 2, "the fresh message behind the replays")
                r = await row(node, "replay: 1 message, then its exact bytes x2 (+1 fresh)", "1 + 2 (+1)", before,
                              n_sent=4, attacker=atk.peer_id)
                r.rejected = r.rejected.replace("dropped before validation", "dropped by the seen cache")
                rows.append(r)

            scores = peer_scores(gs)
            summary = {"victim_generations": isl.generation - gen_start, "wall_s": round(time.monotonic() - t0, 1),
                       "flood": flood, **ban_info, "victim_accepted_total": isl.counters.accepted,
                       "victim_best_source": isl.best_source, "graylist": graylist_info,
                       "honest_in_victims_view": scores.get(honest.peer_id),
                       "victim_in_honests_view": peer_scores(honest.p2p.gossipsub).get(node.peer_id),
                       "honest_in_victims_mesh": ID.from_base58(honest.peer_id) in gs.mesh.get(topic, ()),
                       "honest_rejected": dict(honest.topic.rejected),
                       "honest_received_migrants": honest.island.counters.received,
                       "scores_remembered": len(scores),
                       "score_stats": dict(gs.gaia_score_stats)}
            nursery.cancel_scope.cancel()
    return rows, summary


def render(rows: list[Row], summary: dict[str, object], command: str) -> str:
    out = [f"```\n{command}\n```", "",
           "| attack | messages sent | rejected by reason | accepted | crashes | score |", "|---|---|---|---|---|---|"]
    out += [f"| {r.attack} | {r.sent} | {r.rejected} | {r.accepted} | {r.crashes} | {r.score} |" for r in rows]
    out += ["", f"victim nursery: no exception; {summary['victim_generations']} generations during the run "
                f"({summary['wall_s']} s); flood read in {summary['flood']['read_s']} s with "  # type: ignore[index]
                f"{summary['flood']['generations_during']} generations meanwhile; liar banned "  # type: ignore[index]
                f"{summary['banned']}, blacklisted {summary['blacklisted']}; after re-subscribing it is in pubsub's "
                f"topic_peers {summary['banned_in_topic_peers']}, in the island's live peers "
                f"{summary['banned_in_island_live_peers']}; migrants accepted in total "
                f"{summary['victim_accepted_total']}, best source {summary['victim_best_source']}"]
    g, st = summary["graylist"], summary["score_stats"]
    out += ["", f"peer scores (thresholds: gossip {GOSSIP_THRESHOLD:g}, publish {PUBLISH_THRESHOLD:g}, graylist "
                f"{GRAYLIST_THRESHOLD:g}): the one attacker after each of its invalid messages "
                f"{', '.join(f'{s:g}' for s in g['scores'])}; in the victim's mesh afterwards "  # type: ignore[index]
                f"{g['in_mesh']}; control RPCs dropped {st['graylisted_rpcs']}, "
                f"graylisted peers pruned {st['mesh_pruned']}; "
                f"honest node: {summary['honest_in_victims_view']} in the victim's view, victim "
                f"{summary['victim_in_honests_view']} in its view, in the victim's mesh "
                f"{summary['honest_in_victims_mesh']}, it received {summary['honest_received_migrants']} "
                f"migrants, its own rejections {summary['honest_rejected'] or 'none'}; scores the victim "
                f"remembers at the end {summary['scores_remembered']} (disconnected attackers included)"]
    return "\n".join(out)


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1000, help="the victim island's seed")
    args = ap.parse_args()
    logs.configure("json", "critical")  # the victim logs every rejection at WARNING: keep stdout a table
    from gaia_p2p.net.host import quiet_libp2p_logging

    quiet_libp2p_logging("critical")
    rows, summary = trio.run(main, args)
    command = "python " + " ".join(shlex.quote(a) for a in ["scripts/hostile_peer.py", *sys.argv[1:]])
    print(render(rows, summary, command))


if __name__ == "__main__":
    cli()
