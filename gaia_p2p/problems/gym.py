"""Any gymnasium environment by id (``--problem gym:CartPole-v1``), with an MLP policy.

Spaces: a ``Box`` observation (flattened; any other kind is refused at config time); a
``Discrete`` action (the policy's argmax over ``n`` logits) or a bounded ``Box`` action (the last
layer goes through tanh and is scaled to the bounds: ``a = low + (tanh(z) + 1) / 2 * (high - low)``).

Observation normalisation (``problem.obs_norm``): ``none`` (the default) or ``clip`` (each component
clipped to ``[-obs_clip, obs_clip]`` before the forward pass). Both are stateless, so two nodes always
compute the same action for the same parameters; running mean/std statistics would have to be shared
between nodes to keep fitness comparable, and are not offered.

Parameter layout: as LunarLander's (``W_then_b_per_layer_row_major``, gaia_p2p/problems/lunar.py)
with layer sizes ``(obs_dim, *hidden, n_out)``.

Fitness is the mean undiscounted return over the episode seeds; an episode ends when the env says
``terminated`` or ``truncated`` or after ``max_steps`` steps. Episodes of all candidates run in
lockstep on unwrapped envs (cached per thread, at most ``MAX_LOCKSTEP_ENVS`` per env config and
``MAX_ENV_CONFIGS`` env configs) with ONE batched forward pass per step; LunarLander
(gaia_p2p/problems/lunar.py) is this path with its spaces fixed.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gaia_p2p.core.experiment import EnvSpaces, ProblemConfig
from gaia_p2p.errors import ConfigError

# Largest flattened Box action: its bounds are part of the experiment id and of every status answer
# (gaia-status-v1 caps a response at 256 KiB); far above any gymnasium env's (Humanoid: 17).
MAX_ACTION_DIM = 1024

# Upper bound on envs stepped together; larger batches run in consecutive chunks (bounds memory).
MAX_LOCKSTEP_ENVS = 1024
# Env configs (env id + kwargs) whose envs a thread keeps; a worker only ever sees one, the bound
# is for long-lived processes that evaluate several (tests, tools). Least recently used goes first.
MAX_ENV_CONFIGS = 4

# The unwrapped env's step() may start with ``assert self.action_space.contains(action)``; gymnasium's
# Discrete.contains builds ``np.iinfo`` on every call (~2 us, ~7 % of a ~31 us LunarLander step).
# Cached envs with a Discrete action space get one whose contains() gives the same answer with a
# fast path for plain Python ints (what the policies pass). A check only: dynamics are unchanged.
FAST_ACTION_CHECK = True

# Maps rows of the population (candidate index of each running episode) to a policy that turns an
# (m, obs_dim) float32 observation batch into m actions (Python ints, or rows of an action array).
PolicyFactory = Callable[[np.ndarray], Callable[[np.ndarray], Any]]

EnvKey = tuple[str, tuple[tuple[str, Any], ...]]

# Per thread: an env is stepped by one caller at a time, and several in-process nodes evaluating in
# threads (workers = 0) would otherwise step the same envs at once; so would one node, which
# evaluates its candidates and its re-evaluations (other seeds) in two threads at once.
_LOCAL = threading.local()


def _env_pools() -> OrderedDict[EnvKey, list[Any]]:
    pools = getattr(_LOCAL, "pools", None)
    if pools is None:
        pools = _LOCAL.pools = OrderedDict()
    return pools


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


def _make(env_id: str, env_args: tuple[tuple[str, Any], ...]) -> Any:
    import gymnasium

    return gymnasium.make(env_id, **dict(env_args))


def make_env(env_id: str, env_args: tuple[tuple[str, Any], ...] = ()) -> Any:
    """A fresh unwrapped env (no TimeLimit: callers enforce ``max_steps``)."""
    from gymnasium.spaces import Discrete

    env = _make(env_id, env_args).unwrapped
    space = env.action_space
    if FAST_ACTION_CHECK and type(space) is Discrete:
        env.action_space = _fast_discrete_class()(int(space.n), start=int(space.start))
    return env


def env_pool(key: EnvKey, k: int) -> list[Any]:
    """The first ``k`` cached unwrapped envs of ``key`` in this thread (created on first need, then
    reused: every episode starts with ``reset(seed=...)``, which reseeds the env)."""
    if k > MAX_LOCKSTEP_ENVS:
        raise ValueError(f"at most {MAX_LOCKSTEP_ENVS} envs are stepped together, asked for {k}")
    pools = _env_pools()
    pool = pools.get(key)
    if pool is None:
        pool = pools[key] = []
        while len(pools) > MAX_ENV_CONFIGS:
            _, old = pools.popitem(last=False)
            for env in old:
                env.close()
    pools.move_to_end(key)
    while len(pool) < k:
        pool.append(make_env(*key))
    return pool[:k]


# --- config time: what the env looks like ---------------------------------------------------------


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def probe(env_id: str, env_args: tuple[tuple[str, Any], ...] = (), named: str | None = None) -> EnvSpaces:
    """Make the env once and read its spaces; a ConfigError (one line, with the fix) when it cannot.

    ``named``: the setting that named the env, for the messages (default ``problem.name = 'gym:<id>'``)."""
    where = named or f"problem.name = 'gym:{env_id}'"
    try:
        import gymnasium
        from gymnasium import error as gym_error
        from gymnasium.spaces import Box, Discrete
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        raise ConfigError('config error: gym problems need gymnasium; pip install gymnasium') from None
    try:
        env = gymnasium.make(env_id, **dict(env_args))
    except gym_error.DependencyNotInstalled as e:
        raise ConfigError(f"config error: {where}: the env's package is not installed: "
                          f"{_one_line(e)}") from None
    except ModuleNotFoundError as e:  # "module:Env-v0" ids, or an env importing a missing module
        raise ConfigError(f"config error: {where}: module {e.name!r} is not installed; "
                          f"pip install the package that provides it") from None
    except gym_error.Error as e:  # NameNotFound, VersionNotFound, NamespaceNotFound, ...
        raise ConfigError(f"config error: {where} is not a registered gymnasium env "
                          f"({_one_line(e)}); {'name' if named else 'pass --problem gym:CartPole-v1 or'} another id "
                          f"that gymnasium.pprint_registry() lists") from None
    except TypeError as e:  # a keyword argument the env does not take
        raise ConfigError(f"config error: problem.env_args = {dict(env_args)!r} rejected by {env_id} "
                          f"({_one_line(e)}); fix or remove the key in [problem.env_args]") from None
    try:
        spec = env.spec
        obs, act = env.observation_space, env.action_space
        if type(obs) is not Box:
            raise ConfigError(f"config error: {where} has a {type(obs).__name__} observation "
                              f"space; only Box observations are supported")
        obs_dim = int(np.prod(obs.shape))
        common: dict[str, Any] = {"max_episode_steps": spec.max_episode_steps if spec else None,
                                  "reward_threshold": (float(spec.reward_threshold)
                                                       if spec is not None and spec.reward_threshold is not None
                                                       else None)}
        if isinstance(act, Discrete):
            return EnvSpaces(env_id, obs_dim, "discrete", int(act.n), **common)
        if type(act) is Box:
            low, high = np.asarray(act.low, np.float64).ravel(), np.asarray(act.high, np.float64).ravel()
            if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
                raise ConfigError(f"config error: {where} has an unbounded Box action space; "
                                  f"only bounded Box actions are supported (the policy's tanh is scaled to them)")
            if low.size > MAX_ACTION_DIM:
                raise ConfigError(f"config error: {where} has {low.size} action dimensions, "
                                  f"at most {MAX_ACTION_DIM} are supported")
            return EnvSpaces(env_id, obs_dim, "box", int(low.size), tuple(map(float, low)),
                             tuple(map(float, high)), **common)
        raise ConfigError(f"config error: {where} has a {type(act).__name__} action space; "
                          f"only Discrete and bounded Box actions are supported")
    finally:
        env.close()


# --- the policy ----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Head:
    """How the last layer's outputs become actions."""

    action: str = "discrete"  # "discrete": argmax (first index on ties) | "box": tanh scaled to [low, high]
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    obs_clip: float | None = None  # clip observations to [-obs_clip, obs_clip] first

    def actions(self, logits: np.ndarray) -> Any:
        """The actions of ``m`` policies from their outputs ``(m, n_out)``: Python ints (discrete) or
        an ``(m, n_out)`` float32 array inside the bounds (box)."""
        if self.action != "box":
            return logits.argmax(axis=1).tolist()
        assert self.low is not None and self.high is not None
        a = self.low + (np.tanh(logits) + 1.0) / 2.0 * (self.high - self.low)
        np.clip(a, self.low, self.high, out=a)  # rounding never leaves the bounds
        return a.astype(np.float32)  # Box actions are float32

    @classmethod
    def of(cls, problem: ProblemConfig) -> Head:
        sp = problem.env_spaces
        clip = problem.obs_clip if problem.obs_norm == "clip" else None
        if sp.action == "box":
            return cls("box", np.asarray(sp.low, np.float64), np.asarray(sp.high, np.float64), clip)
        return cls("discrete", obs_clip=clip)


