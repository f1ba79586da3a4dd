"""The pool's messages on the wire (protocols/gaia-pool-v1.md): encode, and decode what a stranger
sent, bounded by core/wire.py (kinds ``POOL_RESULTS``, ``POOL_LOG_REQUEST``, ``POOL_LOG``), with a
reason code for every rejection (``RemoteProtocolError``: too_large, not_msgpack, bad_version,
bad_field, wrong_pool, nonfinite).

    results       gossip on /gaia/<experiment-id>/pool/<pool-id>/1, or /gaia/pool/results/1.0.0
    accusation    on the same channels: a member evicted another for a lie (r3)
    log request   /gaia/pool/log/1.0.0, one length-prefixed request, one answer, closed
    log answer

Pure: msgpack and numpy only.
"""

from __future__ import annotations

import re

import msgpack
import numpy as np

from gaia_p2p.core import wire
from gaia_p2p.core.pool import HEAD_BYTES, SPEED_MAX, SPEED_MIN, Accusation, Results
from gaia_p2p.core.wire import Kind, Reason
from gaia_p2p.errors import RemoteProtocolError

VERSION = 1
#: items one results message carries at most (a generation's population after IPOP's doublings)
MAX_ITEMS = wire.MAX_POOL_ITEMS
MAX_RESULTS_BYTES = wire.LIMITS[Kind.POOL_RESULTS].max_bytes
#: generations one log answer carries at most, and its size (a log request asks again from there)
MAX_LOG_GENERATIONS = wire.MAX_POOL_LOG_GENERATIONS
MAX_LOG_BYTES = wire.LIMITS[Kind.POOL_LOG].max_bytes
MAX_PLATFORM = 48
_PID = re.compile(r"[0-9a-f]{16}")
_PLATFORM = re.compile(r"[A-Za-z0-9_.:+-]{0,48}")
_PEER_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{1,64}")  # base58btc


def encode_results(pid: str, r: Results) -> bytes:
    idx = np.asarray(r.indices, dtype="<u2")
    msg = {"v": VERSION, "p": pid, "g": int(r.generation), "h": bytes(r.head),
           "i": idx.tobytes(), "r": np.asarray(r.returns, dtype="<f4").tobytes()}
    if r.platform is not None:
        msg["c"] = r.platform
    if r.speed is not None:
        msg["s"] = int(r.speed)
    return msgpack.packb(msg, use_bin_type=True)


def _unpack(kind: Kind, data: bytes, pid: str | None) -> dict:
    """The message's map (too_large, not_msgpack), of our version and naming our pool (wrong_pool)."""
    obj = wire.decode(kind, data)
    wire.version(obj, VERSION)
    p = obj.get("p")
    if not isinstance(p, str) or not _PID.fullmatch(p):
        raise RemoteProtocolError(Reason.BAD_FIELD, f"p = {wire.short(p)}")
    if pid is not None and p != pid:
        raise RemoteProtocolError(Reason.WRONG_POOL, f"pool {p}, ours {pid}")
    return obj


def _returns(b: object, what: str) -> np.ndarray:
    return wire.float32_vector(b, what, non_finite=Reason.NONFINITE)


def _head(obj: dict) -> bytes:
    h = wire.field(obj, "h", bytes)
    if len(h) != HEAD_BYTES:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"h is not {HEAD_BYTES} bytes")
    return h


def encode_accusation(pid: str, a: Accusation) -> bytes:
    return msgpack.packb({"v": VERSION, "p": pid, "g": int(a.generation),
                          "i": np.asarray([a.index], dtype="<u2").tobytes(), "a": a.accused}, use_bin_type=True)


def encode(pid: str, msg: Results | Accusation) -> bytes:
    return encode_accusation(pid, msg) if isinstance(msg, Accusation) else encode_results(pid, msg)


def decode_message(data: bytes, *, pid: str | None = None) -> Results | Accusation:
    """A message of the results channel: an accusation when it has ``a``, else results."""
    obj = _unpack(Kind.POOL_RESULTS, data, pid)
    return _accusation(obj) if "a" in obj else _results(obj)


def decode_results(data: bytes, *, pid: str | None = None) -> Results:
    return _results(_unpack(Kind.POOL_RESULTS, data, pid))


def _accusation(obj: dict) -> Accusation:
    g = wire.int_field(obj, "g", 0, 2**31)
    i = wire.field(obj, "i", bytes)
    if len(i) != 2:
        raise RemoteProtocolError(Reason.BAD_FIELD, "i is not one uint16")
    a = obj.get("a")
    if not isinstance(a, str) or not _PEER_ID.fullmatch(a):
        raise RemoteProtocolError(Reason.BAD_FIELD, f"a = {wire.short(a)}")
    return Accusation(g, int.from_bytes(i, "little"), a)


def _results(obj: dict) -> Results:
    g = wire.int_field(obj, "g", 0, 2**31)
    head = _head(obj)
    i = wire.field(obj, "i", bytes)
    if len(i) % 2:
        raise RemoteProtocolError(Reason.BAD_FIELD, "i is not uint16 bytes")
    idx = np.frombuffer(i, dtype="<u2")
    r = _returns(obj.get("r"), "r")
    if len(idx) != len(r) or not 1 <= len(idx) <= MAX_ITEMS:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"{len(idx)} indices, {len(r)} returns")
    if len(np.unique(idx)) != len(idx):
        raise RemoteProtocolError(Reason.BAD_FIELD, "repeated index")
    c = obj.get("c")  # absent (r2): as the sender told before
    if c is not None and (not isinstance(c, str) or not _PLATFORM.fullmatch(c)):
        raise RemoteProtocolError(Reason.BAD_FIELD, f"c = {wire.short(c)}")
    speed = wire.int_field(obj, "s", SPEED_MIN, SPEED_MAX) if "s" in obj else None  # r2; absent from r1 senders
    return Results(g, head, tuple(int(x) for x in idx), r, c, speed)


def encode_log_request(pid: str, start: int, head: bytes) -> bytes:
    return msgpack.packb({"v": VERSION, "p": pid, "s": int(start), "h": bytes(head)}, use_bin_type=True)


def decode_log_request(data: bytes, *, pid: str) -> tuple[int, bytes]:
    obj = _unpack(Kind.POOL_LOG_REQUEST, data, pid)
    return wire.int_field(obj, "s", 0, 2**31), _head(obj)


def encode_log(pid: str, start: int, returns: tuple[np.ndarray, ...]) -> bytes:
    return msgpack.packb({"v": VERSION, "p": pid, "s": int(start),
                          "r": [np.asarray(r, dtype="<f4").tobytes() for r in returns]}, use_bin_type=True)


def decode_log(data: bytes, *, pid: str) -> tuple[int, tuple[np.ndarray, ...]]:
    obj = _unpack(Kind.POOL_LOG, data, pid)
    start = wire.int_field(obj, "s", 0, 2**31)
    rs = obj.get("r")
    if not isinstance(rs, list) or len(rs) > MAX_LOG_GENERATIONS:
        raise RemoteProtocolError(Reason.BAD_FIELD, "r is not a list of generations")
    out = tuple(_returns(b, f"r[{k}]") for k, b in enumerate(rs))
    if any(not 1 <= len(r) <= MAX_ITEMS for r in out):
        raise RemoteProtocolError(Reason.BAD_FIELD, "a generation without returns")
    return start, out
