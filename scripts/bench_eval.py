#!/usr/bin/env python
"""Benchmark LunarLander evaluation throughput on one core.

Env steps per second of wall time (resets included in the time), for:

  (a)  raw    : one unwrapped LunarLander-v3 env, constant action 0, reset with a new seed on
                termination: the ceiling for pure env stepping from Python;
  (b)  numpy  : gaia_p2p.problems.lunar.rollout_lunar over generations of a population of random
                MLP policies (new episode seeds each generation), counting the env steps taken;
  (c)  torch  : the same generations through gaia_p2p.problems.torch_backend (CPU, 1 thread);
  (a') replay : diagnostic: exactly the episodes of (b), actions replayed from recorded lists on one
                env, no policy, no lockstep. (b)/(a') is the evaluator's own cost; (a')/(a) is how
                much dearer the env is on those trajectories than on a constant-action free fall.

(b) and (c) run on the evaluator's cached envs, whose action check is an equivalent fast
Discrete.contains (gaia_p2p.problems.gym.FAST_ACTION_CHECK; --no-fast-check turns it off);
(a) and (a') use plain unwrapped envs, as any caller would get them from gymnasium.

Every repeat measures the same fixed workloads, interleaved, so repeats differ only by machine
noise; the median and the best repeat are reported (on a shared machine the best is the steadier).

    python scripts/bench_eval.py                 # default: >= 100k steps per workload, 5 repeats
    python scripts/bench_eval.py --quick         # smoke test (a few seconds)

With ``--env ENV_ID`` (repeatable) it measures those gymnasium envs instead, as ``gym:ENV_ID``
problems: (a) raw: one unwrapped env stepped with a random action sequence drawn before the timing,
reset with a new seed when an episode ends; (b) numpy: gaia_p2p.problems.gym.rollout_problem over
generations of random MLP policies (max_steps: the env's registered limit).

    python scripts/bench_eval.py --env CartPole-v1 --env Pendulum-v1 --env BipedalWalker-v3 --steps 30000 --repeats 3
"""

from __future__ import annotations

import os
import sys

# One BLAS/OpenMP thread, set before numpy (or torch) is imported.
from gaia_p2p.threads import single_thread_env  # noqa: E402  (imports nothing heavy)

single_thread_env(force=True)

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

Generation = tuple[np.ndarray, tuple[int, ...]]


