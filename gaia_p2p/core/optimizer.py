"""Ask/tell optimizers with explicit state: CMA-ES and separable CMA-ES (over pycma), OpenAI-ES.

Pure: stdlib, numpy, cma and gaia_p2p only. No clocks, no logging, no global random state.

Fitness is HIGHER IS BETTER at this interface; the CMA-ES adapter negates it for pycma.

One optimizer lives as long as its island (docs/ISLANDS.md, cause 1): migrants enter through
:meth:`inject`, they never restart it (only pycma's own stop criteria do, below). ``to_state``/``from_state`` carry the *full* state (pycma
object, its private sampler, Adam moments, a population asked but not yet told, queued migrants)
for local checkpoints.

Choices worth knowing (checked against pycma 4.5.0):

* **Sampling RNG.** pycma's ``seed`` option only seeds numpy's *global* legacy RNG, which pycma
  then draws from in every ``ask``: two islands in one process, or any other user of
  ``np.random``, would perturb each other. Instead pycma's documented ``randn`` option is set to a
  private :class:`numpy.random.Generator` seeded with ``SeedSequence(seed)``, and pycma's ``seed``
  option to NaN (pycma then never touches the global RNG). Same ``seed`` + same call sequence =>
  bit-identical candidates, whatever else the process does. The ``rng`` passed to
  :meth:`CMAES.ask` is accepted and ignored.
* **pycma's stop() and restarts.** An island runs forever (``maxiter``/``maxfevals`` are inf),
  but a CMA-ES whose own termination criteria fire (tolfun, tolx, tolflatfitness,
  tolstagnation, conditioncov, noeffect*, tolupsigma, ...) has converged or stalled: it would
  sample the same basin forever. With ``restarts="ipop"`` (the default) it is then restarted
  IPOP-style (Auger & Hansen 2005): a fresh CMA-ES from the original ``x0`` and ``sigma0`` with
  *twice* the population, up to ``MAX_IPOP_DOUBLINGS`` doublings (then the size is kept). This
  is not the "restart at every migration" that docs/ISLANDS.md (cause 1) warns against: it
  happens only when pycma itself says the run is over, and the island's resident best is kept
  (it lives in the island, not here). Measured offline on rastrigin-30 (x0 ~ U(-3, 3), sigma0
  0.5, popsize 32, 5 seeds): best after 90k / 600k evaluations -26.9 / -26.9 without restarts,
  -9.9 / -1.0 with IPOP. On noisy returns they rarely fire (none in the 45 LunarLander node runs of
  up to 360 s of docs/BENCHMARKS.md section 4). Queued
  migrants survive a restart. ``restarts="off"``: flags are only reported (``stop_flags``).
  If the step size collapses anyway (``sigma < SIGMA_FLOOR`` = 1e-12 after a ``tell``) sigma
  alone is reset to ``sigma0``; mean, covariance and evolution paths are kept (``sigma_reset``).
* **Separable CMA-ES** (``sep-cmaes``, Ros & Hansen 2008) is the same adapter with pycma's option
  ``CMA_diagonal=True``: the covariance stays diagonal, so time and memory per generation are
  linear in the dimension (full CMA-ES: quadratic memory, and an eigendecomposition of an N x N
  matrix every few generations), and pycma then uses the diagonal's larger learning rates. For
  policies of thousands of parameters (a 64-64 MLP on a MuJoCo task has 5k-10k) full CMA-ES is
  out of reach; sep-CMA-ES and OpenAI-ES are the choices there. Restarts, inject and adopt work
  as for ``cmaes``.
* **inject.** Migrants are queued and handed to ``es.inject(..., force=True)`` at the next
  ``ask``; pycma puts them first in that population as ``mean + sigma * ((x - mean) / sigma)``,
  i.e. equal to ``x`` only up to rounding (~1e-16 relative), so the migrant itself is evaluated.
  At most ``max(1, popsize // 2)`` migrants enter one population (newest kept), so ``ask``
  always returns exactly ``popsize`` rows.
* **Injected steps are clipped.** pycma (4.5) does *not* trim a force-injected solution's step
  in ``tell`` by default (it finds the solution in its ``sent_solutions`` archive, and repairs
  only unknown ones), whatever its ``inject`` docstring suggests. A migrant many sigmas away then
  inflates the paths, sigma and the covariance: measured on a 10-D sphere from 3*ones with
  sigma0 0.01, one injected optimum made sigma grow to ~500 and the mean run off to ~3000, and
  convergence took 2x longer. ``tell`` therefore passes ``check_points=<injected rows>``, so
  pycma's ``repair_genotype`` clips their Mahalanobis step length to ``sqrt(N) + 2N/(N+2)``
  (Hansen 2011, "Injecting external solutions into CMA-ES"). With that, a far migrant is
  harmless and a good one injected every generation halves the generations to converge.
  Side effect: a clipped migrant no longer matches pycma's injection archive, so pycma treats
  it as a regular sample (it may then get a negative "active" weight if it ranks low) and warns
  ``InjectionWarning: orphanated injected solution`` two generations later; that warning is
  silenced inside ``tell``. A migrant close enough to need no clipping keeps pycma's injected
  treatment (no negative weight).
* **tell** must receive exactly the array the last ``ask`` returned (pycma matches solutions to
  its internal genotypes); anything else raises :class:`LocalProtocolError`. ``ask`` again before
  ``tell`` returns the same pending population.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np

with warnings.catch_warnings():
    # pycma warns at import when matplotlib is missing; plotting is never used here.
    warnings.simplefilter("ignore")
    import cma

from gaia_p2p.core.types import ALGORITHMS, RESTARTS, Algorithm, Restarts
from gaia_p2p.errors import CheckpointError, ConfigError, LocalProtocolError

# pycma's "orphanated injected solution" warning: expected when a migrant's step was clipped
# (module doc); pycma documents filtering it. Absent in old pycma versions.
_InjectionWarning = getattr(cma.evolution_strategy, "InjectionWarning", None)

__all__ = [
    "CMAES",
    "MAX_IPOP_DOUBLINGS",
    "OpenAIES",
    "Optimizer",
    "SIGMA_FLOOR",
    "SepCMAES",
    "default_popsize",
    "from_state",
    "make_optimizer",
]

#: IPOP doubles the population at most this many times (popsize0 * 64), then restarts keep the size.
MAX_IPOP_DOUBLINGS = 6
#: A CMA-ES sigma below this after ``tell`` is reset to ``sigma0`` (nothing else is reset).
SIGMA_FLOOR = 1e-12

_STATE_MAGIC = "gaia-optimizer"
_STATE_VERSION = 1


@runtime_checkable
class Optimizer(Protocol):
    algorithm: Algorithm
    dim: int
    popsize: int  # the current one (IPOP restarts double it)
    restart_count: int
    last_stop: tuple[str, ...]

    def ask(self, rng: np.random.Generator) -> np.ndarray: ...

    def tell(self, candidates: np.ndarray, fitness: np.ndarray) -> dict[str, float]: ...

    def inject(self, x: np.ndarray) -> None: ...

    def adopt(self, x: np.ndarray) -> None: ...

    @property
    def sigma(self) -> float: ...

    @property
    def mean(self) -> np.ndarray: ...

    def settings(self) -> dict[str, float | int | str]: ...

    def to_state(self) -> bytes: ...


def default_popsize(dim: int) -> int:
    """pycma's default population size, ``4 + floor(3 ln dim)``."""
    return 4 + int(3 * math.log(dim))


