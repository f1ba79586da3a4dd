"""msgpack <-> :class:`Elite`: the wire format of ``protocols/gaia-migration-v1.md``.

Pure (stdlib, numpy, msgpack). ``encode_elite`` checks our own elite and raises
:class:`LocalProtocolError` on a bad one (our bug). ``decode_elite`` takes untrusted bytes and raises
only :class:`RemoteProtocolError`, whose ``reason`` is one of :data:`REASONS` (stable: the shell turns
it into counters and log fields). Spec, this module and ``protocols/vectors/migration-v1.json``
change together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from gaia_p2p.core.types import Elite
from gaia_p2p.errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
#: Largest encoded elite (bytes) a receiver unpacks at all; checked before unpacking.
MAX_ELITE_BYTES = 256 * 1024
#: Most evaluation seeds one elite may carry.
MAX_SEEDS = 64
#: Most entries in the ``cfg`` (optimizer settings) map.
MAX_SETTINGS = 16
#: Longest ``algo``, ``cfg`` key or ``cfg`` string value, in characters (printable ASCII only).
MAX_STR = 64
#: Largest parameter dimension on the wire. The size limit binds first: see MAX_PUBLISHABLE_DIM.
MAX_DIM = 65536

MAX_SEED = 2**32 - 1
MAX_GENERATION = 2**63 - 1
MIN_CFG_INT = -(2**63)
MAX_CFG_INT = 2**63 - 1

# Reason codes of RemoteProtocolError raised by decode_elite, in the order the checks run.
OVERSIZE = "oversize"
MALFORMED = "malformed"
BAD_VERSION = "bad_version"
BAD_FIELD = "bad_field"
WRONG_EXPERIMENT = "wrong_experiment"
WRONG_DIMENSION = "wrong_dimension"
NON_FINITE = "non_finite"
REASONS = (OVERSIZE, MALFORMED, BAD_VERSION, BAD_FIELD, WRONG_EXPERIMENT, WRONG_DIMENSION, NON_FINITE)

_EXP_RE = re.compile(r"[0-9a-f]{32}")
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
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


#: The most parameters an elite can have and still fit in MAX_ELITE_BYTES whatever its other fields
#: (64,884: `max_elite_bytes(dim)` is 4 * dim + 2,606 bytes above 16,384 parameters). A config whose
#: problem has more is refused at start (gaia_p2p/config.py), never found out at the first publish.
MAX_PUBLISHABLE_DIM = _largest_publishable_dim()


# --------------------------------------------------------------------------------------------------
# encode


def encode_elite(e: Elite) -> bytes:
    """Canonical msgpack encoding of ``e``; raises LocalProtocolError if ``e`` breaks the spec."""
    if not isinstance(e, Elite):
        raise LocalProtocolError(f"encode_elite: expected Elite, got {type(e).__name__}")
    exp = e.experiment_id
    if not (isinstance(exp, str) and _EXP_RE.fullmatch(exp)):
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
    if not _is_short_ascii(algo, min_len=1):
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
    if len(data) > MAX_ELITE_BYTES:
        raise LocalProtocolError(
            f"encode_elite: encoding is {len(data)} bytes, must be <= {MAX_ELITE_BYTES}; reduce dim"
        )
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
        if not _is_short_ascii(key, min_len=1):
            raise LocalProtocolError(
                f"encode_elite: settings key {key!r} must be 1..{MAX_STR} printable ASCII chars"
            )
        val = settings[key]
        if isinstance(val, str):
            if not _is_short_ascii(val, min_len=0):
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


def decode_elite(data: bytes, *, experiment_id: str | None = None, dim: int | None = None) -> Elite:
    """Parse and check one received elite.

    ``experiment_id`` and ``dim``, when given, are what the receiver expects. Raises only
    RemoteProtocolError; its ``reason`` is the first failing check in :data:`REASONS` order.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError(MALFORMED, f"expected bytes, got {type(data).__name__}")
    n = len(data) if not isinstance(data, memoryview) else data.nbytes
    if n > MAX_ELITE_BYTES:
        raise RemoteProtocolError(OVERSIZE, f"{n} bytes > {MAX_ELITE_BYTES}")
    try:
        obj = msgpack.unpackb(
            bytes(data),
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_pairs_hook,
            list_hook=_list_hook,
            ext_hook=_ext_hook,
            max_str_len=MAX_ELITE_BYTES,
            max_bin_len=MAX_ELITE_BYTES,
            max_array_len=MAX_ELITE_BYTES,
            max_map_len=MAX_ELITE_BYTES,
            max_ext_len=MAX_ELITE_BYTES,
        )
    except (msgpack.UnpackException, ValueError, TypeError, RecursionError, OverflowError) as exc:
        # FormatError, StackError, ExtraData, OutOfData, UnicodeDecodeError, our hooks' ValueError.
        raise RemoteProtocolError(MALFORMED, f"{type(exc).__name__}: {exc}"[:200]) from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(MALFORMED, f"top level is {type(obj).__name__}, must be a map")

    v = obj.get("v")
    if type(v) is not int or v != VERSION:
        raise RemoteProtocolError(BAD_VERSION, f"v = {_short(v)}, expected {VERSION}")

    # Schema: every known field present, of the right type and in range (unknown keys ignored).
    exp = _field(obj, "exp", str)
    if not _EXP_RE.fullmatch(exp):
        raise RemoteProtocolError(BAD_FIELD, f"exp = {_short(exp)}, must be 32 lowercase hex chars")
    gen = _int_field(obj, "gen", 0, MAX_GENERATION)
    fit = _field(obj, "fit", float)
    seeds_raw = _field(obj, "seeds", list)
    if len(seeds_raw) > MAX_SEEDS:
        raise RemoteProtocolError(BAD_FIELD, f"{len(seeds_raw)} seeds > {MAX_SEEDS}")
    for s in seeds_raw:
        if type(s) is not int or not 0 <= s <= MAX_SEED:
            raise RemoteProtocolError(BAD_FIELD, f"seed {_short(s)}, must be an int in [0, {MAX_SEED}]")
    n_dim = _int_field(obj, "dim", 1, MAX_DIM)
    params_raw = _field(obj, "params", bytes)
    algo = _field(obj, "algo", str)
    if not _is_short_ascii(algo, min_len=1):
        raise RemoteProtocolError(BAD_FIELD, f"algo = {_short(algo)}, must be 1..{MAX_STR} printable ASCII")
    cfg = _decode_cfg(_field(obj, "cfg", dict))

    # Semantics.
    if experiment_id is not None and exp != experiment_id:
        raise RemoteProtocolError(WRONG_EXPERIMENT, f"exp = {exp}, expected {experiment_id}")
    if dim is not None and n_dim != dim:
        raise RemoteProtocolError(WRONG_DIMENSION, f"dim = {n_dim}, expected {dim}")
    if len(params_raw) != 4 * n_dim:
        raise RemoteProtocolError(
            WRONG_DIMENSION, f"params is {len(params_raw)} bytes, dim = {n_dim} needs {4 * n_dim}"
        )
    if not math.isfinite(fit):
        raise RemoteProtocolError(NON_FINITE, f"fit = {fit!r}")
    params = np.frombuffer(params_raw, dtype=_PARAMS_DTYPE).astype(np.float32, copy=False)
    if not np.isfinite(params).all():
        bad = int(np.flatnonzero(~np.isfinite(params))[0])
        raise RemoteProtocolError(NON_FINITE, f"params[{bad}] = {params[bad]!r}")

    return Elite(
        experiment_id=exp,
        generation=gen,
        fitness=fit,
        seeds=tuple(seeds_raw),
        params=params,
        algorithm=algo,
        settings=cfg,
    )


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, val in pairs:
        if type(k) is not str:
            raise ValueError(f"map key of type {type(k).__name__}, must be str")
        if k in out:
            raise ValueError(f"duplicate map key {k[:MAX_STR]!r}")
        if isinstance(val, msgpack.Timestamp):
            raise ValueError("extension type (timestamp) is not allowed")
        out[k] = val
    return out


