"""One island: an optimizer that keeps its whole state for its whole life, plus a migration policy.

Sans-IO: the shell feeds inputs (``EvaluationDone``, ``MigrantReceived``, ``PeersChanged``) with the
current time and a seeded rng, and carries out the effects this returns. The island never sleeps,
sends or logs.

Noise-aware rules (see ``protocols/gaia-migration-v1.md``, "Receiver: acceptance"):
- assessment rounds: the resident best, the optimizer's centroid and every queued migrant are
  scored on the *same* seeds (like with like): every generation on deterministic problems, once
  per migration interval on noisy ones, there on ``reeval_episodes`` fresh seeds (never the
  candidates' seeds: the generation's champion won on those, its draw is biased upward);
- the centroid or a migrant replaces the resident only if strictly better on those seeds (a
  migrant: by more than rounding noise on deterministic problems, by ``accept_margin`` on noisy
  ones; the rule is switchable); on deterministic problems the champion competes directly;
- deterministic problems also check a migrant's claim: one that does not reproduce is a lie and
  is rejected as ``claim_mismatch`` (the shell's gossip validator may have refuted it already:
  ``ClaimRefuted``); on noisy problems a migrant measuring ``claim_slack`` below its claim falls short;
- queued migrants wait in a fair intake (core/migration.py ``Intake``): one per source, sources whose
  claims held served first, found-out liars at most ``suspect_slots`` a round;
- the resident best's fitness is the running mean of its re-scores, not its luckiest draw;
- an accepted migrant enters the running optimizer (``inject``: one clipped sample, or ``adopt``:
  the mean moves to it); accepting never restarts the optimizer (only pycma's own stop
  criteria do, see core/optimizer.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from gaia_p2p.core import migration
from gaia_p2p.core.events import (
    ClaimRefuted,
    Effect,
    Evaluate,
    EvaluationDone,
    GenerationCompleted,
    Input,
    MigrantAccepted,
    MigrantReceived,
    MigrantRejected,
    PeerBanned,
    PeersChanged,
    PublishMigrant,
    ResidentDuty,
)
from gaia_p2p.core.migration import Entry, Topology
from gaia_p2p.core.optimizer import Optimizer, from_state
from gaia_p2p.core.pool import ask_rng, generation_seeds
from gaia_p2p.core.types import Elite
from gaia_p2p.errors import LocalProtocolError

REPUBLISH_GAPS = 4
CLAIM_TOLERANCE = 1e-6  # relative, for deterministic problems (float32 wire params vs float64 search)


class Round(StrEnum):
    """What an assessment round scores next to the candidates, on the same seeds."""
    RESIDENT = "resident"
    CENTROID = "centroid"
    MIGRANT = "migrant"


@dataclass(frozen=True)
class MigrationPolicy:
    interval: int = 10  # generations between emissions
    accept_only_better: bool = True
    topology: Topology = Topology.FULL
    random_k: int = 2
    max_pending: int = 8  # migrants evaluated per assessment round (the rest wait for the next)
    # Fair intake (core/migration.py Intake): sources with a migrant waiting, at most; beyond, a
    # newcomer takes a worse-ranked source's slot or is rejected as queue_full.
    max_sources: int = 64
    suspect_slots: int = 1  # migrants per round from sources whose claims failed more than held
    max_records: int = 1024  # sources whose claim record (and deterministic lie count) is kept
    max_banned: int = 4096  # banned peers kept (the oldest ban is forgotten first)
    # Noisy problems: a migrant measuring more than this below its claim "falls short" (fitness units,
    # LunarLander returns, where "solved" is 200 and a random policy scores below 0). An honest claim
    # may fall short by chance (a fresh 3-episode re-score; not measured here), so only a source whose
    # claims fall short more often than they hold loses priority, and only then does its forwarder pay.
    claim_slack: float = 100.0
    min_publish_interval_s: float = 1.0  # never publish more often than this, whatever the speed
    # Elites per second the whole network should carry: each node waits at least
    # network_size / network_rate between its publishes, so bytes per node stay flat in N
    # (docs/BENCHMARKS.md, scaling). 0: no network-wide budget.
    network_rate: float = 0.5
    # Publish only news: not a resident that arrived as a migrant (every peer heard it already), not
    # the one we published last (except every REPUBLISH_GAPS gaps, for peers that joined since).
    publish_only_new: bool = True
    enabled: bool = True
    # How an accepted migrant enters the optimizer (migration.Entry): "inject" (one clipped sample of the next
    # population, pycma inject) or "adopt" (the search mean moves to it; sigma and covariance kept).
    entry: Entry = Entry.INJECT
    accept_margin: float = 0.0  # noisy problems: a migrant must beat the resident by more than this
    max_lies: int = 3  # claims that did not reproduce before a peer is banned (0: never ban)


@dataclass
class Counters:
    sent: int = 0
    received: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class Island:
    """State machine of one island. Create with ``Island(...)``, then call ``start`` once.

    ``pool``: the pool id when this island's optimizer is one replica of a pool's (core/pool.py):
    its candidates' seeds and ``ask``'s rng then follow from (pool, generation), not from the node's
    rng, and accepted migrants replace the resident only (an injection here would move this replica
    alone, away from the others')."""

    def __init__(self, *, optimizer: Optimizer, experiment_id: str, self_id: str,
                 policy: MigrationPolicy, episodes: int, deterministic: bool, reeval_episodes: int = 3,
                 pool: str | None = None) -> None:
        if policy.topology not in migration.TOPOLOGIES:
            raise LocalProtocolError(f"unknown topology {policy.topology!r}")
        if policy.entry not in migration.ENTRIES:
            raise LocalProtocolError(f"unknown migrant entry {policy.entry!r}")
        self.opt = optimizer
        self.experiment_id = experiment_id
        self.self_id = self_id
        self.policy = policy
        self.episodes = episodes
        self.deterministic = deterministic
        self.reeval_episodes = 1 if deterministic else reeval_episodes
        self.pool = pool
        # a pool replica leaves its resident to the member that keeps the pool's (events.ResidentDuty)
        self.keeps_resident = True

        self.generation = 0
        self.evaluations = 0  # individuals scored (candidates + re-evaluations)
        self.episodes_used = 0  # episodes spent (lunarlander); equals evaluations on deterministic problems
        self._round: list[tuple[str, np.ndarray, tuple[str, Elite, str] | None]] = []  # extras in flight
        self.best_params: np.ndarray | None = None
        self.best_fitness = -math.inf  # running mean of the resident's evaluations
        self.best_n = 0
        self.best_last = -math.inf  # resident's fitness on its latest seeds (the wire claim)
        self.best_last_seeds: tuple[int, ...] = ()
        self.best_source = "local"
        self.mean_fitness = math.nan
        self.gen_best_fitness = math.nan
        self.counters = Counters()
        self.live_peers: frozenset[str] = frozenset()
        self.network_size = 0  # estimated nodes in the experiment, us included (0: unknown)
        self.lies: dict[str, int] = {}  # claim_mismatch count per peer
        self.banned: set[str] = set()
        self._ban_order: list[str] = []  # oldest first: forgotten first beyond max_banned
        self.random_sources: frozenset[str] = frozenset()
        self.last_publish_at = -math.inf
        self._publish_due = False
        self._published: bytes | None = None  # params of our last publish
        self.skipped_publishes = 0  # due but nothing new to say

        self.intake = migration.Intake(max_sources=policy.max_sources, per_round=policy.max_pending,
                                       suspect_slots=policy.suspect_slots, max_records=policy.max_records)
        self._in_flight: Evaluate | None = None
        self._asked = np.zeros((0, optimizer.dim))

    # ------------------------------------------------------------ driving

    def start(self, *, now: float, rng: np.random.Generator) -> list[Effect]:
        if self._in_flight is not None:
            raise LocalProtocolError("island already started")
        if self.policy.topology == Topology.RANDOM:
            self.random_sources = migration.draw_random_sources(self.live_peers, self.policy.random_k, rng)
        return [self._next_generation(rng)]

    def handle(self, event: Input, *, now: float, rng: np.random.Generator) -> list[Effect]:
        if isinstance(event, EvaluationDone):
            return self._on_evaluation_done(event, now, rng)
        if isinstance(event, MigrantReceived):
            return self._on_migrant(event)
        if isinstance(event, ClaimRefuted):
            return self._lied(event.src)
        if isinstance(event, ResidentDuty):
            self.keeps_resident = event.keep or self.pool is None
            return []
        if isinstance(event, PeersChanged):
            self.live_peers = frozenset(event.peers) - {self.self_id}
            self.network_size = max(0, int(event.network_size))
            # Redraw when a drawn source left, or when we hold fewer than k and more are live now
            # (at start nobody is live yet: without this, nothing would be drawn until the next round).
            if self.policy.topology == Topology.RANDOM and (
                    not self.random_sources <= self.live_peers
                    or len(self.random_sources) < min(self.policy.random_k, len(self.live_peers))):
                self.random_sources = migration.draw_random_sources(self.live_peers, self.policy.random_k, rng)
            return []
        raise LocalProtocolError(f"island cannot handle {type(event).__name__}")

    # ------------------------------------------------------------ generations

    def _assessing(self) -> bool:
        """Whether the generation being asked for carries an assessment round (extras).

        Deterministic problems: every generation (re-scoring is exact and cheap). Noisy ones: the
        generation that completes each migration interval, so re-scoring costs a few episodes per
        interval instead of per generation. A pool replica that leaves the resident to another
        member never does: the keeper does it for the pool."""
        if not self.keeps_resident:
            return False
        return self.deterministic or (self.generation + 1) % self.policy.interval == 0

    def _next_generation(self, rng: np.random.Generator) -> Evaluate:
        self._asked = self.opt.ask(rng if self.pool is None else ask_rng(self.pool, self.generation))
        # Everything is scored at the wire's float32 precision, so a claim we send reproduces
        # exactly on the receiver; the optimizer is told the fitness of its own float64 points.
        candidates = self._asked.astype(np.float32).astype(np.float64)
        if self.pool is None:
            seeds = tuple(int(s) for s in rng.integers(0, 2**31 - 1, size=self.episodes))
        else:
            seeds = generation_seeds(self.pool, self.generation, self.episodes)
        extras: list[np.ndarray] = []
        extra_seeds = seeds
        self._round = []
        if self._assessing():
            # The resident, the optimizer's centroid (on noisy returns usually far better than any
            # single sample) and the queued migrants, all on the same seeds: like with like. Noisy
            # problems use fresh seeds, not the candidates' (the champion won on those).
            if not self.deterministic:
                extra_seeds = tuple(int(s) for s in rng.integers(0, 2**31 - 1, size=self.reeval_episodes))
            if self.best_params is not None:
                self._round.append((Round.RESIDENT, self.best_params, None))
            self._round.append((Round.CENTROID, _f32(self.opt.mean), None))
            self._round.extend((Round.MIGRANT, e.params.astype(np.float64), (src, e, via))
                               for src, (e, via) in self.intake.take())
            extras = [x for _, x, _ in self._round]
        extras_arr = np.array(extras, dtype=np.float64).reshape(len(extras), self.opt.dim)
        self._in_flight = Evaluate(self.generation, candidates, extras_arr, seeds, extra_seeds)
        return self._in_flight

    def _on_evaluation_done(self, ev: EvaluationDone, now: float, rng: np.random.Generator) -> list[Effect]:
        req = self._in_flight
        if req is None or ev.generation != req.generation:
            raise LocalProtocolError(f"evaluation result for generation {ev.generation} not requested")
        fitness = np.asarray(ev.fitness, dtype=np.float64)
        extra = np.asarray(ev.extra_fitness, dtype=np.float64)
        if fitness.shape != (len(req.candidates),) or extra.shape != (len(req.extras),):
            raise LocalProtocolError("evaluation result has the wrong shape")
        self._in_flight = None
        effects: list[Effect] = []

        metrics = self.opt.tell(self._asked, fitness)
        own = len(fitness) if ev.evaluated is None else ev.evaluated  # a pool's members share the candidates
        self.evaluations += own + len(extra)
        self.episodes_used += own * len(req.seeds) + len(extra) * len(req.extra_seeds)
        xseeds = req.extra_seeds
        i = int(np.argmax(fitness))
        ref = self.best_last if self.best_params is not None else -math.inf

        for (kind, params, migrant), f in zip(self._round, extra):
            f = float(f)
            if kind == Round.RESIDENT:
                # its fitness is the running mean of its re-scores; the wire claim is the latest one
                self.best_n += 1
                self.best_fitness += (f - self.best_fitness) / self.best_n
                self.best_last, self.best_last_seeds = f, xseeds
                ref = f
            elif kind == Round.CENTROID:
                if f > ref:
                    self._set_best(params, f, xseeds, "local")
                    ref = f
            else:
                src, elite, via = migrant
                if self.deterministic and not claim_holds(elite.fitness, f):
                    self.counters.reject("claim_mismatch")
                    effects.append(MigrantRejected(src, "claim_mismatch", elite.fitness, f, forwarder=via))
                    effects.extend(self._lied(src))
                    continue
                held = self.deterministic or f >= elite.fitness - self.policy.claim_slack
                standing = self.intake.outcome(src, held).standing
                if self.policy.accept_only_better and not _better(f, ref + (0.0 if self.deterministic else
                                                                           self.policy.accept_margin),
                                                                   self.deterministic):
                    # a short claim of a source found out (more short claims than held ones) costs its
                    # forwarder too: it passed on what it could not check (protocols/gaia-migration-v1.md)
                    reason = "not_better" if held else "claim_short"
                    self.counters.reject(reason)
                    effects.append(MigrantRejected(src, reason, elite.fitness, f, forwarder=via if (
                        not held and standing == migration.SUSPECT) else ""))
                    continue
                self.counters.accepted += 1
                effects.append(MigrantAccepted(src, self.generation, f, ref, elite.fitness))
                if self.pool is not None:
                    pass  # the resident only: the replica moves with the pool's log
                elif self.policy.entry == Entry.ADOPT:
                    self.opt.adopt(params)
                else:
                    self.opt.inject(params)
                self._set_best(params, f, xseeds, src)
                ref = f
        # deterministic problems: the generation's champion competes directly (its score is exact)
        if self.deterministic and float(fitness[i]) > ref:
            self._set_best(req.candidates[i], float(fitness[i]), req.seeds, "local")
        self._round = []

        self.mean_fitness = float(np.mean(fitness))
        self.gen_best_fitness = float(fitness[i])
        self.generation += 1
        effects.append(GenerationCompleted(
            generation=self.generation, evaluations=self.evaluations, episodes=self.episodes_used,
            best_fitness=self.best_fitness,
            gen_best_fitness=self.gen_best_fitness, mean_fitness=self.mean_fitness, sigma=self.opt.sigma,
            metrics={k: float(v) for k, v in metrics.items()},
        ))

        # 4. emigration: due every `interval` generations; sent as soon as the rate limit allows
        #    (a late emission is not skipped, it goes out at the next chance)
        if self.policy.enabled and self.generation % self.policy.interval == 0:
            self._publish_due = True
            if self.policy.topology == Topology.RANDOM:
                self.random_sources = migration.draw_random_sources(self.live_peers, self.policy.random_k, rng)
        gap = self.publish_gap()
        if (self._publish_due and self.keeps_resident and self.best_params is not None and self.live_peers
                and now - self.last_publish_at >= gap):
            self._publish_due = False
            if self._is_news(now, gap):
                self.last_publish_at = now
                self._published = self.best_params.tobytes()
                self.counters.sent += 1
                effects.append(PublishMigrant(self.best_elite()))
            else:
                self.skipped_publishes += 1

        effects.append(self._next_generation(rng))
        return effects

    def replay(self, returns: tuple[np.ndarray, ...], *, start: int, genesis: Optimizer | None,
               rng: np.random.Generator) -> list[Effect]:
        """A pool replica catches up: the generation in flight is abandoned, the optimizer is told
        the pool's returns of generations ``start`` ... (from ``genesis`` when given, which must be
        the pool's genesis optimizer and then ``start`` 0), and the next generation is asked for.
        The resident best, the counters and the migration state stay: they are this node's."""
        if self.pool is None:
            raise LocalProtocolError("replay is for a pool replica")
        if genesis is not None:
            if start != 0:
                raise LocalProtocolError("a replay from the genesis starts at generation 0")
            self.opt, self.generation = genesis, 0
        elif start != self.generation:
            raise LocalProtocolError(f"replay from generation {start}, the island is at {self.generation}")
        self._in_flight, self._round = None, []
        for r in returns:
            asked = self.opt.ask(ask_rng(self.pool, self.generation))
            if len(asked) != len(r):
                raise LocalProtocolError(f"generation {self.generation}: {len(r)} returns for {len(asked)} candidates")
            self.opt.tell(asked, np.asarray(r, dtype=np.float64))
            self.generation += 1
        return [self._next_generation(rng)]

    def publish_gap(self) -> float:
        """Seconds between two publishes of this node: the local floor, and its share of the
        network-wide budget (every node publishing at that pace = network_rate). The nodes are the
        shell's estimate (core/netsize.py) when it gave one, not the live peers: identities that cost
        nothing would stretch the gap of every honest node; without one, the live peers plus us."""
        gap = self.policy.min_publish_interval_s
        if self.policy.network_rate > 0:
            n = self.network_size if self.network_size > 0 else len(self.live_peers) + 1
            gap = max(gap, n / self.policy.network_rate)
        return gap

    def _is_news(self, now: float, gap: float) -> bool:
        if not self.policy.publish_only_new or self.best_params is None:
            return True
        if self.best_source != "local" and self.policy.topology == Topology.FULL:
            return False  # a migrant's copy: its author published it to everyone already (in a ring
            # or random topology our successors only listen to us, so we pass it on)
        if self._published != self.best_params.tobytes():
            return True
        return now - self.last_publish_at >= REPUBLISH_GAPS * gap

    def _set_best(self, params: np.ndarray, fitness: float, seeds: tuple[int, ...], source: str) -> None:
        # Held at float32 precision: what we re-score is exactly what we would send.
        self.best_params = _f32(params)
        self.best_fitness = fitness
        self.best_n = 1
        self.best_last, self.best_last_seeds = fitness, seeds
        self.best_source = source

    def best_elite(self) -> Elite:
        if self.best_params is None:
            raise LocalProtocolError("no best individual yet")
        params32 = self.best_params.astype("<f4")
        return Elite(
            experiment_id=self.experiment_id,
            generation=self.generation,
            fitness=float(self.best_last),
            seeds=tuple(self.best_last_seeds),
            params=params32,
            algorithm=self.opt.algorithm,
            settings=self.opt.settings(),
        )

    # ------------------------------------------------------------ immigration

    def _lied(self, src: str) -> list[Effect]:
        """A deterministic claim of ``src`` did not reproduce (here or in the shell's gossip validator)."""
        self.intake.outcome(src, held=False)
        self.lies[src] = self.lies.pop(src, 0) + 1  # re-inserted: the dict is oldest-updated first
        while len(self.lies) > self.policy.max_records:
            del self.lies[next(iter(self.lies))]
        if self.policy.max_lies and self.lies[src] >= self.policy.max_lies and src not in self.banned:
            self._ban(src)
            return [PeerBanned(src, "claim_mismatch", self.lies[src])]
        return []

    def _ban(self, src: str) -> None:
        self.banned.add(src)
        self._ban_order.append(src)
        while len(self._ban_order) > self.policy.max_banned:
            self.banned.discard(self._ban_order.pop(0))

    def _on_migrant(self, ev: MigrantReceived) -> list[Effect]:
        src, elite = ev.src, ev.elite
        self.counters.received += 1

        def reject(reason: str) -> list[Effect]:
            self.counters.reject(reason)
            return [MigrantRejected(src, reason, elite.fitness)]

        if not self.policy.enabled:
            return reject("migration_disabled")
        if src == self.self_id:
            return reject("own_message")
        if src in self.banned:
            return reject("banned")
        if elite.experiment_id != self.experiment_id:
            return reject("wrong_experiment")
        if elite.dim != self.opt.dim:
            return reject("wrong_dimension")
        if not migration.source_allowed(self.policy.topology, src, self.self_id, self.live_peers,
                                        self.random_sources):
            return reject("topology")
        # The sender's own claim says it is not better than what we hold: not worth an evaluation.
        if self.policy.accept_only_better and self.best_params is not None and not elite.fitness > self.best_fitness:
            return reject("not_better")
        # Fair intake: one pending migrant per source; what it displaces (the source's older one,
        # or a worse-ranked source's) is counted as rejected, so that received == accepted + rejected
        # once nothing is pending.
        queued, displaced = self.intake.offer(src, (elite, ev.via))
        effects: list[Effect] = []
        for s, (old, _), reason in displaced:
            self.counters.reject(reason)
            effects.append(MigrantRejected(s, reason, old.fitness))
        if not queued:
            return reject("queue_full")
        return effects

    # ------------------------------------------------------------ persistence

    def to_checkpoint(self) -> dict[str, object]:
        return {
            "experiment_id": self.experiment_id,
            "generation": self.generation,
            "evaluations": self.evaluations,
            "episodes_used": self.episodes_used,
            "best_params": None if self.best_params is None else self.best_params.astype("<f8").tobytes(),
            "best_fitness": self.best_fitness,
            "best_n": self.best_n,
            "best_last": self.best_last,
            "best_last_seeds": list(self.best_last_seeds),
            "best_source": self.best_source,
            "mean_fitness": self.mean_fitness,
            # Pending and in-flight migrants are not checkpointed: not counted as received either,
            # so a restored island's counters still add up.
            "counters": {"sent": self.counters.sent,
                         "received": self.counters.received - len(self.intake)
                         - sum(1 for kind, _, _ in self._round if kind == Round.MIGRANT),
                         "accepted": self.counters.accepted, "rejected": dict(self.counters.rejected)},
            "optimizer": self.opt.to_state(),
            "banned": list(self._ban_order),
            "lies": dict(self.lies),
        }

    @classmethod
    def from_checkpoint(cls, data: dict[str, object], *, self_id: str, policy: MigrationPolicy,
                        episodes: int, deterministic: bool, reeval_episodes: int = 3,
                        pool: str | None = None) -> Island:
        opt = from_state(data["optimizer"])  # type: ignore[arg-type]
        isl = cls(optimizer=opt, experiment_id=str(data["experiment_id"]), self_id=self_id, policy=policy,
                  episodes=episodes, deterministic=deterministic, reeval_episodes=reeval_episodes, pool=pool)
        isl.episodes_used = int(data.get("episodes_used", 0))  # type: ignore[call-overload]
        isl._ban_order = [str(p) for p in data.get("banned", ())]  # type: ignore[attr-defined]
        isl.banned = set(isl._ban_order)
        isl.lies = {str(k): int(v) for k, v in dict(data.get("lies", {})).items()}  # type: ignore[call-overload]
        isl.generation = int(data["generation"])  # type: ignore[arg-type]
        isl.evaluations = int(data["evaluations"])  # type: ignore[arg-type]
        bp = data["best_params"]
        isl.best_params = None if bp is None else np.frombuffer(bp, dtype="<f8").copy()  # type: ignore[arg-type]
        isl.best_fitness = float(data["best_fitness"])  # type: ignore[arg-type]
        isl.best_n = int(data["best_n"])  # type: ignore[arg-type]
        isl.best_last = float(data["best_last"])  # type: ignore[arg-type]
        isl.best_last_seeds = tuple(int(s) for s in data["best_last_seeds"])  # type: ignore[union-attr]
        isl.best_source = str(data["best_source"])
        isl.mean_fitness = float(data["mean_fitness"])  # type: ignore[arg-type]
        c = data["counters"]
        isl.counters = Counters(sent=int(c["sent"]), received=int(c["received"]),  # type: ignore[index]
                                accepted=int(c["accepted"]), rejected=dict(c["rejected"]))  # type: ignore[index]
        return isl


def _better(f: float, ref: float, deterministic: bool) -> bool:
    """Strictly better; on deterministic problems by more than rounding noise, so islands sitting at
    the same optimum do not trade the same point back and forth."""
    if not deterministic:
        return f > ref
    return f > ref + CLAIM_TOLERANCE * max(1.0, abs(ref)) if math.isfinite(ref) else f > ref


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def claim_holds(claimed: float, measured: float) -> bool:
    """A deterministic claim reproduces, up to float32-on-the-wire rounding."""
    return abs(claimed - measured) <= CLAIM_TOLERANCE * max(1.0, abs(claimed), abs(measured))
