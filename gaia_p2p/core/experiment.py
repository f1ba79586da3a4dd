"""Problem configuration and the content-derived experiment id.

Two nodes are in the same experiment exactly when their canonical problem configs are equal;
optimizer settings (algorithm, sigma, popsize) are *not* part of it: heterogeneous islands are the point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

PROBLEMS = ("lunarlander", "sphere", "rastrigin", "rosenbrock", "spirals")
# `gym:<EnvId>`: any gymnasium environment by id (gaia_p2p.problems.gym); `torch:package.module:factory`:
# a user's torch.nn.Module as the policy of a gymnasium env (gaia_p2p.problems.torch_policy);
# `package.module:name`: a user's Problem (gaia_p2p.problems.plugin). What they resolve to is filled
# in by the shell at config time (`spaces`, `torch`, `plugin`), since it needs gymnasium, torch or
# the user's package.
GYM_PREFIX = "gym:"
TORCH_PREFIX = "torch:"
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


# Observation normalisation of gym policies (problem.obs_norm). "none": the raw observation;
# "clip": each component clipped to [-obs_clip, obs_clip] (stateless, so every node computes the
# same policy output; running statistics would differ per node and are not offered).
OBS_NORMS = ("none", "clip")


@dataclass(frozen=True)
class EnvSpaces:
    """What a gymnasium env looks like to its MLP policy, read once from the env at config time."""

    env_id: str
    obs_dim: int  # flattened Box observation
    action: str  # "discrete" (argmax over n_out logits) | "box" (tanh, scaled to [low, high])
    n_out: int  # policy outputs: Discrete n, or the flattened Box action size
    low: tuple[float, ...] = ()  # box: action bounds (finite), flattened
    high: tuple[float, ...] = ()
    max_episode_steps: int | None = None  # the env's registered TimeLimit, the default max_steps
    reward_threshold: float | None = None  # the env's registered "solved" return, the default target

    def canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {"obs_dim": self.obs_dim, "action": self.action, "n_out": self.n_out}
        if self.action == "box":
            out["low"], out["high"] = list(self.low), list(self.high)
        return out


@dataclass(frozen=True)
class PluginInfo:
    """A user's Problem as the experiment sees it (gaia_p2p.problems.plugin fills it in)."""

    ref: str  # how it was named: "package.module:name" or an entry-point name
    dist: str  # the distribution (package) that provides it, "" when not installed as one
    dist_version: str  # its version, "" likewise
    name: str  # Problem.name
    version: str  # Problem.version
    dim: int
    deterministic: bool
    target: float | None
    config: tuple[tuple[str, Any], ...] = ()  # Problem.config(): anything else that changes fitness


@dataclass(frozen=True)
class TorchModelInfo:
    """A user's torch.nn.Module policy as the experiment sees it (gaia_p2p.problems.torch_policy fills
    it in). The module's own parameter values are not part of it: they are what is optimised."""

    ref: str  # "package.module:factory", as named after torch:
    dist: str  # the distribution that provides the module, "" when none
    dist_version: str  # its version, "" likewise
    version: str  # TorchPolicy.version ("" for a bare Module): bump it when forward() changes
    module_class: str  # "package.module.ClassName" of the module
    architecture: str  # SHA-256 hex over the class, repr, parameter and buffer names, shapes, dtypes and buffer values
    dim: int  # number of parameters: every tensor of named_parameters(), flattened and concatenated
    dtype: str  # the parameters' dtype, "float32" or "float64": the precision of the forward pass
    torch_version: str  # torch's release, without a local build tag: "2.13.0" for "2.13.0+cpu" and "+cu121" alike


LUNAR_SPACES = EnvSpaces("LunarLander-v3", 8, "discrete", 4, max_episode_steps=1000, reward_threshold=200.0)

