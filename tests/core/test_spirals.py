"""spirals: dataset, numpy vs torch fitness, batching, dispatch, devices, CMA-ES progress, bench script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gaia_p2p.config import build_config
from gaia_p2p.core.experiment import PROBLEMS, SPIRALS_N_POINTS, ProblemConfig, experiment_id
from gaia_p2p.core.optimizer import make_optimizer
from gaia_p2p.errors import ConfigError, EvaluationError
from gaia_p2p.node.evaluator import Evaluator
from gaia_p2p.problems import spirals
from gaia_p2p.problems.evaluate import evaluate_batch

REPO = Path(__file__).resolve().parents[2]
HIDDENS = [(16,), (16, 16), (5, 3, 7)]


def _torch():
    """torch, or skip the calling test saying why."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"torch path not tested: torch is not importable ({e}); pip install -e '.[torch]'")
    return torch


def _population(hidden: tuple[int, ...], n: int, seed: int = 0, scale: float = 0.7) -> np.ndarray:
    P = ProblemConfig(name="spirals", hidden=hidden).param_dim
    return scale * np.random.default_rng(seed).standard_normal((n, P))


# --------------------------------------------------------------------------- problem config


def test_spirals_problem_config() -> None:
    p = ProblemConfig(name="spirals")
    assert "spirals" in PROBLEMS and p.deterministic
    assert p.layer_sizes == (2, 16, 1) and p.param_dim == 2 * 16 + 16 + 16 + 1 == 65
    assert ProblemConfig(name="spirals", hidden=(16, 16)).param_dim == 65 + 16 * 16 + 16
    c = p.canonical()
    assert c["dataset"] == {"type": "two_spirals", "generator": 1, "n_points": 512, "noise": 0.05,
                            "turns": 1.5, "seed": 7919}
    assert c["policy"]["sizes"] == [2, 16, 1] and c["fitness"] == "neg_mean_bce_with_logits"
    assert c["dim"] == 65


def test_experiment_id_differs_from_other_problems_and_architectures() -> None:
    ids = {experiment_id(ProblemConfig(name=name, hidden=(16,))) for name in PROBLEMS}
    assert len(ids) == len(PROBLEMS)
    spiral = experiment_id(ProblemConfig(name="spirals"))
    assert spiral != experiment_id(ProblemConfig(name="spirals", hidden=(16, 16)))
    assert spiral == experiment_id(ProblemConfig(name="spirals", dim=3, episodes=5))  # not fitness-defining
    assert spiral == "ada8b4dc2cc9dc68cad0e75ef778e0c9"  # pinned: a change here is a new experiment


def test_dataset_constants_are_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    from gaia_p2p.core import experiment

    before = experiment_id(ProblemConfig(name="spirals"))
    for name, value in (("SPIRALS_N_POINTS", 256), ("SPIRALS_NOISE", 0.1), ("SPIRALS_SEED", 1),
                        ("SPIRALS_TURNS", 2.0)):
        with monkeypatch.context() as m:
            m.setattr(experiment, name, value)
            assert experiment_id(ProblemConfig(name="spirals")) != before, name


def test_config_accepts_spirals_and_bounds_its_dimension() -> None:
    cfg = build_config(env={}, overrides={"problem": {"name": "spirals", "hidden": (16, 16)}})
    assert cfg.problem.param_dim == 337 and cfg.reeval_episodes == 1
    with pytest.raises(ConfigError, match="problem.hidden"):
        build_config(env={}, overrides={"problem": {"name": "spirals", "hidden": (1024, 1024)}})


# --------------------------------------------------------------------------- dataset


def test_dataset_is_deterministic_balanced_and_pinned() -> None:
    points, labels = spirals.dataset()
    assert points.shape == (SPIRALS_N_POINTS, 2) and labels.shape == (SPIRALS_N_POINTS,)
    assert points.dtype == np.float64 and not points.flags.writeable
    assert set(np.unique(labels)) == {0.0, 1.0} and labels.sum() == SPIRALS_N_POINTS // 2
    again = spirals.make_dataset()
    np.testing.assert_array_equal(again[0], points)
    np.testing.assert_array_equal(again[1], labels)
    # pinned values (generator 1): a change of the generator must change the experiment id too
    np.testing.assert_allclose(points[0], [0.0727730991, 0.0211933028], atol=1e-10)
    np.testing.assert_allclose(points[-1], [0.9760310487, 0.0389851339], atol=1e-10)
    assert np.all(np.abs(points) < 1.5)
    # the noise is small and seeded: other seeds give other noise, no noise gives the bare spirals
    other, _ = spirals.make_dataset(seed=1)
    assert not np.array_equal(other, points)
    bare, _ = spirals.make_dataset(noise=0.0)
    m = SPIRALS_N_POINTS // 2
    t = np.sqrt((np.arange(m) + 0.5) / m)
    np.testing.assert_allclose(np.hypot(bare[:, 0], bare[:, 1]), np.concatenate([t, t]), rtol=1e-12)
    np.testing.assert_allclose(bare[m:], -bare[:m])
    assert 0.03 < np.std(points - bare) < 0.07


