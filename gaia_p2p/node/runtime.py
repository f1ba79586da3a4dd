"""The node: one nursery tree that drives the pure island and carries out its effects.

    run(config, task_status=...)   started with ``await nursery.start(run, cfg)``; hands back the
                                   ``Node`` once it listens (addresses with the real port).

The loop is ``Node.feed``: every input of the island enters there, every effect leaves through
``EFFECTS`` (docs/ARCHITECTURE.md has the picture). The tasks around it feed it: the generation
runner (evaluate in workers, the target test, the duty cycle's rest), the migrant receiver, the
elite fetchers (joins and pulls; announced large elites), the gossipsub validator (refuted claims);
the publisher, telemetry, discovery,
keepalive, the control socket and checkpoints do the rest. Cancelling the scope (SIGINT / SIGTERM
via node/shutdown.py) stops everything and a final checkpoint is written, shielded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import structlog
import trio

from gaia_p2p import __version__, logs
from gaia_p2p.config import Config, load_bootstrap_file
from gaia_p2p.core import codec
from gaia_p2p.core.events import (
    ClaimRefuted,
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
from gaia_p2p.core.experiment import TEST_FUNCTIONS, announce_topic, experiment_id, migrants_topic, telemetry_topic
from gaia_p2p.core.telemetry import LastTest, Migration, PoolShare, Telemetry, encode_telemetry, to_json
from gaia_p2p.core.island import Island, MigrationPolicy
from gaia_p2p.core.types import Announcement
from gaia_p2p.core.migration import Entry, Topology
from gaia_p2p.core.netsize import SizeTracker
from gaia_p2p.core import pool as poolcore
from gaia_p2p.core.optimizer import Optimizer, make_optimizer
from gaia_p2p.core.schedule import AnnouncedFetches, AnnounceOutcome, FetchOutcome, FetchPlan, duty_sleep
from gaia_p2p.core.target import TargetTest
from gaia_p2p.errors import CheckpointError, LocalProtocolError, RemoteProtocolError
from gaia_p2p.net import traffic
from gaia_p2p.net.discovery import run_discovery
from gaia_p2p.core.reachability import DialBackLimiter, Reachability
from gaia_p2p.net.addrs import usable_listen_addrs
from gaia_p2p.net.dns import resolve_bootstrap
from gaia_p2p.net.host import P2P, check_listen_ports_free, load_or_create_identity, open_p2p
from gaia_p2p.net.reachability import AutoNAT
from gaia_p2p.net.liveness import keep_alive
from gaia_p2p.node import control
from gaia_p2p.node.evaluator import Evaluator
from gaia_p2p.node.fetch import ELITE_PROTOCOL, JOIN_PEERS, PULL_MIN_S, EliteService
from gaia_p2p.node.gossip import AnnounceTopic, MigrantTopic, TelemetryTopic, claim_checker, penalize
from gaia_p2p.node.netview import NetView, local_capabilities
from gaia_p2p.node.pool import PoolMember, PoolTopic, platform_class, pool_topic
from gaia_p2p.node.pull import TELEMETRY_PROTOCOL, TelemetryService, pull
from gaia_p2p.node.stats import (STATUS_VERSION, IslandStatistics, MigrantStatistics, NodeStatistics,
                                 TargetStatistics, finite_or_none)
from gaia_p2p.problems.policy_eval import evaluate_policy
from gaia_p2p.store import DataDir

log = structlog.get_logger("gaia.node")

GRACEFUL_TIMEOUT_S = 3.0


def _local_ipv4s() -> list[str]:
    """This machine's IPv4 addresses, loopback first (for display of a 0.0.0.0 listener)."""
    try:
        import ifaddr

        ips = [str(ip.ip) for ad in ifaddr.get_adapters() for ip in ad.ips if isinstance(ip.ip, str)]
    except Exception:
        ips = []
    ips = sorted(set(ips), key=lambda ip: (not ip.startswith("127."), ip))
    return ips or ["0.0.0.0"]


def _local_ipv6s() -> list[str]:
    """This machine's IPv6 addresses but link-local ones, loopback first (for a :: listener)."""
    try:
        import ifaddr

        ips = [str(ip.ip[0]) for ad in ifaddr.get_adapters() for ip in ad.ips if isinstance(ip.ip, tuple)]
    except Exception:
        ips = []
    ips = [ip for ip in set(ips) if not ip.lower().startswith("fe80")]
    return sorted(ips, key=lambda ip: (ip != "::1", ip)) or ["::1"]


