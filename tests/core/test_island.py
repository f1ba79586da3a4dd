"""gaia_p2p.core.island driven by hand: a real CMA-ES, fitness computed here, a fake clock.

No trio, no network: inputs go in through ``Island.start`` / ``Island.handle``, effects come out and
are checked. ``helpers.NetworkOfIslands`` wires several islands through an in-memory gossip list.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgpack
import numpy as np
import pytest

from gaia_p2p.core import migration
from gaia_p2p.core.events import (
    Effect,
    Evaluate,
    EvaluationDone,
    GenerationCompleted,
    MigrantAccepted,
    MigrantReceived,
    MigrantRejected,
    PeerBanned,
    PeersChanged,
    PublishMigrant,
)
from gaia_p2p.core.island import Island, MigrationPolicy
from gaia_p2p.core.types import Elite
from gaia_p2p.errors import LocalProtocolError

from helpers import (
    PEER_IDS,
    NetworkOfIslands,
    evaluate,
    exp_id,
    make_elite,
    make_island,
    of_type,
    pending_evaluate,
    rastrigin,
    sphere,
)

DIM = 5
A, B, C, D, E, F, G = PEER_IDS[:7]


class Driver:
    """One island, its rng, a fake clock and its pending ``Evaluate``."""

    def __init__(self, island: Island, *, seed: int = 0, dt: float = 1.0, now: float = 0.0,
                 peers: set[str] | None = None) -> None:
        self.island = island
        self.rng = np.random.default_rng(seed)
        self.now = now
        self.dt = dt
        if peers is not None:
            self.peers(peers)
        self.pending: Evaluate = pending_evaluate(island.start(now=self.now, rng=self.rng))

    def step(self, fn: Callable[[np.ndarray], np.ndarray] = sphere,
             done: Callable[[Evaluate], EvaluationDone] | None = None) -> list[Effect]:
        """Complete the pending generation; ``done`` builds the result by hand, else ``fn`` scores it."""
        self.now += self.dt
        req = self.pending
        effects = self.island.handle(done(req) if done else evaluate(req, fn), now=self.now, rng=self.rng)
        self.pending = pending_evaluate(effects)
        return effects

    def run(self, n: int, fn: Callable[[np.ndarray], np.ndarray] = sphere) -> list[Effect]:
        out: list[Effect] = []
        for _ in range(n):
            out.extend(self.step(fn))
        return out

    def receive(self, src: str, elite: Elite) -> list[Effect]:
        return self.island.handle(MigrantReceived(src, elite), now=self.now, rng=self.rng)

    def peers(self, peers: set[str]) -> list[Effect]:
        return self.island.handle(PeersChanged(frozenset(peers)), now=self.now, rng=self.rng)


def reasons(effects: list[Effect]) -> list[str]:
    return [e.reason for e in of_type(effects, MigrantRejected)]


def counters_add_up(isl: Island) -> bool:
    c = isl.counters
    return c.received == c.accepted + sum(c.rejected.values())


def noisy(X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    """A stochastic problem: sphere plus an offset drawn by the episode seed, common to the batch."""
    return sphere(X) + (seeds[0] % 1000) / 100.0


# ------------------------------------------------------------------------------------------------
# hand-scored generations


def f32(x: np.ndarray) -> np.ndarray:
    """``x`` at the wire's float32 precision, as the island holds and scores it."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def champion(pop: int, i: int, f: float, rest: float = -50.0) -> np.ndarray:
    """Candidate fitness: ``f`` for candidate ``i``, ``rest`` for all the others."""
    fit = np.full(pop, rest)
    fit[i] = f
    return fit


def scored(candidates: float | np.ndarray,
           extras: list[float] | tuple[float, ...] = ()) -> Callable[[Evaluate], EvaluationDone]:
    """A ``done`` for ``Driver.step``: the candidates scored ``candidates`` (one value for all, or one
    each), the extras exactly as listed; the test states how many extras the round carries."""
    def done(req: Evaluate) -> EvaluationDone:
        cand = np.full(len(req.candidates), float(candidates)) if np.isscalar(candidates) else candidates
        extra = np.array(extras, dtype=np.float64)
        assert extra.shape == (len(req.extras),), (extra, req.extras.shape)
        return EvaluationDone(req.generation, np.asarray(cand, dtype=np.float64), extra)
    return done


# ------------------------------------------------------------------------------------------------
# generations, assessment rounds and the resident best


def test_deterministic_island_assesses_resident_and_centroid_every_generation_on_the_candidates_seeds():
    d = Driver(make_island(episodes=3))
    isl, pop = d.island, d.island.opt.popsize
    first = d.pending
    assert first.generation == 0 and len(first.seeds) == 3
    # no resident yet: the one extra is the optimizer's centroid (x0), at float32 precision
    np.testing.assert_array_equal(first.extras, [f32(isl.opt.mean)])
    np.testing.assert_array_equal(first.extras[0], np.full(DIM, 2.0))
    assert first.extra_seeds == first.seeds
    for g in range(1, 12):
        req = d.pending
        fit, extra = sphere(req.candidates), sphere(req.extras)
        effects = d.step()
        assert [e.generation for e in of_type(effects, GenerationCompleted)] == [g]
        # exact scores: the resident is the best of resident, centroid and champion on these seeds
        assert isl.best_fitness == max(float(extra.max()), float(fit.max()))
        assert isl.best_fitness == float(sphere(isl.best_params)[0])
        assert isl.best_last == isl.best_fitness and isl.best_last_seeds == req.seeds
        np.testing.assert_array_equal(isl.best_params, f32(isl.best_params))
        nxt = d.pending
        assert nxt.generation == g
        assert nxt.seeds != req.seeds and nxt.extra_seeds == nxt.seeds  # fresh seeds, shared by the extras
        # the resident first, then the centroid the optimizer holds now
        assert nxt.extras.shape == (2, DIM)
        np.testing.assert_array_equal(nxt.extras[0], isl.best_params)
        np.testing.assert_array_equal(nxt.extras[1], f32(isl.opt.mean))
    assert isl.generation == 11
    assert isl.evaluations == 11 * pop + 1 + 10 * 2  # the centroid alone, then resident + centroid
    assert isl.episodes_used == 3 * isl.evaluations  # extras on the candidates' 3 seeds
    assert isl.best_source == "local"