# problem.env_args: keyword arguments of gymnasium.make, hashed into the experiment id.
EnvArgValue = bool | int | float | str


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
    # gym envs and lunarlander: step limit per episode; None: the env's registered TimeLimit
    # (1000 for LunarLander-v3, 500 for CartPole-v1), 1000 if it has none
    max_steps: int | None = None
    # gym: keyword arguments of gymnasium.make (TOML table [problem.env_args] or
    # --set problem.env_args.KEY=VALUE), sorted (key, value) pairs
    env_args: tuple[tuple[str, EnvArgValue], ...] = ()
    obs_norm: str = "none"  # gym: "none" | "clip" (see OBS_NORMS)
    obs_clip: float = 5.0  # gym, obs_norm = "clip": the bound
    # torch: the gymnasium env id the module acts in, when the factory returns a bare Module (a
    # TorchPolicy names its own; config time fills it in from there)
    env: str = ""
    # Filled in at config time by the shell, never set by a user (config.py hides them):
    spaces: EnvSpaces | None = field(default=None, metadata={"internal": True})
    plugin: PluginInfo | None = field(default=None, metadata={"internal": True})
    torch: TorchModelInfo | None = field(default=None, metadata={"internal": True})

    @property
    def is_gym(self) -> bool:
        return self.name.startswith(GYM_PREFIX)

    @property
    def is_torch(self) -> bool:
        """A user's torch.nn.Module policy: ``torch:package.module:factory``."""
        return self.name.startswith(TORCH_PREFIX)

    @property
    def is_plugin(self) -> bool:
        """A user's Problem: ``package.module:name`` or the name of a ``gaia_p2p.problems`` entry point."""
        return self.name not in PROBLEMS and not self.is_gym and not self.is_torch

    @property
    def env_id(self) -> str | None:
        """The gymnasium env id of lunarlander, gym:* and torch:* problems."""
        if self.name == "lunarlander":
            return LUNAR_SPACES.env_id
        if self.is_torch:
            return self.env or None
        return self.name[len(GYM_PREFIX):] if self.is_gym else None

    @property
    def env_spaces(self) -> EnvSpaces:
        """Spaces of the env; lunarlander's are fixed, a gym:* problem's come from config time."""
        if self.name == "lunarlander":
            return LUNAR_SPACES
        if self.spaces is None:
            raise ValueError(f"problem {self.name!r}: env spaces not resolved (build it with gaia_p2p.config)")
        return self.spaces

    @property
    def steps(self) -> int:
        """The step limit per episode in effect (max_steps, else the env's registered one, else 1000)."""
        if self.max_steps is not None:
            return self.max_steps
        registered = self.env_spaces.max_episode_steps if self.env_id else None
        return registered or 1000

    @property
    def deterministic(self) -> bool:
        """True when fitness does not depend on evaluation seeds."""
        if self.plugin is not None:
            return self.plugin.deterministic
        return self.name in DETERMINISTIC_PROBLEMS

    @property
    def default_target(self) -> float | None:
        """The fitness at which a node tests its best on fresh episodes unless target_fitness says."""
        if self.plugin is not None:
            return self.plugin.target
        if self.env_id is not None:
            return self.env_spaces.reward_threshold
        return None

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """MLP layer sizes (input, *hidden, output) of lunarlander, gym:* and spirals."""
        if self.is_torch or self.is_plugin or self.name in TEST_FUNCTIONS:
            raise ValueError(f"problem {self.name!r} has no MLP policy")
        if self.name == "spirals":
            return (SPIRALS_IN, *self.hidden, SPIRALS_OUT)
        sp = self.env_spaces
        return (sp.obs_dim, *self.hidden, sp.n_out)

    @property
    def param_dim(self) -> int:
        if self.name in TEST_FUNCTIONS:
            return self.dim
        if self.is_torch:
            if self.torch is None:
                raise ValueError(f"problem {self.name!r}: module not resolved (build it with gaia_p2p.config)")
            return self.torch.dim
        if self.is_plugin:
            if self.plugin is None:
                raise ValueError(f"problem {self.name!r}: plugin not resolved (build it with gaia_p2p.config)")
            return self.plugin.dim
        sizes = self.layer_sizes
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    def _obs_norm_canonical(self) -> dict[str, object]:
        return {"type": "clip", "bound": self.obs_clip} if self.obs_norm == "clip" else {"type": "none"}

    def canonical(self) -> dict[str, object]:
        """The fields that define the experiment, in canonical form."""
        if self.is_plugin:
            info = self.plugin
            if info is None:
                raise ValueError(f"problem {self.name!r}: plugin not resolved (build it with gaia_p2p.config)")
            # the package and its version too: a fix in the user's code is a new experiment
            return {"problem": "plugin", "dist": info.dist, "dist_version": info.dist_version,
                    "name": info.name, "version": info.version, "dim": info.dim,
                    "deterministic": info.deterministic, "config": dict(info.config), "format": 1}
        if self.is_torch:
            t, sp = self.torch, self.env_spaces
            if t is None:
                raise ValueError(f"problem {self.name!r}: module not resolved (build it with gaia_p2p.config)")
            return {
                "problem": "torch",
                "env": sp.env_id,
                "env_args": dict(self.env_args),
                "spaces": sp.canonical(),
                "obs_norm": self._obs_norm_canonical(),
                "policy": {"type": "torch", "class": t.module_class, "architecture": t.architecture,
                           "dtype": t.dtype, "output": "argmax" if sp.action == "discrete" else "tanh_scaled",
                           "layout": "named_parameters_row_major"},
                # the user's code: a new release of its package, or a new version, is a new experiment
                "code": {"dist": t.dist, "dist_version": t.dist_version, "version": t.version},
                "torch": t.torch_version,
                "max_steps": self.steps,
                "dim": t.dim,
                "format": 1,
            }
        if self.is_gym:
            sp = self.env_spaces
            return {
                "problem": "gym",
                "env": sp.env_id,
                "env_args": dict(self.env_args),
                "spaces": sp.canonical(),
                "obs_norm": self._obs_norm_canonical(),
                "policy": {"type": "mlp", "sizes": list(self.layer_sizes), "activation": "tanh",
                           "output": "argmax" if sp.action == "discrete" else "tanh_scaled",
                           "layout": "W_then_b_per_layer_row_major"},
                "max_steps": self.steps,
                "dim": self.param_dim,
                "format": 1,
            }
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
            "max_steps": self.steps,
            "dim": self.param_dim,
            "format": 1,
        }


