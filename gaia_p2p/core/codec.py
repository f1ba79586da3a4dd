"""msgpack <-> :class:`Elite`: the wire format of ``protocols/gaia-migration-v1.md``.

Pure (stdlib, numpy, msgpack). ``encode_elite`` checks our own elite and raises
:class:`LocalProtocolError` on a bad one (our bug). ``decode_elite`` takes untrusted bytes and raises
only :class:`RemoteProtocolError`, whose ``reason`` is one of :data:`REASONS` (stable: the shell turns
it into counters and log fields); the bounded unpacking and the shared field rules are core/wire.py's.
Spec, this module and ``protocols/vectors/migration-v1.json`` change together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgpack
import numpy as np

from gaia_p2p.core import wire
from gaia_p2p.core.types import Announcement, Elite
from gaia_p2p.core.wire import Kind, Reason
from gaia_p2p.errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
#: Largest encoded elite (bytes) a receiver unpacks off gossip; checked before unpacking.
MAX_ELITE_BYTES = wire.LIMITS[Kind.ELITE].max_bytes
#: Largest encoded elite an elite fetch (gaia-elite-v1) answers with.
MAX_FETCHED_ELITE_BYTES = wire.LIMITS[Kind.FETCHED_ELITE].max_bytes
#: Most evaluation seeds one elite may carry.
MAX_SEEDS = 64
#: Most entries in the ``cfg`` (optimizer settings) map.
MAX_SETTINGS = wire.MAX_SETTINGS
#: Longest ``algo``, ``cfg`` key or ``cfg`` string value, in characters (printable ASCII only).
MAX_STR = wire.MAX_STR
#: Largest parameter dimension on the wire (1 MiB of float32). Gossip's size limit binds first: an
#: elite of more than MAX_PUBLISHABLE_DIM parameters travels announced and fetched (see ``announces``).
MAX_DIM = 262_144

MAX_SEED = 2**32 - 1
MAX_GENERATION = 2**63 - 1
MIN_CFG_INT = wire.MIN_INT64
MAX_CFG_INT = wire.MAX_INT64

# Reason codes of RemoteProtocolError raised by decode_elite, in the order the checks run.
OVERSIZE = Reason.OVERSIZE
MALFORMED = Reason.MALFORMED
BAD_VERSION = Reason.BAD_VERSION
BAD_FIELD = Reason.BAD_FIELD
WRONG_EXPERIMENT = Reason.WRONG_EXPERIMENT
WRONG_DIMENSION = Reason.WRONG_DIMENSION
NON_FINITE = Reason.NON_FINITE
REASONS = (OVERSIZE, MALFORMED, BAD_VERSION, BAD_FIELD, WRONG_EXPERIMENT, WRONG_DIMENSION, NON_FINITE)
#: Default size above which a sender announces its elite instead of gossiping it (migration.gossip_max_bytes).
GOSSIP_MAX_BYTES = 16 * 1024

_PARAMS_DTYPE = np.dtype("<f4")


# --------------------------------------------------------------------------------------------------
# sizes


def max_elite_bytes(dim: int) -> int:
    """The largest canonical encoding of a valid elite with ``dim`` parameters: every other field at
    its limit (64 seeds of 2**32-1, generation 2**63-1, a 64-character algorithm, 16 cfg entries of
    64-character keys and values). Any elite a node publishes is at most this long."""
    settings = {f"{i:02d}".ljust(MAX_STR, "k"): "v" * MAX_STR for i in range(MAX_SETTINGS)}
    payload = {"v": VERSION, "exp": "0" * 32, "gen": MAX_GENERATION, "fit": -1.5, "seeds": [MAX_SEED] * MAX_SEEDS,
               "dim": int(dim), "params": bytes(4 * int(dim)), "algo": "a" * MAX_STR, "cfg": settings}
    return len(msgpack.packb(payload, use_bin_type=True, use_single_float=False))


def _largest_publishable_dim() -> int:
    # Above 16,384 parameters `params` is a bin 32 (a 5-byte header) and `dim` a uint 16 up to 65,535:
    # the size grows by exactly 4 bytes a parameter there.
    fixed = max_elite_bytes(16384) - 4 * 16384
    return min(MAX_DIM, (MAX_ELITE_BYTES - fixed) // 4)


#: The most parameters a gossiped elite can have and still fit in MAX_ELITE_BYTES whatever its other
#: fields (64,884: `max_elite_bytes(dim)` is 4 * dim + 2,606 bytes above 16,384 parameters). Larger
#: elites are always announced (``announces``); a config with more than MAX_DIM parameters is refused
#: at start (gaia_p2p/config.py), never found out at the first publish.
MAX_PUBLISHABLE_DIM = _largest_publishable_dim()


def announces(encoded_bytes: int, gossip_max_bytes: int = GOSSIP_MAX_BYTES) -> bool:
    """Whether an elite of that encoded size travels as an announcement (its parameters fetched over
    gaia-elite-v1 by the receivers that want them) rather than as a gossip copy: every member of a
    gossipsub mesh receives a copy from several peers, which for a 400 KB elite is megabytes a
    publish; an announcement is ~80 bytes and the parameters then cross once, to whoever asks."""
    return encoded_bytes > min(gossip_max_bytes, MAX_ELITE_BYTES)


# --------------------------------------------------------------------------------------------------
# encode


def encode_elite(e: Elite, *, max_bytes: int = MAX_FETCHED_ELITE_BYTES) -> bytes:
    """Canonical msgpack encoding of ``e``; raises LocalProtocolError if ``e`` breaks the spec or
    its encoding exceeds ``max_bytes`` (whether it is gossiped or announced: ``announces``)."""
    if not isinstance(e, Elite):
        raise LocalProtocolError(f"encode_elite: expected Elite, got {type(e).__name__}")
    exp = e.experiment_id
    if not wire.is_experiment_id(exp):
        raise LocalProtocolError(f"encode_elite: experiment_id = {exp!r}, must be 32 lowercase hex chars")
    gen = _local_int(e.generation, "generation", 0, MAX_GENERATION)
    fit = _local_float(e.fitness, "fitness")
    if not math.isfinite(fit):
        raise LocalProtocolError(f"encode_elite: fitness = {fit!r}, must be finite")
    try:
        seeds_in = tuple(e.seeds)
    except TypeError:
        raise LocalProtocolError(f"encode_elite: seeds = {e.seeds!r}, must be a sequence of ints") from None
    if len(seeds_in) > MAX_SEEDS:
        raise LocalProtocolError(f"encode_elite: {len(seeds_in)} seeds, must be <= {MAX_SEEDS}")
    seeds = [_local_int(s, "seeds[]", 0, MAX_SEED) for s in seeds_in]
    p = e.params
    if not isinstance(p, np.ndarray) or p.ndim != 1 or p.dtype.newbyteorder("=") != np.float32:
        desc = f"{type(p).__name__} {getattr(p, 'dtype', '')} {getattr(p, 'shape', '')}".strip()
        raise LocalProtocolError(f"encode_elite: params is {desc}, must be a 1-D float32 ndarray")
    dim = int(p.shape[0])
    if not 1 <= dim <= MAX_DIM:
        raise LocalProtocolError(f"encode_elite: dim = {dim}, must be in [1, {MAX_DIM}]")
    if not np.isfinite(p).all():
        raise LocalProtocolError("encode_elite: params contain NaN or inf")
    algo = e.algorithm
    if not wire.is_printable(algo, min_len=1):
        raise LocalProtocolError(
            f"encode_elite: algorithm = {algo!r}, must be 1..{MAX_STR} printable ASCII chars"
        )
    cfg = _local_settings(e.settings)

    payload = {
        "v": VERSION,
        "exp": exp,
        "gen": gen,
        "fit": fit,
        "seeds": seeds,
        "dim": dim,
        "params": p.astype(_PARAMS_DTYPE, copy=False).tobytes(),
        "algo": algo,
        "cfg": cfg,
    }
    data = msgpack.packb(payload, use_bin_type=True, use_single_float=False)
    if len(data) > max_bytes:
        raise LocalProtocolError(f"encode_elite: encoding is {len(data)} bytes, must be <= {max_bytes}; reduce dim")
    return data


def _local_int(x: object, name: str, lo: int, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise LocalProtocolError(f"encode_elite: {name} = {x!r}, must be an int")
    v = int(x)
    if not lo <= v <= hi:
        raise LocalProtocolError(f"encode_elite: {name} = {v}, must be in [{lo}, {hi}]")
    return v


def _local_float(x: object, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        raise LocalProtocolError(f"encode_elite: {name} = {x!r}, must be a float")
    return float(x)


def _local_settings(settings: object) -> dict[str, int | float | str]:
    if not isinstance(settings, Mapping):
        raise LocalProtocolError(f"encode_elite: settings = {settings!r}, must be a mapping")
    if len(settings) > MAX_SETTINGS:
        raise LocalProtocolError(f"encode_elite: {len(settings)} settings, must be <= {MAX_SETTINGS}")
    out: dict[str, int | float | str] = {}
    for key in sorted(settings, key=_sort_key):
        if not wire.is_printable(key, min_len=1):
            raise LocalProtocolError(
                f"encode_elite: settings key {key!r} must be 1..{MAX_STR} printable ASCII chars"
            )
        val = settings[key]
        if isinstance(val, str):
            if not wire.is_printable(val, min_len=0):
                raise LocalProtocolError(
                    f"encode_elite: settings[{key!r}] = {val!r}, must be <= {MAX_STR} printable ASCII chars"
                )
            out[key] = val
        elif isinstance(val, bool):
            raise LocalProtocolError(f"encode_elite: settings[{key!r}] = {val!r}, bool is not allowed")
        elif isinstance(val, int | np.integer):
            out[key] = _local_int(val, f"settings[{key!r}]", MIN_CFG_INT, MAX_CFG_INT)
        elif isinstance(val, float | np.floating):
            f = float(val)
            if not math.isfinite(f):
                raise LocalProtocolError(f"encode_elite: settings[{key!r}] = {f!r}, must be finite")
            out[key] = f
        else:
            raise LocalProtocolError(
                f"encode_elite: settings[{key!r}] = {val!r}, must be int, float or str"
            )
    return out


def _sort_key(k: object) -> tuple[int, str]:
    # Non-str keys sort last; the loop then rejects them with a clear message.
    return (0, k) if isinstance(k, str) else (1, repr(k))


# --------------------------------------------------------------------------------------------------
# decode


def decode_elite(data: bytes, *, experiment_id: str | None = None, dim: int | None = None,
                 fetched: bool = False) -> Elite:
    """Parse and check one received elite (``fetched``: the one inside an elite response, whose size
    limit is MAX_FETCHED_ELITE_BYTES rather than gossip's MAX_ELITE_BYTES).

    ``experiment_id`` and ``dim``, when given, are what the receiver expects. Raises only
    RemoteProtocolError; its ``reason`` is the first failing check in :data:`REASONS` order.
    """
    obj = wire.decode(Kind.FETCHED_ELITE if fetched else Kind.ELITE, data)  # oversize, malformed
    wire.version(obj, VERSION)

    # Schema: every known field present, of the right type and in range (unknown keys ignored).
    exp = wire.experiment(obj)
    gen = wire.int_field(obj, "gen", 0, MAX_GENERATION)
    fit = wire.field(obj, "fit", float)
    seeds_raw = wire.field(obj, "seeds", list)
    if len(seeds_raw) > MAX_SEEDS:
        raise RemoteProtocolError(BAD_FIELD, f"{len(seeds_raw)} seeds > {MAX_SEEDS}")
    for s in seeds_raw:
        if type(s) is not int or not 0 <= s <= MAX_SEED:
            raise RemoteProtocolError(BAD_FIELD, f"seed {wire.short(s)}, must be an int in [0, {MAX_SEED}]")
    n_dim = wire.int_field(obj, "dim", 1, MAX_DIM)
    params_raw = wire.field(obj, "params", bytes)
    algo = wire.printable(wire.field(obj, "algo", str), "algo")
    cfg = wire.settings(wire.field(obj, "cfg", dict))  # a non-finite float here is a bad_field

    # Semantics.
    if experiment_id is not None and exp != experiment_id:
        raise RemoteProtocolError(WRONG_EXPERIMENT, f"exp = {exp}, expected {experiment_id}")
    if dim is not None and n_dim != dim:
        raise RemoteProtocolError(WRONG_DIMENSION, f"dim = {n_dim}, expected {dim}")
    params = wire.float32_vector(params_raw, "params", dim=n_dim)  # wrong_dimension, non_finite
    wire.finite(fit, "fit")

    return Elite(
        experiment_id=exp,
        generation=gen,
        fitness=fit,
        seeds=tuple(seeds_raw),
        params=params,
        algorithm=algo,
        settings=cfg,
    )


# --------------------------------------------------------------------------------------------------
# announcements of large elites


def encode_announcement(a: Announcement) -> bytes:
    """Canonical msgpack encoding of a large elite's announcement; LocalProtocolError if it breaks the spec."""
    if not wire.is_experiment_id(a.experiment_id):
        raise LocalProtocolError(f"encode_announcement: experiment_id = {a.experiment_id!r}")
    fit = float(a.fitness)
    if not math.isfinite(fit):
        raise LocalProtocolError(f"encode_announcement: fitness = {fit!r}, must be finite")
    payload = {"v": VERSION, "exp": a.experiment_id,
               "gen": _local_int(a.generation, "generation", 0, MAX_GENERATION), "fit": fit,
               "dim": _local_int(a.dim, "dim", 1, MAX_DIM),
               "size": _local_int(a.size, "size", 1, MAX_FETCHED_ELITE_BYTES)}
    return msgpack.packb(payload, use_bin_type=True, use_single_float=False)


def decode_announcement(data: bytes, *, experiment_id: str | None = None, dim: int | None = None) -> Announcement:
    """Parse and check one received announcement; raises only RemoteProtocolError (the elite's
    reason codes, in the same order)."""
    obj = wire.decode(Kind.ANNOUNCEMENT, data)  # oversize, malformed
    wire.version(obj, VERSION)
    exp = wire.experiment(obj)
    gen = wire.int_field(obj, "gen", 0, MAX_GENERATION)
    fit = wire.field(obj, "fit", float)
    n_dim = wire.int_field(obj, "dim", 1, MAX_DIM)
    size = wire.int_field(obj, "size", 1, MAX_FETCHED_ELITE_BYTES)
    if experiment_id is not None and exp != experiment_id:
        raise RemoteProtocolError(WRONG_EXPERIMENT, f"exp = {exp}, expected {experiment_id}")
    if dim is not None and n_dim != dim:
        raise RemoteProtocolError(WRONG_DIMENSION, f"dim = {n_dim}, expected {dim}")
    wire.finite(fit, "fit")
    return Announcement(experiment_id=exp, generation=gen, fitness=fit, dim=n_dim, size=size)
