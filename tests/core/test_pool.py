"""core/pool.py and core/poolwire.py: the vectors of protocols/gaia-pool-v1.md, the decoder's
rejections, and the state machine with simulated members (no network: messages delivered by hand)."""

from __future__ import annotations

import json
import hashlib
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest

from gaia_p2p.core import pool as P
from gaia_p2p.core import poolsim as sim
from gaia_p2p.core import poolwire as W
from gaia_p2p.errors import RemoteProtocolError

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "pool-v1.json").read_text())
PID = VECTORS["pool_id"]["pool_id"]


def test_vectors_names_seeds_owners_and_heads():
    v = VECTORS["pool_id"]
    assert P.pool_id(v["experiment_id"], v["name"], v["settings"]) == PID
    assert P.pool_id(v["experiment_id"], v["name"], v["settings"] | {"sigma": 0.3}) != PID
    assert P.pool_seed(PID) == VECTORS["pool_seed"]
    s = VECTORS["generation_seeds"]
    assert list(P.generation_seeds(PID, s["generation"], s["episodes"])) == s["seeds"]
    o = VECTORS["owners"]
    assert list(P.owners(o["generation"], len(o["owners"]), tuple(o["members"]))) == o["owners"]
    h = VECTORS["heads"]
    assert P.genesis_head(PID).hex() == h["genesis"]
    assert P.next_head(P.genesis_head(PID), 0, np.array(h["returns_0"], np.float32)).hex() == h["after_0"]


def test_shares_differ_by_one_item_at_most_and_the_extra_ones_rotate():
    members = tuple(f"12D3KooW{c}" for c in "ABCDEFGH")
    for g in range(20):
        for n in (32, 33, 7):
            counts = sorted(Counter(P.owners(g, n, members)).values())
            assert counts[-1] - (counts[0] if len(counts) == len(members) else 0) <= 1, (g, n, counts)
    got_extra = {P.owners(g, 33, members)[32] for g in range(40)}  # the 33rd item: rank 0 each generation
    assert len(got_extra) >= 6
    assert P.owners(3, 5, ("only",)) == ("only",) * 5


def test_vectors_weighted_owners_and_equal_speeds_deal_as_without():
    o = VECTORS["owners_weighted"]
    members = tuple(o["members"])
    assert P.weights(members, o["speeds"]) == o["weights"]
    assert list(P.owners(o["generation"], len(o["owners"]), members, o["speeds"])) == o["owners"]
    assert P.SPEED_WEIGHTS[0] == 1024 and P.SPEED_WEIGHTS[-8] == 256 and P.SPEED_WEIGHTS[8] == 4096
    eight = tuple(f"12D3KooW{c}" for c in "ABCDEFGH")
    for g in range(10):  # one speed for all, or none known: the dealing of equal members
        assert P.owners(g, 33, eight, dict.fromkeys(eight, 17)) == P.owners(g, 33, eight) == P.owners(g, 33, eight, {})
    # a member at a quarter of the others' speed gets a quarter of their share; one that claims to be
    # 100x faster gets 4x the median's share, not everything
    counts = Counter(P.owners(0, 130, eight, dict.fromkeys(eight, 20) | {"12D3KooWH": 12}))
    assert abs(counts["12D3KooWH"] - 130 * 256 / (7 * 1024 + 256)) < 1 and counts["12D3KooWA"] in (17, 18)
    counts = Counter(P.owners(0, 110, eight, dict.fromkeys(eight, 20) | {"12D3KooWH": 20 + 4 * 7}))
    assert abs(counts["12D3KooWH"] - 110 * 4096 / (7 * 1024 + 4096)) < 1


def test_vectors_messages():
    r = VECTORS["results"]
    got = W.decode_results(bytes.fromhex(r["hex"]), pid=PID)
    assert (got.generation, got.head.hex(), list(got.indices), got.returns.tolist(), got.platform) == (
        r["generation"], r["head"], r["indices"], r["returns"], r["platform"])
    assert W.encode_results(PID, got).hex() == r["hex"] and got.speed is None  # an r1 sender: no speed
    r = VECTORS["results_speed"]
    got = W.decode_results(bytes.fromhex(r["hex"]), pid=PID)
    assert (got.generation, list(got.indices), got.returns.tolist(), got.speed) == (
        r["generation"], r["indices"], r["returns"], r["speed"])
    assert W.encode_results(PID, got).hex() == r["hex"]
    r = VECTORS["results_later_part"]  # no platform class: as told in the generation's first message
    got = W.decode_results(bytes.fromhex(r["hex"]), pid=PID)
    assert (got.platform, got.speed, list(got.indices)) == (None, r["speed"], r["indices"])
    assert W.encode_results(PID, got).hex() == r["hex"]
    r = VECTORS["accusation"]
    got = W.decode_message(bytes.fromhex(r["hex"]), pid=PID)
    assert got == P.Accusation(r["generation"], r["index"], r["accused"])
    assert W.encode(PID, got).hex() == r["hex"]
    assert isinstance(W.decode_message(bytes.fromhex(VECTORS["results"]["hex"]), pid=PID), P.Results)
    q = VECTORS["log_request"]
    assert W.decode_log_request(bytes.fromhex(q["hex"]), pid=PID) == (q["start"], bytes.fromhex(q["head"]))
    lg = VECTORS["log"]
    start, returns = W.decode_log(bytes.fromhex(lg["hex"]), pid=PID)
    assert start == lg["start"] and [x.tolist() for x in returns] == lg["returns"]


