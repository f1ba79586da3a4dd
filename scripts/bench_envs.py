#!/usr/bin/env python3
"""Episodes and wall seconds to a stated target on gymnasium envs beyond LunarLander: gaia-node
(one node, four nodes) against pycma and OpenAI-ES run outside the daemon, in the same run.

Arms:
  n1    one gaia-node process, one small machine (``--duty`` of a core, like bench_islands' n-arms)
  n4    four gaia-node processes over libp2p on 127.0.0.1, one small machine each (node i: the
        i-th of bench_islands' presets, CMA-ES sigma 0.5/0.3/0.8/1.2; node 0 is n1's node)
  cma   pycma's CMAEvolutionStrategy ask/tell loop in this process (no daemon), x0 = 0, the
        node's sigma and popsize
  oes   the project's OpenAI-ES (gaia_p2p.core.optimizer) in this process, sigma --oes-sigma,
        Adam lr --oes-lr (those of bench_islands' OpenAI-ES preset)

Every arm trains on the same problem: the baselines build their config with
gaia_p2p.config.build_config from the same settings the nodes get (the GAIA_* variables, the
config layer every node process reads), evaluate candidates on the node's evaluation path
(gaia_p2p.problems.gym.rollout_problem, which evaluate_batch runs for a gym problem; it also gives
the env steps) and run at the same duty cycle (gaia_p2p.core.schedule.duty_sleep), one core.

Success is a *tested* score at or above the target: the mean return on ``--test-episodes`` fresh
episodes (gaia_p2p.problems.policy_eval.evaluate_policy, seeds 10,000,000 + i, the same for every
arm), never an estimate. Nodes run their own target test (target_reached; stop_at_target,
test_interval_s = 0). The baselines test with the node's rules (gaia_p2p.core.target.TargetTest):
every ``migration.interval`` generations their mean is scored on ``reeval_episodes`` fresh seeds
(the island's centroid round; counted as training, as on the node), and tested when that estimate
reaches the target, or periodically within ``test_share`` of the training episodes. Test episodes
are never training episodes. A run ends when solved, at ``--max-wall`` or at ``--budget``.

The target defaults to a stated, reachable one (DEFAULT_TARGETS; the envs' reward_threshold,
e.g. 300 for BipedalWalker-v3, takes ES hours on two cores): ``--target ENV=VALUE``. The table
says which target and how many test episodes each env used.

    python scripts/bench_envs.py --arms n1,n4,cma,oes --seeds 2 --max-wall 140 --duty 0.4
    python scripts/bench_envs.py --env Hopper-v5 --target Hopper-v5=1000 --arms n1,cma --seeds 3
    python scripts/bench_envs.py --quick          # a tiny smoke run (tests): CartPole-v1, ~1 minute

Seeds outermost, then envs, then arms (their order rotated per seed), so load drift hits every arm
alike. Writes a markdown table (command line at the top) and JSON with every run to --out
(default docs/bench/, stem --tag, default "envs"), rewritten after every run.
"""

from __future__ import annotations

# One BLAS/OpenMP thread, set before numpy is imported: the baselines run on one core, as a node's
# evaluation does (gaia_p2p.problems.evaluate.pin_blas_threads); the node processes inherit it.
from gaia_p2p.threads import single_thread_env

single_thread_env()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_islands import REPO, Run, med, one_run, scale_arm  # noqa: E402

DEFAULT_ENVS = ["BipedalWalker-v3", "Hopper-v5"]
# Stated targets, meant to be reachable within minutes of one small machine (the envs' reward_threshold
# is 300 for BipedalWalker-v3, 3800 for Hopper-v5, 4800 for HalfCheetah-v5, which ES needs hours for on
# two cores). BipedalWalker: well above a policy that falls at once (about -100 to -120; a fall costs
# -100); Hopper: a hopper that keeps its balance about half the episode (healthy reward 1 a step,
# 1000 steps; a 45 s smoke at duty 0.2 reached a tested 127-158 and generation champions near 1000).
DEFAULT_TARGETS = {"BipedalWalker-v3": -50.0, "Hopper-v5": 500.0, "HalfCheetah-v5": 500.0,
                   "CartPole-v1": 200.0, "Pendulum-v1": -400.0}
