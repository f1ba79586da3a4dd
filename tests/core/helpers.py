"""In-memory drivers for ``gaia_p2p.core.island``: no trio, no sockets, no clock.

``NetworkOfIslands`` wires N islands through a gossip list, as h11's ``ConnectionPair`` puts a fake
link between two connections: every ``step`` each island's pending ``Evaluate`` is scored with a
test function, the effects are collected, and every ``PublishMigrant`` is delivered to every other
island as ``MigrantReceived(src=<publisher id>)``. Time is a fake ``now`` advanced by ``dt`` per
step; each island has its own seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gaia_p2p.core.events import (
    Effect,
    Evaluate,
    EvaluationDone,
    MigrantAccepted,
    MigrantReceived,
    MigrantRejected,
    PeersChanged,
    PublishMigrant,
)
from gaia_p2p.core.experiment import ProblemConfig, experiment_id
from gaia_p2p.core.island import Island, MigrationPolicy
from gaia_p2p.core.optimizer import make_optimizer
from gaia_p2p.core.types import Elite

Fitness = Callable[[np.ndarray], np.ndarray]

# Base58btc-looking peer ids (no 0, O, I, l), already in sorted (ASCII) order.
PEER_IDS = tuple(f"12D3KooW{c}{c}{c}" for c in "ABCDEFGHJK")


def sphere(X: np.ndarray) -> np.ndarray:
    """Negated sphere, row by row with ``math.fsum``: bit-identical whatever the batch it is in."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.array([-math.fsum(float(v) * float(v) for v in row) for row in X], dtype=np.float64)