def test_noisy_island_assesses_only_when_an_interval_completes_and_its_first_resident_is_the_centroid():
    """Noisy problem, interval 3: generations 0 and 1 carry no extras and leave the island without a
    resident, whatever their champions score; generation 2 completes the interval and scores the
    centroid on fresh seeds, and it becomes the resident. Champions never replace the resident
    (winner's curse: a champion's score is the best of popsize noisy draws)."""
    d = Driver(make_island(deterministic=False, interval=3, episodes=2, reeval_episodes=3))
    isl, pop = d.island, d.island.opt.popsize

    def no_extras(g: int) -> None:
        req = d.pending
        assert req.generation == g and req.extras.shape == (0, DIM) and len(req.seeds) == 2
        [done] = of_type(d.step(done=scored(champion(pop, g % pop, 1e6))), GenerationCompleted)
        assert done.gen_best_fitness == 1e6

    for g in (0, 1):
        no_extras(g)
        assert isl.best_params is None and (isl.best_fitness, isl.best_n) == (-math.inf, 0)

    req = d.pending  # generation 2: the centroid alone, on 3 fresh seeds
    centroid = f32(isl.opt.mean)
    assert req.generation == 2
    np.testing.assert_array_equal(req.extras, [centroid])
    assert len(req.extra_seeds) == 3 and not set(req.extra_seeds) & set(req.seeds)
    [done] = of_type(d.step(done=scored(champion(pop, 0, 1e6), [-3.0])), GenerationCompleted)
    np.testing.assert_array_equal(isl.best_params, centroid)
    assert (isl.best_fitness, isl.best_n, isl.best_last, isl.best_source) == (-3.0, 1, -3.0, "local")
    assert isl.best_last_seeds == req.extra_seeds
    assert done.best_fitness == -3.0

    for g in (3, 4):  # between rounds the +1e6 champions touch nothing
        no_extras(g)
        np.testing.assert_array_equal(isl.best_params, centroid)
        assert (isl.best_fitness, isl.best_n) == (-3.0, 1)

    # generation 5: the resident, then the centroid, on fresh seeds. The resident re-scores -2: its
    # estimate becomes the mean -2.5, and -2 is the reference this round. The centroid's -2.2 beats the
    # running mean but not the resident on the same seeds: it is not taken. Nor is the +1e6 champion.
    req = d.pending
    assert req.generation == 5 and len(req.extra_seeds) == 3
    np.testing.assert_array_equal(req.extras, [centroid, f32(isl.opt.mean)])
    d.step(done=scored(champion(pop, 1, 1e6), [-2.0, -2.2]))
    np.testing.assert_array_equal(isl.best_params, centroid)
    assert (isl.best_fitness, isl.best_n, isl.best_last) == (-2.5, 2, -2.0)
    assert isl.best_last_seeds == req.extra_seeds

    no_extras(6)
    no_extras(7)
    # generation 8: the centroid beats the resident on the same seeds and replaces it, although its
    # score is below the old resident's running mean
    req = d.pending
    assert req.generation == 8 and req.extras.shape == (2, DIM)
    d.step(done=scored(champion(pop, 2, 1e6), [-4.0, -3.5]))
    np.testing.assert_array_equal(isl.best_params, req.extras[1])
    assert (isl.best_fitness, isl.best_n, isl.best_last, isl.best_source) == (-3.5, 1, -3.5, "local")
    assert isl.best_last_seeds == req.extra_seeds
    # 9 generations of candidates on 2 episodes; 1 + 2 + 2 extras on 3 episodes
    assert isl.evaluations == 9 * pop + 5
    assert isl.episodes_used == 9 * pop * 2 + 5 * 3


def test_noisy_resident_fitness_is_the_running_mean_of_its_rescores():
    d = Driver(make_island(deterministic=False, interval=2))
    isl = d.island
    d.step(done=scored(-100.0))  # generation 0: no assessment
    d.step(done=scored(-100.0, [-1.0]))  # generation 1: the centroid becomes the resident at -1
    resident = isl.best_params.copy()
    scores = [-1.0]
    for f in (-0.5, -2.0, -1.7, -0.8):
        d.step(done=scored(-100.0))  # between rounds nothing is re-scored and nothing changes
        assert isl.best_n == len(scores) and isl.best_fitness == pytest.approx(np.mean(scores))
        req = d.pending
        np.testing.assert_array_equal(req.extras[0], resident)
        d.step(done=scored(-100.0, [f, -100.0]))  # the centroid scores far worse
        scores.append(f)
        assert isl.best_n == len(scores)
        assert isl.best_fitness == pytest.approx(np.mean(scores))
        # its claim on the wire is its latest score, on the seeds of that score
        assert isl.best_last == f and isl.best_last_seeds == req.extra_seeds
        assert (isl.best_elite().fitness, isl.best_elite().seeds) == (f, req.extra_seeds)
    np.testing.assert_array_equal(isl.best_params, resident)


def test_deterministic_round_order_is_resident_centroid_migrants_then_the_champion():
    d = Driver(make_island())
    isl, pop = d.island, d.island.opt.popsize
    first = d.pending
    d.step(done=scored(-20.0, [-10.0]))  # the centroid (-10) becomes the resident; no champion beats it
    np.testing.assert_array_equal(isl.best_params, first.extras[0])
    assert (isl.best_fitness, isl.best_source) == (-10.0, "local")
    assert d.receive(B, make_elite(np.zeros(DIM), -3.0)) == []  # its claim will hold: scored -3 below
    d.step(done=scored(-30.0, [-10.0, -20.0]))  # nothing beats the resident
    assert (isl.best_fitness, isl.best_n) == (-10.0, 2)

    req = d.pending  # resident, centroid, B
    assert req.extras.shape == (3, DIM)
    effects = d.step(done=scored(champion(pop, 4, -1.0), [-10.0, -5.0, -3.0]))
    # the centroid beats the resident; B must beat the centroid's score, and does
    [acc] = of_type(effects, MigrantAccepted)
    assert (acc.src, acc.fitness, acc.replaced_fitness, acc.claimed_fitness) == (B, -3.0, -5.0, -3.0)
    # then the champion (exact on a deterministic problem) beats B and takes the resident's place
    np.testing.assert_array_equal(isl.best_params, req.candidates[4])
    assert (isl.best_fitness, isl.best_n, isl.best_last, isl.best_source) == (-1.0, 1, -1.0, "local")
    assert isl.best_last_seeds == req.seeds
    np.testing.assert_allclose(d.pending.candidates[0], np.zeros(DIM), atol=1e-6)  # B was still injected

    req = d.pending  # a champion or a centroid only equal to the resident does not replace it
    d.step(done=scored(champion(pop, 2, -1.0), [-1.0, -1.0]))
    np.testing.assert_array_equal(isl.best_params, req.extras[0])
    assert (isl.best_fitness, isl.best_n) == (-1.0, 2)


