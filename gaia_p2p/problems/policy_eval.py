"""Score one policy on fresh, seeded episodes: ``gaia-node evaluate`` and the node's own target test.

Episode ``i`` starts with ``reset(seed=SEED + i)``. The default base seed, :data:`EVAL_SEED_BASE` =
10,000,000, is a fixed, documented choice apart from training: training episodes use seeds drawn
from the island's own rng, and no evaluation here reuses them on purpose (a collision is possible,
about 100 in 2**31 per generation, and harmless). "Solved" means a return >= :data:`SOLVED_RETURN`
(LunarLander's threshold), or a gym problem's own target.

Nothing heavy at import time (the CLI builds the ``evaluate`` parser on every run): numpy and
gymnasium are imported when the first episode runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from gaia_p2p.core.experiment import ProblemConfig

EVAL_SEED_BASE = 10_000_000
SOLVED_RETURN = 200.0


def evaluate_policy(params: np.ndarray, hidden: Sequence[int], episodes: int, seed0: int = EVAL_SEED_BASE, *,
                    max_steps: int = 1000, problem: ProblemConfig | None = None) -> dict[str, Any]:
    """Returns of one policy on ``episodes`` episodes seeded ``seed0 .. seed0 + episodes - 1``:
    LunarLander with ``hidden`` and ``max_steps``, or the gym or torch problem ``problem`` (its own
    policy and step limit; "solved" then means its target).

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
    if problem is not None and problem.is_torch:  # one policy: the CPU does (no GPU round trip per step)
        from gaia_p2p.problems.torch_policy import rollout

        r = rollout(problem, params, seeds, device="cpu")
        solved = problem.default_target
    elif problem is not None and problem.name != "lunarlander":
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