def results(**over):
    base = dict(generation=1, head=b"h" * 16, indices=(0, 1), returns=np.array([1.0, 2.0], np.float32),
                platform="x86_64")
    return P.Results(**(base | over))


@pytest.mark.parametrize("data, reason", [
    (W.encode_results("0123456789abcdef", results()), "wrong_pool"),
    (W.encode_results(PID, results(head=b"short")), "bad_field"),
    (W.encode_results(PID, results(returns=np.array([1.0, np.nan], np.float32))), "nonfinite"),
    (W.encode_results(PID, results(indices=(3, 3))), "bad_field"),
    (W.encode_results(PID, results(indices=(0,))), "bad_field"),  # 1 index, 2 returns
    (W.encode_results(PID, results(platform="a b")), "bad_field"),
    (W.encode_results(PID, results(speed=128)), "bad_field"),
    (W.encode_results(PID, results(speed=-129)), "bad_field"),
    (b"\xc1", "not_msgpack"),
    (b"\x00" * (W.MAX_RESULTS_BYTES + 1), "too_large"),
])
def test_hostile_results_are_rejected_with_a_reason(data, reason):
    with pytest.raises(RemoteProtocolError) as e:
        W.decode_message(data, pid=PID)
    assert e.value.reason == reason
    with pytest.raises(RemoteProtocolError) as e:
        W.decode_results(data, pid=PID)
    assert e.value.reason == reason


ACCUSED = "12D3KooWGzBbSqXGjvSbDAvbVu9QzfqQe5K8ZCKkoYbQt3GVPShJ"


def accusation(**over) -> bytes:
    return msgpack.packb({"v": 1, "p": PID, "g": 7, "i": b"\x03\x00", "a": ACCUSED} | over, use_bin_type=True)


@pytest.mark.parametrize("data, reason", [
    (accusation(p="0123456789abcdef"), "wrong_pool"),
    (accusation(v=2), "bad_version"),
    (accusation(g=-1), "bad_field"),
    (accusation(i=b"\x03\x00\x04\x00"), "bad_field"),  # one index only
    (accusation(a="0OIl"), "bad_field"),  # not base58
    (accusation(a=7), "bad_field"),
])
def test_hostile_accusations_are_rejected_with_a_reason(data, reason):
    with pytest.raises(RemoteProtocolError) as e:
        W.decode_message(data, pid=PID)
    assert e.value.reason == reason
    assert W.decode_message(accusation(), pid=PID) == P.Accusation(7, 3, ACCUSED)


# ---------------------------------------------------------------- simulated members

DIM, LAM = 4, 12
fitness, step, form = sim.quadratic, sim.step, sim.form


def Member(name: str, **kw) -> sim.Member:
    return sim.Member(name, pid=PID, **({"lam": LAM, "dim": DIM} | kw))


def test_members_split_the_items_and_keep_one_log():
    ms = [Member(n) for n in "ABC"]
    form(ms)
    for t in range(60):
        step(ms, t * 0.05)
    assert min(m.pool.generation for m in ms) >= 20
    g = min(m.pool.generation for m in ms)
    assert len({m.pool.heads[g] for m in ms}) == 1
    own = [m.pool.counters.own for m in ms]
    assert all(0 < o < LAM * g for o in own) and sum(own) <= 1.3 * LAM * g, own


def test_a_silent_members_items_are_helped_after_the_wait():
    ms = [Member(n) for n in "ABC"]
    form(ms)
    for t in range(10):
        step(ms, t * 0.05)
    g0 = ms[0].pool.generation
    alive = ms[:2]
    for t in range(10, 80):  # C says nothing any more, and the others still think it is a member
        step(alive, t * 0.05)
    assert min(m.pool.generation for m in alive) >= g0 + 10
    assert sum(m.pool.counters.helped for m in alive) > 0
    assert alive[0].pool.heads[-1] == alive[1].pool.heads[-1] or abs(alive[0].pool.generation - alive[1].pool.generation) == 1


def duplicated_work(latency: float, **kw) -> tuple[float, list[float]]:
    """Items evaluated per item of the log over 20 s of a pool of 3 whose messages take ``latency``
    to arrive (after 10 s to learn), and each member's help wait at the end."""
    ms = [Member(n, **kw) for n in "ABC"]
    form(ms)
    for t in range(200):
        step(ms, t * 0.05, latency=latency)
    g0, own0 = min(m.pool.generation for m in ms), sum(m.pool.counters.own for m in ms)
    for t in range(200, 600):
        step(ms, t * 0.05, latency=latency)
    g, own = min(m.pool.generation for m in ms), sum(m.pool.counters.own for m in ms)
    return (own - own0) / (LAM * (g - g0)), [m.pool.help_wait() for m in ms]