def _short(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


class Node:
    """Everything a running node owns, and the one place its island is driven from.

    ``feed(event)`` is the loop: every input of the island (an evaluation done, a migrant received
    or fetched, a claim refuted by the validator, peers changed) enters there with trio's ``now``,
    and every effect the island returns leaves through ``EFFECTS``, one handler per effect type.
    Handlers never block: work that awaits (evaluating, publishing) is handed to the task that
    does it (``_run_generations``, ``_publish_migrants``), whose results come back through ``feed``.
    Views read ``statistics()``, one frozen snapshot."""

    def __init__(self, cfg: Config, data: DataDir, island: Island, seed: int, p2p: P2P, topic: MigrantTopic,
                 evaluator: Evaluator, telemetry: TelemetryTopic, bad_streams: list[int],
                 pool: poolcore.Pool | None = None) -> None:
        self.cfg, self.data, self.island, self.seed = cfg, data, island, seed
        self.p2p, self.topic, self.telemetry, self.evaluator = p2p, topic, telemetry, evaluator
        self.exp_id = island.experiment_id
        self.capabilities = local_capabilities(cfg.evaluation.backend)
        self.started_mono = time.monotonic()
        # One seeded generator for every input the island gets; a resumed node continues a new stream.
        self.rng = np.random.default_rng([seed, island.generation, 7])
        # the shell's own draws (jitter, whom to ask), apart so that network timing never shifts the island's stream
        self.net_rng = np.random.default_rng([seed, island.generation, 11])
        self.cpu = traffic.CpuClock()  # the island's own CPU time (ask/tell), apart from evaluation and libp2p
        # policy (gaia_p2p/core): the network-size estimate, the target test
        self.size = SizeTracker(started_at=trio.current_time())
        self.target = TargetTest(cfg.target, cfg.test_interval_s, share=cfg.test_share,
                                 test_episodes=cfg.test_episodes)
        # what the views show beyond the island's own counters
        self.netview = NetView()
        self.recent_accepts: deque[Migration] = deque(maxlen=8)  # told in the next heartbeat
        self.forwarders_penalized: Counter[str] = Counter()  # P4 charged after delivery, by reason
        self._bad_streams = bad_streams  # pubsub streams reset for an undecodable RPC (fix A)
        self.evals_per_s = 0.0
        self.telemetry_period_s = cfg.telemetry_interval_s  # the current one (telemetry_period)
        self.console = Console(cfg.log_interval_s)
        # where effects that await go: the generation runner (one generation in flight) and the publisher
        self.evaluations_in, self._evaluations_out = trio.open_memory_channel[Evaluate](1)
        self.publishes_in, self._publishes_out = trio.open_memory_channel[PublishMigrant](PUBLISH_QUEUE)
        self.publishes_dropped = 0
        self._fed = trio.lowlevel.ParkingLot()  # woken after every input (Node.fed)
        # /gaia/elite/1.0.0: our best to peers that ask, theirs to us (node/fetch.py)
        self.elites = EliteService(p2p.host, self.exp_id, island.opt.dim, self.best_for_fetch)
        # large elites (gaia-migration-v1, "Large elites"): announced on their own topic, fetched from the
        # announcer by the elite fetcher above, one at a time (_fetch_announced)
        self.announce = AnnounceTopic(announce_topic(self.exp_id), self.exp_id, island.opt.dim, p2p.peer_id)
        self.announced = AnnouncedFetches()
        self.announced_wake = trio.Event()
        self.takes_announced = island.policy.enabled and cfg.migration.fetch  # subscribes to the topic
        # /gaia/telemetry/1.0.0: our heartbeat now, to a watcher that asks (node/pull.py)
        self.heartbeats = TelemetryService(self.exp_id, lambda: encode_telemetry(self.heartbeat()))
        # a pool member's shell (node/pool.py): its tasks, topic and log service
        self.member = None if pool is None else PoolMember(
            p2p, pool, PoolTopic(pool_topic(self.exp_id, pool.pid), self.exp_id, pool.pid, p2p.peer_id),
            genesis=partial(_new_optimizer, cfg, seed), evaluator=evaluator, feed=self.feed, rest=self.rest,
            direct=cfg.pool.transport == "direct", banned=lambda peer: peer in self.island.banned)
        self.reach: AutoNAT | None = None  # reachability (AutoNAT), set in _run_locked when network.autonat

    # ------------------------------------------------------------ the loop

    def start(self) -> None:
        self._dispatch(self.island.start(now=trio.current_time(), rng=self.rng))

    def feed(self, event: Input | poolcore.PoolInput) -> None:
        """One input of the island (or of its pool), and its effects carried out."""
        with self.cpu:
            if isinstance(event, POOL_INPUTS):
                assert self.pool is not None
                effects: list[Any] = self.pool.handle(event, now=trio.current_time(), rng=self.net_rng)
            else:
                effects = self.island.handle(event, now=trio.current_time(), rng=self.rng)
        self._dispatch(effects)

    def _dispatch(self, effects: list[Any]) -> None:
        for effect in effects:
            EFFECTS[type(effect)](self, effect)
        self._fed.unpark_all()

    async def fed(self) -> None:
        """Returns after the island's next input was handled: a waiter on the island's state (a
        test, a tool) wakes when it may have changed instead of polling for it."""
        await self._fed.park()

    async def rest(self, *, cpu_s: float, wall_s: float) -> None:
        """The duty cycle's rest after work that cost ``cpu_s`` CPU over ``wall_s`` (core/schedule.py):
        on the CPU clock unless asked for the wall clock or on a GPU (whose work is not CPU time)."""
        e = self.cfg.evaluation
        if e.duty_cycle >= 1.0:
            return
        cpu_clock = e.duty_clock == "cpu" and not (self.evaluator.backend == "torch" and self.evaluator.device == "cuda")
        await trio.sleep(duty_sleep(cpu_s=cpu_s if cpu_clock else 0.0, wall_s=wall_s, duty=e.duty_cycle,
                                    cores=max(1, e.workers)))

    def peers_changed(self) -> PeersChanged | None:
        """The island's view of the network, when it changed: live topic peers (banned peers are not
        live: py-libp2p keeps recording a blacklisted peer's subscriptions, and a ring or random
        topology would give it a slot it can never fill) and the size estimate."""
        peers = frozenset(self.p2p.topic_peers(self.topic.topic)) - self.island.banned
        size = self.network_size()
        if peers == self.island.live_peers and size == self.island.network_size:
            return None
        return PeersChanged(peers, size)

    # ------------------------------------------------------------ what the node tells

    def best_for_fetch(self) -> tuple[bytes, float] | None:
        """Our resident as the elite protocol serves it (the same bytes a publish would carry)."""
        if self.island.best_params is None:
            return None
        elite = self.island.best_elite()
        return codec.encode_elite(elite), elite.fitness

    @property
    def pool(self) -> poolcore.Pool | None:
        """Our replica's share of a pool's search (core/pool.py), or None: an island."""
        return None if self.member is None else self.member.pool

    @property
    def peer_id(self) -> str:
        return self.p2p.peer_id

    def network_size(self) -> int:
        """Nodes in the experiment, us included, as far as we can tell, Sybil-resistant (the policy:
        gaia_p2p/core/netsize.py). Only collects what it needs; the tracker decides."""
        now = trio.current_time()
        if not self.size.fresh(now):
            topic = [p for p in self.p2p.topic_peers(self.topic.topic) if p not in self.island.banned]
            # routing-table peers while connected: py-libp2p keeps a peer that left in the table until a
            # full bucket or an hour evicts it, so an identity that visited once would count for good
            connected = set(self.p2p.connected_peers())
            routing = [p for p in map(str, self.p2p.routing_table_peers()) if p in connected]
            self.size.observe(now=now, topic_peers=topic, routing_peers=routing, period_s=self.telemetry_period_s)
        assert self.size.estimate is not None
        return self.size.estimate.nodes

    def addrs(self) -> list[str]:
        """Dialable addresses: a wildcard listen address (0.0.0.0, ::) is shown as each interface's
        IPv4 / IPv6 address (link-local IPv6 left out: it needs a zone a peer cannot know)."""
        out: list[str] = []
        for a in self.p2p.addrs():
            a = a if "/p2p/" in a else f"{a}/p2p/{self.peer_id}"
            if a.startswith("/ip4/0.0.0.0/"):
                out.extend(a.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/", 1) for ip in _local_ipv4s())
            elif a.startswith("/ip6/::/"):
                out.extend(a.replace("/ip6/::/", f"/ip6/{ip}/", 1) for ip in _local_ipv6s())
            else:
                out.append(a)
        # IPv4 first (py-libp2p lists its listeners in no particular order): the first address is
        # the one node_started and status show first, the one a person copies
        return sorted(dict.fromkeys(out), key=lambda a: not a.startswith("/ip4/"))

    def statistics(self) -> NodeStatistics:
        isl, opt, c = self.island, self.island.opt, self.island.counters
        rejected = Counter(c.rejected) + Counter(self.topic.rejected) + Counter(self.announce.rejected)
        last, reached = self.target.last, self.target.reached
        stats = NodeStatistics(
            v=STATUS_VERSION, version=__version__, peer_id=self.peer_id, addrs=self.addrs(),
            peers=self.p2p.connected_peers(), connections=self.p2p.connection_stats(),
            topic_peers=self.p2p.topic_peers(self.topic.topic),
            mesh={t: len(self.p2p.gossipsub.mesh.get(t, ())) for t in (self.topic.topic, self.telemetry.topic)},
            routing_table_size=self.p2p.routing_table_size(), dht=self.p2p.dht_stats(),
            network_size=self.network_size(), experiment_id=self.exp_id,
            experiment={"id": self.exp_id, "made_from": self.cfg.problem.canonical()},
            topics=[self.topic.topic, *([self.announce.topic] if self.takes_announced else []), self.telemetry.topic],
            problem=self.cfg.problem.canonical() | {"name": self.cfg.problem.name,
                                                    "episodes": self.cfg.problem.episodes},
            optimizer={"algorithm": opt.algorithm, "popsize": opt.popsize, "dim": opt.dim,
                       "settings": opt.settings(), "seed": self.seed, "restarts": opt.restart_count},
            migration={"enabled": isl.policy.enabled, "interval": isl.policy.interval,
                       "topology": isl.policy.topology, "accept_only_better": isl.policy.accept_only_better},
            island=IslandStatistics(
                generation=isl.generation, evaluations=isl.evaluations, episodes=isl.episodes_used,
                best_fitness=finite_or_none(isl.best_fitness), best_source=isl.best_source,
                mean_fitness=finite_or_none(isl.mean_fitness), sigma=finite_or_none(opt.sigma),
                evals_per_s=round(self.evals_per_s, 2), best_n=isl.best_n, exact=isl.deterministic),
            migrants=MigrantStatistics(sent=c.sent, received=c.received, accepted=c.accepted,
                                       rejected=dict(rejected)),
            telemetry_rejected=dict(self.telemetry.rejected),
            target=TargetStatistics(
                fitness=self.cfg.target,
                last_test=last.as_dict() | {"current": self.target.is_current(isl.best_params)} if last else None,
                reached=reached.as_dict() if reached else None, test_episodes_used=self.target.episodes_used,
                share=self.target.share if not isl.deterministic else 0.0, tests=dict(self.target.tests)),
            network={}, capabilities=dict(self.capabilities), banned_peers=sorted(isl.banned),
            peer_scores=_lowest_scores(self.p2p.gossipsub), pubsub_streams_rejected=self._bad_streams[0],
            forwarders_penalized=dict(self.forwarders_penalized),
            elite_fetch=dict(sorted(self.elites.stats.items())),
            telemetry_pull=dict(sorted(self.heartbeats.stats.items())),
            traffic=traffic.snapshot(), cpu=self.cpu.snapshot(self.evaluator.thread_cpu_s),
            workers=self.cfg.evaluation.workers, uptime_s=round(time.monotonic() - self.started_mono, 1),
            data_dir=str(self.data.path), pid=os.getpid(),
            pool=None if self.member is None else self.member.statistics(),
            reachability=None if self.reach is None else self.reach.snapshot())
        wall = time.time()
        own = to_json(self.peer_id, telemetry_of(stats, (), wall_time=wall), wall)  # our row, live
        return dataclasses.replace(stats, network=self.netview.snapshot(own=own))

    def status(self) -> dict[str, Any]:
        """The status document (protocols/gaia-status-v1.md): ``statistics()`` as plain data."""
        return self.statistics().as_status()

    def heartbeat(self) -> Telemetry:
        """Our heartbeat now (protocols/gaia-telemetry-v1.md), from the same snapshot as status."""
        return telemetry_of(self.statistics(), told_accepts(self.recent_accepts), wall_time=time.time())

    def checkpoint_state(self) -> dict[str, Any]:
        return {"island": self.island.to_checkpoint(), "seed": self.seed, "peer_id": self.peer_id,
                "problem": self.cfg.problem.canonical(), "written_at": time.time(),
                "target": self.target.to_checkpoint(),
                "pool": None if self.pool is None else self.pool.to_checkpoint()}

    async def write_checkpoint(self) -> None:
        state = self.checkpoint_state()  # snapshot here, on the loop: the island cannot change under it
        size = await trio.to_thread.run_sync(self.data.write_checkpoint, state)
        snap = state["island"]  # what is in the file, not where the island is by now
        log.info(logs.CHECKPOINT_WRITTEN, generation=snap["generation"], size_bytes=size,
                 best_fitness=finite_or_none(snap["best_fitness"]))


#: migrants waiting to be published at most; the island publishes at most one per
#: min_publish_interval_s, so a full queue means the network is stuck: the newest is dropped (counted)
PUBLISH_QUEUE = 4


class Console:
    """What a person watching the node sees: the live line (a terminal redraw at most 4 times a
    second) and a ``generation_completed`` log line at most every ``log_interval_s`` (every 30 s
    at least when the live line carries the rest)."""

    def __init__(self, log_interval_s: float) -> None:
        self.log_interval_s = log_interval_s
        self.last_bar_at = -math.inf
        self.last_log_at = -math.inf

    def generation(self, node: Node, effect: GenerationCompleted, now: float) -> None:
        bar = logs.progress()
        interval = max(self.log_interval_s, 30.0) if bar is not None else self.log_interval_s
        show_bar = bar is not None and now - self.last_bar_at >= 0.25
        show_log = now - self.last_log_at >= interval
        if not (show_bar or show_log):
            return
        s = node.statistics()
        if show_bar:
            self.last_bar_at = now
            last = s.target.last_test if not s.island.exact else None  # the estimate, and its check
            tested = f" (tested {_short(last['mean'])})" if last else ""
            bar.set(f"gen {effect.generation}  best {_short(effect.best_fitness)}{tested}  mean {_short(effect.mean_fitness)}"
                    f"  sigma {_short(effect.sigma)}  {s.island.evals_per_s:.0f} evals/s  {effect.evaluations} evals  "
                    f"peers {len(s.peers)}  migrants in {s.migrants.accepted} out {s.migrants.sent}")
        if show_log:
            self.last_log_at = now
            log.info(logs.GENERATION_COMPLETED, generation=effect.generation, evaluations=effect.evaluations,
                     episodes=effect.episodes, best_fitness=finite_or_none(effect.best_fitness),
                     gen_best=finite_or_none(effect.gen_best_fitness),
                     mean_fitness=finite_or_none(effect.mean_fitness), sigma=finite_or_none(effect.sigma),
                     evals_per_s=round(s.island.evals_per_s, 1), n_peers=len(s.peers))


# ---------------------------------------------------------------- effect handlers (never block)

def _request_evaluation(node: Node, effect: Evaluate) -> None:
    node.evaluations_in.send_nowait(effect)  # one generation in flight: the island asks for the next when told


def _generation_completed(node: Node, effect: GenerationCompleted) -> None:
    if effect.metrics.get("restarted"):
        opt = node.island.opt
        log.info(logs.OPTIMIZER_RESTARTED, generation=effect.generation, restarts=opt.restart_count,
                 popsize=opt.popsize, stop=list(opt.last_stop), best_fitness=finite_or_none(effect.best_fitness))
    node.console.generation(node, effect, trio.current_time())


def _publish_migrant(node: Node, effect: PublishMigrant) -> None:
    try:
        node.publishes_in.send_nowait(effect)
    except trio.WouldBlock:
        node.publishes_dropped += 1
        log.warning("migrant_publish_dropped", generation=effect.elite.generation, queued=PUBLISH_QUEUE,
                    dropped=node.publishes_dropped)


def _migrant_accepted(node: Node, effect: MigrantAccepted) -> None:
    gain = effect.fitness - effect.replaced_fitness
    node.recent_accepts.append(Migration(effect.src, effect.generation, gain if math.isfinite(gain) else effect.fitness))
    log.info(logs.MIGRANT_ACCEPTED, src=effect.src, generation=effect.generation, fitness=effect.fitness,
             replaced_fitness=finite_or_none(effect.replaced_fitness), claimed_fitness=effect.claimed_fitness,
             gain=finite_or_none(gain))


def _migrant_rejected(node: Node, effect: MigrantRejected) -> None:
    level = log.warning if effect.reason in LIES else log.info
    level(logs.MIGRANT_REJECTED, src=effect.src, reason=effect.reason, claimed_fitness=effect.claimed_fitness,
          fitness=effect.fitness, forwarder=effect.forwarder or None)
    # it passed on a lie it could not check: charged as if our validator had rejected it
    if effect.forwarder and effect.forwarder != node.peer_id and penalize(
            node.p2p.gossipsub, effect.forwarder, node.topic.topic):
        node.forwarders_penalized[effect.reason] += 1


def _ban(node: Node, effect: PeerBanned) -> None:
    log.warning(logs.PEER_BANNED, peer_id=effect.src, reason=effect.reason, lies=effect.lies)
    _blacklist(node, effect.src)


def _blacklist(node: Node, peer: str) -> None:
    from libp2p.peer.id import ID

    try:
        node.p2p.pubsub.add_to_blacklist(ID.from_base58(peer))  # drops its pubsub traffic
    except ValueError as e:  # a bad id string cannot come from a verified signature, but never crash
        log.error("peer_ban_failed", peer_id=peer, error=f"{type(e).__name__}: {e}")


def _pool_fetch_log(node: Node, effect: poolcore.FetchLog) -> None:
    log.info("pool_log_wanted", peer_id=effect.peer, start=effect.start, why=effect.why,
             generation=node.island.generation)
    assert node.member is not None
    node.member.fetch_log(effect)


def _pool_replay(node: Node, effect: poolcore.Replay) -> None:
    """The pool's log replaced ours from ``start``: the replica is rebuilt to it, the generation in
    flight abandoned (the runner stops waiting for it), and the island asks for the next one."""
    try:  # an Evaluate the runner has not taken yet is the abandoned one
        node._evaluations_out.receive_nowait()
    except trio.WouldBlock:
        pass
    assert node.member is not None
    before = node.island.generation
    if effect.start == 0 or before > effect.start:  # our past after the fork point differs: from the start
        effects = node.island.replay(effect.log, start=0, genesis=node.member.genesis(), rng=node.rng)
    else:  # the island may still lack the round the pool completed last: it gets it here
        effects = node.island.replay(effect.log[before:], start=before, genesis=None, rng=node.rng)
    log.info("pool_log_replayed", src=effect.src, start=effect.start, generation_before=before,
             generation=node.island.generation)
    node.member.abandon_round()
    node._dispatch(effects)


def _pool_evict(node: Node, effect: poolcore.Evict) -> None:
    log.warning("pool_member_evicted", peer_id=effect.peer, reason=str(effect.reason), detail=effect.detail[:200])
    _blacklist(node, effect.peer)


def _pool_keeper(node: Node, effect: poolcore.KeeperChanged) -> None:
    """Who keeps the pool's resident changed: the island assesses, publishes and tests only while
    it is us (core/pool.py ``Pool.keeper``)."""
    log.info("pool_resident_keeper", keeper=effect.keeper, ours=effect.ours, generation=node.island.generation)
    node._dispatch(node.island.handle(ResidentDuty(effect.ours), now=trio.current_time(), rng=node.rng))


#: the pool's inputs (core/pool.py): fed to the pool, not the island
POOL_INPUTS = (poolcore.RoundStarted, poolcore.ItemsEvaluated, poolcore.ItemsAbandoned, poolcore.ResultsReceived,
               poolcore.AccusationReceived, poolcore.MembersChanged, poolcore.Tick, poolcore.LogReceived)

#: every effect of the island (gaia_p2p/core/events.py) and of its pool (core/pool.py), and who carries it out
EFFECTS: dict[type, Callable[[Node, Any], None]] = {
    Evaluate: _request_evaluation,
    GenerationCompleted: _generation_completed,
    PublishMigrant: _publish_migrant,
    MigrantAccepted: _migrant_accepted,
    MigrantRejected: _migrant_rejected,
    PeerBanned: _ban,
    poolcore.EvaluateItems: lambda node, effect: node.member.want_evaluation(effect),
    poolcore.PublishResults: lambda node, effect: node.member.publish(effect),
    poolcore.RoundComplete: lambda node, effect: node.member.round_complete(effect),
    poolcore.AbandonWork: lambda node, effect: node.member.abandon(effect),
    poolcore.FetchLog: _pool_fetch_log,
    poolcore.Replay: _pool_replay,
    poolcore.Evict: _pool_evict,
    poolcore.KeeperChanged: _pool_keeper,
    poolcore.Accuse: lambda node, effect: node.member.publish(effect),
}
#: rejections that mean a peer lied (warned, not just told)
LIES = frozenset({"claim_mismatch", "claim_short"})


def _lowest_scores(gossipsub: Any, n: int = 16) -> dict[str, float]:
    """The n lowest gossipsub peer scores (net/scoring.py): honest peers sit at 0, offenders below."""
    from gaia_p2p.net.scoring import peer_scores

    try:
        return dict(list(peer_scores(gossipsub).items())[:n])
    except Exception:  # a view for status: never fail it
        return {}


def pool_settings(cfg: Config) -> dict[str, object]:
    """What a pool's replica is made from besides the experiment: members must agree on all of it."""
    i = cfg.island
    return {"optimizer": i.optimizer, "sigma": i.sigma, "popsize": cfg.popsize, "lr": i.lr, "restarts": i.restarts}


def _new_optimizer(cfg: Config, seed: int) -> Optimizer:
    x0 = None
    if cfg.problem.name in TEST_FUNCTIONS:
        # Test functions have their optimum at or near the origin: start each island somewhere else.
        x0 = np.random.default_rng([seed, 1]).uniform(-3.0, 3.0, size=cfg.problem.param_dim)
    elif cfg.problem.is_torch:
        # A torch module starts where its factory initialised it (zeros would zero a LayerNorm's gain).
        from gaia_p2p.problems.torch_policy import initial_params

        x0 = initial_params(cfg.problem)
    return make_optimizer(cfg.island.optimizer, cfg.problem.param_dim, sigma=cfg.island.sigma,
                          popsize=cfg.popsize, seed=seed, x0=x0, lr=cfg.island.lr, restarts=cfg.island.restarts)


def _restore_tests(node: Node, data: DataDir) -> None:
    """The tests on fresh episodes so far, from the checkpoint _make_island accepted (one written
    before tests were checkpointed has none): the share of episodes tests may take counts them
    over the node's whole life, not since its last start."""
    ck = data.read_checkpoint()
    if not ck or ck.get("target") is None:
        return
    try:
        node.target.restore(ck["target"])
    except (KeyError, TypeError, ValueError) as e:  # not worth refusing to start over: no tests known
        log.warning("checkpoint_tests_unreadable", error=f"{type(e).__name__}: {e}")


def _make_island(cfg: Config, data: DataDir, self_id: str) -> tuple[Island, int, poolcore.Pool | None]:
    """The island from the checkpoint, or a new one; a pool member's optimizer starts from the
    pool's genesis (seed from the pool id) and its pool log comes back from the checkpoint."""
    policy = MigrationPolicy(
        interval=cfg.migration.interval, accept_only_better=cfg.migration.accept_only_better,
        topology=Topology(cfg.migration.topology), random_k=cfg.migration.random_k, max_pending=cfg.migration.max_pending,
        min_publish_interval_s=cfg.migration.min_publish_interval_s, network_rate=cfg.migration.network_rate,
        publish_only_new=cfg.migration.publish_only_new, enabled=cfg.migration.enabled,
        entry=Entry(cfg.migration.entry), accept_margin=cfg.migration.accept_margin, max_lies=cfg.migration.max_lies)
    exp = experiment_id(cfg.problem)
    pid = poolcore.pool_id(exp, cfg.pool.name, pool_settings(cfg)) if cfg.pool.name else None
    pool = None
    if pid is not None:
        pool = poolcore.Pool(pid=pid, self_id=self_id, platform=platform_class(), episodes=cfg.problem.episodes,
                             policy=poolcore.PoolPolicy(check_share=cfg.pool.check_share, help_after=cfg.pool.help_after,
                                                        min_help_wait_s=cfg.pool.min_help_wait_s))
    if cfg.fresh:
        moved = data.move_checkpoint_aside()
        if moved:
            log.info("checkpoint_moved_aside", path=str(moved))
    ck = data.read_checkpoint()
    if ck is not None:
        isl_data = ck.get("island", {})
        if isl_data.get("experiment_id") != exp:
            raise CheckpointError(
                f"checkpoint {data.checkpoint} belongs to experiment {isl_data.get('experiment_id')}, but this "
                f"config is experiment {exp}; use another --data-dir or pass --fresh to move it aside")
        ck_pool = (ck.get("pool") or {}).get("pid")
        if ck_pool != pid:
            raise CheckpointError(
                f"checkpoint {data.checkpoint} belongs to {'pool ' + ck_pool if ck_pool else 'an island'}, but this "
                f"config is {'pool ' + pid if pid else 'an island'} (--pool and the island settings); use another "
                f"--data-dir or pass --fresh to move it aside")
        try:
            island = Island.from_checkpoint(isl_data, self_id=self_id, policy=policy,
                                            episodes=cfg.problem.episodes,
                                            deterministic=cfg.problem.deterministic,
                                            reeval_episodes=cfg.reeval_episodes, pool=pid)
            if pool is not None:
                pool.restore(ck["pool"])
        except (KeyError, TypeError, ValueError, LocalProtocolError) as e:
            raise CheckpointError(f"checkpoint {data.checkpoint} is incomplete ({type(e).__name__}: {e}); pass "
                                  f"--fresh to move it aside and start a new island") from None
        seed = int(ck.get("seed", 0))
        if pool is not None and pool.generation != island.generation:
            # written between the pool's round and the island's tell: the log is the truth
            island.replay(pool.log_from(0), start=0, genesis=_new_optimizer(cfg, seed), rng=np.random.default_rng(0))
        log.info(logs.CHECKPOINT_LOADED, path=str(data.checkpoint), generation=island.generation,
                 evaluations=island.evaluations, best_fitness=finite_or_none(island.best_fitness))
        return island, seed, pool
    if pid is not None:
        seed = poolcore.pool_seed(pid)
    else:
        seed = cfg.island.seed if cfg.island.seed is not None else int.from_bytes(os.urandom(4), "little")
    island = Island(optimizer=_new_optimizer(cfg, seed), experiment_id=exp, self_id=self_id, policy=policy,
                    episodes=cfg.problem.episodes, deterministic=cfg.problem.deterministic,
                    reeval_episodes=cfg.reeval_episodes, pool=pid)
    return island, seed, pool


async def run(cfg: Config, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    data = DataDir(cfg.data_dir)
    data.create()
    lock_fd = data.lock()
    try:
        await _run_locked(cfg, data, task_status)
    finally:
        os.close(lock_fd)


async def _run_locked(cfg: Config, data: DataDir, task_status: Any) -> None:
    listen = usable_listen_addrs(cfg.network.listen)  # no IPv6 here: IPv4 only, logged
    if listen != cfg.network.listen:
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, listen=listen))
    check_listen_ports_free(cfg.network.listen)
    key_pair = load_or_create_identity(data.path)
    # names (/dns4, /dns6, /dnsaddr) resolved once, here: one that does not resolve stops the node (exit 2)
    bootstrap = await resolve_bootstrap(dict.fromkeys((*cfg.network.bootstrap, *load_bootstrap_file(cfg))))
    from libp2p.peer.id import ID

    self_id = str(ID.from_pubkey(key_pair.public_key))
    structlog.contextvars.bind_contextvars(island_id=self_id[-8:])
    island, seed, pool = _make_island(cfg, data, self_id)
    exp = island.experiment_id
    topic_name = migrants_topic(exp)
    topic = MigrantTopic(topic_name, exp, island.opt.dim, self_id, measure=claim_checker(cfg.problem))
    tele = TelemetryTopic(telemetry_topic(exp), exp, self_id)
    evaluator = Evaluator(cfg.problem, cfg.evaluation.workers, backend=cfg.evaluation.backend,
                          device=cfg.evaluation.device)

    bad_streams = [0]  # counted from the first stream, before the Node exists

    def on_bad_stream(peer: str, error: str) -> None:
        bad_streams[0] += 1
        log.warning(logs.PUBSUB_STREAM_REJECTED, peer_id=peer, reason="undecodable_rpc", error=error)

    async with open_p2p(key_pair, cfg.network, on_bad_stream=on_bad_stream) as p2p:
        node = Node(cfg, data, island, seed, p2p, topic, evaluator, tele, bad_streams=bad_streams, pool=pool)
        _restore_tests(node, data)
        topic.on_lie = partial(_refuted, node)  # before the validator is installed, just below
        p2p.pubsub.set_topic_validator(topic_name, topic.validator, is_async_validator=False)
        for banned in island.banned:  # bans survive restarts (kept in the checkpoint)
            try:
                p2p.pubsub.add_to_blacklist(ID.from_base58(banned))
            except Exception as e:
                log.warning("peer_ban_failed", peer_id=banned, error=f"{type(e).__name__}: {e}")
        sub = await p2p.pubsub.subscribe(topic_name)
        if node.takes_announced:  # a subscription nobody reads would fill up: none without the fetcher
            p2p.pubsub.set_topic_validator(node.announce.topic, node.announce.validator, is_async_validator=False)
            announce_sub = await p2p.pubsub.subscribe(node.announce.topic)
        p2p.pubsub.set_topic_validator(tele.topic, tele.validator, is_async_validator=False)
        tele_sub = await p2p.pubsub.subscribe(tele.topic)
        p2p.host.set_stream_handler(control.STATUS_PROTOCOL, control.status_stream_handler(node.status))
        p2p.host.set_stream_handler(ELITE_PROTOCOL, node.elites.handle)
        p2p.host.set_stream_handler(TELEMETRY_PROTOCOL, node.heartbeats.handle)
        if cfg.network.autonat:
            node.reach = AutoNAT(p2p.host, rng=node.net_rng, advertised=node.addrs,
                                 confirmations=cfg.network.autonat_confirmations,
                                 interval_s=cfg.network.autonat_interval_s,
                                 limiter=DialBackLimiter(exempt_ips=cfg.network.limits_exempt))
            node.reach.install()
            if cfg.network.relay_client == "auto" and p2p.relay is not None:
                # behind NAT (AutoNAT says private): reserve relay slots and advertise circuit addresses
                node.reach.on_change(lambda status: p2p.relay.set_private(status == Reachability.PRIVATE))
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(control.serve_control, data.control_socket, node.status)
                if cfg.metrics_port is not None:
                    from gaia_p2p.node.metrics import serve_metrics

                    await nursery.start(serve_metrics, cfg.metrics_port, node.status)
                log.info(logs.NODE_STARTED, peer_id=self_id, addrs=node.addrs(), experiment_id=exp,
                         topic=topic_name, problem=cfg.problem.name, dim=island.opt.dim,
                         optimizer=island.opt.algorithm, settings=island.opt.settings(), popsize=island.opt.popsize,
                         seed=seed, workers=cfg.evaluation.workers, bootstrap=list(bootstrap),
                         pool=None if pool is None else pool.pid, pool_name=cfg.pool.name or None,
                         data_dir=str(data.path), generation=island.generation, version=__version__)
                nursery.start_soon(run_discovery, p2p, bootstrap, cfg.network, node.net_rng)
                if cfg.network.keepalive_s > 0:
                    # silent for 4 periods (20 s by default) = dead: a busy machine is not a dead link
                    nursery.start_soon(partial(keep_alive, p2p, interval_s=cfg.network.keepalive_s,
                                               timeout_s=2 * cfg.network.keepalive_s,
                                               dead_after_s=4 * cfg.network.keepalive_s,
                                               rate_per_s=cfg.network.keepalive_rate, rng=node.net_rng))
                if node.reach is not None:
                    nursery.start_soon(node.reach.run)
                nursery.start_soon(_publish_migrants, node)
                nursery.start_soon(_receive_migrants, node, sub)
                nursery.start_soon(_fetch_elites, node)
                if node.takes_announced:
                    nursery.start_soon(_receive_announcements, node, announce_sub)
                    nursery.start_soon(_fetch_announced, node)
                nursery.start_soon(_checkpoint_loop, node)
                nursery.start_soon(_publish_telemetry, node)
                nursery.start_soon(_receive_telemetry, node, tele_sub)
                nursery.start_soon(_pull_unheard, node)
                if node.member is not None:
                    await nursery.start(node.member.run)
                task_status.started(node)
                await _run_generations(node)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(GRACEFUL_TIMEOUT_S):
                log.info(logs.NODE_STOPPING, generation=node.island.generation)
                await node.write_checkpoint()
                if logs.progress() is not None:
                    logs.progress().close()
                log.info(logs.NODE_STOPPED, generation=node.island.generation,
                         evaluations=node.island.evaluations, best_fitness=finite_or_none(node.island.best_fitness),
                         **({"pool": node.member.pool.summary()} if node.member is not None else {}))


# ---------------------------------------------------------------- the tasks that feed the loop

async def _run_generations(node: Node) -> None:
    """Evaluate each generation the island asks for (in the workers), then feed the result; the
    target test and the duty cycle's rest come between two generations (a pool member rests after
    each of its evaluations instead: node/pool.py). Returns at ``max_generations`` or, with
    ``stop_at_target``, once the test passed."""
    isl, cfg = node.island, node.cfg
    first = True
    node.start()
    async for effect in node._evaluations_out:
        if cfg.max_generations is not None and isl.generation >= cfg.max_generations:
            return
        changed = node.peers_changed()
        if changed is not None:
            node.feed(changed)
        t0, cpu0 = time.perf_counter(), node.evaluator.cpu_s + node.cpu.island_s
        if node.member is None:
            fit, extra_fit = await _evaluate(node, effect)
            own = None
        else:
            pooled = await node.member.evaluate_generation(effect)
            if pooled is None:
                continue  # the pool's log replaced this generation: the island has asked for the next
            fit, extra_fit, own = pooled
        dt = time.perf_counter() - t0
        # our own rate: a pool member evaluated only its part, and views add up the members' rates
        done = len(effect.candidates) if own is None else own
        node.evals_per_s = (done + len(effect.extras)) / dt if dt > 0 else 0.0
        node.feed(EvaluationDone(effect.generation, fit, extra_fit, evaluated=own))
        if await _maybe_test(node) and cfg.stop_at_target:
            log.info(logs.NODE_STOPPING, reason="target_reached")
            return
        if node.member is None and not first:
            await node.rest(cpu_s=node.evaluator.cpu_s + node.cpu.island_s - cpu0, wall_s=time.perf_counter() - t0)
        first = False  # the first generation also started the workers: not a measure of work
        await trio.sleep(0)  # let the network breathe between generations, even on trivial problems


async def _evaluate(node: Node, effect: Evaluate) -> tuple[np.ndarray, np.ndarray]:
    """Candidates on their seeds and extras on theirs, concurrently (both batches share the workers)."""
    same_seeds = not len(effect.extras) or effect.extra_seeds in ((), effect.seeds)
    if same_seeds:
        X = np.vstack([effect.candidates, effect.extras]) if len(effect.extras) else effect.candidates
        fit = await node.evaluator.evaluate(X, effect.seeds)
        n = len(effect.candidates)
        return fit[:n], fit[n:]
    out: dict[str, np.ndarray] = {}

    async def one(key: str, X: np.ndarray, seeds: tuple[int, ...]) -> None:
        out[key] = await node.evaluator.evaluate(X, seeds)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "c", effect.candidates, effect.seeds)
        nursery.start_soon(one, "e", effect.extras, effect.extra_seeds)
    return out["c"], out["e"]