ARMS = ("n1", "n4", "cma", "oes")
BASELINES = ("cma", "oes")


@dataclass
class EnvRun(Run):
    env: str = ""
    target: float | None = None
    # every test on fresh episodes: {"episodes": training episodes then, "mean", "why", "node"}
    tests: list[dict] = field(default_factory=list)
    best_tested: float | None = None
    env_steps: int | None = None  # training env steps (the baselines count them; the nodes do not report them)
    stop: str | None = None  # why a baseline ended before the cap (pycma's own stop criteria)


# ---------------------------------------------------------------- settings shared by nodes and baselines


def env_settings(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` settings (``--set`` syntax) as GAIA_* variables (docs/CONFIG.md), the config layer
    that each node process (bench_islands.Node passes os.environ) and build_config read alike."""
    from gaia_p2p.config import ENV_ARGS_KEY, parse_set

    parse_set(items)  # a malformed item or an unknown key: a ConfigError naming it, before anything runs
    out: dict[str, str] = {}
    env_args: list[str] = []
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip()
        if key.startswith(ENV_ARGS_KEY + "."):
            env_args.append(f"{key[len(ENV_ARGS_KEY) + 1:]}={value.strip()}")
        else:
            out["GAIA_" + key.replace(".", "_").upper()] = value.strip()
    if env_args:
        out["GAIA_PROBLEM_ENV_ARGS"] = ",".join(env_args)
    return out


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class EnvSetup:
    env: str
    target: float
    gaia_env: dict[str, str]  # GAIA_* of every arm
    cfg: object  # gaia_p2p.config.Config: what a node builds from gaia_env (baselines use it)
    base: Path  # node data dirs and logs


def setup_env(env: str, a: argparse.Namespace, base: Path) -> EnvSetup | None:
    """The env's settings, checked by building the config a node builds; None (with a message) when
    the env cannot run here (e.g. MuJoCo not installed)."""
    from gaia_p2p.config import build_config
    from gaia_p2p.errors import ConfigError

    target = a.targets.get(env, DEFAULT_TARGETS.get(env))
    items = [f"test_episodes={a.test_episodes}", "test_interval_s=0"]
    for item in a.set_items:  # [ENV@]KEY=VALUE: for every env, or for ENV only
        where, at, _ = item.partition("=")[0].partition("@")
        if not at:
            items.append(item)
        elif where == env:
            items.append(item.partition("@")[2])
    problem = {"problem": {"name": f"gym:{env}"}}
    try:
        if target is None:  # the env's reward_threshold; given explicitly below, because config.validate
            # reads the target of stop_at_target before the env is resolved (a ValueError without target_fitness)
            target = build_config(env={**os.environ, **env_settings(items)}, overrides=problem).target
        if target is None:
            print(f"# skipping {env}: no target (the env has no reward_threshold); pass --target {env}=VALUE", flush=True)
            return None
        gaia_env = env_settings([f"target_fitness={target}", "stop_at_target=true", *items])
        cfg = build_config(env={**os.environ, **gaia_env}, overrides=problem)
    except ConfigError as e:
        print(f"# skipping {env}: {e}", flush=True)
        return None
    d = base / env.replace("/", "_").replace(":", "_")
    d.mkdir(parents=True, exist_ok=True)
    (d / "no_bootstrap.toml").write_text("bootstrap = []\n")
    return EnvSetup(env, float(cfg.target), gaia_env, cfg, d)


# ---------------------------------------------------------------- arms


def node_run(arm: str, seed: int, s: EnvSetup, a: argparse.Namespace) -> EnvRun:
    """n<K>: bench_islands.one_run (real gaia-node processes, node 0 the bootstrap, duty-cycled),
    on this env's problem; then every test the nodes logged."""
    p = s.cfg.problem
    ns = argparse.Namespace(
        problem=p.name, dim=p.param_dim, log_interval=a.log_interval, interval=None, reeval=None, entry=None,
        margin=None, topology=None, nodes=scale_arm(arm), workers=0, duty=a.duty, duty_clock=a.duty_clock,
        presets=a.presets, popsize=s.cfg.popsize, pool_popsize=None, node_set=[], isolated=False, wire=False,
        budget=a.budget, max_wall=a.max_wall, final_episodes=0, max_generations=None)
    with environ(s.gaia_env):
        r = one_run(arm, seed, ns, s.base)
    run = EnvRun(**vars(r), env=s.env, target=s.target)
    for i in range(r.nodes):
        for ev in log_events(s.base / f"{arm}-s{seed}-n{i}.log", "policy_tested"):
            run.tests.append({"episodes": ev.get("episodes"), "mean": ev.get("mean"), "why": ev.get("why"), "node": i})
    run.best_tested = max((t["mean"] for t in run.tests if t["mean"] is not None), default=None)
    return run


def log_events(path: Path, name: str) -> list[dict]:
    out = []
    for line in path.read_bytes().splitlines() if path.exists() else ():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == name:
            out.append(ev)
    return out


def evaluate(problem, X, seeds) -> tuple:  # noqa: ANN001
    """Fitness of the rows of X on the node's path, and the env steps taken."""
    from gaia_p2p.problems import gym

    r = gym.rollout_problem(problem, X, seeds)  # what evaluate_batch -> gym.evaluate_gym runs
    return r.fitness, int(r.lengths.sum())


class _Pycma:
    """pycma as a user runs it: CMAEvolutionStrategy(x0, sigma0, {popsize, seed}), ask/tell (it minimises)."""

    def __init__(self, dim: int, sigma: float, popsize: int, seed: int) -> None:
        import warnings

        import numpy as np

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycma warns at import when matplotlib is missing
            import cma
        self.es = cma.CMAEvolutionStrategy(np.zeros(dim), sigma, {
            "popsize": popsize, "seed": seed, "maxiter": np.inf, "maxfevals": np.inf,
            "verbose": -9, "verb_log": 0, "verb_disp": 0})
        self._xs: list | None = None

    def ask(self, rng):  # noqa: ANN001, ANN201
        import numpy as np

        self._xs = self.es.ask()
        return np.array(self._xs, dtype=np.float64)

    def tell(self, X, fitness) -> None:  # noqa: ANN001
        self.es.tell(self._xs, (-fitness).tolist())

    @property
    def mean(self):  # noqa: ANN201
        import numpy as np

        return np.array(self.es.mean, dtype=np.float64)

    def stopped(self) -> str | None:
        flags = self.es.stop()
        return ",".join(sorted(flags)) if flags else None


def baseline_run(arm: str, seed: int, s: EnvSetup, a: argparse.Namespace) -> EnvRun:
    """cma / oes in this process: generations of the node's popsize on ``problem.episodes`` fresh
    seeds each, the centroid round and the tests of the node (module doc), the duty cycle's rest."""
    import numpy as np

    from gaia_p2p.core.optimizer import make_optimizer
    from gaia_p2p.core.schedule import duty_sleep
    from gaia_p2p.core.target import TargetTest
    from gaia_p2p.problems.policy_eval import evaluate_policy

    cfg = s.cfg
    p = cfg.problem
    if arm == "cma":
        opt = _Pycma(p.param_dim, cfg.island.sigma, cfg.popsize, seed * 100 + 1)
    else:
        opt = make_optimizer("openai-es", p.param_dim, sigma=a.oes_sigma, popsize=cfg.popsize + cfg.popsize % 2,
                             seed=seed * 100, lr=a.oes_lr)
    rng = np.random.default_rng([seed, 11])
    test = TargetTest(cfg.target, 0.0, share=cfg.test_share, test_episodes=cfg.test_episodes)
    run = EnvRun(arm, seed, 0, env=s.env, target=s.target, env_steps=0)
    estimate = math.nan
    gen = 0
    t0 = time.monotonic()
    while True:
        w0, c0 = time.perf_counter(), time.process_time()
        X = opt.ask(rng)
        seeds = tuple(int(x) for x in rng.integers(0, 2**31 - 1, size=p.episodes))
        fit, steps = evaluate(p, X, seeds)
        opt.tell(X, fit)
        gen += 1
        run.episodes_total += len(X) * len(seeds)
        run.env_steps += steps
        if gen % cfg.migration.interval == 0:  # the island's centroid round on a noisy problem
            m = opt.mean
            xs = tuple(int(x) for x in rng.integers(0, 2**31 - 1, size=cfg.reeval_episodes))
            fm, steps = evaluate(p, m[None], xs)
            run.episodes_total += len(xs)
            run.env_steps += steps
            estimate = float(fm[0])
            run.best_estimate = estimate if run.best_estimate is None else max(run.best_estimate, estimate)
            why = test.due(best_params=m, best_fitness=estimate, best_n=1, deterministic=p.deterministic,
                           now=time.monotonic(), training_episodes=run.episodes_total)
            if why is not None:
                scores = evaluate_policy(m, p.hidden, cfg.test_episodes, problem=p)
                res = test.record(scores, generation=gen, episodes=run.episodes_total, source="local",
                                  spent_episodes=int(scores["episodes"]), why=why, at=time.time(), estimate=estimate)
                run.tests.append({"episodes": run.episodes_total, "mean": res.mean, "why": str(why), "node": 0})
                if res.passed:
                    run.solved = True
                    run.wall_to_solve_s = time.monotonic() - t0
                    run.episodes_to_solve = run.episodes_total
        now = time.monotonic() - t0
        run.curve.append((now, run.episodes_total, estimate))
        run.stop = opt.stopped() if arm == "cma" else None
        if run.solved or run.stop or now > a.max_wall or run.episodes_total >= a.budget:
            break
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        time.sleep(duty_sleep(cpu_s=cpu if a.duty_clock == "cpu" else 0.0, wall_s=wall, duty=a.duty, cores=1))
    run.wall_s = time.monotonic() - t0
    run.best_tested = max((t["mean"] for t in run.tests), default=None)
    run.final_score = {"mean": estimate} if estimate == estimate else None
    return run


def one(arm: str, seed: int, s: EnvSetup, a: argparse.Namespace) -> EnvRun:
    return baseline_run(arm, seed, s, a) if arm in BASELINES else node_run(arm, seed, s, a)


# ---------------------------------------------------------------- report


def _cap(r: EnvRun, a: argparse.Namespace) -> tuple[float, float]:
    """(episodes, wall s) to solve; an unsolved run counts as what it spent by the cap (a lower bound)."""
    if r.solved:
        return float(r.episodes_to_solve), float(r.wall_to_solve_s)
    return float(r.episodes_total), float(min(r.wall_s, a.max_wall))


def _with_ratio(vals: list[float], ref: list[float] | None) -> str:
    m = statistics.median(vals)
    text = f"{m:.0f}" if abs(m) >= 100 else f"{m:.1f}"
    if not ref or statistics.median(ref) <= 0:
        return text
    return f"{text} ({m / statistics.median(ref):.2f}x)"


def table(runs: list[EnvRun], setups: dict[str, EnvSetup], a: argparse.Namespace) -> str:
    out = []
    for env in dict.fromkeys(r.env for r in runs):
        s = setups[env]
        rs_env = [r for r in runs if r.env == env]
        thr = s.cfg.problem.env_spaces.reward_threshold
        stated = "stated" if env in a.targets else ("default of this script" if env in DEFAULT_TARGETS else "the env's")
        out.append(f"### {env}: target {s.target:g} ({stated}; the env's reward_threshold is {thr}), "
                   f"tested on {s.cfg.test_episodes} fresh episodes\n")
        out.append("| arm | nodes | solved | episodes to solve, median (range) | wall s to solve | "
                   "episodes, median (x n1)* | wall s, median (x n1)* | best tested score | "
                   "training episodes at the end | env steps |\n|---|---|---|---|---|---|---|---|---|---|")
        ref = [_cap(r, a) for r in rs_env if r.arm == "n1"]
        for arm in dict.fromkeys(r.arm for r in rs_env):
            rs = [r for r in rs_env if r.arm == arm]
            caps = [_cap(r, a) for r in rs]
            out.append(f"| {arm} | {rs[0].nodes or '-'} | {sum(r.solved for r in rs)} of {len(rs)} | "
                       f"{med([r.episodes_to_solve for r in rs if r.solved])} | "
                       f"{med([r.wall_to_solve_s for r in rs if r.solved])} | "
                       f"{_with_ratio([c[0] for c in caps], [c[0] for c in ref])} | "
                       f"{_with_ratio([c[1] for c in caps], [c[1] for c in ref])} | "
                       f"{med([r.best_tested for r in rs])} | {med([r.episodes_total for r in rs])} | "
                       f"{med([r.env_steps for r in rs])} |")
        out.append("")
    return ("\n".join(out) + "\n* an unsolved run counts as what it spent by the cap (a lower bound); "
            "x n1: the median's ratio to n1's. Nodes do not report env steps (-). Test episodes are not "
            "training episodes.\n")


def run_lines(runs: list[EnvRun]) -> str:
    return "\n".join(f"- {r.env} {r.arm} seed {r.seed}: solved={r.solved} episodes_to_solve={r.episodes_to_solve} "
                     f"wall_to_solve={r.wall_to_solve_s and round(r.wall_to_solve_s, 1)} episodes={r.episodes_total} "
                     f"wall={r.wall_s:.1f} best_tested={r.best_tested and round(r.best_tested, 1)} tests={len(r.tests)}"
                     f" env_steps={r.env_steps} accepted={r.accepted}" + (f" stop={r.stop}" if r.stop else "")
                     for r in runs)


def write(runs: list[EnvRun], setups: dict[str, EnvSetup], a: argparse.Namespace, cmd: str, stem: str) -> str:
    md = table(runs, setups, a) if runs else "(no runs)\n"
    settings = (f"Each run at most {a.max_wall:g} wall seconds" + (f" and {a.budget:g} training episodes" if
                a.budget < math.inf else "") + f"; every node and baseline at duty {a.duty:g} of one core "
                f"(duty_clock {a.duty_clock}); n-arm presets {a.presets}; OpenAI-ES baseline sigma {a.oes_sigma:g}, "
                f"lr {a.oes_lr:g}.")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{stem}.md").write_text(f"Command: `{cmd}`\n\n{settings}\n\n{md}\nRuns:\n\n{run_lines(runs)}\n")
    meta = {env: {"target": s.target, "reward_threshold": s.cfg.problem.env_spaces.reward_threshold,
                  "test_episodes": s.cfg.test_episodes, "popsize": s.cfg.popsize, "dim": s.cfg.problem.param_dim,
                  "settings": s.gaia_env} for env, s in setups.items()}
    (a.out / f"{stem}.json").write_text(json.dumps({"command": cmd, "settings": settings, "envs": meta,
                                                    "runs": [r.__dict__ for r in runs]}, default=float))
    return md


def _target(text: str) -> tuple[str, float]:
    env, eq, value = text.rpartition("=")
    try:
        if not (eq and env):
            raise ValueError
        return env, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ENV=VALUE, e.g. BipedalWalker-v3=0") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", action="append", default=None, help=f"gymnasium env id, repeatable (default: "
                    f"{' and '.join(DEFAULT_ENVS)})")
    ap.add_argument("--target", action="append", type=_target, default=[], metavar="ENV=VALUE",
                    help="the tested score that counts as solved for ENV (default: DEFAULT_TARGETS, else the "
                         "env's reward_threshold)")
    ap.add_argument("--arms", default="n1,n4,cma,oes", help="among n1, n4 (any n<K>), cma, oes")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=1, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--max-wall", type=float, default=300.0, help="seconds per run at most")
    ap.add_argument("--budget", type=float, default=math.inf, help="training episodes per run at most (all nodes)")
    ap.add_argument("--test-episodes", type=int, default=20, help="fresh episodes of a test (the node's "
                    "test_episodes; its default 100 costs minutes of one small machine on BipedalWalker)")
    ap.add_argument("--duty", type=float, default=0.2, help="every node's evaluation.duty_cycle and the baselines' "
                    "(one small machine each: n<K> uses about K x duty cores)")
    ap.add_argument("--duty-clock", choices=["wall", "cpu"], default="wall", help="evaluation.duty_clock "
                    "(bench_islands --duty-clock)")
    ap.add_argument("--presets", choices=["mixed", "default", "ladder"], default="mixed",
                    help="n<K> arms' node settings (bench_islands --presets)")
    ap.add_argument("--oes-sigma", type=float, default=0.1)
    ap.add_argument("--oes-lr", type=float, default=0.03)
    ap.add_argument("--set", action="append", dest="set_items", default=[], metavar="[ENV@]KEY=VALUE",
                    help="a setting for every arm (gaia-node --set syntax, e.g. problem.hidden=32,32 or "
                         "problem.env_args.hardcore=false), for one env only with ENV@; repeatable")
    ap.add_argument("--log-interval", type=float, default=0.0, help="nodes' log_interval_s")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    ap.add_argument("--tag", default=None, help="file name stem (default: envs)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (tests): CartPole-v1, 1 seed, 15 s caps")
    a = ap.parse_args()
    if a.quick:
        a.env = a.env or ["CartPole-v1"]
        a.seeds, a.max_wall, a.test_episodes, a.duty = 1, 15.0, 10, 0.25
    a.env = a.env or DEFAULT_ENVS
    a.targets = dict(a.target)
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in arms if x not in BASELINES and scale_arm(x) is None or x[:1] in ("p", "d")]
    if bad:
        ap.error(f"unknown arms {bad}; use among {', '.join(ARMS)}")

    def on_term(*_):  # SIGTERM: unwind through every run's `finally`, which stops its nodes by PID
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    base = Path(tempfile.mkdtemp(prefix="gaia-bench-envs-"))
    cmd = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    stem = a.tag or ("envs-quick" if a.quick else "envs")
    print(f"# {cmd}\n# logs under {base}", flush=True)
    setups = {env: s for env in a.env if (s := setup_env(env, a, base)) is not None}
    if not setups:
        print("# no env can run here", flush=True)
        return 1
    for env, s in setups.items():
        print(f"# {env}: target {s.target:g}, {s.cfg.test_episodes} test episodes, dim {s.cfg.problem.param_dim}, "
              f"popsize {s.cfg.popsize}, max_steps {s.cfg.problem.steps}", flush=True)
    runs: list[EnvRun] = []
    for i, seed in enumerate(range(a.first_seed, a.first_seed + a.seeds)):
        order = arms[i % len(arms):] + arms[:i % len(arms)]  # rotated per seed
        for env, s in setups.items():
            for arm in order:
                r = one(arm, seed, s, a)
                runs.append(r)
                print(run_lines([r]), flush=True)
                write(runs, setups, a, cmd, stem)
    md = write(runs, setups, a, cmd, stem)
    print("\n" + md + f"\nwrote {a.out / (stem + '.md')}, .json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
