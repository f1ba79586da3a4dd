"""Fair migrant intake (gaia_p2p.core.migration.Intake) alone and inside a noisy island under a flood.

The flood is the attack of issue 12 (defect 6) on LunarLander: 460 random-policy elites claiming 300
from 20 identities, then one honest migrant. Here the problem is "sphere plus a seed-drawn offset"
(helpers' ``noisy``), whose values are <= 10: a claim of 300 always measures far below it.
"""

from __future__ import annotations

import numpy as np

from gaia_p2p.core import migration
from gaia_p2p.core.events import Evaluate, EvaluationDone, MigrantAccepted, MigrantRejected
from gaia_p2p.core.migration import SUSPECT, TRUSTED, UNKNOWN, Intake

from helpers import PEER_IDS, make_elite, make_island, of_type, pending_evaluate, sphere

DIM = 5
SYBILS = tuple(f"12D3KooWSybil{i:02d}" for i in range(20))
HONEST = PEER_IDS[1]


def test_one_pending_per_source_and_a_bounded_table():
    q = Intake(max_sources=3, per_round=2)
    assert q.offer("a", 1) == (True, [])
    assert q.offer("a", 2) == (True, [("a", 1, "superseded")])  # a source's flood replaces only its own
    assert q.offer("b", 3) == (True, [])
    assert q.offer("c", 4) == (True, [])
    assert q.offer("d", 5) == (False, [])  # full, and d ranks no better than anyone waiting
    assert len(q) == 3
    assert q.take() == [("a", 2), ("b", 3)]  # arrival order
    assert q.take() == [("c", 4)]
    assert len(q) == 0


def test_a_trusted_source_displaces_the_worst_and_is_served_first():
    q = Intake(max_sources=2, per_round=1)
    q.outcome("t", held=True)
    q.outcome("s", held=False)
    assert (q.standing("t"), q.standing("s"), q.standing("new")) == (TRUSTED, SUSPECT, UNKNOWN)
    q.offer("s", "lie")
    q.offer("u", "x")
    assert q.offer("t", "good") == (True, [("s", "lie", "queue_full")])  # the suspect goes first
    assert q.offer("u2", "y") == (False, [])  # an unknown newcomer does not push out an unknown
    assert q.take() == [("t", "good")]  # trusted before unknown, whatever the arrival order
    assert q.take() == [("u", "x")]


def test_suspects_get_at_most_their_slots_per_round_and_recover_by_holding():
    q = Intake(max_sources=10, per_round=5, suspect_slots=1)
    for s in "abc":
        q.outcome(s, held=False)
        q.offer(s, s)
    assert [s for s, _ in q.take()] == ["a"]  # three suspects waiting, one slot a round
    assert [s for s, _ in q.take()] == ["b"]
    q.outcome("c", held=True)
    q.outcome("c", held=True)  # held 2 > failed 1: no longer a suspect
    q.offer("d", "d")
    assert [s for s, _ in q.take()] == ["c", "d"]  # c is trusted now: served before the unknown d


def test_records_are_bounded():
    q = Intake(max_sources=4, per_round=4, max_records=50)
    for i in range(1000):  # a thousand identities, each found out once
        q.outcome(f"p{i}", held=False)
    assert len(q.records) == 50
    assert set(q.records) == {f"p{i}" for i in range(950, 1000)}  # the least recently updated went first


