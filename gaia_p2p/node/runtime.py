"""The node: one nursery tree that drives the pure island and executes its effects.

    run(config, task_status=...)   started with ``await nursery.start(run, cfg)``; hands back the
                                   ``Node`` once it listens (addresses with the real port).

Tasks: host+pubsub+dht (net/host.py), discovery, migrants receiver, control socket, checkpoints,
and the island loop (ask -> evaluate in workers -> tell -> publish). Cancelling the scope (SIGINT /
SIGTERM via node/shutdown.py) stops everything and a final checkpoint is written, shielded.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, OrderedDict, deque
from functools import partial
from typing import Any

import numpy as np
import structlog
import trio

from gaia_p2p import __version__, logs
from gaia_p2p.config import Config, load_bootstrap_file
from gaia_p2p.core import codec, migration
from gaia_p2p.core.events import (
    ClaimRefuted,
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
from gaia_p2p.core.experiment import TEST_FUNCTIONS, experiment_id, migrants_topic, telemetry_topic
from gaia_p2p.core.telemetry import Migration, Telemetry, encode_telemetry
from gaia_p2p.core.island import Island, MigrationPolicy
from gaia_p2p.core.migration import Entry, Topology
from gaia_p2p.core.netsize import SizeEstimate, estimate_size, window_for
from gaia_p2p.core.optimizer import make_optimizer
from gaia_p2p.core.schedule import duty_sleep, pick
from gaia_p2p.errors import CheckpointError, RemoteProtocolError
from gaia_p2p.net import traffic
from gaia_p2p.net.discovery import run_discovery
from gaia_p2p.net.host import P2P, check_listen_ports_free, load_or_create_identity, open_p2p
from gaia_p2p.net.liveness import keep_alive
from gaia_p2p.node import control
from gaia_p2p.node.evaluator import Evaluator
from gaia_p2p.node.fetch import ELITE_PROTOCOL, JOIN_PEERS, PULL_MIN_S, EliteService
from gaia_p2p.node.gossip import MigrantTopic, TelemetryTopic, claim_checker, penalize
from gaia_p2p.node.netview import NetView, local_capabilities
from gaia_p2p.node.pull import TELEMETRY_PROTOCOL, TelemetryService
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


#: Peers (topic, routing table) and islands (telemetry) network_size() keeps a first-seen time for.
MAX_TRACKED = 4096
MAX_HEARD = 1024  # the network view's bound (node/netview.py)


def _first_seen(prev: dict[str, float], now_seen: Any, now: float) -> dict[str, float]:
    """``prev`` for the peers still there, ``now`` for the new ones; a peer that left is forgotten (it
    starts over if it comes back). At most MAX_TRACKED peers (the rest are not counted)."""
    out: dict[str, float] = {}
    for p in now_seen:
        if len(out) >= MAX_TRACKED:
            break
        out[p] = prev.get(p, now)
    return out


def _short(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


class Node:
    """Everything a running node owns. Built by ``run``; read by status and tests."""

    def __init__(self, cfg: Config, data: DataDir, island: Island, seed: int, p2p: P2P, topic: MigrantTopic,
                 evaluator: Evaluator, telemetry: TelemetryTopic,
                 bad_streams: list[int]) -> None:
        self.cfg = cfg
        self.data = data
        self.island = island
        self.seed = seed
        self.p2p = p2p
        self.topic = topic
        self.telemetry = telemetry
        self.netview = NetView()
        self.recent_accepts: deque[Migration] = deque(maxlen=8)
        self.capabilities = local_capabilities(cfg.evaluation.backend)
        self.evaluator = evaluator
        self.exp_id = island.experiment_id
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self._bad_streams = bad_streams  # pubsub streams reset for an undecodable RPC (fix A)
        self.forwarders_penalized: Counter[str] = Counter()  # P4 charged after delivery, by reason
        self.cpu = traffic.CpuClock()
        self.telemetry_period_s = cfg.telemetry_interval_s  # the current one (telemetry_period)
        # network_size(): what the node has seen (peer -> first seen, island -> first and last heard,
        # trio's clock), the estimate (core/netsize.py), recounted at most once a second
        self.size_started_at = trio.current_time()
        self._topic_seen: dict[str, float] = {}
        self._routing_seen: dict[str, float] = {}
        self.heard: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._size: SizeEstimate | None = None
        self.evals_per_s = 0.0
        self.last_gen_log_at = -math.inf
        self.last_bar_at = -math.inf
        self.last_tested: bytes | None = None
        self.last_test_at = -math.inf
        self.last_test: dict[str, Any] | None = None
        self.target_reached: dict[str, Any] | None = None
        self.test_episodes_used = 0
        # One seeded generator for every input the island gets; a resumed node continues a new stream.
        self.rng = np.random.default_rng([seed, island.generation, 7])
        # the shell's own draws (jitter, whom to ask), apart so that network timing never shifts the island's stream
        self.net_rng = np.random.default_rng([seed, island.generation, 11])
        # /gaia/elite/1.0.0: our best to peers that ask, theirs to us (node/fetch.py)
        self.elites = EliteService(p2p.host, self.exp_id, island.opt.dim, self.best_for_fetch)
        # /gaia/telemetry/1.0.0: our heartbeat now, to a watcher that asks (node/pull.py)
        self.heartbeats = TelemetryService(self.exp_id, lambda: encode_telemetry(telemetry_of(self)))

    def best_for_fetch(self) -> tuple[bytes, float] | None:
        """Our resident as the elite protocol serves it (the same bytes a publish would carry)."""
        if self.island.best_params is None:
            return None
        elite = self.island.best_elite()
        return codec.encode_elite(elite), elite.fitness

    @property
    def bad_streams(self) -> int:
        return self._bad_streams[0]

    @property
    def peer_id(self) -> str:
        return self.p2p.peer_id

    def network_size(self) -> int:
        """Nodes in the experiment, us included, as far as we can tell, Sybil-resistant: peers on the
        topic and connected peers in the DHT routing table count once they have been there a minute,
        islands heard on telemetry once first heard a minute ago, and the estimate rises at most about
        x2 a minute (gaia_p2p/core/netsize.py). Only collects what it needs; the estimate decides."""
        now = trio.current_time()
        if self._size is not None and now - self._size.at < 1.0:  # asked before every generation
            return self._size.nodes
        topic = [p for p in self.p2p.topic_peers(self.topic.topic) if p not in self.island.banned]
        self._topic_seen = _first_seen(self._topic_seen, topic, now)
        # routing-table peers while connected: py-libp2p keeps a peer that left in the table until a
        # full bucket or an hour evicts it, so an identity that visited once would count for good
        connected = set(self.p2p.connected_peers())
        routing = (p for p in map(str, self.p2p.routing_table_peers()) if p in connected)
        self._routing_seen = _first_seen(self._routing_seen, routing, now)
        self._size = estimate_size(now=now, started_at=self.size_started_at, topic_peers=self._topic_seen,
                                   routing_peers=self._routing_seen, heard=self.heard, prev=self._size,
                                   heard_window_s=window_for(self.telemetry_period_s))
        return self._size.nodes

    def heard_island(self, peer: str, now: float) -> None:
        """A heartbeat of ``peer`` arrived (for network_size); the oldest-heard beyond MAX_HEARD go."""
        first, _ = self.heard.pop(peer, (now, now))
        self.heard[peer] = (first, now)
        while len(self.heard) > MAX_HEARD:
            self.heard.popitem(last=False)

    def addrs(self) -> list[str]:
        """Dialable addresses: a wildcard listen address (0.0.0.0) is shown as each interface's IPv4."""
        out: list[str] = []
        for a in self.p2p.addrs():
            a = a if "/p2p/" in a else f"{a}/p2p/{self.peer_id}"
            if a.startswith("/ip4/0.0.0.0/"):
                out.extend(a.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/", 1) for ip in _local_ipv4s())
            else:
                out.append(a)
        return list(dict.fromkeys(out))

    def status(self) -> dict[str, Any]:
        isl = self.island
        rejected = dict(isl.counters.rejected)
        for reason, n in self.topic.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
        telemetry_rejected = dict(self.telemetry.rejected)
        opt = isl.opt
        return {
            "v": 1,
            "version": __version__,
            "peer_id": self.peer_id,
            "addrs": self.addrs(),
            "peers": self.p2p.connected_peers(),
            "connections": self.p2p.connection_stats(),
            "topic_peers": self.p2p.topic_peers(self.topic.topic),
            # gossipsub mesh peers per topic: each message arrives about once per mesh peer
            "mesh": {t: len(self.p2p.gossipsub.mesh.get(t, ())) for t in (self.topic.topic, self.telemetry.topic)},
            "routing_table_size": self.p2p.routing_table_size(),
            "dht": self.p2p.dht_stats(),
            "network_size": self.network_size(),
            "experiment_id": self.exp_id,
            # what the id is the hash of (protocols/gaia-migration-v1.md, "Experiment id and topic")
            "experiment": {"id": self.exp_id, "made_from": self.cfg.problem.canonical()},
            "topics": [self.topic.topic, self.telemetry.topic],
            "problem": self.cfg.problem.canonical() | {"name": self.cfg.problem.name,
                                                       "episodes": self.cfg.problem.episodes},
            "optimizer": {"algorithm": opt.algorithm, "popsize": opt.popsize, "dim": opt.dim,
                          "settings": opt.settings(), "seed": self.seed,
                          "restarts": opt.restart_count},
            "migration": {"enabled": isl.policy.enabled, "interval": isl.policy.interval,
                          "topology": isl.policy.topology, "accept_only_better": isl.policy.accept_only_better},
            "island": {
                "generation": isl.generation,
                "evaluations": isl.evaluations,
                "episodes": isl.episodes_used,
                "best_fitness": _finite_or_none(isl.best_fitness),
                "best_source": isl.best_source,
                "mean_fitness": _finite_or_none(isl.mean_fitness),
                "sigma": _finite_or_none(opt.sigma),
                "evals_per_s": round(self.evals_per_s, 2),
            },
            "migrants": {"sent": isl.counters.sent, "received": isl.counters.received,
                         "accepted": isl.counters.accepted, "rejected": rejected},
            "telemetry_rejected": telemetry_rejected,
            "target": {"fitness": self.cfg.target, "last_test": self.last_test, "reached": self.target_reached,
                       "test_episodes_used": self.test_episodes_used},
            "network": self.netview.snapshot(),
            "capabilities": self.capabilities,
            "banned_peers": sorted(isl.banned),
            "peer_scores": _lowest_scores(self.p2p.gossipsub),
            "pubsub_streams_rejected": self.bad_streams,
            "forwarders_penalized": dict(self.forwarders_penalized),
            "elite_fetch": dict(sorted(self.elites.stats.items())),
            "telemetry_pull": dict(sorted(self.heartbeats.stats.items())),
            "traffic": traffic.snapshot(),
            "cpu": self.cpu.snapshot(self.evaluator.thread_cpu_s),
            "workers": self.cfg.evaluation.workers,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "data_dir": str(self.data.path),
            "pid": os.getpid(),
        }

    def checkpoint_state(self) -> dict[str, Any]:
        return {"island": self.island.to_checkpoint(), "seed": self.seed, "peer_id": self.peer_id,
                "problem": self.cfg.problem.canonical(), "written_at": time.time()}

    async def write_checkpoint(self) -> None:
        state = self.checkpoint_state()  # snapshot here, on the loop: the island cannot change under it
        size = await trio.to_thread.run_sync(self.data.write_checkpoint, state)
        snap = state["island"]  # what is in the file, not where the island is by now
        log.info(logs.CHECKPOINT_WRITTEN, generation=snap["generation"], size_bytes=size,
                 best_fitness=_finite_or_none(snap["best_fitness"]))


def _lowest_scores(gossipsub: Any, n: int = 16) -> dict[str, float]:
    """The n lowest gossipsub peer scores (net/scoring.py): honest peers sit at 0, offenders below."""
    from gaia_p2p.net.scoring import peer_scores

    try:
        return dict(list(peer_scores(gossipsub).items())[:n])
    except Exception:  # a view for status: never fail it
        return {}


def _make_island(cfg: Config, data: DataDir, self_id: str) -> tuple[Island, int]:
    policy = MigrationPolicy(
        interval=cfg.migration.interval, accept_only_better=cfg.migration.accept_only_better,
        topology=Topology(cfg.migration.topology), random_k=cfg.migration.random_k, max_pending=cfg.migration.max_pending,
        min_publish_interval_s=cfg.migration.min_publish_interval_s, network_rate=cfg.migration.network_rate,
        publish_only_new=cfg.migration.publish_only_new, enabled=cfg.migration.enabled,
        entry=Entry(cfg.migration.entry), accept_margin=cfg.migration.accept_margin, max_lies=cfg.migration.max_lies)
    exp = experiment_id(cfg.problem)
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
        try:
            island = Island.from_checkpoint(isl_data, self_id=self_id, policy=policy,
                                            episodes=cfg.problem.episodes,
                                            deterministic=cfg.problem.deterministic,
                                            reeval_episodes=cfg.reeval_episodes)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {data.checkpoint} is incomplete ({type(e).__name__}: {e}); pass "
                                  f"--fresh to move it aside and start a new island") from None
        seed = int(ck.get("seed", 0))
        log.info(logs.CHECKPOINT_LOADED, path=str(data.checkpoint), generation=island.generation,
                 evaluations=island.evaluations, best_fitness=_finite_or_none(island.best_fitness))
        return island, seed
    seed = cfg.island.seed if cfg.island.seed is not None else int.from_bytes(os.urandom(4), "little")
    x0 = None
    if cfg.problem.name in TEST_FUNCTIONS:
        # Test functions have their optimum at or near the origin: start each island somewhere else.
        x0 = np.random.default_rng([seed, 1]).uniform(-3.0, 3.0, size=cfg.problem.param_dim)
    opt = make_optimizer(cfg.island.optimizer, cfg.problem.param_dim, sigma=cfg.island.sigma,
                         popsize=cfg.popsize, seed=seed, x0=x0, lr=cfg.island.lr,
                         restarts=cfg.island.restarts)
    island = Island(optimizer=opt, experiment_id=exp, self_id=self_id, policy=policy,
                    episodes=cfg.problem.episodes, deterministic=cfg.problem.deterministic,
                    reeval_episodes=cfg.reeval_episodes)
    return island, seed


