"""Telemetry heartbeat: msgpack codec with the same validation discipline as elites (codec.py).

Spec: protocols/gaia-telemetry-v1.md (r4 added the optional keys ``exact`` and ``tst``, r5 the
optional ``pool``, r6 the pool's optional ``kp``: a heartbeat without them, from an older node,
decodes with ``exact`` False, ``tested`` and ``pool`` None and ``keeps`` True, and older receivers
ignore them). Decoding untrusted bytes (bounded
by core/wire.py, kind ``TELEMETRY``) raises only RemoteProtocolError with a stable reason code (oversize, malformed,
bad_version, bad_field, non_finite, wrong_experiment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack

from gaia_p2p.core import wire
from gaia_p2p.core.wire import Kind, Reason
from gaia_p2p.errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
MAX_TELEMETRY_BYTES = wire.LIMITS[Kind.TELEMETRY].max_bytes
MAX_SETTINGS = wire.MAX_SETTINGS
MAX_MIGRATIONS = 8
MAX_COUNT = 2**63 - 1
MAX_TEST_EPISODES = 1 << 20
MAX_POOL_MEMBERS = 256  # core/pool.PoolPolicy.max_members
LOCAL = "local"  # a tested resident of the sender's own making (else: the peer it migrated from)


@dataclass(frozen=True)
class Migration:
    """An acceptance on the sender's island: a migrant from ``src`` beat its resident by ``gain``."""

    src: str
    generation: int
    gain: float


@dataclass(frozen=True)
class LastTest:
    """The sender's last test on fresh episodes (core/target.py): its score and which individual."""

    mean: float
    episodes: int  # fresh episodes of the test
    generation: int  # the sender's generation when it tested
    age: float  # seconds from the test to this heartbeat, by the sender's clock
    current: bool  # the tested individual is still the sender's resident
    source: str = LOCAL  # where the tested individual came from: "local" or a peer id


@dataclass(frozen=True)
class PoolShare:
    """The sender's place in a pool (core/pool.py): which pool, how many live members it sees, and
    what it did for it."""

    pool_id: str  # 16 lowercase hex digits (gaia-pool-v1)
    members: int  # live members the sender counts, itself included
    own: int  # items the sender evaluated for the pool (its share and help)
    checks: int  # spot checks it ran
    evicted: int  # members it evicted
    # False: another member keeps the pool's resident (core/pool.py Pool.keeper), so the sender's
    # ``best`` and ``tst`` are of an earlier resident it kept, or of none: not the pool's best (r6)
    keeps: bool = True


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
    exact: bool = False  # a deterministic problem: best_fitness is the score itself (r4)
    tested: LastTest | None = None  # the last test on fresh episodes (r4)
    pool: PoolShare | None = None  # the pool the sender is a member of (r5)


def _opt_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def encode_telemetry(t: Telemetry) -> bytes:
    if not wire.is_experiment_id(t.experiment_id):
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
    if t.exact:
        body["exact"] = True
    if t.tested is not None:
        x = t.tested
        body["tst"] = {"mean": float(x.mean), "n": int(x.episodes), "gen": int(x.generation),
                       "age": max(0.0, float(x.age)), "cur": bool(x.current), "src": x.source}
    if t.pool is not None:
        p = t.pool
        body["pool"] = {"id": p.pool_id, "n": int(p.members), "own": int(p.own), "chk": int(p.checks),
                        "ev": int(p.evicted)}
        if not p.keeps:  # only then: a keeper's heartbeat is an r5 one, byte for byte
            body["pool"]["kp"] = False
    data = msgpack.packb(body, use_bin_type=True)
    if len(data) > MAX_TELEMETRY_BYTES:
        raise LocalProtocolError(f"telemetry of {len(data)} bytes exceeds {MAX_TELEMETRY_BYTES}")
    return data