async def _maybe_test(node: Node) -> bool:
    """A test on fresh episodes (gaia_p2p/core/target.py: the target's or a periodic one), when
    due. True when it ran and passed the target."""
    isl = node.island
    if not isl.keeps_resident:
        # a pool's resident is tested by the member that keeps it (core/pool.py Pool.keeper); the
        # others go on evaluating, and help with its items meanwhile
        return False
    why = node.target.due(best_params=isl.best_params, best_fitness=isl.best_fitness, best_n=isl.best_n,
                          deterministic=isl.deterministic, now=trio.current_time(),
                          training_episodes=isl.episodes_used)
    if why is None:
        return False
    t0, cpu = trio.current_time(), 0.0
    if isl.deterministic:
        scores, spent = TargetTest.exact(isl.best_fitness), 0
    else:
        scores, cpu = await node.evaluator.call_timed(partial(evaluate_policy, problem=node.cfg.problem),
                                                      isl.best_params, node.cfg.problem.hidden,
                                                      node.cfg.test_episodes)
        spent = int(scores["episodes"])
    first_pass = node.target.reached is None
    result = node.target.record(scores, generation=isl.generation, episodes=isl.episodes_used,
                                source=isl.best_source, spent_episodes=spent, why=why, at=time.time(),
                                estimate=finite_or_none(isl.best_fitness))
    log.info(logs.POLICY_TESTED, target=node.target.target, test_episodes_used=node.target.episodes_used,
             **result.as_dict())
    if result.passed and first_pass:
        log.info(logs.TARGET_REACHED, target=node.target.target, **result.as_dict())
    if node.member is not None and cpu > 0:
        # An island rests once a generation, after its test too (_run_generations); a pool member
        # rests after each of its evaluations instead (node/pool.py), and a test's episodes are
        # evaluations: on the duty cycle, a member is no faster at testing than an island.
        await node.rest(cpu_s=cpu, wall_s=trio.current_time() - t0)
    return bool(result.passed)


