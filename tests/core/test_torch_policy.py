"""torch:package.module:factory problems: a user's torch.nn.Module as the policy of a gymnasium env.

Its evaluation equals the numpy MLP of gym:<EnvId> with the same weights (so layout, head and
lockstep are right), it runs through the node's Evaluator, its experiment id covers the module's
architecture, code and torch release, and every bad input is a one-line config error."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch:* problems need torch; pip install -e '.[torch]'")

from gaia_p2p import cli  # noqa: E402
from gaia_p2p.config import build_config  # noqa: E402
from gaia_p2p.core.experiment import describe, experiment_id  # noqa: E402
from gaia_p2p.errors import EXIT_USAGE, ConfigError  # noqa: E402
from gaia_p2p.node.evaluator import Evaluator  # noqa: E402
from gaia_p2p.problems import torch_policy  # noqa: E402
from gaia_p2p.problems.evaluate import evaluate_batch  # noqa: E402
from gaia_p2p.problems.gym import evaluate_gym  # noqa: E402
from gaia_p2p.problems.torch_policy import TorchPolicy  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torch_policy"
MOD = "gaia_test_torch_policies"


def mlp(sizes, act=torch.nn.Tanh, dtype=torch.float32) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(act())
    return torch.nn.Sequential(*layers)


class _Scaled(torch.nn.Module):
    """A buffer changes the function: its value is part of the architecture digest."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.body = mlp((4, 8, 2))
        self.register_buffer("scale", torch.tensor(scale))

    def forward(self, x):
        return self.body(x) * self.scale


@pytest.fixture
def factories(monkeypatch):
    """A module of factories, importable as gaia_test_torch_policies, caches empty before and after."""
    mod = types.ModuleType(MOD)
    mod.cartpole = lambda: TorchPolicy(mlp((4, 16, 2)), env="CartPole-v1", version="1")
    mod.cartpole_relu = lambda: TorchPolicy(mlp((4, 16, 2), torch.nn.ReLU), env="CartPole-v1", version="1")
    mod.cartpole_wide = lambda: TorchPolicy(mlp((4, 17, 2)), env="CartPole-v1", version="1")
    mod.cartpole_f64 = lambda: TorchPolicy(mlp((4, 16, 2), dtype=torch.float64), env="CartPole-v1", version="1")
    mod.cartpole_v2 = lambda: TorchPolicy(mlp((4, 16, 2)), env="CartPole-v1", version="2")
    mod.scaled_1 = lambda: TorchPolicy(_Scaled(1.0), env="CartPole-v1")
    mod.scaled_2 = lambda: TorchPolicy(_Scaled(2.0), env="CartPole-v1")
    mod.pendulum = lambda: TorchPolicy(mlp((3, 8, 1)), env="Pendulum-v1", env_args={"g": 9.0})
    mod.bare = lambda: mlp((4, 16, 2))
    mod.instance = mlp((4, 16, 2))
    mod.Cls = type("Cls", (torch.nn.Module,), {
        "__init__": lambda self: (torch.nn.Module.__init__(self), setattr(self, "lin", torch.nn.Linear(4, 2)))[0],
        "forward": lambda self, x: self.lin(x)})
    mod.not_a_module = lambda: "a string"
    mod.no_params = lambda: TorchPolicy(torch.nn.Tanh(), env="CartPole-v1")
    mod.raises = lambda: 1 / 0
    mod.wrong_outputs = lambda: TorchPolicy(mlp((4, 16, 3)), env="CartPole-v1")
    mod.wrong_inputs = lambda: TorchPolicy(mlp((5, 16, 2)), env="CartPole-v1")
    mod.half = lambda: TorchPolicy(mlp((4, 2), dtype=torch.float16), env="CartPole-v1")
    mod.no_env = lambda: TorchPolicy(mlp((4, 2)), env="")
    mod.number = 3
    monkeypatch.setitem(sys.modules, MOD, mod)
    torch_policy.load.cache_clear()
    torch_policy._policy.cache_clear()
    yield mod
    torch_policy.load.cache_clear()
    torch_policy._policy.cache_clear()


def config_of(factory: str, **problem):
    return build_config(env={}, overrides={"problem": {"name": f"torch:{MOD}:{factory}", **problem},
                                           "evaluation": {"device": "cpu", "workers": 0}})


def problem_of(factory: str, **problem):
    return config_of(factory, **problem).problem