def _flood_run(total_lies: int, generations: int, interval: int):
    """A noisy island (a round every ``interval`` generations, 8 migrants a round) gets ``total_lies``
    lies from 20 Sybils in turn, spread evenly over ``generations``, then one honest migrant, and
    2 * ``interval`` + 1 more generations. Returns the island, every effect, every request, the lie."""
    d_isl = make_island(deterministic=False, interval=interval, max_pending=8, reeval_episodes=3, popsize=32)
    rng = np.random.default_rng(0)
    now = 0.0

    def score(req: Evaluate) -> EvaluationDone:  # helpers' noisy problem: a seed-drawn offset in [0, 10)
        off = (req.seeds[0] % 1000) / 100.0
        xoff = (req.extra_seeds[0] % 1000) / 100.0 if req.extra_seeds else 0.0
        extra = sphere(req.extras) + xoff if len(req.extras) else np.zeros(0)
        # candidates score poorly: the resident stays near the start (2.0 everywhere, about -20)
        return EvaluationDone(req.generation, np.full(len(req.candidates), -50.0 + off), extra)

    req = pending_evaluate(d_isl.start(now=now, rng=rng))
    effects, requests = [], [req]
    lie = make_elite(np.full(DIM, 3.0), 300.0)  # measures about -45: 345 below its claim
    k = 0
    for g in range(generations):
        while k < total_lies * (g + 1) // generations:
            effects += d_isl.handle(migration_received(SYBILS[k % len(SYBILS)], lie), now=now, rng=rng)
            k += 1
        now += 1.0
        out = d_isl.handle(score(req), now=now, rng=rng)
        effects += out
        req = pending_evaluate(out)
        requests.append(req)
    assert k == total_lies
    honest = make_elite(np.full(DIM, 0.01), 10.0)  # near the optimum, a claim within its noise
    effects += d_isl.handle(migration_received(HONEST, honest), now=now, rng=rng)
    for _ in range(2 * interval + 1):
        now += 1.0
        out = d_isl.handle(score(req), now=now, rng=rng)
        effects += out
        req = pending_evaluate(out)
        requests.append(req)
    return d_isl, effects, requests, lie


def lie_rows(requests, lie) -> list[int]:
    """Per request: how many of its extras are the lie (the last request is never evaluated)."""
    return [int(np.all(r.extras == lie.params.astype(np.float64), axis=1).sum()) for r in requests[:-1]]


def episodes(requests) -> int:
    return sum(len(r.candidates) * len(r.seeds) + len(r.extras) * len(r.extra_seeds) for r in requests[:-1])


def migration_received(src, elite):
    from gaia_p2p.core.events import MigrantReceived

    return MigrantReceived(src, elite, via=src)


def test_an_honest_migrant_after_460_lies_from_20_sybils_is_evaluated_and_liars_cost_little():
    # LunarLander's default interval: a round every 10 generations; the lies over 98, so that the
    # honest migrant arrives 8 generations into an interval, when the old single queue (8) was full
    isl, effects, requests, lie = _flood_run(total_lies=460, generations=98, interval=10)
    rejected = of_type(effects, MigrantRejected)
    assert "queue_full" not in {e.reason for e in rejected}  # 21 sources fit the table (64)
    [acc] = of_type(effects, MigrantAccepted)
    assert acc.src == HONEST  # evaluated in the next round, on our seeds, next to our best, and better
    assert isl.best_source == HONEST
    # The bound: one evaluation per identity while it is unknown (its first lie finds it out), then at
    # most suspect_slots (1) a round.
    rounds = sum(1 for r in requests[:-1] if len(r.extras))
    rows = lie_rows(requests, lie)
    assert sum(rows) <= len(SYBILS) + isl.policy.suspect_slots * rounds, (sum(rows), rounds)
    assert {isl.intake.standing(s) for s in SYBILS} == {SUSPECT}
    # every short claim of a source found out is charged to its forwarder (here: the Sybil itself)
    short = [e for e in rejected if e.reason == "claim_short"]
    assert len(short) == sum(rows) and all(e.forwarder == e.src for e in short)
    share = sum(rows) * 3 / episodes(requests)  # 3 episodes per re-score, 1 per candidate
    print(f"lies evaluated {sum(rows)} of 460 in {rounds} rounds: {share:.1%} of the episodes")
    assert share < 0.035
    c = isl.counters
    assert c.received == 461
    in_flight = lie_rows(requests[-1:] + [requests[-1]], lie)[0]  # taken by the request not yet scored
    assert c.received == c.accepted + sum(c.rejected.values()) + len(isl.intake) + in_flight


