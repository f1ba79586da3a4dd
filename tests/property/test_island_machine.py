"""Island invariants under arbitrary interleavings: a hypothesis ``RuleBasedStateMachine``.

One island (CMA-ES, negated sphere, dim 5, deterministic) is driven by three rules: complete the
pending generation, receive a migrant (random params, random or truthful claim, a random sender
from a small set that includes the island's own id), and peers changed (a random subset). A small
model of the migrant queue is kept alongside, so the ``Evaluate`` effects, the outcomes and the
counters are all checked against it. Hypothesis prints the failing rule sequence and its seed.
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
from gaia_p2p.core.optimizer import make_optimizer
from gaia_p2p.core.types import Elite

DIM = 5
EXP = experiment_id(ProblemConfig(name="sphere", dim=DIM))
SELF = "12D3KooWCCC"
OTHERS = ("12D3KooWAAA", "12D3KooWBBB", "12D3KooWDDD", "12D3KooWEEE")
SOURCES = (SELF, *OTHERS)
RECEIPT_REASONS = {"own_message", "topology", "not_better", "queue_full"}
OUTCOME_REASONS = {"claim_mismatch", "not_better"}


def sphere(X: np.ndarray) -> np.ndarray:
    """Negated sphere, row by row with ``math.fsum``: bit-identical whatever the batch it is in."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.array([-math.fsum(float(v) * float(v) for v in row) for row in X], dtype=np.float64)


def claim_holds(claimed: float, measured: float) -> bool:
    return abs(claimed - measured) <= CLAIM_TOLERANCE * max(1.0, abs(claimed), abs(measured))


class IslandMachine(RuleBasedStateMachine):
    @initialize(
        topology=st.sampled_from(TOPOLOGIES),
        accept_only_better=st.booleans(),
        max_pending=st.integers(1, 3),
        interval=st.integers(1, 3),
        random_k=st.integers(1, 3),
        seed=st.integers(0, 2**32 - 1),
    )
    def start(self, topology, accept_only_better, max_pending, interval, random_k, seed):
        self.policy = MigrationPolicy(interval=interval, accept_only_better=accept_only_better, topology=topology,
                                      random_k=random_k, max_pending=max_pending, min_publish_interval_s=0.0)
        opt = make_optimizer("cmaes", DIM, sigma=0.5, popsize=None, seed=seed, x0=np.full(DIM, 1.5))
        self.popsize = opt.popsize
        self.island = Island(optimizer=opt, experiment_id=EXP, self_id=SELF, policy=self.policy, episodes=1,
                             deterministic=True)
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        [self.req] = self.island.start(now=self.now, rng=self.rng)
        self.queued: dict[str, Elite] = {}  # model of the pending queue, in order
        self.in_flight: list[tuple[str, Elite]] = []  # model: migrants in the Evaluate now pending
        self.last_best = -math.inf

    # ------------------------------------------------------------------ rules

    @rule()
    def complete_generation(self):
        req, isl = self.req, self.island
        assert isinstance(req, Evaluate)
        had_resident = isl.best_params is not None
        fit, extra = sphere(req.candidates), sphere(req.extras)
        ref = extra[0] if had_resident else -math.inf
        self.now += 1.0
        effects = isl.handle(EvaluationDone(req.generation, fit, extra), now=self.now, rng=self.rng)

        # one outcome per migrant in flight, in order, as the acceptance rule says
        outcomes = [e for e in effects if isinstance(e, (MigrantAccepted, MigrantRejected))]
        assert [e.src for e in outcomes] == [src for src, _ in self.in_flight]
        ref = max(ref, float(fit.max()))
        for e, (_, elite), f_m in zip(outcomes, self.in_flight, extra[int(had_resident):]):
            event(f"outcome: {e.reason if isinstance(e, MigrantRejected) else 'accepted'}")
            if not claim_holds(elite.fitness, f_m):
                assert isinstance(e, MigrantRejected) and e.reason == "claim_mismatch"
            elif self.policy.accept_only_better and not f_m > ref:
                assert isinstance(e, MigrantRejected) and e.reason == "not_better"
            else:
                assert isinstance(e, MigrantAccepted) and e.fitness == f_m and e.replaced_fitness == ref
                ref = f_m
        assert isl.best_fitness == ref

        self.req = effects[-1]
        assert isinstance(self.req, Evaluate) and self.req.generation == isl.generation
        self.in_flight, self.queued = list(self.queued.items()), {}
        # the next batch: the resident, then the queued migrants in arrival order
        expected = [isl.best_params, *(e.params.astype(np.float64) for _, e in self.in_flight)]
        np.testing.assert_array_equal(self.req.extras, np.array(expected))

    @rule(
        src=st.sampled_from(SOURCES),
        params=hnp.arrays(np.float32, DIM, elements=st.floats(-3, 3, width=32)),
        claim=st.one_of(st.none(), st.floats(-60, 1, allow_nan=False)),
    )
    def receive_migrant(self, src, params, claim):
        truthful = float(sphere(params)[0])
        elite = Elite(experiment_id=EXP, generation=1, fitness=truthful if claim is None else claim, seeds=(1,),
                      params=params, algorithm="cmaes", settings={})
        effects = self.island.handle(MigrantReceived(src, elite), now=self.now, rng=self.rng)
        reasons = [e.reason for e in effects]
        event(f"receipt: {reasons[0] if reasons else 'queued'}")
        assert all(isinstance(e, MigrantRejected) and e.src == src for e in effects)
        if src == SELF:
            assert reasons == ["own_message"]
        elif reasons in ([], ["superseded"]):  # queued; latest per sender wins
            assert (src in self.queued) == (reasons == ["superseded"])
            self.queued.pop(src, None)
            self.queued[src] = elite
        else:
            assert len(reasons) == 1 and reasons[0] in RECEIPT_REASONS, reasons

    @rule(peers=st.frozensets(st.sampled_from(SOURCES)))
    def peers_changed(self, peers):
        assert self.island.handle(PeersChanged(peers), now=self.now, rng=self.rng) == []
        assert self.island.live_peers == peers - {SELF}

    @rule()
    def drain(self):
        """Two generations with nothing arriving: every migrant has an outcome."""
        self.complete_generation()
        self.complete_generation()
        c = self.island.counters
        assert c.received == c.accepted + sum(c.rejected.values())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def population_size_is_fixed(self):
        assert self.req.candidates.shape == (self.popsize, DIM)
        assert self.island.opt.popsize == self.popsize

    @invariant()
    def best_never_worse_when_only_better_migrants_are_taken(self):
        best = self.island.best_fitness
        if self.policy.accept_only_better:
            assert best >= self.last_best
        self.last_best = best
        if self.island.best_params is not None:  # deterministic: the running mean is the value
            assert best == sphere(self.island.best_params)[0]

    @invariant()
    def queue_is_bounded(self):
        assert len(self.queued) <= self.policy.max_pending

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
