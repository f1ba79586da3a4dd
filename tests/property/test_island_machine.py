"""Island invariants under arbitrary interleavings: a hypothesis ``RuleBasedStateMachine``.

One island (CMA-ES, negated sphere, dim 5, run as a deterministic or as a noisy problem) is driven
by three rules: complete the pending generation, receive a migrant (random params, random or
truthful claim, a random sender from a small set that includes the island's own id), and peers
changed (a random subset). A small model of the migrant queue and of the assessment rounds is kept
alongside, so the ``Evaluate`` effects (which extras, on which seeds), the outcomes and the counters
are all checked against it. Hypothesis prints the failing rule sequence and its seed.

The sphere is exact whatever the seeds, so in noisy mode too the resident's running mean equals its
score and the best never gets worse when only better migrants are taken.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gaia_p2p.core.events import (
    Evaluate,
    EvaluationDone,
    MigrantAccepted,
    MigrantReceived,
    MigrantRejected,
    PeersChanged,
)
from gaia_p2p.core.experiment import ProblemConfig, experiment_id
from gaia_p2p.core.island import CLAIM_TOLERANCE, Island, MigrationPolicy
from gaia_p2p.core.migration import TOPOLOGIES
from gaia_p2p.core.optimizer import MAX_IPOP_DOUBLINGS, make_optimizer
from gaia_p2p.core.types import Elite

DIM = 5
EXP = experiment_id(ProblemConfig(name="sphere", dim=DIM))
SELF = "12D3KooWCCC"
OTHERS = ("12D3KooWAAA", "12D3KooWBBB", "12D3KooWDDD", "12D3KooWEEE")
SOURCES = (SELF, *OTHERS)
RECEIPT_REASONS = {"own_message", "topology", "not_better", "queue_full"}
OUTCOME_REASONS = {"claim_mismatch", "not_better", "claim_short"}
REEVAL = 2  # reeval_episodes in noisy mode


def sphere(X: np.ndarray) -> np.ndarray:
    """Negated sphere, row by row with ``math.fsum``: bit-identical whatever the batch it is in."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.array([-math.fsum(float(v) * float(v) for v in row) for row in X], dtype=np.float64)


def claim_holds(claimed: float, measured: float) -> bool:
    return abs(claimed - measured) <= CLAIM_TOLERANCE * max(1.0, abs(claimed), abs(measured))


def better(f: float, ref: float, deterministic: bool) -> bool:
    """Strictly better; on deterministic problems by more than rounding noise (relative)."""
    if deterministic and math.isfinite(ref):
        return f > ref + CLAIM_TOLERANCE * max(1.0, abs(ref))
    return f > ref


def f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float64)