def rastrigin(X: np.ndarray) -> np.ndarray:
    """Negated Rastrigin (A = 10): optimum 0 at the origin, everything else negative."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return -(10.0 * X.shape[1] + np.sum(X * X - 10.0 * np.cos(2.0 * np.pi * X), axis=1))


FUNCTIONS: dict[str, Fitness] = {"sphere": sphere, "rastrigin": rastrigin}


def exp_id(problem: str, dim: int) -> str:
    return experiment_id(ProblemConfig(name=problem, dim=dim))


def make_island(*, dim: int = 5, sigma: float = 0.5, seed: int = 0, self_id: str = PEER_IDS[0],
                problem: str = "sphere", x0: np.ndarray | None = None, popsize: int | None = None,
                deterministic: bool = True, episodes: int = 1, reeval_episodes: int = 3,
                restarts: str = "off", **policy: object) -> Island:
    """A CMA-ES island with a real optimizer; ``policy`` keywords go to ``MigrationPolicy``.

    Restarts are off by default here: these tests script flat fitness values, on which pycma's
    stop criteria (tolflatfitness) would fire and change the population size mid-test."""
    if x0 is None:
        x0 = np.full(dim, 2.0)
    opt = make_optimizer("cmaes", dim, sigma=sigma, popsize=popsize, seed=seed, x0=x0, restarts=restarts)
    return Island(optimizer=opt, experiment_id=exp_id(problem, dim), self_id=self_id,
                  policy=MigrationPolicy(**policy), episodes=episodes,  # type: ignore[arg-type]
                  deterministic=deterministic, reeval_episodes=reeval_episodes)


def make_elite(params: Sequence[float] | np.ndarray, fitness: float, *, problem: str = "sphere",
               experiment: str | None = None, generation: int = 1, seeds: tuple[int, ...] = (7,)) -> Elite:
    p = np.asarray(params, dtype="<f4")
    return Elite(experiment_id=experiment if experiment is not None else exp_id(problem, len(p)),
                 generation=generation, fitness=float(fitness), seeds=seeds, params=p, algorithm="cmaes",
                 settings={"sigma0": 0.5})


def evaluate(effect: Evaluate, fn: Fitness) -> EvaluationDone:
    """Score an ``Evaluate`` effect with a deterministic test function."""
    extra = fn(effect.extras) if len(effect.extras) else np.zeros(0)
    return EvaluationDone(effect.generation, fn(effect.candidates), extra)


def pending_evaluate(effects: Sequence[Effect]) -> Evaluate:
    """The one ``Evaluate`` in ``effects`` (an island always asks for exactly one, last)."""
    evals = [e for e in effects if isinstance(e, Evaluate)]
    assert len(evals) == 1, effects
    assert effects[-1] is evals[0], "Evaluate must be the last effect"
    return evals[0]


def of_type(effects: Sequence[Effect], cls: type) -> list:
    return [e for e in effects if isinstance(e, cls)]


@dataclass
class NetworkOfIslands:
    """N islands, one gossip list, a fake clock. Drive with ``start()`` then ``step()`` / ``run(n)``."""

    islands: list[Island]
    fn: Fitness
    seed: int = 0
    dt: float = 1.0
    now: float = 0.0
    rngs: list[np.random.Generator] = field(init=False)
    pending: list[Evaluate | None] = field(init=False)
    gossip: list[tuple[str, Elite]] = field(default_factory=list)  # published, not yet delivered
    log: list[tuple[int, Effect]] = field(default_factory=list)  # (island index, effect), all of them

    def __post_init__(self) -> None:
        self.rngs = [np.random.default_rng([self.seed, i]) for i in range(len(self.islands))]
        self.pending = [None] * len(self.islands)

    @property
    def ids(self) -> list[str]:
        return [isl.self_id for isl in self.islands]

    def start(self) -> None:
        """Tell every island who is live, then start it."""
        peers = frozenset(self.ids)
        for i, isl in enumerate(self.islands):
            self._absorb(i, isl.handle(PeersChanged(peers), now=self.now, rng=self.rngs[i]))
            self._absorb(i, isl.start(now=self.now, rng=self.rngs[i]))

    def step(self, *, deliver: bool = True) -> None:
        """One generation on every island, then deliver everything published to every other island
        (or drop it: ``deliver=False`` cuts the gossip)."""
        self.now += self.dt
        for i, isl in enumerate(self.islands):
            req = self.pending[i]
            assert req is not None, f"island {i} has nothing to evaluate"
            self.pending[i] = None
            self._absorb(i, isl.handle(evaluate(req, self.fn), now=self.now, rng=self.rngs[i]))
        batch, self.gossip = self.gossip, []
        if deliver:
            for src, elite in batch:
                self.deliver(src, elite)

    def deliver(self, src: str, elite: Elite) -> None:
        """``MigrantReceived(src, elite)`` on every island but ``src`` itself."""
        for i, isl in enumerate(self.islands):
            if isl.self_id != src:
                self._absorb(i, isl.handle(MigrantReceived(src, elite), now=self.now, rng=self.rngs[i]))

    def run(self, generations: int) -> None:
        for _ in range(generations):
            self.step()

    def remove(self, index: int) -> None:
        """Drop island ``index`` from the network and tell the others (``PeersChanged``)."""
        self.islands.pop(index)
        self.rngs.pop(index)
        self.pending.pop(index)
        peers = frozenset(self.ids)
        for i, isl in enumerate(self.islands):
            self._absorb(i, isl.handle(PeersChanged(peers), now=self.now, rng=self.rngs[i]))

    def _absorb(self, i: int, effects: list[Effect]) -> None:
        for e in effects:
            self.log.append((i, e))
            if isinstance(e, Evaluate):
                assert self.pending[i] is None, "two Evaluate effects in flight"
                self.pending[i] = e
            elif isinstance(e, PublishMigrant):
                self.gossip.append((self.islands[i].self_id, e.elite))

    # ---------------------------------------------------------------- observations

    @property
    def best_fitness(self) -> float:
        return max(isl.best_fitness for isl in self.islands)

    def effects(self, cls: type, island: int | None = None) -> list:
        return [e for i, e in self.log if isinstance(e, cls) and (island is None or i == island)]

    def accepted(self) -> list[MigrantAccepted]:
        return self.effects(MigrantAccepted)

    def rejected(self) -> list[MigrantRejected]:
        return self.effects(MigrantRejected)
