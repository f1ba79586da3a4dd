#!/usr/bin/env python3
"""How fast a pool catches a member that inflates its returns, and what the lies cost before.

The real state machine (gaia_p2p/core/pool.py) with simulated members (core/poolsim.py: evaluations
finish at once, messages are delivered step by step, one generation per step or so), so that 30
trials of 10 rows (pool size x lie rate) take ~5 minutes. One member of each pool reports
return + LIE on a share (the lie rate) of the results it tells; every result is spot-checked by
``check_share`` members on average (each draws each of the others' results with probability
check_share / (n - 1)). Per (pool size, lie rate): generations until the first honest member
evicts the liar (its own catch) and until every honest member has (the others through the first
one's accusation, or their own catch), and the harm: log entries (over the honest members' logs) that are not the true return.

    python scripts/bench_pool_lies.py --trials 30
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys

import numpy as np

from gaia_p2p.core import poolsim as sim

PID = "bench-lies-0123456789abcdef0123"


def trial(n: int, rate: float, seed: int, a: argparse.Namespace) -> tuple[int | None, int | None, int, int]:
    """(generations at which the first and the last honest member evicted the liar, None if never;
    lies told; lies in the log)."""
    names = [f"h{k}-{seed}" for k in range(n - 1)] + [f"L-{seed}"]
    ms = [sim.Member(name, pid=PID, lam=a.popsize, dim=4, check_share=a.check_share,
                     lie=a.lie if name.startswith("L") else 0.0, lie_rate=rate) for name in names]
    honest, liar = ms[:-1], ms[-1]
    sim.form(ms)
    first = caught = None
    for t in range(a.max_steps):
        sim.step(ms, t * 0.05)
        if first is None and any(liar.name in m.pool.evicted for m in honest):
            first = min(m.pool.generation for m in honest)
        if caught is None and all(liar.name in m.pool.evicted for m in honest):
            caught = min(m.pool.generation for m in honest)
            break
    harm = 0
    h = honest[0]
    for g, told in enumerate(h.pool.log):
        truth = sim.quadratic(h.candidates(g), h.pool.seeds_for(g)).astype(np.float32)
        harm += int(np.sum(told != truth))
    return first, caught, liar.lies_told, harm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4,8")
    ap.add_argument("--rates", default="1,0.5,0.2,0.1,0.05")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--popsize", type=int, default=32)
    ap.add_argument("--check-share", type=float, default=0.05)
    ap.add_argument("--lie", type=float, default=10.0, help="what a lie adds to the true return")
    ap.add_argument("--max-steps", type=int, default=2000)
    a = ap.parse_args()
    cmd = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__), *sys.argv[1:]])
    print(f"Command: `{cmd}`\n")
    print("| pool size | lie rate | caught | generations to the first honest member's eviction, median "
          "| generations to eviction by every honest member, median (p90, max) "
          "| lies told before, median (max) | lies in the log (the harm), median (max) |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(x) for x in a.sizes.split(",")):
        for rate in (float(x) for x in a.rates.split(",")):
            rs = [trial(n, rate, s, a) for s in range(a.trials)]
            firsts = [f for f, _, _, _ in rs if f is not None]
            gens = sorted(g for _, g, _, _ in rs if g is not None)
            told = [t for _, _, t, _ in rs]
            harm = [h for _, _, _, h in rs]
            p90 = gens[min(len(gens) - 1, int(0.9 * len(gens)))] if gens else None
            print(f"| {n} | {rate:g} | {len(gens)} of {len(rs)} | "
                  f"{statistics.median(firsts) if firsts else '-'} | "
                  f"{statistics.median(gens) if gens else '-'} ({p90}, {gens[-1] if gens else '-'}) | "
                  f"{statistics.median(told):g} ({max(told)}) | {statistics.median(harm):g} ({max(harm)}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
