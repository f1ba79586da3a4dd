"""The wire layer: how every message a peer sends us is first decoded, bounded, and checked.

Pure (stdlib, numpy, msgpack). One table, :data:`LIMITS`, gives each message kind its bounds: the
largest message, the longest str and bin, the longest array and map, the deepest nesting, and the
reason code a message that breaks them gets. :func:`decode` is the only place untrusted bytes are
unpacked: it checks the size before unpacking, lets the unpacker refuse any declared length over
the kind's bounds (so a length prefix cannot make it allocate), rejects non-str or duplicate map
keys and extension types, and returns the message's one top-level map. The checkers below it
(``field``, ``int_field``, ``experiment``, ``peer_id``, ``number``, ``finite``, ``printable``,
``settings``, ``float32_vector``) are the field rules the specs share. Every failure raises
``RemoteProtocolError(reason, detail)`` (gaia_p2p.errors; the one wire error), its ``reason`` a
:class:`Reason`.

Each kind's own decoder sits next to its encoder: ``core/codec.py`` (elites), ``core/telemetry.py``
(heartbeats), ``core/poolwire.py`` (the pool's results and log), ``node/fetch.py`` (elite requests
and responses), ``node/pull.py`` (heartbeat requests and responses), ``node/control.py`` (status). A new kind is one entry in :class:`Kind` and
:data:`LIMITS` plus one decode function that starts with ``wire.decode(Kind.X, data)``
(docs/ARCHITECTURE.md, "A new message kind").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack
import numpy as np

from gaia_p2p.errors import RemoteProtocolError


class Reason(StrEnum):
    """Why a message from a peer was rejected or a request refused: the stable codes of protocols/*.md,
    used as counter names and log fields. Codes are only ever added, never renamed or reused."""

    # a received message (gaia-migration-v1, gaia-telemetry-v1, gaia-elite-v1 responses), in check order
    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    BAD_VERSION = "bad_version"
    BAD_FIELD = "bad_field"
    WRONG_EXPERIMENT = "wrong_experiment"
    WRONG_DIMENSION = "wrong_dimension"
    NON_FINITE = "non_finite"
    # the gossipsub validator's own verdicts (gaia-migration-v1 "Local reason codes")
    CLAIM_MISMATCH = "claim_mismatch"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    # a responder's refusal of a request (the ``err`` of gaia-elite-v1 and of the telemetry pull);
    # wrong_experiment and rate_limited above are refusals too
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_VERSION = "unsupported_version"
    NO_ELITE = "no_elite"
    NOT_BETTER = "not_better"
    # a request/response stream that broke before it was answered (reset, timeout, frame too long)
    STREAM_ERROR = "stream_error"
    # the pool's messages (gaia-pool-v1) spell three of the codes above their own way, and add one;
    # kept as they are, so that the pool's counters and logs keep their names
    TOO_LARGE = "too_large"  # the pool's oversize
    NOT_MSGPACK = "not_msgpack"  # the pool's malformed
    NONFINITE = "nonfinite"  # the pool's non_finite
    WRONG_POOL = "wrong_pool"  # the message names another pool


class Kind(StrEnum):
    """Every message kind a node decodes from a peer."""

    ELITE = "elite"  # gaia-migration-v1: a gossiped elite
    FETCHED_ELITE = "fetched_elite"  # gaia-elite-v1: the elite inside a response (larger ones allowed)
    ANNOUNCEMENT = "announcement"  # gaia-migration-v1: a large elite's announcement (its parameters are fetched)
    TELEMETRY = "telemetry"  # gaia-telemetry-v1: a gossiped heartbeat, or a pull's answer (heartbeat or refusal)
    ELITE_REQUEST = "elite_request"  # gaia-elite-v1 request
    ELITE_RESPONSE = "elite_response"  # gaia-elite-v1 response: the elite as bin, or a refusal
    TELEMETRY_REQUEST = "telemetry_request"  # gaia-telemetry-v1 pull request
    STATUS_REQUEST = "status_request"  # gaia-status-v1 request (JSON)
    STATUS_RESPONSE = "status_response"  # gaia-status-v1 response (JSON)
    POOL_RESULTS = "pool_results"  # gaia-pool-v1: a member's returns of one generation (gossip)
    POOL_LOG_REQUEST = "pool_log_request"  # gaia-pool-v1: ask a member for its log from a generation on
    POOL_LOG = "pool_log"  # gaia-pool-v1: the answer, the returns of every generation from there


@dataclass(frozen=True)
class Limits:
    """The bounds of one message kind, and what a message outside them (or not one map) is rejected as."""

    max_bytes: int
    max_str: int  # characters of a str (msgpack: its UTF-8 bytes)
    max_bin: int
    max_array: int
    max_map: int
    max_depth: int  # nesting of maps and arrays: the top-level map is depth 1
    oversize: Reason = Reason.OVERSIZE
    malformed: Reason = Reason.MALFORMED
    encoding: str = "msgpack"  # or "json" (gaia-status-v1)


#: Largest gossiped elite: 256 KiB, about 65,500 float32 parameters (gaia-migration-v1 MAX_ELITE_BYTES).
MAX_ELITE_BYTES = 256 * 1024
#: Largest elite a fetch answers with (gaia-elite-v1 r2, MAX_FETCHED_ELITE_BYTES): 1 MiB + 4 KiB, room
#: for 262,144 float32 parameters and every other field at its limit.
MAX_FETCHED_ELITE_BYTES = (1 << 20) + 4096
#: Largest announcement of a large elite (gaia-migration-v1 MAX_ANNOUNCEMENT_BYTES).
MAX_ANNOUNCEMENT_BYTES = 512
#: Largest heartbeat (gaia-telemetry-v1 MAX_TELEMETRY_BYTES).
MAX_TELEMETRY_BYTES = 4096
#: Deepest nesting any kind accepts; senders must not nest unknown values deeper (gaia-migration-v1).
MAX_DEPTH = 32
#: The pool's messages: returns of at most 4096 items a generation (a population after IPOP's
#: doublings), a log of at most 4096 generations in 8 MiB.
MAX_POOL_ITEMS = 4096
MAX_POOL_RESULTS_BYTES = 64 + 6 * MAX_POOL_ITEMS + 64
MAX_POOL_LOG_GENERATIONS = 4096
MAX_POOL_LOG_BYTES = 8 << 20

LIMITS: dict[Kind, Limits] = {
    Kind.ELITE: Limits(MAX_ELITE_BYTES, max_str=MAX_ELITE_BYTES, max_bin=MAX_ELITE_BYTES,
                       max_array=MAX_ELITE_BYTES, max_map=MAX_ELITE_BYTES, max_depth=MAX_DEPTH),
    Kind.TELEMETRY: Limits(MAX_TELEMETRY_BYTES, max_str=MAX_TELEMETRY_BYTES, max_bin=MAX_TELEMETRY_BYTES,
                           max_array=256, max_map=64, max_depth=MAX_DEPTH),
    # a request is refused as bad_request whatever is wrong with it, and answered (node/fetch.py)
    Kind.ELITE_REQUEST: Limits(256, max_str=256, max_bin=256, max_array=64, max_map=64, max_depth=MAX_DEPTH,
                               oversize=Reason.BAD_REQUEST, malformed=Reason.BAD_REQUEST),
    Kind.FETCHED_ELITE: Limits(MAX_FETCHED_ELITE_BYTES, max_str=MAX_ELITE_BYTES, max_bin=MAX_FETCHED_ELITE_BYTES,
                               max_array=MAX_ELITE_BYTES, max_map=MAX_ELITE_BYTES, max_depth=MAX_DEPTH),
    Kind.ANNOUNCEMENT: Limits(MAX_ANNOUNCEMENT_BYTES, max_str=MAX_ANNOUNCEMENT_BYTES, max_bin=MAX_ANNOUNCEMENT_BYTES,
                              max_array=64, max_map=64, max_depth=MAX_DEPTH),
    Kind.ELITE_RESPONSE: Limits(MAX_FETCHED_ELITE_BYTES + 64, max_str=MAX_FETCHED_ELITE_BYTES + 64,
                                max_bin=MAX_FETCHED_ELITE_BYTES + 64, max_array=64, max_map=64, max_depth=MAX_DEPTH),
    Kind.TELEMETRY_REQUEST: Limits(128, max_str=128, max_bin=0, max_array=0, max_map=8, max_depth=MAX_DEPTH,
                                   oversize=Reason.BAD_REQUEST, malformed=Reason.BAD_REQUEST),
    Kind.POOL_RESULTS: Limits(MAX_POOL_RESULTS_BYTES, max_str=64, max_bin=MAX_POOL_RESULTS_BYTES,
                              max_array=MAX_POOL_LOG_GENERATIONS, max_map=16, max_depth=MAX_DEPTH,
                              oversize=Reason.TOO_LARGE, malformed=Reason.NOT_MSGPACK),
    Kind.POOL_LOG_REQUEST: Limits(256, max_str=64, max_bin=256, max_array=MAX_POOL_LOG_GENERATIONS, max_map=16,
                                  max_depth=MAX_DEPTH, oversize=Reason.TOO_LARGE, malformed=Reason.NOT_MSGPACK),
    Kind.POOL_LOG: Limits(MAX_POOL_LOG_BYTES, max_str=64, max_bin=MAX_POOL_LOG_BYTES, max_array=MAX_POOL_LOG_GENERATIONS,
                          max_map=16, max_depth=MAX_DEPTH, oversize=Reason.TOO_LARGE, malformed=Reason.NOT_MSGPACK),
    Kind.STATUS_REQUEST: Limits(1024, max_str=1024, max_bin=0, max_array=64, max_map=64, max_depth=8,
                                encoding="json"),
    Kind.STATUS_RESPONSE: Limits(256 * 1024, max_str=256 * 1024, max_bin=0, max_array=256 * 1024,
                                 max_map=256 * 1024, max_depth=MAX_DEPTH, encoding="json"),
}

# What msgpack-python raises on hostile bytes: FormatError, StackError, ExtraData, OutOfData
# (UnpackException), a length over a limit and invalid UTF-8 (ValueError), our hooks' ValueError;
# json: JSONDecodeError and UnicodeDecodeError (ValueError), RecursionError on deep nesting.
_UNDECODABLE = (msgpack.UnpackException, ValueError, TypeError, RecursionError, OverflowError)


def decode(kind: Kind, data: object) -> dict[str, Any]:
    """The one top-level map of a message of ``kind``, within ``LIMITS[kind]``; else
    ``RemoteProtocolError`` with the kind's ``oversize`` or ``malformed`` reason."""
    lim = LIMITS[kind]
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError(lim.malformed, f"expected bytes, got {type(data).__name__}")
    n = data.nbytes if isinstance(data, memoryview) else len(data)
    if n > lim.max_bytes:
        raise RemoteProtocolError(lim.oversize, f"{n} bytes > {lim.max_bytes}")
    try:
        if lim.encoding == "json":
            obj = json.loads(bytes(data), object_pairs_hook=_pairs_hook)
        else:
            obj = msgpack.unpackb(
                bytes(data), raw=False, use_list=True, strict_map_key=True, object_pairs_hook=_pairs_hook,
                max_str_len=lim.max_str, max_bin_len=lim.max_bin, max_array_len=lim.max_array,
                max_map_len=lim.max_map, max_ext_len=0, ext_hook=_no_extension,
            )  # no extension types: max_ext_len refuses timestamps too, ext_hook the empty ones
    except _UNDECODABLE as exc:
        raise RemoteProtocolError(lim.malformed, f"{type(exc).__name__}: {exc}"[:200]) from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(lim.malformed, f"top level is {type(obj).__name__}, must be a map")
    _check_shape(obj, lim)
    return obj


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, val in pairs:
        if type(k) is not str:
            raise ValueError(f"map key of type {type(k).__name__}, must be str")
        if k in out:
            raise ValueError(f"duplicate map key {k[:64]!r}")
        out[k] = val
    return out


def _no_extension(code: int, data: bytes) -> object:
    raise ValueError(f"extension type {code} is not allowed")


def _check_shape(obj: dict[str, Any], lim: Limits) -> None:
    """Nesting depth (both encodings) and, for JSON, whose parser has no length limits, the lengths."""
    for value, depth in _containers(obj):
        if depth > lim.max_depth:
            raise RemoteProtocolError(lim.malformed, f"nested deeper than {lim.max_depth}")
        if lim.encoding == "json":
            most = lim.max_map if isinstance(value, dict) else lim.max_array
            longest = max((len(s) for s in _strings(value)), default=0)
            if len(value) > most or longest > lim.max_str:
                raise RemoteProtocolError(lim.malformed, f"a {type(value).__name__} or str over the limits")


def _containers(obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any] | list[Any], int]]:
    """Every map and array in ``obj`` (itself at depth 1) with its depth; iterative, so it cannot overflow."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        yield value, depth
        children = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in children if isinstance(v, dict | list))


def _strings(container: dict[str, Any] | list[Any]) -> Iterator[str]:
    """The str keys and values directly in ``container``."""
    items = [*container, *container.values()] if isinstance(container, dict) else container
    return (x for x in items if isinstance(x, str))


# --------------------------------------------------------------------------------------------------
# field checkers shared by the decoders; each raises RemoteProtocolError(reason, detail)

_EXPERIMENT_RE = re.compile(r"[0-9a-f]{32}")
_PEER_ID_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{1,64}")  # base58btc alphabet
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
#: Longest short string: an ``algo``, a ``cfg`` key or str value, a GPU name.
MAX_STR = 64
#: Most entries in a ``cfg`` (optimizer settings) map.
MAX_SETTINGS = 16
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1
_FLOAT32 = np.dtype("<f4")


def short(x: object) -> str:
    """``repr(x)`` cut to 80 characters, for a rejection's detail."""
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


def version(obj: dict[str, Any], expected: int, reason: Reason = Reason.BAD_VERSION) -> None:
    """``v`` is the int ``expected`` (a bool is not an int)."""
    v = obj.get("v")
    if type(v) is not int or v != expected:
        raise RemoteProtocolError(reason, f"v = {short(v)}, expected {expected}")


def field(obj: dict[str, Any], key: str, typ: type, reason: Reason = Reason.BAD_FIELD) -> Any:
    """``obj[key]``, present and exactly of type ``typ`` (a bool is not an int, an int not a float)."""
    if key not in obj:
        raise RemoteProtocolError(reason, f"missing key {key!r}")
    val = obj[key]
    if type(val) is not typ:
        raise RemoteProtocolError(reason, f"{key} is {type(val).__name__}, must be {typ.__name__}")
    return val


def int_field(obj: dict[str, Any], key: str, lo: int, hi: int, reason: Reason = Reason.BAD_FIELD) -> int:
    val: int = field(obj, key, int, reason)
    if not lo <= val <= hi:
        raise RemoteProtocolError(reason, f"{key} = {val}, must be in [{lo}, {hi}]")
    return val


def experiment(obj: dict[str, Any], key: str = "exp", reason: Reason = Reason.BAD_FIELD) -> str:
    """An experiment id: 32 lowercase hex chars (gaia-migration-v1, "Experiment id and topic")."""
    exp: str = field(obj, key, str, reason)
    if not _EXPERIMENT_RE.fullmatch(exp):
        raise RemoteProtocolError(reason, f"{key} = {short(exp)}, must be 32 lowercase hex chars")
    return exp


def is_experiment_id(x: object) -> bool:
    """For our own values (encoders raise LocalProtocolError on a bad one)."""
    return isinstance(x, str) and _EXPERIMENT_RE.fullmatch(x) is not None


def peer_id(x: object, what: str, reason: Reason = Reason.BAD_FIELD) -> str:
    """A base58 peer id as libp2p prints it: 1..64 chars of the base58btc alphabet."""
    if type(x) is not str or not _PEER_ID_RE.fullmatch(x):
        raise RemoteProtocolError(reason, f"{what} = {short(x)}, must be a base58 peer id")
    return x


def number(x: object, what: str, reason: Reason = Reason.BAD_FIELD) -> float:
    """A float or an int, as a float (not yet checked for finiteness: see ``finite``)."""
    if type(x) is int:
        return float(x)
    if type(x) is not float:
        raise RemoteProtocolError(reason, f"{what} is {type(x).__name__}, must be a number")
    return x


def finite(x: float, what: str, reason: Reason = Reason.NON_FINITE) -> float:
    if not math.isfinite(x):
        raise RemoteProtocolError(reason, f"{what} = {x!r}")
    return x


def is_printable(s: object, *, min_len: int, max_len: int = MAX_STR) -> bool:
    """A str of ``min_len``..``max_len`` printable ASCII chars (0x20-0x7e)."""
    return isinstance(s, str) and min_len <= len(s) <= max_len and _PRINTABLE_RE.fullmatch(s) is not None


def printable(x: object, what: str, *, min_len: int = 1, reason: Reason = Reason.BAD_FIELD) -> str:
    if type(x) is not str or not is_printable(x, min_len=min_len):
        raise RemoteProtocolError(reason, f"{what} = {short(x)}, must be {min_len}..{MAX_STR} printable ASCII chars")
    return x


def settings(cfg: object, what: str = "cfg", *, non_finite: Reason = Reason.BAD_FIELD) -> dict[str, int | float | str]:
    """An optimizer settings map: at most 16 entries, keys 1..64 printable ASCII, values an int64, a
    finite float (else ``non_finite``) or a str of 0..64 printable ASCII chars."""
    if type(cfg) is not dict:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"{what} is {type(cfg).__name__}, must be a map")
    if len(cfg) > MAX_SETTINGS:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"{what} has {len(cfg)} entries > {MAX_SETTINGS}")
    for key, val in cfg.items():
        printable(key, f"{what} key")
        t = type(val)
        if t is float and not math.isfinite(val):
            raise RemoteProtocolError(non_finite, f"{what}[{key!r}] = {val!r}")
        if not (t is float or (t is int and MIN_INT64 <= val <= MAX_INT64) or (t is str and is_printable(val, min_len=0))):
            raise RemoteProtocolError(
                Reason.BAD_FIELD, f"{what}[{key!r}] = {short(val)}, must be int64, finite float or short ASCII str"
            )
    return cfg


def float32_vector(raw: object, what: str, *, dim: int | None = None,
                   non_finite: Reason = Reason.NON_FINITE) -> np.ndarray:
    """Little-endian float32 values in a bin, all finite. Not a bin of whole float32s: ``bad_field``;
    not ``dim`` of them (when given): ``wrong_dimension``; a NaN or an infinity: ``non_finite``."""
    if type(raw) is not bytes:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"{what} is {type(raw).__name__}, must be bin")
    if dim is not None and len(raw) != 4 * dim:
        raise RemoteProtocolError(Reason.WRONG_DIMENSION, f"{what} is {len(raw)} bytes, dim = {dim} needs {4 * dim}")
    if len(raw) % 4:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"{what} is {len(raw)} bytes, not whole float32s")
    vec = np.frombuffer(raw, dtype=_FLOAT32).astype(np.float32, copy=False)
    if not np.isfinite(vec).all():
        bad = int(np.flatnonzero(~np.isfinite(vec))[0])
        raise RemoteProtocolError(non_finite, f"{what}[{bad}] = {vec[bad]!r}")
    return vec