def as_gym_mlp(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The parameters ``x`` of an nn.Sequential of Linears (named_parameters order: W (out, in), b)
    in the layout of gym:<EnvId>'s MLP (W (in, out) row-major, then b, per layer)."""
    out, off = [], 0
    for layer in module:
        if isinstance(layer, torch.nn.Linear):
            o, i = layer.weight.shape
            W = x[off : off + o * i].reshape(o, i)
            off += o * i
            out += [W.T.ravel(), x[off : off + o]]
            off += o
    return np.concatenate(out)


@pytest.mark.parametrize(("factory", "gym_name", "seeds"), [
    ("cartpole", "gym:CartPole-v1", (1, 2, 3)),
    ("pendulum", "gym:Pendulum-v1", (4,)),
])
def test_fitness_equals_the_numpy_mlp_with_the_same_weights(factories, factory, gym_name, seeds):
    p = problem_of(factory)
    module = torch_policy.load(p.name).module
    g = build_config(env={}, overrides={"problem": {"name": gym_name, "hidden": (module[0].out_features,),
                                                    "env_args": dict(p.env_args)}}).problem
    assert p.param_dim == g.param_dim and p.env_spaces == g.env_spaces and p.steps == g.steps
    # float32 values, so that the torch module (float32) and the numpy MLP (float64) see the same numbers
    X = np.random.default_rng(0).normal(0, 0.5, size=(12, p.param_dim)).astype(np.float32).astype(np.float64)
    got = evaluate_batch(p, X, seeds, device="cpu")
    want = evaluate_gym(g, np.array([as_gym_mlp(module, x) for x in X]), seeds)
    if g.env_spaces.action == "discrete":  # argmax of float32 vs float64 logits: equal unless at a tie
        np.testing.assert_array_equal(got, want)
    else:  # continuous actions: float32 vs float64 forward passes differ at rounding level
        np.testing.assert_allclose(got, want, rtol=1e-4)
    assert len(set(got.tolist())) > 1  # the candidates differ: the test can fail
    # one candidate alone scores as in the batch (its own parameters, not a neighbour's)
    assert evaluate_batch(p, X[5:6], seeds, device="cpu")[0] == pytest.approx(got[5], rel=1e-5)


def test_env_args_of_the_policy_and_of_the_config_merge(factories):
    assert problem_of("pendulum").env_args == (("g", 9.0),)
    assert problem_of("pendulum", env_args={"g": 3.0}).env_args == (("g", 3.0),)  # the config wins


async def test_the_evaluator_runs_it_on_the_cpu(factories):
    cfg = config_of("cartpole", episodes=2)
    ev = Evaluator(cfg.problem, 0, device="cpu")
    assert ev.device == "cpu" and not ev.one_call
    X = np.random.default_rng(1).normal(0, 0.5, size=(6, cfg.problem.param_dim))
    got = await ev.evaluate(X, (7, 8))
    np.testing.assert_array_equal(got, evaluate_batch(cfg.problem, X, (7, 8), device="cpu"))
    assert ev.cpu_s > 0


def test_two_threads_evaluate_at_once(factories):
    """A node with evaluation.workers = 0 evaluates candidates and re-evaluations in two threads at
    once; functional_call swaps a module's parameters in place, so each thread needs its own copy."""
    import threading

    p = problem_of("cartpole")
    X = np.random.default_rng(3).normal(0, 0.5, size=(16, p.param_dim))
    want = evaluate_batch(p, X, (1, 2), device="cpu")
    got: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: got.append(evaluate_batch(p, X, (1, 2), device="cpu")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 3 and all(np.array_equal(g, want) for g in got)


def test_the_target_test_scores_one_policy_on_fresh_episodes(factories):
    from gaia_p2p.problems.policy_eval import EVAL_SEED_BASE, evaluate_policy

    p = problem_of("cartpole")
    x = np.random.default_rng(4).normal(0, 0.5, size=p.param_dim)
    r = evaluate_policy(x, p.hidden, 4, problem=p)
    want = torch_policy.rollout(p, x[None, :], [EVAL_SEED_BASE + i for i in range(4)]).returns[0]
    assert r["episodes"] == 4 and r["returns"] == want.tolist() and r["solved_share"] == float((want >= 475).mean())


def test_the_island_starts_from_the_modules_own_parameters(factories):
    p = problem_of("cartpole")
    x0 = torch_policy.initial_params(p)
    module = torch_policy.load(p.name).module
    np.testing.assert_array_equal(x0, torch.nn.utils.parameters_to_vector(module.parameters()).detach().double().numpy())
    assert x0.shape == (p.param_dim,) == (4 * 16 + 16 + 16 * 2 + 2,)


def test_bare_modules_classes_and_instances_take_the_env_from_the_config(factories):
    for factory, dim in (("bare", 114), ("instance", 114), ("Cls", 10)):
        p = problem_of(factory, env="CartPole-v1")
        assert (p.env_id, p.param_dim, p.torch.version) == ("CartPole-v1", dim, "")
    with pytest.raises(ConfigError, match=r"problem.env is not set .*--set problem.env=CartPole-v1"):
        problem_of("bare")
    with pytest.raises(ConfigError, match=r"problem.env = 'Acrobot-v1', but .* names its own env 'CartPole-v1'"):
        problem_of("cartpole", env="Acrobot-v1")


def test_the_experiment_id_covers_architecture_code_and_torch_release(factories, monkeypatch):
    base = problem_of("cartpole")
    torch_policy.load.cache_clear()
    assert experiment_id(problem_of("cartpole")) == experiment_id(base)  # new random weights: the same experiment
    ids = {experiment_id(problem_of(f)) for f in ("cartpole", "cartpole_relu", "cartpole_wide", "cartpole_f64",
                                                  "cartpole_v2", "scaled_1", "scaled_2")}
    assert len(ids) == 7  # activation, a layer's size, dtype, version, a buffer's value: each a new experiment
    assert experiment_id(problem_of("cartpole", max_steps=100)) != experiment_id(base)
    assert experiment_id(problem_of("cartpole", obs_norm="clip")) != experiment_id(base)
    info = base.torch
    for change in ({"torch_version": "2.14.0"}, {"dist": "mypkg"}, {"dist_version": "0.2"}, {"module_class": "x.Y"}):
        assert experiment_id(dataclasses.replace(base, torch=dataclasses.replace(info, **change))) != experiment_id(base)
    assert torch_policy.torch_release("2.13.0+cpu") == torch_policy.torch_release("2.13.0+cu121") == "2.13.0"
    c = base.canonical()
    assert (c["problem"], c["env"], c["torch"], c["policy"]["class"], c["dim"]) == (
        "torch", "CartPole-v1", torch.__version__.split("+")[0], "torch.nn.modules.container.Sequential", 114)
    line = describe(c)
    assert line.startswith("torch torch.nn.modules.container.Sequential (architecture ") and ", version 1," in line
    assert "gym CartPole-v1" in line and "dim 114" in line


@pytest.mark.parametrize(("factory", "extra", "expected"), [
    ("missing", {}, r"module gaia_test_torch_policies has no missing"),
    ("number", {}, r"is a int, not a factory"),
    ("not_a_module", {}, r"returned a str, not a torch.nn.Module"),
    ("no_params", {}, r"no parameters"),
    ("raises", {}, r"the factory raised ZeroDivisionError: division by zero"),
    ("wrong_outputs", {}, r"to 3 outputs, CartPole-v1 needs 2 logits"),
    ("wrong_inputs", {}, r"batched forward pass .* failed: RuntimeError"),
    ("half", {}, r"float16: they must all be float32 or all float64"),
    ("no_env", {}, r"TorchPolicy.env = '' is not a gymnasium env id"),
    ("cartpole", {"env": "NoSuchEnv-v0"}, r"but .* names its own env"),
    ("bare", {"env": "NoSuchEnv-v7"}, r"problem.env = 'NoSuchEnv-v7' \(of torch:.*\) is not a registered gymnasium env"),
])
def test_bad_factories_are_one_line_config_errors(factories, factory, extra, expected):
    with pytest.raises(ConfigError, match=expected) as e:
        problem_of(factory, **extra)
    assert "\n" not in str(e.value)


def test_a_module_that_is_not_installed_and_a_bad_name(factories):
    with pytest.raises(ConfigError, match=r"cannot import no_such_pkg .*put it on PYTHONPATH"):
        build_config(env={}, overrides={"problem": {"name": "torch:no_such_pkg:make"}})
    with pytest.raises(ConfigError, match=r"needs package.module:factory after torch:"):
        build_config(env={}, overrides={"problem": {"name": "torch:make"}})
    with pytest.raises(ConfigError, match=r"problem.env = 'CartPole-v1' applies to torch:<factory> problems only"):
        build_config(env={}, overrides={"problem": {"name": "sphere", "env": "CartPole-v1"}})


def test_torch_not_installed_names_the_pip_extra(factories, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ConfigError, match=r"need torch, which is not importable .*pip install 'gaia-p2p\[torch\]'"):
        problem_of("cartpole")


def test_cuda_without_a_gpu_is_refused_at_start(factories):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: tests/core/test_torch_policy.py::test_cuda_matches_the_cpu runs instead")
    with pytest.raises(ConfigError, match=r"evaluation.device = 'cuda' but torch .* sees no CUDA GPU.*--device cpu"):
        build_config(env={}, overrides={"problem": {"name": f"torch:{MOD}:cartpole"}, "evaluation": {"device": "cuda"}})


def test_cuda_matches_the_cpu(factories):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    p = build_config(env={}, overrides={"problem": {"name": f"torch:{MOD}:pendulum"},
                                        "evaluation": {"device": "cuda"}}).problem
    X = np.random.default_rng(2).normal(0, 0.5, size=(64, p.param_dim))
    np.testing.assert_allclose(evaluate_batch(p, X, (1, 2), device="cuda"),
                               evaluate_batch(p, X, (1, 2), device="cpu"), rtol=1e-4)


def test_the_cli_says_it_in_one_line_and_exits_2(factories, capsys, tmp_path):
    rc = cli.main(["start", "--data-dir", str(tmp_path), "--problem", f"torch:{MOD}:not_a_module"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and err.count("\n") == 1 and "not a torch.nn.Module" in err, err


def test_the_example_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    torch_policy.load.cache_clear()
    try:
        for factory, extra in (("make_policy", {}), ("make_module", {"env": "CartPole-v1"})):
            p = build_config(env={}, overrides={"problem": {"name": f"torch:gaia_torch_cartpole:{factory}",
                                                            **extra}}).problem
            assert (p.env_id, p.param_dim) == ("CartPole-v1", 114)
            assert evaluate_batch(p, np.zeros((2, 114)), (1,), device="cpu").shape == (2,)
    finally:
        torch_policy.load.cache_clear()
        sys.modules.pop("gaia_torch_cartpole", None)