async def run(cfg: Config, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    data = DataDir(cfg.data_dir)
    data.create()
    lock_fd = data.lock()
    try:
        await _run_locked(cfg, data, task_status)
    finally:
        os.close(lock_fd)


async def _run_locked(cfg: Config, data: DataDir, task_status: Any) -> None:
    check_listen_ports_free(cfg.network.listen)
    key_pair = load_or_create_identity(data.path)
    bootstrap = tuple(dict.fromkeys((*cfg.network.bootstrap, *load_bootstrap_file(cfg))))
    from libp2p.peer.id import ID

    self_id = str(ID.from_pubkey(key_pair.public_key))
    structlog.contextvars.bind_contextvars(island_id=self_id[-8:])
    island, seed = _make_island(cfg, data, self_id)
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
        node = Node(cfg, data, island, seed, p2p, topic, evaluator, tele, bad_streams=bad_streams)
        topic.on_lie = partial(_refuted, node)  # before the validator is installed, just below
        p2p.pubsub.set_topic_validator(topic_name, topic.validator, is_async_validator=False)
        for banned in island.banned:  # bans survive restarts (kept in the checkpoint)
            try:
                p2p.pubsub.add_to_blacklist(ID.from_base58(banned))
            except Exception as e:
                log.warning("peer_ban_failed", peer_id=banned, error=f"{type(e).__name__}: {e}")
        sub = await p2p.pubsub.subscribe(topic_name)
        p2p.pubsub.set_topic_validator(tele.topic, tele.validator, is_async_validator=False)
        tele_sub = await p2p.pubsub.subscribe(tele.topic)
        p2p.host.set_stream_handler(control.STATUS_PROTOCOL, control.status_stream_handler(node.status))
        p2p.host.set_stream_handler(ELITE_PROTOCOL, node.elites.handle)
        p2p.host.set_stream_handler(TELEMETRY_PROTOCOL, node.heartbeats.handle)
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
                         data_dir=str(data.path), generation=island.generation, version=__version__)
                nursery.start_soon(run_discovery, p2p, bootstrap, cfg.network, node.net_rng)
                if cfg.network.keepalive_s > 0:
                    # silent for 4 periods (20 s by default) = dead: a busy machine is not a dead link
                    nursery.start_soon(partial(keep_alive, p2p, interval_s=cfg.network.keepalive_s,
                                               timeout_s=2 * cfg.network.keepalive_s,
                                               dead_after_s=4 * cfg.network.keepalive_s,
                                               rate_per_s=cfg.network.keepalive_rate, rng=node.net_rng))
                nursery.start_soon(_receive_migrants, node, sub)
                nursery.start_soon(_fetch_elites, node)
                nursery.start_soon(_checkpoint_loop, node)
                nursery.start_soon(_publish_telemetry, node)
                nursery.start_soon(_receive_telemetry, node, tele_sub)
                task_status.started(node)
                await _island_loop(node)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(GRACEFUL_TIMEOUT_S):
                log.info(logs.NODE_STOPPING, generation=node.island.generation)
                await node.write_checkpoint()
                if logs.progress() is not None:
                    logs.progress().close()
                log.info(logs.NODE_STOPPED, generation=node.island.generation,
                         evaluations=node.island.evaluations, best_fitness=_finite_or_none(node.island.best_fitness))