# ------------------------------------------------------------------------------------------------
# immigration: acceptance


def test_better_migrant_is_accepted_and_injected_into_the_optimizer():
    d = Driver(make_island())
    d.run(3)
    resident_f = d.island.best_fitness
    optimum = make_elite(np.zeros(DIM), 0.0)
    assert d.receive(B, optimum) == []  # queued, scored with the next generation asked
    d.step()
    req = d.pending  # the generation that carries the migrant, after the resident and the centroid
    assert req.extras.shape == (3, DIM)
    np.testing.assert_array_equal(req.extras[2], np.zeros(DIM))
    ref = float(sphere(req.extras[:2]).max())
    assert ref >= resident_f
    effects = d.step()
    [acc] = of_type(effects, MigrantAccepted)
    assert (acc.src, acc.generation) == (B, req.generation)
    assert acc.fitness == 0.0 and acc.claimed_fitness == 0.0
    assert acc.replaced_fitness == ref  # the resident or the centroid, whichever is better on these seeds
    assert d.island.best_source == B
    np.testing.assert_array_equal(d.island.best_params, np.zeros(DIM))
    assert d.island.best_fitness == 0.0
    # pycma puts the injected migrant first in the very next population
    np.testing.assert_allclose(d.pending.candidates[0], np.zeros(DIM), atol=1e-6)
    assert d.island.counters.accepted == 1


def test_migrant_claiming_no_better_than_resident_is_not_evaluated():
    d = Driver(make_island())
    d.run(2)
    worse = np.full(DIM, 10.0)
    effects = d.receive(B, make_elite(worse, float(sphere(worse)[0])))
    [rej] = of_type(effects, MigrantRejected)
    assert (rej.src, rej.reason, rej.fitness) == (B, "not_better", None)
    assert d.pending.extras.shape == (2, DIM)
    d.step()
    assert d.pending.extras.shape == (2, DIM)  # resident and centroid only: never queued


def test_noisy_migrants_wait_for_the_next_assessment_round_and_are_judged_on_its_seeds():
    """Stochastic problem: claims are not checked; migrants queue until the generation that completes
    the interval, then are scored on its fresh seeds next to the resident on exactly those seeds."""
    d = Driver(make_island(deterministic=False, interval=2))

    def score(req: Evaluate) -> EvaluationDone:
        cand = noisy(req.candidates, req.seeds) - 1000.0
        extra = noisy(req.extras, req.extra_seeds) if len(req.extras) else np.zeros(0)
        if len(extra) and d.island.best_params is not None:
            extra[1] = -1e6  # the centroid never wins here: the resident is the reference
        return EvaluationDone(req.generation, cand, extra)

    d.step(done=score)
    d.step(done=score)  # generation 1 completes the interval: the centroid (x0) is the resident
    resident = d.island.best_params.copy()
    r = float(sphere(resident)[0])

    def at_value(v: float) -> np.ndarray:  # same sphere distance as the resident, minus / plus 0.5
        return np.full(DIM, math.sqrt(-v / DIM), dtype=np.float32)

    worse, better = at_value(r - 0.5), at_value(r + 0.5)
    # claims above the resident and within claim_slack of what they measure: honest ones
    assert d.receive(B, make_elite(worse, 0.0)) == []
    assert d.receive(C, make_elite(better, 0.0)) == []
    assert d.pending.extras.shape == (0, DIM)  # generation 2 was asked before they came, and has no round
    effects = d.step(done=score)
    assert of_type(effects, MigrantAccepted) == of_type(effects, MigrantRejected) == []  # still waiting
    c = d.island.counters
    assert (c.received, c.accepted, c.rejected) == (2, 0, {})
    req = d.pending  # generation 3 completes the next interval
    assert req.extras.shape == (4, DIM)  # resident, centroid, then the migrants in arrival order
    np.testing.assert_array_equal(req.extras[0], resident)
    np.testing.assert_array_equal(req.extras[2:], [worse, better])
    expected = noisy(req.extras, req.extra_seeds)
    effects = d.step(done=score)
    [rej] = of_type(effects, MigrantRejected)
    [acc] = of_type(effects, MigrantAccepted)
    assert (rej.src, rej.reason, rej.claimed_fitness, rej.fitness) == (B, "not_better", 0.0, expected[2])
    assert (acc.src, acc.fitness, acc.replaced_fitness) == (C, expected[3], expected[0])
    assert d.island.best_source == C
    np.testing.assert_array_equal(d.island.best_params, better.astype(np.float64))
    assert (d.island.best_fitness, d.island.best_n, d.island.best_last_seeds) == (expected[3], 1, req.extra_seeds)
    np.testing.assert_allclose(d.pending.candidates[0], better, atol=1e-6)  # injected
    assert counters_add_up(d.island)


def test_noisy_migrant_arriving_before_the_first_resident_competes_with_the_centroid():
    d = Driver(make_island(deterministic=False, interval=3))
    assert d.receive(B, make_elite(np.zeros(DIM), -50.0)) == []  # no resident: no pre-check on the claim
    d.step(done=scored(0.0))
    d.step(done=scored(0.0))
    req = d.pending
    np.testing.assert_array_equal(req.extras, [f32(d.island.opt.mean), np.zeros(DIM)])
    effects = d.step(done=scored(0.0, [-7.0, -6.0]))
    [acc] = of_type(effects, MigrantAccepted)
    assert (acc.src, acc.fitness, acc.replaced_fitness, acc.claimed_fitness) == (B, -6.0, -7.0, -50.0)
    assert (d.island.best_fitness, d.island.best_n, d.island.best_source) == (-6.0, 1, B)
    np.testing.assert_array_equal(d.island.best_params, np.zeros(DIM))


