"""Shell policy in the pure core: the elite-fetch plan, the target test, the effect table."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from gaia_p2p.core.migration import Topology
from gaia_p2p.core.schedule import FetchOutcome, FetchPlan, FetchWhy
from gaia_p2p.core.target import TargetTest

LIVE = frozenset({"a", "b", "c", "d", "e"})


def plan(topology: Topology, **kw) -> FetchPlan:
    args = dict(self_id="m", topology=topology, interval=5, started_at=0.0, join_peers=3, join_window_s=120.0,
                pull_min_s=5.0)
    return FetchPlan(**(args | kw))


def test_a_joiner_asks_three_peers_and_stops_once_three_answered():
    p, rng = plan(Topology.FULL), np.random.default_rng(1)
    kw = dict(live=LIVE, generation=0, random_sources=frozenset(), rng=rng)
    asked = p.targets(now=1.0, **kw)
    assert len(asked) == 3 and {w for _, w in asked} == {FetchWhy.JOIN}
    p.answered(asked[0][0], FetchWhy.JOIN, FetchOutcome.FETCHED)
    p.answered(asked[1][0], FetchWhy.JOIN, FetchOutcome.ANSWERED_NOT_BETTER)
    p.answered(asked[2][0], FetchWhy.JOIN, FetchOutcome.FAILED_UNREACHABLE)  # may be asked again, retry_s later
    assert p.joined == {asked[0][0], asked[1][0]} and not p.finished(2.0)
    again = p.targets(now=2.0, **kw)  # one more is needed: one of the two not asked yet
    assert len(again) == 1 and again[0][0] in LIVE - {q for q, _ in asked}
    p.answered(again[0][0], FetchWhy.JOIN, FetchOutcome.FAILED_UNREACHABLE)
    assert p.targets(now=5.0, **kw)[0][0] not in {q for q, _ in asked} | {again[0][0]}  # the fifth
    assert {q for q, _ in p.targets(now=11.5, **kw)} <= {asked[2][0], again[0][0]}  # retry_s has passed
    p.answered(asked[2][0], FetchWhy.JOIN, FetchOutcome.FETCHED)
    assert p.finished(12.0) and p.targets(now=12.0, **kw) == []


def test_a_joiner_gives_up_after_its_window_and_forgets_peers_that_left():
    p, rng = plan(Topology.FULL), np.random.default_rng(2)
    for t in range(0, 100, 10):
        for q, why in p.targets(now=float(t), live=frozenset({f"x{t}"}), generation=0,
                                random_sources=frozenset(), rng=rng):
            p.answered(q, why, FetchOutcome.ANSWERED_NO_ELITE)
        assert len(p.tried) <= 1  # only live peers are remembered
    assert not p.finished(119.0) and p.finished(120.0)


def test_a_joiner_asks_directly_reachable_peers_before_relayed_ones():
    relayed = frozenset({"a", "b", "c"})
    p, rng = plan(Topology.FULL), np.random.default_rng(4)
    asked = {q for q, _ in p.targets(now=1.0, live=LIVE, generation=0, random_sources=frozenset(), rng=rng,
                                     relayed=relayed)}
    assert {"d", "e"} <= asked and len(asked & relayed) == 1
    # large elites: a relayed-only peer is never asked
    p = plan(Topology.FULL)
    asked = {q for q, _ in p.targets(now=1.0, live=LIVE, generation=0, random_sources=frozenset(), rng=rng,
                                     relayed=relayed, large=True)}
    assert asked == {"d", "e"}


def test_a_large_pull_from_a_relayed_only_source_waits_for_the_direct_connection():
    p, rng = plan(Topology.RING), np.random.default_rng(5)
    kw = dict(live=frozenset({"a", "z"}), random_sources=frozenset(), rng=rng, large=True)
    assert p.targets(now=0.0, generation=0, relayed=frozenset({"a"}), **kw) == []
    assert p.targets(now=6.0, generation=1, relayed=frozenset({"a"}), **kw) == [] and p.deferred == 2
    # the punch worked: the pull is made at the next call after pull_min_s, not an interval later
    assert p.targets(now=12.0, generation=2, relayed=frozenset(), **kw) == [("a", FetchWhy.RING)]
    # small elites travel over the relay
    q = plan(Topology.RING)
    assert q.targets(now=0.0, generation=0, relayed=frozenset({"a"}), **(kw | {"large": False})) == [("a", FetchWhy.RING)]
    assert q.deferred == 0


def test_ring_pulls_the_predecessor_once_per_interval_and_at_most_every_pull_min_s():
    p, rng = plan(Topology.RING), np.random.default_rng(3)
    live = frozenset({"a", "z"})
    kw = dict(live=live, random_sources=frozenset(), rng=rng)
    assert p.targets(now=0.0, generation=0, **kw) == [("a", FetchWhy.RING)]  # "a" < "m": the predecessor
    assert p.targets(now=1.0, generation=9, **kw) == []  # too soon
    assert p.targets(now=6.0, generation=4, **kw) == []  # not a whole interval yet
    assert p.targets(now=6.0, generation=5, **kw) == [("a", FetchWhy.RING)]
    assert p.targets(now=20.0, generation=99, live=frozenset(), random_sources=frozenset(), rng=rng) == []
    assert not p.finished(1e9)


def test_random_pulls_its_live_sources():
    p, rng = plan(Topology.RANDOM), np.random.default_rng(4)
    got = p.targets(now=0.0, live=frozenset({"a", "b"}), generation=0, random_sources=frozenset({"b", "gone"}),
                    rng=rng)
    assert got == [("b", FetchWhy.RANDOM)]


def test_the_target_test_waits_for_a_rescored_new_resident_and_its_interval():
    t = TargetTest(200.0, interval_s=20.0)
    x, y = np.zeros(3), np.ones(3)
    kw = dict(best_fitness=210.0, deterministic=False)
    assert not t.due(best_params=x, best_n=0, now=0.0, **kw)  # provisional: not re-scored yet
    assert not t.due(best_params=x, best_n=1, now=0.0, best_fitness=150.0, deterministic=False)
    assert t.due(best_params=x, best_n=1, now=0.0, **kw)
    r = t.record({"mean": 190.0, "std": 9.0, "min": 170.0, "solved_share": 0.4, "episodes": 100}, generation=7,
                 episodes=500, source="local", spent_episodes=100)
    assert not r.passed and t.reached is None and t.episodes_used == 100
    assert not t.due(best_params=x, best_n=3, now=100.0, **kw)  # the same resident again
    assert not t.due(best_params=y, best_n=1, now=10.0, **kw)  # a new one, but too soon
    assert t.due(best_params=y, best_n=1, now=20.0, **kw)
    r = t.record({"mean": 205.0, "std": 9.0, "min": 180.0, "solved_share": 0.7, "episodes": 100}, generation=9,
                 episodes=700, source="peer", spent_episodes=100)
    assert r.passed and t.reached == r and t.last == r and r.as_dict()["source"] == "peer"
    assert TargetTest(None, 0.0).due(best_params=x, best_n=9, now=0.0, **kw) is None


def test_every_effect_of_the_island_and_the_pool_has_a_handler():
    pytest.importorskip("libp2p")
    from gaia_p2p.core.events import Effect
    from gaia_p2p.core.pool import PoolEffect, PoolInput
    from gaia_p2p.node.runtime import EFFECTS, POOL_INPUTS

    assert set(EFFECTS) == set(typing.get_args(Effect)) | set(typing.get_args(PoolEffect))
    assert set(POOL_INPUTS) == set(typing.get_args(PoolInput))


def test_announced_elites_are_fetched_best_claim_first_each_announcer_once_per_min_s():
    from gaia_p2p.core.schedule import AnnouncedFetches, AnnounceOutcome as O

    q = AnnouncedFetches(max_pending=3, min_s=10.0)
    full = dict(topology=Topology.FULL, relayed_only=False)
    assert q.offer("a", 1.0, ours=2.0, **full) == O.NOT_BETTER
    assert q.offer("a", 3.0, ours=2.0, topology=Topology.RING, relayed_only=False) == O.TOPOLOGY
    assert q.offer("a", 3.0, ours=2.0, topology=Topology.FULL, relayed_only=True) == O.DEFERRED_RELAYED
    assert q.offer("a", 3.0, ours=2.0, **full) == O.QUEUED
    assert q.offer("a", 4.0, ours=2.0, **full) == O.QUEUED  # its latest claim replaces the earlier one
    assert q.offer("b", 5.0, ours=None, **full) == O.QUEUED  # no resident yet: anything is worth a look
    assert q.next(0.0, 2.0) == ("b", 5.0) and q.next(0.0, 2.0) == ("a", 4.0) and q.next(0.0, 2.0) is None
    # asked at 0: b's next announcement waits until 10
    assert q.offer("b", 6.0, ours=2.0, **full) == O.QUEUED
    assert q.next(5.0, 2.0) is None and q.wait_s(5.0) == 5.0
    assert q.next(10.0, 2.0) == ("b", 6.0) and q.wait_s(10.0) is None
    # a claim that no longer beats ours leaves the queue
    assert q.offer("c", 3.0, ours=2.0, **full) == O.QUEUED
    assert q.next(20.0, 3.5) is None and not q.pending


def test_a_thousand_announcing_identities_queue_sixteen_and_cost_one_fetch_each_per_min_s():
    from gaia_p2p.core.schedule import MAX_PENDING_ANNOUNCERS, AnnouncedFetches, AnnounceOutcome as O

    q = AnnouncedFetches()
    outcomes = [q.offer(f"sybil{i:04d}", float(i), ours=0.0, topology=Topology.FULL, relayed_only=False)
                for i in range(1, 1001)]
    assert len(q.pending) == MAX_PENDING_ANNOUNCERS == 16
    assert outcomes.count(O.QUEUED) == 1000  # each beat the lowest kept one, which went
    assert sorted(q.pending.values()) == [float(i) for i in range(985, 1001)]  # the 16 highest claims
    assert q.offer("late", 2.0, ours=0.0, topology=Topology.FULL, relayed_only=False) == O.DROPPED
    fetched = [q.next(0.0, 0.0) for _ in range(20)]
    assert [f[1] for f in fetched[:16]] == [float(i) for i in range(1000, 984, -1)] and fetched[16:] == [None] * 4
    for i in range(1, 1001):  # they all announce again at once: none of the 16 asked may be asked before 10 s
        q.offer(f"sybil{i:04d}", float(i), ours=0.0, topology=Topology.FULL, relayed_only=False)
    assert q.next(1.0, 0.0) is None and len(q.asked_at) == 16