def mlp_policy_factory(X: np.ndarray, sizes: Sequence[int], head: Head = Head(),
                       dtype: type[np.floating[Any]] = np.float64) -> PolicyFactory:
    """Batched numpy MLP: a factory that gathers the weights of the given population rows."""
    layers = [
        (np.ascontiguousarray(W, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)[:, None, :])
        for W, b in unpack(X, sizes)
    ]
    clip = head.obs_clip

    def make(rows: np.ndarray) -> Callable[[np.ndarray], Any]:
        sel = [(W[rows], b[rows]) for W, b in layers]
        hidden_layers, (W_out, b_out) = sel[:-1], sel[-1]

        def act(obs: np.ndarray) -> Any:
            h = obs.astype(dtype, copy=False)[:, None, :]  # (m, 1, in)
            if clip is not None:  # in the policy's precision, so the bound is exactly obs_clip
                h = np.clip(h, -clip, clip)
            for W, b in hidden_layers:
                h = np.matmul(h, W)
                h += b
                np.tanh(h, out=h)
            logits = np.matmul(h, W_out)
            logits += b_out
            return head.actions(logits[:, 0, :])

        return act

    return make


# --- rollouts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollouts:
    returns: np.ndarray  # (n, episodes) float64: undiscounted return of each episode
    lengths: np.ndarray  # (n, episodes) int64: env steps taken in each episode

    @property
    def fitness(self) -> np.ndarray:
        return self.returns.mean(axis=1)