async def _publish_migrants(node: Node) -> None:
    async for effect in node._publishes_out:
        elite = effect.elite
        data = codec.encode_elite(elite)
        topic = node.topic.topic
        if codec.announces(len(data), node.cfg.migration.gossip_max_bytes):
            # too big to gossip: the claim goes out, the parameters to whoever asks (node.elites serves them)
            topic = node.announce.topic
            data = codec.encode_announcement(Announcement(experiment_id=elite.experiment_id,
                                                          generation=elite.generation, fitness=elite.fitness,
                                                          dim=elite.dim, size=len(data)))
            node.elites.stats["announced"] += 1
        await node.p2p.pubsub.publish(topic, data)
        log.info(logs.MIGRANT_PUBLISHED, topic=topic, generation=elite.generation, best_fitness=elite.fitness,
                 size_bytes=len(data), n_peers=len(node.p2p.topic_peers(topic)))


def _refuted(node: Node, src: str) -> None:
    """The gossipsub validator refuted a claim of ``src``: a lie, counted (and banned) by the island.
    Runs inside the sync validator, so the ban's blacklist applies before the next message."""
    node.feed(ClaimRefuted(src))


async def _receive_migrants(node: Node, sub: Any) -> None:
    from libp2p.peer.id import ID

    while True:
        msg = await sub.get()
        src = str(ID(msg.from_id))
        if src == node.peer_id:
            continue  # our own publish, echoed by the local pubsub
        try:
            elite, via = node.topic.take(msg)  # decoded by the validator, with who forwarded it
        except RemoteProtocolError as e:  # cannot happen after validation, but never let a peer kill us
            node.topic.reject(e.reason, src, e.detail)
            continue
        log.debug("migrant_received", src=src, via=via, generation=elite.generation, claimed_fitness=elite.fitness)
        node.feed(MigrantReceived(src, elite, via=via))


