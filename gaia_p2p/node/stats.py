"""One frozen snapshot of a running node, read by every view: ``gaia-node status`` (the control
socket and /gaia/status/1.0.0), the metrics endpoint, telemetry heartbeats, the console line.

``Node.statistics()`` builds a :class:`NodeStatistics` (trio's convention: a frozen object whose
fields are copies taken now); :meth:`NodeStatistics.as_status` is the status document of
protocols/gaia-status-v1.md, field for field in that order. A view never reads the node's live
state itself, so what one view shows is what the others show for the same moment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUS_VERSION = 1


def finite_or_none(x: float | None) -> float | None:
    """JSON has no inf/nan: "not yet" is null."""
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class IslandStatistics:
    generation: int
    evaluations: int
    episodes: int
    best_fitness: float | None
    best_source: str
    mean_fitness: float | None
    sigma: float | None
    evals_per_s: float
    best_n: int = 0  # re-scores behind the estimate best_fitness (noisy problems)
    exact: bool = False  # a deterministic problem: best_fitness is the score, not an estimate


@dataclass(frozen=True)
class MigrantStatistics:
    sent: int
    received: int
    accepted: int
    rejected: Mapping[str, int]  # by reason: the island's verdicts and the gossipsub validator's


@dataclass(frozen=True)
class TargetStatistics:
    fitness: float | None
    last_test: Mapping[str, Any] | None  # FreshScore.as_dict() and "current" (still the resident)
    reached: Mapping[str, Any] | None
    test_episodes_used: int
    share: float = 0.0  # periodic tests' bound: all tests within this share of the training episodes
    tests: Mapping[str, int] = dataclasses.field(default_factory=dict)  # tests run, by why (target, periodic)


@dataclass(frozen=True)
class NodeStatistics:
    v: int
    version: str
    peer_id: str
    addrs: list[str]
    peers: list[str]
    connections: Mapping[str, Any]
    topic_peers: list[str]
    mesh: Mapping[str, int]  # gossipsub mesh peers per topic: each message arrives about once per mesh peer
    routing_table_size: int
    dht: Mapping[str, Any]
    network_size: int
    experiment_id: str
    experiment: Mapping[str, Any]  # the id and what it is the hash of (protocols/gaia-migration-v1.md)
    topics: list[str]
    problem: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    migration: Mapping[str, Any]
    island: IslandStatistics
    migrants: MigrantStatistics
    telemetry_rejected: Mapping[str, int]
    target: TargetStatistics
    network: Mapping[str, Any]
    capabilities: Mapping[str, Any]
    banned_peers: list[str]
    peer_scores: Mapping[str, float]
    pubsub_streams_rejected: int
    forwarders_penalized: Mapping[str, int]
    elite_fetch: Mapping[str, int]
    telemetry_pull: Mapping[str, int]
    traffic: Mapping[str, Any]
    cpu: Mapping[str, float]
    workers: int
    uptime_s: float
    data_dir: str
    pid: int
    pool: Mapping[str, Any] | None = None  # the pool this node is a member of (core/pool.py), None: an island
    # AutoNAT (net/reachability.py): public / private / unknown, the verdicts behind it, the addresses
    # peers observed us at; None: network.autonat = false
    reachability: Mapping[str, Any] | None = None

    def as_status(self) -> dict[str, Any]:
        """The status document (plain dicts and lists, JSON- and msgpack-ready)."""
        return dataclasses.asdict(self)
