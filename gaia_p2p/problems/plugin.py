"""Your own problem: the ``Problem`` protocol and how a node finds one (docs/PROBLEMS.md).

A problem is named on the command line as ``--problem package.module:name`` (imported from the
node's Python path) or by the name of an entry point in the ``gaia_p2p.problems`` group of an
installed package (``--problem noisy-quadratic``). ``name`` is a ``Problem`` object, or a class or
function that, called with no arguments, returns one.

Only code installed on this machine is ever run: peers send parameter vectors, never code, and
the experiment id (which includes the problem's package, version and ``config()``) only decides
which peers' vectors a node looks at.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gaia_p2p.core.codec import MAX_DIM  # the wire format's
from gaia_p2p.core.experiment import PROBLEMS, PluginInfo
from gaia_p2p.errors import ConfigError, EvaluationError

ENTRY_POINT_GROUP = "gaia_p2p.problems"
MAX_CONFIG_ENTRIES = 32
_LABEL = re.compile(r"[\x20-\x7e]{1,64}")
_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*")


@runtime_checkable
class Problem(Protocol):
    """What a node needs from a problem. Fitness: higher is better.

    ``name`` and ``version`` (printable, 1-64 characters) go into the experiment id: bump
    ``version`` whenever fitness changes, so that nodes of old and new code never mix.
    ``deterministic``: fitness does not depend on ``seeds`` (claims of peers are then checked
    exactly and a peer whose claims do not reproduce is banned). ``target``: the default
    ``target_fitness`` (None: none).
    """

    name: str
    version: str
    dim: int
    deterministic: bool
    target: float | None

    def evaluate(self, X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
        """Fitness ``(n,)`` of each row of ``X (n, dim)`` float64, on the episode seeds ``seeds``
        (the same for every row; a noisy problem draws its noise from them)."""
        ...


def _entry_points() -> Any:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _bad(ref: str, why: str) -> ConfigError:
    return ConfigError(f"config error: problem.name = {ref!r}: {why}; pass --problem with a built-in problem, "
                       f"gym:<EnvId>, torch:package.module:factory or your Problem (package.module:name; "
                       f"docs/PROBLEMS.md)")


def import_ref(ref: str, bad: Callable[[str], ConfigError]) -> tuple[Any, str, str]:
    """The object ``package.module:name`` names, and the (distribution, version) that provides it
    ("" when none); ``bad(why)`` makes the error when it cannot be found."""
    if not _REF.fullmatch(ref):
        raise bad("is not package.module:name")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise bad(f"cannot import {module_name} ({' '.join(str(e).split())}); install the package "
                  f"that provides it or put it on PYTHONPATH") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise bad(f"module {module_name} has no {attr}")
        obj = getattr(obj, part)
    dists = importlib.metadata.packages_distributions().get(module_name.split(".")[0], [])
    if dists:
        return obj, dists[0], importlib.metadata.version(dists[0])
    return obj, "", ""


def _find(ref: str) -> tuple[Any, str, str]:
    """The object ``ref`` names, and the (distribution, version) that provides it ("" when none)."""
    if ":" in ref:
        return import_ref(ref, functools.partial(_bad, ref))
    matches = [ep for ep in _entry_points() if ep.name == ref]
    if not matches:
        known = sorted({ep.name for ep in _entry_points()})
        close = difflib.get_close_matches(ref, [*PROBLEMS, *known], n=1)
        raise _bad(ref, f"{'did you mean ' + close[0] + '? ' if close else ''}not a built-in problem "
                        f"({', '.join(PROBLEMS)}) and no installed package declares an entry point {ref!r} "
                        f"in [project.entry-points.{ENTRY_POINT_GROUP}] (installed: {', '.join(known) or 'none'})")
    ep = matches[0]
    try:
        obj = ep.load()
    except (ImportError, AttributeError) as e:
        raise _bad(ref, f"entry point {ep.value} does not load ({type(e).__name__}: {e})") from None
    dist = getattr(ep, "dist", None)
    return obj, (dist.name if dist is not None else ""), (dist.version if dist is not None else "")


def plain_value(key: str, value: Any) -> Any:
    ok = (isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value))
          or (isinstance(value, str) and len(value) <= 256))
    if not ok:
        raise ValueError(f"config()[{key!r}] = {value!r} is not a bool, int, finite float or short string")
    return value


@functools.lru_cache(maxsize=4)  # a worker evaluates one problem; a few for tests and tools
def load(ref: str) -> tuple[Any, PluginInfo]:
    """The Problem ``ref`` names, checked, and what of it goes into the experiment id."""
    obj, dist, dist_version = _find(ref)
    problem = obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "evaluate")) else obj
    try:
        name, version = getattr(problem, "name"), getattr(problem, "version")
        if not (isinstance(name, str) and _LABEL.fullmatch(name)):
            raise ValueError(f"name {name!r} must be 1-64 printable characters")
        if not (isinstance(version, str) and _LABEL.fullmatch(version)):
            raise ValueError(f"version {version!r} must be 1-64 printable characters")
        dim = getattr(problem, "dim")
        if type(dim) is not int or not 1 <= dim <= MAX_DIM:
            raise ValueError(f"dim {dim!r} must be an int in 1..{MAX_DIM}")
        deterministic = getattr(problem, "deterministic", False)
        if type(deterministic) is not bool:
            raise ValueError(f"deterministic {deterministic!r} must be a bool")
        target = getattr(problem, "target", None)
        if target is not None and not (isinstance(target, (int, float)) and math.isfinite(target)):
            raise ValueError(f"target {target!r} must be None or a finite number")
        if not callable(getattr(problem, "evaluate", None)):
            raise ValueError("it has no evaluate(X, seeds) method")
        extra = problem.config() if callable(getattr(problem, "config", None)) else {}
        if not isinstance(extra, Mapping) or len(extra) > MAX_CONFIG_ENTRIES:
            raise ValueError(f"config() must return a dict of at most {MAX_CONFIG_ENTRIES} entries")
        config = tuple(sorted((str(k), plain_value(str(k), v)) for k, v in extra.items()))
    except (AttributeError, ValueError) as e:
        raise _bad(ref, f"is not a Problem: {e}") from None
    info = PluginInfo(ref=ref, dist=dist, dist_version=dist_version, name=name, version=version, dim=dim,
                      deterministic=deterministic, target=None if target is None else float(target),
                      config=config)
    return problem, info


def evaluate(info: PluginInfo, X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    """The user's evaluate, its answer checked: ``(n,)`` finite floats, or an EvaluationError."""
    problem, _ = load(info.ref)
    try:
        out = np.asarray(problem.evaluate(X, tuple(seeds)), dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise EvaluationError(f"problem {info.ref!r}: evaluate returned no float array ({e})") from e
    if out.shape != (X.shape[0],):
        raise EvaluationError(f"problem {info.ref!r}: evaluate returned shape {out.shape}, needs ({X.shape[0]},)")
    if not np.all(np.isfinite(out)):
        raise EvaluationError(f"problem {info.ref!r}: evaluate returned non-finite fitness")
    return out
