"""/gaia/telemetry/1.0.0 (node/pull.py): request checks, response decoding, who is pulled next."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gaia_p2p.core.schedule import next_due
from gaia_p2p.core.telemetry import Telemetry, encode_telemetry
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node import pull

RNG = np.random.default_rng(0)

EXP = "a" * 32


def beat(**kw) -> Telemetry:
    base = dict(experiment_id=EXP, time=1.0, generation=7, evaluations=70, episodes=70, evals_per_s=3.5,
                best_fitness=-1.5, mean_fitness=-9.0, sigma=0.3, algorithm="cmaes", settings={"sigma0": 0.5})
    return Telemetry(**(base | kw))


def test_a_request_for_our_experiment_is_answered():
    assert pull.decide(pull.encode_request(EXP), experiment_id=EXP) is None


@pytest.mark.parametrize("req, err", [
    (b"", "bad_request"),
    (b"\xc1", "bad_request"),
    (msgpack.packb([1, EXP]), "bad_request"),
    (msgpack.packb({"exp": EXP}), "bad_request"),
    (msgpack.packb({"v": True, "exp": EXP}), "bad_request"),
    (msgpack.packb({"v": 2, "exp": EXP}), "unsupported_version"),
    (msgpack.packb({"v": 1, "exp": "b" * 32}), "wrong_experiment"),
    (msgpack.packb({"v": 1}), "wrong_experiment"),
])
def test_bad_requests_are_refused_with_a_reason(req, err):
    assert pull.decide(req, experiment_id=EXP) == err


def test_the_response_is_the_heartbeat_itself_checked_by_the_telemetry_decoder():
    got = pull.decode_response(encode_telemetry(beat()), experiment_id=EXP)
    assert isinstance(got, Telemetry) and got.generation == 7 and got.best_fitness == -1.5
    with pytest.raises(RemoteProtocolError) as e:
        pull.decode_response(encode_telemetry(beat(experiment_id="c" * 32)), experiment_id=EXP)
    assert e.value.reason == "wrong_experiment"


@pytest.mark.parametrize("err", pull.ERRORS)
def test_refusals_decode_to_their_code(err):
    assert pull.decode_response(pull.encode_refusal(err), experiment_id=EXP) == err


@pytest.mark.parametrize("data, reason", [
    (b"\xc1", "malformed"),
    (msgpack.packb({"v": 1, "err": "please_crash"}), "malformed"),
    (msgpack.packb({"v": 1, "err": "rate_limited", "x": 1}), "malformed"),
    (msgpack.packb({"v": 2, "err": "rate_limited"}), "malformed"),
    (b"\x00" * 5000, "oversize"),
    (msgpack.packb([1, 2, 3]), "malformed"),
])
def test_hostile_responses_raise_only_remote_protocol_errors(data, reason):
    with pytest.raises(RemoteProtocolError) as e:
        pull.decode_response(data, experiment_id=EXP)
    assert e.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_response_bytes_decode_or_raise_a_remote_protocol_error(data):
    try:
        got = pull.decode_response(data, experiment_id=EXP)
    except RemoteProtocolError:
        return
    assert isinstance(got, (Telemetry, str))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_request_bytes_get_a_decision(data):
    assert pull.decide(data, experiment_id=EXP) in (None, *pull.ERRORS)


def test_the_stalest_island_is_pulled_first_and_fresh_or_backed_off_ones_not_at_all():
    peers = ["a", "b", "c", "d"]
    seen = {"a": 100.0, "b": 50.0, "c": 95.0}  # d: never heard from
    assert next_due(peers, seen, {}, now=0.0, wall_now=105.0, max_age=10.0, rng=RNG) == "d"
    assert next_due(peers, seen, {"d": 5.0}, now=0.0, wall_now=105.0, max_age=10.0, rng=RNG) == "b"
    # c (10 s) is due, a (5 s) is not; b backed off
    assert next_due(peers, seen, {"d": 5.0, "b": 5.0}, now=0.0, wall_now=105.0, max_age=10.0, rng=RNG) == "c"
    assert next_due(peers, seen, {"d": 5.0, "b": 5.0, "c": 1.0}, now=0.0, wall_now=105.0, max_age=10.0, rng=RNG) is None
    assert next_due([], {}, {}, now=0.0, wall_now=0.0, max_age=10.0, rng=RNG) is None


def test_older_nodes_and_other_experiments_are_asked_again_only_much_later():
    assert pull.BACKOFF_S["failed_unreachable"] > 10.0
    assert pull.BACKOFF_S["refused_wrong_experiment"] >= pull.BACKOFF_S["failed_unreachable"]
