"""gaia_p2p.core.optimizer: convergence, determinism, checkpoints, migrant injection, bad config.

Fitness is higher-is-better, so the sphere is maximised as ``-sum(x**2)``.
"""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import gaia_p2p.core.optimizer as optmod
from gaia_p2p.core.optimizer import (
    MAX_IPOP_DOUBLINGS,
    SIGMA_FLOOR,
    CMAES,
    OpenAIES,
    Optimizer,
    SepCMAES,
    default_popsize,
    from_state,
    make_optimizer,
)
from gaia_p2p.errors import CheckpointError, ConfigError, LocalProtocolError

DIM = 10
X0 = np.full(DIM, 3.0)
F0 = float(np.sum(X0**2))  # 90: sphere value at the start


def sphere(x: np.ndarray) -> np.ndarray:
    return -np.sum(np.atleast_2d(x) ** 2, axis=1)


def cmaes(seed: int = 0, sigma: float = 0.5, popsize: int | None = None, x0=X0, restarts: str = "off") -> Optimizer:
    """Restarts off unless asked: most tests here follow one CMA-ES run to convergence."""
    return make_optimizer("cmaes", DIM, sigma=sigma, popsize=popsize, seed=seed, x0=x0, restarts=restarts)


def sep(seed: int = 0, sigma: float = 0.5, popsize: int | None = None, x0=X0, restarts: str = "off") -> Optimizer:
    return make_optimizer("sep-cmaes", DIM, sigma=sigma, popsize=popsize, seed=seed, x0=x0, restarts=restarts)


def oes(seed: int = 0, sigma: float = 0.05, popsize: int = 20, lr: float = 0.03, x0=X0) -> Optimizer:
    return make_optimizer("openai-es", DIM, sigma=sigma, popsize=popsize, seed=seed, x0=x0, lr=lr)


