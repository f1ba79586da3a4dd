"""``gaia-node evaluate``: score a trained policy on fresh episodes.

    gaia-node evaluate (--data-dir DIR | --checkpoint FILE | --elite FILE [--hidden 16])
                       [--episodes 100] [--seed 10000000] [--json]

LunarLander: episode ``i`` starts with ``reset(seed=SEED + i)``; all episodes run in lockstep with
one batched forward pass per step (``problems.lunar.rollout_lunar``), so 100 episodes take about as
long as a few. The default base seed, :data:`EVAL_SEED_BASE` = 10,000,000, keeps apart from
training seeds (``problems/policy_eval.py``, shared with the node's own target test). Reported: mean, std (population, ddof 0), min and max of the returns, mean episode
length, and the share of episodes with return >= 200 (the "solved" threshold of LunarLander).

Test functions (sphere, rastrigin, rosenbrock) are deterministic: the fitness is printed instead.

Nothing heavy at import time: numpy and gymnasium are imported when the first episode runs.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from gaia_p2p.problems.policy_eval import EVAL_SEED_BASE, SOLVED_RETURN, evaluate_policy
from gaia_p2p.tools import policy as policy_io

MAX_EPISODES = 100_000


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
