"""Torch models as policies: ``--problem torch:package.module:factory`` (docs/PROBLEMS.md).

``factory`` names a ``torch.nn.Module`` object, or a function or class that, called with no
arguments, returns either a Module or a :class:`TorchPolicy` (the Module and the gymnasium env it
acts in). A bare Module acts in the env of ``problem.env`` (``--set problem.env=CartPole-v1``).

The module is the policy of a gymnasium env, with the spaces, observation normalisation, episodes,
step limit and output head of ``gym:<EnvId>`` problems (gaia_p2p/problems/gym.py): it gets a
``(1, obs_dim)`` observation batch in its parameters' dtype and returns ``n_out`` outputs (any shape
of that size), which become the argmax (Discrete) or ``low + (tanh(z) + 1) / 2 * (high - low)``
(bounded Box) as for the MLP. It runs in eval mode (dropout off), under ``torch.inference_mode``.

Parameters: every tensor of ``module.named_parameters()``, in that order, flattened row-major and
concatenated (``layout: named_parameters_row_major``); the optimizer's vector is cast to the
parameters' dtype. Buffers are the module's own, the same for every candidate.

Evaluation: the candidates' vectors are stacked into one ``(n, P)`` tensor on the device, and each
step of the lockstep episodes (gym.rollout_lockstep) is ONE batched pass of all still-running
episodes: ``torch.func.vmap`` over ``torch.func.functional_call(module, params_of_one_candidate,
(obs,))``. The env physics stays on the CPU; on ``cuda`` the observations go to the GPU and the
outputs come back every step, so a GPU pays only for large modules.

This module imports torch and the user's module only inside its functions: importing it (users
import :class:`TorchPolicy` from here) needs no torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gaia_p2p.core.experiment import TORCH_PREFIX, ProblemConfig, TorchModelInfo
from gaia_p2p.errors import ConfigError, EvaluationError
from gaia_p2p.problems import gym, plugin

PIP_EXTRA = "pip install 'gaia-p2p[torch]'"
DTYPES = ("float32", "float64")
MAX_ENV_ARGS = 32
_LABEL = re.compile(r"[\x20-\x7e]{0,64}")
_ENV_ID = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


@dataclass(frozen=True)
class TorchPolicy:
    """What a factory may return instead of a bare Module: the Module and the env it acts in.

    ``env``: a gymnasium env id with its version (``"Hopper-v5"``); ``env_args``: keyword arguments
    of ``gymnasium.make`` (``[problem.env_args]`` of the config adds to them and wins on a clash);
    ``version``: part of the experiment id, bump it when ``forward`` changes in a way the module's
    class, parameters and buffers do not show (the package's version is in the id too).
    """

    module: Any  # torch.nn.Module
    env: str
    env_args: Mapping[str, Any] = field(default_factory=dict)
    version: str = ""


@dataclass(frozen=True)
class Loaded:
    """A module as its factory made it, and what the factory said about it."""

    module: Any
    env: str  # "" for a bare Module
    env_args: tuple[tuple[str, Any], ...]
    info: TorchModelInfo


def _bad(name: str, why: str) -> ConfigError:
    return ConfigError(f"config error: problem.name = {name!r}: {why}; docs/PROBLEMS.md, \"Torch models\"")


def _torch() -> Any:
    """torch, or the one-line error naming the pip extra."""
    try:
        import torch
    except ImportError as e:
        raise ConfigError(f"config error: torch:* problems need torch, which is not importable ({e}); "
                          f"{PIP_EXTRA}") from None
    return torch


def torch_release(version: str) -> str:
    """``"2.13.0+cpu"`` -> ``"2.13.0"``: CPU and CUDA builds of one release compute the same policy
    (up to rounding, which a noisy env drowns), so their nodes share an experiment."""
    return version.split("+", 1)[0]


def architecture(module: Any) -> str:
    """SHA-256 hex over what makes two modules the same function of their parameters: the class, the
    repr (it shows submodules, activations, layer options), every parameter's name, shape and dtype,
    and every buffer's name, shape, dtype and value."""
    import torch

    cls = type(module)
    buffers = []
    for name, b in module.named_buffers():
        raw = b.detach().cpu().contiguous().reshape(-1)
        data = raw.view(dtype=torch.uint8).numpy().tobytes() if raw.numel() else b""
        buffers.append([name, list(b.shape), str(b.dtype), hashlib.sha256(data).hexdigest()])
    doc = {"class": f"{cls.__module__}.{cls.__qualname__}", "repr": repr(module),
           "parameters": [[n, list(p.shape), str(p.dtype)] for n, p in module.named_parameters()],
           "buffers": buffers}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _plain_env_args(name: str, args: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(args, Mapping) or len(args) > MAX_ENV_ARGS:
        raise _bad(name, f"TorchPolicy.env_args must be a dict of at most {MAX_ENV_ARGS} entries")
    try:
        return tuple(sorted((str(k), plugin.plain_value(str(k), v)) for k, v in args.items()))
    except ValueError as e:
        raise _bad(name, f"TorchPolicy.env_args: {e}") from None


@functools.lru_cache(maxsize=4)  # a worker evaluates one problem; a few for tests and tools
def load(name: str) -> Loaded:
    """Import and call the factory ``name`` (``torch:package.module:factory``) and check what it made."""
    torch = _torch()  # first: a user's module that imports torch would fail with a less helpful message
    ref = name[len(TORCH_PREFIX):]
    obj, dist, dist_version = plugin.import_ref(ref, functools.partial(_bad, name))
    made = obj
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise _bad(name, f"{ref} is a {type(obj).__name__}, not a factory (a function or class returning a "
                             f"torch.nn.Module or a TorchPolicy) nor a Module")
        try:
            made = obj()
        except Exception as e:  # the user's code: anything
            raise _bad(name, f"the factory raised {type(e).__name__}: {' '.join(str(e).split())}") from None
    env, env_args, version = "", (), ""
    if isinstance(made, TorchPolicy):
        env, version = made.env, made.version
        if not (isinstance(env, str) and _ENV_ID.fullmatch(env)):
            raise _bad(name, f"TorchPolicy.env = {env!r} is not a gymnasium env id (e.g. 'CartPole-v1')")
        if not (isinstance(version, str) and _LABEL.fullmatch(version)):
            raise _bad(name, f"TorchPolicy.version = {version!r} must be at most 64 printable characters")
        env_args = _plain_env_args(name, made.env_args)
        made = made.module
    if not isinstance(made, torch.nn.Module):
        raise _bad(name, f"the factory returned a {type(made).__name__}, not a torch.nn.Module (or a TorchPolicy "
                         f"around one)")
    params = list(made.named_parameters())
    if not params:
        raise _bad(name, "the module has no parameters to optimise")
    dtypes = {str(p.dtype).removeprefix("torch.") for _, p in params}
    if len(dtypes) != 1 or not dtypes <= set(DTYPES):
        raise _bad(name, f"the module's parameters are {', '.join(sorted(dtypes))}: they must all be float32 or "
                         f"all float64")
    made.eval()
    cls = type(made)
    info = TorchModelInfo(ref=ref, dist=dist, dist_version=dist_version, version=version,
                          module_class=f"{cls.__module__}.{cls.__qualname__}", architecture=architecture(made),
                          dim=sum(int(p.numel()) for _, p in params), dtype=dtypes.pop(),
                          torch_version=torch_release(torch.__version__))
    return Loaded(made, env, env_args, info)


def resolve(problem: ProblemConfig) -> ProblemConfig:
    """Config time: load the module, read its env's spaces, check that it maps an observation to the
    env's outputs under vmap; the problem with ``env``, ``env_args``, ``spaces`` and ``torch`` filled in."""
    import dataclasses

    loaded = load(problem.name)
    env = loaded.env or problem.env
    if loaded.env and problem.env and problem.env != loaded.env:
        raise ConfigError(f"config error: problem.env = {problem.env!r}, but {problem.name} names its own env "
                          f"{loaded.env!r}; remove problem.env (--set problem.env=...) or make them agree")
    if not env:
        raise ConfigError(f"config error: problem.env is not set and {problem.name} returns a bare Module; "
                          f"pass --set problem.env=CartPole-v1 (the gymnasium env it acts in), or return "
                          f"TorchPolicy(module, env=...) from the factory")
    env_args = tuple(sorted({**dict(loaded.env_args), **dict(problem.env_args)}.items()))
    where = f"problem.env = {env!r} (of {problem.name})"
    spaces = gym.probe(env, env_args, named=where)
    resolved = dataclasses.replace(problem, env=env, env_args=env_args, spaces=spaces, torch=loaded.info)
    policy = _Policy(loaded.module, "cpu")
    try:
        out = policy.outputs(np.zeros((2, resolved.param_dim)), np.zeros((2, spaces.obs_dim), np.float32))
    except Exception as e:  # the user's forward(): anything
        raise _bad(problem.name, f"a batched forward pass (torch.func.vmap over functional_call, input (1, "
                                 f"{spaces.obs_dim})) failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}; "
                                 f"forward() must take a (batch, obs_dim) tensor and avoid data-dependent "
                                 f"control flow") from None
    if out.shape != (2, spaces.n_out):
        what = f"{spaces.n_out} logits" if spaces.action == "discrete" else f"{spaces.n_out} action values"
        raise _bad(problem.name, f"the module maps a (1, {spaces.obs_dim}) observation to {out.shape[1]} outputs, "
                                 f"{env} needs {what}")
    return resolved


class _Policy:
    """A copy of a module on a device and its batched pass: ``outputs(params (m, P), obs (m, obs_dim))``.

    A copy per thread (``_policy``): functional_call swaps the module's parameters in place for the
    duration of a call, so two threads must never run one module object."""

    def __init__(self, module: Any, device: str) -> None:
        import copy

        import torch
        from torch.func import functional_call, vmap

        self.torch = torch
        self.device = torch.device(device)
        self.module = copy.deepcopy(module).to(self.device)
        named = list(self.module.named_parameters())
        self.dtype = named[0][1].dtype
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [int(p.numel()) for _, p in named]

        def one(params: dict[str, Any], obs: Any) -> Any:
            return functional_call(self.module, params, (obs.unsqueeze(0),)).reshape(-1)

        self.batched = vmap(one)

    def tensor(self, X: np.ndarray) -> Any:
        """The population as one ``(n, P)`` tensor on the device (one host-to-device copy)."""
        return self.torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.device)

    def unflatten(self, flat: Any) -> dict[str, Any]:
        """``(m, P)`` -> ``{name: (m, *shape)}``, in named_parameters() order."""
        m = flat.shape[0]
        out, off = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = flat[:, off : off + size].reshape(m, *shape)
            off += size
        return out

    def run(self, params: dict[str, Any], obs: np.ndarray, clip: float | None = None) -> np.ndarray:
        """Outputs ``(m, n_out)`` float64 of ``m`` candidates, each on its own observation row."""
        torch = self.torch
        with torch.inference_mode():
            o = torch.from_numpy(np.ascontiguousarray(obs)).to(device=self.device, dtype=self.dtype)
            if clip is not None:  # in the policy's precision, as the MLP does
                o = o.clamp(-clip, clip)
            return self.batched(params, o).to(device="cpu", dtype=torch.float64).numpy()

    def outputs(self, X: np.ndarray, obs: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.run(self.unflatten(self.tensor(X)), obs)


@functools.lru_cache(maxsize=8)
def _policy(name: str, architecture_digest: str, device: str, thread: int) -> _Policy:
    """This thread's copy of the module (``thread``: ``threading.get_ident()``, see ``_Policy``)."""
    loaded = load(name)
    if loaded.info.architecture != architecture_digest:
        raise EvaluationError(f"problem {name!r}: the module built here has architecture {loaded.info.architecture[:12]}, "
                              f"not the {architecture_digest[:12]} of the config; a factory must build the same "
                              f"module (class, layers, buffers) every time it is called")
    return _Policy(loaded.module, device)


def _info(problem: ProblemConfig) -> TorchModelInfo:
    if problem.torch is None or problem.spaces is None:
        raise EvaluationError(f"problem {problem.name!r}: module not resolved (build it with gaia_p2p.config)")
    return problem.torch


def rollout(problem: ProblemConfig, X: np.ndarray, seeds: Sequence[int], device: str = "cpu") -> gym.Rollouts:
    """Per-episode returns and lengths of population ``X (n, P)``, every step one batched pass."""
    info = _info(problem)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != info.dim:
        raise EvaluationError(f"problem {problem.name!r} needs X of shape (n, {info.dim}), got {X.shape}")
    policy = _policy(problem.name, info.architecture, device, threading.get_ident())
    head = gym.Head.of(problem)
    with policy.torch.inference_mode():
        population = policy.tensor(X)

        def make(rows: np.ndarray) -> Callable[[np.ndarray], Any]:
            idx = policy.torch.as_tensor(rows, dtype=policy.torch.long, device=policy.device)
            params = policy.unflatten(population.index_select(0, idx))
            return lambda obs: head.actions(policy.run(params, obs, head.obs_clip))

        return gym.rollout_lockstep(gym.env_key(problem), problem.env_spaces.obs_dim, X.shape[0], seeds,
                                    problem.steps, make)


def evaluate(problem: ProblemConfig, X: np.ndarray, seeds: Sequence[int], device: str = "cpu") -> np.ndarray:
    """Fitness ``(n,)``: mean return over the episodes ``seeds`` of each row of ``X (n, P)``."""
    return rollout(problem, X, seeds, device).fitness


def initial_params(problem: ProblemConfig) -> np.ndarray:
    """The module's parameters as its factory made them, flattened (an island's starting point)."""
    _info(problem)
    module = load(problem.name).module
    return np.concatenate([p.detach().cpu().double().reshape(-1).numpy() for _, p in module.named_parameters()])