def _our_claim(node: Node) -> float | None:
    """Our resident's latest claim, what a fetch asks to beat (None: no resident yet)."""
    return finite_or_none(node.island.best_last) if node.island.best_params is not None else None


def _large_elites(node: Node) -> bool:
    """Whether our elites are too big for a relay's circuit (they wait for a direct connection). An
    elite weighs 4 bytes a parameter, plus a few hundred of envelope."""
    return 4 * node.island.opt.dim + 512 > node.cfg.network.relay_fetch_max_bytes


def _waits_for_direct(node: Node, peer: str) -> bool:
    """Our elites are too big for a relay's circuit and we hold no direct connection to ``peer``:
    a fetch now would cross a relay (or dial one), so it waits. Asked again just before each fetch,
    since a connection can go between an announcement and its fetch."""
    return _large_elites(node) and peer in node.p2p.no_direct_path((peer,))


async def _receive_announcements(node: Node, sub: Any) -> None:
    """Large elites' announcements: the ones worth fetching are queued for ``_fetch_announced``."""
    from libp2p.peer.id import ID

    while True:
        msg = await sub.get()
        src = str(ID(msg.from_id))
        if src == node.peer_id:
            continue
        try:
            ann, _ = node.announce.take(msg)
        except RemoteProtocolError as e:
            node.announce.reject(e.reason, src, e.detail)
            continue
        outcome = node.announced.offer(src, ann.fitness, ours=_our_claim(node), topology=node.island.policy.topology,
                                       relayed_only=_waits_for_direct(node, src))
        node.elites.stats[f"announcement_{outcome}"] += 1
        log.debug("announcement_received", src=src, generation=ann.generation, claimed_fitness=ann.fitness,
                  size_bytes=ann.size, outcome=str(outcome))
        if outcome == AnnounceOutcome.QUEUED:
            node.announced_wake.set()