async def _island_loop(node: Node) -> None:
    isl = node.island
    rng = node.rng
    with node.cpu:
        effects = isl.start(now=trio.current_time(), rng=rng)
    live: frozenset[str] = frozenset()
    max_gen = node.cfg.max_generations
    duty = node.cfg.evaluation.duty_cycle
    # the CPU clock, unless asked for the wall clock or on a GPU (whose work is not CPU time)
    cpu_clock = node.cfg.evaluation.duty_clock == "cpu" and not (
        node.evaluator.backend == "torch" and node.evaluator.device == "cuda")
    first = True
    while effects:
        pending = effects
        effects = []
        for effect in pending:
            if isinstance(effect, Evaluate):
                if max_gen is not None and isl.generation >= max_gen:
                    return
                # Banned peers are not live: py-libp2p keeps recording a blacklisted peer's topic
                # subscriptions, and a ring or random topology would give it a slot it can never fill.
                peers = frozenset(node.p2p.topic_peers(node.topic.topic)) - isl.banned
                size = node.network_size()
                if peers != live or size != isl.network_size:
                    live = peers
                    with node.cpu:
                        effects.extend(isl.handle(PeersChanged(peers, size), now=trio.current_time(), rng=rng))
                t0, cpu0 = time.perf_counter(), node.evaluator.cpu_s + node.cpu.island_s
                fit, extra_fit = await _evaluate(node, effect)
                dt = time.perf_counter() - t0
                n_evals = len(effect.candidates) + len(effect.extras)
                node.evals_per_s = n_evals / dt if dt > 0 else 0.0
                with node.cpu:
                    effects.extend(isl.handle(EvaluationDone(effect.generation, fit, extra_fit),
                                              now=trio.current_time(), rng=rng))
                if await _maybe_test(node) and node.cfg.stop_at_target:
                    log.info(logs.NODE_STOPPING, reason="target_reached")
                    return
                if duty < 1.0 and not first:
                    cpu = node.evaluator.cpu_s + node.cpu.island_s - cpu0 if cpu_clock else 0.0
                    await trio.sleep(duty_sleep(cpu_s=cpu, wall_s=time.perf_counter() - t0, duty=duty,
                                                cores=max(1, node.cfg.evaluation.workers)))
                first = False  # the first generation also started the workers: not a measure of work
            else:
                await _execute(node, effect)
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
    """Test the resident on fresh episodes once its estimate reaches the target. True when it passed."""
    target, isl = node.cfg.target, node.island
    if target is None or isl.best_params is None or isl.best_fitness < target:
        return False
    if not isl.deterministic and isl.best_n < 1:
        return False  # a provisional resident: wait for its first unbiased re-score
    key = isl.best_params.tobytes()
    now = trio.current_time()
    if key == node.last_tested or now - node.last_test_at < node.cfg.test_interval_s:
        return False
    node.last_tested, node.last_test_at = key, now
    if isl.deterministic:
        result = {"mean": isl.best_fitness, "std": 0.0, "min": isl.best_fitness, "solved_share": 1.0,
                  "episodes": 1}
    else:
        result = await node.evaluator.call(partial(evaluate_policy, problem=node.cfg.problem), isl.best_params,
                                           node.cfg.problem.hidden, node.cfg.test_episodes)
        node.test_episodes_used += int(result["episodes"])
    passed = result["mean"] >= target
    node.last_test = {"generation": isl.generation, "episodes": isl.episodes_used, "mean": result["mean"],
                      "std": result["std"], "min": result["min"], "solved_share": result["solved_share"],
                      "test_episodes": result["episodes"], "passed": passed, "source": isl.best_source}
    log.info(logs.POLICY_TESTED, estimate=isl.best_fitness, target=target, **node.last_test)
    if passed and not node.target_reached:
        node.target_reached = dict(node.last_test)
        log.info(logs.TARGET_REACHED, target=target, **node.last_test)
    return passed