@pytest.mark.parametrize("scale", [1.0, 1000.0])
@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "noisy"])
def test_deterministic_acceptance_needs_more_than_rounding_noise(deterministic, scale):
    """Deterministic: a migrant better than the reference by 5e-7 (relative) is the same point up to
    float32 rounding, so islands sitting at one optimum do not trade it back and forth: not_better;
    2e-6 is better. Noisy: any strict improvement counts."""
    d = Driver(make_island(deterministic=deterministic, interval=1))
    ref = -1.0 * scale
    tiny, real = ref + 5e-7 * scale, ref + 2e-6 * scale
    d.step(done=scored(-1e9, [ref]))  # the centroid becomes the resident at `ref`
    assert d.island.best_fitness == ref
    assert d.receive(B, make_elite(np.zeros(DIM), tiny)) == []  # claims equal to what they score
    assert d.receive(C, make_elite(np.ones(DIM), real)) == []
    d.step(done=scored(-1e9, [ref, -1e9]))  # asked before they came
    effects = d.step(done=scored(-1e9, [ref, -1e9, tiny, real]))
    outcomes = [(e.src, "accepted", e.fitness, e.replaced_fitness) if isinstance(e, MigrantAccepted)
                else (e.src, e.reason, e.fitness) for e in effects if isinstance(e, (MigrantAccepted, MigrantRejected))]
    if deterministic:
        assert outcomes == [(B, "not_better", tiny), (C, "accepted", real, ref)]
    else:
        assert outcomes == [(B, "accepted", tiny, ref), (C, "accepted", real, tiny)]
    assert (d.island.best_source, d.island.best_fitness) == (C, real)


def test_accept_any_takes_a_worse_migrant():
    d = Driver(make_island(accept_only_better=False))
    pop = d.island.opt.popsize
    d.run(3)
    before = d.island.best_fitness
    worse = np.full(DIM, 10.0, dtype=np.float32)
    f_worse = float(sphere(worse)[0])
    assert f_worse < before
    assert d.receive(B, make_elite(worse, f_worse)) == []  # no pre-check on the claim
    d.step()
    req = d.pending
    # candidates scored far below the migrant, so no champion takes its place in the same round
    effects = d.step(done=lambda r: EvaluationDone(r.generation, np.full(pop, -1e9), sphere(r.extras)))
    [acc] = of_type(effects, MigrantAccepted)
    assert (acc.src, acc.fitness) == (B, f_worse)
    assert acc.replaced_fitness == float(sphere(req.extras[:2]).max()) > acc.fitness
    assert d.island.best_fitness == f_worse
    assert d.island.best_source == B
    np.testing.assert_array_equal(d.island.best_params, worse)

# ------------------------------------------------------------------------------------------------
# immigration: claim check and validation


@pytest.mark.parametrize("accept_only_better", [True, False])
def test_lying_claim_on_a_deterministic_problem_is_claim_mismatch(accept_only_better):
    d = Driver(make_island(accept_only_better=accept_only_better))
    d.run(2)
    # truly the optimum, which would be accepted, but it claims more than it is
    liar = make_elite(np.zeros(DIM), 5.0)
    assert d.receive(B, liar) == []
    d.step()
    effects = d.step()
    [rej] = of_type(effects, MigrantRejected)
    assert (rej.src, rej.reason, rej.claimed_fitness, rej.fitness) == (B, "claim_mismatch", 5.0, 0.0)
    assert of_type(effects, MigrantAccepted) == []
    assert d.island.best_source == "local"
    assert d.island.counters.rejected == {"claim_mismatch": 1}


def test_claim_within_float32_precision_holds():
    d = Driver(make_island())
    d.run(2)
    p = np.full(DIM, 0.1, dtype=np.float32)  # not exactly 0.1: the claim is computed at float32
    assert d.receive(B, make_elite(p, float(sphere(p)[0]))) == []
    d.step()
    effects = d.step()
    assert [e.src for e in of_type(effects, MigrantAccepted)] == [B]


def test_lying_claim_on_a_stochastic_problem_is_judged_on_merit():
    d = Driver(make_island(deterministic=False, interval=2))
    d.run(2, fn=sphere)  # generation 1 completes the interval: a resident
    assert d.receive(B, make_elite(np.zeros(DIM), 5.0)) == []
    d.step()
    effects = d.step()
    assert [e.src for e in of_type(effects, MigrantAccepted)] == [B]
    assert "claim_mismatch" not in reasons(effects)


@pytest.mark.parametrize(
    ("src", "elite", "reason"),
    [
        (B, make_elite(np.zeros(DIM), 0.0, problem="rastrigin"), "wrong_experiment"),
        (B, make_elite(np.zeros(DIM + 1), 0.0, experiment=exp_id("sphere", DIM)), "wrong_dimension"),
        (A, make_elite(np.zeros(DIM), 0.0), "own_message"),
    ],
    ids=["wrong_experiment", "wrong_dimension", "own_message"],
)
def test_invalid_migrant_is_rejected_with_its_reason(src, elite, reason):
    d = Driver(make_island(self_id=A))
    d.run(1)
    effects = d.receive(src, elite)
    assert effects == [MigrantRejected(src, reason, 0.0, None)]
    assert d.island.counters.received == 1
    assert d.island.counters.rejected == {reason: 1}
    d.step()
    assert d.pending.extras.shape == (2, DIM)  # only the resident and the centroid: nothing was queued


def test_migration_disabled_rejects_everything_and_never_publishes():
    d = Driver(make_island(enabled=False, interval=1, min_publish_interval_s=0.0))
    effects = d.run(20)
    assert of_type(effects, PublishMigrant) == []
    assert d.island.counters.sent == 0
    # checked first, before anything else about the migrant
    for src in (B, A):
        assert reasons(d.receive(src, make_elite(np.zeros(DIM), 0.0))) == ["migration_disabled"]
    assert d.island.counters.rejected == {"migration_disabled": 2}
    effects = d.run(2)
    assert of_type(effects, MigrantAccepted) == []


def test_max_sources_rejects_as_queue_full_and_latest_per_sender_wins():
    d = Driver(make_island(max_pending=2, max_sources=2))
    d.run(1)
    p1, p2, p3 = (np.full(DIM, v, dtype=np.float32) for v in (0.3, 0.2, 0.1))
    assert d.receive(B, make_elite(p1, float(sphere(p1)[0]))) == []
    assert d.receive(C, make_elite(p2, float(sphere(p2)[0]))) == []
    assert reasons(d.receive(D, make_elite(p3, float(sphere(p3)[0])))) == ["queue_full"]
    # a newer migrant from B replaces B's older one (not queue_full); the older is counted
    effects = d.receive(B, make_elite(p3, float(sphere(p3)[0])))
    assert effects == [MigrantRejected(B, "superseded", float(sphere(p1)[0]))]
    d.step()
    extras = d.pending.extras
    assert extras.shape == (4, DIM)  # resident + centroid + C's + B's latest
    np.testing.assert_array_equal(extras[2], p2)
    np.testing.assert_array_equal(extras[3], p3)
    d.step()
    assert d.island.counters.received == 4
    assert d.island.counters.rejected["queue_full"] == 1
    assert counters_add_up(d.island)


