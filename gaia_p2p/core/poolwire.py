"""The pool's messages on the wire (protocols/gaia-pool-v1.md): encode, and decode what a stranger
sent, bounded, with a reason code for every rejection (``RemoteProtocolError``).

    results       gossip on /gaia/<experiment-id>/pool/<pool-id>/1
    log request   /gaia/pool/log/1.0.0, one length-prefixed request, one answer, closed
    log answer

Pure: msgpack and numpy only.
"""

from __future__ import annotations

import re

import msgpack
import numpy as np

from gaia_p2p.core.pool import HEAD_BYTES, Results
from gaia_p2p.errors import RemoteProtocolError

VERSION = 1
#: items one results message carries at most (a generation's population after IPOP's doublings)
MAX_ITEMS = 4096
MAX_RESULTS_BYTES = 64 + 6 * MAX_ITEMS + 64
#: generations one log answer carries at most, and its size (a log request asks again from there)
MAX_LOG_GENERATIONS = 4096
MAX_LOG_BYTES = 8 << 20
MAX_PLATFORM = 48
_PID = re.compile(r"^[0-9a-f]{16}$")
_PLATFORM = re.compile(r"^[A-Za-z0-9_.:+-]{0,48}$")


def encode_results(pid: str, r: Results) -> bytes:
    idx = np.asarray(r.indices, dtype="<u2")
    return msgpack.packb({"v": VERSION, "p": pid, "g": int(r.generation), "h": bytes(r.head),
                          "i": idx.tobytes(), "r": np.asarray(r.returns, dtype="<f4").tobytes(),
                          "c": r.platform}, use_bin_type=True)


def _unpack(data: bytes, limit: int, what: str) -> dict:
    if len(data) > limit:
        raise RemoteProtocolError("too_large", f"{what} of {len(data)} bytes (limit {limit})")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, max_bin_len=limit, max_str_len=64,
                              max_array_len=MAX_LOG_GENERATIONS, max_map_len=16, max_ext_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as e:
        raise RemoteProtocolError("not_msgpack", f"{what}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("bad_field", f"{what} is not a map")
    if obj.get("v") != VERSION:
        raise RemoteProtocolError("bad_version", f"{what} version {obj.get('v')!r}")
    return obj


def _int(obj: dict, key: str, lo: int, hi: int) -> int:
    v = obj.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise RemoteProtocolError("bad_field", f"{key} = {v!r}")
    return v


def _pid(obj: dict, pid: str | None) -> str:
    p = obj.get("p")
    if not isinstance(p, str) or not _PID.match(p):
        raise RemoteProtocolError("bad_field", f"p = {p!r}")
    if pid is not None and p != pid:
        raise RemoteProtocolError("wrong_pool", f"pool {p}, ours {pid}")
    return p


def _returns(b: object, what: str) -> np.ndarray:
    if not isinstance(b, bytes) or len(b) % 4:
        raise RemoteProtocolError("bad_field", f"{what} is not float32 bytes")
    r = np.frombuffer(b, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(r)):
        raise RemoteProtocolError("nonfinite", f"{what} holds a non-finite return")
    return r


def _head(obj: dict) -> bytes:
    h = obj.get("h")
    if not isinstance(h, bytes) or len(h) != HEAD_BYTES:
        raise RemoteProtocolError("bad_field", f"h is not {HEAD_BYTES} bytes")
    return h


def decode_results(data: bytes, *, pid: str | None = None) -> Results:
    obj = _unpack(data, MAX_RESULTS_BYTES, "results")
    _pid(obj, pid)
    g = _int(obj, "g", 0, 2**31)
    head = _head(obj)
    i = obj.get("i")
    if not isinstance(i, bytes) or len(i) % 2:
        raise RemoteProtocolError("bad_field", "i is not uint16 bytes")
    idx = np.frombuffer(i, dtype="<u2")
    r = _returns(obj.get("r"), "r")
    if len(idx) != len(r) or not 1 <= len(idx) <= MAX_ITEMS:
        raise RemoteProtocolError("bad_field", f"{len(idx)} indices, {len(r)} returns")
    if len(np.unique(idx)) != len(idx):
        raise RemoteProtocolError("bad_field", "repeated index")
    c = obj.get("c")
    if not isinstance(c, str) or not _PLATFORM.match(c):
        raise RemoteProtocolError("bad_field", f"c = {c!r}")
    return Results(g, head, tuple(int(x) for x in idx), r, c)


def encode_log_request(pid: str, start: int, head: bytes) -> bytes:
    return msgpack.packb({"v": VERSION, "p": pid, "s": int(start), "h": bytes(head)}, use_bin_type=True)


def decode_log_request(data: bytes, *, pid: str) -> tuple[int, bytes]:
    obj = _unpack(data, 256, "log request")
    _pid(obj, pid)
    return _int(obj, "s", 0, 2**31), _head(obj)


def encode_log(pid: str, start: int, returns: tuple[np.ndarray, ...]) -> bytes:
    return msgpack.packb({"v": VERSION, "p": pid, "s": int(start),
                          "r": [np.asarray(r, dtype="<f4").tobytes() for r in returns]}, use_bin_type=True)


def decode_log(data: bytes, *, pid: str) -> tuple[int, tuple[np.ndarray, ...]]:
    obj = _unpack(data, MAX_LOG_BYTES, "log")
    _pid(obj, pid)
    start = _int(obj, "s", 0, 2**31)
    rs = obj.get("r")
    if not isinstance(rs, list) or len(rs) > MAX_LOG_GENERATIONS:
        raise RemoteProtocolError("bad_field", "r is not a list of generations")
    out = tuple(_returns(b, f"r[{k}]") for k, b in enumerate(rs))
    if any(not 1 <= len(r) <= MAX_ITEMS for r in out):
        raise RemoteProtocolError("bad_field", "a generation without returns")
    return start, out