@pytest.mark.parametrize("latency", [0.3, 0.6])
def test_members_learn_how_late_results_arrive_and_do_not_redo_work_in_flight(latency):
    # with the help wait fixed at about two gossip rounds (min_help_wait_s 0.1 here), every member
    # helps with every item before the owners' results arrive: 3 evaluations per item
    fixed, _ = duplicated_work(latency, max_arrival_wait_s=0.0)
    assert fixed > 2.5
    measured, waits = duplicated_work(latency)
    assert measured < 1.2, measured
    assert all(latency < w < 2 * latency for w in waits), waits


def test_a_dead_member_is_helped_after_the_measured_wait_at_most():
    # results arrive 0.6 s late, then C dies: A and B wait about 1.5 x 0.6 s for its items, not longer
    ms = [Member(n) for n in "ABC"]
    form(ms)
    for t in range(200):
        step(ms, t * 0.05, latency=0.6)
    alive, g0 = ms[:2], ms[0].pool.generation
    wait = max(m.pool.help_wait() for m in alive)
    assert wait <= 1.0  # max_arrival_wait_s
    for t in range(200, 400):  # 10 s: C's share is helped each round, after the wait
        step(alive, t * 0.05, latency=0.6)
    assert min(m.pool.generation for m in alive) >= g0 + 10 // (wait + 0.6 + 0.2)
    assert sum(m.pool.counters.helped for m in alive) > 0


def test_helpers_split_a_dead_members_share_instead_of_all_taking_it():
    ms = [Member(n, lam=32) for n in "ABCD"]
    form(ms)
    for t in range(40):
        step(ms, t * 0.05)
    alive = ms[:3]
    for t in range(40, 80):  # D is dead and still counted a member: its items are helped each round
        step(alive, t * 0.05)
    g0, helped0 = alive[0].pool.generation, [m.pool.counters.helped for m in alive]
    own0 = sum(m.pool.counters.own for m in alive)
    for t in range(80, 200):
        step(alive, t * 0.05)
    gens = alive[0].pool.generation - g0
    helped = [m.pool.counters.helped - h for m, h in zip(alive, helped0)]
    assert gens >= 10 and all(h > 0 for h in helped), (gens, helped)
    # D's share is 8 of 32 items; each helper taking all of it was 24 evaluations a generation
    assert sum(helped) / gens <= 10, (sum(helped) / gens, helped)
    assert (sum(m.pool.counters.own for m in alive) - own0) / (32 * gens) <= 1.1


def test_a_slow_member_is_dealt_a_share_by_its_speed_and_nobody_waits_or_helps():
    ms = [Member(n, lam=32) for n in "ABC"] + [Member("D", lam=32, slowness=4.0)]
    form(ms)
    for t in range(60):
        step(ms, t * 0.05)
    views = [m.pool.speeds(m.pool.live_members()) for m in ms]
    assert all(v == views[0] for v in views), views  # every member deals alike
    assert views[0]["D"] <= min(views[0][n] for n in "ABC") - 7  # a quarter: 8 quarter-octave steps, give or take one
    helped0, own0, g0 = [m.pool.counters.helped for m in ms], ms[3].pool.counters.own, ms[0].pool.generation
    checks0 = [m.pool.counters.checks for m in ms]
    for t in range(60, 120):
        step(ms, t * 0.05)
    gens = ms[0].pool.generation - g0
    assert gens >= 20 and [m.pool.counters.helped for m in ms] == helped0
    assert 1.5 <= (ms[3].pool.counters.own - own0) / gens <= 3.5  # 32 x 1/13 = 2.5, not 8
    # checks take a quarter of the slow member's share of them (a check holds it up 4 times as long)
    checks = [m.pool.counters.checks - c for m, c in zip(ms, checks0)]
    assert checks[3] * 2 < min(checks[:3]), checks
    assert len({m.pool.heads[g0 + gens - 1] for m in ms}) == 1


