"""Telemetry codec: round trip, and hostile bytes only ever raise RemoteProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaia_p2p.core.telemetry import Migration, Telemetry, decode_telemetry, encode_telemetry
from gaia_p2p.errors import RemoteProtocolError

EXP = "3a9d91285ced4481bb7ecd382713b7d7"
PEER = "12D3KooWDkEtg6nnMgpSciWD8pkaDJCTyrTkWP9DyNhaht9DPGLN"


def sample(**kw) -> Telemetry:
    base = dict(experiment_id=EXP, time=1.7e9, generation=12, evaluations=400, episodes=420, evals_per_s=321.5,
                best_fitness=-3.5, mean_fitness=-9.25, sigma=0.4, algorithm="cmaes",
                settings={"sigma0": 0.5, "popsize": 32}, sent=3, received=5, accepted=1, rejected=4, peers=2,
                cpus=2, gpu=None, gpu_mem_mb=0, migrations=(Migration(PEER, 10, 12.5),))
    base.update(kw)
    return Telemetry(**base)


def test_round_trip():
    t = sample()
    assert decode_telemetry(encode_telemetry(t), experiment_id=EXP) == t
    t2 = sample(best_fitness=None, mean_fitness=None, sigma=None, gpu="NVIDIA H100", gpu_mem_mb=81000,
                migrations=())
    assert decode_telemetry(encode_telemetry(t2)) == t2


@pytest.mark.parametrize("mutate,reason", [
    (lambda d: d.update(v=2), "bad_version"),
    (lambda d: d.update(exp="zz"), "bad_field"),
    (lambda d: d.update(exp="0" * 32), "wrong_experiment"),
    (lambda d: d.update(best=float("nan")), "non_finite"),
    (lambda d: d.update(rate=float("inf")), "non_finite"),
    (lambda d: d.update(gen=-1), "bad_field"),
    (lambda d: d.update(mig=[1, 2, 3]), "bad_field"),
    (lambda d: d.update(acc=[["not base58 0OIl", 1, 1.0]]), "bad_field"),
    (lambda d: d.update(acc=[[PEER, 1, 1.0]] * 9), "bad_field"),
    (lambda d: d.update(algo="\x00evil"), "bad_field"),
    (lambda d: d.update(caps={"cpus": 2}), "bad_field"),
])
def test_rejections(mutate, reason):
    d = msgpack.unpackb(encode_telemetry(sample()))
    mutate(d)
    with pytest.raises(RemoteProtocolError) as e:
        decode_telemetry(msgpack.packb(d), experiment_id=EXP)
    assert e.value.reason == reason


def test_oversize_and_malformed():
    with pytest.raises(RemoteProtocolError) as e:
        decode_telemetry(b"\x80" * 5000)
    assert e.value.reason == "oversize"
    for junk in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"v": 1}) + b"x"):
        with pytest.raises(RemoteProtocolError) as e:
            decode_telemetry(junk)
        assert e.value.reason in ("malformed", "bad_field")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_remote_protocol_error(data):
    try:
        decode_telemetry(data)
    except RemoteProtocolError:
        pass


leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8))
tree = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                 st.dictionaries(st.text(max_size=6), kids, max_size=4)),
                    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "exp", "t", "gen", "evals", "eps", "rate", "best", "mean", "sigma",
                                        "algo", "cfg", "mig", "peers", "caps", "acc", "x"]), tree, max_size=17))
def test_arbitrary_maps_raise_only_remote_protocol_error(d):
    try:
        data = msgpack.packb(d, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    try:
        decode_telemetry(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=4))
def test_mutated_valid_messages_raise_only_remote_protocol_error(pos, patch):
    data = bytearray(encode_telemetry(sample()))
    pos %= len(data)
    data[pos:pos + len(patch)] = patch
    try:
        decode_telemetry(bytes(data), experiment_id=EXP)
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.one_of(tree, st.dictionaries(st.sampled_from(["mean", "n", "gen", "age", "cur", "src", "x"]), tree,
                                       max_size=7)), tree)
def test_hostile_r4_keys_raise_only_remote_protocol_error(tst, exact):
    d = msgpack.unpackb(encode_telemetry(sample()))
    d.update(tst=tst, exact=exact)
    try:
        data = msgpack.packb(d, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    try:
        t = decode_telemetry(data, experiment_id=EXP)
    except RemoteProtocolError:
        return
    assert type(t.exact) is bool and (t.tested is None or t.tested.episodes >= 1 and t.tested.age >= 0)
