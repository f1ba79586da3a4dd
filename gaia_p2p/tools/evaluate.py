"""``gaia-node evaluate``: score a trained policy on fresh episodes.

    gaia-node evaluate (--data-dir DIR | --checkpoint FILE | --elite FILE [--hidden 16])
                       [--episodes 100] [--seed 10000000] [--json]

LunarLander: episode ``i`` starts with ``reset(seed=SEED + i)``; all episodes run in lockstep with
one batched forward pass per step (``problems.lunar.rollout_lunar``), so 100 episodes take about as
long as a few. The default base seed, :data:`EVAL_SEED_BASE` = 10,000,000, is a fixed, documented
choice apart from training: training episodes use seeds drawn from the island's own rng, and no
evaluation here reuses them on purpose (a collision is possible, about 100 in 2**31 per generation,
and harmless). Reported: mean, std (population, ddof 0), min and max of the returns, mean episode
length, and the share of episodes with return >= 200 (the "solved" threshold of LunarLander).

Test functions (sphere, rastrigin, rosenbrock) are deterministic: the fitness is printed instead.

Nothing heavy at import time: numpy and gymnasium are imported when the first episode runs.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gaia_p2p.tools import policy as policy_io

if TYPE_CHECKING:
    import numpy as np

    from gaia_p2p.core.experiment import ProblemConfig

EVAL_SEED_BASE = 10_000_000
SOLVED_RETURN = 200.0
MAX_EPISODES = 100_000


def evaluate_policy(params: np.ndarray, hidden: Sequence[int], episodes: int, seed0: int = EVAL_SEED_BASE, *,
                    max_steps: int = 1000, problem: ProblemConfig | None = None) -> dict[str, Any]:
    """Returns of one policy on ``episodes`` episodes seeded ``seed0 .. seed0 + episodes - 1``:
    LunarLander with ``hidden`` and ``max_steps``, or the gym problem ``problem`` (its own policy
    and step limit; "solved" then means its target).

    Deterministic for equal inputs. Returns ``{"episodes", "seed0", "mean", "std", "min", "max",
    "solved_share", "mean_length", "returns", "lengths"}`` (plain Python numbers and lists).
    """
    import numpy as np

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    params = np.asarray(params, dtype=np.float64).reshape(1, -1)
    seeds = [int(seed0) + i for i in range(int(episodes))]
    solved: float | None = SOLVED_RETURN
    if problem is not None and problem.is_plugin:  # a user's Problem: one call per episode seed
        from gaia_p2p.problems.evaluate import evaluate_batch

        returns = np.array([evaluate_batch(problem, params, (s,))[0] for s in seeds])
        return _summary(returns, np.zeros(len(seeds), np.int64), seed0, problem.default_target)
    if problem is not None and problem.name != "lunarlander":
        from gaia_p2p.problems.gym import rollout_problem

        r = rollout_problem(problem, params, seeds)
        solved = problem.default_target
    else:
        from gaia_p2p.problems.lunar import rollout_lunar

        if problem is not None:
            hidden, max_steps = problem.hidden, problem.steps
        r = rollout_lunar(params, seeds, tuple(int(h) for h in hidden), max_steps)
    return _summary(r.returns[0], r.lengths[0], seed0, solved)


def _summary(returns: np.ndarray, lengths: np.ndarray, seed0: int, solved: float | None) -> dict[str, Any]:
    return {
        "episodes": int(returns.size),
        "seed0": int(seed0),
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
        "solved_share": float((returns >= solved).mean()) if solved is not None else None,
        "mean_length": float(lengths.mean()),
        "returns": [float(x) for x in returns],
        "lengths": [int(x) for x in lengths],
    }


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= 2**32 - 1 - MAX_EPISODES:
        raise argparse.ArgumentTypeError(f"{v} must be in 0..{2**32 - 1 - MAX_EPISODES}")
    return v


def _episodes(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= v <= MAX_EPISODES:
        raise argparse.ArgumentTypeError(f"{v} must be in 1..{MAX_EPISODES}")
    return v


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score the best policy of a checkpoint or elite on fresh episodes",
        description="Score a trained policy on N fresh LunarLander episodes (seeds SEED..SEED+N-1, apart from "
                    "training seeds); for a test function, print its deterministic fitness.")
    policy_io.add_source_arguments(p)
    p.add_argument("--episodes", type=_episodes, default=100, help="episodes (default 100)")
    p.add_argument("--seed", type=_seed, default=EVAL_SEED_BASE,
                   help=f"seed of the first episode; episode i uses SEED+i (default {EVAL_SEED_BASE})")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(run=run)


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def run(a: argparse.Namespace) -> int:
    pol = policy_io.load_from_args(a)
    base: dict[str, Any] = {"source": pol.source, "problem": pol.problem, "dim": int(pol.params.size),
                            "generation": pol.generation, "recorded_fitness": pol.fitness}
    if not pol.is_lunar:
        from gaia_p2p.problems.functions import FUNCTIONS

        fitness = float(FUNCTIONS[pol.problem](pol.params.reshape(1, -1))[0])
        if a.json:
            print(json.dumps(base | {"fitness": fitness}, sort_keys=True))
        else:
            print(f"policy    {pol.describe()}")
            print(f"fitness   {fitness:.6g} (deterministic; higher is better, optimum 0)")
        return 0
    res = evaluate_policy(pol.params, pol.hidden, a.episodes, a.seed, max_steps=pol.max_steps)
    if a.json:
        print(json.dumps(base | {"hidden": list(pol.hidden), "max_steps": pol.max_steps} | res, sort_keys=True))
        return 0
    last = a.seed + a.episodes - 1
    print(f"policy    {pol.describe()}")
    print(f"episodes  {a.episodes} (seeds {a.seed}..{last}), mean length {res['mean_length']:.0f} steps")
    print(f"return    mean {_f(res['mean'])}  std {_f(res['std'])}  min {_f(res['min'])}  max {_f(res['max'])}")
    print(f"solved    {100 * res['solved_share']:.1f}% of episodes >= {SOLVED_RETURN:g}")
    return 0