def test_work_for_a_generation_completed_meanwhile_is_abandoned_not_finished():
    # A's share is being evaluated when B's help completes the generation: A stops it (and so starts
    # the next share on time, instead of finishing obsolete work and starting every share late)
    rng = np.random.default_rng(0)
    a = P.Pool(pid=PID, self_id="A", platform="same", episodes=1)
    a.handle(P.MembersChanged(frozenset({"A", "B"})), now=0.0, rng=rng)
    X = np.random.default_rng(1).normal(size=(4, DIM))
    work = [e for e in a.handle(P.RoundStarted(0, X, a.seeds_for(0)), now=0.0, rng=rng)
            if isinstance(e, P.EvaluateItems)]
    assert len(work) == 1 and work[0].why == P.Work.OWN and len(work[0].indices) == 1  # the first of 3 parts
    told = P.Results(0, a.heads[0], (0, 1, 2, 3), fitness(X, a.seeds_for(0)).astype(np.float32), "same")
    effects = a.handle(P.ResultsReceived("B", told), now=1.0, rng=rng)
    assert [type(e) for e in effects[:2]] == [P.AbandonWork, P.RoundComplete] and effects[0].generation == 0
    assert a.handle(P.RoundStarted(1, X, a.seeds_for(1)), now=1.0, rng=rng) == []  # still busy until it stopped
    effects = a.handle(P.ItemsAbandoned(0, work[0].indices, P.Work.OWN), now=1.1, rng=rng)
    assert [e.why for e in effects if isinstance(e, P.EvaluateItems)] == [P.Work.OWN] and effects[0].generation == 1
    assert a.counters.abandoned == 1 and a.counters.wasted == 0
    # a completion while we are idle or checking abandons nothing
    told = P.Results(1, a.heads[1], (0, 1, 2, 3), fitness(X, a.seeds_for(1)).astype(np.float32), "same")
    a.busy = P.Work.CHECK
    assert not any(isinstance(e, P.AbandonWork) for e in a.handle(P.ResultsReceived("B", told), now=2.0, rng=rng))


def test_the_untouched_end_of_a_slow_share_is_taken_at_once_and_the_owner_skips_it():
    rng = np.random.default_rng(0)
    pools = {n: P.Pool(pid=PID, self_id=n, platform="same", episodes=1) for n in "AB"}
    X = np.random.default_rng(1).normal(size=(12, DIM))
    seeds = pools["A"].seeds_for(0)
    work = {}
    for n, p in pools.items():
        p.handle(P.MembersChanged(frozenset("AB")), now=0.0, rng=rng)
        work[n] = [e for e in p.handle(P.RoundStarted(0, X, seeds), now=0.0, rng=rng) if isinstance(e, P.EvaluateItems)]
    a, b = pools["A"], pools["B"]
    share_b = [i for i, o in enumerate(a.round.owners) if o == "B"]
    assert [w.indices for w in work["B"]] == [tuple(share_b[:2])]  # 6 items in 3 parts of 2, front first

    def evaluate(p: P.Pool, w: P.EvaluateItems, now: float) -> list:
        done = P.ItemsEvaluated(0, w.indices, fitness(w.candidates, seeds), w.why, seconds=0.01)
        return p.handle(done, now=now, rng=rng)

    pending, told = work["A"], []
    while pending:  # A's whole share, part by part
        effects = evaluate(a, pending.pop(), 0.1)
        told += [e.results for e in effects if isinstance(e, P.PublishResults)]
        pending += [e for e in effects if isinstance(e, P.EvaluateItems)]
    assert len(told) == 3 and a.round.share_done_at == 0.1
    assert [r.platform for r in told] == ["same", None, None]  # told once a generation
    effects = evaluate(b, work["B"][0], 0.3)
    b_part1 = [e.results for e in effects if isinstance(e, P.PublishResults)][0]
    b_part2 = [e for e in effects if isinstance(e, P.EvaluateItems)]
    assert [w.indices for w in b_part2] == [tuple(share_b[2:4])]
    assert not any(isinstance(e, P.EvaluateItems) for e in a.handle(P.ResultsReceived("B", b_part1), now=0.3, rng=rng))
    steal = [e for e in a.handle(P.Tick(), now=0.3, rng=rng) if isinstance(e, P.EvaluateItems)]  # no help wait
    # B is on items 3-4 of its share; A takes the last one (half a part of its own), not B's next part
    assert [(w.why, w.indices) for w in steal] == [(P.Work.HELP, (share_b[-1],))]
    effects = evaluate(a, steal[0], 0.35)
    stolen = [e.results for e in effects if isinstance(e, P.PublishResults)][0]
    b.handle(P.ResultsReceived("A", stolen), now=0.35, rng=rng)
    for r in told:
        b.handle(P.ResultsReceived("A", r), now=0.35, rng=rng)
    assert not any(isinstance(e, P.EvaluateItems) for e in b.handle(P.Tick(), now=0.35, rng=rng))  # busy: part 2
    nxt = [e for e in evaluate(b, b_part2[0], 0.5) if isinstance(e, P.EvaluateItems)]
    assert [w.indices for w in nxt] == [(share_b[4],)]  # the stolen last item is skipped


def test_one_members_catch_evicts_a_liar_everywhere_through_its_accusation():
    """Checks are rare (5 %): the first honest member to catch the liar tells the pool, and every
    other member of its class re-evaluates that one item and evicts the liar too, instead of
    waiting to catch it itself."""
    ms = [Member(n, check_share=0.05) for n in "ABCD"] + [Member("L", lie=5.0, check_share=0.05)]
    form(ms)
    honest = ms[:4]
    first = None
    for t in range(3000):
        step(ms, t * 0.05)
        caught = [m for m in honest if "L" in m.pool.evicted]
        if caught and first is None:
            first = t
        if len(caught) == len(honest):
            break
    assert first is not None and all("L" in m.pool.evicted for m in honest)
    assert t - first <= 10, (first, t)  # steps, not the hundreds a 5 % check rate needs per member
    upheld = sum(m.pool.counters.accusations.get("upheld", 0) for m in honest)
    assert upheld >= 1, [m.pool.counters.accusations for m in honest]
    assert all(m.evicted == ["L"] for m in honest)


