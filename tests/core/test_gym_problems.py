"""gym:<EnvId> problems: lockstep == one episode at a time, config (env_args, errors), bounds, ids."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from gaia_p2p.config import MAX_ENV_ARGS, build_config, parse_set
from gaia_p2p.core.experiment import ProblemConfig, describe, experiment_id
from gaia_p2p.errors import ConfigError, EvaluationError
from gaia_p2p.problems import gym
from gaia_p2p.problems.evaluate import evaluate_batch


def gym_problem(name: str, **problem: object) -> ProblemConfig:
    return build_config(env={}, overrides={"problem": {"name": name, **problem}}).problem


def reference_episode(problem: ProblemConfig, theta: np.ndarray, seed: int) -> tuple[float, int]:
    """One episode on gymnasium.make(...) with its TimeLimit set to max_steps, policy computed from
    the documented layout and head (gaia_p2p/problems/gym.py docstring), float64."""
    sizes = problem.layer_sizes
    layers, off = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        W = theta[off : off + a * b].reshape(a, b)
        off += a * b
        layers.append((W, theta[off : off + b]))
        off += b
    sp = problem.env_spaces
    env = gymnasium.make(sp.env_id, max_episode_steps=problem.steps, **dict(problem.env_args))
    obs, _ = env.reset(seed=seed)
    ret, steps = 0.0, 0
    while True:
        h = np.asarray(obs, np.float32).ravel().astype(np.float64)
        if problem.obs_norm == "clip":
            h = np.clip(h, -problem.obs_clip, problem.obs_clip)
        for W, b in layers[:-1]:
            h = np.tanh(h @ W + b)
        z = h @ layers[-1][0] + layers[-1][1]
        if sp.action == "discrete":
            action = int(np.argmax(z))
        else:
            low, high = np.asarray(sp.low), np.asarray(sp.high)
            action = np.clip(low + (np.tanh(z) + 1.0) / 2.0 * (high - low), low, high).astype(np.float32)
        obs, r, terminated, truncated, _ = env.step(action)
        ret += float(r)
        steps += 1
        if terminated or truncated:
            return ret, steps


@pytest.mark.parametrize(("name", "problem", "seeds"), [
    ("gym:CartPole-v1", {}, (3, 5)),  # discrete actions, episodes of different lengths
    ("gym:Pendulum-v1", {"max_steps": 60, "env_args": {"g": 9.0}}, (1, 2)),  # Box action, env kwargs
    ("gym:MountainCarContinuous-v0", {"max_steps": 80, "obs_norm": "clip", "obs_clip": 0.05}, (7,)),
])
def test_lockstep_equals_one_episode_at_a_time(name, problem, seeds):
    p = gym_problem(name, **problem)
    rng = np.random.default_rng(11)
    X = rng.normal(0.0, 0.7, size=(5, p.param_dim))
    res = gym.rollout_problem(p, X, seeds)
    for c in range(len(X)):
        for j, seed in enumerate(seeds):
            ret, steps = reference_episode(p, X[c], seed)
            assert res.lengths[c, j] == steps, (c, j)
            assert res.returns[c, j] == ret, (c, j)  # bit-identical, as LunarLander (test_problems.py)
    np.testing.assert_array_equal(evaluate_batch(p, X, seeds), res.returns.mean(axis=1))
    if name == "gym:CartPole-v1":
        assert len(set(res.lengths.ravel().tolist())) > 1  # candidates ended at different steps


def test_box_actions_stay_in_bounds_and_use_the_whole_range():
    p = gym_problem("gym:Pendulum-v1")
    X = np.random.default_rng(0).normal(0.0, 50.0, size=(3, p.param_dim))  # saturated tanh
    act = gym.mlp_policy_factory(X, p.layer_sizes, gym.Head.of(p))(np.arange(3))
    a = act(np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32))
    assert a.dtype == np.float32 and a.shape == (3, 1)
    assert np.all(a >= -2.0) and np.all(a <= 2.0) and np.abs(a).max() > 1.9


def test_obs_clip_changes_what_the_policy_sees():
    base = gym_problem("gym:CartPole-v1")
    clipped = gym_problem("gym:CartPole-v1", obs_norm="clip", obs_clip=0.001)
    X = np.random.default_rng(2).normal(0.0, 1.0, size=(8, base.param_dim))
    assert not np.array_equal(evaluate_batch(base, X, (1,)), evaluate_batch(clipped, X, (1,)))


def test_max_steps_defaults_to_the_registered_limit_and_caps_episodes():
    assert gym_problem("gym:CartPole-v1").steps == 500
    assert gym_problem("gym:Pendulum-v1").steps == 200
    p = gym_problem("gym:Pendulum-v1", max_steps=7)
    res = gym.rollout_problem(p, np.zeros((2, p.param_dim)), (1,))
    assert res.lengths.tolist() == [[7], [7]]


def test_env_args_from_toml_table_and_set(tmp_path):
    toml = tmp_path / "g.toml"
    toml.write_text('[problem]\nname = "gym:Pendulum-v1"\n[problem.env_args]\ng = 9.0\n')
    p = build_config(toml_path=str(toml), env={}).problem
    assert p.env_args == (("g", 9.0),)
    p = build_config(toml_path=str(toml), env={}, overrides=parse_set(["problem.env_args.g=3.5"])).problem
    assert p.env_args == (("g", 3.5),)  # --set replaces that key of the table
    p = build_config(env={"GAIA_PROBLEM_NAME": "gym:Pendulum-v1", "GAIA_PROBLEM_ENV_ARGS": "g=9.25, render_mode=rgb_array"}).problem
    assert p.env_args == (("g", 9.25), ("render_mode", "rgb_array"))  # the environment: KEY=VALUE,...
    overrides = parse_set(["problem.env_args.continuous=true"])
    overrides["problem"]["name"] = "gym:LunarLander-v3"
    p = build_config(env={}, overrides=overrides).problem
    assert p.env_args == (("continuous", True),) and p.env_spaces.action == "box" and p.env_spaces.n_out == 2


@pytest.mark.parametrize(("name", "problem", "expected"), [
    ("gym:NoSuchEnv-v1", {}, "is not a registered gymnasium env"),
    ("gym:CartPole-v99", {}, "is not a registered gymnasium env"),
    ("gym:FrozenLake-v1", {}, "Discrete observation space; only Box"),
    ("gym:Blackjack-v1", {}, "Tuple observation space; only Box"),
    ("gym:CartPole-v1", {"env_args": {"no_such_kwarg": 1}}, "problem.env_args"),
    ("gym:CartPole-v1", {"env_args": {f"k{i}": i for i in range(MAX_ENV_ARGS + 1)}}, f"at most {MAX_ENV_ARGS}"),
    ("gym:CartPole-v1", {"env_args": {"bad-name": 1}}, "not a keyword argument name"),
    ("gym:CartPole-v1", {"env_args": {"t": {"nested": 1}}}, "must be a bool, an int"),
    ("gym:CartPole-v1", {"env_args": {"s": "x" * 300}}, "at most 256 characters"),
    ("gym:CartPole-v1", {"obs_norm": "running"}, "problem.obs_norm"),
    ("sphere", {"env_args": {"g": 1}}, "gym:<EnvId> and torch:<factory> problems only"),
    ("lunarlander", {"obs_norm": "clip"}, "gym:<EnvId> and torch:<factory> problems only"),
    ("gym:BipedalWalker-v3", {"hidden": (1024, 256)}, "more than the 262144 an elite can carry"),  # MAX_DIM
    ("gym:BipedalWalker-v3", {"hidden": (1024, 64)}, "use sep-cmaes or openai-es"),  # 91,460: full CMA-ES too big
])
def test_bad_gym_problems_are_one_line_config_errors(name, problem, expected):
    with pytest.raises(ConfigError) as e:
        gym_problem(name, **problem)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_missing_env_package_names_the_pip_extra():
    try:
        import mujoco  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("mujoco is installed here")
    with pytest.raises(ConfigError, match=r'pip install "gymnasium\[mujoco\]"'):
        gym_problem("gym:Ant-v5")


class _Odd(gymnasium.Env):  # registered below with the spaces a test needs
    def __init__(self, obs: spaces.Space = spaces.Box(-1, 1, (2,)), act: spaces.Space = spaces.Discrete(2)):
        self.observation_space, self.action_space = obs, act


@pytest.fixture
def odd_envs():
    ids = {"GaiaTestUnbounded-v0": {"act": spaces.Box(-np.inf, np.inf, (2,))},
           "GaiaTestDictObs-v0": {"obs": spaces.Dict({"a": spaces.Box(-1, 1, (2,))})},
           "GaiaTestMultiBinary-v0": {"act": spaces.MultiBinary(3)},
           "GaiaTestWideAction-v0": {"act": spaces.Box(-1, 1, (gym.MAX_ACTION_DIM + 1,))},
           "GaiaTestWidestAllowed-v0": {"act": spaces.Box(-1, 1, (gym.MAX_ACTION_DIM,))}}
    for env_id, kw in ids.items():
        gymnasium.register(env_id, entry_point=_Odd, kwargs=kw)
    yield
    for env_id in ids:
        gymnasium.envs.registry.pop(env_id)


@pytest.mark.parametrize(("env_id", "expected"), [
    ("GaiaTestUnbounded-v0", "unbounded Box action space"),
    ("GaiaTestDictObs-v0", "Dict observation space"),
    ("GaiaTestMultiBinary-v0", "MultiBinary action space"),
    ("GaiaTestWideAction-v0", f"has {1025} action dimensions, at most 1024"),
])
def test_unsupported_spaces_are_refused(odd_envs, env_id, expected):
    with pytest.raises(ConfigError, match=expected):
        gym_problem(f"gym:{env_id}")


def test_the_widest_allowed_action_space_is_accepted(odd_envs):
    p = gym_problem("gym:GaiaTestWidestAllowed-v0", hidden=(2,))
    assert p.env_spaces.n_out == gym.MAX_ACTION_DIM and p.param_dim == 2 * 2 + 2 + 2 * 1024 + 1024


def test_the_env_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(gym, "MAX_ENV_CONFIGS", 2)
    monkeypatch.setattr(gym._LOCAL, "pools", type(gym._env_pools())(), raising=False)
    for g in (9.0, 9.5, 10.0):
        p = gym_problem("gym:Pendulum-v1", max_steps=3, env_args={"g": g})
        evaluate_batch(p, np.zeros((4, p.param_dim)), (1,))
        assert len(gym._env_pools()) <= 2
    assert [k[1] for k in gym._env_pools()] == [(("g", 9.5),), (("g", 10.0),)]  # least recently used went
    monkeypatch.setattr(gym, "MAX_LOCKSTEP_ENVS", 3)
    p = gym_problem("gym:CartPole-v1", max_steps=5)
    res = gym.rollout_problem(p, np.zeros((4, p.param_dim)), (1, 2))  # 8 episodes in chunks of 3
    assert res.lengths.shape == (4, 2) and len(gym._env_pools()[("CartPole-v1", ())]) == 3
    with pytest.raises(ValueError):
        gym.env_pool(("CartPole-v1", ()), 4)


def test_two_threads_never_step_the_same_envs():
    """A node with evaluation.workers = 0 evaluates candidates and re-evaluations in two threads at once."""
    import threading

    p = gym_problem("gym:CartPole-v1", max_steps=50)
    X = np.random.default_rng(0).normal(size=(16, p.param_dim))
    want = gym.evaluate_gym(p, X, (1, 2))
    got: list[np.ndarray] = []
    pools: list[list] = []

    def work() -> None:
        got.append(gym.evaluate_gym(p, X, (1, 2)))
        pools.append(gym._env_pools()[("CartPole-v1", ())])

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 2 and all(np.array_equal(g, want) for g in got)
    assert not set(map(id, pools[0])) & set(map(id, pools[1]))


def test_torch_backend_is_refused_for_gym_problems():
    with pytest.raises(ConfigError, match="evaluation.backend"):
        build_config(env={}, overrides={"problem": {"name": "gym:CartPole-v1"}, "evaluation": {"backend": "torch"}})
    p = gym_problem("gym:CartPole-v1")
    with pytest.raises(EvaluationError, match="--backend numpy"):
        evaluate_batch(p, np.zeros((1, p.param_dim)), (1,), backend="torch")


# --------------------------------------------------------------------------- experiment ids


def test_builtin_ids_are_unchanged():
    # protocols/gaia-migration-v1.md, "Worked examples"
    assert experiment_id(ProblemConfig()) == "7d4a7a82dc3105c6b819063713b2e9e9"
    assert experiment_id(ProblemConfig(max_steps=1000)) == "7d4a7a82dc3105c6b819063713b2e9e9"
    assert experiment_id(ProblemConfig(name="spirals")) == "ada8b4dc2cc9dc68cad0e75ef778e0c9"
    assert experiment_id(ProblemConfig(name="sphere", dim=3)) == "8ce8c2239d9c290631d8d7570e154c52"


def test_gym_ids_differ_when_anything_that_changes_fitness_differs():
    base = gym_problem("gym:Pendulum-v1")
    variants = [
        gym_problem("gym:CartPole-v1"),
        gym_problem("gym:CartPole-v0"),  # same env, other version
        gym_problem("gym:Pendulum-v1", env_args={"g": 9.0}),
        gym_problem("gym:Pendulum-v1", env_args={"g": 9.5}),
        gym_problem("gym:Pendulum-v1", obs_norm="clip"),
        gym_problem("gym:Pendulum-v1", obs_norm="clip", obs_clip=2.0),
        gym_problem("gym:Pendulum-v1", hidden=(8,)),
        gym_problem("gym:Pendulum-v1", hidden=(16, 16)),
        gym_problem("gym:Pendulum-v1", max_steps=100),
        dataclasses.replace(base, spaces=dataclasses.replace(base.env_spaces, high=(3.0,))),  # action bounds
    ]
    ids = [experiment_id(p) for p in (base, *variants)]
    assert len(set(ids)) == len(ids)
    # not part of it: how a node estimates fitness, and the default max_steps spelled out
    assert experiment_id(gym_problem("gym:Pendulum-v1", episodes=4)) == ids[0]
    assert experiment_id(gym_problem("gym:Pendulum-v1", max_steps=200)) == ids[0]
    # the obs bound only matters when clipping
    assert experiment_id(gym_problem("gym:Pendulum-v1", obs_clip=2.0)) == ids[0]


def test_describe_says_what_the_id_is_made_from():
    p = gym_problem("gym:Pendulum-v1", env_args={"g": 9.0}, obs_norm="clip", obs_clip=2.0)
    line = describe(p.canonical())
    for part in ("gym Pendulum-v1", "'g': 9.0", "obs_norm clip 2.0", "mlp 3-16-1 tanh_scaled", "max_steps 200",
                 f"dim {p.param_dim}"):
        assert part in line, (part, line)
    assert describe(ProblemConfig().canonical()) == "LunarLander-v3, policy mlp 8-16-4 argmax, max_steps 1000, dim 212"


def test_the_specs_worked_example_for_gym():
    # protocols/gaia-migration-v1.md, "Worked examples"
    assert experiment_id(gym_problem("gym:CartPole-v1")) == "cb4011681dcddbb94b89212a6566d5f2"


def test_bench_eval_gym_quick_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_eval.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--env", "CartPole-v1", "--env", "Pendulum-v1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("CartPole-v1", "Pendulum-v1"))]
    assert [r[0] for r in rows] == ["CartPole-v1", "Pendulum-v1"] and [r[1] for r in rows] == ["114", "81"]
    assert all(float(r[4]) > 0 for r in rows)  # a ratio was measured


def test_stop_at_target_on_a_gym_env_uses_its_reward_threshold():
    # the check ran before the env was resolved and read cfg.target: a traceback, not a config
    cfg = build_config(env={}, overrides={"problem": {"name": "gym:CartPole-v1"}, "": {"stop_at_target": True}})
    assert cfg.stop_at_target and cfg.target == 475
