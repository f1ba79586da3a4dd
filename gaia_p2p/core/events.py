"""Inputs to the island (past-tense facts) and effects it asks the shell to carry out (imperatives)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gaia_p2p.core.types import Elite

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class EvaluationDone:
    """Fitness for the batch of an ``Evaluate`` effect, in the same order."""

    generation: int
    fitness: np.ndarray  # (popsize,)
    extra_fitness: np.ndarray  # (len(extras),)
    evaluated: int | None = None  # candidates this node scored itself (a pool member: its part); None: all


@dataclass(frozen=True)
class MigrantReceived:
    """A validated elite arrived over the network from ``src`` (the signed originator)."""

    src: str
    elite: Elite
    via: str = ""  # the peer that forwarded it to us ("" when fetched from ``src`` itself or unknown)


@dataclass(frozen=True)
class ClaimRefuted:
    """The shell re-evaluated an elite of ``src`` before forwarding it (deterministic problems, in the
    gossipsub validator) and its claim did not reproduce: a lie, counted as one found by the island."""

    src: str


@dataclass(frozen=True)
class PeersChanged:
    """The set of live peers of this experiment changed (peer ids, base58), or the estimated number
    of nodes in the experiment did (0: unknown; a node sees only the peers it is connected to)."""

    peers: frozenset[str]
    network_size: int = 0


@dataclass(frozen=True)
class ResidentDuty:
    """A pool replica keeps the pool's resident (``keep``) or leaves it to the member that does
    (core/pool.py ``Pool.keeper``): only the keeper runs assessment rounds and publishes."""

    keep: bool


# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class Evaluate:
    """Score ``candidates`` on ``seeds`` and ``extras`` (resident best, optimizer centroid, queued
    migrants; only in assessment rounds) on ``extra_seeds`` (the same seeds for all extras)."""

    generation: int
    candidates: np.ndarray  # (popsize, dim)
    extras: np.ndarray  # (k, dim), k may be 0
    seeds: tuple[int, ...]
    extra_seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class PublishMigrant:
    elite: Elite


@dataclass(frozen=True)
class MigrantAccepted:
    src: str
    generation: int
    fitness: float  # measured here, on our seeds
    replaced_fitness: float  # what it beat, on the same seeds (-inf when we had nothing)
    claimed_fitness: float


@dataclass(frozen=True)
class MigrantRejected:
    src: str
    reason: str
    claimed_fitness: float
    fitness: float | None = None  # measured here, when it got that far
    forwarder: str = ""  # a peer that passed on a lie: the shell charges it a gossipsub penalty


@dataclass(frozen=True)
class PeerBanned:
    """``src`` lied about fitness ``lies`` times (claims that did not reproduce): ignore it from now on."""

    src: str
    reason: str
    lies: int


@dataclass(frozen=True)
class GenerationCompleted:
    generation: int
    evaluations: int
    episodes: int
    best_fitness: float
    gen_best_fitness: float
    mean_fitness: float
    sigma: float
    metrics: dict[str, float] = field(default_factory=dict)


Input = EvaluationDone | MigrantReceived | PeersChanged | ClaimRefuted | ResidentDuty
Effect = Evaluate | PublishMigrant | MigrantAccepted | MigrantRejected | GenerationCompleted | PeerBanned