def test_a_false_accuser_is_evicted_and_the_accused_stays():
    ms = [Member(n) for n in "ABC"] + [Member("X", accuse="A")]
    form(ms)
    for t in range(400):
        step(ms, t * 0.05)
        if all("X" in m.pool.evicted for m in ms[:3] if m.name != "A"):
            break
    for m in ms[1:3]:
        assert "X" in m.pool.evicted and "A" not in m.pool.evicted
        assert m.pool.counters.accusations.get("false", 0) >= 1
    assert "A" not in ms[0].pool.evicted and "X" in ms[0].pool.evicted  # A re-evaluated its own item
    g = min(m.pool.generation for m in ms[:3])
    assert len({m.pool.heads[g] for m in ms[:3]}) == 1


def test_accusations_that_cannot_be_decided_exactly_are_not_acted_on():
    ms = [Member(n) for n in "ABC"]
    form(ms)
    for t in range(20):
        step(ms, t * 0.05)
    a = ms[0].pool
    done = a._done_rounds[-1]
    i_b = done.source.index("B")
    i_c = done.source.index("C")
    rng = np.random.default_rng(0)

    def outcome(src: str, acc: P.Accusation) -> str:
        before = dict(a.counters.accusations)
        a.handle(P.AccusationReceived(src, acc), now=1.0, rng=rng)
        return next(k for k, v in a.counters.accusations.items() if v != before.get(k, 0))

    assert outcome("C", P.Accusation(done.generation, i_c, "B")) == "unverifiable"  # C's return, not B's
    assert outcome("C", P.Accusation(done.generation - 40, i_b, "B")) == "stale"
    assert outcome("C", P.Accusation(done.generation, 9999, "B")) == "stale"
    assert outcome("B", P.Accusation(done.generation, i_b, "B")) == "ignored"
    a.records["C"].platform = "other"
    assert outcome("C", P.Accusation(done.generation, i_b, "B")) == "cross_class"  # C cannot have checked B exactly
    a.records["C"].platform = "same"
    assert outcome("C", P.Accusation(done.generation, i_b, "B")) == "queued"
    assert outcome("C", P.Accusation(done.generation, i_b, "B")) == "duplicate"  # one at a time per accuser
    assert [(c.src, c.index) for c in a.checks if c.accuser == "C"] == [("B", i_b)] and not a.evicted


def test_a_liar_is_evicted_and_its_later_results_ignored():
    ms = [Member("A"), Member("B"), Member("L", lie=5.0)]
    form(ms)
    for t in range(200):
        step(ms, t * 0.05)
        if all("L" in m.pool.evicted for m in ms[:2]):
            break
    assert all("L" in m.pool.evicted for m in ms[:2])
    assert all(m.evicted == ["L"] for m in ms[:2])
    a = ms[0].pool
    before = a.counters.results_rejected.get("evicted", 0)  # what it said in flight when evicted
    a.handle(P.ResultsReceived("L", P.Results(a.generation, a.heads[-1], (0,), np.array([1e9], np.float32), "same")),
             now=99.0, rng=np.random.default_rng(0))
    assert a.counters.results_rejected.get("evicted") == before + 1  # it may go on talking: ignored
    assert "L" not in a.live_members()
    g = a.generation
    for t in range(200, 240):  # the honest two go on without it
        step(ms[:2], t * 0.05)
    assert a.generation >= g + 5


def test_a_joiner_behind_fetches_the_log_and_replays_it():
    ms = [Member(n) for n in "AB"]
    form(ms)
    for t in range(40):
        step(ms, t * 0.05)
    late = Member("C")
    late.feed(P.MembersChanged(frozenset("ABC")), 2.0)
    late.start_round(2.0)
    late.do_work(2.0)
    # A told results of a generation far ahead: the joiner asks A for its log
    last = P.Results(ms[0].pool.generation, ms[0].pool.heads[-1], (0,), np.array([0.0], np.float32), "same")
    late.feed(P.ResultsReceived("A", last), 2.2)
    assert late.fetches and late.fetches[0].peer == "A" and late.fetches[0].start == 0
    served_start = late.fetches[0].start
    late.feed(P.LogReceived("A", served_start, ms[0].pool.log_from(served_start)), 2.3)
    assert late.replays and late.pool.heads[-1] == ms[0].pool.heads[-1]
    assert late.pool.generation == ms[0].pool.generation


