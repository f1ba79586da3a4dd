"""Plain value types shared by the pure core, the codec and the shell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

Settings = Mapping[str, "float | int | str"]

# The optimizers an island can run (core/optimizer.py) and CMA-ES's restart modes. Here, not in
# core/optimizer.py, so that gaia_p2p.config (and so the CLI parser and --help) takes its choices
# from the one list without loading pycma.


class Algorithm(StrEnum):
    """The optimizers an island can run (core/optimizer.py); the name travels as an elite's ``algo``."""
    CMAES = "cmaes"
    SEP_CMAES = "sep-cmaes"
    OPENAI_ES = "openai-es"


class Restarts(StrEnum):
    """What a CMA-ES does when pycma's own stop criteria fire: restart with twice the population
    (IPOP, keeping the resident best), or nothing."""
    IPOP = "ipop"
    OFF = "off"


#: The values as plain strs: the choice lists of config.py and the CLI (argparse prints their repr).
ALGORITHMS = tuple(a.value for a in Algorithm)
RESTARTS = tuple(r.value for r in Restarts)


@dataclass(frozen=True, eq=False)
class Elite:
    """One individual as it travels between islands.

    ``fitness`` is the sender's *claim* (higher is better), measured on ``seeds``.
    ``params`` is a 1-D float32 array of length ``dim``.
    """

    experiment_id: str
    generation: int
    fitness: float
    seeds: tuple[int, ...]
    params: np.ndarray
    algorithm: str
    settings: Mapping[str, float | int | str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.params.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Elite):
            return NotImplemented
        return (
            self.experiment_id == other.experiment_id
            and self.generation == other.generation
            and (self.fitness == other.fitness or (self.fitness != self.fitness and other.fitness != other.fitness))
            and self.seeds == other.seeds
            and self.algorithm == other.algorithm
            and dict(self.settings) == dict(other.settings)
            and self.params.dtype == other.params.dtype
            and np.array_equal(self.params, other.params)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Announcement:
    """A large elite's announcement (gaia-migration-v1, "Large elites"): its claim and size only; a
    receiver that wants the parameters fetches them from the announcer over gaia-elite-v1."""

    experiment_id: str
    generation: int
    fitness: float
    dim: int
    size: int  # bytes of the encoded elite the announcer will answer a fetch with
