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

Implementation: all ``n * len(seeds)`` episodes run in lockstep on unwrapped envs (cached per
process and reused) with ONE batched float64 forward pass per step over all still-running
episodes. Returns and episode lengths are bit-identical to stepping ``gymnasium.make(
"LunarLander-v3")`` one episode at a time with the same policy and seed (tested); the only
possible difference is an argmax between two logits that agree to rounding error, where a batched
and a one-at-a-time matrix product may round differently (never seen in testing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OBS_DIM = 8
N_ACTIONS = 4
ENV_ID = "LunarLander-v3"

# Precision of the numpy forward pass. Measured here (8-16-4 policy, one BLAS thread, timeit best
# of 5): one batched forward pass takes 8.0 us in float64 vs 6.9 us in float32 for 32 running
# episodes, 4.2 vs 3.8 us for one; i.e. float32 saves ~0.03 us per env step, ~0.1 % of a ~31 us
# env step, below what an end-to-end benchmark can resolve. Both gave identical trajectories in the
# tests. float64 is kept: rounding-level argmax flips against float64 references (the torch
# backend, other BLAS builds) are ~1e9x less likely than with float32, and replays must match.
POLICY_DTYPE: type[np.floating[Any]] = np.float64

# Upper bound on envs stepped together; larger batches run in consecutive chunks (bounds memory).
MAX_LOCKSTEP_ENVS = 1024

# Maps rows of the population (candidate index of each running episode) to a policy that turns a
# (m, 8) float32 observation batch into a list of m Python int actions.
PolicyFactory = Callable[[np.ndarray], Callable[[np.ndarray], list[int]]]

_ENV_POOL: list[Any] = []


def layer_sizes(hidden: Sequence[int]) -> tuple[int, ...]:
    return (OBS_DIM, *(int(h) for h in hidden), N_ACTIONS)


def param_count(sizes: Sequence[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def unpack(params: np.ndarray, sizes: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a population ``(n, P)`` into per-layer ``(W (n, in, out), b (n, out))`` (views)."""
    params = np.asarray(params)
    if params.ndim != 2:
        raise ValueError(f"params must have shape (n, P), got {params.shape}")
    expected = param_count(sizes)
    if params.shape[1] != expected:
        raise ValueError(f"params have {params.shape[1]} columns, sizes {tuple(sizes)} need {expected}")
    n = params.shape[0]
    layers = []
    off = 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        W = params[:, off : off + a * b].reshape(n, a, b)
        off += a * b
        bias = params[:, off : off + b]
        off += b
        layers.append((W, bias))
    return layers


# The unwrapped env's step() starts with ``assert self.action_space.contains(action)``; gymnasium's
# Discrete.contains builds ``np.iinfo`` on every call (~2 us, ~7 % of a ~31 us step here). Our
# cached envs get a Discrete whose contains() gives the same answer with a fast path for plain
# Python ints (what the policies pass). It is a check only: dynamics and results are unchanged.
FAST_ACTION_CHECK = True


@functools.cache
def _fast_discrete_class() -> type:
    from gymnasium.spaces import Discrete

    class _FastIntDiscrete(Discrete):  # type: ignore[misc]
        def __init__(self, n: int, start: int = 0) -> None:
            super().__init__(n, start=start)
            self._lo, self._hi = int(start), int(start) + int(n)

        def contains(self, x: Any) -> bool:
            if type(x) is int:
                return self._lo <= x < self._hi
            return bool(super().contains(x))

    return _FastIntDiscrete


def make_env() -> Any:
    """A fresh unwrapped LunarLander-v3 (no TimeLimit: callers enforce ``max_steps``)."""
    import gymnasium

    env = gymnasium.make(ENV_ID).unwrapped
    if FAST_ACTION_CHECK:
        space = env.action_space
        env.action_space = _fast_discrete_class()(int(space.n), start=int(space.start))
    return env


def _env_pool(k: int) -> list[Any]:
    """The first ``k`` cached unwrapped envs of this process (created on first need, then reused:
    every episode starts with ``reset(seed=...)``, which rebuilds the world and reseeds the RNG)."""
    while len(_ENV_POOL) < k:
        _ENV_POOL.append(make_env())
    return _ENV_POOL[:k]


def numpy_policy_factory(
    X: np.ndarray, hidden: Sequence[int], dtype: type[np.floating[Any]] = POLICY_DTYPE
) -> PolicyFactory:
    """Batched numpy MLP: a factory that gathers the weights of the given population rows."""
    layers = [
        (np.ascontiguousarray(W, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)[:, None, :])
        for W, b in unpack(X, layer_sizes(hidden))
    ]

    def make(rows: np.ndarray) -> Callable[[np.ndarray], list[int]]:
        sel = [(W[rows], b[rows]) for W, b in layers]
        hidden_layers, (W_out, b_out) = sel[:-1], sel[-1]

        def act(obs: np.ndarray) -> list[int]:
            h = obs.astype(dtype, copy=False)[:, None, :]  # (m, 1, in)
            for W, b in hidden_layers:
                h = np.matmul(h, W)
                h += b
                np.tanh(h, out=h)
            logits = np.matmul(h, W_out)
            logits += b_out
            return logits[:, 0, :].argmax(axis=1).tolist()

        return act

    return make


@dataclass(frozen=True)
class LunarRollouts:
    returns: np.ndarray  # (n, episodes) float64: undiscounted return of each episode
    lengths: np.ndarray  # (n, episodes) int64: env steps taken in each episode

    @property
    def fitness(self) -> np.ndarray:
        return self.returns.mean(axis=1)


def rollout_lockstep(
    n: int, seeds: Sequence[int], max_steps: int, make_policy: PolicyFactory
) -> LunarRollouts:
    """Run episode ``j`` of each of ``n`` candidates with ``reset(seed=seeds[j])``, in lockstep.

    ``make_policy(rows)`` is called at the start and whenever episodes end, with the population
    row of every still-running episode (in the order of the observation batch).
    """
    seeds = [int(s) for s in seeds]
    n_ep = len(seeds)
    if n_ep < 1:
        raise ValueError("need at least one episode seed")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    total = n * n_ep
    returns = np.zeros(total, dtype=np.float64)
    lengths = np.zeros(total, dtype=np.int64)
    for start in range(0, total, MAX_LOCKSTEP_ENVS):
        stop = min(total, start + MAX_LOCKSTEP_ENVS)
        envs = _env_pool(stop - start)
        episodes = list(range(start, stop))
        obs = np.empty((len(episodes), OBS_DIM), dtype=np.float32)
        for i, (env, e) in enumerate(zip(envs, episodes)):
            obs[i] = env.reset(seed=seeds[e % n_ep])[0]
        steppers = [env.step for env in envs]
        rets = [0.0] * len(episodes)
        rows = np.arange(start, stop) // n_ep
        act = make_policy(rows)
        t = 0
        while True:
            actions = act(obs)
            t += 1
            ended: list[int] = []
            for i, (step, a) in enumerate(zip(steppers, actions)):
                o, r, terminated, _, _ = step(a)
                obs[i] = o
                rets[i] += r
                if terminated:
                    ended.append(i)
            if t >= max_steps:  # truncation: every running episode ends here
                for e, ret in zip(episodes, rets):
                    returns[e] = ret
                    lengths[e] = t
                break
            if ended:
                for i in ended:
                    returns[episodes[i]] = rets[i]
                    lengths[episodes[i]] = t
                if len(ended) == len(episodes):
                    break
                done = set(ended)
                keep = [i for i in range(len(episodes)) if i not in done]
                steppers = [steppers[i] for i in keep]
                rets = [rets[i] for i in keep]
                episodes = [episodes[i] for i in keep]
                obs = obs[keep]
                rows = rows[keep]
                act = make_policy(rows)
    return LunarRollouts(returns.reshape(n, n_ep), lengths.reshape(n, n_ep))


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
