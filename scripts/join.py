#!/usr/bin/env python3
"""A fresh node joins a running experiment: how long until it holds the network's best?

    python scripts/join.py --nodes 4 --mature 60 --trials 3

Starts N real `gaia-node` processes (node 0 the bootstrap), lets them run `--mature` seconds, then,
`--trials` times: reads the network's best from the nodes' status, starts one fresh node (new data
dir, new identity) bootstrapped to node 0, and polls its status until its resident is at least that
good (`--watch` s at most), then stops it. Done twice: with the elite protocol (`/gaia/elite/1.0.0`,
the default: a joiner asks 3 peers for their best) and without (`migration.fetch=false`: the joiner waits for
publishes on gossip, which the network-wide budget spaces out and which "news only" suppresses
while nothing improves). Every process is ended by PID on exit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gaia_p2p.node.control import query_local_status  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_islands import Node  # noqa: E402  (a node process: start with --listen on 127.0.0.1, stop by PID)


def status(p: Node) -> dict | None:
    try:
        return query_local_status(p.dir / "control.sock", timeout_s=5)
    except (OSError, ValueError):
        return None


def started(base: Path, name: str, args: list[str]) -> Node:
    n = Node(base, name, args)
    n.start()
    return n


def wait_status(p: Node, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = status(p)
        if st is not None:
            return st
        if p.proc.poll() is not None:
            raise RuntimeError(f"node exited: see {p.log_path}")
        time.sleep(0.2)
    raise RuntimeError(f"no status within {timeout} s: see {p.log_path}")


def one_mode(a: argparse.Namespace, fetch: bool) -> list[dict]:
    base = Path(tempfile.mkdtemp(prefix="gaia-join-"))
    (base / "empty.toml").write_text("bootstrap = []\n")
    common = ["--problem", a.problem, "--dim", str(a.dim), "--workers", "0",
              "--set", f"evaluation.duty_cycle={a.duty_cycle}", "--log-format", "json",
              "--set", f"network.bootstrap_file={base / 'empty.toml'}", "--set", "telemetry_interval_s=5",
              "--set", "checkpoint_interval_s=3600"]
    if a.network_rate is not None:
        common += ["--set", f"migration.network_rate={a.network_rate}"]
    procs: list[Node] = []
    out = []
    try:
        procs.append(started(base, "n0", common + ["--seed", "0"]))
        boot = wait_status(procs[0], 60)["addrs"][0]
        for i in range(1, a.nodes):
            procs.append(started(base, f"n{i}", common + ["--seed", str(i), "--bootstrap", boot]))
        for p in procs:
            wait_status(p, 60)
        time.sleep(a.mature)
        for t in range(a.trials):
            sts = [status(p) for p in procs]
            best = max(s["island"]["best_fitness"] for s in sts if s and s["island"]["best_fitness"] is not None)
            j = started(base, f"join{t}", common + ["--seed", str(100 + t), "--bootstrap", boot]
                     + ([] if fetch else ["--set", "migration.fetch=false"]))
            t0 = time.monotonic()
            reached = first_peer = None
            st = None
            while time.monotonic() - t0 < a.watch:
                st = status(j)
                if st is not None:
                    if first_peer is None and st["peers"]:
                        first_peer = time.monotonic() - t0
                    f = st["island"]["best_fitness"]
                    if f is not None and f >= best - 1e-9 * abs(best):
                        reached = time.monotonic() - t0
                        break
                time.sleep(0.25)
            row = {"fetch": fetch, "trial": t, "network_best": best, "reached_s": reached,
                   "first_peer_s": first_peer,
                   "joiner_best": None if st is None else st["island"]["best_fitness"],
                   "joiner_accepted": None if st is None else st["migrants"]["accepted"],
                   "elite_fetch": None if st is None else st.get("elite_fetch")}
            print(json.dumps(row), flush=True)
            out.append(row)
            j.stop()
    finally:
        for p in procs:
            p.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4, help="the running network")
    ap.add_argument("--mature", type=float, default=60, help="seconds the network runs before the first join")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--watch", type=float, default=60, help="seconds a joiner gets to reach the network's best")
    ap.add_argument("--problem", default="rastrigin")
    ap.add_argument("--dim", type=int, default=30)
    ap.add_argument("--duty-cycle", type=float, default=0.1)
    ap.add_argument("--network-rate", type=float, default=None,
                    help="every node's migration.network_rate: 0.05 with 4 nodes gives each the 80 s publish gap of "
                         "40 nodes at the default 0.5")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    print(f"# python scripts/join.py {' '.join(sys.argv[1:])}", flush=True)
    rows = one_mode(a, True) + one_mode(a, False)
    for fetch in (True, False):
        rs = [r["reached_s"] for r in rows if r["fetch"] is fetch]
        ok = [x for x in rs if x is not None]
        print(f"# {'with fetch' if fetch else 'without fetch'}: reached the network's best in {len(ok)} of {len(rs)}"
              f" trials; seconds {', '.join('-' if x is None else f'{x:.1f}' for x in rs)}"
              f"{'; median ' + format(statistics.median(ok), '.1f') if ok else ''}")
    if a.out:
        a.out.write_text(json.dumps({"command": "python scripts/join.py " + " ".join(sys.argv[1:]), "rows": rows},
                                    indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