# ------------------------------------------------------------------------------------------------
# topologies


def test_ring_takes_migrants_only_from_the_predecessor_and_reforms_when_a_peer_leaves():
    d = Driver(make_island(self_id=C, topology="ring"), peers={A, B, C, D, E})
    optimum = make_elite(np.zeros(DIM), 0.0)
    assert migration.ring_predecessor(C, {A, B, D, E}) == B
    for src in (A, D, E):
        assert reasons(d.receive(src, optimum)) == ["topology"]
    assert d.receive(B, optimum) == []

    d.peers({A, C, D, E})  # B left: A is now just before C
    assert d.receive(A, optimum) == []
    for src in (D, E):
        assert reasons(d.receive(src, optimum)) == ["topology"]
    assert d.island.counters.rejected == {"topology": 5}


def test_ring_wraps_around_from_the_first_id_to_the_last():
    d = Driver(make_island(self_id=A, topology="ring"), peers={A, B, C, D})
    optimum = make_elite(np.zeros(DIM), 0.0)
    for src in (B, C):
        assert reasons(d.receive(src, optimum)) == ["topology"]
    assert d.receive(D, optimum) == []


def test_ring_in_a_network_of_islands():
    islands = [make_island(self_id=PEER_IDS[i], seed=i, sigma=0.3 + 0.2 * i, topology="ring", interval=2,
                           min_publish_interval_s=0.0, accept_only_better=False) for i in range(5)]
    net = NetworkOfIslands(islands, sphere)
    net.start()
    net.run(8)

    def check(since: int) -> None:
        ids = sorted(net.ids)
        for i, isl in enumerate(net.islands):
            pred = ids[ids.index(isl.self_id) - 1]
            outcomes = [e for j, e in net.log[since:] if j == i and isinstance(e, (MigrantAccepted, MigrantRejected))]
            assert outcomes
            for e in outcomes:
                assert e.src != isl.self_id
                if e.src == pred:
                    assert isinstance(e, MigrantAccepted)  # accept-any: every considered migrant is taken
                else:
                    assert isinstance(e, MigrantRejected) and e.reason == "topology"

    check(0)
    net.remove(1)  # PEER_IDS[1] leaves; PEER_IDS[2]'s predecessor is now PEER_IDS[0]
    net.run(2)  # migrants queued from the old predecessor are still judged (queued: in flight: done)
    mark = len(net.log)
    net.run(8)
    check(mark)
    assert any(isinstance(e, MigrantAccepted) and e.src == PEER_IDS[0] and net.islands[j].self_id == PEER_IDS[2]
               for j, e in net.log[mark:])


def test_random_topology_takes_only_the_drawn_k_and_redraws_every_interval():
    peers = {B, C, D, E, F, G}
    d = Driver(make_island(self_id=A, topology="random", random_k=2, interval=3), seed=4)
    assert d.island.random_sources == frozenset()  # started alone
    d.peers(peers | {A})
    drawn = d.island.random_sources
    assert len(drawn) == 2 and drawn <= peers
    for src in sorted(peers):
        expected = [] if src in drawn else ["topology"]
        assert reasons(d.receive(src, make_elite(np.zeros(DIM), 0.0))) == expected

    history = [drawn]
    for _ in range(15):
        d.step()
        history.append(d.island.random_sources)
        assert len(history[-1]) == 2 and history[-1] <= peers
        if d.island.generation % 3:
            assert history[-1] == history[-2]  # only redrawn at migration rounds
    assert len(set(history)) >= 3

    # a drawn source leaving forces a redraw among those still live; a bystander leaving does not
    now = d.island.random_sources
    gone = sorted(now)[0]
    d.peers(peers - {gone})
    assert gone not in d.island.random_sources and len(d.island.random_sources) == 2
    kept = d.island.random_sources
    bystander = sorted(peers - {gone} - kept)[0]
    d.peers(peers - {gone, bystander})
    assert d.island.random_sources == kept


def test_random_topology_with_fewer_live_peers_than_k_takes_them_all():
    d = Driver(make_island(self_id=A, topology="random", random_k=3))
    d.peers({B})
    assert d.island.random_sources == {B}
    d.peers({B, C})  # still fewer than k: the newcomer is taken as well
    assert d.island.random_sources == {B, C}
    assert reasons(d.receive(D, make_elite(np.zeros(DIM), 0.0))) == ["topology"]
    assert d.receive(C, make_elite(np.zeros(DIM), 0.0)) == []


# ------------------------------------------------------------------------------------------------
# emigration


def publish_generations(effects: list[Effect]) -> list[int]:
    """Generation numbers at which a PublishMigrant came out."""
    out, gen = [], 0
    for e in effects:
        if isinstance(e, GenerationCompleted):
            gen = e.generation
        elif isinstance(e, PublishMigrant):
            out.append(gen)
    return out


def test_publishes_every_interval_generations():
    d = Driver(make_island(interval=2, min_publish_interval_s=1.0, publish_only_new=False, network_rate=0.0), dt=1.0,
               peers={B})
    effects: list[Effect] = []
    for _ in range(12):
        step = d.step()
        effects.extend(step)
        for pub in of_type(step, PublishMigrant):
            e = pub.elite
            isl = d.island
            assert e.experiment_id == isl.experiment_id and e.generation == isl.generation
            assert e.params.dtype == np.dtype("<f4")
            np.testing.assert_array_equal(e.params, isl.best_params)
            assert e.fitness == isl.best_last and e.seeds == isl.best_last_seeds
            assert e.algorithm == "cmaes" and e.settings["popsize"] == isl.opt.popsize
    assert publish_generations(effects) == [2, 4, 6, 8, 10, 12]
    assert d.island.counters.sent == 6


