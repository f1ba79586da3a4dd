"""Discrete LunarLander-v3 with an MLP policy given by a flat parameter vector.

Parameter layout (wire format, ``"layout": "W_then_b_per_layer_row_major"``, format 1)
------------------------------------------------------------------------------------
Layer sizes are ``sizes = (8, *hidden, 4)`` (8 observations, 4 discrete actions). For each layer
``l = 0 .. len(sizes) - 2`` in order, with ``in = sizes[l]`` and ``out = sizes[l + 1]``, the vector
holds

1. ``W_l`` of shape ``(in, out)``, row-major (C order): element ``W_l[i, o]`` is at offset
   ``off_l + i * out + o``;
2. then ``b_l`` of shape ``(out,)``, at offsets ``off_l + in * out + o``;

and ``off_{l+1} = off_l + in * out + out`` (``off_0 = 0``). The total length is
``P = sum(in * out + out)``; for ``hidden = (16,)``: 8*16 + 16 + 16*4 + 4 = 212.

The policy, for an observation ``x`` (the float32 vector from the env, as a row vector)::

    h_0 = x
    h_{l+1} = tanh(h_l @ W_l + b_l)        for every hidden layer
    logits  = h_L @ W_L + b_L              (last layer: no activation)
    action  = argmax(logits)               (first index on ties)

Actions: 0 noop, 1 fire left engine, 2 main engine, 3 fire right engine.

Fitness
-------
``evaluate_lunar(X, seeds, hidden, max_steps)`` is, per candidate, the mean over ``j`` of the
undiscounted return of one episode started with ``env.reset(seed=seeds[j])``. An episode ends when
the env reports ``terminated`` or after ``max_steps`` steps (what gymnasium's ``TimeLimit`` wrapper
does; 1000 for the registered LunarLander-v3). Every candidate sees the same seeds.

Implementation: the generic gym path (gaia_p2p/problems/gym.py) with LunarLander's spaces fixed:
all ``n * len(seeds)`` episodes run in lockstep on unwrapped envs (cached per process and reused)
with ONE batched float64 forward pass per step over all still-running episodes. Returns and episode
lengths are bit-identical to stepping ``gymnasium.make("LunarLander-v3")`` one episode at a time
with the same policy and seed (tested); the only possible difference is an argmax between two
logits that agree to rounding error, where a batched and a one-at-a-time matrix product may round
differently (never seen in testing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gaia_p2p.problems import gym
from gaia_p2p.problems.gym import PolicyFactory, param_count, unpack  # noqa: F401  (this module's API)

OBS_DIM = 8
N_ACTIONS = 4
ENV_ID = "LunarLander-v3"
_KEY: gym.EnvKey = (ENV_ID, ())

# Precision of the numpy forward pass. Measured here (8-16-4 policy, one BLAS thread, timeit best
# of 5): one batched forward pass takes 8.0 us in float64 vs 6.9 us in float32 for 32 running
# episodes, 4.2 vs 3.8 us for one; i.e. float32 saves ~0.03 us per env step, ~0.1 % of a ~31 us
# env step, below what an end-to-end benchmark can resolve. Both gave identical trajectories in the
# tests. float64 is kept: rounding-level argmax flips against float64 references (the torch
# backend, other BLAS builds) are ~1e9x less likely than with float32, and replays must match.
POLICY_DTYPE: type[np.floating[Any]] = np.float64

LunarRollouts = gym.Rollouts


def layer_sizes(hidden: Sequence[int]) -> tuple[int, ...]:
    return (OBS_DIM, *(int(h) for h in hidden), N_ACTIONS)


def make_env() -> Any:
    """A fresh unwrapped LunarLander-v3 (no TimeLimit: callers enforce ``max_steps``)."""
    return gym.make_env(ENV_ID)


def numpy_policy_factory(
    X: np.ndarray, hidden: Sequence[int], dtype: type[np.floating[Any]] = POLICY_DTYPE
) -> PolicyFactory:
    """Batched numpy MLP: a factory that gathers the weights of the given population rows."""
    return gym.mlp_policy_factory(X, layer_sizes(hidden), gym.Head(), dtype)


def rollout_lockstep(
    n: int, seeds: Sequence[int], max_steps: int, make_policy: PolicyFactory
) -> LunarRollouts:
    """Run episode ``j`` of each of ``n`` candidates with ``reset(seed=seeds[j])``, in lockstep
    (gaia_p2p.problems.gym.rollout_lockstep on LunarLander-v3)."""
    return gym.rollout_lockstep(_KEY, OBS_DIM, n, seeds, max_steps, make_policy)


def _check_population(X: np.ndarray, hidden: Sequence[int]) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    P = param_count(layer_sizes(hidden))
    if X.ndim != 2 or X.shape[1] != P:
        raise ValueError(f"X must have shape (n, {P}) for hidden={tuple(hidden)}, got {X.shape}")
    return X


def rollout_lunar(
    X: np.ndarray, seeds: Sequence[int], hidden: Sequence[int] = (16,), max_steps: int = 1000
) -> LunarRollouts:
    """Per-episode returns and lengths for population ``X (n, P)``; see the module docstring."""
    X = _check_population(X, hidden)
    return rollout_lockstep(X.shape[0], seeds, max_steps, numpy_policy_factory(X, hidden))


def evaluate_lunar(
    X: np.ndarray, seeds: Sequence[int], hidden: Sequence[int] = (16,), max_steps: int = 1000
) -> np.ndarray:
    """Fitness ``(n,)``: mean return over the episodes ``seeds`` of each row of ``X (n, P)``."""
    return rollout_lunar(X, seeds, hidden, max_steps).fitness
