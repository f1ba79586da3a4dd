"""A custom gaia-p2p problem: linear regression on minibatches drawn from the seeds (docs/PROBLEMS.md).

    PYTHONPATH=examples/tiny_regression gaia-node start --problem gaia_tiny_regression:TinyRegression
    pip install -e examples/tiny_regression && gaia-node start --problem tiny-regression   # entry point
"""

import numpy as np

TRUE_W = np.linspace(-1.0, 1.0, 8)


class TinyRegression:
    name = "tiny-regression"
    version = "1"  # bump it whenever evaluate() changes: nodes of old and new code then never mix
    dim = 8
    deterministic = False  # the minibatch depends on the seeds
    target = -0.02  # test the best on fresh seeds once its estimate reaches this (noise floor: -0.01)

    def evaluate(self, X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
        """Minus the mean squared error of each row of X (n, 8) on one minibatch per seed; every
        row sees the same minibatches, as every candidate sees the same episodes."""
        rng = np.random.default_rng(list(seeds))
        x = rng.normal(size=(64 * len(seeds), self.dim))
        y = x @ TRUE_W + rng.normal(0.0, 0.1, size=len(x))
        return -((x @ X.T - y[:, None]) ** 2).mean(axis=0)
