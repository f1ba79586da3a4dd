#!/usr/bin/env python
"""Benchmark spirals fitness throughput: numpy vs torch on the CPU (vs torch on CUDA when present).

Evaluations (candidates scored on the whole 512-point dataset) per second of wall time, for each
population size, through the same functions the daemon uses:

  numpy           gaia_p2p.problems.spirals.evaluate_spirals, float64, 1 BLAS thread (as in a worker)
  torch-cpu x1    gaia_p2p.problems.torch_backend.evaluate_spirals_torch, float64, 1 thread
  torch-cpu xN    the same with N = all allowed cores as intra-op threads (what Evaluator does with
                  backend torch: the whole population in one process); only when N > 1
  torch-cuda      float64 on the GPU (the daemon's setting), and float32 for reference; only when
                  torch sees a GPU. Host-to-device copy of X and the copy back are in the time.

Every repeat measures every workload, interleaved; the median of the repeats is reported, and the
ratio is that median over numpy's at the same population size. "max |d|" is the largest absolute
difference of the fitness from numpy's on the measured population.

    python scripts/bench_torch.py                  # popsize 64, 256, 1024; 5 repeats
    python scripts/bench_torch.py --hidden 32 32   # a bigger MLP (more work per candidate)
    python scripts/bench_torch.py --quick          # smoke test (a second or two)

Needs numpy and, for the torch rows, torch; runs from a checkout without installing gaia-p2p.
"""

from __future__ import annotations

import os
import sys

# One BLAS/OpenMP thread for numpy (and torch's default), set before numpy or torch is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's gaia_p2p

import numpy as np  # noqa: E402

from gaia_p2p.problems import spirals  # noqa: E402

Fn = Callable[[np.ndarray], np.ndarray]


def timed(fn: Fn, X: np.ndarray, min_time: float) -> float:
    """Evaluations per second: calls fn(X) until at least min_time seconds have passed."""
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn(X)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return calls * X.shape[0] / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--popsizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--hidden", type=int, nargs="+", default=[16], help="hidden layer sizes (default 16)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of every workload (default 5)")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per timed repeat (default 0.5)")
    ap.add_argument("--sigma", type=float, default=0.5, help="std of the random parameters")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--no-torch", action="store_true", help="numpy only")
    ap.add_argument("--quick", action="store_true", help="smoke test: popsize 64 and 256, 1 repeat, 0.05 s")
    args = ap.parse_args(argv)
    if args.quick:
        args.popsizes = [p for p in args.popsizes if p <= 256] or [64]
        args.repeats, args.min_time = 1, 0.05

    print("command:", shlex.join([sys.executable, *sys.argv]))
    hidden = tuple(args.hidden)
    sizes = spirals.layer_sizes(hidden)
    P = spirals.param_count(sizes)
    points, _ = spirals.dataset()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def numpy_fn(X: np.ndarray) -> np.ndarray:
        return spirals.evaluate_spirals(X, hidden)

    # name -> (setup run before timing, fitness function)
    workloads: dict[str, tuple[Callable[[], None], Fn]] = {"numpy": (lambda: None, numpy_fn)}
    torch_note = "torch not measured (--no-torch)"
    if not args.no_torch:
        try:
            import torch
        except ImportError as e:
            torch_note = f"torch skipped: {e}"
        else:
            from gaia_p2p.problems.torch_backend import evaluate_spirals_torch

            def threads(k: int) -> Callable[[], None]:
                return lambda: torch.set_num_threads(k)

            def on(device: str, dtype: str = "float64") -> Fn:
                return lambda X: evaluate_spirals_torch(X, hidden, device=device, dtype=dtype)

            workloads["torch-cpu x1"] = (threads(1), on("cpu"))
            if cores > 1:
                workloads[f"torch-cpu x{cores}"] = (threads(cores), on("cpu"))
            gpu = "no CUDA GPU"
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
                workloads["torch-cuda f64"] = (threads(1), on("cuda"))
                workloads["torch-cuda f32"] = (threads(1), on("cuda", "float32"))
            torch_note = f"torch {torch.__version__} (CUDA build {torch.version.cuda}; {gpu})"
    print(f"python {platform.python_version()}, numpy {np.__version__}, {torch_note}, {cores} cores allowed, "
          f"machine {platform.machine()}")
    print(f"problem: spirals, {points.shape[0]} points, MLP {sizes} ({P} parameters), float64 unless "
          f"marked f32; repeats {args.repeats} x >= {args.min_time} s, sigma {args.sigma}, seed {args.seed}")

    rng = np.random.default_rng(args.seed)
    pops = {n: args.sigma * rng.standard_normal((n, P)) for n in args.popsizes}
    diff: dict[tuple[str, int], float] = {}
    for n, X in pops.items():  # warm up (kernels, caches, CUDA context) and check agreement
        ref = numpy_fn(X)
        for name, (setup, fn) in workloads.items():
            setup()
            diff[name, n] = float(np.max(np.abs(fn(X) - ref)))
    rates: dict[tuple[str, int], list[float]] = {(name, n): [] for name in workloads for n in pops}
    for _ in range(args.repeats):  # interleaved: drifts in machine load hit every workload alike
        for name, (setup, fn) in workloads.items():
            setup()  # thread-count changes stay out of the timed calls
            fn(pops[args.popsizes[0]])
            for n, X in pops.items():
                rates[name, n].append(timed(fn, X, args.min_time))

    print()
    print("evaluations/s (median of the repeats); ratio = this / numpy at the same popsize")
    header = f"{'backend':<16} {'popsize':>7} {'evals/s':>12} {'ms/gen':>9} {'ratio':>7} {'max |d|':>9}"
    print(header)
    print("-" * len(header))
    for n in pops:
        base = statistics.median(rates["numpy", n])
        for name in workloads:
            med = statistics.median(rates[name, n])
            print(f"{name:<16} {n:>7} {med:>12,.0f} {1000 * n / med:>9.2f} {med / base:>7.2f} "
                  f"{diff[name, n]:>9.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
