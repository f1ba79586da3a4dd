"""core/wire.py: the one bounded decoder, its limits table and reason codes, and that each message is
decoded once (a pull's answer, a gossiped elite)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaia_p2p.core import codec, wire
from gaia_p2p.core.schedule import FetchOutcome
from gaia_p2p.core.telemetry import Telemetry, encode_telemetry
from gaia_p2p.core.wire import LIMITS, Kind, Reason
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node import fetch, pull
from gaia_p2p.node.gossip import MigrantTopic

from helpers import exp_id, make_elite

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
EXP = exp_id("sphere", 5)
PEER = "12D3KooWDkEtg6nnMgpSciWD8pkaDJCTyrTkWP9DyNhaht9DPGLN"
JSON_KINDS = {k for k, lim in LIMITS.items() if lim.encoding == "json"}


def reason(kind: Kind, data: object) -> str:
    with pytest.raises(RemoteProtocolError) as e:
        wire.decode(kind, data)
    return e.value.reason


def nested(depth: int) -> dict:
    obj: dict = {}
    for _ in range(depth - 1):
        obj = {"x": obj}
    return obj


def encoded(kind: Kind, obj: object) -> bytes:
    return json.dumps(obj).encode() if kind in JSON_KINDS else msgpack.packb(obj, use_bin_type=True)


def test_every_kind_has_limits_and_every_reason_is_specified():
    assert set(LIMITS) == set(Kind)
    specs = " ".join(p.read_text(encoding="utf-8") for p in PROTOCOLS.glob("*.md"))
    assert [r for r in Reason if f"`{r}`" not in specs] == []  # each code is listed where it is specified


@pytest.mark.parametrize("kind", list(Kind))
def test_the_size_is_checked_first_then_the_bytes_then_the_shape(kind):
    lim = LIMITS[kind]
    assert reason(kind, b"\xc1" * (lim.max_bytes + 1)) == lim.oversize
    assert reason(kind, b"\xc1") == lim.malformed
    assert reason(kind, encoded(kind, [1])) == lim.malformed  # not a map
    assert reason(kind, "text") == lim.malformed  # not bytes
    assert wire.decode(kind, encoded(kind, nested(lim.max_depth))) == nested(lim.max_depth)
    assert reason(kind, encoded(kind, nested(lim.max_depth + 1))) == lim.malformed


@pytest.mark.parametrize("kind", [k for k in Kind if k not in JSON_KINDS])
def test_msgpack_keys_are_unique_strs_and_there_are_no_extensions(kind):
    lim = LIMITS[kind]
    assert reason(kind, b"\x82\xa1v\x01\xa1v\x02") == lim.malformed  # duplicate key
    assert reason(kind, b"\x81\x01\x01") == lim.malformed  # int key
    assert reason(kind, b"\x81\xc4\x01k\x01") == lim.malformed  # bin key
    assert reason(kind, msgpack.packb({"t": msgpack.Timestamp(0)})) == lim.malformed
    assert reason(kind, msgpack.packb({"t": msgpack.ExtType(1, b"")})) == lim.malformed
    assert reason(kind, msgpack.packb({"v": 1}) + b"\x00") == lim.malformed  # trailing bytes


def test_a_declared_length_over_the_kinds_bound_is_refused_before_allocating():
    # a telemetry array may hold 256 items: a header claiming 2^32 - 1 is malformed at once
    assert reason(Kind.TELEMETRY, b"\x81\xa1a\xdd\xff\xff\xff\xff") == Reason.MALFORMED
    assert reason(Kind.TELEMETRY_REQUEST, b"\x81\xa1a\x91\x01") == Reason.BAD_REQUEST  # no arrays at all


def test_json_kinds_bound_what_the_json_parser_does_not():
    assert wire.decode(Kind.STATUS_REQUEST, b'{"v": 1}') == {"v": 1}
    assert reason(Kind.STATUS_REQUEST, b'{"v": 1, "v": 2}') == Reason.MALFORMED
    assert reason(Kind.STATUS_REQUEST, json.dumps({"a": list(range(65))}).encode()) == Reason.MALFORMED
    assert reason(Kind.STATUS_RESPONSE, b"[" * 100_000) == Reason.MALFORMED  # RecursionError inside json


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Kind)), st.binary(max_size=300))
def test_arbitrary_bytes_give_a_map_or_the_kinds_reason(kind, data):
    lim = LIMITS[kind]
    try:
        assert isinstance(wire.decode(kind, data), dict)
    except RemoteProtocolError as e:
        assert e.reason in (lim.oversize, lim.malformed)


def test_every_answer_a_fetch_or_pull_can_get_has_its_outcome():
    assert {FetchOutcome.failed(r) for r in codec.REASONS} | {FetchOutcome.answered(e) for e in fetch.ERRORS} \
        | {FetchOutcome.FETCHED, FetchOutcome.FAILED_UNREACHABLE} == set(FetchOutcome)
    telemetry_reasons = [r for r in codec.REASONS if r != Reason.WRONG_DIMENSION]
    assert {pull.PullOutcome.failed(r) for r in telemetry_reasons} | {pull.PullOutcome.refused(e) for e in pull.ERRORS} \
        | {pull.PullOutcome.PULLED, pull.PullOutcome.FAILED_UNREACHABLE} == set(pull.PullOutcome)
    assert FetchOutcome.answered(Reason.NO_ELITE) == "answered_no_elite"  # the counter names of gaia-status-v1


def test_an_elite_response_carries_a_known_err_only():
    assert fetch.decode_response(msgpack.packb({"v": 1, "err": "not_better"}), experiment_id=EXP, dim=5) \
        == Reason.NOT_BETTER
    with pytest.raises(RemoteProtocolError) as e:  # a peer cannot mint counter names
        fetch.decode_response(msgpack.packb({"v": 1, "err": "x" * 60}), experiment_id=EXP, dim=5)
    assert e.value.reason == Reason.BAD_FIELD


def test_a_request_naming_no_experiment_id_is_a_bad_request():
    resp = fetch.answer(msgpack.packb({"v": 1, "exp": "Z" * 32, "above": None}), experiment_id=EXP,
                        best=lambda: None)
    assert msgpack.unpackb(resp) == {"v": 1, "err": "bad_request"}


def test_telemetry_keys_are_unique_like_an_elites():
    body = encode_telemetry(Telemetry(experiment_id=EXP, time=1.0, generation=1, evaluations=1, episodes=1,
                                      evals_per_s=1.0, best_fitness=None, mean_fitness=None, sigma=None,
                                      algorithm="cmaes"))
    dup = bytes([body[0] + 1]) + body[1:] + msgpack.packb("gen") + msgpack.packb(2)
    with pytest.raises(RemoteProtocolError) as e:
        pull.decode_response(dup, experiment_id=EXP)
    assert e.value.reason == Reason.MALFORMED


class CountingUnpack:
    def __init__(self) -> None:
        self.calls, self.real = 0, msgpack.unpackb

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.real(*a, **kw)


def test_a_pulled_heartbeat_is_unpacked_once(monkeypatch):
    count = CountingUnpack()
    monkeypatch.setattr(wire.msgpack, "unpackb", count)
    beat = Telemetry(experiment_id=EXP, time=1.0, generation=7, evaluations=70, episodes=70, evals_per_s=3.5,
                     best_fitness=-1.5, mean_fitness=-9.0, sigma=0.3, algorithm="cmaes")
    assert pull.decode_response(encode_telemetry(beat), experiment_id=EXP) == beat
    assert count.calls == 1


async def test_a_gossiped_elite_is_decoded_once_by_the_validator_for_the_receiver(monkeypatch):
    from libp2p.peer.id import ID

    count = CountingUnpack()
    monkeypatch.setattr(wire.msgpack, "unpackb", count)
    elite = make_elite(np.ones(5), -1.0, experiment=EXP)
    topic = MigrantTopic("t", EXP, 5, "12D3KooWself")
    msg = SimpleNamespace(from_id=ID.from_base58(PEER).to_bytes(), seqno=b"\x00\x01", data=codec.encode_elite(elite))
    assert topic.validator("12D3KooWforwarder", msg)
    got, via = topic.take(msg)
    assert got == elite and via == "12D3KooWforwarder"
    assert count.calls == 1


# ------------------------------------------------------------------ the pool's messages (core/poolwire.py)

PID = "0123456789abcdef"
POOL_REASONS = {Reason.TOO_LARGE, Reason.NOT_MSGPACK, Reason.BAD_VERSION, Reason.BAD_FIELD, Reason.WRONG_POOL,
                Reason.NONFINITE}


def results(**kw):
    from gaia_p2p.core.pool import Results

    base = dict(generation=3, head=b"h" * 16, indices=(0, 5, 2), returns=np.array([1.0, -2.5, 3.0], np.float32),
                platform="x86_64-np2-Haswell")
    return Results(**(base | kw))


def pool_reason(call, data) -> str:
    with pytest.raises(RemoteProtocolError) as e:
        call(data)
    return e.value.reason


def test_pool_messages_round_trip():
    from gaia_p2p.core import poolwire

    got = poolwire.decode_results(poolwire.encode_results(PID, results()), pid=PID)
    assert (got.generation, got.head, got.indices, got.platform) == (3, b"h" * 16, (0, 5, 2), "x86_64-np2-Haswell")
    assert got.returns.tolist() == [1.0, -2.5, 3.0]
    assert poolwire.decode_log_request(poolwire.encode_log_request(PID, 7, b"h" * 16), pid=PID) == (7, b"h" * 16)
    start, log = poolwire.decode_log(poolwire.encode_log(PID, 2, (np.ones(3), np.zeros(1))), pid=PID)
    assert start == 2 and [r.tolist() for r in log] == [[1.0, 1.0, 1.0], [0.0]]


def test_pool_rejections_keep_the_pools_reason_codes():
    from gaia_p2p.core import poolwire

    def res(**fields):
        d = msgpack.unpackb(poolwire.encode_results(PID, results()))
        return msgpack.packb(d | fields, use_bin_type=True)

    decode = lambda data: poolwire.decode_results(data, pid=PID)  # noqa: E731
    assert pool_reason(decode, b"\x00" * (poolwire.MAX_RESULTS_BYTES + 1)) == "too_large"
    assert pool_reason(decode, b"\xc1") == "not_msgpack"
    assert pool_reason(decode, res(v=2)) == "bad_version"
    assert pool_reason(decode, res(p="f" * 16)) == "wrong_pool"
    assert pool_reason(decode, res(p="nope")) == "bad_field"
    assert pool_reason(decode, res(r=np.array([1, np.nan, 3], "<f4").tobytes())) == "nonfinite"
    assert pool_reason(decode, res(r=b"\x00" * 13)) == "bad_field"
    assert pool_reason(decode, res(i=np.array([1, 1, 2], "<u2").tobytes())) == "bad_field"  # repeated index
    assert pool_reason(decode, res(h=b"short")) == "bad_field"
    log = lambda data: poolwire.decode_log(data, pid=PID)  # noqa: E731
    assert pool_reason(log, poolwire.encode_log(PID, 0, (np.array([np.inf]),))) == "nonfinite"
    assert pool_reason(log, poolwire.encode_log(PID, 0, (np.array([]),))) == "bad_field"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_pool_decoders_raise_only_their_reasons(junk, pos, patch):
    from gaia_p2p.core import poolwire

    good = bytearray(poolwire.encode_results(PID, results()))
    good[pos % len(good):pos % len(good) + len(patch)] = patch
    for call, data in [(lambda d: poolwire.decode_results(d, pid=PID), bytes(good)),
                       (lambda d: poolwire.decode_results(d, pid=PID), junk),
                       (lambda d: poolwire.decode_log_request(d, pid=PID), junk),
                       (lambda d: poolwire.decode_log(d, pid=PID), junk)]:
        try:
            call(data)
        except RemoteProtocolError as e:
            assert e.reason in POOL_REASONS


def test_every_pool_log_answer_has_its_outcome():
    from gaia_p2p.node.pool import PoolLogOutcome

    assert {PoolLogOutcome.failed(r) for r in POOL_REASONS} | {PoolLogOutcome.FETCHED, PoolLogOutcome.REFUSED,
                                                               PoolLogOutcome.FAILED_UNREACHABLE} \
        == set(PoolLogOutcome)
