"""Problems: test functions, LunarLander lockstep evaluation, seeds, dispatch, torch backend, bench."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from gaia_p2p.core.experiment import ProblemConfig
from gaia_p2p.errors import EvaluationError, GaiaError
from gaia_p2p.problems import functions, gym, lunar
from gaia_p2p.problems.evaluate import (
    BLAS_THREAD_VARS,
    episode_seeds,
    evaluate_batch,
    pin_blas_threads,
)

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- test functions


@pytest.mark.parametrize(
    ("name", "optimum"), [("sphere", 0.0), ("rastrigin", 0.0), ("rosenbrock", 1.0)]
)
def test_function_optimum_is_zero_and_maximal(name: str, optimum: float) -> None:
    fn = functions.FUNCTIONS[name]
    dim = 7
    at_opt = fn(np.full((1, dim), optimum))
    assert at_opt.shape == (1,)
    assert at_opt[0] == 0.0
    rng = np.random.default_rng(0)
    others = fn(optimum + rng.uniform(-2, 2, size=(50, dim)))
    assert others.shape == (50,)
    assert np.all(others < 0.0)  # higher is better: everything else is worse than the optimum


def test_function_known_values_are_negated() -> None:
    X = np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(functions.sphere(X), [-5.0, 0.0, -1.0])
    # rastrigin: 10 d + sum(x^2 - 10 cos(2 pi x)); at (1, 0): 20 + (1 - 10) + (0 - 10) = 1
    np.testing.assert_allclose(functions.rastrigin(X[2:]), [-1.0], atol=1e-12)
    # rosenbrock: at (0, 0): 100 * 0 + 1 = 1; at (1, 2): 100 * (2 - 1)^2 + 0 = 100
    np.testing.assert_allclose(functions.rosenbrock(np.array([[0.0, 0.0], [1.0, 2.0]])), [-1.0, -100.0])


def test_functions_are_batched_row_by_row() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 5))
    for fn in functions.FUNCTIONS.values():
        whole = fn(X)
        assert whole.shape == (9,) and whole.dtype == np.float64
        np.testing.assert_array_equal(whole, np.concatenate([fn(X[i : i + 1]) for i in range(9)]))


# --------------------------------------------------------------------------- lunar: layout


def test_unpack_follows_documented_layout() -> None:
    sizes = (8, 3, 4)
    P = lunar.param_count(sizes)
    assert P == 8 * 3 + 3 + 3 * 4 + 4 == ProblemConfig(hidden=(3,)).param_dim
    params = np.arange(2 * P, dtype=np.float64).reshape(2, P)
    (W0, b0), (W1, b1) = lunar.unpack(params, sizes)
    assert W0.shape == (2, 8, 3) and b0.shape == (2, 3) and W1.shape == (2, 3, 4) and b1.shape == (2, 4)
    assert W0[1, 2, 1] == P + 2 * 3 + 1  # row-major: offset i * out + o
    assert b0[0, 0] == 24 and W1[0, 0, 0] == 27 and W1[0, 1, 0] == 31 and b1[0, 3] == P - 1
    with pytest.raises(ValueError):
        lunar.unpack(params[:, :-1], sizes)


# --------------------------------------------------------------------------- lunar: reference


def reference_episode(
    theta: np.ndarray, seed: int, hidden: tuple[int, ...], max_steps: int
) -> tuple[float, int]:
    """Independent reference: normal wrapped gymnasium env, one episode, forward pass written
    from the documented layout (not from lunar.unpack), float64."""
    sizes = (8, *hidden, 4)
    layers = []
    off = 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        W = theta[off : off + a * b].reshape(a, b)
        off += a * b
        layers.append((W, theta[off : off + b]))
        off += b
    assert off == len(theta)
    if max_steps == 1000:
        env = gymnasium.make("LunarLander-v3")  # the registered TimeLimit is 1000
    else:
        env = gymnasium.make("LunarLander-v3", max_episode_steps=max_steps)
    obs, _ = env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        h = obs.astype(np.float64)
        for W, b in layers[:-1]:
            h = np.tanh(h @ W + b)
        action = int(np.argmax(h @ layers[-1][0] + layers[-1][1]))
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        steps += 1
        if terminated or truncated:
            env.close()
            return total, steps


def _hand_made_policies() -> np.ndarray:
    """Two 8-16-4 policies that reach the rare branches random policies miss: a near-linear copy of
    gymnasium's heuristic lander (lands and comes to rest: terminated with +100) and a hoverer that
    runs into the 1000-step limit on seed 11."""
    out = []
    for kind in ("heuristic", "hover"):
        theta = np.zeros(212)
        W0, b0 = theta[:128].reshape(8, 16), theta[128:144]
        W1, b1 = theta[144:208].reshape(16, 4), theta[208:]
        if kind == "heuristic":  # h0 ~ angle_todo, h1 ~ hover_todo (scaled down into tanh's linear range)
            W0[:, 0] = 0.1 * np.array([0.25, 0, 0.5, 0, -0.5, -1.0, 0, 0])
            W0[:, 1] = 0.1 * np.array([0, -0.5, 0, -0.5, 0, 0, 0, 0])
            W1[0, 1], W1[0, 3], W1[1, 2] = 10.0, -10.0, 10.0
            b1[1:] = -0.05
        else:  # main engine while falling faster than 0.1, crude attitude control
            W0[3, 0], b0[0] = -2.0, -0.2
            W0[4, 1] = W0[5, 1] = -2.0
            W1[0, 2], W1[1, 3], W1[1, 1] = 1.0, -1.0, 1.0
        out.append(theta)
    return np.array(out)


@pytest.mark.parametrize(
    ("hidden", "max_steps", "seeds", "scale"),
    [
        ((16,), 1000, (11, 2024, 7), 0.5),
        ((6, 5), 70, (3, 5), 1.0),  # truncation by max_steps, two hidden layers
    ],
)
def test_lockstep_matches_sequential_gymnasium(
    hidden: tuple[int, ...], max_steps: int, seeds: tuple[int, ...], scale: float
) -> None:
    rng = np.random.default_rng(42)
    P = ProblemConfig(hidden=hidden).param_dim
    X = scale * rng.standard_normal((8, P))
    X[0] = 0.0  # all-zero logits: argmax ties -> action 0 always (same rule on both sides)
    if hidden == (16,):
        X[1:3] = _hand_made_policies()
    res = lunar.rollout_lunar(X, seeds, hidden, max_steps)
    assert res.returns.shape == res.lengths.shape == (len(X), len(seeds))
    for c in range(len(X)):
        for j, seed in enumerate(seeds):
            ret, steps = reference_episode(X[c], seed, hidden, max_steps)
            assert res.returns[c, j] == ret, (c, j)
            assert res.lengths[c, j] == steps, (c, j)
    fitness = lunar.evaluate_lunar(X, seeds, hidden, max_steps)
    np.testing.assert_array_equal(fitness, res.returns.mean(axis=1))
    # the rare branches were exercised: truncation at max_steps, and (1000-step case) a landing
    assert (res.lengths == max_steps).any()
    assert (res.lengths < max_steps).any()
    if max_steps == 1000:
        assert (res.returns > 200).any()


def test_lunar_is_deterministic_and_independent_of_the_rest_of_the_population() -> None:
    rng = np.random.default_rng(7)
    X = 0.5 * rng.standard_normal((6, 212))
    seeds = (123, 456)
    a = lunar.evaluate_lunar(X, seeds)
    b = lunar.evaluate_lunar(X, seeds)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lunar.evaluate_lunar(X[[4, 1]], seeds), a[[4, 1]])
    # other seeds give other values
    assert not np.array_equal(lunar.evaluate_lunar(X, (124, 457)), a)


def test_float32_policy_gives_the_same_trajectories() -> None:
    rng = np.random.default_rng(3)
    X = np.vstack([_hand_made_policies(), 0.5 * rng.standard_normal((6, 212))])
    seeds = (11, 7)
    r64 = lunar.rollout_lockstep(8, seeds, 1000, lunar.numpy_policy_factory(X, (16,), np.float64))
    r32 = lunar.rollout_lockstep(8, seeds, 1000, lunar.numpy_policy_factory(X, (16,), np.float32))
    np.testing.assert_array_equal(r64.returns, r32.returns)
    np.testing.assert_array_equal(r64.lengths, r32.lengths)


def test_chunked_lockstep_matches_single_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    X = 0.5 * rng.standard_normal((5, 212))
    seeds = (1, 2)
    whole = lunar.rollout_lunar(X, seeds, max_steps=150)
    monkeypatch.setattr(gym, "MAX_LOCKSTEP_ENVS", 3)
    chunked = lunar.rollout_lunar(X, seeds, max_steps=150)
    np.testing.assert_array_equal(whole.returns, chunked.returns)
    np.testing.assert_array_equal(whole.lengths, chunked.lengths)


def test_fast_action_check_is_a_faithful_check() -> None:
    space = lunar.make_env().action_space
    assert [space.contains(a) for a in (0, 1, 2, 3)] == [True] * 4
    assert not space.contains(4) and not space.contains(-1) and not space.contains(2.0)
    assert space.contains(np.int64(2)) and not space.contains(np.int64(7))


# --------------------------------------------------------------------------- seeds


def test_episode_seeds_deterministic_and_change_per_generation() -> None:
    s0 = episode_seeds(7, 0, 4)
    assert s0 == episode_seeds(7, 0, 4)
    assert len(s0) == 4 and all(type(s) is int and 0 <= s <= 2**31 - 1 for s in s0)
    gens = {episode_seeds(7, g, 4) for g in range(100)}
    assert len(gens) == 100
    assert episode_seeds(8, 0, 4) != s0
    assert episode_seeds(7, 0, 1)[0] == s0[0]  # a prefix: more episodes only add seeds
    with pytest.raises(GaiaError):
        episode_seeds(-1, 0, 1)
    with pytest.raises(GaiaError):
        episode_seeds(1, 0, 0)


# --------------------------------------------------------------------------- dispatch


def test_evaluate_batch_dispatches() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 30))
    for name in ("sphere", "rastrigin", "rosenbrock"):
        np.testing.assert_array_equal(
            evaluate_batch(ProblemConfig(name=name, dim=30), X, ()), functions.FUNCTIONS[name](X)
        )
    problem = ProblemConfig(max_steps=200)
    XL = 0.5 * rng.standard_normal((3, problem.param_dim))
    seeds = episode_seeds(1, 0, 2)
    np.testing.assert_array_equal(
        evaluate_batch(problem, XL, seeds), lunar.evaluate_lunar(XL, seeds, (16,), 200)
    )
    assert evaluate_batch(problem, np.zeros((0, problem.param_dim)), seeds).shape == (0,)


@pytest.mark.parametrize(
    ("problem", "X", "seeds"),
    [
        (ProblemConfig(name="ackley", dim=3), np.zeros((2, 3)), ()),  # unknown problem
        (ProblemConfig(name="sphere", dim=3), np.zeros((2, 4)), ()),  # wrong dim
        (ProblemConfig(name="sphere", dim=3), np.zeros(3), ()),  # not a matrix
        (ProblemConfig(name="sphere", dim=3), np.array([[0.0, np.nan, 0.0]]), ()),  # non-finite
        (ProblemConfig(), np.zeros((2, 211)), (1,)),  # wrong lunar dim
        (ProblemConfig(), np.zeros((2, 212)), ()),  # lunar without seeds
        (ProblemConfig(name="sphere", dim=2), [["a", "b"]], ()),  # not numeric
    ],
)
def test_evaluate_batch_errors(problem: ProblemConfig, X: np.ndarray, seeds: tuple[int, ...]) -> None:
    with pytest.raises(EvaluationError):
        evaluate_batch(problem, X, seeds)


def test_pin_blas_threads_uses_setdefault(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    pin_blas_threads()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["MKL_NUM_THREADS"] == "3"


def test_importing_evaluate_does_not_import_torch_or_gymnasium() -> None:
    code = (
        "import sys, gaia_p2p.problems.evaluate, gaia_p2p.problems.torch_backend;"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "assert 'gymnasium' not in sys.modules, 'gymnasium imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- torch backend


def test_torch_backend_agrees_with_numpy() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"torch not importable: {e}")
    from gaia_p2p.problems.torch_backend import evaluate_lunar_torch, rollout_lunar_torch

    rng = np.random.default_rng(11)
    X = np.vstack([_hand_made_policies(), 0.5 * rng.standard_normal((4, 212))])
    seeds = (11, 7)
    ref = lunar.rollout_lunar(X, seeds)
    got = rollout_lunar_torch(X, seeds)
    np.testing.assert_array_equal(got.returns, ref.returns)
    np.testing.assert_array_equal(got.lengths, ref.lengths)
    np.testing.assert_array_equal(evaluate_lunar_torch(X, seeds), ref.fitness)


# --------------------------------------------------------------------------- benchmark script


def test_bench_eval_quick_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_eval.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "command:" in proc.stdout and "(b) numpy" in proc.stdout and "(a) raw" in proc.stdout