def test_liars_found_out_cost_at_most_one_slot_a_round():
    """Steady state: every liar a suspect already, a fresh flood before every round: 1 of 8 slots."""
    isl, effects, requests, lie = _flood_run(total_lies=46 * 40, generations=40, interval=1)
    late = requests[10:]  # after the first 3 rounds every Sybil had been found out
    rows = lie_rows(late, lie)
    assert max(rows) == isl.policy.suspect_slots
    share = sum(rows) * 3 / episodes(late)
    print(f"steady state, a round every generation: {max(rows)} lie a round, {share:.1%} of the episodes")
    assert share <= 3 / (32 + 3 * 3)  # one 3-episode re-score next to 32 candidates, resident, centroid


def test_a_short_claim_charges_the_forwarder_only_once_its_source_is_found_out():
    """Noisy re-scores can fall short of an honest claim: a trusted source's short claim is rejected
    as claim_short but costs its forwarder nothing; a suspect's does."""
    rng = np.random.default_rng(0)
    isl = make_island(deterministic=False, interval=1, max_pending=8)
    assert isl.policy.claim_slack == 100.0
    for _ in range(2):
        isl.intake.outcome(HONEST, held=True)
    req = pending_evaluate(isl.start(now=0.0, rng=rng))
    pop = len(req.candidates)
    req = pending_evaluate(isl.handle(EvaluationDone(req.generation, np.full(pop, -50.0), np.array([-10.0])),
                                      now=1.0, rng=rng))  # the centroid becomes the resident at -10
    for src, via in ((HONEST, "12D3KooWRelay1"), (SYBILS[0], "12D3KooWRelay2")):
        isl.handle(migration_received(src, make_elite(np.full(DIM, 0.1), 200.0)), now=1.0, rng=rng)
        del via
    isl.intake.pending = {s: (n, (e, f"relay-of-{s}")) for s, (n, (e, _)) in isl.intake.pending.items()}
    req = pending_evaluate(isl.handle(EvaluationDone(req.generation, np.full(pop, -50.0), np.array([-10.0, -11.0])),
                                      now=2.0, rng=rng))
    assert len(req.extras) == 4  # resident, centroid, both migrants
    effects = isl.handle(EvaluationDone(req.generation, np.full(pop, -50.0), np.array([-10.0, -11.0, -20.0, -20.0])),
                         now=3.0, rng=rng)
    rej = {e.src: e for e in of_type(effects, MigrantRejected)}
    assert rej[HONEST].reason == rej[SYBILS[0]].reason == "claim_short"  # 220 below a claim of 200
    assert rej[HONEST].forwarder == ""  # held twice before: still trusted, its relay is not charged
    assert rej[SYBILS[0]].forwarder == f"relay-of-{SYBILS[0]}"  # found out at its first: charged


def test_lie_counts_and_bans_are_bounded():
    """5000 identities, each caught lying (in the validator: ClaimRefuted) until banned."""
    from gaia_p2p.core.events import ClaimRefuted, PeerBanned

    isl = make_island(max_lies=2, max_records=100, max_banned=300)
    rng = np.random.default_rng(0)
    banned = 0
    for i in range(5000):
        for _ in range(2):
            banned += len(of_type(isl.handle(ClaimRefuted(f"liar{i}"), now=0.0, rng=rng), PeerBanned))
    assert banned == 5000  # each was banned when caught
    assert len(isl.lies) == 100 and len(isl.intake.records) == 100
    assert len(isl.banned) == 300 and isl.banned == {f"liar{i}" for i in range(4700, 5000)}  # the latest
    restored = type(isl).from_checkpoint(isl.to_checkpoint(), self_id=isl.self_id, policy=isl.policy,
                                         episodes=1, deterministic=True)
    assert restored.banned == isl.banned
