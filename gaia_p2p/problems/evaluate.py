"""Worker-side entry point: evaluate a population for a problem.

The daemon calls :func:`evaluate_batch` in worker processes. Call :func:`pin_blas_threads` in the
parent before those processes start, so that each worker uses one BLAS thread (the workers already
give one process per core; nested BLAS threads only oversubscribe the CPU).

This module never imports torch at import time (``backend="torch"`` and ``torch:*`` problems import
it inside :func:`evaluate_batch`, through ``gaia_p2p.problems.torch_backend`` and ``torch_policy``)
nor, until a LunarLander evaluation runs, gymnasium.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from gaia_p2p.core.experiment import ProblemConfig
from gaia_p2p.errors import ConfigError, EvaluationError
from gaia_p2p.problems import functions, gym, lunar, plugin, spirals

BACKENDS = ("numpy", "torch")

from gaia_p2p.threads import BLAS_THREAD_VARS, single_thread_env  # noqa: F401  (BLAS_THREAD_VARS re-exported)

# Keeps the runtime limit object alive (threadpoolctl restores limits only when asked to).
_THREADPOOL_LIMITS: Any = None


def pin_blas_threads() -> None:
    """Default every BLAS/OpenMP thread count to 1 (env vars, inherited by child processes).

    Existing settings win (``os.environ.setdefault``). Libraries already loaded in this process
    ignore env vars, so when the optional ``threadpoolctl`` is importable the limit is also applied
    at runtime; an already imported torch gets ``set_num_threads(1)``.
    """
    global _THREADPOOL_LIMITS
    single_thread_env()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        _THREADPOOL_LIMITS = threadpool_limits(limits=1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


# Domain tag mixed into the entropy so these seeds differ from other streams of the same base seed.
_EPISODE_SEED_TAG = 0x6A1AE9150DE5


def episode_seeds(base_seed: int, generation: int, episodes: int) -> tuple[int, ...]:
    """``episodes`` env seeds in ``[0, 2**31 - 1]`` for one generation, shared by all candidates.

    Derived as ``SeedSequence(entropy=(base_seed, TAG), spawn_key=(generation,))
    .generate_state(episodes, uint32) & 0x7FFFFFFF``: deterministic, different every generation,
    and stable across numpy versions (SeedSequence's output is fixed by its spec, unlike the
    sampling methods of ``Generator``).
    """
    if base_seed < 0 or generation < 0:
        raise ConfigError(
            f"episode_seeds: base_seed={base_seed}, generation={generation}: both must be >= 0"
        )
    if episodes < 1:
        raise ConfigError(f"episode_seeds: episodes={episodes} must be >= 1")
    ss = np.random.SeedSequence(entropy=(int(base_seed), _EPISODE_SEED_TAG), spawn_key=(int(generation),))
    state = ss.generate_state(int(episodes), dtype=np.uint32) & np.uint32(0x7FFFFFFF)
    return tuple(int(s) for s in state)


def evaluate_batch(
    problem: ProblemConfig,
    X: np.ndarray,
    seeds: tuple[int, ...],
    *,
    backend: str = "numpy",
    device: str = "auto",
) -> np.ndarray:
    """Fitness (higher is better) of each row of ``X (n, problem.param_dim)``, shape ``(n,)``.

    Test functions and spirals ignore ``seeds``. LunarLander runs episode ``j`` of every candidate
    with ``seeds[j]`` and returns the mean return (``len(seeds) >= 1``; usually ``problem.episodes``).

    ``backend="torch"`` evaluates the whole ``X`` in batched torch passes on ``device`` (``auto``:
    cuda if torch sees a GPU, else cpu): spirals entirely, LunarLander its policy forward passes
    (the env physics stays on the CPU). Test functions are numpy on every backend. ``device``
    applies to the torch backend and to ``torch:*`` problems, which run in torch on every backend
    (gaia_p2p.problems.torch_policy).

    Raises :class:`EvaluationError` for an unknown problem or backend, a shape mismatch,
    non-finite parameters, missing seeds, torch missing, or ``device="cuda"`` without a GPU (the
    message names the fix).
    """
    if problem.is_plugin and problem.plugin is None:
        raise EvaluationError(f"unknown problem {problem.name!r} (a Problem of yours is resolved by gaia_p2p.config)")
    if (problem.is_gym or problem.is_torch) and problem.spaces is None:
        raise EvaluationError(f"problem {problem.name!r}: env spaces not resolved (build it with gaia_p2p.config)")
    if backend not in BACKENDS:
        raise EvaluationError(f"evaluation.backend = {backend!r} is not one of {', '.join(BACKENDS)}; "
                              f"pass --backend numpy or --backend torch")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise EvaluationError(f"problem {problem.name!r}: X is not a numeric array: {e}") from e
    dim = problem.param_dim
    if X.ndim != 2 or X.shape[1] != dim:
        raise EvaluationError(
            f"problem {problem.name!r} needs X of shape (n, {dim}), got {X.shape}"
        )
    if not np.all(np.isfinite(X)):
        raise EvaluationError(f"problem {problem.name!r}: X contains non-finite values")
    fn = functions.FUNCTIONS.get(problem.name)
    if fn is not None:
        return fn(X)
    if problem.env_id is not None:
        if len(seeds) < 1:
            raise EvaluationError(f"{problem.name} needs at least one episode seed")
        if problem.steps < 1:
            raise EvaluationError(f"{problem.name}: max_steps={problem.steps} must be >= 1")
    if problem.is_torch:  # a torch module: torch on `device` whatever the backend
        from gaia_p2p.problems import torch_backend, torch_policy

        torch_device = torch_backend.resolve_device(device)
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        return torch_policy.evaluate(problem, X, seeds, device=torch_device)
    if backend == "torch" and (problem.is_gym or problem.is_plugin):
        raise EvaluationError(f"problem {problem.name!r}: the torch backend runs lunarlander and spirals "
                              f"only; pass --backend numpy")
    torch_device = None
    if backend == "torch":
        from gaia_p2p.problems import torch_backend

        torch_device = torch_backend.resolve_device(device)  # before the empty case: errors show early
    if X.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    if problem.name == "spirals":
        if torch_device is not None:
            return torch_backend.evaluate_spirals_torch(X, problem.hidden, device=torch_device)
        return spirals.evaluate_spirals(X, problem.hidden)
    if problem.is_gym:
        return gym.evaluate_gym(problem, X, seeds)
    if problem.plugin is not None:
        return plugin.evaluate(problem.plugin, X, seeds)
    if torch_device is not None:
        return torch_backend.evaluate_lunar_torch(X, seeds, problem.hidden, problem.steps, device=torch_device)
    return lunar.evaluate_lunar(X, seeds, problem.hidden, problem.steps)