def test_a_fork_is_settled_by_the_side_more_members_announce():
    # a partition: A alone, B and C together; B and C measure differently from A (as a platform
    # class apart would), so the two sides' logs differ
    solo, pair = Member("A"), [Member(n, lie=1.0, check_share=0.0) for n in "BC"]
    solo.feed(P.MembersChanged(frozenset("A")), 0.0)
    for m in pair:
        m.feed(P.MembersChanged(frozenset("BC")), 0.0)
    for t in range(10):
        step([solo], t * 0.05)
        step(pair, t * 0.05)
    g = min(solo.pool.generation, pair[0].pool.generation)
    assert g >= 3 and solo.pool.heads[g] != pair[0].pool.heads[g]
    # the pair (outvoting A) keeps its log when A tells it its own. A's results came first: one
    # against one, so B asks for A's log, and by the time it arrives C has told B it is on B's side
    pair[0].feed(P.ResultsReceived("A", P.Results(g, solo.pool.heads[g], (0,), np.array([0.0], np.float32),
                                                  "same")), 1.0)
    pair[0].feed(P.ResultsReceived("C", P.Results(g, pair[1].pool.heads[g], (1,), np.array([0.0], np.float32),
                                                  "same")), 1.0)
    assert [f.peer for f in pair[0].fetches] == ["A"]
    pair[0].feed(sim.answer_log(solo, 0, pair[0].fetches[0].head), 1.05)
    assert not pair[0].replays and "A" in pair[0].pool.fenced
    assert pair[0].pool.counters.results_rejected["log_outvoted"] == 1
    for p in pair:  # both of the pair tell A what they computed generation g from
        solo.feed(P.ResultsReceived(p.name, P.Results(g, p.pool.heads[g], (0,), np.array([0.0], np.float32),
                                                      "same")), 1.0)
    assert solo.fetches and solo.fetches[-1].why == "fork" and solo.fetches[-1].start == 0
    src = solo.fetches[-1].peer
    side = next(p for p in pair if p.name == src)
    solo.feed(P.LogReceived(src, 0, side.pool.log_from(0)), 1.1)
    assert solo.replays and solo.pool.heads[-1] == side.pool.heads[-1]



@pytest.mark.parametrize("ahead", ["A", "B"])
def test_two_members_that_forked_agree_which_log_to_keep_however_far_each_went(ahead):
    # one against one (say a liar forked them and is evicted now): each fetches the other's log,
    # and both keep the same one, whichever of them has gone further since
    a, b = Member("A"), Member("B", lie=1.0, check_share=0.0)
    for m in (a, b):
        m.feed(P.MembersChanged(frozenset({m.name})), 0.0)
    for t in range(12):
        step([a], t * 0.05)
        step([b], t * 0.05)
    step([a if ahead == "A" else b], 0.65)  # one generation further: both see a fork, neither is behind
    if ahead == "A":
        a, b = b, a  # b: the one ahead
    assert b.pool.generation == a.pool.generation + 1 and a.pool.generation >= 3
    for m in (a, b):
        m.feed(P.MembersChanged(frozenset("AB")), 1.0)
    ga = a.pool.generation  # each tells the other a result of generation ga, from its own past
    for m, other in ((a, b), (b, a)):
        m.feed(P.ResultsReceived(other.name, P.Results(ga, other.pool.heads[ga], (0,), np.array([0.0], np.float32),
                                                       "same")), 1.0)
    assert a.fetches and b.fetches  # one member on each side: both ask
    answers = [(a, sim.answer_log(b, a.fetches[-1].start, a.fetches[-1].head)),
               (b, sim.answer_log(a, b.fetches[-1].start, b.fetches[-1].head))]
    for m, ans in answers:
        m.feed(ans, 1.1)
    assert len(a.replays) + len(b.replays) == 1  # exactly one gave way
    assert a.pool.heads[ga] == b.pool.heads[ga]


def pair_that_counts_f_in(steps: int) -> list:
    """A and B in a pool they think F is a member of, after ``steps`` steps (F says nothing)."""
    ms = [Member(n) for n in "AB"]
    for m in ms:
        m.feed(P.MembersChanged(frozenset("ABF")), 0.0)
    for t in range(steps):
        step(ms, t * 0.05)
    return ms


def test_a_member_that_keeps_another_past_is_fenced_off_until_it_shares_ours():
    # F evicted A and B (say, it lies, and so finds everyone else "wrong") and computes alone: the
    # two keep their log, stop waiting for F's items, and take F back once it tells their head
    ms = pair_that_counts_f_in(6)
    g = ms[0].pool.generation
    told = fitness(ms[0].candidates(g)[:2], ms[0].pool.seeds_for(g)).astype(np.float32)
    for k, (m, other) in enumerate([(ms[0], ms[1]), (ms[1], ms[0])]):  # each learns the other is at g too
        m.feed(P.ResultsReceived(other.name, P.Results(g, m.pool.heads[g], (k,), told[k:k + 1], "same")), 1.0)
    for m in ms:
        m.feed(P.ResultsReceived("F", P.Results(g, bytes(32), (2,), np.array([0.0], np.float32), "same")), 1.0)
        assert not m.fetches and "F" in m.pool.fenced and "F" not in m.pool.live_members()
    a = ms[0]
    t = 20
    while a.pool.generation < g + 2:  # the round under way when F forked still counted F as an owner
        step(ms, t * 0.05)
        t += 1
    before, helped = a.pool.generation, a.pool.counters.helped
    for t in range(t, t + 20):  # from then on no help wait for F's share: A and B end each round
        step(ms, t * 0.05)
    assert a.pool.counters.helped == helped and a.pool.generation >= before + 10
    g = a.pool.generation
    a.feed(P.ResultsReceived("F", P.Results(g, a.pool.heads[g], (1,), np.array([0.0], np.float32), "same")), 3.0)
    assert "F" not in a.pool.fenced and "F" in a.pool.live_members()