def pin_to_one_core(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    core = sorted(os.sched_getaffinity(0))[0] if cpu is None else cpu
    os.sched_setaffinity(0, {core})
    return f"pinned to cpu {core}"


def raw_workload(steps: int, seed0: int) -> int:
    """Run (a) once: constant action 0, new seed per episode. Returns the number of episodes."""
    import gymnasium

    env = gymnasium.make("LunarLander-v3").unwrapped
    seed = seed0
    env.reset(seed=seed)
    step = env.step
    episodes = 1
    for n in range(1, steps + 1):
        if step(0)[2] and n < steps:
            seed += 1
            episodes += 1
            env.reset(seed=seed)
    return episodes


def make_generations(
    steps: int, popsize: int, hidden: tuple[int, ...], episodes: int, max_steps: int,
    sigma: float, seed: int,
) -> tuple[list[Generation], int, int]:
    """Random populations + episode seeds, whole generations until >= steps env steps."""
    from gaia_p2p.problems import lunar
    from gaia_p2p.problems.evaluate import episode_seeds

    P = lunar.param_count(lunar.layer_sizes(hidden))
    rng = np.random.default_rng(seed)
    gens: list[Generation] = []
    n = n_ep = 0
    while n < steps:
        X = sigma * rng.standard_normal((popsize, P))
        seeds = episode_seeds(seed, len(gens), episodes)
        res = lunar.rollout_lunar(X, seeds, hidden, max_steps)
        n += int(res.lengths.sum())
        n_ep += res.lengths.size
        gens.append((X, seeds))
    return gens, n, n_ep


def record_actions(
    gens: Sequence[Generation], hidden: tuple[int, ...], max_steps: int
) -> list[tuple[int, list[int]]]:
    """(seed, actions) of every episode of gens, from a plain one-episode-at-a-time run."""
    import gymnasium

    from gaia_p2p.problems import lunar

    env = gymnasium.make("LunarLander-v3").unwrapped
    out = []
    for X, seeds in gens:
        for layers in ([(W[0], b[0]) for W, b in lunar.unpack(x[None], lunar.layer_sizes(hidden))] for x in X):
            for seed in seeds:
                obs, _ = env.reset(seed=seed)
                actions = []
                for _ in range(max_steps):
                    h = obs.astype(np.float64)
                    for W, b in layers[:-1]:
                        h = np.tanh(h @ W + b)
                    a = int(np.argmax(h @ layers[-1][0] + layers[-1][1]))
                    actions.append(a)
                    obs, _, terminated, _, _ = env.step(a)
                    if terminated:
                        break
                out.append((seed, actions))
    return out


def replay(episodes: Sequence[tuple[int, list[int]]]) -> None:
    import gymnasium

    env = gymnasium.make("LunarLander-v3").unwrapped
    for seed, actions in episodes:
        env.reset(seed=seed)
        step = env.step
        for a in actions:
            step(a)


def gym_raw_workload(env_id: str, actions: Sequence[Any], max_steps: int, seed0: int) -> int:
    """(a) for a gym env: ``len(actions)`` steps of the given actions. Returns the number of episodes."""
    import gymnasium

    env = gymnasium.make(env_id).unwrapped
    seed, t, episodes = seed0, 0, 1
    env.reset(seed=seed)
    step = env.step
    for n, a in enumerate(actions, 1):
        _, _, terminated, truncated, _ = step(a)
        t += 1
        if (terminated or truncated or t >= max_steps) and n < len(actions):
            seed, t, episodes = seed + 1, 0, episodes + 1
            env.reset(seed=seed)
    return episodes


def bench_gym(env_id: str, args: argparse.Namespace) -> tuple[str, int, float, float, float, float]:
    """(env, dim, raw steps/s, lockstep steps/s, their ratio, lockstep mean episode length); best repeats."""
    import gymnasium

    from gaia_p2p.config import build_config
    from gaia_p2p.problems import gym
    from gaia_p2p.problems.evaluate import episode_seeds

    problem = build_config(env={}, overrides={"problem": {"name": f"gym:{env_id}", "hidden": tuple(args.hidden)}}).problem
    rng = np.random.default_rng(args.seed)
    gens: list[Generation] = []
    n = n_ep = 0
    while n < args.steps:
        X = args.sigma * rng.standard_normal((args.popsize, problem.param_dim))
        seeds = episode_seeds(args.seed, len(gens), args.episodes)
        res = gym.rollout_problem(problem, X, seeds)
        n, n_ep = n + int(res.lengths.sum()), n_ep + res.lengths.size
        gens.append((X, seeds))
    space = gymnasium.make(env_id).action_space
    space.seed(args.seed)
    actions = [space.sample() for _ in range(args.steps)]
    actions = [int(a) for a in actions] if np.ndim(actions[0]) == 0 else actions
    raw, lock = [], []
    for _ in range(args.repeats):  # interleaved, as in main()
        t0 = time.perf_counter()
        gym_raw_workload(env_id, actions, problem.steps, args.seed)
        t1 = time.perf_counter()
        for X, seeds in gens:
            gym.rollout_problem(problem, X, seeds)
        t2 = time.perf_counter()
        raw.append(args.steps / (t1 - t0))
        lock.append(n / (t2 - t1))
    return env_id, problem.param_dim, max(raw), max(lock), max(lock) / max(raw), n / n_ep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100_000, help="env steps per workload (default 100000)")
    ap.add_argument("--popsize", type=int, default=32, help="population size for (b), (c) (default 32)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each workload (default 5)")
    ap.add_argument("--episodes", type=int, default=1, help="episodes per candidate (default 1)")
    ap.add_argument("--hidden", type=int, nargs="*", default=[16], help="hidden layer sizes (default 16)")
    ap.add_argument("--max-steps", type=int, default=1000, help="episode step limit (default 1000)")
    ap.add_argument("--sigma", type=float, default=0.5, help="std of the random policy parameters")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: first allowed)")
    ap.add_argument("--no-torch", action="store_true", help="skip (c)")
    ap.add_argument("--no-replay", action="store_true", help="skip the (a') diagnostic")
    ap.add_argument(
        "--no-fast-check", action="store_true",
        help="diagnostic: give the evaluator's envs gymnasium's own Discrete.contains (gym.FAST_ACTION_CHECK)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: 3000 steps, 1 repeat")
    ap.add_argument("--env", action="append", default=[], metavar="ENV_ID",
                    help="measure this gymnasium env as a gym:ENV_ID problem instead (repeatable)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 3000)
        args.repeats = 1

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("affinity:", pin_to_one_core(args.cpu))
    import gymnasium

    if args.env:
        print(f"gymnasium {gymnasium.__version__}, >= {args.steps} steps per workload, best of {args.repeats}, "
              f"popsize {args.popsize}, hidden {tuple(args.hidden)}, episodes {args.episodes}, sigma {args.sigma}")
        print(f"{'env':<22} {'dim':>5} {'raw steps/s':>12} {'lockstep/s':>11} {'ratio':>6} {'mean ep':>8}")
        for env_id in args.env:
            name, dim, raw, lock, ratio, ep = bench_gym(env_id, args)
            print(f"{name:<22} {dim:>5} {raw:>12,.0f} {lock:>11,.0f} {ratio:>6.2f} {ep:>8.1f}")
        return 0
    from gaia_p2p.problems import gym

    from gaia_p2p.problems import lunar

    gym.FAST_ACTION_CHECK = not args.no_fast_check
    hidden = tuple(args.hidden)
    torch_note = "torch not measured (--no-torch)"
    rollouts: dict[str, Callable[..., Any]] = {"numpy": lunar.rollout_lunar}
    if not args.no_torch:
        try:
            import torch
        except ImportError as e:
            torch_note = f"torch skipped: {e}"
        else:
            torch.set_num_threads(1)
            from gaia_p2p.problems.torch_backend import rollout_lunar_torch

            rollouts["torch"] = rollout_lunar_torch
            torch_note = f"torch {torch.__version__} ({torch.get_num_threads()} thread, cpu, float64)"
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, gymnasium {gymnasium.__version__}, "
        f"numpy policy {np.dtype(lunar.POLICY_DTYPE).name}, fast action check {gym.FAST_ACTION_CHECK}; "
        f"{torch_note}"
    )
    print(
        f"workload: >= {args.steps} steps, repeats {args.repeats}, popsize {args.popsize}, hidden {hidden}, "
        f"episodes {args.episodes}, max_steps {args.max_steps}, sigma {args.sigma}, seed {args.seed}"
    )

    # Fixed workloads (building them also warms up env creation and imports).
    gens, pol_steps, pol_eps = make_generations(
        args.steps, args.popsize, hidden, args.episodes, args.max_steps, args.sigma, args.seed
    )
    raw_eps = raw_workload(args.steps, args.seed)
    work: dict[str, tuple[Callable[[], object], int, int]] = {
        "raw": (lambda: raw_workload(args.steps, args.seed), args.steps, raw_eps),
    }
    if not args.no_replay:
        recorded = record_actions(gens, hidden, args.max_steps)
        work["replay"] = (lambda: replay(recorded), sum(len(a) for _, a in recorded), len(recorded))
    for name, rollout in rollouts.items():
        work[name] = (
            lambda rollout=rollout: [rollout(X, seeds, hidden, args.max_steps) for X, seeds in gens],
            pol_steps,
            pol_eps,
        )
    if "torch" in work:
        work["torch"][0]()  # warm up torch kernels

    wall: dict[str, list[float]] = {k: [] for k in work}
    cpu: dict[str, list[float]] = {k: [] for k in work}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every workload alike
        for name, (fn, steps, _) in work.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append(steps / (t1 - t0))
            cpu[name].append(steps / max(c1 - c0, 1e-9))

    raw_med, raw_best = statistics.median(wall["raw"]), max(wall["raw"])
    print()
    print("steps/s of wall time; ratio = this / (a) raw, for the median and for the best repeat")
    header = (
        f"{'workload':<11} {'env steps':>9} {'mean ep':>8} {'median/s':>9} {'best/s':>9} "
        f"{'cpu med/s':>9} {'ratio med':>9} {'ratio best':>10}"
    )
    print(header)
    print("-" * len(header))
    for label, name in (("(a)", "raw"), ("(b)", "numpy"), ("(c)", "torch"), ("(a')", "replay")):
        if name not in work:
            continue
        _, steps, eps = work[name]
        med, best = statistics.median(wall[name]), max(wall[name])
        print(
            f"{label + ' ' + name:<11} {steps:>9} {steps / eps:>8.1f} {med:>9,.0f} {best:>9,.0f} "
            f"{statistics.median(cpu[name]):>9,.0f} {med / raw_med:>9.3f} {best / raw_best:>10.3f}"
        )
    if "replay" in work:
        rep_med, rep_best = statistics.median(wall["replay"]), max(wall["replay"])
        for label, name in (("(b)", "numpy"), ("(c)", "torch")):
            if name in work:
                print(
                    f"{label} / (a') replay of the same episodes: median "
                    f"{statistics.median(wall[name]) / rep_med:.3f}, best {max(wall[name]) / rep_best:.3f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
