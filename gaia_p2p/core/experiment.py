"""Problem configuration and the content-derived experiment id.

Two nodes are in the same experiment exactly when their canonical problem configs are equal;
optimizer settings (algorithm, sigma, popsize) are *not* part of it: heterogeneous islands are the point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

PROBLEMS = ("lunarlander", "sphere", "rastrigin", "rosenbrock")
TEST_FUNCTIONS = ("sphere", "rastrigin", "rosenbrock")

LUNAR_OBS_DIM = 8
LUNAR_N_ACTIONS = 4


@dataclass(frozen=True)
class ProblemConfig:
    """What is optimised. Everything here is hashed into the experiment id."""

    name: str = "lunarlander"
    # test functions: number of parameters
    dim: int = 30
    # lunarlander: hidden layer sizes of the MLP policy (obs 8 -> hidden... -> 4 actions)
    hidden: tuple[int, ...] = (16,)
    # lunarlander: episodes per candidate per generation (seeds change every generation).
    # Not part of the experiment id: it sets how a node estimates fitness, not what fitness is.
    episodes: int = 1
    # lunarlander: step limit per episode (gymnasium's TimeLimit for LunarLander-v3 is 1000)
    max_steps: int = 1000

    @property
    def deterministic(self) -> bool:
        """True when fitness does not depend on evaluation seeds."""
        return self.name in TEST_FUNCTIONS

    @property
    def param_dim(self) -> int:
        if self.name in TEST_FUNCTIONS:
            return self.dim
        sizes = (LUNAR_OBS_DIM, *self.hidden, LUNAR_N_ACTIONS)
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    def canonical(self) -> dict[str, object]:
        """The fields that define the experiment, in canonical form."""
        if self.name in TEST_FUNCTIONS:
            return {"problem": self.name, "dim": self.dim, "fitness": "negated", "format": 1}
        return {
            "problem": self.name,
            "env": "LunarLander-v3",
            "continuous": False,
            "policy": {"type": "mlp", "sizes": [LUNAR_OBS_DIM, *self.hidden, LUNAR_N_ACTIONS],
                       "activation": "tanh", "output": "argmax", "layout": "W_then_b_per_layer_row_major"},
            "max_steps": self.max_steps,
            "dim": self.param_dim,
            "format": 1,
        }


def experiment_id(problem: ProblemConfig) -> str:
    """First 16 bytes (32 hex chars) of SHA-256 over the canonical JSON of the problem config."""
    blob = json.dumps(problem.canonical(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def migrants_topic(exp_id: str) -> str:
    return f"/gaia/{exp_id}/migrants/1"


def telemetry_topic(exp_id: str) -> str:
    return f"/gaia/{exp_id}/telemetry/1"