def step(opt: Optimizer, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    x = opt.ask(rng)
    metrics = opt.tell(x, sphere(x))
    return x, metrics


# ------------------------------------------------------------------------------------ convergence


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cmaes_converges_on_sphere(seed):
    opt = cmaes(seed)
    rng = np.random.default_rng(seed)
    best = -np.inf
    for _ in range(200):
        x, m = step(opt, rng)
        best = max(best, m["best_fitness"])
        assert m["best_fitness"] == pytest.approx(float(sphere(x).max()))
    # measured: 1e-12 .. 3e-11 after 200 generations (popsize 10)
    assert -best < 1e-9 * F0
    assert opt.sigma < 1e-3 * 0.5
    assert float(np.sum(opt.mean**2)) < 1e-8 * F0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_openai_es_converges_on_sphere(seed):
    opt = oes(seed)
    rng = np.random.default_rng(seed)
    for g in range(300):
        _, m = step(opt, rng)
        if g == 49:  # still far away: Adam moves each coordinate by ~lr per step
            assert float(np.sum(opt.mean**2)) > 0.1 * F0
    # measured: 1.2e-4 .. 5.5e-4 after 300 generations (start 90)
    assert float(np.sum(opt.mean**2)) < 1e-4 * F0
    assert m["sigma"] == 0.05 == opt.sigma  # fixed
    assert m["grad_norm"] > 0


def _sphere_run(algorithm: str, dim: int, gens: int, seed: int = 0) -> tuple[Optimizer, float, float]:
    """``gens`` generations on a ``dim``-D sphere from 3 * ones: (optimizer, best f, wall seconds)."""
    import time

    opt = make_optimizer(algorithm, dim, sigma=0.5, popsize=None, seed=seed, x0=np.full(dim, 3.0), restarts="off")
    rng = np.random.default_rng(seed)
    best = -np.inf
    t0 = time.perf_counter()
    for _ in range(gens):
        _, m = step(opt, rng)
        best = max(best, m["best_fitness"])
    return opt, best, time.perf_counter() - t0


def test_sep_cmaes_converges_on_a_200_dimensional_sphere():
    """Separable CMA-ES on a 200-D sphere: it converges, with a diagonal covariance whose update is
    linear in the dimension (full CMA-ES updates and decomposes a 200 x 200 matrix). Only convergence
    is asserted; the wall time per generation of both is printed (pytest -s): measured here 0.43 ms
    (sep-cmaes) vs 1.9 ms (cmaes), both ~640 generations to f < 1e-3."""
    dim, gens, start = 200, 1000, 9.0 * 200
    opt, best, wall = _sphere_run("sep-cmaes", dim, gens)
    assert isinstance(opt, SepCMAES) and opt.algorithm == "sep-cmaes" and opt.popsize == default_popsize(dim)
    # measured: f ~ 1e-3 after 640 generations (popsize 19), ~1e-12 after 1500, from 1800
    assert -best < 1e-6 * start
    assert float(np.sum(opt.mean**2)) < 1e-6 * start
    _, full_best, full_wall = _sphere_run("cmaes", dim, 100)
    print(f"\n200-D sphere: sep-cmaes {wall / gens * 1e3:.2f} ms/generation (f = {-best:.1e} after {gens}), "
          f"cmaes {full_wall / 100 * 1e3:.2f} ms/generation (f = {-full_best:.1e} after 100)")


def test_sep_cmaes_covariance_is_diagonal_and_restarts_keep_it():
    opt = make_optimizer("sep-cmaes", DIM, sigma=0.5, popsize=8, seed=1, x0=X0, restarts="ipop")
    assert opt._es.opts["CMA_diagonal"] is True
    rng = np.random.default_rng(0)
    while opt.restart_count == 0:  # a flat fitness makes pycma stop (tolflatfitness) within a few generations
        x = opt.ask(rng)
        opt.tell(x, np.zeros(len(x)))
        assert opt._es.countiter < 200
    assert opt.popsize == 16 and opt._es.opts["CMA_diagonal"] is True
    twin = from_state(opt.to_state())
    assert type(twin) is SepCMAES and twin.restart_count == 1 and twin._es.opts["CMA_diagonal"] is True


def test_openai_es_antithetic_pairs_and_shape():
    opt = oes(popsize=8)
    x = opt.ask(np.random.default_rng(3))
    assert x.shape == (8, DIM) and x.dtype == np.float64
    np.testing.assert_allclose((x[:4] + x[4:]) / 2, np.broadcast_to(X0, (4, DIM)), atol=1e-12)
    assert not np.allclose(x[:4], x[4:])


def test_openai_es_gradient_and_adam_step_by_hand():
    """One tell reproduces centred ranks -> g -> first Adam step (m_hat/sqrt(v_hat) = sign(g))."""
    opt = oes(popsize=4, sigma=0.1, lr=0.03, x0=np.zeros(DIM))
    rng = np.random.default_rng(11)
    eps = np.random.default_rng(11).standard_normal((2, DIM))
    x = opt.ask(rng)
    np.testing.assert_array_equal(x, np.concatenate([0.1 * eps, -0.1 * eps]))
    f = np.array([1.0, 4.0, 3.0, 2.0])  # ranks 0,3,2,1 -> weights -0.5, 0.5, 1/6, -1/6
    w = np.array([-0.5, 0.5, 1 / 6, -1 / 6])
    g = ((w[:2] - w[2:]) @ eps) / (4 * 0.1)
    m = opt.tell(x, f)
    assert m["grad_norm"] == pytest.approx(float(np.linalg.norm(g)))
    np.testing.assert_allclose(opt.mean, 0.03 * g / (np.abs(g) + 1e-8), rtol=1e-6)


def test_cmaes_default_popsize_is_pycma_default():
    assert cmaes().popsize == default_popsize(DIM) == 10
    assert make_optimizer("cmaes", 212, sigma=0.5, popsize=None, seed=0).popsize == 4 + int(3 * np.log(212))
    assert oes(popsize=None).popsize % 2 == 0  # type: ignore[arg-type]
    assert cmaes(popsize=32).ask(None).shape == (32, DIM)


# ------------------------------------------------------------------------------------ determinism


def _trajectory(make, seed, gens=8, *, rng_seed=42, disturb_global=False):
    opt = make(seed)
    rng = np.random.default_rng(rng_seed)
    xs = []
    for g in range(gens):
        if disturb_global:  # any other user of numpy's global RNG must not matter
            np.random.seed(1000 + g)
            np.random.rand(7)
        x, _ = step(opt, rng)
        xs.append(x)
    return np.array(xs), opt


@pytest.mark.parametrize("make", [cmaes, sep, oes], ids=["cmaes", "sep-cmaes", "openai-es"])
def test_same_seed_same_candidates(make):
    a, _ = _trajectory(make, 5)
    b, _ = _trajectory(make, 5, disturb_global=True)
    np.testing.assert_array_equal(a, b)
    c, _ = _trajectory(make, 6, rng_seed=43)
    assert not np.array_equal(a[0], c[0])  # the test can fail: a different seed differs


def test_cmaes_seed_is_its_own_rng_not_the_passed_one():
    a, _ = _trajectory(cmaes, 5, rng_seed=1)
    b, _ = _trajectory(cmaes, 5, rng_seed=2)
    c, _ = _trajectory(cmaes, 6, rng_seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("make", [cmaes, oes], ids=["cmaes", "openai-es"])
def test_interleaved_instances_do_not_share_state(make):
    ref, _ = _trajectory(make, 7, gens=5)
    o1, o2 = make(7), make(7)
    r1, r2 = np.random.default_rng(42), np.random.default_rng(42)
    for g in range(5):
        x1, _ = step(o1, r1)
        x2, _ = step(o2, r2)
        np.testing.assert_array_equal(x1, ref[g])
        np.testing.assert_array_equal(x2, ref[g])


@pytest.mark.parametrize("popsize", [4, 10])
def test_cmaes_leaves_numpy_global_rng_alone(popsize):
    np.random.seed(123)
    before = np.random.get_state()
    opt = cmaes(popsize=popsize)
    rng = np.random.default_rng(0)
    for g in range(20):
        if g == 3:
            opt.inject(np.zeros(DIM))
        step(opt, rng)
    after = np.random.get_state()
    assert after[2] == before[2] and np.array_equal(after[1], before[1])


def test_ask_twice_returns_the_pending_population():
    for opt in (cmaes(), oes()):
        rng = np.random.default_rng(0)
        a = opt.ask(rng)
        a[0, 0] = 1e9  # the caller's copy; the optimizer keeps its own
        b = opt.ask(rng)
        assert b[0, 0] != 1e9
        np.testing.assert_array_equal(opt.ask(rng), b)
        opt.tell(b, sphere(b))
        assert not np.array_equal(opt.ask(rng), b)


# ------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("make", [cmaes, sep, oes], ids=["cmaes", "sep-cmaes", "openai-es"])
@pytest.mark.parametrize("pending", [False, True], ids=["between-generations", "mid-generation"])
def test_state_round_trip_continues_identically(make, pending):
    opt = make(3)
    rng = np.random.default_rng(9)
    for _ in range(15):
        step(opt, rng)
    opt.inject(np.full(DIM, 0.5))  # a queued migrant is part of the state too
    if pending:
        opt.ask(rng)
    blob = opt.to_state()
    assert isinstance(blob, bytes)
    twin = from_state(blob)
    assert type(twin) is type(opt) and twin.settings() == opt.settings()
    assert twin.sigma == opt.sigma and np.array_equal(twin.mean, opt.mean)
    rng_twin = np.random.Generator(np.random.PCG64())
    rng_twin.bit_generator.state = rng.bit_generator.state
    for _ in range(10):
        xa, ma = step(opt, rng)
        xb, mb = step(twin, rng_twin)
        np.testing.assert_array_equal(xa, xb)
        assert ma == mb
    assert opt.sigma == twin.sigma


def test_from_state_rejects_garbage():
    with pytest.raises(CheckpointError):
        from_state(b"not a pickle")
    import pickle

    with pytest.raises(CheckpointError):
        from_state(pickle.dumps({"magic": "something-else"}))
    blob = cmaes().to_state()
    with pytest.raises(CheckpointError):
        from_state(blob[: len(blob) // 2])


# ------------------------------------------------------------------------------------ inject


def test_cmaes_injected_migrant_is_first_row_of_next_population():
    opt = cmaes(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        step(opt, rng)
    x = np.linspace(-1.0, 1.0, DIM)
    opt.inject(x)
    pop = opt.ask(rng)
    assert pop.shape == (opt.popsize, DIM)
    # pycma rebuilds it as mean + sigma * ((x - mean) / sigma): equal up to rounding, not bitwise
    np.testing.assert_allclose(pop[0], x, rtol=0, atol=1e-12)
    assert not np.any(np.all(np.isclose(pop[1:], x, atol=1e-6), axis=1))
    m = opt.tell(pop, sphere(pop))
    assert m["injected"] == 1.0
    # only the next population: the one after holds no copy
    nxt = opt.ask(rng)
    assert not np.any(np.all(np.isclose(nxt, x, atol=1e-6), axis=1))


def test_cmaes_many_injections_keep_popsize():
    opt = cmaes(popsize=10)
    rng = np.random.default_rng(0)
    migrants = [np.full(DIM, float(i)) for i in range(8)]
    for x in migrants:
        opt.inject(x)
    pop = opt.ask(rng)
    assert pop.shape == (10, DIM)
    np.testing.assert_allclose(pop[:5], np.array(migrants[-5:]), atol=1e-12)  # newest popsize//2
    assert opt.tell(pop, sphere(pop))["injected"] == 5.0


def test_cmaes_migrant_pulls_the_mean():
    """After one generation the distribution mean sits closer to a good migrant than without it."""
    a, b = cmaes(seed=8), cmaes(seed=8)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    for _ in range(5):
        step(a, rng_a)
        step(b, rng_b)
    x = np.zeros(DIM)
    b.inject(x)
    step(a, rng_a)
    step(b, rng_b)
    assert np.linalg.norm(b.mean - x) < np.linalg.norm(a.mean - x) - 0.5


def _gens_to_converge(opt: Optimizer, migrant: np.ndarray | None, limit: int = 400, target: float = 1e-8) -> int:
    rng = np.random.default_rng(0)
    for g in range(limit):
        if migrant is not None and g >= 5:
            opt.inject(migrant)
        step(opt, rng)
        if float(np.sum(opt.mean**2)) < target:
            return g
    return limit


@pytest.mark.parametrize("seed", [0, 1])
def test_cmaes_good_migrant_speeds_convergence(seed):
    # measured over 8 seeds: 67-72 generations with the migrant every generation, 132-150 without
    plain = _gens_to_converge(cmaes(seed), None)
    helped = _gens_to_converge(cmaes(seed), np.full(DIM, 1e-6))
    assert plain < 400
    assert helped < 0.7 * plain


def test_cmaes_far_migrant_does_not_blow_up_the_distribution():
    """pycma does not clip a force-injected step by itself: without ``check_points`` this island
    (sigma 0.01, 900 sigmas away from the migrant) reached sigma ~500 and |mean| ~3000."""
    opt = cmaes(seed=0, sigma=0.01)
    rng = np.random.default_rng(0)
    for g in range(40):
        if g == 5:
            opt.inject(np.zeros(DIM))
        step(opt, rng)
        assert opt.sigma < 2.0
        assert np.linalg.norm(opt.mean) < np.linalg.norm(X0) + 1.0


def test_openai_es_inject_moves_the_centre_and_keeps_adam_moments():
    opt = oes(popsize=6)
    assert isinstance(opt, OpenAIES)
    rng = np.random.default_rng(0)
    for _ in range(5):
        step(opt, rng)
    m_before, v_before, t_before = opt.m.copy(), opt.v.copy(), opt.t
    x = np.full(DIM, 0.01)
    opt.inject(x)
    np.testing.assert_array_equal(opt.mean, x)
    np.testing.assert_array_equal(opt.m, m_before)
    np.testing.assert_array_equal(opt.v, v_before)
    assert opt.t == t_before
    pop = opt.ask(rng)
    np.testing.assert_allclose((pop[:3] + pop[3:]) / 2, np.broadcast_to(x, (3, DIM)), atol=1e-12)


def test_openai_es_good_migrant_speeds_convergence():
    plain, helped = oes(seed=0), oes(seed=0)
    rng_p, rng_h = np.random.default_rng(0), np.random.default_rng(0)
    for _ in range(5):
        step(plain, rng_p)
        step(helped, rng_h)
    helped.inject(np.full(DIM, 0.01))
    for _ in range(20):
        step(plain, rng_p)
        step(helped, rng_h)
    assert float(np.sum(helped.mean**2)) < 1e-3 * float(np.sum(plain.mean**2))


def test_inject_rejects_wrong_shape_and_non_finite():
    for opt in (cmaes(), oes()):
        with pytest.raises(LocalProtocolError):
            opt.inject(np.zeros(DIM + 1))
        with pytest.raises(LocalProtocolError):
            opt.inject(np.full(DIM, np.nan))


# ------------------------------------------------------------------------------------ tell contract


def test_tell_needs_exactly_the_asked_candidates_and_finite_fitness():
    for opt in (cmaes(), oes()):
        rng = np.random.default_rng(0)
        with pytest.raises(LocalProtocolError):
            opt.tell(np.zeros((opt.popsize, DIM)), np.zeros(opt.popsize))  # no ask yet
        x = opt.ask(rng)
        with pytest.raises(LocalProtocolError):
            opt.tell(x[::-1], sphere(x))
        with pytest.raises(LocalProtocolError):
            opt.tell(x + 1e-9, sphere(x))
        with pytest.raises(LocalProtocolError):
            opt.tell(x, sphere(x)[:-1])
        bad = sphere(x)
        bad[2] = np.nan
        with pytest.raises(LocalProtocolError):
            opt.tell(x, bad)
        opt.tell(x.copy(), sphere(x))  # an equal copy is fine


def test_openai_es_ask_needs_a_generator():
    with pytest.raises(LocalProtocolError):
        oes().ask(None)  # type: ignore[arg-type]


def test_cmaes_flat_fitness_does_not_crash():
    opt = cmaes()
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = opt.ask(rng)
        opt.tell(x, np.full(len(x), -100.0))  # e.g. every policy crashed the lander
    assert np.isfinite(opt.sigma) and np.all(np.isfinite(opt.mean))


def test_cmaes_keeps_going_after_pycma_stop_and_resets_collapsed_sigma():
    """pycma's stop() fires on the sphere (tolfun...), the island goes on; sigma below the floor
    is put back to sigma0 and nothing else is reset."""
    opt = cmaes(popsize=6, x0=np.full(DIM, 0.1), sigma=0.1)
    assert isinstance(opt, CMAES)
    rng = np.random.default_rng(0)
    saw_stop = saw_reset = False
    for _ in range(800):
        mean_before = opt.mean
        x, m = step(opt, rng)
        saw_stop |= m["stop_flags"] > 0
        assert opt.sigma >= SIGMA_FLOOR
        if m["sigma_reset"]:
            saw_reset = True
            assert opt.sigma == 0.1 == m["sigma"]
            # the mean stays where it converged: only sigma was reset
            assert np.linalg.norm(opt.mean) < 1e-9 and np.linalg.norm(mean_before) < 1e-9
            break
    assert saw_stop and saw_reset
    x, m = step(opt, rng)  # still usable
    assert x.shape == (6, DIM) and m["sigma_reset"] == 0.0


def test_ipop_restart_doubles_the_population_from_x0_when_pycma_stops():
    """With restarts="ipop" (the default), a converged run (pycma's tolfun/tolx...) restarts from
    x0 and sigma0 with twice the population; queued migrants survive the restart."""
    x0 = np.full(DIM, 0.1)
    opt = make_optimizer("cmaes", DIM, sigma=0.1, popsize=6, seed=0, x0=x0)
    assert isinstance(opt, CMAES) and opt.settings()["restarts"] == "ipop"
    rng = np.random.default_rng(0)
    for g in range(800):
        x, m = step(opt, rng)
        if m["restarted"]:
            break
    else:
        pytest.fail("pycma never stopped on the sphere")
    assert g > 20 and m["stop_flags"] > 0 and opt.last_stop
    assert (opt.popsize, m["popsize"], m["restarts"], opt.restart_count) == (12, 12.0, 1.0, 1)
    np.testing.assert_array_equal(opt.mean, x0)
    assert opt.sigma == 0.1
    migrant = np.full(DIM, 1e-3)
    opt.inject(migrant)
    x = opt.ask(rng)
    assert x.shape == (12, DIM)
    np.testing.assert_allclose(x[0], migrant, atol=1e-9)
    opt.tell(x, sphere(x))


def test_ipop_population_stops_doubling_at_the_cap():
    opt = make_optimizer("cmaes", DIM, sigma=0.1, popsize=4, seed=0, x0=np.zeros(DIM))
    assert isinstance(opt, CMAES)
    for _ in range(MAX_IPOP_DOUBLINGS + 2):
        opt._restart(("tolfun",))
    assert opt.popsize == 4 * 2 ** MAX_IPOP_DOUBLINGS and opt.restart_count == MAX_IPOP_DOUBLINGS + 2


def test_ipop_restarts_beat_a_single_run_on_rastrigin():
    """The reason restarts exist: one CMA-ES settles in a local optimum of rastrigin and stays;
    IPOP escapes. Measured offline (5 seeds, dim 30, 90k evaluations): -26.9 vs -9.9 median.
    Here dim 10, 20k evaluations, 3 seeds; every seed must improve."""
    from gaia_p2p.problems.functions import rastrigin
    for seed in range(3):
        x0 = np.random.default_rng([seed, 1]).uniform(-3, 3, 10)
        best = {}
        for mode in ("off", "ipop"):
            opt = make_optimizer("cmaes", 10, sigma=0.5, popsize=None, seed=seed, x0=x0, restarts=mode)
            rng, evals, b = np.random.default_rng(seed), 0, -np.inf
            while evals < 20_000:
                x = opt.ask(rng)
                f = rastrigin(x)
                opt.tell(x, f)
                evals, b = evals + len(x), max(b, float(f.max()))
            best[mode] = b
        assert best["ipop"] > best["off"] + 1.0, (seed, best)


def test_restart_mode_is_checked():
    with pytest.raises(ConfigError, match="island.restarts"):
        make_optimizer("cmaes", DIM, sigma=0.5, popsize=None, seed=0, restarts="bipop")


# ------------------------------------------------------------------------------------ settings, protocol


def test_settings_and_protocol():
    c, o = cmaes(popsize=12, sigma=0.3), oes(popsize=8, lr=0.01, sigma=0.02)
    assert c.settings() == {"sigma0": 0.3, "popsize": 12, "restarts": "off"}
    assert o.settings() == {"sigma0": 0.02, "popsize": 8, "lr": 0.01}
    for opt, name in ((c, "cmaes"), (o, "openai-es")):
        assert isinstance(opt, Optimizer)
        assert opt.algorithm == name and opt.dim == DIM
        assert all(isinstance(v, (int, float, str)) for v in opt.settings().values())
        m = opt.mean
        m[:] = 123.0  # a copy
        assert not np.any(opt.mean == 123.0)
    np.testing.assert_array_equal(make_optimizer("cmaes", 3, sigma=1, popsize=None, seed=0).mean, np.zeros(3))
    np.testing.assert_array_equal(
        make_optimizer("openai-es", 3, sigma=1, popsize=4, seed=0).mean, np.zeros(3))


# ------------------------------------------------------------------------------------ ConfigError


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(algorithm="nes"), ["optimizer.algorithm", "'nes'", "cmaes", "sep-cmaes", "openai-es"]),
        (dict(dim=0), ["optimizer.dim", "0", ">= 1"]),
        (dict(dim=2.5), ["optimizer.dim", "2.5", "integer"]),
        (dict(sigma=0.0), ["optimizer.sigma", "0.0", "> 0", "sigma = 0.5"]),
        (dict(sigma=-1.0), ["optimizer.sigma", "-1.0", "> 0"]),
        (dict(sigma=float("nan")), ["optimizer.sigma", "nan", "finite"]),
        (dict(popsize=3), ["optimizer.popsize", "3", ">= 4", "popsize = 32"]),
        (dict(algorithm="openai-es", popsize=7), ["optimizer.popsize", "7", "even", "antithetic", "popsize = 8"]),
        (dict(seed=-1), ["optimizer.seed", "-1", ">= 0"]),
        (dict(x0=np.zeros(3)), ["optimizer.x0", "(3,)", f"({DIM},)"]),
        (dict(algorithm="openai-es", lr=0.0), ["optimizer.lr", "0.0", "> 0", "lr = 0.03"]),
    ],
)
def test_config_errors_name_field_value_rule_fix(kwargs, words):
    args = dict(algorithm="cmaes", dim=DIM, sigma=0.5, popsize=10, seed=0, x0=None)
    args.update(kwargs)
    algorithm, dim = args.pop("algorithm"), args.pop("dim")
    with pytest.raises(ConfigError) as exc:
        make_optimizer(algorithm, dim, **args)
    msg = str(exc.value)
    assert msg.startswith("config error: ") and ";" in msg  # field = value, rule; fix
    for w in words:
        assert w in msg


def test_odd_popsize_is_fine_for_cmaes():
    assert make_optimizer("cmaes", DIM, sigma=0.5, popsize=7, seed=0).popsize == 7


# ------------------------------------------------------------------------------------ purity


def test_module_imports_only_stdlib_numpy_cma_and_gaia():
    tree = ast.parse(pathlib.Path(optmod.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "math", "pickle", "warnings", "typing", "numpy", "cma", "gaia_p2p"}
    src = pathlib.Path(optmod.__file__).read_text()
    for banned in ("import time", "import random", "import logging", "np.random.seed", "np.random.rand("):
        assert banned not in src


def test_a_checkpoint_from_before_restarts_loads_with_restarts_off():
    """Pickles written before IPOP existed lack its fields: the class defaults stand in."""
    opt = cmaes(restarts="ipop")
    for name in ("restarts", "restart_count", "last_stop"):
        opt.__dict__.pop(name, None)
    old = from_state(opt.to_state())
    assert isinstance(old, CMAES)
    assert (old.restarts, old.restart_count, old.last_stop) == ("off", 0, ())
    assert old.settings()["restarts"] == "off"
    _, m = step(old, np.random.default_rng(0))
    assert m["restarted"] == 0.0 and m["restarts"] == 0.0
