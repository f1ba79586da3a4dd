"""Two-spirals binary classification: an MLP classifier scored on a dataset made in-process.

Everything that defines fitness is fixed by constants in :mod:`gaia_p2p.core.experiment`
(``SPIRALS_*``) and hashed into the experiment id (``ProblemConfig.canonical()``).

Dataset (``"generator": 1``)
----------------------------
``n = SPIRALS_N_POINTS`` points, ``m = n // 2`` per class, class 0 first, then class 1. For
``i = 0 .. m-1``::

    t_i     = sqrt((i + 0.5) / m)                       (0 < t_i < 1; sqrt: even density in area)
    theta_i = SPIRALS_TURNS * 2 pi * t_i
    class 0: (x, y) = ( t_i cos theta_i,  t_i sin theta_i) + noise
    class 1: (x, y) = (-t_i cos theta_i, -t_i sin theta_i) + noise   (the arm turned by pi)

The noise is ``SPIRALS_NOISE`` times standard normals made by Box-Muller from
``SeedSequence(entropy=(SPIRALS_SEED, TAG)).generate_state(2 * n, uint64)``: word ``2k`` and
``2k + 1`` give ``u1, u2 = ((w >> 11) + 0.5) / 2**53`` and the normals
``r cos(2 pi u2), r sin(2 pi u2)`` with ``r = sqrt(-2 ln u1)``, which perturb ``x`` and ``y`` of
point ``k``. SeedSequence's output is fixed by its spec (stable across numpy versions, unlike
``Generator`` sampling); only libm's last-bit rounding of ``log``/``cos``/``sin`` may differ between
machines, far below the island's claim tolerance.

Model and fitness
-----------------
Layer sizes ``(2, *hidden, 1)``, parameter layout exactly as LunarLander's (per layer ``W (in, out)``
row-major, then ``b (out,)``; see :mod:`gaia_p2p.problems.lunar`). ``h = tanh(h @ W + b)`` on hidden
layers, the last layer gives one logit ``z`` (no activation). Fitness (higher is better) is the
negative mean binary cross-entropy over the whole dataset,
``-(1/n) sum_k [max(z_k, 0) - y_k z_k + log1p(exp(-|z_k|))]``: ``-ln 2 = -0.693`` for a model that
always says 0.5, ``0`` for a perfect confident one. :func:`accuracy_spirals` reports accuracy
(``z > 0`` predicts class 1) separately; it is not the fitness.

Here everything runs in float64 with numpy, the whole population at once (stacked ``matmul``),
chunked to bound memory. The same candidate gives bit-identical fitness in any batch (tested).
The torch version is :func:`gaia_p2p.problems.torch_backend.evaluate_spirals_torch`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from gaia_p2p.core.experiment import (
    SPIRALS_IN,
    SPIRALS_N_POINTS,
    SPIRALS_NOISE,
    SPIRALS_OUT,
    SPIRALS_SEED,
    SPIRALS_TURNS,
)
from gaia_p2p.problems.lunar import param_count, unpack

# Domain tag mixed into the noise entropy (another stream than the episode seeds of the same seed).
_DATASET_SEED_TAG = 0x5B12A15

# At most this many elements in one intermediate (n_chunk, n_points, width) array: 2 MiB of float64,
# which stays in cache. Measured here (popsize 1024, MLP 2-16-1, 1 thread): 31 ms per population
# with 2**18, 55-98 ms with 2**20, 69-96 ms with 2**23 (one chunk).
MAX_CHUNK_ELEMENTS = 1 << 18


def layer_sizes(hidden: Sequence[int]) -> tuple[int, ...]:
    return (SPIRALS_IN, *(int(h) for h in hidden), SPIRALS_OUT)


def make_dataset(
    n_points: int = SPIRALS_N_POINTS,
    noise: float = SPIRALS_NOISE,
    turns: float = SPIRALS_TURNS,
    seed: int = SPIRALS_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """``(points (n, 2) float64, labels (n,) float64 in {0, 1})`` as the module doc describes."""
    if n_points < 2 or n_points % 2:
        raise ValueError(f"n_points={n_points} must be even and >= 2")
    m = n_points // 2
    t = np.sqrt((np.arange(m, dtype=np.float64) + 0.5) / m)
    theta = turns * 2.0 * np.pi * t
    arm = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    points = np.concatenate([arm, -arm])
    words = np.random.SeedSequence(entropy=(int(seed), _DATASET_SEED_TAG)).generate_state(
        2 * n_points, dtype=np.uint64)
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    points = points + noise * np.stack([r * np.cos(2.0 * np.pi * u2), r * np.sin(2.0 * np.pi * u2)], axis=1)
    labels = np.concatenate([np.zeros(m), np.ones(m)])
    return points, labels


@functools.cache
def dataset() -> tuple[np.ndarray, np.ndarray]:
    """The experiment's dataset (made once per process; read-only arrays)."""
    points, labels = make_dataset()
    points.setflags(write=False)
    labels.setflags(write=False)
    return points, labels


def chunk_rows(n_points: int, sizes: Sequence[int], max_elements: int) -> int:
    """Candidates per chunk so that one (rows, n_points, widest layer) array stays <= max_elements."""
    return max(1, max_elements // (n_points * max(sizes[1:])))


def _check(X: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    P = param_count(sizes)
    if X.ndim != 2 or X.shape[1] != P:
        raise ValueError(f"X must have shape (n, {P}) for layer sizes {sizes}, got {X.shape}")
    return X


def logits_spirals(X: np.ndarray, hidden: Sequence[int] = (16,)) -> np.ndarray:
    """Logits ``(n, n_points)`` of each candidate on the dataset."""
    sizes = layer_sizes(hidden)
    X = _check(X, sizes)
    points, _ = dataset()
    out = np.empty((X.shape[0], points.shape[0]))
    step = chunk_rows(points.shape[0], sizes, MAX_CHUNK_ELEMENTS)
    for lo in range(0, X.shape[0], step):
        layers = unpack(X[lo : lo + step], sizes)
        h = points  # (N, 2), broadcast over the chunk by matmul
        for W, b in layers[:-1]:
            h = np.tanh(np.matmul(h, W) + b[:, None, :])  # (c, N, out)
        W, b = layers[-1]
        out[lo : lo + step] = np.matmul(h, W)[:, :, 0] + b
    return out


def bce_fitness(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-mean(BCE)`` per row of logits ``z (n, N)`` against labels ``y (N,)`` (stable form)."""
    loss = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return 0.0 - loss.mean(axis=1)


def evaluate_spirals(X: np.ndarray, hidden: Sequence[int] = (16,)) -> np.ndarray:
    """Fitness ``(n,)`` (negative mean BCE, higher is better) of each row of ``X``; numpy, float64."""
    _, labels = dataset()
    return bce_fitness(logits_spirals(X, hidden), labels)


def accuracy_spirals(X: np.ndarray, hidden: Sequence[int] = (16,)) -> np.ndarray:
    """Fraction of the dataset each candidate classifies right (``logit > 0`` means class 1)."""
    _, labels = dataset()
    return ((logits_spirals(X, hidden) > 0.0) == (labels > 0.5)).mean(axis=1)