def test_noisy_island_publishes_the_resident_its_assessment_round_just_scored():
    """No resident, nothing to publish, until the first round (generation 3 here); each publication
    comes right after a round and claims the resident's score on that round's fresh seeds."""
    d = Driver(make_island(deterministic=False, interval=3, min_publish_interval_s=0.0, reeval_episodes=2,
                           network_rate=0.0), peers={B})
    effects: list[Effect] = []
    for _ in range(9):
        req = d.pending
        step = d.step()
        effects.extend(step)
        for pub in of_type(step, PublishMigrant):
            e, isl = pub.elite, d.island
            assert (e.fitness, e.seeds) == (isl.best_last, req.extra_seeds) and len(e.seeds) == 2
            np.testing.assert_array_equal(e.params, isl.best_params)
    assert publish_generations(effects) == [3, 6, 9]
    assert d.island.counters.sent == 3


def test_publishing_is_rate_limited_by_the_clock_and_late_emissions_are_not_skipped():
    # fast generations (1 s each), at most one publication per 5 s: due at 2, 4, 6, ...,
    # sent at 2, then as soon as 5 s have passed: 7, 12, 17
    d = Driver(make_island(interval=2, min_publish_interval_s=5.0), dt=1.0, peers={B})
    assert publish_generations(d.run(18)) == [2, 7, 12, 17]
    # slow generations: the interval binds, not the clock
    d = Driver(make_island(interval=2, min_publish_interval_s=5.0), dt=10.0, peers={B})
    assert publish_generations(d.run(8)) == [2, 4, 6, 8]


def test_an_island_alone_publishes_nothing_until_a_peer_is_live():
    d = Driver(make_island(interval=3, min_publish_interval_s=0.0))
    assert publish_generations(d.run(4)) == []
    assert d.island.counters.sent == 0
    d.peers({A, B})
    assert publish_generations(d.run(1)) == [5]  # the emission due since generation 3 goes out now
    d.peers({A})
    assert publish_generations(d.run(4)) == []


# ------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_round_trip_continues_identically():
    kw = dict(interval=2, min_publish_interval_s=0.0)
    d = Driver(make_island(seed=3, **kw), seed=11)
    d.run(4)
    assert d.receive(B, make_elite(np.zeros(DIM), 0.0)) == []
    d.run(2)  # B accepted
    assert d.island.best_source == B
    d.receive(C, make_elite(np.full(DIM, 9.0), 1e9))  # a liar, judged before the checkpoint
    d.run(3)

    blob = msgpack.packb(d.island.to_checkpoint(), use_bin_type=True)  # as the store writes it
    data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    restored = Island.from_checkpoint(data, self_id=A, policy=MigrationPolicy(**kw), episodes=1, deterministic=True)
    # another rng on purpose: CMA-ES samples from its own checkpointed generator, the rng only draws seeds
    r = Driver(restored, seed=99, dt=d.dt, now=d.now)

    for attr in ("generation", "evaluations", "best_fitness", "best_n", "best_last", "best_last_seeds",
                 "best_source", "mean_fitness"):
        assert getattr(restored, attr) == getattr(d.island, attr), attr
    np.testing.assert_array_equal(restored.best_params, d.island.best_params)
    assert vars(restored.counters) == vars(d.island.counters)
    assert counters_add_up(restored)
    np.testing.assert_array_equal(r.pending.candidates, d.pending.candidates)  # the population in flight

    for _ in range(8):
        d.step()
        r.step()
        assert r.pending.generation == d.pending.generation
        np.testing.assert_array_equal(r.pending.candidates, d.pending.candidates)
        np.testing.assert_array_equal(r.pending.extras, d.pending.extras)
        assert r.island.best_fitness == d.island.best_fitness
        assert r.island.opt.sigma == d.island.opt.sigma


def test_noisy_checkpoint_keeps_the_assessment_schedule_and_the_running_mean():
    kw = dict(interval=3)
    d = Driver(make_island(deterministic=False, seed=3, **kw), seed=11)

    def score(req: Evaluate) -> EvaluationDone:  # the resident re-scores -generation; the rest far worse
        extra = np.full(len(req.extras), -1000.0)
        extra[:1] = -float(req.generation)
        return EvaluationDone(req.generation, np.full(len(req.candidates), -1000.0), extra)

    for _ in range(4):
        d.step(done=score)  # the centroid became the resident at generation 2, scoring -2
    assert (d.island.best_fitness, d.island.best_n) == (-2.0, 1)
    assert d.receive(B, make_elite(np.zeros(DIM), 0.0)) == []  # waits for generation 5's round
    assert d.pending.extras.shape == (0, DIM)
    data = msgpack.unpackb(msgpack.packb(d.island.to_checkpoint(), use_bin_type=True), raw=False,
                           strict_map_key=False)
    assert data["counters"]["received"] == 0  # the queued migrant is not checkpointed
    restored = Island.from_checkpoint(data, self_id=A, policy=MigrationPolicy(**kw), episodes=1,
                                      deterministic=False)
    r = Driver(restored, seed=99, dt=d.dt, now=d.now)
    assert r.pending.generation == 4 and r.pending.extras.shape == (0, DIM)
    np.testing.assert_array_equal(r.pending.candidates, d.pending.candidates)

    d.step(done=score)
    r.step(done=score)
    # generation 5 completes the interval on both; only the original still holds B
    np.testing.assert_array_equal(r.pending.extras, d.pending.extras[:2])
    assert d.pending.extras.shape == (3, DIM)
    d.step(done=score)  # B scores -1000 and is rejected
    r.step(done=score)
    for isl in (d.island, r.island):
        assert (isl.best_fitness, isl.best_n, isl.best_last) == (-3.5, 2, -5.0)  # mean of -2 and -5
        assert counters_add_up(isl)
    for _ in range(3):
        d.step(done=score)
        r.step(done=score)
        np.testing.assert_array_equal(r.pending.candidates, d.pending.candidates)
        np.testing.assert_array_equal(r.pending.extras, d.pending.extras)
    assert d.pending.generation == 9 and d.island.best_n == 3  # assessed at 2, 5 and 8


def test_checkpoint_drops_queued_migrants_from_the_received_count():
    d = Driver(make_island())
    d.run(2)
    d.receive(B, make_elite(np.zeros(DIM), 0.0))
    d.step()  # B in flight
    d.receive(C, make_elite(np.zeros(DIM), 0.0))  # C queued
    assert d.island.counters.received == 2
    data = d.island.to_checkpoint()
    assert data["counters"]["received"] == 0
    assert d.island.counters.received == 2  # the live island is untouched


# ------------------------------------------------------------------------------------------------
# counters and our own errors