async def _execute(node: Node, effect: Any) -> None:
    if isinstance(effect, GenerationCompleted):
        now = trio.current_time()
        if effect.metrics.get("restarted"):
            opt = node.island.opt
            log.info(logs.OPTIMIZER_RESTARTED, generation=effect.generation, restarts=opt.restart_count,
                     popsize=opt.popsize, stop=list(opt.last_stop),
                     best_fitness=_finite_or_none(effect.best_fitness))
        bar = logs.progress()
        if bar is not None and now - node.last_bar_at >= 0.25:  # a terminal redraw at most 4 times a second
            node.last_bar_at = now
            isl = node.island
            bar.set(f"gen {effect.generation}  best {_short(effect.best_fitness)}  mean {_short(effect.mean_fitness)}"
                    f"  sigma {_short(effect.sigma)}  {node.evals_per_s:.0f} evals/s  {effect.evaluations} evals  "
                    f"peers {len(node.p2p.connected_peers())}  migrants in {isl.counters.accepted}"
                    f" out {isl.counters.sent}")
        if bar is not None:
            interval = max(node.cfg.log_interval_s, 30.0)  # the live line carries the rest
        else:
            interval = node.cfg.log_interval_s
        if now - node.last_gen_log_at < interval:
            return
        node.last_gen_log_at = now
        log.info(logs.GENERATION_COMPLETED, generation=effect.generation, evaluations=effect.evaluations,
                 episodes=effect.episodes,
                 best_fitness=_finite_or_none(effect.best_fitness), gen_best=_finite_or_none(effect.gen_best_fitness),
                 mean_fitness=_finite_or_none(effect.mean_fitness), sigma=_finite_or_none(effect.sigma),
                 evals_per_s=round(node.evals_per_s, 1), n_peers=len(node.p2p.connected_peers()))
    elif isinstance(effect, PublishMigrant):
        data = codec.encode_elite(effect.elite)
        await node.p2p.pubsub.publish(node.topic.topic, data)
        log.info(logs.MIGRANT_PUBLISHED, topic=node.topic.topic, generation=effect.elite.generation,
                 best_fitness=effect.elite.fitness, size_bytes=len(data),
                 n_peers=len(node.p2p.topic_peers(node.topic.topic)))
    elif isinstance(effect, MigrantAccepted):
        gain = effect.fitness - effect.replaced_fitness
        node.recent_accepts.append(Migration(effect.src, effect.generation,
                                             gain if math.isfinite(gain) else effect.fitness))
        log.info(logs.MIGRANT_ACCEPTED, src=effect.src, generation=effect.generation, fitness=effect.fitness,
                 replaced_fitness=_finite_or_none(effect.replaced_fitness), claimed_fitness=effect.claimed_fitness,
                 gain=_finite_or_none(effect.fitness - effect.replaced_fitness))
    elif isinstance(effect, MigrantRejected):
        level = log.warning if effect.reason in ("claim_mismatch", "claim_short") else log.info
        level(logs.MIGRANT_REJECTED, src=effect.src, reason=effect.reason, claimed_fitness=effect.claimed_fitness,
              fitness=effect.fitness, forwarder=effect.forwarder or None)
        # it passed on a lie it could not check: charged as if our validator had rejected it
        if effect.forwarder and effect.forwarder != node.peer_id and penalize(
                node.p2p.gossipsub, effect.forwarder, node.topic.topic):
            node.forwarders_penalized[effect.reason] += 1
    elif isinstance(effect, PeerBanned):
        _ban(node, effect)
    else:
        raise AssertionError(f"unhandled effect {effect!r}")


