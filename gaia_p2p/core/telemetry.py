"""Telemetry heartbeat: msgpack codec with the same validation discipline as elites (codec.py).

Spec: protocols/gaia-telemetry-v1.md. Decoding untrusted bytes raises only RemoteProtocolError
with a stable reason code (oversize, malformed, bad_version, bad_field, wrong_experiment,
non_finite).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gaia_p2p.errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
MAX_TELEMETRY_BYTES = 4096
MAX_SETTINGS = 16
MAX_STR = 64
MAX_MIGRATIONS = 8
MAX_COUNT = 2**63 - 1

_EXP_RE = re.compile(r"[0-9a-f]{32}")
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]{1,64}")
_PEER_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{1,64}")  # base58btc alphabet


@dataclass(frozen=True)
class Migration:
    """An acceptance on the sender's island: a migrant from ``src`` beat its resident by ``gain``."""

    src: str
    generation: int
    gain: float


@dataclass(frozen=True)
class Telemetry:
    experiment_id: str
    time: float  # sender's unix time (informational; receivers use their own clock)
    generation: int
    evaluations: int
    episodes: int
    evals_per_s: float
    best_fitness: float | None
    mean_fitness: float | None
    sigma: float | None
    algorithm: str
    settings: dict[str, float | int | str] = field(default_factory=dict)
    sent: int = 0
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    peers: int = 0
    cpus: int = 0
    gpu: str | None = None
    gpu_mem_mb: int = 0
    migrations: tuple[Migration, ...] = ()


def _opt_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def encode_telemetry(t: Telemetry) -> bytes:
    if not _EXP_RE.fullmatch(t.experiment_id):
        raise LocalProtocolError("telemetry: bad experiment id")
    body: dict[str, Any] = {
        "v": VERSION, "exp": t.experiment_id, "t": float(t.time), "gen": int(t.generation),
        "evals": int(t.evaluations), "eps": int(t.episodes), "rate": float(t.evals_per_s),
        "best": _opt_float(t.best_fitness), "mean": _opt_float(t.mean_fitness), "sigma": _opt_float(t.sigma),
        "algo": t.algorithm, "cfg": dict(sorted(t.settings.items())[:MAX_SETTINGS]),
        "mig": [int(t.sent), int(t.received), int(t.accepted), int(t.rejected)],
        "peers": int(t.peers), "caps": {"cpus": int(t.cpus), "gpu": t.gpu, "gpu_mem_mb": int(t.gpu_mem_mb)},
        "acc": [[m.src, int(m.generation), float(m.gain)] for m in t.migrations[-MAX_MIGRATIONS:]],
    }
    data = msgpack.packb(body, use_bin_type=True)
    if len(data) > MAX_TELEMETRY_BYTES:
        raise LocalProtocolError(f"telemetry of {len(data)} bytes exceeds {MAX_TELEMETRY_BYTES}")
    return data


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_field", detail)