@pytest.mark.parametrize(("deterministic", "interval"), [(True, 1), (False, 3)], ids=["deterministic", "noisy"])
def test_counters_add_up_once_nothing_is_pending(deterministic, interval):
    islands = [make_island(self_id=PEER_IDS[i], seed=i, sigma=(0.1, 0.5, 1.0, 2.0)[i], interval=interval,
                           min_publish_interval_s=0.0, max_pending=2, deterministic=deterministic,
                           network_rate=0.0)
               for i in range(4)]
    net = NetworkOfIslands(islands, sphere, seed=5)
    net.start()
    net.run(25 * interval)
    net.deliver(B, make_elite(np.zeros(DIM), 3.0))  # a liar
    net.deliver(C, make_elite(np.zeros(DIM + 2), 0.0, experiment=exp_id("sphere", DIM)))
    # cut the gossip: every island has 3 sources and takes 2 a round, so two more assessment rounds
    # judge everything queued or in flight, at most 2 * interval + 1 generations away
    for _ in range(2 * interval + 1):
        net.step(deliver=False)
    total_received = 0
    for isl in net.islands:
        c = isl.counters
        assert counters_add_up(isl), vars(c)
        total_received += c.received
    assert total_received > 50
    assert sum(isl.counters.accepted for isl in net.islands) == len(net.accepted())
    assert sum(sum(isl.counters.rejected.values()) for isl in net.islands) == len(net.rejected())
    all_reasons = set(reasons([e for _, e in net.log]))
    # claims are checked on deterministic problems only
    assert {"not_better", "wrong_dimension"} <= all_reasons
    assert ("claim_mismatch" in all_reasons) == deterministic


def test_evaluation_for_a_generation_never_requested_is_our_bug():
    isl = make_island()
    rng = np.random.default_rng(0)
    fit = np.zeros(isl.opt.popsize)
    with pytest.raises(LocalProtocolError, match="generation 0 not requested"):
        isl.handle(EvaluationDone(0, fit, np.zeros(0)), now=0.0, rng=rng)  # before start
    req = pending_evaluate(isl.start(now=0.0, rng=rng))
    with pytest.raises(LocalProtocolError, match="generation 5 not requested"):
        isl.handle(EvaluationDone(5, fit, np.zeros(0)), now=0.0, rng=rng)
    with pytest.raises(LocalProtocolError, match="wrong shape"):
        isl.handle(EvaluationDone(0, fit[:-1], np.zeros(1)), now=0.0, rng=rng)
    with pytest.raises(LocalProtocolError, match="wrong shape"):
        isl.handle(EvaluationDone(0, fit, np.zeros(0)), now=0.0, rng=rng)  # the centroid is missing
    with pytest.raises(LocalProtocolError, match="wrong shape"):
        isl.handle(EvaluationDone(0, fit, np.zeros(2)), now=0.0, rng=rng)
    nxt = pending_evaluate(isl.handle(evaluate(req, sphere), now=1.0, rng=rng))
    with pytest.raises(LocalProtocolError, match="generation 0 not requested"):  # answered already
        isl.handle(evaluate(req, sphere), now=1.0, rng=rng)
    assert nxt.generation == 1 and isl.generation == 1
    with pytest.raises(LocalProtocolError, match="already started"):
        isl.start(now=1.0, rng=rng)
    with pytest.raises(LocalProtocolError, match="cannot handle"):
        isl.handle(object(), now=1.0, rng=rng)  # type: ignore[arg-type]
    # noisy, between assessment rounds: no extras asked, none may come back
    isl = make_island(deterministic=False, interval=3)
    req = pending_evaluate(isl.start(now=0.0, rng=rng))
    assert req.extras.shape == (0, DIM)
    with pytest.raises(LocalProtocolError, match="wrong shape"):
        isl.handle(EvaluationDone(0, fit, np.zeros(1)), now=0.0, rng=rng)


def test_unknown_topology_and_best_elite_before_any_best_are_our_bugs():
    with pytest.raises(LocalProtocolError, match="unknown topology"):
        make_island(topology="star")
    with pytest.raises(LocalProtocolError, match="no best"):
        make_island().best_elite()


# ------------------------------------------------------------------------------------------------
# dynamics


SIGMAS = (0.05, 0.2, 0.5, 1.5)


def rastrigin_network(seed: int, *, migrate: bool, dim: int = 10) -> NetworkOfIslands:
    islands = []
    for i, sigma in enumerate(SIGMAS):
        x0 = np.random.default_rng([seed, 100 + i]).uniform(-3.0, 3.0, size=dim)
        islands.append(make_island(dim=dim, sigma=sigma, seed=10 * seed + i, self_id=PEER_IDS[i], problem="rastrigin",
                                   x0=x0, enabled=migrate, interval=10, min_publish_interval_s=0.0))
    net = NetworkOfIslands(islands, rastrigin, seed=seed)
    net.start()
    return net


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_migration_lifts_the_worst_island_on_rastrigin(seed):
    """4 heterogeneous islands, rastrigin dim 10, 100 generations, with vs. without migration.

    What holds (measured with the assessment rounds of resident, centroid and migrants): the worst
    island ends no worse with migration in 39 of 40 seeds 0..39 at exactly these settings (margin
    >= 0.99); the exception, seed 7, is a tie up to 5e-6 (both worst islands end in the same local
    minimum). It ends better in 24 of 24 seeds at interval 20 (margin >= 2.75) and at 150 generations
    (margin >= 13.9). What does NOT hold per seed, so it is not asserted: the network's *best* island
    is at least as good with migration in only 17 of those 40 seeds (margins -24.8 .. +16.6; 12 and 16
    of 24 in the other settings): migrants pull every island into the current best basin, including
    the wide-sigma island that would have found a better one alone.
    """
    with_mig = rastrigin_network(seed, migrate=True)
    without = rastrigin_network(seed, migrate=False)
    with_mig.run(100)
    without.run(100)
    assert with_mig.accepted(), "no migrant was ever accepted"
    assert without.accepted() == [] and without.effects(PublishMigrant) == []
    worst_with = min(isl.best_fitness for isl in with_mig.islands)
    worst_without = min(isl.best_fitness for isl in without.islands)
    print(f"seed={seed} worst with={worst_with:.2f} without={worst_without:.2f} "
          f"best with={with_mig.best_fitness:.2f} without={without.best_fitness:.2f}")
    assert worst_with >= worst_without


# ------------------------------------------------------------------------------------------------
# how an accepted migrant enters the optimizer, and the noisy acceptance margin


