#!/usr/bin/env python3
"""Longer fuzzing of every decoder a peer can reach (CI runs a bounded version in tests/property).

    python scripts/fuzz.py --examples 20000        # per target; prints counts by outcome
    python scripts/fuzz.py --engine atheris --max-time 60     # coverage-guided, per target (pip install atheris)

Targets: the elite decoder (gaia-migration-v1) and the telemetry decoder (gaia-telemetry-v1). The only
allowed failure is the project's RemoteProtocolError; anything else is a bug.

hypothesis (default): arbitrary bytes and arbitrary msgpack maps over the schemas' keys; a bug is raised
with the input that caused it. atheris (optional, ``pip install -e .[fuzz]``): libFuzzer mutating raw
bytes, guided by line coverage of ``gaia_p2p`` (instrumented at import), starting from the protocol's
test vectors and a valid telemetry message. Each target runs in its own child process (libFuzzer ends
the process when done), for ``--max-time`` seconds or ``--runs`` inputs; a crashing input is written
to ``--artifacts`` and the child's exit status is nonzero.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent

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
    from gaia_p2p.errors import RemoteProtocolError

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


# --------------------------------------------------------------------------------------------------
# atheris

#: The elite target decodes in the context of the first test vector, so its seeds reach the deep checks.
VECTORS = REPO / "protocols" / "vectors" / "migration-v1.json"


def atheris_seeds(target: str) -> tuple[dict[str, object], list[bytes]]:
    """(decoder context, seed inputs) for one target."""
    if target == "elite":
        vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
        seeds = [bytes.fromhex(v["hex"]) * v.get("repeat", 1) for v in vectors]
        return dict(vectors[0]["context"]), [s for s in seeds if len(s) <= 300_000]
    from gaia_p2p.core.telemetry import Migration, Telemetry, encode_telemetry

    t = Telemetry(experiment_id=EXP, time=1.7e9, generation=12, evaluations=400, episodes=420, evals_per_s=321.5,
                  best_fitness=-3.5, mean_fitness=-9.25, sigma=0.4, algorithm="cmaes",
                  settings={"sigma0": 0.5, "popsize": 32}, sent=3, received=5, accepted=1, rejected=4, peers=2,
                  cpus=2, gpu=None, gpu_mem_mb=0,
                  migrations=(Migration("12D3KooWDkEtg6nnMgpSciWD8pkaDJCTyrTkWP9DyNhaht9DPGLN", 10, 12.5),))
    return {"experiment_id": EXP}, [encode_telemetry(t)]


def atheris_child(target: str, libfuzzer_args: list[str]) -> None:
    """Runs in a child process: instrument gaia_p2p, fuzz one decoder; libFuzzer exits the process."""
    try:
        import atheris
    except ImportError:
        sys.exit("fuzz: atheris is not installed; pip install atheris (or pip install -e .[fuzz])")
    with atheris.instrument_imports(include=["gaia_p2p"]):
        from gaia_p2p.core.codec import decode_elite
        from gaia_p2p.core.telemetry import decode_telemetry
        from gaia_p2p.errors import RemoteProtocolError
    context, _ = atheris_seeds(target)
    decode = decode_elite if target == "elite" else decode_telemetry

    def one_input(data: bytes) -> None:
        try:
            decode(data, **context)
        except RemoteProtocolError:
            pass

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def atheris_main(a: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("atheris") is None:  # the children import it
        print("fuzz: atheris is not installed; pip install atheris (or pip install -e .[fuzz])", file=sys.stderr)
        return 2
    artifacts = Path(a.artifacts or tempfile.mkdtemp(prefix="gaia-fuzz-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    worst = 0
    for target in ("elite", "telemetry"):
        corpus = artifacts / f"corpus-{target}"
        corpus.mkdir(exist_ok=True)
        for i, seed in enumerate(atheris_seeds(target)[1]):
            (corpus / f"seed-{i:03d}").write_bytes(seed)
        flags = [f"-max_total_time={a.max_time}", f"-artifact_prefix={artifacts}/{target}-", "-print_final_stats=1",
                 f"-max_len={a.max_len}", "-timeout=10", "-rss_limit_mb=2048"]
        if a.runs:
            flags.append(f"-runs={a.runs}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--atheris-child", target, *flags, str(corpus)],
                              capture_output=True, text=True)
        log = proc.stderr
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
        cov = re.findall(r"#\d+\s+\w+\s+cov: (\d+) ft: (\d+)", log)
        crashes = sorted(p.name for p in artifacts.glob(f"{target}-*"))
        print(f"{target:10s} {int(runs[-1]) if runs else 0:9d} inputs in {time.perf_counter() - t0:5.1f} s, "
              f"cov {cov[-1][0] if cov else '?'} ft {cov[-1][1] if cov else '?'}, corpus "
              f"{len(list(corpus.iterdir()))} files, exit {proc.returncode}, crash files {crashes or 'none'}",
              flush=True)
        if proc.returncode != 0:
            print(log[-3000:], file=sys.stderr)
            worst = 1
    print(f"# artifacts and corpora in {artifacts}")
    return worst


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--atheris-child":
        atheris_child(sys.argv[2], sys.argv[3:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("hypothesis", "atheris"), default="hypothesis")
    ap.add_argument("--examples", type=int, default=5000, help="hypothesis: inputs per target")
    ap.add_argument("--max-time", type=int, default=60, help="atheris: seconds per target")
    ap.add_argument("--runs", type=int, default=0, help="atheris: stop after this many inputs per target (0: no limit)")
    ap.add_argument("--max-len", type=int, default=4096, help="atheris: longest input generated")
    ap.add_argument("--artifacts", help="atheris: where crashing inputs and corpora go (default: a new temp dir)")
    a = ap.parse_args()
    if a.engine == "atheris":
        print(f"# python scripts/fuzz.py --engine atheris --max-time {a.max_time}"
              + (f" --runs {a.runs}" if a.runs else "") + f" --max-len {a.max_len}")
        return atheris_main(a)
    from gaia_p2p.core.codec import decode_elite
    from gaia_p2p.core.telemetry import decode_telemetry

    print(f"# python scripts/fuzz.py --examples {a.examples}")
    run("elite", lambda d: decode_elite(d, experiment_id=EXP, dim=5), a.examples)
    run("telemetry", lambda d: decode_telemetry(d, experiment_id=EXP), a.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