def rollout_lockstep(key: EnvKey, obs_dim: int, n: int, seeds: Sequence[int], max_steps: int,
                     make_policy: PolicyFactory) -> Rollouts:
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
        envs = env_pool(key, stop - start)
        episodes = list(range(start, stop))
        obs = np.empty((len(episodes), obs_dim), dtype=np.float32)
        first = [env.reset(seed=seeds[e % n_ep])[0] for env, e in zip(envs, episodes)]
        flat = np.ndim(first[0]) != 1  # matrix-shaped Box observations are flattened; vectors go as they are
        for i, o in enumerate(first):
            obs[i] = np.ravel(o) if flat else o
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
                o, r, terminated, truncated, _ = step(a)
                obs[i] = np.ravel(o) if flat else o
                rets[i] += float(r)  # some envs return float32 rewards: sum in float64
                if terminated or truncated:
                    ended.append(i)
            if t >= max_steps:  # our step limit: every running episode ends here
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
    return Rollouts(returns.reshape(n, n_ep), lengths.reshape(n, n_ep))


def env_key(problem: ProblemConfig) -> EnvKey:
    env_id = problem.env_id
    if env_id is None:
        raise ValueError(f"problem {problem.name!r} is not a gymnasium env")
    return env_id, problem.env_args


def rollout_problem(problem: ProblemConfig, X: np.ndarray, seeds: Sequence[int],
                    dtype: type[np.floating[Any]] = np.float64) -> Rollouts:
    """Per-episode returns and lengths of population ``X (n, P)`` on a gym (or lunarlander) problem."""
    sizes = problem.layer_sizes
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != param_count(sizes):
        raise ValueError(f"X must have shape (n, {param_count(sizes)}) for sizes {sizes}, got {X.shape}")
    factory = mlp_policy_factory(X, sizes, Head.of(problem), dtype)
    return rollout_lockstep(env_key(problem), sizes[0], X.shape[0], seeds, problem.steps, factory)


def evaluate_gym(problem: ProblemConfig, X: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
    """Fitness ``(n,)``: mean return over the episodes ``seeds`` of each row of ``X (n, P)``."""
    return rollout_problem(problem, X, seeds).fitness
