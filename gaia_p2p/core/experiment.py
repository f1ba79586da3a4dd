"""Problem configuration and the content-derived experiment id.

Two nodes are in the same experiment exactly when their canonical problem configs are equal;
optimizer settings (algorithm, sigma, popsize) are *not* part of it: heterogeneous islands are the point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

PROBLEMS = ("lunarlander", "sphere", "rastrigin", "rosenbrock", "spirals")
TEST_FUNCTIONS = ("sphere", "rastrigin", "rosenbrock")
# Problems whose fitness does not depend on evaluation seeds (claims of migrants are checked).
DETERMINISTIC_PROBLEMS = (*TEST_FUNCTIONS, "spirals")

LUNAR_OBS_DIM = 8
LUNAR_N_ACTIONS = 4

# spirals: two-spirals binary classification, dataset generated in-process (gaia_p2p.problems.spirals).
# Fixed constants, all hashed into the experiment id (canonical()); changing one is a new experiment.
SPIRALS_IN = 2  # (x, y) input
SPIRALS_OUT = 1  # one logit: P(class 1) = sigmoid(logit)
SPIRALS_N_POINTS = 512  # total, half per class
SPIRALS_NOISE = 0.05  # std of the Gaussian noise added to each coordinate
SPIRALS_TURNS = 1.5  # turns of each spiral arm
SPIRALS_SEED = 7919  # SeedSequence entropy of the noise


@dataclass(frozen=True)
class ProblemConfig:
    """What is optimised. Everything here is hashed into the experiment id."""

    name: str = "lunarlander"
    # test functions: number of parameters
    dim: int = 30
    # lunarlander: hidden layer sizes of the MLP policy (obs 8 -> hidden... -> 4 actions);
    # spirals: hidden layer sizes of the classifier MLP (2 -> hidden... -> 1 logit)
    hidden: tuple[int, ...] = (16,)
    # lunarlander: episodes per candidate per generation (seeds change every generation).
    # Not part of the experiment id: it sets how a node estimates fitness, not what fitness is.
    episodes: int = 1
    # lunarlander: step limit per episode (gymnasium's TimeLimit for LunarLander-v3 is 1000)
    max_steps: int = 1000

    @property
    def deterministic(self) -> bool:
        """True when fitness does not depend on evaluation seeds."""
        return self.name in DETERMINISTIC_PROBLEMS

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """MLP layer sizes (input, *hidden, output) of lunarlander and spirals."""
        if self.name == "spirals":
            return (SPIRALS_IN, *self.hidden, SPIRALS_OUT)
        return (LUNAR_OBS_DIM, *self.hidden, LUNAR_N_ACTIONS)

    @property
    def param_dim(self) -> int:
        if self.name in TEST_FUNCTIONS:
            return self.dim
        sizes = self.layer_sizes
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    def canonical(self) -> dict[str, object]:
        """The fields that define the experiment, in canonical form."""
        if self.name in TEST_FUNCTIONS:
            return {"problem": self.name, "dim": self.dim, "fitness": "negated", "format": 1}
        if self.name == "spirals":
            return {
                "problem": self.name,
                "dataset": {"type": "two_spirals", "generator": 1, "n_points": SPIRALS_N_POINTS,
                            "noise": SPIRALS_NOISE, "turns": SPIRALS_TURNS, "seed": SPIRALS_SEED},
                "policy": {"type": "mlp", "sizes": list(self.layer_sizes), "activation": "tanh",
                           "output": "logit", "layout": "W_then_b_per_layer_row_major"},
                "fitness": "neg_mean_bce_with_logits",
                "dim": self.param_dim,
                "format": 1,
            }
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