async def _fetch_announced(node: Node) -> None:
    """Fetch the announced elites that beat ours, one at a time, best claim first (AnnouncedFetches
    decides); each enters the island as a migrant from its announcer."""
    while True:
        ours = _our_claim(node)
        due = node.announced.next(trio.current_time(), ours)
        if due is None:
            wait = node.announced.wait_s(trio.current_time())
            node.announced_wake = trio.Event()
            with trio.move_on_after(math.inf if wait is None else wait):
                await node.announced_wake.wait()
            continue
        src, claim = due
        if _waits_for_direct(node, src):  # its next announcement is offered again
            node.elites.stats[f"announcement_{AnnounceOutcome.DEFERRED_RELAYED}"] += 1
            continue
        elite, outcome = await node.elites.fetch(src, ours)
        if outcome == FetchOutcome.ANSWERED_RATE_LIMITED:  # the announcer is busy serving others: later
            node.announced.offer(src, claim, ours=ours, topology=node.island.policy.topology, relayed_only=False)
        if elite is not None:
            log.info(logs.ELITE_FETCHED, src=src, why="announced", generation=elite.generation,
                     claimed_fitness=elite.fitness)
            node.feed(MigrantReceived(src, elite))


async def _fetch_elites(node: Node, *, poll_s: float = 1.0, join_window_s: float = 120.0) -> None:
    """Ask peers for their best over /gaia/elite/1.0.0 as the FetchPlan says (gaia_p2p/core/schedule.py).
    Every answer says only what beats our resident's claim (``above``)."""
    isl = node.island
    if not isl.policy.enabled or not node.cfg.migration.fetch:
        return
    plan = FetchPlan(self_id=node.peer_id, topology=isl.policy.topology, interval=isl.policy.interval,
                     started_at=trio.current_time(), join_peers=JOIN_PEERS, join_window_s=join_window_s,
                     pull_min_s=PULL_MIN_S)
    large = _large_elites(node)
    while not plan.finished(trio.current_time()):
        await trio.sleep(poll_s)
        live = frozenset(node.p2p.topic_peers(node.topic.topic)) - isl.banned
        asks = plan.targets(now=trio.current_time(), live=live, generation=isl.generation,
                            random_sources=isl.random_sources, rng=node.net_rng,
                            relayed=node.p2p.no_direct_path(live), large=large)
        if plan.deferred:
            node.elites.stats["deferred_relayed"] = plan.deferred
        for peer, why in asks:
            elite, outcome = await node.elites.fetch(peer, _our_claim(node))
            plan.answered(peer, why, outcome)
            if elite is None:
                continue
            log.info(logs.ELITE_FETCHED, src=peer, why=str(why), generation=elite.generation,
                     claimed_fitness=elite.fitness)
            node.feed(MigrantReceived(peer, elite))