def _int(d: dict[str, Any], key: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(f"{key} must be an int in {lo}..{hi}")
    return v


def _float(d: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if type(v) is int:
        v = float(v)
    if type(v) is not float:
        raise _bad(f"{key} must be a float")
    if not math.isfinite(v):
        raise RemoteProtocolError("non_finite", f"{key} is not finite")
    return v


def _str(v: Any, what: str) -> str:
    if type(v) is not str or not _PRINTABLE_RE.fullmatch(v):
        raise _bad(f"{what} must be 1-64 printable ASCII chars")
    return v


def decode_telemetry(data: bytes, *, experiment_id: str | None = None) -> Telemetry:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("malformed", "not bytes")
    if len(data) > MAX_TELEMETRY_BYTES:
        raise RemoteProtocolError("oversize", f"{len(data)} > {MAX_TELEMETRY_BYTES} bytes")
    try:
        d = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, max_bin_len=MAX_TELEMETRY_BYTES,
                            max_str_len=MAX_TELEMETRY_BYTES, max_array_len=256, max_map_len=64,
                            max_ext_len=0)
    except Exception as e:  # msgpack raises many types for hostile input; all mean the same here
        raise RemoteProtocolError("malformed", type(e).__name__) from None
    if not isinstance(d, dict):
        raise RemoteProtocolError("malformed", "not a map")
    if d.get("v") != VERSION or type(d.get("v")) is not int:
        raise RemoteProtocolError("bad_version", repr(d.get("v"))[:20])
    exp = d.get("exp")
    if type(exp) is not str or not _EXP_RE.fullmatch(exp):
        raise _bad("exp must be 32 lowercase hex chars")
    gen, evals, eps = _int(d, "gen"), _int(d, "evals"), _int(d, "eps")
    t, rate = _float(d, "t"), _float(d, "rate")
    best, mean, sigma = (_float(d, k, optional=True) for k in ("best", "mean", "sigma"))
    algo = _str(d.get("algo"), "algo")
    cfg = d.get("cfg")
    if not isinstance(cfg, dict) or len(cfg) > MAX_SETTINGS:
        raise _bad("cfg must be a map of at most 16 entries")
    settings: dict[str, float | int | str] = {}
    for k, v in cfg.items():
        _str(k, "cfg key")
        if type(v) is float and not math.isfinite(v):
            raise RemoteProtocolError("non_finite", f"cfg[{k}] is not finite")
        if type(v) not in (int, float, str) or (type(v) is str and len(v) > MAX_STR):
            raise _bad(f"cfg[{k}] must be int, float or a short string")
        settings[k] = v
    mig = d.get("mig")
    if not isinstance(mig, list) or len(mig) != 4 or any(type(x) is not int or not 0 <= x <= MAX_COUNT for x in mig):
        raise _bad("mig must be [sent, received, accepted, rejected] ints")
    peers = _int(d, "peers", 0, 1 << 20)
    caps = d.get("caps")
    if not isinstance(caps, dict):
        raise _bad("caps must be a map")
    cpus = _int(caps, "cpus", 0, 1 << 16)
    gpu = caps.get("gpu")
    if gpu is not None:
        gpu = _str(gpu, "caps.gpu")
    gpu_mem = _int(caps, "gpu_mem_mb", 0, 1 << 30)
    acc = d.get("acc")
    if not isinstance(acc, list) or len(acc) > MAX_MIGRATIONS:
        raise _bad("acc must be a list of at most 8 migrations")
    migrations = []
    for item in acc:
        if not isinstance(item, list) or len(item) != 3:
            raise _bad("acc entries are [src, generation, gain]")
        src, g, gain = item
        if type(src) is not str or not _PEER_RE.fullmatch(src):
            raise _bad("acc src must be a base58 peer id")
        if type(g) is not int or not 0 <= g <= MAX_COUNT:
            raise _bad("acc generation must be an int >= 0")
        if type(gain) is int:
            gain = float(gain)
        if type(gain) is not float:
            raise _bad("acc gain must be a float")
        if not math.isfinite(gain):
            raise RemoteProtocolError("non_finite", "acc gain is not finite")
        migrations.append(Migration(src, g, gain))
    if experiment_id is not None and exp != experiment_id:
        raise RemoteProtocolError("wrong_experiment", exp)
    return Telemetry(experiment_id=exp, time=t, generation=gen, evaluations=evals, episodes=eps,  # type: ignore[arg-type]
                     evals_per_s=rate, best_fitness=best, mean_fitness=mean, sigma=sigma,  # type: ignore[arg-type]
                     algorithm=algo, settings=settings, sent=mig[0], received=mig[1], accepted=mig[2],
                     rejected=mig[3], peers=peers, cpus=cpus, gpu=gpu, gpu_mem_mb=gpu_mem,
                     migrations=tuple(migrations))


def to_json(peer_id: str, t: Telemetry, received_at: float) -> dict[str, Any]:
    """The NDJSON form `gaia-node watch --json` prints and `gaia-node plot` reads."""
    return {
        "event": "telemetry", "peer_id": peer_id, "time": received_at, "sent_time": t.time,
        "generation": t.generation, "evaluations": t.evaluations, "episodes": t.episodes,
        "evals_per_s": t.evals_per_s, "best_fitness": t.best_fitness, "mean_fitness": t.mean_fitness,
        "sigma": t.sigma, "algorithm": t.algorithm, "settings": t.settings,
        "migrants": {"sent": t.sent, "received": t.received, "accepted": t.accepted, "rejected": t.rejected},
        "peers": t.peers, "cpus": t.cpus, "gpu": t.gpu, "gpu_mem_mb": t.gpu_mem_mb,
    }