def _ban(node: Node, effect: PeerBanned) -> None:
    log.warning(logs.PEER_BANNED, peer_id=effect.src, reason=effect.reason, lies=effect.lies)
    try:
        from libp2p.peer.id import ID

        node.p2p.pubsub.add_to_blacklist(ID.from_base58(effect.src))  # drops its pubsub traffic
    except ValueError as e:  # a bad id string cannot come from a verified signature, but never crash
        log.error("peer_ban_failed", peer_id=effect.src, error=f"{type(e).__name__}: {e}")


def _refuted(node: Node, src: str) -> None:
    """The gossipsub validator refuted a claim of ``src``: a lie, counted (and banned) by the island.
    Runs inside the sync validator, so the ban's blacklist applies before the next message."""
    for effect in node.island.handle(ClaimRefuted(src), now=trio.current_time(), rng=node.rng):
        if isinstance(effect, PeerBanned):
            _ban(node, effect)


async def _receive_migrants(node: Node, sub: Any) -> None:
    from libp2p.peer.id import ID

    rng = node.rng
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
        with node.cpu:
            effects = node.island.handle(MigrantReceived(src, elite, via=via), now=trio.current_time(), rng=rng)
        for effect in effects:
            await _execute(node, effect)


async def _fetch_elites(node: Node, *, poll_s: float = 1.0, join_window_s: float = 120.0) -> None:
    """Point-to-point migration over /gaia/elite/1.0.0 (node/fetch.py):

    - full topology: while joining (the first ``join_window_s``), ask up to JOIN_PEERS live peers
      once each for their best, so a newcomer starts from the network's best instead of waiting
      for publishes spread out by the network-wide budget (a peer that has no best yet, or could
      not be reached, may be asked again later);
    - ring and random topologies: ask our source(s) every migration interval (at most every
      PULL_MIN_S seconds: fast problems finish an interval in a fraction of a second), from the start.
    Every answer says only what beats our resident's claim (``above``)."""
    isl = node.island
    if not isl.policy.enabled or not node.cfg.migration.fetch:
        return
    done: set[str] = set()
    tries: dict[str, float] = {}
    started = trio.current_time()
    next_pull, next_pull_at = 0, -math.inf
    while True:
        await trio.sleep(poll_s)
        now = trio.current_time()
        live = frozenset(node.p2p.topic_peers(node.topic.topic)) - isl.banned
        targets: list[tuple[str, str]] = []
        if isl.policy.topology == Topology.FULL:
            if len(done) >= JOIN_PEERS or now - started >= join_window_s:
                return  # joined: from now on gossip carries the news
            ready = {p for p in live if now - tries.get(p, -math.inf) >= 10.0}
            targets = [(p, "join") for p in pick(ready, JOIN_PEERS - len(done), done, node.net_rng)]
        elif isl.generation >= next_pull and now >= next_pull_at and live:
            next_pull, next_pull_at = isl.generation + isl.policy.interval, now + PULL_MIN_S
            if isl.policy.topology == Topology.RING:
                srcs = [migration.ring_predecessor(node.peer_id, live)]
            else:
                srcs = sorted(isl.random_sources & live)
            targets = [(p, isl.policy.topology) for p in srcs if p]
        for peer, why in targets:
            if why == "join":
                tries[peer] = now
            above = _finite_or_none(isl.best_last) if isl.best_params is not None else None
            elite, outcome = await node.elites.fetch(peer, above)
            if why == "join" and outcome not in ("answered_no_elite", "failed_unreachable"):
                done.add(peer)  # it answered (with an elite, or "nothing better than yours")
            if elite is None:
                continue
            log.info(logs.ELITE_FETCHED, src=peer, why=why, generation=elite.generation,
                     claimed_fitness=elite.fitness)
            with node.cpu:
                effects = isl.handle(MigrantReceived(peer, elite), now=trio.current_time(), rng=node.rng)
            for effect in effects:
                await _execute(node, effect)


