"""Property tests for gaia_p2p.core.codec: round trips, and untrusted input raises only RemoteProtocolError.

Hypothesis prints the falsifying example and the ``@reproduce_failure`` / seed line on failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gaia_p2p.core.codec import (
    MAX_ELITE_BYTES,
    MAX_SEEDS,
    MAX_SETTINGS,
    MAX_STR,
    REASONS,
    decode_elite,
    encode_elite,
)
from gaia_p2p.core.types import Elite
from gaia_p2p.errors import RemoteProtocolError

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "migration-v1.json").read_text(encoding="utf-8")
)
SEED_MESSAGES = [bytes.fromhex(v["hex"]) for v in VECTORS if v["expect"] == "ok"]

# Sized so the whole file runs in a few seconds (well under 20 s on a loaded 2-core runner).
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_STRATEGY = settings(FAST, max_examples=150)  # st.recursive generation dominates the run time

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
short_ascii = st.text(alphabet=PRINTABLE, min_size=1, max_size=MAX_STR)
finite = st.floats(allow_nan=False, allow_infinity=False)

cfg_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    finite,
    st.text(alphabet=PRINTABLE, max_size=MAX_STR),
)


@st.composite
def elites(draw: st.DrawFn) -> Elite:
    dim = draw(st.integers(1, 48))
    params = draw(
        hnp.arrays(np.float32, dim, elements=st.floats(width=32, allow_nan=False, allow_infinity=False))
    )
    return Elite(
        experiment_id=draw(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
        generation=draw(st.integers(0, 2**63 - 1)),
        fitness=draw(finite),
        seeds=tuple(draw(st.lists(st.integers(0, 2**32 - 1), max_size=MAX_SEEDS))),
        params=params,
        algorithm=draw(short_ascii),
        settings=draw(st.dictionaries(short_ascii, cfg_values, max_size=MAX_SETTINGS)),
    )


def check_untrusted(data: bytes, **ctx: Any) -> None:
    """The decoder's contract: succeed with a re-encodable elite, or raise RemoteProtocolError."""
    try:
        e = decode_elite(data, **ctx)
    except RemoteProtocolError as err:
        assert err.reason in REASONS
        return
    # Whatever a receiver accepts, it can re-encode canonically and read back unchanged.
    again = decode_elite(encode_elite(e))
    assert again == e


@FAST
@given(elites())
def test_round_trip(e: Elite) -> None:
    raw = encode_elite(e)
    assert len(raw) <= MAX_ELITE_BYTES
    got = decode_elite(raw, experiment_id=e.experiment_id, dim=e.dim)
    assert got == e
    assert encode_elite(got) == raw
    # bit-exact parameters, -0.0 included
    assert got.params.tobytes() == e.params.astype("<f4").tobytes()


@FAST
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    check_untrusted(data)


@FAST
@given(st.binary(max_size=64).map(lambda b: b"\x89" + b))
def test_arbitrary_bytes_after_a_map_header(data: bytes) -> None:
    check_untrusted(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.floats(width=32)
    | st.text(max_size=70)
    | st.binary(max_size=70),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4) | st.integers(-5, 5), children, max_size=6),
    max_leaves=20,
)


WIRE_KEYS = ["v", "exp", "gen", "fit", "seeds", "dim", "params", "algo", "cfg"]
DELETE = object()

# Top-level maps that use the wire's keys (with v = 1 half the time) get past the version check.
wire_like_maps = st.builds(
    lambda d, v1: {**d, "v": 1} if v1 else d,
    st.dictionaries(st.sampled_from(WIRE_KEYS) | st.text(max_size=8), msgpack_values, max_size=10),
    st.booleans(),
)


@SLOW_STRATEGY
@given(msgpack_values | wire_like_maps)
def test_arbitrary_msgpack_objects(obj: object) -> None:
    check_untrusted(msgpack.packb(obj, use_bin_type=True))


@FAST
@given(
    elites(),
    st.dictionaries(st.sampled_from(WIRE_KEYS + ["x-new"]), msgpack_values | st.just(DELETE), max_size=3),
    st.booleans(),
)
def test_valid_map_with_fields_replaced(e: Elite, changes: dict[str, object], use_ctx: bool) -> None:
    obj = msgpack.unpackb(encode_elite(e), raw=False)
    for key, val in changes.items():
        if val is DELETE:
            obj.pop(key, None)
        else:
            obj[key] = val
    ctx = {"experiment_id": e.experiment_id, "dim": e.dim} if use_ctx else {}
    check_untrusted(msgpack.packb(obj, use_bin_type=True), **ctx)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("extend"), st.just(0), st.binary(min_size=1, max_size=16)),
)


def mutate(data: bytes, ops: list[tuple[str, int, Any]]) -> bytes:
    buf = bytearray(data)
    for op, pos, arg in ops:
        i = pos % (len(buf) + 1)
        if op == "flip" and buf:
            buf[i % len(buf)] ^= arg
        elif op == "set" and buf:
            buf[i % len(buf)] = arg
        elif op == "truncate":
            del buf[i:]
        elif op == "delete":
            del buf[i : i + arg]
        elif op == "insert":
            buf[i:i] = arg
        elif op == "extend":
            buf += arg
    return bytes(buf)


@FAST
@given(
    st.one_of(elites().map(encode_elite), st.sampled_from(SEED_MESSAGES)),
    st.lists(mutation, min_size=1, max_size=4),
)
def test_mutated_valid_encodings(raw: bytes, ops: list[tuple[str, int, Any]]) -> None:
    check_untrusted(mutate(raw, ops))


@FAST
@given(st.sampled_from(SEED_MESSAGES), st.integers(0, 10**6), st.integers(1, 255))
def test_single_byte_flips_of_vectors(raw: bytes, pos: int, xor: int) -> None:
    buf = bytearray(raw)
    buf[pos % len(buf)] ^= xor
    check_untrusted(bytes(buf))

