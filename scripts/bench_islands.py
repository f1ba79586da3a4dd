#!/usr/bin/env python3
"""Central vs decentralised vs isolated islands, with real gaia-node processes on 127.0.0.1.

Arms (all at the same total episode budget, several seeds each):
  central    one node, one CMA-ES, all worker processes (what the old central broker did)
  swarm      K nodes over libp2p, heterogeneous (CMA-ES sigma 0.3/0.5/0.8/1.2 ..., one OpenAI-ES
             from K >= 5), migration on, node 0 the only bootstrap
  control    the same K islands with migration off
  single1    one node with ONE worker (the "one CMA-ES on one core" reference for wall time)
  swarm2     two nodes with one worker each (2 cores), migration on

LunarLander: a run ends when any node's resident passes the 100-fresh-episode test (target_reached,
>= 200) or when the nodes together spent the budget; "episodes to solve" is the sum over nodes of
training episodes at that moment (test episodes are not training and are not counted).
Test functions: a run ends at the budget (evaluations); the table shows the best fitness reached.

    python scripts/bench_islands.py --problem lunarlander --arms central,swarm,control --seeds 3
    python scripts/bench_islands.py --problem rastrigin --dim 30 --arms central,swarm,control --seeds 3
    python scripts/bench_islands.py --quick          # a tiny smoke run (tests)

Writes a markdown table (and the command) to stdout and to --out (default docs/bench/), JSON with
every run, and a PNG of best fitness against total episodes per arm.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWARM_PRESETS = [("cmaes", "0.3"), ("cmaes", "0.5"), ("cmaes", "0.8"), ("cmaes", "1.2"), ("openai-es", "0.1")]


@dataclass
class Run:
    arm: str
    seed: int
    nodes: int
    solved: bool = False
    episodes_to_solve: int | None = None
    wall_to_solve_s: float | None = None
    episodes_total: int = 0
    wall_s: float = 0.0
    best_estimate: float | None = None
    final_score: dict | None = None
    curve: list[tuple[float, int, float]] = field(default_factory=list)  # (wall s, total episodes, net best)
    accepted: int = 0
    # node 0 (the same seed in every arm: alone it is the n1 run): (generation, seconds since every
    # node of the run was up, all_up) until its first accepted migrant, while its trajectory is still n1's
    node0: list[tuple[int, float]] = field(default_factory=list)
    all_up: float | None = None  # log time of the last node's node_started: where the clocks start
    # what the network cost, per node, read from its status just before the end (Node.wire)
    wire: list[dict] = field(default_factory=list)


SCALE_PRESETS = [("cmaes", "0.5"), ("cmaes", "0.3"), ("cmaes", "0.8"), ("cmaes", "1.2"), ("openai-es", "0.1")]


def scale_arm(arm: str) -> int | None:
    """``n<K>``: K islands, ``p<K>``: a pool of K nodes (--pool, one search), ``d<K>``: the same pool with
    its results over direct streams (pool.transport = "direct"); a trailing ``k`` on a pool (``d8k``):
    its popsize K times --popsize, each member's share one island's lambda; a trailing ``s``
    (``d4s``): its last member a quarter as fast (duty / 4), a slow machine; one small machine each
    (see --duty)."""
    k = arm[1:-1] if arm[:1] in ("p", "d") and arm[-1:] in ("k", "s") else arm[1:]
    return int(k) if arm[:1] in ("n", "p", "d") and k.isdigit() and int(k) >= 1 else None


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seeds like 13,15,16") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct seeds >= 0, like 13,15,16")
    return seeds


def pool_flags(arm: str, seed: int, popsize: int, pool_popsize: str | None) -> list[str]:
    """Every member's pool flags for ``p<K>`` and ``d<K>`` arms ([] for the others): one pool per seed
    (its genesis seed comes from the pool id); its lambda: "k" scales it with the members (each
    member's share stays one island's lambda)."""
    k = scale_arm(arm)
    if k is None or arm[:1] not in ("p", "d"):
        return []
    lam = str(popsize * k) if pool_popsize == "k" or arm.endswith("k") else (pool_popsize or str(popsize))
    return ["--pool", f"bench-s{seed}", "--popsize", lam] + (["--set", "pool.transport=direct"] if arm[:1] == "d" else [])


def arm_nodes(arm: str, k: int, problem: str, workers_total: int, duty: float = 1.0,
              presets: str = "mixed", popsize0: int = 32) -> list[list[str]]:
    """Per-node extra flags for an arm."""
    kk = scale_arm(arm)
    if kk is not None:
        # node i: the i-th preset (node 0 = the default single CMA-ES), one worker, duty-cycled;
        # presets "default": every node as a user who sets nothing would run it (cmaes, sigma 0.5)
        # presets "ladder": default settings, but node i starts on the i-th rung of the IPOP ladder
        # (popsize0 x 2^i, at most the 6 doublings IPOP itself allows), so that N islands run the
        # population sizes one island would only reach after i restarts
        out = []
        for i in range(kk):
            algo, sigma = SCALE_PRESETS[i % len(SCALE_PRESETS) if presets == "mixed" else 0]
            flags = ["--optimizer", algo, "--sigma", sigma, "--set", f"evaluation.duty_cycle={duty}",
                     "--workers", "1" if problem == "lunarlander" else "0"]
            if arm[:1] in ("p", "d") and scale_arm(arm) is not None:  # a pool: every member with the same settings (else another pool)
                algo, sigma = SCALE_PRESETS[0]
                slow = arm.endswith("s") and i == kk - 1
                flags = ["--optimizer", algo, "--sigma", sigma, "--set", f"evaluation.duty_cycle={duty / 4 if slow else duty}",
                         "--workers", "1" if problem == "lunarlander" else "0"]
            elif presets == "ladder":
                from gaia_p2p.core.optimizer import MAX_IPOP_DOUBLINGS

                flags += ["--popsize", str(popsize0 * 2 ** min(i, MAX_IPOP_DOUBLINGS))]
            out.append(flags + (["--set", "island.lr=0.03"] if algo == "openai-es" else []))
        return out
    if arm in ("central", "single1"):
        return [["--optimizer", "cmaes", "--sigma", "0.5",
                 "--workers", str(workers_total if arm == "central" else 1)]]
    n = 2 if arm == "swarm2" else k
    per_node_workers = "0" if problem != "lunarlander" else "1"
    out = []
    for i in range(n):
        algo, sigma = SWARM_PRESETS[i % len(SWARM_PRESETS)] if n >= 5 else SWARM_PRESETS[i % 4]
        flags = ["--optimizer", algo, "--sigma", sigma, "--workers", per_node_workers]
        if algo == "openai-es":
            flags += ["--set", "island.lr=0.03"]
        if arm == "control":
            flags += ["--set", "migration.enabled=false"]
        out.append(flags)
    if problem != "lunarlander" and arm in ("central", "single1"):
        out[0][out[0].index("--workers") + 1] = "0"
    return out


class Node:
    def __init__(self, base: Path, name: str, args: list[str]) -> None:
        self.dir = base / name
        self.log_path = base / f"{name}.log"
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.pos = 0
        self.buf = b""
        self.episodes = 0
        self.best: float | None = None
        self.accepted = 0
        self.target: dict | None = None
        self.started: dict | None = None
        # a pool member that leaves the resident to the member keeping it: its own is stale
        self.keeps_resident = True
        self.listen = "/ip4/127.0.0.1/tcp/0"
        self.gen_times: list[tuple[int, float]] = []  # (generation, log time) before the first acceptance

    def start(self) -> None:
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gaia_p2p", "start", "--data-dir", str(self.dir),
                                      "--listen", self.listen, *self.args],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def poll_log(self) -> None:
        with open(self.log_path, "rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        self.pos += len(chunk)
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            name = ev.get("event")
            if name == "generation_completed":
                if not self.accepted and "timestamp" in ev:
                    self.gen_times.append((int(ev["generation"]), _iso(ev["timestamp"])))
                self.episodes = int(ev.get("episodes", ev.get("evaluations", 0)))
                if ev.get("best_fitness") is not None:
                    self.best = float(ev["best_fitness"])
            elif name == "migrant_accepted":
                self.accepted += 1
            elif name == "target_reached" and self.target is None:
                self.target = ev
            elif name == "pool_resident_keeper":
                self.keeps_resident = bool(ev.get("ours"))
            elif name == "node_started":
                self.started = ev
                if "timestamp" in ev:
                    self.gen_times.append((0, _iso(ev["timestamp"])))

    def node0_times(self, origin: float | None = None) -> list[tuple[int, float]]:
        """``gen_times`` as seconds since ``origin`` (a log time: when the run's last node was up;
        default this node's ``node_started``), for ``Run.node0``. Generations this node completed
        before the others were up come out negative."""
        if not self.gen_times:
            return []
        start = self.gen_times[0][1] if origin is None else origin
        return [(g, round(t - start, 3)) for g, t in self.gen_times]

    def wire(self) -> dict | None:
        """What this node's networking cost so far (its status: bytes on the TCP sockets, pubsub
        copies received, the process CPU outside island and evaluation), and the evaluations it did."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            out = subprocess.run([sys.executable, "-m", "gaia_p2p", "status", "--data-dir", str(self.dir), "--json"],
                                 capture_output=True, text=True, timeout=20)
            s = json.loads(out.stdout)
        except (subprocess.TimeoutExpired, ValueError):
            return None
        t, cpu, isl = s.get("traffic") or {}, s.get("cpu") or {}, s.get("island") or {}
        return {"bytes_in": t.get("bytes_in", 0), "bytes_out": t.get("bytes_out", 0),
                "copies_in": t.get("pubsub_copies_in", 0), "network_s": cpu.get("network_s", 0.0),
                "uptime_s": s.get("uptime_s", 0.0), "evaluations": isl.get("evaluations", 0),
                "by_protocol": t.get("by_protocol", {})}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (node 0 listens there; nothing else on
    this box binds ports in the meantime but other benchmarks' port-0 listeners)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_peer_id(data_dir: Path) -> str:
    """The peer id of the identity a node will load from ``data_dir`` (created here, so that the
    others can be given node 0's whole address before it runs)."""
    from libp2p.peer.id import ID

    from gaia_p2p.net.host import load_or_create_identity

    data_dir.mkdir(parents=True, exist_ok=True)
    return str(ID.from_pubkey(load_or_create_identity(data_dir).public_key))


def _iso(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def one_run(arm: str, seed: int, a: argparse.Namespace, base: Path) -> Run:
    common = ["--problem", a.problem, "--log-format", "json", "--set", f"log_interval_s={a.log_interval}",
              "--set", f"network.bootstrap_file={base / 'no_bootstrap.toml'}", "--set", "telemetry_interval_s=5",
              "--set", "checkpoint_interval_s=3600"]
    if a.problem == "lunarlander":
        common += ["--set", "target_fitness=200", "--set", "stop_at_target=true", "--popsize", str(a.popsize),
                   "--set", "test_interval_s=0"]  # test every new resident: detection must not depend on speed
    else:
        common += ["--dim", str(a.dim)]
    if a.max_generations:
        common += ["--set", f"max_generations={a.max_generations}"]
    if a.interval:
        common += ["--set", f"migration.interval={a.interval}"]
    if a.reeval is not None:
        common += ["--set", f"migration.reeval_episodes={a.reeval}"]
    if a.entry:
        common += ["--set", f"migration.entry={a.entry}"]
    if a.margin is not None:
        common += ["--set", f"migration.accept_margin={a.margin}"]
    if a.topology:
        common += ["--topology", a.topology]
    for setting in a.node_set:
        common += ["--set", setting]
    # the ladder's first rung: what a node that sets nothing runs (32 on lunarlander, pycma's default
    # on the test functions)
    from gaia_p2p.core.optimizer import default_popsize

    popsize0 = a.popsize if a.problem == "lunarlander" else default_popsize(a.dim)
    flags = arm_nodes(arm, a.nodes, a.problem, a.workers, a.duty, a.presets, popsize0)
    flags = [f + pool_flags(arm, seed, a.popsize, a.pool_popsize) for f in flags]
    if scale_arm(arm) is not None:
        flags = [f + ["--set", f"evaluation.duty_clock={a.duty_clock}"]
                 + (["--set", "migration.enabled=false"] if a.isolated else []) for f in flags]
    run = Run(arm, seed, len(flags))
    nodes = [Node(base, f"{arm}-s{seed}-n{i}", [*common, *f, "--seed", str(seed * 100 + i)])
             for i, f in enumerate(flags)]
    # Every node starts at once, bootstrapping to node 0 at an address fixed in advance, and the
    # clock starts once the last one is up. On this box 8 Python processes importing numpy, torch
    # and libp2p side by side take ~10 s of the 2 cores, where machines of their own would each
    # start in ~2 s; started one after the other, node 0 ran alone through those seconds and the
    # larger arms paid for the box's start-up, not for their own work.
    nodes[0].listen = f"/ip4/127.0.0.1/tcp/{free_port()}"
    boot = f"{nodes[0].listen}/p2p/{own_peer_id(nodes[0].dir)}"
    for n in nodes[1:]:
        n.args += ["--bootstrap", boot]
    t0 = time.monotonic()
    try:
        for n in nodes:
            n.start()
        deadline = time.monotonic() + 120
        while any(n.started is None for n in nodes):
            for n in nodes:
                n.poll_log()
                if n.started is None and n.proc.poll() is not None:
                    raise RuntimeError(f"a node exited before it started: {n.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every node started within 120 s: {base}")
            time.sleep(0.05)
        t0 = time.monotonic()
        run.all_up = max(_iso(n.started["timestamp"]) for n in nodes)
        while True:
            time.sleep(0.2)
            for n in nodes:
                n.poll_log()
            now = time.monotonic() - t0
            total = sum(n.episodes for n in nodes)
            bests = [n.best for n in nodes if n.best is not None and n.keeps_resident]
            run.curve.append((now, total, max(bests) if bests else float("nan")))
            hit = [n for n in nodes if n.target is not None]
            if hit:
                run.solved = True
                run.wall_to_solve_s = now
                # sum of all nodes' training episodes at that moment (the hitting node's own count is exact)
                run.episodes_to_solve = sum(n.episodes for n in nodes if n is not hit[0]) + int(hit[0].target["episodes"])
                break
            if total >= a.budget or now > a.max_wall or all(n.proc.poll() is not None for n in nodes):
                break
    finally:
        if a.wire:
            run.wire = [w for w in (n.wire() for n in nodes) if w is not None]
        for n in nodes:
            n.stop()
        for n in nodes:
            n.poll_log()
    run.wall_s = time.monotonic() - t0
    run.episodes_total = sum(n.episodes for n in nodes)
    bests = [n.best for n in nodes if n.best is not None and n.keeps_resident]
    run.best_estimate = max(bests) if bests else None
    run.accepted = sum(n.accepted for n in nodes)
    run.node0 = nodes[0].node0_times(run.all_up)
    run.final_score = final_score(nodes, a)
    return run


def final_score(nodes: list[Node], a: argparse.Namespace) -> dict | None:
    """The best resident among the nodes' final checkpoints (of a pool: its keeper's), on 100 fresh
    episodes (lunarlander)."""
    import msgpack
    import numpy as np

    best = None
    for n in nodes:
        if not n.keeps_resident:
            continue
        ck = n.dir / "checkpoint.msgpack"
        if not ck.exists():
            continue
        isl = msgpack.unpackb(ck.read_bytes(), raw=False, strict_map_key=False)["island"]
        if isl.get("best_params") is None:
            continue
        if best is None or isl["best_fitness"] > best[0]:
            best = (isl["best_fitness"], np.frombuffer(isl["best_params"], dtype="<f8"))
    if best is None:
        return None
    if a.problem != "lunarlander":
        return {"mean": float(best[0])}
    from gaia_p2p.problems.policy_eval import evaluate_policy

    r = evaluate_policy(best[1], (16,), a.final_episodes, seed0=50_000_000)
    return {k: r[k] for k in ("mean", "std", "min", "solved_share")}


def med(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = statistics.median(xs)
    return f"{m:.0f} ({min(xs):.0f}-{max(xs):.0f})" if abs(m) >= 100 else f"{m:.2f} ({min(xs):.2f}-{max(xs):.2f})"


def node0_speed(runs: list[Run]) -> str:
    """Is the emulation fair? Node 0 has the same seed in every n<K> arm, so until it accepts a
    migrant it runs exactly the n1 trajectory: its seconds to the same generation compare the
    machines that N nodes emulate (ratio 1.00 = as fast as a node alone)."""
    lines = []
    for seed in sorted({r.seed for r in runs}):
        rs = [r for r in runs if r.seed == seed and scale_arm(r.arm) and len(r.node0) >= 2]
        base = next((r for r in rs if r.arm == "n1"), None)
        if base is None or len(rs) < 2:
            continue
        g = min(r.node0[-1][0] for r in rs)
        if g < 5:
            continue

        secs = {r.arm: _seconds_to(r.node0, g) for r in rs}
        lines.append(f"seed {seed}, generation {g}: " + ", ".join(
            f"{arm} {t:.1f} s ({t / secs['n1']:.2f})" for arm, t in secs.items()))
    if not lines:
        return ""
    return ("Node 0 (the n1 trajectory until its first accepted migrant), seconds to the same generation "
            "(ratio to n1):\n\n" + "\n".join(f"- {x}" for x in lines) + "\n")


def pool_pace(runs: list[Run]) -> str:
    """Pools of one seed (p<K>, d<K>) share one pool id, so one genesis and one trajectory: their
    seconds to the same generation of member 0 compare only how fast K members run the same search.
    The speedup of each pool over the pool of one (p1), per seed and the median."""
    seeds = sorted({r.seed for r in runs})
    pools = sorted({(scale_arm(r.arm), r.arm) for r in runs if r.arm[:1] in ("p", "d") and scale_arm(r.arm)})
    arms = [arm for _, arm in pools]
    if "p1" not in arms or len(arms) < 2:
        return ""
    by = {(r.arm, r.seed): r for r in runs}
    rows, ratios = [], {arm: [] for arm in arms}
    for seed in seeds:
        rs = {arm: by[(arm, seed)] for arm in arms if (arm, seed) in by and len(by[(arm, seed)].node0) >= 2}
        if "p1" not in rs or len(rs) < 2:
            continue
        g = min(r.node0[-1][0] for r in rs.values())
        secs = {arm: _seconds_to(r.node0, g) for arm, r in rs.items()}
        cells = []
        for arm in arms:
            if arm not in secs:
                cells.append("-")
                continue
            ratios[arm].append(secs["p1"] / secs[arm])
            cells.append(f"{secs[arm]:.1f} s ({ratios[arm][-1]:.2f}x)")
        rows.append(f"| seed {seed}, generation {g} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    med = ["%.2fx" % statistics.median(ratios[a]) if ratios[a] else "-" for a in arms]
    return ("Pools: seconds to the same generation of member 0 (one trajectory per seed), and the speedup "
            "over the pool of one:\n\n| | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms) + "\n"
            + "\n".join(rows) + "\n| **median speedup** | " + " | ".join(med) + " |\n")


def search_and_cost(runs: list[Run]) -> str:
    """What a ratio of episodes to solve is made of: how many generations the search needed (a
    draw of the seed: every pool of one seed runs one search, n1 another) times what a generation
    cost (episodes and seconds). Only n1 and pools: an island of n<K> other than node 0 may solve
    first, so node 0's generation says nothing there. A solved run's node 0 stopped at the solve."""
    arms = sorted({r.arm for r in runs if r.arm == "n1" or r.arm[:1] in ("p", "d")}, key=lambda a: (a[0] != "n", a))
    if not arms:
        return ""
    by = {(r.arm, r.seed): r for r in runs}
    seeds = sorted({r.seed for r in runs})
    rows = []
    per_gen: dict[str, list[float]] = {a: [] for a in arms}
    secs_gen: dict[str, list[float]] = {a: [] for a in arms}
    gens: dict[str, list[int]] = {a: [] for a in arms}
    for seed in seeds:
        cells = []
        for arm in arms:
            r = by.get((arm, seed))
            if r is None or len(r.node0) < 2:
                cells.append("-")
                continue
            g, t = r.node0[-1]
            episodes = r.episodes_to_solve if r.solved else r.episodes_total
            per_gen[arm].append(episodes / max(1, g))
            secs_gen[arm].append(t / max(1, g))
            if r.solved:
                gens[arm].append(g)
            cells.append(f"{g}{'' if r.solved else '*'} ({episodes / max(1, g):.1f}, {t / max(1, g):.2f} s)")
        rows.append(f"| seed {seed} | " + " | ".join(cells) + " |")

    def med(xs: list[float], fmt: str) -> str:
        return fmt % statistics.median(xs) if xs else "-"

    rows.append("| **median generations to solve (solved runs)** | " + " | ".join(med(gens[a], "%.0f") for a in arms) + " |")
    rows.append("| **median episodes per generation** | " + " | ".join(med(per_gen[a], "%.1f") for a in arms) + " |")
    rows.append("| **median seconds per generation** | " + " | ".join(med(secs_gen[a], "%.2f") for a in arms) + " |")
    return ("Generations at the end of each run (* = unsolved at the cap) with episodes and wall seconds per "
            "generation; pools of one seed run one search (the same generations), n1 another:\n\n| | "
            + " | ".join(arms) + " |\n|---|" + "---|" * len(arms) + "\n" + "\n".join(rows) + "\n")


def _seconds_to(pts: list[tuple[int, float]], g: int) -> float:
    """Seconds to generation ``g``, interpolated between logged generations."""
    for (g0, t0), (g1, t1) in zip(pts, pts[1:]):
        if g0 <= g <= g1:
            return t0 + (t1 - t0) * (g - g0) / max(1, g1 - g0)
    return pts[-1][1]


def best_at(r: Run, t: float) -> float | None:
    """The network best at ``t`` wall seconds into the run (its last logged value by then)."""
    ys = [c[2] for c in r.curve if c[0] <= t and c[2] == c[2]]
    return max(ys) if ys else None


def scaling_summary(runs: list[Run], a: argparse.Namespace, checkpoints: int = 6) -> str:
    """n<K> arms only: is the result better at every doubling, in the median and the mean, at
    several moments of the run, not only at its end? Lunarlander: wall seconds to solve (an unsolved
    run counts as the cap) and how many had solved by each moment; test functions: the network best."""
    scaled = sorted({(scale_arm(r.arm), r.arm) for r in runs if scale_arm(r.arm)})
    if len(scaled) < 2:
        return ""
    arms = [arm for _, arm in scaled]
    seeds = sorted({r.seed for r in runs})
    by = {(r.arm, r.seed): r for r in runs}

    def mono(vals: list[float], lower_better: bool) -> str:
        pairs = list(zip(vals, vals[1:]))
        ok = all(y < x for x, y in pairs) if lower_better else all(y > x for x, y in pairs)
        ties = all(y <= x for x, y in pairs) if lower_better else all(y >= x for x, y in pairs)
        return "yes" if ok else ("with ties" if ties else "**no**")

    head = "| | " + " | ".join(arms) + " | monotone |\n|---|" + "---|" * (len(arms) + 1)
    lines = [head]
    if a.problem == "lunarlander":
        per = {arm: [by[(arm, s)].wall_to_solve_s if by[(arm, s)].solved else a.max_wall
                     for s in seeds if (arm, s) in by] for arm in arms}
        for s in seeds:
            lines.append(f"| seed {s} | " + " | ".join(
                (f"{by[(arm, s)].wall_to_solve_s:.1f}" if by[(arm, s)].solved else f"{a.max_wall:.0f}*")
                if (arm, s) in by else "-" for arm in arms) + " | |")
        for name, f in (("median", statistics.median), ("mean", statistics.mean)):
            vals = [f(per[arm]) for arm in arms]
            lines.append(f"| **{name}** | " + " | ".join(f"{v:.0f}" for v in vals) + f" | {mono(vals, True)} |")
        for k in range(1, checkpoints + 1):
            t = a.max_wall * k / checkpoints
            vals = [sum(1 for x in per[arm] if x <= t and x < a.max_wall) for arm in arms]
            lines.append(f"| solved by {t:.0f} s | " + " | ".join(f"{v} of {len(per[arm])}" for v, arm in zip(vals, arms))
                         + f" | {mono(vals, False)} |")
        return ("Wall seconds to solve per seed (* = unsolved, counted as the cap), and how many runs had "
                "solved by each moment:\n\n" + "\n".join(lines) + "\n")
    for s in seeds:
        lines.append(f"| seed {s}, end | " + " | ".join(
            f"{by[(arm, s)].best_estimate:.2f}" if (arm, s) in by and by[(arm, s)].best_estimate is not None
            else "-" for arm in arms) + " | |")
    horizon = min(a.max_wall, max(r.wall_s for r in runs) or a.max_wall)  # a budget may end runs early
    for k in range(1, checkpoints + 1):
        t = horizon * k / checkpoints
        at = {arm: [v for v in (best_at(by[(arm, s)], t) for s in seeds if (arm, s) in by) if v is not None]
              for arm in arms}
        if not all(at.values()):
            continue
        for name, f in (("median", statistics.median), ("mean", statistics.mean)):
            vals = [f(at[arm]) for arm in arms]
            lines.append(f"| {name} at {t:.3g} s | " + " | ".join(f"{v:.2f}" for v in vals)
                         + f" | {mono(vals, False)} |")
    return ("Network best per seed at the end, and its median and mean over seeds at several moments "
            "(higher is better):\n\n" + "\n".join(lines) + "\n")


def table(runs: list[Run], a: argparse.Namespace) -> str:
    arms = list(dict.fromkeys(r.arm for r in runs))
    if a.problem == "lunarlander":
        head = ("| arm | nodes | solved | episodes to solve, median (range) | wall s to solve | final 100-ep score "
                "| migrants accepted |\n|---|---|---|---|---|---|---|")
    else:
        head = ("| arm | nodes | evaluations | best fitness, median (range) | wall s | migrants accepted |\n"
                "|---|---|---|---|---|---|")
    lines = [head]
    for arm in arms:
        rs = [r for r in runs if r.arm == arm]
        if a.problem == "lunarlander":
            lines.append(f"| {arm} | {rs[0].nodes} | {sum(r.solved for r in rs)} of {len(rs)} | "
                         f"{med([r.episodes_to_solve for r in rs if r.solved])} | "
                         f"{med([r.wall_to_solve_s for r in rs if r.solved])} | "
                         f"{med([(r.final_score or {}).get('mean') for r in rs])} | "
                         f"{med([r.accepted for r in rs])} |")
        else:
            lines.append(f"| {arm} | {rs[0].nodes} | {med([r.episodes_total for r in rs])} | "
                         f"{med([r.best_estimate for r in rs])} | {med([r.wall_s for r in rs])} | "
                         f"{med([r.accepted for r in rs])} |")
    return "\n".join(lines)


def wire_table(runs: list[Run]) -> str:
    """Bytes on the wire per evaluation (every node's sent bytes over every node's evaluations, so
    each copy counts once, at its sender) and each node's networking CPU as a share of one core."""
    lines = ["| arm | nodes | evaluations | bytes sent per evaluation | pubsub copies received per evaluation "
             "| networking CPU per node, % of a core, median (range) |", "|---|---|---|---|---|---|"]
    for arm in dict.fromkeys(r.arm for r in runs):
        ws = [w for r in runs if r.arm == arm for w in r.wire]
        evals = sum(w["evaluations"] for w in ws)
        if not ws or not evals:
            continue
        shares = [100 * w["network_s"] / w["uptime_s"] for w in ws if w["uptime_s"]]
        lines.append(f"| {arm} | {len(ws)} | {evals} | {sum(w['bytes_out'] for w in ws) / evals:.0f} | "
                     f"{sum(w['copies_in'] for w in ws) / evals:.2f} | {med(shares)} |")
    return "\n".join(lines) + "\n\n" + wire_by_protocol(runs)


def wire_by_protocol(runs: list[Run]) -> str:
    """Where the bytes go: each protocol's stream payload (sent and received, over all nodes, halved:
    each byte counts once) per evaluation; the TCP bytes beyond their sum are the muxer's and
    Noise's framing, and the connections' handshakes."""
    arms = [arm for arm in dict.fromkeys(r.arm for r in runs) if any(w["evaluations"] for r in runs if r.arm == arm
                                                                      for w in r.wire)]
    per: dict[str, dict[str, float]] = {}
    for arm in arms:
        ws = [w for r in runs if r.arm == arm for w in r.wire]
        evals = sum(w["evaluations"] for w in ws)
        sums: dict[str, float] = {}
        for w in ws:
            for proto, b in w.get("by_protocol", {}).items():
                sums[proto] = sums.get(proto, 0) + b / 2
        per[arm] = {proto: b / evals for proto, b in sums.items()}
        per[arm]["framing and handshakes"] = sum(w["bytes_out"] for w in ws) / evals - sum(per[arm].values())
    protos = sorted({p for v in per.values() for p in v}, key=lambda p: -max(v.get(p, 0) for v in per.values()))
    lines = ["Bytes per evaluation by protocol (stream payload, each byte once):", "",
             "| protocol | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for proto in protos:
        if max(v.get(proto, 0) for v in per.values()) >= 0.5:
            lines.append(f"| {proto} | " + " | ".join(f"{per[a].get(proto, 0):.0f}" for a in arms) + " |")
    return "\n".join(lines)


def plot(runs: list[Run], path: Path, a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(dict.fromkeys(r.arm for r in runs)):
        for j, r in enumerate(x for x in runs if x.arm == arm):
            xs = [c[0] if a.x == "wall" else c[1] for c in r.curve]
            ys = [c[2] for c in r.curve]
            ax.plot(xs, ys, color=colors[i % len(colors)], alpha=0.8, lw=1.2, label=arm if j == 0 else None)
            if r.solved:
                ax.plot([r.wall_to_solve_s if a.x == "wall" else r.episodes_to_solve], [ys[-1] if ys else 0], "o",
                        color=colors[i % len(colors)])
    if a.problem == "lunarlander":
        ax.axhline(200, color="k", ls="--", lw=0.8, label="solved (200)")
        ax.set_ylim(-300, 320)
    elif all(c[2] <= 0 for r in runs for c in r.curve if c[2] == c[2]):
        ax.set_yscale("symlog", linthresh=1.0)  # test functions: optimum 0, the end game is near it
    if a.x == "wall":
        ax.set_xlabel("wall seconds")
    else:
        ax.set_xlabel("total training episodes (all nodes)" if a.problem == "lunarlander" else "total evaluations")
    ax.set_ylabel("network best (resident estimate)")
    what = "wall time" if a.x == "wall" else ("total episodes" if a.problem == "lunarlander" else "total evaluations")
    if a.problem == "lunarlander":
        ax.set_title(f"lunarlander: network best against {what} (dot = solved: >= 200 on 100 fresh episodes)")
    else:
        ax.set_title(f"{a.problem}: network best against {what} (higher is better)")
    ax.legend()
    scaled = [(scale_arm(r.arm), r) for r in runs if scale_arm(r.arm)]
    if scaled:  # a second panel: the summary against the number of nodes
        fig.set_size_inches(14, 5)
        ax2 = fig.add_axes([0.70, 0.13, 0.28, 0.78])
        ax.set_position([0.06, 0.13, 0.58, 0.78])
        ks = sorted({k for k, _ in scaled})
        if a.problem == "lunarlander":
            ys2 = [[r.wall_to_solve_s if r.solved else a.max_wall for k2, r in scaled if k2 == k] for k in ks]
            ax2.set_ylabel("wall seconds to solve (unsolved = the cap)")
        else:
            ys2 = [[r.best_estimate for k2, r in scaled if k2 == k] for k in ks]
            ax2.set_ylabel(f"network best after {a.max_wall:.0f} s")
        for k, y in zip(ks, ys2):
            ax2.plot([k] * len(y), y, "o", color="grey", alpha=0.6)
        ax2.plot(ks, [statistics.median(y) for y in ys2], "-o", color="k", label="median")
        ax2.plot(ks, [statistics.mean(y) for y in ys2], "--s", color="tab:blue", label="mean")
        ax2.set_xscale("log", base=2)
        ax2.set_xticks(ks, [str(k) for k in ks])
        ax2.set_xlabel("nodes (each one small machine)")
        ax2.grid(alpha=0.3)
        ax2.legend()
        fig.savefig(path, dpi=110)
        return
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="lunarlander", choices=["lunarlander", "rastrigin", "sphere", "rosenbrock"])
    ap.add_argument("--dim", type=int, default=30)
    ap.add_argument("--arms", default="central,swarm,control")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--seed-list", type=_seed_list, default=None, metavar="S,S,...",
                    help="these seeds instead of --seeds and --first-seed (to rerun the seeds of an earlier run)")
    ap.add_argument("--nodes", type=int, default=4, help="K for swarm and control")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="central arm's worker processes")
    ap.add_argument("--budget", type=int, default=None, help="total episodes (lunarlander) / evaluations")
    ap.add_argument("--max-wall", type=float, default=600.0, help="seconds per run at most")
    ap.add_argument("--popsize", type=int, default=32)
    ap.add_argument("--interval", type=int, default=None, help="migration.interval of every node")
    ap.add_argument("--reeval", type=int, default=None, help="migration.reeval_episodes of every node")
    ap.add_argument("--entry", choices=["inject", "adopt"], default=None, help="migration.entry of every node")
    ap.add_argument("--margin", type=float, default=None, help="migration.accept_margin of every node")
    ap.add_argument("--topology", choices=["full", "ring", "random"], default=None, help="--topology for every node")
    ap.add_argument("--node-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting for every node of every arm (repeatable), as gaia-node's --set")
    ap.add_argument("--final-episodes", type=int, default=100)
    ap.add_argument("--max-generations", type=int, default=None,
                    help="every node stops after this many generations (a pace run: pool_pace compares pools there)")
    ap.add_argument("--pool-popsize", default=None, help="p<K> arms: the pool's popsize (a number, or k: "
                    "--popsize times K; default --popsize)")
    ap.add_argument("--log-interval", type=float, default=0.0,
                    help="nodes' log_interval_s: 0 logs every generation (exact curves; on fast problems the "
                         "JSON lines cost more CPU than the duty cycle lets the island use), 0.5 for scaling runs")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    ap.add_argument("--tag", default=None, help="file name stem (default: problem)")
    ap.add_argument("--quick", action="store_true", help="tiny budget smoke run (tests)")
    ap.add_argument("--replot", type=Path, default=None, help="redraw the PNG from a previous run's JSON")
    ap.add_argument("--logs", type=Path, default=None, help="with --replot: that run's log directory (printed "
                    "as '# logs under'), to print node 0's speed per arm from its logs")
    ap.add_argument("--duty", type=float, default=0.2, help="n<K> arms: each node's evaluation.duty_cycle (one small "
                    "machine each: K nodes use about K x duty cores)")
    ap.add_argument("--duty-clock", choices=["wall", "cpu"], default="wall",
                    help="n<K> arms: the nodes' evaluation.duty_clock (cpu: each node keeps its share while the box "
                         "has room; see docs/BENCHMARKS.md section 4)")
    ap.add_argument("--presets", choices=["mixed", "default", "ladder"], default="mixed",
                    help="n<K> arms: mixed = CMA-ES sigma 0.5/0.3/0.8/1.2 and one OpenAI-ES in turn; "
                         "default = every node with the default settings (CMA-ES, sigma 0.5), own seed; "
                         "ladder = default settings, node i with popsize0 x 2^min(i, 6) (IPOP's rungs)")
    ap.add_argument("--isolated", action="store_true",
                    help="n<K> arms: migration off (each island alone; the network best is the best island's)")
    ap.add_argument("--wire", action="store_true",
                    help="read every node's status at the end of a run: bytes and networking CPU per evaluation")
    ap.add_argument("--x", choices=["work", "wall"], default="work", help="plot against total work or wall time")
    a = ap.parse_args()
    if a.replot:
        runs = [Run(**{k: v for k, v in d.items()}) for d in json.loads(a.replot.read_text())]
        plot(runs, a.replot.with_suffix(".png"), a)
        print(f"wrote {a.replot.with_suffix('.png')}\n\n{table(runs, a)}\n\n{scaling_summary(runs, a)}")
        if a.logs:
            for r in runs:
                n = Node(a.logs, f"{r.arm}-s{r.seed}-n0", [])
                if n.log_path.exists():
                    n.poll_log()
                    r.node0 = n.node0_times(r.all_up)  # runs before all_up existed: node 0's start
            print(node0_speed(runs))
            print(pool_pace(runs))
        print(search_and_cost(runs))
        return 0
    if a.budget is None:
        a.budget = 20_000 if a.problem == "lunarlander" else 200_000
    if a.quick:
        a.seeds, a.budget, a.max_wall, a.final_episodes, a.nodes = 1, 300 if a.problem == "lunarlander" else 3000, 60, 5, 2
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]

    def on_term(*_):  # SIGTERM: unwind through every run's `finally`, which stops its nodes by PID
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    base = Path(tempfile.mkdtemp(prefix="gaia-bench-"))
    (base / "no_bootstrap.toml").write_text("bootstrap = []\n")
    cmd = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print(f"# {cmd}\n# logs under {base}", flush=True)
    runs: list[Run] = []
    seeds = a.seed_list or list(range(a.first_seed, a.first_seed + a.seeds))
    for seed in seeds:
        for arm in arms:  # interleaved, so load drift hits every arm alike
            r = one_run(arm, seed, a, base)
            runs.append(r)
            print(f"{arm:8s} seed {seed}: solved={r.solved} episodes_to_solve={r.episodes_to_solve} "
                  f"wall_to_solve={r.wall_to_solve_s and round(r.wall_to_solve_s, 1)} total={r.episodes_total} "
                  f"best={r.best_estimate and round(r.best_estimate, 2)} final={r.final_score} "
                  f"accepted={r.accepted}", flush=True)
    md = table(runs, a)
    for extra in (scaling_summary(runs, a), node0_speed(runs), pool_pace(runs), search_and_cost(runs),
                  wire_table(runs) if a.wire else ""):
        if extra:
            md += "\n\n" + extra
    print("\n" + md)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.tag or (a.problem + ("-quick" if a.quick else ""))
    (a.out / f"{stem}.md").write_text(f"Command: `{cmd}`\n\n{md}\n")
    (a.out / f"{stem}.json").write_text(json.dumps([r.__dict__ for r in runs], default=float))
    plot(runs, a.out / f"{stem}.png", a)
    print(f"\nwrote {a.out / (stem + '.md')}, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
