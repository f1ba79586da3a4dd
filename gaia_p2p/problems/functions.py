"""Batched benchmark functions, negated so that HIGHER IS BETTER.

Every function takes ``X`` of shape ``(n, dim)`` (float64) and returns fitness of shape ``(n,)``:
the classic value with its sign flipped, so the optimum is ``0.0`` and everything else is negative.
They are deterministic; evaluation seeds do not apply to them.

========== ================================================ ==========
function   classic value (minimised)                        optimum at
========== ================================================ ==========
sphere     sum x_i^2                                        x = 0
rastrigin  10 d + sum (x_i^2 - 10 cos(2 pi x_i))            x = 0
rosenbrock sum_{i<d} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2  x = 1
========== ================================================ ==========
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RASTRIGIN_A = 10.0


def _as_matrix(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, dim), got {X.shape}")
    return X


def sphere(X: np.ndarray) -> np.ndarray:
    X = _as_matrix(X)
    return 0.0 - np.einsum("ij,ij->i", X, X)


def rastrigin(X: np.ndarray) -> np.ndarray:
    X = _as_matrix(X)
    value = RASTRIGIN_A * X.shape[1] + np.sum(X * X - RASTRIGIN_A * np.cos(2.0 * np.pi * X), axis=1)
    return 0.0 - value


def rosenbrock(X: np.ndarray) -> np.ndarray:
    X = _as_matrix(X)
    head, tail = X[:, :-1], X[:, 1:]
    value = np.sum(100.0 * (tail - head * head) ** 2 + (1.0 - head) ** 2, axis=1)
    return 0.0 - value


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sphere": sphere,
    "rastrigin": rastrigin,
    "rosenbrock": rosenbrock,
}