class IslandMachine(RuleBasedStateMachine):
    @initialize(
        topology=st.sampled_from(TOPOLOGIES),
        accept_only_better=st.booleans(),
        max_pending=st.integers(1, 3),
        max_sources=st.integers(1, 5),
        interval=st.integers(1, 3),
        random_k=st.integers(1, 3),
        seed=st.integers(0, 2**32 - 1),
        deterministic=st.booleans(),
    )
    def start(self, topology, accept_only_better, max_pending, max_sources, interval, random_k, seed, deterministic):
        self.policy = MigrationPolicy(interval=interval, accept_only_better=accept_only_better, topology=topology,
                                      random_k=random_k, max_pending=max_pending, max_sources=max_sources,
                                      min_publish_interval_s=0.0,
                                      max_lies=0)  # bans are out of this model (tests/core/test_island.py)
        opt = make_optimizer("cmaes", DIM, sigma=0.5, popsize=None, seed=seed, x0=np.full(DIM, 1.5))
        self.popsize = opt.popsize
        self.deterministic = deterministic
        self.island = Island(optimizer=opt, experiment_id=EXP, self_id=SELF, policy=self.policy, episodes=1,
                             deterministic=deterministic, reeval_episodes=REEVAL)
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self.queued: dict[str, Elite] = {}  # model of the pending queue, in arrival order
        self.records: dict[str, list[int]] = {}  # model of the intake records: [held, failed, served round]
        self.intake_round = 0
        self.in_flight: list[tuple[str, Elite]] = []  # model: migrants in the Evaluate now pending
        self.round_has_resident = False  # model: whether the Evaluate now pending re-scores a resident
        self.last_best = -math.inf
        [self.req] = self.island.start(now=self.now, rng=self.rng)
        self.check_request()

    def assessing(self, generation: int) -> bool:
        return self.deterministic or (generation + 1) % self.policy.interval == 0

    def rank(self, src, arrival):
        return self.standing(src), self.records.get(src, (0, 0, -1))[2], arrival

    def offer(self, src, elite):
        """The fair intake's receipt: (source, reason) of what the migrant displaced or of itself."""
        out = []
        if src in self.queued:
            out.append((src, "superseded"))
            del self.queued[src]
        elif len(self.queued) >= self.policy.max_sources:
            worst = max(self.queued, key=lambda s: self.rank(s, list(self.queued).index(s)))
            if self.rank(worst, list(self.queued).index(worst)) <= self.rank(src, math.inf):
                return [(src, "queue_full")]
            out.append((worst, "queue_full"))
            del self.queued[worst]
        self.queued[src] = elite
        return out

    def standing(self, src):
        held, failed, _ = self.records.get(src, (0, 0, -1))
        return 2 if failed > held else 0 if held else 1  # suspect, trusted, unknown

    def take(self):
        """The fair intake's pick: up to max_pending sources, trusted before unknown before at most one
        suspect, then the source served longest ago, then arrival order (dicts keep insertion order)."""
        order = sorted(enumerate(self.queued), key=lambda ia: (self.standing(ia[1]),
                                                               self.records.get(ia[1], (0, 0, -1))[2], ia[0]))
        chosen, suspects = [], 0
        for _, src in order:
            if len(chosen) == self.policy.max_pending:
                break
            if self.standing(src) == 2:
                if suspects:
                    continue
                suspects += 1
            chosen.append((src, self.queued.pop(src)))
            self.records.setdefault(src, [0, 0, -1])[2] = self.intake_round
        self.intake_round += 1
        return chosen

    def check_request(self):
        """The ``Evaluate`` just asked for, against the model. In an assessment round: the resident
        (if any), the centroid, then the migrants the fair intake picks, on the candidates' seeds
        (deterministic) or on fresh ones (noisy); otherwise no extras, and the queue keeps waiting."""
        req, isl = self.req, self.island
        assert isinstance(req, Evaluate) and req.generation == isl.generation
        if not self.assessing(req.generation):
            assert req.extras.shape == (0, DIM)
            self.in_flight, self.round_has_resident = [], False
            return
        self.in_flight = self.take()
        self.round_has_resident = isl.best_params is not None
        expected = [*([isl.best_params] if self.round_has_resident else []), f32(isl.opt.mean),
                    *(e.params.astype(np.float64) for _, e in self.in_flight)]
        np.testing.assert_array_equal(req.extras, np.array(expected))
        if self.deterministic:
            assert req.extra_seeds == req.seeds
        else:
            assert len(req.extra_seeds) == REEVAL

    # ------------------------------------------------------------------ rules

    @rule()
    def complete_generation(self):
        req, isl = self.req, self.island
        assessing = self.assessing(req.generation)
        before = (isl.best_fitness, isl.best_n, None if isl.best_params is None else isl.best_params.copy())
        fit, extra = sphere(req.candidates), sphere(req.extras)
        self.now += 1.0
        effects = isl.handle(EvaluationDone(req.generation, fit, extra), now=self.now, rng=self.rng)

        # one outcome per migrant in flight, in order, as the acceptance rule says
        outcomes = [e for e in effects if isinstance(e, (MigrantAccepted, MigrantRejected))]
        assert [e.src for e in outcomes] == [src for src, _ in self.in_flight]
        if assessing:
            event(f"round: {'resident' if self.round_has_resident else 'no resident'}")
            k = int(self.round_has_resident)
            ref = float(extra[0]) if self.round_has_resident else -math.inf  # the resident's score
            if extra[k] > ref:  # the centroid, strictly better
                ref = float(extra[k])
            for e, (src, elite), f_m in zip(outcomes, self.in_flight, extra[k + 1:]):
                event(f"outcome: {e.reason if isinstance(e, MigrantRejected) else 'accepted'}")
                held = (claim_holds(elite.fitness, f_m) if self.deterministic
                        else f_m >= elite.fitness - self.policy.claim_slack)
                self.records[src][0 if held else 1] += 1
                if self.deterministic and not held:
                    assert isinstance(e, MigrantRejected) and e.reason == "claim_mismatch"
                elif self.policy.accept_only_better and not better(f_m, ref, self.deterministic):
                    assert isinstance(e, MigrantRejected) and e.fitness == f_m
                    assert e.reason == ("not_better" if held else "claim_short")
                else:
                    assert isinstance(e, MigrantAccepted) and e.fitness == f_m and e.replaced_fitness == ref
                    ref = f_m
            if self.deterministic and fit.max() > ref:  # only an exact champion competes
                ref = float(fit.max())
            assert isl.best_fitness == isl.best_last == ref  # exact scores: the running mean is the score
            assert isl.best_last_seeds == req.extra_seeds  # the candidates' seeds on deterministic problems
        else:
            # noisy, between rounds: whatever the champion scored, the resident is untouched
            assert (isl.best_fitness, isl.best_n) == before[:2]
            if before[2] is None:
                assert isl.best_params is None
            else:
                np.testing.assert_array_equal(isl.best_params, before[2])

        self.req = effects[-1]
        self.check_request()

    @rule(
        src=st.sampled_from(SOURCES),
        params=hnp.arrays(np.float32, DIM, elements=st.floats(-3, 3, width=32)),
        claim=st.one_of(st.none(), st.floats(-60, 1, allow_nan=False)),
    )
    def receive_migrant(self, src, params, claim):
        truthful = float(sphere(params)[0])
        self.receive(src, params, truthful if claim is None else claim)

    @rule(src=st.sampled_from(OTHERS), ulps=st.integers(0, 200), nudge=st.floats(0, 2e-6))
    def receive_near_copy_of_the_resident(self, src, ulps, nudge):
        """The resident (before there is one, the centroid), ``ulps`` float32 steps closer to the optimum
        in one coordinate, claiming a hair more than it scores (``nudge``, relative; above 1e-6 the
        claim is a lie): both sides of the deterministic rounding-noise margin, where islands sitting at
        one optimum meet."""
        isl = self.island
        params = (isl.opt.mean if isl.best_params is None else isl.best_params).astype(np.float32)
        for _ in range(ulps):  # near x0 (1.5), ~30 ulps cross the 1e-6 relative margin
            params[0] = np.nextafter(params[0], np.float32(0))
        truthful = float(sphere(params)[0])
        self.receive(src, params, truthful + nudge * max(1.0, abs(truthful)))

    def receive(self, src, params, claim):
        elite = Elite(experiment_id=EXP, generation=1, fitness=claim, seeds=(1,), params=params,
                      algorithm="cmaes", settings={})
        effects = self.island.handle(MigrantReceived(src, elite), now=self.now, rng=self.rng)
        reasons = [e.reason for e in effects]
        event(f"receipt: {reasons[0] if reasons else 'queued'}")
        assert all(isinstance(e, MigrantRejected) for e in effects)
        if src == SELF:
            assert reasons == ["own_message"] and effects[0].src == src
        elif len(effects) == 1 and effects[0].src == src and reasons[0] in RECEIPT_REASONS - {"queue_full"}:
            pass  # turned away before the intake
        else:  # the intake: latest per sender wins, a full table takes only a better-ranked newcomer
            assert [(e.src, e.reason) for e in effects] == self.offer(src, elite)

    @rule(peers=st.frozensets(st.sampled_from(SOURCES)))
    def peers_changed(self, peers):
        assert self.island.handle(PeersChanged(peers), now=self.now, rng=self.rng) == []
        assert self.island.live_peers == peers - {SELF}

    @rule()
    def drain(self):
        """Generations with nothing arriving until every migrant has an outcome: the one in flight,
        then one assessment round per queued migrant at most (one per generation when every
        generation is one, every interval in noisy mode)."""
        rounds = len(self.queued) + 2
        for _ in range(rounds if self.deterministic else rounds * self.policy.interval):
            self.complete_generation()
        assert not self.queued and not self.in_flight
        c = self.island.counters
        assert c.received == c.accepted + sum(c.rejected.values())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def population_size_changes_only_by_ipop_restarts(self):
        # fixed but for IPOP: each restart (pycma's own stop criteria) doubles it, nothing else does
        opt = self.island.opt
        assert opt.popsize == self.popsize * 2 ** min(opt.restart_count, MAX_IPOP_DOUBLINGS)
        assert self.req.candidates.shape == (opt.popsize, DIM)

    @invariant()
    def best_never_worse_when_only_better_migrants_are_taken(self):
        best = self.island.best_fitness
        if self.policy.accept_only_better:
            assert best >= self.last_best
        self.last_best = best
        if self.island.best_params is not None:  # deterministic: the running mean is the value
            assert best == sphere(self.island.best_params)[0]

    @invariant()
    def noisy_island_has_no_resident_before_its_first_round(self):
        if not self.deterministic and self.island.generation < self.policy.interval:
            assert self.island.best_params is None and self.island.best_n == 0
        if self.island.generation > 0 and (self.deterministic or self.island.generation >= self.policy.interval):
            assert self.island.best_params is not None and self.island.best_n >= 1

    @invariant()
    def queue_is_bounded(self):
        assert len(self.island.intake) == len(self.queued) <= self.policy.max_sources
        assert len(self.island.intake.records) <= self.policy.max_records

    @invariant()
    def counters_are_consistent(self):
        c = self.island.counters
        assert c.received == c.accepted + sum(c.rejected.values()) + len(self.queued) + len(self.in_flight)
        assert set(c.rejected) <= RECEIPT_REASONS | OUTCOME_REASONS | {"superseded"}

    @invariant()
    def random_sources_are_k_live_peers(self):
        if self.policy.topology == "random":
            live = self.island.live_peers
            assert self.island.random_sources <= live
            assert len(self.island.random_sources) == min(self.policy.random_k, len(live))


IslandMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestIslandMachine = IslandMachine.TestCase