def telemetry_of(s: NodeStatistics, migrations: tuple[Migration, ...], *, wall_time: float) -> Telemetry:
    """A heartbeat from a statistics snapshot."""
    isl, m = s.island, s.migrants
    return Telemetry(
        experiment_id=s.experiment_id, time=wall_time, generation=isl.generation, evaluations=isl.evaluations,
        episodes=isl.episodes, evals_per_s=float(isl.evals_per_s), best_fitness=isl.best_fitness,
        mean_fitness=isl.mean_fitness, sigma=isl.sigma, algorithm=s.optimizer["algorithm"],
        settings=dict(s.optimizer["settings"]), sent=m.sent, received=m.received, accepted=m.accepted,
        rejected=sum(m.rejected.values()), peers=len(s.peers), cpus=int(s.capabilities["cpus"]),
        gpu=s.capabilities["gpu"], gpu_mem_mb=int(s.capabilities["gpu_mem_mb"]), migrations=migrations,
        exact=isl.exact, tested=None if isl.exact else tested_of(s.target.last_test, wall_time=wall_time),
        pool=None if s.pool is None else pool_share_of(s.pool, me=s.peer_id))


def pool_share_of(p: Any, *, me: str) -> PoolShare:
    """The heartbeat's ``pool`` (r5; ``kp``, r6) from the pool's statistics (core/pool.Pool.statistics)."""
    return PoolShare(pool_id=p["id"], members=len(p["members"]), own=p["own_items"], checks=p["checks"],
                     evicted=len(p["evicted"]), keeps=p["resident_keeper"] in (None, me))