def _float(d: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    v = d.get(key)
    if v is None and optional:
        return None
    return wire.finite(wire.number(v, key), key)


def decode_telemetry(data: bytes, *, experiment_id: str | None = None) -> Telemetry:
    """Parse and check one received heartbeat; raises only RemoteProtocolError (reasons in the module doc)."""
    return telemetry_from_map(wire.decode(Kind.TELEMETRY, data), experiment_id=experiment_id)


def telemetry_from_map(d: dict[str, Any], *, experiment_id: str | None = None) -> Telemetry:
    """The checks of ``decode_telemetry`` after unpacking (a pull's answer is unpacked once, in node/pull.py)."""
    wire.version(d, VERSION)
    exp = wire.experiment(d)
    gen, evals, eps = (wire.int_field(d, k, 0, MAX_COUNT) for k in ("gen", "evals", "eps"))
    t, rate = _float(d, "t"), _float(d, "rate")
    best, mean, sigma = (_float(d, k, optional=True) for k in ("best", "mean", "sigma"))
    algo = wire.printable(d.get("algo"), "algo")
    settings = wire.settings(d.get("cfg"), non_finite=Reason.NON_FINITE)
    mig = d.get("mig")
    if type(mig) is not list or len(mig) != 4 or any(type(x) is not int or not 0 <= x <= MAX_COUNT for x in mig):
        raise RemoteProtocolError(Reason.BAD_FIELD, "mig must be [sent, received, accepted, rejected] ints")
    peers = wire.int_field(d, "peers", 0, 1 << 20)
    caps = wire.field(d, "caps", dict)
    cpus = wire.int_field(caps, "cpus", 0, 1 << 16)
    gpu = caps.get("gpu")
    if gpu is not None:
        gpu = wire.printable(gpu, "caps.gpu")
    gpu_mem = wire.int_field(caps, "gpu_mem_mb", 0, 1 << 30)
    acc = wire.field(d, "acc", list)
    if len(acc) > MAX_MIGRATIONS:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"acc has {len(acc)} migrations > {MAX_MIGRATIONS}")
    migrations = []
    for item in acc:
        if type(item) is not list or len(item) != 3:
            raise RemoteProtocolError(Reason.BAD_FIELD, "acc entries are [src, generation, gain]")
        src, g, gain = item
        wire.peer_id(src, "acc src")
        if type(g) is not int or not 0 <= g <= MAX_COUNT:
            raise RemoteProtocolError(Reason.BAD_FIELD, "acc generation must be an int >= 0")
        migrations.append(Migration(src, g, wire.finite(wire.number(gain, "acc gain"), "acc gain")))
    exact = d.get("exact", False)
    if type(exact) is not bool:
        raise RemoteProtocolError(Reason.BAD_FIELD, "exact must be a bool")
    tested = _tested(d.get("tst"))
    pool = _pool(d.get("pool"))
    if experiment_id is not None and exp != experiment_id:
        raise RemoteProtocolError(Reason.WRONG_EXPERIMENT, f"exp = {exp}, expected {experiment_id}")
    return Telemetry(experiment_id=exp, time=t, generation=gen, evaluations=evals, episodes=eps,  # type: ignore[arg-type]
                     evals_per_s=rate, best_fitness=best, mean_fitness=mean, sigma=sigma,  # type: ignore[arg-type]
                     algorithm=algo, settings=settings, sent=mig[0], received=mig[1], accepted=mig[2],
                     rejected=mig[3], peers=peers, cpus=cpus, gpu=gpu, gpu_mem_mb=gpu_mem,
                     migrations=tuple(migrations), exact=exact, tested=tested, pool=pool)


def _pool(x: Any) -> PoolShare | None:
    """The optional ``pool`` map (r5): absent or nil is "an island, in no pool"."""
    if x is None:
        return None
    if type(x) is not dict:
        raise RemoteProtocolError(Reason.BAD_FIELD, "pool must be a map or nil")
    pid = x.get("id")
    if type(pid) is not str or len(pid) != 16 or any(c not in "0123456789abcdef" for c in pid):
        raise RemoteProtocolError(Reason.BAD_FIELD, "pool.id must be 16 lowercase hex digits")
    keeps = x.get("kp", True)
    if type(keeps) is not bool:
        raise RemoteProtocolError(Reason.BAD_FIELD, "pool.kp must be a bool")
    return PoolShare(pool_id=pid, members=wire.int_field(x, "n", 1, MAX_POOL_MEMBERS),
                     own=wire.int_field(x, "own", 0, MAX_COUNT), checks=wire.int_field(x, "chk", 0, MAX_COUNT),
                     evicted=wire.int_field(x, "ev", 0, MAX_COUNT), keeps=keeps)


def _tested(x: Any) -> LastTest | None:
    """The optional ``tst`` map (r4): nil or absent is "not tested"."""
    if x is None:
        return None
    if type(x) is not dict:
        raise RemoteProtocolError(Reason.BAD_FIELD, "tst must be a map or nil")
    mean = wire.finite(wire.number(x.get("mean"), "tst.mean"), "tst.mean")
    n = wire.int_field(x, "n", 1, MAX_TEST_EPISODES)
    gen = wire.int_field(x, "gen", 0, MAX_COUNT)
    age = wire.finite(wire.number(x.get("age"), "tst.age"), "tst.age")
    if age < 0:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"tst.age = {age}, must be >= 0")
    cur = x.get("cur")
    if type(cur) is not bool:
        raise RemoteProtocolError(Reason.BAD_FIELD, "tst.cur must be a bool")
    src = x.get("src")
    if src != LOCAL:
        wire.peer_id(src, "tst.src")
    return LastTest(mean=mean, episodes=n, generation=gen, age=age, current=cur, source=src)


def to_json(peer_id: str, t: Telemetry, received_at: float) -> dict[str, Any]:
    """The NDJSON form `gaia-node watch --json` prints and `gaia-node plot` reads."""
    return {
        "event": "telemetry", "peer_id": peer_id, "time": received_at, "sent_time": t.time,
        "generation": t.generation, "evaluations": t.evaluations, "episodes": t.episodes,
        "evals_per_s": t.evals_per_s, "best_fitness": t.best_fitness, "mean_fitness": t.mean_fitness,
        "sigma": t.sigma, "algorithm": t.algorithm, "settings": t.settings,
        "migrants": {"sent": t.sent, "received": t.received, "accepted": t.accepted, "rejected": t.rejected},
        "peers": t.peers, "cpus": t.cpus, "gpu": t.gpu, "gpu_mem_mb": t.gpu_mem_mb,
        "exact": t.exact, "tested": None if t.tested is None else tested_json(t.tested, received_at),
        "pool": None if t.pool is None else {"id": t.pool.pool_id, "members": t.pool.members, "own": t.pool.own,
                                             "checks": t.pool.checks, "evicted": t.pool.evicted,
                                             "keeps": t.pool.keeps},
    }


def tested_json(x: LastTest, received_at: float) -> dict[str, Any]:
    """A test as the views show it: ``at`` is the receiver's time of the test (its age subtracted)."""
    return {"mean": x.mean, "episodes": x.episodes, "generation": x.generation, "at": received_at - x.age,
            "current": x.current, "source": x.source}
