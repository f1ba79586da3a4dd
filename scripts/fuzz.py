#!/usr/bin/env python3
"""Longer fuzzing of every decoder a peer can reach (CI runs a bounded version in tests/property).

    python scripts/fuzz.py --examples 20000        # per target; prints counts by outcome

Targets: the elite decoder (gaia-migration-v1) and the telemetry decoder (gaia-telemetry-v1), fed
arbitrary bytes and arbitrary msgpack maps over the schemas' keys. The only allowed failure is the project's
RemoteProtocolError; anything else is a bug and is raised with the input that caused it.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaia_p2p.core.codec import decode_elite
from gaia_p2p.core.telemetry import decode_telemetry
from gaia_p2p.errors import RemoteProtocolError

EXP = "3a9d91285ced4481bb7ecd382713b7d7"
leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40), st.binary(max_size=64))
tree = st.recursive(leaf, lambda k: st.one_of(st.lists(k, max_size=8), st.dictionaries(st.text(max_size=8), k, max_size=8)),
                    max_leaves=40)
keys = st.sampled_from(["v", "exp", "gen", "fit", "seeds", "dim", "params", "algo", "cfg", "t", "evals", "eps",
                        "rate", "best", "mean", "sigma", "mig", "peers", "caps", "acc"])


def packed_maps():
    return st.dictionaries(keys, tree, max_size=20).map(lambda d: _pack(d))


def _pack(d):
    try:
        return msgpack.packb(d, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"


def run(name, decode, n):
    outcomes = collections.Counter()

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=2048), packed_maps()))
    def target(data):
        try:
            decode(data)
            outcomes["ok"] += 1
        except RemoteProtocolError as e:
            outcomes[e.reason] += 1

    t0 = time.perf_counter()
    target()
    print(f"{name:10s} {sum(outcomes.values()):7d} inputs in {time.perf_counter() - t0:5.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=5000)
    a = ap.parse_args()
    print(f"# python scripts/fuzz.py --examples {a.examples}")
    run("elite", lambda d: decode_elite(d, experiment_id=EXP, dim=5), a.examples)
    run("telemetry", lambda d: decode_telemetry(d, experiment_id=EXP), a.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