@pytest.mark.parametrize("entry", ["inject", "adopt"])
def test_accepted_migrant_enters_the_optimizer_by_inject_or_adopt(entry):
    d = Driver(make_island(entry=entry))
    d.run(3)
    target = np.full(DIM, 0.25, dtype=np.float32)
    assert d.receive(B, make_elite(target, float(sphere(target)[0]))) == []
    d.step()  # the generation already asked for; the migrant is scored in the next one
    effects = d.step()
    assert of_type(effects, MigrantAccepted)
    nxt = d.pending.candidates
    if entry == "inject":  # pycma puts the injected point first in the next population
        np.testing.assert_allclose(nxt[0], target, atol=1e-6)
    else:  # the mean moved: the next population is centred on the migrant
        np.testing.assert_allclose(d.island.opt.mean, target.astype(np.float64), atol=1e-12)
        assert not np.allclose(nxt[0], target, atol=1e-6)


def test_noisy_accept_margin_requires_a_clear_lead():
    def island_with(margin: float) -> tuple[Driver, list]:
        d = Driver(make_island(deterministic=False, interval=1, accept_margin=margin))
        pop = d.island.opt.popsize
        # round 1: the centroid becomes the resident at -10
        d.step(done=lambda r: EvaluationDone(r.generation, np.full(pop, -50.0), np.array([-10.0])))
        elite = make_elite(np.full(DIM, 0.1), -5.0)  # an honest claim (within claim_slack of -6)
        d.receive(B, elite)  # the next round was already asked for: the migrant waits one more
        d.step(done=lambda r: EvaluationDone(r.generation, np.full(pop, -50.0), np.array([-10.0, -11.0])))
        # round 3: resident -10, centroid -11, migrant -6 (a lead of 4)
        effects = d.step(done=lambda r: EvaluationDone(r.generation, np.full(pop, -50.0),
                                                      np.array([-10.0, -11.0, -6.0])))
        return d, effects

    _, effects = island_with(5.0)
    assert reasons(effects) == ["not_better"] and not of_type(effects, MigrantAccepted)
    d, effects = island_with(3.0)
    [acc] = of_type(effects, MigrantAccepted)
    assert (acc.src, acc.fitness, acc.replaced_fitness) == (B, -6.0, -10.0)
    assert d.island.best_source == B


def test_a_peer_whose_claims_do_not_reproduce_is_banned_after_max_lies():
    d = Driver(make_island(max_lies=3))
    d.run(2)
    banned = []
    for k in range(3):
        liar = make_elite(np.full(DIM, 0.5 + k), 1e6)  # claims far better than it is
        d.receive(B, liar)
        d.step()
        effects = d.step()
        assert "claim_mismatch" in reasons(effects)
        banned += of_type(effects, PeerBanned)
    assert [(b.src, b.reason, b.lies) for b in banned] == [(B, "claim_mismatch", 3)]
    assert B in d.island.banned
    # from now on nothing from B is even queued; an honest peer still gets in
    assert reasons(d.receive(B, make_elite(np.zeros(DIM), 0.0))) == ["banned"]
    assert d.receive(C, make_elite(np.zeros(DIM), 0.0)) == []
    # the ban survives a restart
    restored = Island.from_checkpoint(d.island.to_checkpoint(), self_id=d.island.self_id,
                                      policy=d.island.policy, episodes=1, deterministic=True)
    assert restored.banned == {B} and restored.lies == {B: 3}


def test_network_budget_spaces_publishes_by_live_peers():
    """(live peers + 1) / network_rate seconds between publishes: bytes per node flat in N."""
    peers = set(PEER_IDS[1:10])  # 9 live peers + us = 10 -> one publish per 10 s at 1 elite/s
    d = Driver(make_island(interval=1, min_publish_interval_s=1.0, network_rate=1.0, publish_only_new=False),
               dt=1.0, peers=peers)
    assert d.island.publish_gap() == 10.0
    gens = publish_generations(d.run(40))
    assert gens == [1, 11, 21, 31]
    # a node sees few peers of a large network: the estimated size wins over the live peers
    d.island.handle(PeersChanged(frozenset({B}), network_size=40), now=d.now, rng=d.rng)
    assert d.island.publish_gap() == 40.0
    d2 = Driver(make_island(interval=1, min_publish_interval_s=1.0, network_rate=0.0, publish_only_new=False),
                dt=1.0, peers=peers)
    assert len(publish_generations(d2.run(40))) == 40  # budget off: the local floor only


def test_the_size_estimate_not_the_live_peers_sets_the_budget():
    """Sybils on the topic are live peers; the shell's estimate (core/netsize.py) does not count
    them yet: the gap follows the estimate, else any cheap identity would stretch it."""
    d = Driver(make_island(interval=1, min_publish_interval_s=1.0, network_rate=0.5, publish_only_new=False),
               dt=1.0)
    d.island.handle(PeersChanged(frozenset(PEER_IDS[1:10]), network_size=3), now=d.now, rng=d.rng)
    assert d.island.publish_gap() == 6.0  # 3 nodes / 0.5, not 10 / 0.5
    d.island.handle(PeersChanged(frozenset(PEER_IDS[1:10])), now=d.now, rng=d.rng)
    assert d.island.publish_gap() == 20.0  # no estimate (0): the live peers plus us


def test_publish_only_new_skips_repeats_and_migrant_copies():
    flat = lambda X: np.zeros(len(X))  # nothing ever improves on the first resident  # noqa: E731
    d = Driver(make_island(interval=1, min_publish_interval_s=1.0, network_rate=0.0), dt=1.0, peers={B})
    gens = publish_generations(d.run(12, flat))
    assert gens == [1, 5, 9]  # the unchanged resident again only every REPUBLISH_GAPS (4) gaps
    assert d.island.skipped_publishes == 9

    for topology, expect_publish in (("full", False), ("ring", True)):
        d = Driver(make_island(interval=1, min_publish_interval_s=1.0, network_rate=0.0, topology=topology,
                               accept_only_better=True), dt=1.0, peers={B})
        d.run(1)
        d.receive(B, make_elite(np.zeros(5), 0.0))  # the optimum: better than anything local
        effects = d.step() + d.step()  # queued, then assessed
        assert of_type(effects, MigrantAccepted) and d.island.best_source == B
        effects += d.run(3)
        echoed = [e for e in of_type(effects, PublishMigrant) if not np.any(e.elite.params)]
        assert bool(echoed) == expect_publish, topology
