"""gaia_p2p.core.codec against protocols/vectors/migration-v1.json, plus targeted checks per reason."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from gaia_p2p.core import codec
from gaia_p2p.core.codec import (
    MAX_DIM,
    MAX_ELITE_BYTES,
    MAX_SEEDS,
    MAX_SETTINGS,
    MAX_STR,
    REASONS,
    VERSION,
    decode_elite,
    encode_elite,
)
from gaia_p2p.core.experiment import ProblemConfig, experiment_id
from gaia_p2p.core.types import Elite
from gaia_p2p.errors import GaiaError, LocalProtocolError, RemoteProtocolError

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = REPO_ROOT / "protocols" / "vectors" / "migration-v1.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

EXP = experiment_id(ProblemConfig(name="sphere", dim=3))
OTHER_EXP = experiment_id(ProblemConfig())


def vector_bytes(v: dict[str, Any]) -> bytes:
    return bytes.fromhex(v["hex"]) * v.get("repeat", 1)


def elite_from_json(d: dict[str, Any]) -> Elite:
    return Elite(
        experiment_id=d["exp"],
        generation=d["gen"],
        fitness=d["fit"],
        seeds=tuple(d["seeds"]),
        params=np.array(d["params"], dtype=np.float32),
        algorithm=d["algo"],
        settings=dict(d["cfg"]),
    )


def make_elite(**kw: Any) -> Elite:
    base: dict[str, Any] = dict(
        experiment_id=EXP,
        generation=7,
        fitness=-3.5,
        seeds=(1, 2, 3),
        params=np.array([0.5, -1.0, 2.0], dtype=np.float32),
        algorithm="cma-es",
        settings={"sigma": 0.3, "popsize": 12, "variant": "sep"},
    )
    base.update(kw)
    return Elite(**base)


def fields(**kw: Any) -> dict[str, Any]:
    """The wire map of make_elite(), with overrides; a value of DEL removes the key."""
    d: dict[str, Any] = {
        "v": 1,
        "exp": EXP,
        "gen": 7,
        "fit": -3.5,
        "seeds": [1, 2, 3],
        "dim": 3,
        "params": np.array([0.5, -1.0, 2.0], dtype="<f4").tobytes(),
        "algo": "cma-es",
        "cfg": {"popsize": 12, "sigma": 0.3, "variant": "sep"},
    }
    for k, val in kw.items():
        if val is DEL:
            del d[k]
        else:
            d[k] = val
    return d


DEL = object()


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def reason_of(data: bytes, **ctx: Any) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decode_elite(data, **ctx)
    assert info.value.reason in REASONS
    return info.value.reason


# ------------------------------------------------------------------------------------------------
# vectors


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vec: dict[str, Any]) -> None:
    data = vector_bytes(vec)
    ctx = vec.get("context", {})
    if vec["expect"] != "ok":
        assert reason_of(data, **ctx) == vec["expect"]
        return
    got = decode_elite(data, **ctx)
    want = vec["decoded"]
    assert got.experiment_id == want["exp"]
    assert got.generation == want["gen"]
    assert got.fitness == want["fit"]
    assert got.seeds == tuple(want["seeds"])
    assert got.dim == want["dim"]
    assert got.params.dtype == np.float32
    assert got.params.tolist() == want["params"]
    assert got.algorithm == want["algo"]
    assert dict(got.settings) == want["cfg"]
    # The other way: the expected fields encode to the canonical bytes, and so does the decoded elite.
    canonical = data if vec["canonical"] else bytes.fromhex(vec["canonical_hex"])
    assert vec["canonical"] == ("canonical_hex" not in vec)
    assert encode_elite(got) == canonical
    assert encode_elite(elite_from_json(want)) == canonical
    assert elite_from_json(want) == got


def test_vectors_cover_every_reason() -> None:
    expects = [v["expect"] for v in VECTORS]
    assert expects.count("ok") >= 2
    assert sum(1 for v in VECTORS if v["expect"] == "ok" and v["canonical"]) >= 2
    assert set(expects) == {"ok", *REASONS}
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))


def test_reason_codes_are_stable() -> None:
    # These strings are counter names and log values: changing one is a protocol change.
    assert REASONS == (
        "oversize", "malformed", "bad_version", "bad_field",
        "wrong_experiment", "wrong_dimension", "non_finite",
    )


def test_constants() -> None:
    assert VERSION == 1
    assert MAX_ELITE_BYTES == 262144
    assert (MAX_SEEDS, MAX_SETTINGS, MAX_STR, MAX_DIM) == (64, 16, 64, 262144)
    assert codec.MAX_FETCHED_ELITE_BYTES == 1052672 and codec.MAX_PUBLISHABLE_DIM == 64884
    # the largest elite of MAX_DIM parameters fits a fetch's answer, one parameter more would not be sent
    assert codec.max_elite_bytes(MAX_DIM) <= codec.MAX_FETCHED_ELITE_BYTES


def test_an_elite_above_the_gossip_limit_is_announced_and_decodes_only_as_a_fetched_one() -> None:
    """gaia-migration-v1 "Large elites": above gossip_max_bytes (16 KiB by default, never above
    MAX_ELITE_BYTES) an elite is announced; its encoding is then only accepted from a fetch."""
    assert not codec.announces(16384) and codec.announces(16385)
    assert codec.announces(MAX_ELITE_BYTES + 1, gossip_max_bytes=10**9)  # nothing above 256 KiB is gossiped
    assert not codec.announces(100_000, gossip_max_bytes=MAX_ELITE_BYTES)
    big = Elite(experiment_id=EXP, generation=3, fitness=-2.0, seeds=(1,), params=np.full(100_000, 0.25, np.float32),
                algorithm="openai-es")
    data = encode_elite(big)
    assert MAX_ELITE_BYTES < len(data) <= codec.MAX_FETCHED_ELITE_BYTES
    with pytest.raises(RemoteProtocolError) as e:
        decode_elite(data, experiment_id=EXP, dim=100_000)  # off gossip: too big
    assert e.value.reason == "oversize"
    assert decode_elite(data, experiment_id=EXP, dim=100_000, fetched=True) == big
    with pytest.raises(LocalProtocolError, match="must be <= 262144"):
        encode_elite(big, max_bytes=MAX_ELITE_BYTES)


def test_announcements_round_trip_and_bad_ones_get_their_reason() -> None:
    from gaia_p2p.core.types import Announcement

    a = Announcement(experiment_id=EXP, generation=7, fitness=-1.25, dim=100_000, size=400_123)
    data = codec.encode_announcement(a)
    assert len(data) < 100
    assert codec.decode_announcement(data, experiment_id=EXP, dim=100_000) == a

    def reason(obj: object, **ctx: object) -> str:
        with pytest.raises(RemoteProtocolError) as e:
            codec.decode_announcement(obj if isinstance(obj, bytes) else msgpack.packb(obj), **ctx)
        return e.value.reason

    good = {"v": 1, "exp": EXP, "gen": 7, "fit": -1.25, "dim": 100_000, "size": 400_123}
    assert reason(b"\x00" * 600) == "oversize"
    assert reason(b"\xc1") == "malformed"
    assert reason(good | {"v": 2}) == "bad_version"
    assert reason(good | {"size": codec.MAX_FETCHED_ELITE_BYTES + 1}) == "bad_field"
    assert reason({k: v for k, v in good.items() if k != "dim"}) == "bad_field"
    assert reason(good, experiment_id=OTHER_EXP) == "wrong_experiment"
    assert reason(good, dim=30) == "wrong_dimension"
    assert reason(good | {"fit": float("nan")}) == "non_finite"


def _largest_elite(dim: int) -> Elite:
    """An elite of ``dim`` parameters with every other field at its limit."""
    settings = {f"{i:02d}".ljust(MAX_STR, "k"): "v" * MAX_STR for i in range(MAX_SETTINGS)}
    return Elite(experiment_id=EXP, generation=2**63 - 1, fitness=-1.5, seeds=(2**32 - 1,) * MAX_SEEDS,
                 params=np.full(dim, 0.5, np.float32), algorithm="a" * MAX_STR, settings=settings)


@pytest.mark.parametrize("dim", [1, 30, 212, 6020, 16383, 16384, 40000])
def test_max_elite_bytes_is_the_largest_encoding(dim: int) -> None:
    assert len(encode_elite(_largest_elite(dim))) == codec.max_elite_bytes(dim)
    small = Elite(experiment_id=EXP, generation=0, fitness=0.0, seeds=(), params=np.zeros(dim, np.float32),
                  algorithm="x")
    assert len(encode_elite(small)) < codec.max_elite_bytes(dim)


def test_the_largest_publishable_dim_is_where_the_size_limit_binds() -> None:
    """The largest elite of MAX_PUBLISHABLE_DIM parameters fits gossip, one more does not (it is
    announced: its encoding is decoded only as a fetched one); MAX_DIM fits a fetch, one more does not."""
    top = codec.MAX_PUBLISHABLE_DIM
    assert top == 64884 and codec.max_elite_bytes(top) <= MAX_ELITE_BYTES < codec.max_elite_bytes(top + 1)
    assert codec.max_elite_bytes(10_000) < 43_000
    data = encode_elite(_largest_elite(top), max_bytes=MAX_ELITE_BYTES)
    assert decode_elite(data, experiment_id=EXP, dim=top).dim == top
    with pytest.raises(LocalProtocolError, match="reduce dim"):
        encode_elite(_largest_elite(top + 1), max_bytes=MAX_ELITE_BYTES)
    data = encode_elite(_largest_elite(top + 1))
    assert codec.announces(len(data), gossip_max_bytes=MAX_ELITE_BYTES)
    assert decode_elite(data, experiment_id=EXP, dim=top + 1, fetched=True).dim == top + 1


# ------------------------------------------------------------------------------------------------
# encode


def test_round_trip_and_decoded_types() -> None:
    e = make_elite()
    got = decode_elite(encode_elite(e), experiment_id=EXP, dim=3)
    assert got == e
    assert isinstance(got.seeds, tuple) and all(type(s) is int for s in got.seeds)
    assert got.params.dtype == np.float32 and got.params.ndim == 1
    assert isinstance(got.settings, dict)
    assert type(got.settings["popsize"]) is int and type(got.settings["sigma"]) is float


def test_decoded_params_cannot_alias_the_input() -> None:
    buf = bytearray(encode_elite(make_elite()))
    got = decode_elite(buf)
    buf[:] = b"\x00" * len(buf)
    assert got.params.tolist() == [0.5, -1.0, 2.0]
    if not got.params.flags.writeable:
        with pytest.raises(ValueError):
            got.params[0] = 1.0


def test_encoding_is_deterministic_and_settings_order_free() -> None:
    a = make_elite(settings={"b": 1, "a": 2.5, "c": "x"})
    b = make_elite(settings={"c": "x", "a": 2.5, "b": 1})
    assert encode_elite(a) == encode_elite(b) == encode_elite(a)
    assert list(msgpack.unpackb(encode_elite(a))["cfg"]) == ["a", "b", "c"]


def test_encoding_key_order_and_types() -> None:
    raw = encode_elite(make_elite())
    obj = msgpack.unpackb(raw, raw=False)
    assert list(obj) == ["v", "exp", "gen", "fit", "seeds", "dim", "params", "algo", "cfg"]
    assert raw[raw.index(b"\xa3fit") + 4] == 0xCB  # float 64
    assert raw[raw.index(b"\xa6params") + 7] == 0xC4  # bin 8


def test_encode_accepts_numpy_scalars() -> None:
    e = make_elite(generation=np.int64(7), fitness=np.float32(-3.5), seeds=(np.uint32(1), 2, 3),
                   settings={"sigma": np.float64(0.3), "popsize": np.int32(12), "variant": "sep"})
    assert decode_elite(encode_elite(e)) == make_elite()


def test_encode_accepts_float32_of_either_byte_order() -> None:
    big_endian = np.array([0.5, -1.0, 2.0], dtype=">f4")
    assert encode_elite(make_elite(params=big_endian)) == encode_elite(make_elite())
    strided = np.array([0.5, 9.0, -1.0, 9.0, 2.0], dtype=np.float32)[::2]
    assert encode_elite(make_elite(params=strided)) == encode_elite(make_elite())


def test_encode_limits_are_inclusive() -> None:
    e = make_elite(
        seeds=tuple(range(MAX_SEEDS - 1)) + (2**32 - 1,),
        algorithm="a" * MAX_STR,
        settings={f"{i:0{MAX_STR}d}": "s" * MAX_STR for i in range(MAX_SETTINGS)},
        generation=2**63 - 1,
    )
    assert decode_elite(encode_elite(e)) == e


@pytest.mark.parametrize(
    "kw",
    [
        {"params": np.array([0.0, np.nan], dtype=np.float32)},
        {"params": np.array([0.0, np.inf], dtype=np.float32)},
        {"params": np.array([0.0, 1.0])},  # float64
        {"params": np.array([[0.0, 1.0]], dtype=np.float32)},  # 2-D
        {"params": np.array([], dtype=np.float32)},  # dim 0
        {"params": [0.0, 1.0]},
        {"fitness": math.nan},
        {"fitness": -math.inf},
        {"fitness": "1.0"},
        {"fitness": True},
        {"experiment_id": EXP.upper()},
        {"experiment_id": EXP[:31]},
        {"generation": -1},
        {"generation": True},
        {"generation": 1.0},
        {"seeds": (2**32,)},
        {"seeds": (-1,)},
        {"seeds": tuple(range(MAX_SEEDS + 1))},
        {"seeds": 5},
        {"algorithm": ""},
        {"algorithm": "a" * (MAX_STR + 1)},
        {"algorithm": "cma\n"},
        {"settings": {"elitist": True}},
        {"settings": {"x": [1]}},
        {"settings": {"x": None}},
        {"settings": {"x": math.nan}},
        {"settings": {"x": 2**63}},
        {"settings": {1: 1}},
        {"settings": {"": 1}},
        {"settings": {"x": "y" * (MAX_STR + 1)}},
        {"settings": {f"k{i}": i for i in range(MAX_SETTINGS + 1)}},
        {"settings": [("a", 1)]},
    ],
)
def test_encode_invalid_elite_raises_local_error(kw: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_elite(make_elite(**kw))


def test_encode_rejects_non_elite() -> None:
    with pytest.raises(LocalProtocolError):
        encode_elite(fields())  # type: ignore[arg-type]


def test_encode_rejects_encoding_over_the_size_limit() -> None:
    # 65,536 float32 is exactly MAX_ELITE_BYTES of params: the header pushes it over gossip's limit
    with pytest.raises(LocalProtocolError, match="bytes"):
        encode_elite(make_elite(params=np.zeros(65536, dtype=np.float32)), max_bytes=MAX_ELITE_BYTES)
    with pytest.raises(LocalProtocolError, match="dim = 262145"):
        encode_elite(make_elite(params=np.zeros(MAX_DIM + 1, dtype=np.float32)))
    big = encode_elite(make_elite(params=np.zeros(65000, dtype=np.float32)))
    assert len(big) <= MAX_ELITE_BYTES
    assert decode_elite(big, dim=65000).dim == 65000


# ------------------------------------------------------------------------------------------------
# decode, one reason at a time


def test_decode_accepts_bytes_like() -> None:
    raw = encode_elite(make_elite())
    assert decode_elite(bytearray(raw)) == decode_elite(memoryview(raw)) == make_elite()


def test_oversize_is_checked_before_unpacking() -> None:
    assert reason_of(b"\xc1" * MAX_ELITE_BYTES) == "malformed"
    assert reason_of(b"\xc1" * (MAX_ELITE_BYTES + 1)) == "oversize"
    assert reason_of(b"\x00" * (10 * MAX_ELITE_BYTES)) == "oversize"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x80\xc0",  # trailing bytes
        b"\x81\xa1v",  # truncated
        b"\xdf\xff\xff\xff\xff",  # claims 4G entries
        b"\xc6\xff\xff\xff\xff",  # bin of 4 GiB, no body
        b"\x91" * 5000 + b"\xc0",  # nesting
        pack([fields()]),
        pack("hello"),
        pack(None),
        pack(b"\x89"),
        pack(1),
    ],
)
def test_malformed_bytes(data: bytes) -> None:
    assert reason_of(data) == "malformed"


def test_malformed_non_bytes_input() -> None:
    assert reason_of("89a176") == "malformed"  # type: ignore[arg-type]
    assert reason_of(None) == "malformed"  # type: ignore[arg-type]


def test_malformed_map_keys_and_extensions() -> None:
    body = b"".join(pack(k) + pack(v) for k, v in fields().items())
    assert reason_of(bytes([0x8A]) + body + pack(1) + pack(0)) == "malformed"  # int key
    assert reason_of(bytes([0x8A]) + body + pack(b"k") + pack(0)) == "malformed"  # bin key
    assert reason_of(bytes([0x8A]) + body + pack("dim") + pack(3)) == "malformed"  # duplicate
    nested_int_key = pack(fields(**{"x-new": {1: 2}}))
    assert reason_of(nested_int_key) == "malformed"
    assert reason_of(pack(fields(**{"x-new": msgpack.ExtType(1, b"")}))) == "malformed"
    assert reason_of(pack(fields(**{"x-new": [msgpack.Timestamp(0)]}))) == "malformed"
    assert reason_of(pack(fields(**{"x-new": {"t": msgpack.Timestamp(0)}}))) == "malformed"
    assert reason_of(bytes([0x81, 0xA2, 0xC3, 0x28, 0x01])) == "malformed"  # invalid UTF-8


@pytest.mark.parametrize("v", [DEL, 0, 2, -1, "1", 1.0, True, None, [1]])
def test_bad_version(v: object) -> None:
    assert reason_of(pack(fields(v=v))) == "bad_version"


def test_bad_version_wins_over_everything_after_it() -> None:
    assert reason_of(pack({"v": 2, "exp": "nope"}), experiment_id=EXP) == "bad_version"
    assert reason_of(pack({})) == "bad_version"


@pytest.mark.parametrize("key", ["exp", "gen", "fit", "seeds", "dim", "params", "algo", "cfg"])
def test_bad_field_missing_key(key: str) -> None:
    assert reason_of(pack(fields(**{key: DEL}))) == "bad_field"


@pytest.mark.parametrize(
    "kw",
    [
        {"exp": EXP.upper()},
        {"exp": EXP + "0"},
        {"exp": "g" * 32},
        {"exp": EXP.encode()},
        {"exp": None},
        {"gen": -1},
        {"gen": 2**63},
        {"gen": 1.0},
        {"gen": True},
        {"fit": 3},
        {"fit": "1.5"},
        {"fit": None},
        {"seeds": list(range(MAX_SEEDS + 1))},
        {"seeds": [2**32]},
        {"seeds": [-1]},
        {"seeds": [1.0]},
        {"seeds": [False]},
        {"seeds": {"a": 1}},
        {"seeds": b"\x01"},
        {"dim": 0, "params": b""},
        {"dim": -3},
        {"dim": MAX_DIM + 1},
        {"dim": 3.0},
        {"dim": "3"},
        {"params": [0.5, -1.0, 2.0]},
        {"params": "abcdefghijkl"},
        {"algo": ""},
        {"algo": "a" * (MAX_STR + 1)},
        {"algo": "cma\tes"},
        {"algo": "\u00e9"},
        {"algo": b"cma"},
        {"cfg": []},
        {"cfg": None},
        {"cfg": {f"k{i}": i for i in range(MAX_SETTINGS + 1)}},
        {"cfg": {"": 1}},
        {"cfg": {"k" * (MAX_STR + 1): 1}},
        {"cfg": {"a\x00": 1}},
        {"cfg": {"a": True}},
        {"cfg": {"a": None}},
        {"cfg": {"a": b"x"}},
        {"cfg": {"a": [1]}},
        {"cfg": {"a": {"b": 1}}},
        {"cfg": {"a": math.inf}},
        {"cfg": {"a": math.nan}},
        {"cfg": {"a": 2**63}},
        {"cfg": {"a": "x" * (MAX_STR + 1)}},
        {"cfg": {"a": "\u2603"}},
    ],
)
def test_bad_field(kw: dict[str, Any]) -> None:
    assert reason_of(pack(fields(**kw))) == "bad_field"


def test_bad_field_boundaries_are_inclusive() -> None:
    cfg: dict[str, Any] = {f"{i:0{MAX_STR}d}": "~" * MAX_STR for i in range(MAX_SETTINGS - 2)}
    cfg |= {"i": -(2**63), "s": ""}
    ok = fields(gen=2**63 - 1, seeds=[0] * (MAX_SEEDS - 1) + [2**32 - 1], algo="a" * MAX_STR, cfg=cfg)
    e = decode_elite(pack(ok))
    assert e.generation == 2**63 - 1 and len(e.seeds) == MAX_SEEDS and len(e.settings) == MAX_SETTINGS


def test_unknown_keys_are_ignored() -> None:
    extra = fields(**{"x-future": {"a": [1, None, 2.5, b"\x00", {"b": True}]}, "z": None})
    assert decode_elite(pack(extra)) == make_elite()


def test_receiver_accepts_non_canonical_encodings() -> None:
    d = fields()
    shuffled = {k: d[k] for k in ["cfg", "params", "v", "dim", "algo", "seeds", "exp", "fit", "gen"]}
    assert decode_elite(pack(shuffled)) == make_elite()
    # gen as uint 64 instead of a positive fixint
    raw = pack(fields(gen=0)).replace(b"\xa3gen\x00", b"\xa3gen\xcf" + (7).to_bytes(8, "big"))
    assert decode_elite(raw) == make_elite()
    # fit as float 32
    f64 = pack(fields())
    as_f64 = b"\xa3fit\xcb" + np.array(-3.5, ">f8").tobytes()
    as_f32 = b"\xa3fit\xca" + np.array(-3.5, ">f4").tobytes()
    raw = f64.replace(as_f64, as_f32)
    assert raw != f64
    assert decode_elite(raw) == make_elite()


def test_wrong_experiment() -> None:
    raw = encode_elite(make_elite())
    assert decode_elite(raw, experiment_id=EXP) == make_elite()
    assert reason_of(raw, experiment_id=OTHER_EXP) == "wrong_experiment"


def test_wrong_dimension() -> None:
    raw = encode_elite(make_elite())
    assert reason_of(raw, dim=4) == "wrong_dimension"
    assert reason_of(pack(fields(dim=4))) == "wrong_dimension"
    assert reason_of(pack(fields(dim=2))) == "wrong_dimension"
    assert reason_of(pack(fields(params=b"\x00" * 13))) == "wrong_dimension"
    assert reason_of(pack(fields(params=b""))) == "wrong_dimension"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_params(bad: float) -> None:
    params = np.array([0.5, bad, 2.0], dtype="<f4").tobytes()
    assert reason_of(pack(fields(params=params))) == "non_finite"


def test_non_finite_params_any_nan_payload() -> None:
    signalling_nan = b"\x01\x00\x80\x7f"  # float32 sNaN, little-endian
    params = np.array([0.5, -1.0], dtype="<f4").tobytes() + signalling_nan
    assert reason_of(pack(fields(params=params))) == "non_finite"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_fit(bad: float) -> None:
    assert reason_of(pack(fields(fit=bad))) == "non_finite"


def test_check_order_is_schema_then_experiment_then_dimension_then_finiteness() -> None:
    nan_params = np.array([np.nan] * 4, dtype="<f4").tobytes()
    assert reason_of(pack(fields(algo="", fit=math.nan)), experiment_id=OTHER_EXP) == "bad_field"
    assert reason_of(pack(fields(fit=math.nan, dim=4)), experiment_id=OTHER_EXP) == "wrong_experiment"
    assert reason_of(pack(fields(fit=math.nan, dim=4)), experiment_id=EXP) == "wrong_dimension"
    assert reason_of(pack(fields(fit=math.nan, dim=4, params=nan_params)), dim=4) == "non_finite"


def test_remote_error_carries_reason_and_detail() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_elite(pack(fields(dim=4)))
    err = info.value
    assert isinstance(err, GaiaError)
    assert err.reason == "wrong_dimension"
    assert "16" in err.detail and str(err).startswith("wrong_dimension: ")


def test_codec_module_is_pure() -> None:
    import ast

    tree = ast.parse(Path(codec.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "math", "re", "collections", "typing", "msgpack", "numpy", "gaia_p2p"}


ANNOUNCE_VECTORS: list[dict[str, Any]] = json.loads(
    (REPO_ROOT / "protocols" / "vectors" / "announce-v1.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("vec", ANNOUNCE_VECTORS, ids=[v["name"] for v in ANNOUNCE_VECTORS])
def test_announcement_vector(vec: dict[str, Any]) -> None:
    data = bytes.fromhex(vec["hex"])
    ctx = vec.get("context", {})
    if vec["expect"] != "ok":
        with pytest.raises(RemoteProtocolError) as e:
            codec.decode_announcement(data, **ctx)
        assert e.value.reason == vec["expect"]
        return
    got = codec.decode_announcement(data, **ctx)
    want = vec["decoded"]
    assert (got.experiment_id, got.generation, got.fitness, got.dim, got.size) == (
        want["exp"], want["gen"], want["fit"], want["dim"], want["size"])
    assert codec.encode_announcement(got) == bytes.fromhex(vec.get("canonical_hex", vec["hex"]))