def test_a_member_that_runs_ahead_alone_cannot_rewrite_the_others_past():
    # F computed alone (its returns its own), and tells a generation far ahead: A fetches F's log,
    # but B tells results from A's past, F only from its own: A keeps its log and fences F off
    ms = pair_that_counts_f_in(20)
    f = Member("F", lie=3.0, check_share=0.0)
    for t in range(60):
        step([f], t * 0.05)
    a = ms[0]
    assert f.pool.generation > a.pool.generation + 2 and f.pool.heads[1] != a.pool.heads[1]
    g = a.pool.generation
    told = fitness(a.candidates(g)[:1], a.pool.seeds_for(g)).astype(np.float32)
    a.feed(P.ResultsReceived("B", P.Results(g, a.pool.heads[g], (0,), told, "same")), 5.0)
    a.feed(P.ResultsReceived("F", P.Results(f.pool.generation, f.pool.heads[-1], (1,), np.array([0.0], np.float32),
                                            "same")), 5.0)
    assert a.fetches and a.fetches[-1].peer == "F"
    log_before = [r.tobytes() for r in a.pool.log]
    a.feed(sim.answer_log(f, a.fetches[-1].start, a.fetches[-1].head), 5.1)
    assert not a.replays and [r.tobytes() for r in a.pool.log] == log_before
    assert a.pool.counters.results_rejected.get("log_outvoted") == 1 and "F" in a.pool.fenced

# ---------------------------------------------------------------- a replica's replay (core/island.py)

def pool_island(seed: int = 5):
    from gaia_p2p.core.island import Island, MigrationPolicy
    from gaia_p2p.core.optimizer import make_optimizer

    opt = make_optimizer("cmaes", 6, sigma=0.5, popsize=8, seed=seed, x0=np.full(6, 1.5), restarts="ipop")
    return Island(optimizer=opt, experiment_id="e" * 32, self_id="A", policy=MigrationPolicy(),
                  episodes=2, deterministic=False, pool=PID)