def describe(canonical: dict[str, Any]) -> str:
    """One line saying what an experiment id was made from (``gaia-node status``)."""
    c = canonical
    policy = c.get("policy")
    net = ""
    if isinstance(policy, dict):
        net = f", policy {policy.get('type')} {'-'.join(map(str, policy.get('sizes', [])))} {policy.get('output')}"
    kind = c.get("problem")
    if kind == "plugin":
        made = f"{c.get('name')} {c.get('version')}"
        return (f"plugin {made} from {c.get('dist') or 'a module outside any package'}"
                f"{' ' + str(c.get('dist_version')) if c.get('dist_version') else ''}, "
                f"{'deterministic' if c.get('deterministic') else 'noisy'}, config {c.get('config') or '{}'}, "
                f"dim {c.get('dim')}")
    if kind == "torch":
        code = c.get("code") or {}
        pol = policy if isinstance(policy, dict) else {}
        norm = c.get("obs_norm") or {}
        norm_s = "none" if norm.get("type") == "none" else f"clip {norm.get('bound')}"
        made = " ".join(str(x) for x in (code.get("dist"), code.get("dist_version")) if x) or "a module outside any package"
        if code.get("version"):
            made += f", version {code.get('version')}"
        return (f"torch {pol.get('class')} (architecture {str(pol.get('architecture'))[:12]}, {pol.get('dtype')}, "
                f"{pol.get('output')}) from {made}, torch {c.get('torch')}, gym {c.get('env')}, "
                f"env_args {c.get('env_args') or '{}'}, obs_norm {norm_s}, max_steps {c.get('max_steps')}, "
                f"dim {c.get('dim')}")
    if kind == "gym":
        norm = c.get("obs_norm") or {}
        norm_s = "none" if norm.get("type") == "none" else f"clip {norm.get('bound')}"
        return (f"gym {c.get('env')}, env_args {c.get('env_args') or '{}'}, obs_norm {norm_s}{net}, "
                f"max_steps {c.get('max_steps')}, dim {c.get('dim')}")
    if kind == "lunarlander":
        return f"{c.get('env')}{net}, max_steps {c.get('max_steps')}, dim {c.get('dim')}"
    return f"{kind}{net}, dim {c.get('dim')}"


def experiment_id(problem: ProblemConfig) -> str:
    """First 16 bytes (32 hex chars) of SHA-256 over the canonical JSON of the problem config."""
    blob = json.dumps(problem.canonical(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def migrants_topic(exp_id: str) -> str:
    return f"/gaia/{exp_id}/migrants/1"


def announce_topic(exp_id: str) -> str:
    """Where large elites are announced (gaia-migration-v1, "Large elites")."""
    return f"/gaia/{exp_id}/announce/1"


def telemetry_topic(exp_id: str) -> str:
    return f"/gaia/{exp_id}/telemetry/1"