def _list_hook(items: list[Any]) -> list[Any]:
    for item in items:
        if isinstance(item, msgpack.Timestamp):
            raise ValueError("extension type (timestamp) is not allowed")
    return items


def _ext_hook(code: int, data: bytes) -> object:
    raise ValueError(f"extension type {code} is not allowed")


def _field(obj: dict[str, Any], key: str, typ: type) -> Any:
    if key not in obj:
        raise RemoteProtocolError(BAD_FIELD, f"missing key {key!r}")
    val = obj[key]
    if type(val) is not typ:
        raise RemoteProtocolError(BAD_FIELD, f"{key} is {type(val).__name__}, must be {typ.__name__}")
    return val


def _int_field(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    val: int = _field(obj, key, int)
    if not lo <= val <= hi:
        raise RemoteProtocolError(BAD_FIELD, f"{key} = {val}, must be in [{lo}, {hi}]")
    return val


def _decode_cfg(cfg: dict[str, Any]) -> dict[str, int | float | str]:
    if len(cfg) > MAX_SETTINGS:
        raise RemoteProtocolError(BAD_FIELD, f"cfg has {len(cfg)} entries > {MAX_SETTINGS}")
    for key, val in cfg.items():
        if not _is_short_ascii(key, min_len=1):
            raise RemoteProtocolError(BAD_FIELD, f"cfg key {_short(key)}, must be 1..{MAX_STR} printable ASCII")
        t = type(val)
        if t is str:
            ok = _is_short_ascii(val, min_len=0)
        elif t is int:
            ok = MIN_CFG_INT <= val <= MAX_CFG_INT
        elif t is float:
            ok = math.isfinite(val)
        else:
            ok = False
        if not ok:
            raise RemoteProtocolError(
                BAD_FIELD, f"cfg[{key!r}] = {_short(val)}, must be int64, finite float or short ASCII str"
            )
    return cfg


def _is_short_ascii(s: object, *, min_len: int) -> bool:
    return isinstance(s, str) and min_len <= len(s) <= MAX_STR and _PRINTABLE_RE.fullmatch(s) is not None


def _short(x: object) -> str:
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."