# --------------------------------------------------------------------------- fitness


def test_fitness_known_values() -> None:
    hidden = (4,)
    X = np.zeros((1, ProblemConfig(name="spirals", hidden=hidden).param_dim))
    np.testing.assert_allclose(spirals.evaluate_spirals(X, hidden), [-np.log(2.0)], rtol=1e-15)  # p = 0.5
    X[0, -1] = 3.0  # output bias: logit 3 everywhere, half the labels are 1
    expected = -(np.log1p(np.exp(-3.0)) + np.log1p(np.exp(3.0))) / 2
    np.testing.assert_allclose(spirals.evaluate_spirals(X, hidden), [expected], rtol=1e-14)
    np.testing.assert_array_equal(spirals.accuracy_spirals(X, hidden), [0.5])
    fit = spirals.evaluate_spirals(_population(hidden, 20), hidden)
    assert np.all(fit < 0)


@pytest.mark.parametrize("hidden", HIDDENS)
def test_numpy_batched_equals_per_candidate_loop(hidden: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    X = _population(hidden, 37)
    whole = spirals.evaluate_spirals(X, hidden)
    loop = np.concatenate([spirals.evaluate_spirals(X[i : i + 1], hidden) for i in range(len(X))])
    np.testing.assert_array_equal(whole, loop)
    monkeypatch.setattr(spirals, "MAX_CHUNK_ELEMENTS", 1)  # one candidate per chunk
    np.testing.assert_array_equal(spirals.evaluate_spirals(X, hidden), whole)


@pytest.mark.parametrize("hidden", HIDDENS)
def test_torch_agrees_with_numpy_and_is_batch_independent(hidden: tuple[int, ...],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _torch()
    from gaia_p2p.problems import torch_backend

    X = _population(hidden, 37, seed=1)
    ref = spirals.evaluate_spirals(X, hidden)
    got = torch_backend.evaluate_spirals_torch(X, hidden, device="cpu")
    assert got.dtype == np.float64 and got.shape == (37,)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=0)
    # bit-identical on one device and dtype, whatever batch a candidate is in
    loop = np.concatenate([torch_backend.evaluate_spirals_torch(X[i : i + 1], hidden) for i in range(len(X))])
    np.testing.assert_array_equal(got, loop)
    np.testing.assert_array_equal(torch_backend.evaluate_spirals_torch(X, hidden), got)
    monkeypatch.setitem(torch_backend.MAX_CHUNK_ELEMENTS, "cpu", 1)
    np.testing.assert_array_equal(torch_backend.evaluate_spirals_torch(X, hidden), got)
    assert torch_backend.evaluate_spirals_torch(X[:0], hidden).shape == (0,)


# --------------------------------------------------------------------------- dispatch and devices


def test_evaluate_batch_dispatches_spirals() -> None:
    p = ProblemConfig(name="spirals")
    X = _population((16,), 9, seed=2)
    np.testing.assert_array_equal(evaluate_batch(p, X, ()), spirals.evaluate_spirals(X, (16,)))
    assert evaluate_batch(p, X[:0], ()).shape == (0,)
    with pytest.raises(EvaluationError, match="shape"):
        evaluate_batch(p, X[:, :-1], ())
    with pytest.raises(EvaluationError, match="backend"):
        evaluate_batch(p, X, (), backend="jax")
    _torch()
    from gaia_p2p.problems import torch_backend

    np.testing.assert_array_equal(evaluate_batch(p, X, (), backend="torch", device="cpu"),
                                  torch_backend.evaluate_spirals_torch(X, (16,), device="cpu"))
    np.testing.assert_allclose(evaluate_batch(p, X, (), backend="torch", device="auto"),
                               spirals.evaluate_spirals(X, (16,)), rtol=1e-9)
    # test functions stay numpy on the torch backend
    s = ProblemConfig(name="sphere", dim=4)
    np.testing.assert_array_equal(evaluate_batch(s, np.ones((2, 4)), (), backend="torch", device="cpu"), [-4.0, -4.0])


def test_cuda_without_a_gpu_names_the_fix() -> None:
    torch = _torch()
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the no-GPU error cannot happen here")
    p = ProblemConfig(name="spirals")
    with pytest.raises(EvaluationError) as info:
        evaluate_batch(p, _population((16,), 2), (), backend="torch", device="cuda")
    msg = str(info.value)
    assert "--device cpu" in msg and "cuda" in msg and "\n" not in msg
    with pytest.raises(EvaluationError, match="--device cpu"):
        Evaluator(p, 0, backend="torch", device="cuda")  # fails at construction, i.e. at node start
    from gaia_p2p.problems.torch_backend import resolve_device

    assert resolve_device("auto") == "cpu"


def test_torch_missing_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    p = ProblemConfig(name="spirals")
    with pytest.raises(EvaluationError, match=r"pip install -e '\.\[torch\]' or pass --backend numpy"):
        evaluate_batch(p, _population((16,), 2), (), backend="torch", device="cpu")
    np.testing.assert_array_equal(evaluate_batch(p, _population((16,), 2), ()),  # numpy needs no torch
                                  spirals.evaluate_spirals(_population((16,), 2), (16,)))


async def test_evaluator_sends_the_whole_population_to_one_torch_call(monkeypatch: pytest.MonkeyPatch) -> None:
    _torch()
    from gaia_p2p.node import evaluator as evaluator_mod

    p = ProblemConfig(name="spirals")
    X = _population((16,), 12, seed=3)
    calls: list[int] = []
    real = evaluator_mod.evaluate_batch

    def spy(problem, Xc, seeds, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(Xc))
        assert kw == {"backend": "torch", "device": "cpu"}
        return real(problem, Xc, seeds, **kw)

    monkeypatch.setattr(evaluator_mod, "evaluate_batch", spy)
    ev = Evaluator(p, 0, backend="torch", device="cpu")
    assert (ev.backend, ev.device) == ("torch", "cpu")
    got = await ev.evaluate(X, ())
    assert calls == [12]
    np.testing.assert_allclose(got, spirals.evaluate_spirals(X, (16,)), rtol=1e-9)
    with pytest.raises(EvaluationError, match="backend"):
        Evaluator(p, 0, backend="jax")


async def test_evaluator_torch_in_a_worker_process() -> None:
    _torch()
    p = ProblemConfig(name="spirals")
    X = _population((16,), 10, seed=4)
    ev = Evaluator(p, 2, backend="torch", device="cpu")  # one worker call, 2 torch threads there
    got = await ev.evaluate(X, ())
    np.testing.assert_allclose(got, spirals.evaluate_spirals(X, (16,)), rtol=1e-9)
    numpy_ev = Evaluator(p, 2)  # numpy: chunks over worker processes, same values
    np.testing.assert_array_equal(await numpy_ev.evaluate(X, ()), spirals.evaluate_spirals(X, (16,)))


# --------------------------------------------------------------------------- optimisation


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cmaes_learns_spirals(backend: str) -> None:
    if backend == "torch":
        _torch()
    p = ProblemConfig(name="spirals", hidden=(8,))
    opt = make_optimizer("cmaes", p.param_dim, sigma=0.5, popsize=16, seed=0)
    best = []
    for _ in range(150):  # 0.25 s per backend on an idle core here
        X = opt.ask(None)
        f = evaluate_batch(p, X, (), backend=backend, device="cpu")
        opt.tell(X, f)
        best.append(float(f.max()))
    # measured (seed 0): generation 1 best -0.63, 30: -0.60, 100: -0.48, 150: -0.33 (accuracy ~0.85)
    assert best[-1] > best[0] + 0.15
    assert best[-1] > -0.45  # well below ln 2 = 0.693, the loss of a coin flip
    x = opt.ask(None)[:1]
    assert spirals.accuracy_spirals(x, (8,))[0] > 0.6


# --------------------------------------------------------------------------- benchmark script


def test_bench_torch_quick_runs() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_torch.py"), "--quick"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "command:" in out and "evals/s" in out and "ratio" in out
    assert "numpy                 64" in out and "numpy                256" in out
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover
        return
    assert "torch-cpu x1" in out


def test_evaluate_batch_torch_backend_runs_lunarlander_too() -> None:
    _torch()
    from gaia_p2p.problems import lunar

    p = ProblemConfig(max_steps=60)
    X = 0.5 * np.random.default_rng(5).standard_normal((3, p.param_dim))
    np.testing.assert_array_equal(evaluate_batch(p, X, (3,), backend="torch", device="cpu"),
                                  lunar.evaluate_lunar(X, (3,), (16,), 60))
