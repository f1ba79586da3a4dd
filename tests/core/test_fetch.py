"""/gaia/elite/1.0.0 messages and the responder's decision (node/fetch.py, pure parts)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaia_p2p.core import codec
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node import fetch

from helpers import exp_id, make_elite

EXP = exp_id("sphere", 5)


def _best(fitness: float = -1.0) -> tuple[bytes, float]:
    return codec.encode_elite(make_elite(np.ones(5), fitness, experiment=EXP)), fitness


def _err(resp: bytes) -> str | None:
    return msgpack.unpackb(resp, raw=False).get("err")


def test_request_round_trip_and_nan_above_is_nil():
    assert fetch.decode_request(fetch.encode_request(EXP, -3.5)) == (EXP, -3.5)
    assert fetch.decode_request(fetch.encode_request(EXP, None)) == (EXP, None)
    assert fetch.decode_request(fetch.encode_request(EXP, float("nan"))) == (EXP, None)
    assert len(fetch.encode_request(EXP, -3.5)) < 64  # "what I have" costs a few bytes


@pytest.mark.parametrize("body, code", [
    ({"v": 2, "exp": EXP}, "unsupported_version"),
    ({"exp": EXP}, "unsupported_version"),
    ({"v": True, "exp": EXP}, "unsupported_version"),
    ({"v": 1, "exp": "short"}, "bad_request"),
    ({"v": 1, "exp": EXP, "above": "high"}, "bad_request"),
    ({"v": 1, "exp": EXP, "above": float("inf")}, "bad_request"),
])
def test_bad_requests_get_an_error_code(body, code):
    resp = fetch.answer(msgpack.packb(body), experiment_id=EXP, best=_best)
    assert _err(resp) == code


def test_undecodable_and_oversized_requests_are_bad_requests():
    assert _err(fetch.answer(b"\xc1", experiment_id=EXP, best=_best)) == "bad_request"
    assert _err(fetch.answer(b"\x90" * 300, experiment_id=EXP, best=_best)) == "bad_request"


def test_responder_sends_its_best_only_when_it_beats_the_askers():
    req = fetch.encode_request
    assert _err(fetch.answer(req(exp_id("sphere", 6), None), experiment_id=EXP, best=_best)) == "wrong_experiment"
    assert _err(fetch.answer(req(EXP, None), experiment_id=EXP, best=lambda: None)) == "no_elite"
    assert _err(fetch.answer(req(EXP, -1.0), experiment_id=EXP, best=_best)) == "not_better"  # equal is not better
    assert _err(fetch.answer(req(EXP, 0.0), experiment_id=EXP, best=_best)) == "not_better"
    assert len(fetch.answer(req(EXP, 0.0), experiment_id=EXP, best=_best)) < 32
    resp = fetch.answer(req(EXP, -2.0), experiment_id=EXP, best=_best)
    got = fetch.decode_response(resp, experiment_id=EXP, dim=5)
    assert got == make_elite(np.ones(5), -1.0, experiment=EXP)
    assert fetch.decode_response(fetch.answer(req(EXP, None), experiment_id=EXP, best=_best),
                                 experiment_id=EXP, dim=5) == got


def test_response_checks_are_the_gossip_elites_checks():
    elite = codec.encode_elite(make_elite(np.ones(5), -1.0, experiment=EXP))
    with pytest.raises(RemoteProtocolError) as e:
        fetch.decode_response(fetch.encode_response(elite=elite), experiment_id=EXP, dim=6)
    assert e.value.reason == codec.WRONG_DIMENSION
    with pytest.raises(RemoteProtocolError) as e:
        fetch.decode_response(fetch.encode_response(elite=elite), experiment_id=exp_id("sphere", 6), dim=5)
    assert e.value.reason == codec.WRONG_EXPERIMENT
    for bad, reason in [(b"\xc1", codec.MALFORMED), (msgpack.packb([1]), codec.MALFORMED),
                        (msgpack.packb({"v": 9}), codec.BAD_VERSION),
                        (msgpack.packb({"v": 1, "elite": "text"}), codec.BAD_FIELD),
                        (msgpack.packb({"v": 1}), codec.BAD_FIELD),
                        (b"\x00" * (fetch.MAX_RESPONSE_BYTES + 1), codec.OVERSIZE)]:
        with pytest.raises(RemoteProtocolError) as e:
            fetch.decode_response(bad, experiment_id=EXP, dim=5)
        assert e.value.reason == reason, bad[:20]
    assert fetch.decode_response(fetch.encode_response(err="no_elite"), experiment_id=EXP, dim=5) == "no_elite"


def test_encode_response_refuses_nonsense():
    with pytest.raises(ValueError):
        fetch.encode_response()
    with pytest.raises(ValueError):
        fetch.encode_response(elite=b"x", err="no_elite")
    with pytest.raises(ValueError):
        fetch.encode_response(err="because")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoders_raise_only_remote_protocol_errors(data):
    for call in (lambda: fetch.decode_request(data), lambda: fetch.decode_response(data, experiment_id=EXP, dim=5)):
        try:
            call()
        except RemoteProtocolError:
            pass
    resp = fetch.answer(data, experiment_id=EXP, best=_best)  # never raises, always a valid response
    assert _err(resp) in fetch.ERRORS or fetch.decode_response(resp, experiment_id=EXP, dim=5)



def test_the_responder_uploads_at_most_its_byte_budget_to_all_askers_together():
    """A 1 MiB elite asked for by 1,000 identities (each within its own rate): 8 answers carry it in
    the first instant (the 8 MiB burst), then 4 a second (4 MiB/s), the rest are refused ``rate_limited``."""
    big = codec.encode_elite(make_elite(np.ones(262_000, np.float32), 1.0, experiment=EXP))
    service = fetch.EliteService(host=None, experiment_id=EXP, dim=262_000, best=lambda: (big, 1.0))
    req = fetch.encode_request(EXP, None)
    errs = [service.respond(f"sybil{i}", req, now=0.0)[1] for i in range(1000)]
    assert errs.count(None) == fetch.SERVE_BYTES_BURST // len(big) == 8
    assert set(errs) == {None, "rate_limited"}
    later = [service.respond(f"sybil{i}", req, now=1.0)[1] for i in range(1000, 1010)]
    assert later.count(None) == (fetch.SERVE_BYTES_PER_S + fetch.SERVE_BYTES_BURST % len(big)) // len(big) == 4
    resp, err = service.respond("small", fetch.encode_request(EXP, 5.0), now=1.0)
    assert err == "not_better" and len(resp) < 64  # refusals cost nothing against the budget