def tested_of(last: Any, *, wall_time: float) -> LastTest | None:
    """The heartbeat's ``tst``: the last test on fresh episodes, if any (a deterministic problem's
    heartbeat says ``exact`` instead: its "test" is the estimate itself)."""
    if not last or not math.isfinite(last["mean"]):
        return None
    return LastTest(mean=last["mean"], episodes=last["test_episodes"], generation=last["generation"],
                    age=max(0.0, wall_time - last["at"]), current=bool(last["current"]), source=last["source"])


#: Acceptances one heartbeat carries at most (the wire allows 8). The heartbeat period grows with the
#: network (n / telemetry_rate), and so does the number of acceptances between two heartbeats: with 8
#: the heartbeat grew from ~0.4 to ~0.9 KB per copy between 5 and 40 nodes (docs/BENCHMARKS.md).
ACC_PER_HEARTBEAT = 3


def told_accepts(recent: Any) -> tuple[Migration, ...]:
    """The ACC_PER_HEARTBEAT largest gains among the acceptances since the last heartbeat, oldest first."""
    top = sorted(recent, key=lambda m: m.gain, reverse=True)[:ACC_PER_HEARTBEAT]
    return tuple(m for m in recent if m in top)


def telemetry_period(node: Node) -> float:
    """telemetry_interval_s, stretched so the whole network sends about telemetry_rate heartbeats/s
    (every node of network_size(), at the same pace): bytes per node stay flat in N. Not the raw
    topic peers: fresh identities on the topic would stretch it (core/netsize.py)."""
    period = node.cfg.telemetry_interval_s
    if node.cfg.telemetry_rate > 0:
        period = max(period, node.network_size() / node.cfg.telemetry_rate)
    return period


async def _publish_telemetry(node: Node) -> None:
    """A small signed heartbeat every telemetry_period (protocols/gaia-telemetry-v1.md); the first
    one at a random phase so that nodes started together do not heartbeat together."""
    await trio.sleep(node.cfg.telemetry_interval_s * node.net_rng.uniform(0.5, 1.5))
    while True:
        data = encode_telemetry(node.heartbeat())
        node.recent_accepts.clear()  # each acceptance is told once (receivers keep their own history)
        await node.p2p.pubsub.publish(node.telemetry.topic, data)
        log.debug("telemetry_published", size_bytes=len(data))
        node.telemetry_period_s = telemetry_period(node)
        await trio.sleep(node.telemetry_period_s * node.net_rng.uniform(0.9, 1.1))


async def _receive_telemetry(node: Node, sub: Any) -> None:
    from libp2p.peer.id import ID

    while True:
        msg = await sub.get()
        src = str(ID(msg.from_id))
        try:
            t, _ = node.telemetry.take(msg)
        except RemoteProtocolError as e:  # validated already; never let a peer kill us
            node.telemetry.reject(e.reason, src, e.detail)
            continue
        _heard(node, src, t)


def _heard(node: Node, src: str, t: Telemetry) -> None:
    """A heartbeat of ``src``, gossiped or pulled, into the network view and the size estimate."""
    node.netview.add(src, t)
    if src != node.peer_id:
        node.size.heard_island(src, trio.current_time())


#: how often a node pulls the heartbeat of one topic peer it has never heard from (seconds). The
#: telemetry budget makes gossiped heartbeats rare (40 s apart in a network of 2, 800 s in one of
#: 40): without the pull a peer that joined is missing from status and watch for that long. Only
#: peers never heard from, each asked once: one small exchange per new peer, at a bounded rate
#: whatever joins.
UNHEARD_PULL_EVERY_S = 2.0
#: peers asked once already (they answered, or could not), remembered at most
MAX_PULLED_ONCE = 4096


async def _pull_unheard(node: Node) -> None:
    """Pull, once each, the heartbeat of topic peers we have never heard from (UNHEARD_PULL_EVERY_S);
    the answer enters the network view as a gossiped heartbeat would."""
    asked: OrderedDict[str, None] = OrderedDict()
    while True:
        await trio.sleep(UNHEARD_PULL_EVERY_S)
        unheard = sorted(set(node.p2p.topic_peers(node.topic.topic)) - node.island.banned
                         - set(node.netview.islands) - set(asked))
        if not unheard:
            continue
        peer = unheard[int(node.net_rng.integers(len(unheard)))]
        asked[peer] = None
        while len(asked) > MAX_PULLED_ONCE:
            asked.popitem(last=False)
        t, outcome = await pull(node.p2p.host, peer, node.exp_id)
        node.heartbeats.stats[f"pull_{outcome}"] += 1
        if t is not None:
            _heard(node, peer, t)


async def _checkpoint_loop(node: Node) -> None:
    last_gen = node.island.generation
    while True:
        await trio.sleep(node.cfg.checkpoint_interval_s)
        if node.island.generation != last_gen:
            last_gen = node.island.generation
            await node.write_checkpoint()
