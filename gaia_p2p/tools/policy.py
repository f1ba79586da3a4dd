"""Load a trained policy for ``gaia-node replay`` / ``gaia-node evaluate``.

Sources (exactly one):
  --data-dir DIR      the checkpoint of a node's data dir (``DIR/checkpoint.msgpack``)
  --checkpoint FILE   a checkpoint file (also a moved-aside ``checkpoint.msgpack.old0``)
  --elite FILE        one elite as encoded by ``core.codec.encode_elite`` (the gossiped wire format);
                      it carries no architecture, so ``--hidden`` gives it (default 16)

A checkpoint holds ``island.best_params`` (little-endian float64 bytes) and ``problem`` (the
canonical problem config, ``policy.sizes`` for LunarLander). An elite's problem is recognised by its
experiment id (a test function of its dimension, or LunarLander with ``--hidden``); failing that, a
dimension that fits ``--hidden`` is taken as LunarLander.

Bad input raises :class:`ConfigError` with a one-line message (the CLI prints it and exits 2).
Imports nothing heavy at module level (the CLI builds every parser on each run): numpy and
msgpack are imported when a file is loaded.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_p2p.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

LUNAR_OBS_DIM = 8
LUNAR_N_ACTIONS = 4
DEFAULT_MAX_STEPS = 1000
# A checkpoint is a few hundred KB at most for sane dimensions; refuse to slurp anything huge.
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class LoadedPolicy:
    params: np.ndarray  # (P,) float64
    problem: str  # "lunarlander" | "sphere" | "rastrigin" | "rosenbrock"
    hidden: tuple[int, ...]  # lunarlander only, else ()
    max_steps: int
    source: str  # human description: "checkpoint /x/checkpoint.msgpack (generation 30)"
    generation: int | None = None
    fitness: float | None = None  # the best fitness recorded with it (checkpoint / elite claim)

    @property
    def is_lunar(self) -> bool:
        return self.problem == "lunarlander"

    def describe(self) -> str:
        if self.is_lunar:
            sizes = "-".join(str(s) for s in (LUNAR_OBS_DIM, *self.hidden, LUNAR_N_ACTIONS))
            return f"{self.source}: lunarlander MLP {sizes}, {self.params.size} params"
        return f"{self.source}: {self.problem}, dim {self.params.size}"


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 16 or 32,32")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: hidden layer sizes must be >= 1, e.g. 16 or 32,32")
    return values


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", metavar="DIR", help="a node's data dir: use its checkpoint's best policy")
    src.add_argument("--checkpoint", metavar="FILE", help="a checkpoint file (checkpoint.msgpack)")
    src.add_argument("--elite", metavar="FILE", help="an elite in the wire format (msgpack, gaia-migration-v1)")
    p.add_argument("--hidden", type=parse_hidden, default=(16,), metavar="N[,N...]",
                   help="--elite only: hidden layer sizes of the policy (default 16)")


def load_from_args(a: argparse.Namespace) -> LoadedPolicy:
    if a.elite:
        return load_elite(Path(a.elite).expanduser(), a.hidden)
    if a.checkpoint:
        return load_checkpoint(Path(a.checkpoint).expanduser())
    from gaia_p2p.store import CHECKPOINT_FILE

    d = Path(a.data_dir).expanduser()
    if not d.is_dir():
        raise ConfigError(f"--data-dir {d}: no such directory; pass the data dir of a node that has run")
    f = d / CHECKPOINT_FILE
    if not f.exists():
        raise ConfigError(f"--data-dir {d}: no {CHECKPOINT_FILE} there yet; run 'gaia-node start --data-dir {d}' "
                          f"until it writes a checkpoint, or pass --checkpoint FILE")
    return load_checkpoint(f)


def _read(path: Path, kind: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{kind} {path}: {size} bytes, too large for a {kind} file")
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{kind} {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{kind} {path}: is a directory, expected a file") from None
    except OSError as e:
        raise ConfigError(f"{kind} {path}: cannot read it ({e.strerror})") from None


def load_checkpoint(path: Path) -> LoadedPolicy:
    import msgpack
    import numpy as np

    from gaia_p2p.store import CHECKPOINT_MAGIC, CHECKPOINT_VERSION

    blob = _read(path, "checkpoint")
    try:
        data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises many types on garbage; all mean "corrupt"
        raise ConfigError(f"checkpoint {path}: corrupt, not msgpack ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("magic") != CHECKPOINT_MAGIC:
        raise ConfigError(f"checkpoint {path}: not a gaia-node checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"checkpoint {path}: version {data.get('version')!r}, this gaia-node reads "
                          f"version {CHECKPOINT_VERSION}")
    island, problem = data.get("island"), data.get("problem")
    if not isinstance(island, dict) or not isinstance(problem, dict):
        raise ConfigError(f"checkpoint {path}: incomplete (no island or problem section)")
    bp = island.get("best_params")
    generation = island.get("generation")
    if bp is None:
        raise ConfigError(f"checkpoint {path}: no best policy yet (generation {generation}); let the node run "
                          f"longer")
    if not isinstance(bp, bytes) or len(bp) % 8 or not bp:
        raise ConfigError(f"checkpoint {path}: corrupt island.best_params")
    params = np.frombuffer(bp, dtype="<f8").astype(np.float64)
    if not np.isfinite(params).all():
        raise ConfigError(f"checkpoint {path}: island.best_params contains NaN or inf")
    fitness = island.get("best_fitness")
    fitness = float(fitness) if isinstance(fitness, int | float) and np.isfinite(fitness) else None
    gen = int(generation) if isinstance(generation, int) else None
    source = f"checkpoint {path} (generation {gen})"
    keeper = data["pool"].get("keeper") if isinstance(data.get("pool"), dict) else None
    if isinstance(keeper, str) and keeper != data.get("peer_id"):  # a pool member that kept no resident
        source += f", not its pool's best: that is kept by ..{keeper[-8:]}, whose checkpoint holds it"
    name = problem.get("problem")
    from gaia_p2p.core.experiment import TEST_FUNCTIONS

    if name in TEST_FUNCTIONS:
        if params.size != problem.get("dim"):
            raise ConfigError(f"checkpoint {path}: best_params has {params.size} values, problem dim is "
                              f"{problem.get('dim')!r}; the checkpoint is corrupt")
        return LoadedPolicy(params, str(name), (), DEFAULT_MAX_STEPS, source, gen, fitness)
    if name != "lunarlander":
        raise ConfigError(f"checkpoint {path}: unknown problem {name!r}")
    policy = problem.get("policy")
    sizes = policy.get("sizes") if isinstance(policy, dict) else None
    if (not isinstance(sizes, list) or len(sizes) < 2 or not all(isinstance(s, int) and s >= 1 for s in sizes)
            or sizes[0] != LUNAR_OBS_DIM or sizes[-1] != LUNAR_N_ACTIONS):
        raise ConfigError(f"checkpoint {path}: problem.policy.sizes = {sizes!r}, expected [8, ..., 4]")
    hidden = tuple(sizes[1:-1])
    _check_lunar_dim(params.size, hidden, f"checkpoint {path}")
    max_steps = problem.get("max_steps", DEFAULT_MAX_STEPS)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(f"checkpoint {path}: problem.max_steps = {max_steps!r}, must be an int >= 1")
    return LoadedPolicy(params, "lunarlander", hidden, max_steps, source, gen, fitness)


def load_elite(path: Path, hidden: tuple[int, ...]) -> LoadedPolicy:
    import numpy as np

    from gaia_p2p.core import codec
    from gaia_p2p.core.experiment import TEST_FUNCTIONS, ProblemConfig, experiment_id
    from gaia_p2p.errors import RemoteProtocolError

    blob = _read(path, "elite")
    try:
        elite = codec.decode_elite(blob, fetched=True)  # the largest limit: a file, not gossip
    except RemoteProtocolError as e:
        raise ConfigError(f"elite {path}: not a valid elite ({str(e).rstrip(': ')})") from None
    params = elite.params.astype(np.float64)
    source = f"elite {path} (generation {elite.generation})"
    for name in TEST_FUNCTIONS:
        if elite.experiment_id == experiment_id(ProblemConfig(name=name, dim=params.size)):
            return LoadedPolicy(params, name, (), DEFAULT_MAX_STEPS, source, elite.generation, elite.fitness)
    _check_lunar_dim(params.size, hidden, f"elite {path}", hint=" pass --hidden with the policy's layer sizes")
    # Its experiment id may also pin max_steps (the registered 1000 unless configured otherwise).
    return LoadedPolicy(params, "lunarlander", hidden, DEFAULT_MAX_STEPS, source, elite.generation, elite.fitness)


def _check_lunar_dim(n: int, hidden: tuple[int, ...], what: str, hint: str = "") -> None:
    sizes = (LUNAR_OBS_DIM, *hidden, LUNAR_N_ACTIONS)
    need = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    if n != need:
        arch = "-".join(map(str, sizes))
        raise ConfigError(f"{what}: {n} parameters, but an MLP {arch} has {need};{hint or ' the file is corrupt'}")


def require_lunar(pol: LoadedPolicy, command: str) -> None:
    if not pol.is_lunar:
        raise ConfigError(f"{pol.source} is a {pol.problem} point, not a LunarLander policy; '{command}' needs "
                          f"a lunarlander checkpoint or elite")