# --------------------------------------------------------------------------------------------------
# shared checks (our own bugs -> LocalProtocolError)


def _check_point(x: Any, dim: int, what: str) -> np.ndarray:
    arr = np.array(x, dtype=np.float64)  # copy: callers keep their array
    if arr.shape != (dim,):
        raise LocalProtocolError(f"{what} must have shape ({dim},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise LocalProtocolError(f"{what} must be finite")
    return arr


def _check_tell(pending: np.ndarray | None, candidates: Any, fitness: Any) -> np.ndarray:
    if pending is None:
        raise LocalProtocolError("tell called without a pending ask")
    cand = np.asarray(candidates)
    if cand.shape != pending.shape or not np.array_equal(cand, pending):
        raise LocalProtocolError("tell must receive exactly the candidates returned by the last ask")
    fit = np.asarray(fitness, dtype=np.float64)
    if fit.shape != (pending.shape[0],):
        raise LocalProtocolError(f"fitness must have shape ({pending.shape[0]},), got {fit.shape}")
    if not np.all(np.isfinite(fit)):
        raise LocalProtocolError("fitness must be finite")
    return fit


class _Randn:
    """pycma ``randn(lam, N)`` drawing from a private Generator (picklable, no global state)."""

    def __init__(self, gen: np.random.Generator) -> None:
        self.gen = gen

    def __call__(self, *shape: int) -> np.ndarray:
        return self.gen.standard_normal(shape)


# --------------------------------------------------------------------------------------------------
# CMA-ES


class CMAES:
    """pycma's CMAEvolutionStrategy (full covariance) behind the ask/tell interface."""

    algorithm = Algorithm.CMAES
    # Class-level defaults: a checkpoint pickled before restarts existed loads with restarts off.
    restarts: str = Restarts.OFF
    restart_count = 0
    last_stop: tuple[str, ...] = ()  # pycma's flags that caused the latest restart

    def __init__(self, dim: int, *, sigma: float, popsize: int, seed: int, x0: np.ndarray,
                 restarts: str = Restarts.IPOP) -> None:
        if restarts not in RESTARTS:
            raise LocalProtocolError(f"unknown restart mode {restarts!r}")
        self.dim = dim
        self.popsize = popsize
        self.popsize0 = popsize
        self.sigma0 = float(sigma)
        self.seed = seed
        self.restarts = str(restarts)  # a plain str, as checkpoints have always pickled it
        self.x0 = np.array(x0, dtype=np.float64)
        self._randn = _Randn(np.random.default_rng(np.random.SeedSequence(seed)))
        self._es = self._new_es(popsize)
        self._pending_list: list[np.ndarray] | None = None  # pycma's own arrays, told back as-is
        self._pending: np.ndarray | None = None  # the copy handed out by ask
        self._queued: list[np.ndarray] = []
        self._injected_last = 0

    # pycma options on top of ours (SepCMAES: the diagonal covariance)
    extra_options: dict[str, Any] = {}

    def _new_es(self, popsize: int) -> Any:
        opts = {
            **self.extra_options,
            "popsize": popsize,
            "randn": self._randn,  # one private stream for the island's whole life, restarts included
            "seed": np.nan,  # NaN: pycma leaves numpy's global RNG alone (see module doc)
            "maxiter": np.inf,
            "maxfevals": np.inf,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        es = cma.CMAEvolutionStrategy(self.x0.copy(), self.sigma0, opts)
        if es.popsize != popsize:  # pragma: no cover - pycma contract
            raise LocalProtocolError(f"pycma chose popsize {es.popsize}, asked {popsize}")
        return es

    def _restart(self, flags: tuple[str, ...]) -> None:
        """IPOP: a fresh CMA-ES from x0/sigma0 with twice the population (module doc)."""
        self.restart_count += 1
        self.last_stop = flags
        if self.popsize < self.popsize0 * 2 ** MAX_IPOP_DOUBLINGS:
            self.popsize *= 2
        self._es = self._new_es(self.popsize)
        self._adopt = None  # a pending adopt aimed at the old distribution; queued migrants stay

    @property
    def max_injections(self) -> int:
        """Most migrants entering one population."""
        return max(1, self.popsize // 2)

    def ask(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """``(popsize, dim)`` candidates; queued migrants come first. ``rng`` is unused."""
        del rng  # sampling uses the private, seeded Generator (module doc)
        if self._pending is not None:
            return self._pending.copy()
        self._injected_last = 0
        adopt = getattr(self, "_adopt", None)
        if adopt is not None:
            self._es.mean = adopt.copy()
            self._adopt = None
        if self._queued:
            batch = self._queued[-self.max_injections:]
            self._queued = []
            self._es.inject(batch, force=True)
            self._injected_last = len(batch)
        xs = self._es.ask()
        pop = np.array(xs, dtype=np.float64)
        if pop.shape != (self.popsize, self.dim):  # pragma: no cover - pycma contract
            raise LocalProtocolError(f"pycma returned shape {pop.shape}")
        self._pending_list = xs
        self._pending = pop
        return pop.copy()

    def tell(self, candidates: np.ndarray, fitness: np.ndarray) -> dict[str, float]:
        fit = _check_tell(self._pending, candidates, fitness)
        assert self._pending_list is not None
        # pycma minimises; check_points: clip the injected rows' steps (module doc)
        clip = list(range(self._injected_last)) or None
        with warnings.catch_warnings():
            if _InjectionWarning is not None:
                warnings.simplefilter("ignore", _InjectionWarning)
            self._es.tell(self._pending_list, (-fit).tolist(), check_points=clip)
        self._pending_list = None
        self._pending = None
        reset = restarted = 0.0
        flags = tuple(sorted(self._es.stop()))
        if flags and self.restarts == Restarts.IPOP:
            self._restart(flags)
            restarted = 1.0
        elif not self._es.sigma >= SIGMA_FLOOR:  # also catches NaN
            self._es.sigma = self.sigma0
            reset = 1.0
        return {
            "sigma": float(self._es.sigma),
            "best_fitness": float(fit.max()),
            "injected": float(self._injected_last),
            "sigma_reset": reset,
            "stop_flags": float(len(flags)),
            "restarted": restarted,
            "restarts": float(self.restart_count),
            "popsize": float(self.popsize),
        }

    def inject(self, x: np.ndarray) -> None:
        """Queue a migrant: it is the first row(s) of the next *fresh* ask."""
        self._queued.append(_check_point(x, self.dim, "injected point"))

    def adopt(self, x: np.ndarray) -> None:
        """Move the distribution's mean to ``x``, keeping sigma, covariance and evolution paths.

        Applied at the next fresh ask. Unlike ``inject`` (one clipped sample among popsize), this
        moves the whole search to a migrant that proved clearly better."""
        self._adopt = _check_point(x, self.dim, "adopted point")

    @property
    def sigma(self) -> float:
        return float(self._es.sigma)

    @property
    def mean(self) -> np.ndarray:
        return np.array(self._es.mean, dtype=np.float64)

    def settings(self) -> dict[str, float | int | str]:
        return {"sigma0": self.sigma0, "popsize": self.popsize, "restarts": self.restarts}

    def to_state(self) -> bytes:
        return _dump(self)


class SepCMAES(CMAES):
    """Separable CMA-ES: pycma with a diagonal covariance, linear in the dimension (module doc)."""

    algorithm = Algorithm.SEP_CMAES
    extra_options = {"CMA_diagonal": True}


# --------------------------------------------------------------------------------------------------
# OpenAI-ES


class OpenAIES:
    """OpenAI-ES (Salimans et al. 2017): antithetic Gaussian noise, centred ranks, Adam ascent.

    ``sigma`` is fixed. Candidates are ``theta + sigma*eps`` (first half) then
    ``theta - sigma*eps`` (second half), ``eps`` drawn from the ``rng`` given to :meth:`ask`.
    """

    algorithm = Algorithm.OPENAI_ES
    restart_count = 0  # never restarted (the Optimizer protocol's restart fields)
    last_stop: tuple[str, ...] = ()
    beta1 = 0.9
    beta2 = 0.999
    adam_eps = 1e-8

    def __init__(self, dim: int, *, sigma: float, popsize: int, seed: int, x0: np.ndarray,
                 lr: float = 0.03, weight_decay: float = 0.0) -> None:
        self.dim = dim
        self.popsize = popsize
        self.sigma0 = float(sigma)
        self.seed = seed  # reported only: all noise comes from the rng passed to ask
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.theta = np.array(x0, dtype=np.float64)
        self.m = np.zeros(dim)
        self.v = np.zeros(dim)
        self.t = 0
        self._eps: np.ndarray | None = None
        self._pending: np.ndarray | None = None

    def ask(self, rng: np.random.Generator) -> np.ndarray:
        if self._pending is not None:
            return self._pending.copy()
        if not isinstance(rng, np.random.Generator):
            raise LocalProtocolError(f"ask needs a numpy.random.Generator, got {type(rng).__name__}")
        eps = rng.standard_normal((self.popsize // 2, self.dim))
        self._eps = eps
        self._pending = np.concatenate([self.theta + self.sigma0 * eps, self.theta - self.sigma0 * eps])
        return self._pending.copy()

    def tell(self, candidates: np.ndarray, fitness: np.ndarray) -> dict[str, float]:
        fit = _check_tell(self._pending, candidates, fitness)
        assert self._eps is not None
        w = _centred_ranks(fit)
        half = self.popsize // 2
        # sum_i w_i * eps_i with eps_i = +eps_j (first half) and -eps_j (second half)
        g = (w[:half] - w[half:]) @ self._eps / (self.popsize * self.sigma0)
        if self.weight_decay:
            g = g - self.weight_decay * self.theta
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * g
        self.v = self.beta2 * self.v + (1 - self.beta2) * g * g
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        self.theta = self.theta + self.lr * m_hat / (np.sqrt(v_hat) + self.adam_eps)  # ascent
        self._eps = None
        self._pending = None
        return {
            "sigma": self.sigma0,
            "grad_norm": float(np.linalg.norm(g)),
            "best_fitness": float(fit.max()),
        }

    def inject(self, x: np.ndarray) -> None:
        """The migrant replaces the centre: ``theta = x``; Adam moments are kept.

        A population already asked but not told keeps its candidates; its gradient step is then
        applied at the new centre.
        """
        self.theta = _check_point(x, self.dim, "injected point")

    def adopt(self, x: np.ndarray) -> None:
        """For OpenAI-ES the same as ``inject``: the centre moves to ``x``."""
        self.inject(x)

    @property
    def sigma(self) -> float:
        return self.sigma0

    @property
    def mean(self) -> np.ndarray:
        return self.theta.copy()

    def settings(self) -> dict[str, float | int | str]:
        return {"sigma0": self.sigma0, "popsize": self.popsize, "lr": self.lr}

    def to_state(self) -> bytes:
        return _dump(self)


def _centred_ranks(fitness: np.ndarray) -> np.ndarray:
    """Ranks (0 = lowest fitness) mapped linearly onto [-0.5, 0.5]; ties broken by position."""
    n = len(fitness)
    ranks = np.empty(n, dtype=np.float64)
    ranks[np.argsort(fitness, kind="stable")] = np.arange(n, dtype=np.float64)
    return ranks / (n - 1) - 0.5


# --------------------------------------------------------------------------------------------------
# construction and checkpoints


def _bad(field: str, value: object, rule: str, fix: str) -> ConfigError:
    return ConfigError(f"config error: {field} = {value!r}, {rule}; {fix}")


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def make_optimizer(algorithm: str, dim: int, *, sigma: float, popsize: int | None, seed: int,
                   x0: np.ndarray | None = None, lr: float = 0.03, restarts: str = Restarts.IPOP) -> Optimizer:
    """Build a fresh optimizer; bad inputs raise :class:`ConfigError` naming field, value, rule, fix."""
    if algorithm not in ALGORITHMS:
        raise _bad("optimizer.algorithm", algorithm, "must be one of " + " | ".join(ALGORITHMS),
                   "use one of " + ", ".join(f'"{a}"' for a in ALGORITHMS))
    if not _is_int(dim) or dim < 1:
        raise _bad("optimizer.dim", dim, "must be an integer >= 1", "check the problem's parameter dimension")
    dim = int(dim)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not math.isfinite(sigma) or sigma <= 0:
        raise _bad("optimizer.sigma", sigma, "must be a finite number > 0", "use e.g. sigma = 0.5")
    if popsize is None:
        popsize = default_popsize(dim)
        if algorithm == Algorithm.OPENAI_ES:
            popsize += popsize % 2
    elif not _is_int(popsize) or popsize < 4:
        raise _bad("optimizer.popsize", popsize, "must be an integer >= 4",
                   "use e.g. popsize = 32, or leave it unset for the default 4 + 3 ln(dim)")
    popsize = int(popsize)
    if algorithm == Algorithm.OPENAI_ES and popsize % 2:
        raise _bad("optimizer.popsize", popsize,
                   "must be even for openai-es (antithetic sampling evaluates +eps/-eps pairs)",
                   f"use popsize = {popsize + 1}")
    if not _is_int(seed) or seed < 0:
        raise _bad("optimizer.seed", seed, "must be an integer >= 0", "use e.g. seed = 0")
    if x0 is None:
        start = np.zeros(dim)
    else:
        start = np.array(x0, dtype=np.float64)
        if start.shape != (dim,) or not np.all(np.isfinite(start)):
            raise _bad("optimizer.x0", f"array of shape {start.shape}",
                       f"must be a finite vector of shape ({dim},)", "pass a matching x0 or none (zeros)")
    if restarts not in RESTARTS:
        raise _bad("island.restarts", restarts, "must be one of " + " | ".join(Restarts),
                   'use "ipop" (restart a stalled CMA-ES with twice the population) or "off"')
    if algorithm in (Algorithm.CMAES, Algorithm.SEP_CMAES):
        cls = SepCMAES if algorithm == Algorithm.SEP_CMAES else CMAES
        return cls(dim, sigma=float(sigma), popsize=popsize, seed=int(seed), x0=start, restarts=restarts)
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) \
            or not math.isfinite(lr) or lr <= 0:
        raise _bad("optimizer.lr", lr, "must be a finite number > 0", "use e.g. lr = 0.03")
    return OpenAIES(dim, sigma=float(sigma), popsize=popsize, seed=int(seed), x0=start, lr=float(lr))


def _dump(opt: Optimizer) -> bytes:
    return pickle.dumps({"magic": _STATE_MAGIC, "version": _STATE_VERSION, "optimizer": opt},
                        protocol=pickle.HIGHEST_PROTOCOL)


def from_state(blob: bytes) -> Optimizer:
    """Inverse of ``to_state``. Local checkpoints only: this unpickles (never feed it peer bytes)."""
    try:
        data = pickle.loads(blob)
    except Exception as exc:  # pickle raises many types on corrupt input
        raise CheckpointError(f"optimizer state is unreadable: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict) or data.get("magic") != _STATE_MAGIC:
        raise CheckpointError("optimizer state is not a gaia-p2p optimizer checkpoint")
    if data.get("version") != _STATE_VERSION:
        raise CheckpointError(f"optimizer state version {data.get('version')!r} is not {_STATE_VERSION}")
    opt = data.get("optimizer")
    if not isinstance(opt, (CMAES, OpenAIES)):
        raise CheckpointError(f"optimizer state holds {type(opt).__name__}, not an optimizer")
    return opt