def telemetry_of(node: Node) -> Telemetry:
    isl, opt, c = node.island, node.island.opt, node.island.counters
    return Telemetry(
        experiment_id=node.exp_id, time=time.time(), generation=isl.generation, evaluations=isl.evaluations,
        episodes=isl.episodes_used, evals_per_s=float(node.evals_per_s),
        best_fitness=_finite_or_none(isl.best_fitness), mean_fitness=_finite_or_none(isl.mean_fitness),
        sigma=_finite_or_none(opt.sigma), algorithm=opt.algorithm, settings=dict(opt.settings()),
        sent=c.sent, received=c.received, accepted=c.accepted, rejected=sum(c.rejected.values()),
        peers=len(node.p2p.connected_peers()), cpus=int(node.capabilities["cpus"]), gpu=node.capabilities["gpu"],
        gpu_mem_mb=int(node.capabilities["gpu_mem_mb"]), migrations=told_accepts(node.recent_accepts))


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
        data = encode_telemetry(telemetry_of(node))
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
        node.netview.add(src, t)
        if src != node.peer_id:
            node.heard_island(src, trio.current_time())


async def _checkpoint_loop(node: Node) -> None:
    last_gen = node.island.generation
    while True:
        await trio.sleep(node.cfg.checkpoint_interval_s)
        if node.island.generation != last_gen:
            last_gen = node.island.generation
            await node.write_checkpoint()