def noisy(X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    return -np.sum(X ** 2, axis=1) + np.random.default_rng(list(seeds)).normal(size=len(X))


def run_island(isl, generations: int) -> list[np.ndarray]:
    """Drive a pool replica alone; the returns it was told, float32 (the pool's log)."""
    from gaia_p2p.core.events import EvaluationDone, Evaluate

    rng = np.random.default_rng(0)
    log = []
    ev = next(e for e in isl.start(now=0.0, rng=rng) if isinstance(e, Evaluate))
    for _ in range(generations):
        r = noisy(ev.candidates, ev.seeds).astype(np.float32)
        log.append(r)
        effects = isl.handle(EvaluationDone(ev.generation, r.astype(np.float64), np.zeros(len(ev.extras)),
                                            evaluated=2), now=0.0, rng=rng)
        ev = next(e for e in effects if isinstance(e, Evaluate))
    return log


def test_a_replica_replayed_from_the_genesis_or_from_where_it_stood_is_the_same_replica():
    a = pool_island()
    log = run_island(a, 30)
    b = pool_island()  # the genesis: replays the whole log
    b.start(now=0.0, rng=np.random.default_rng(1))
    b.replay(tuple(log), start=0, genesis=pool_island().opt, rng=np.random.default_rng(1))
    c = pool_island()  # a member that stood at generation 12 (a generation in flight) catches up
    part = run_island(c, 12)
    assert [x.tobytes() for x in part] == [x.tobytes() for x in log[:12]]  # seeds from the pool, not the rng
    c.replay(tuple(log[12:]), start=12, genesis=None, rng=np.random.default_rng(2))
    for other in (b, c):
        assert other.generation == a.generation == 30
        assert other.opt.mean.tobytes() == a.opt.mean.tobytes()
        assert other.opt.sigma == a.opt.sigma
    # and the next candidates are the same points on the same seeds
    from gaia_p2p.core.events import Evaluate

    nxt = [isl._in_flight for isl in (a, b, c)]
    assert all(isinstance(e, Evaluate) for e in nxt)
    assert len({e.candidates.tobytes() for e in nxt}) == 1 and len({e.seeds for e in nxt}) == 1
    # a member counts the candidates it scored itself (2 a generation here), not the population (8),
    # plus its own assessment rounds (every 10 generations: resident and centroid)
    assert 30 * 2 < a.evaluations <= 30 * 2 + 3 * 2


def test_one_member_keeps_the_pools_resident_and_the_next_takes_over_when_it_leaves():
    # assessing, publishing and testing the resident are work every member would do alike: members
    # that agree on who is live pick one and the same keeper, told once each time it changes
    rng = np.random.default_rng(0)
    names = ["A", "B", "C", "D"]
    pools = {n: P.Pool(pid=PID, self_id=n, platform="same", episodes=1) for n in names}
    # alone, a member keeps its resident itself
    assert all(p.keeper() == n for n, p in pools.items())
    told = {n: p.handle(P.MembersChanged(frozenset(names)), now=0.0, rng=rng) for n, p in pools.items()}
    keeper = pools["A"].keeper()
    assert {p.keeper() for p in pools.values()} == {keeper}
    for n, effects in told.items():
        changed = [e for e in effects if isinstance(e, P.KeeperChanged)]
        assert changed == ([] if n == keeper else [P.KeeperChanged(keeper, False)])
    assert pools["A"].statistics()["resident_keeper"] == keeper
    # nothing changes while the members stay
    assert not any(isinstance(e, P.KeeperChanged) for p in pools.values()
                   for e in p.handle(P.MembersChanged(frozenset(names)), now=1.0, rng=rng))
    # the keeper leaves: one of the others takes over, and only it is told it keeps it now
    rest = frozenset(names) - {keeper}
    told = {n: pools[n].handle(P.MembersChanged(rest), now=2.0, rng=rng) for n in rest}
    second = pools[min(rest)].keeper()
    assert second != keeper and {pools[n].keeper() for n in rest} == {second}
    for n, effects in told.items():
        assert [e for e in effects if isinstance(e, P.KeeperChanged)] == [P.KeeperChanged(second, n == second)]
    # the vector: who keeps it among four members, and after it leaves
    v = VECTORS["keeper"]
    for m in v["members"]:
        assert hashlib.blake2b(f"{P.RESIDENT_KEY}:{m}".encode(), digest_size=8).hexdigest() == v["digests"][m]
    four = P.Pool(pid=PID, self_id=v["members"][-1], platform="same", episodes=1)
    four.handle(P.MembersChanged(frozenset(v["members"])), now=0.0, rng=rng)
    assert four.keeper() == v["keeper"]
    four.handle(P.MembersChanged(frozenset(v["members"]) - {v["keeper"]}), now=1.0, rng=rng)
    assert four.keeper() == v["after_it_leaves"]
    # the key is fixed: over many pools the keeper is spread over the members, not the first by name
    keepers = {P.rank(P.RESIDENT_KEY, frozenset(f"{m}{k}" for m in names))[0][0] for k in range(40)}
    assert keepers == set(names)




def test_a_replica_that_leaves_the_resident_to_the_keeper_scores_no_extras_and_publishes_nothing():
    from gaia_p2p.core.events import Evaluate, EvaluationDone, PeersChanged, PublishMigrant, ResidentDuty

    def drive(isl, generations: int, rng) -> tuple[list[int], int]:
        """Generations whose Evaluate carried extras, and how many publishes the replica asked for."""
        with_extras, published = [], 0
        ev = isl._in_flight
        for _ in range(generations):
            if len(ev.extras):
                with_extras.append(ev.generation)
            r = noisy(ev.candidates, ev.seeds).astype(np.float64)
            effects = isl.handle(EvaluationDone(ev.generation, r, noisy(ev.extras, ev.extra_seeds), evaluated=2),
                                 now=float(ev.generation), rng=rng)
            published += sum(isinstance(e, PublishMigrant) for e in effects)
            ev = next(e for e in effects if isinstance(e, Evaluate))
        return with_extras, published

    keeper, other = pool_island(), pool_island()
    for isl in (keeper, other):
        isl.start(now=0.0, rng=np.random.default_rng(0))
        isl.handle(PeersChanged(frozenset({"B"})), now=0.0, rng=np.random.default_rng(0))
    assert other.handle(ResidentDuty(False), now=0.0, rng=np.random.default_rng(0)) == []
    kept, kept_published = drive(keeper, 30, np.random.default_rng(1))
    left, left_published = drive(other, 30, np.random.default_rng(2))
    assert kept == [9, 19, 29] and kept_published >= 2 and keeper.best_params is not None
    assert left == [] and left_published == 0 and other.best_params is None
    # the resident never moves a replica: both are still one search
    assert other.opt.mean.tobytes() == keeper.opt.mean.tobytes()
    assert other.evaluations == 30 * 2 < keeper.evaluations
    # the keeper left: this replica takes over at its next assessment round (the centroid, no resident yet)
    other.handle(ResidentDuty(True), now=30.0, rng=np.random.default_rng(0))
    took, _ = drive(other, 10, np.random.default_rng(3))
    assert took == [39] and other.best_params is not None
    # an island (no pool) always keeps its own resident
    from gaia_p2p.core.island import Island, MigrationPolicy
    from gaia_p2p.core.optimizer import make_optimizer

    alone = Island(optimizer=make_optimizer("cmaes", 6, sigma=0.5, popsize=8, seed=1), experiment_id="e" * 32,
                   self_id="A", policy=MigrationPolicy(), episodes=2, deterministic=False)
    alone.handle(ResidentDuty(False), now=0.0, rng=np.random.default_rng(0))
    assert alone.keeps_resident
