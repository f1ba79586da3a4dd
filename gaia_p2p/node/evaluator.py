"""Fitness off the event loop: chunks of the population go to worker processes (trio-parallel).

Each worker steps many candidates in lockstep (problems/lunar.py), BLAS threads pinned to 1.
``workers = 0`` evaluates in a thread instead (cheap test functions, in-process tests).

``torch:*`` problems (a user's torch module, problems/torch_policy.py) run in torch on the device
whatever the backend: split between workers like the numpy MLP on the CPU, in ONE call on cuda.

``backend = "torch"`` sends the whole population to ONE call (one batched pass, so a GPU's memory
is not split between processes): a worker process when ``workers > 0``, where torch on the CPU then
uses ``workers`` intra-op threads; a thread when ``workers = 0``, with torch's own thread setting.
The device (``auto | cpu | cuda``) is resolved once, here in the constructor, which raises
:class:`~gaia_p2p.errors.EvaluationError` with the fix when torch is missing or CUDA is asked for
but unavailable (this imports torch in the calling process).
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import trio
import trio_parallel

from gaia_p2p.core.experiment import ProblemConfig
from gaia_p2p.errors import EvaluationError
from gaia_p2p.problems.evaluate import BACKENDS, evaluate_batch, pin_blas_threads


def _cpu_timed(fn, *args):  # type: ignore[no-untyped-def]
    """Worker side: ``fn(*args)`` and the CPU seconds this process spent on it (all its threads)."""
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def _evaluate_torch(problem: ProblemConfig, X: np.ndarray, seeds: tuple[int, ...], device: str,
                    threads: int) -> np.ndarray:
    """Worker-side torch evaluation; ``threads > 0`` sets torch's CPU intra-op threads first."""
    if threads > 0 and device == "cpu":
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return evaluate_batch(problem, X, seeds, backend="torch", device=device)


class Evaluator:
    def __init__(self, problem: ProblemConfig, workers: int, *, backend: str = "numpy",
                 device: str = "auto") -> None:
        if backend not in BACKENDS:
            raise EvaluationError(f"evaluation.backend = {backend!r} is not one of {', '.join(BACKENDS)}; "
                                  f"pass --backend numpy or --backend torch")
        self.problem = problem
        self.workers = workers
        self.backend = backend
        self.device = device
        if backend == "torch" or problem.is_torch:
            from gaia_p2p.problems.torch_backend import resolve_device

            self.device = resolve_device(device)  # "cpu" or "cuda"; fails here, at start, with the fix
        # the whole population in one call: the torch backend, and a torch module on a GPU (one CUDA
        # context, not one per worker); a torch module on the CPU is split between workers like the
        # numpy MLP, so that the envs of each chunk step in parallel
        self.one_call = backend == "torch" or (problem.is_torch and self.device == "cuda")
        self.limiter = trio.CapacityLimiter(max(1, workers))
        self.thread_cpu_s = 0.0  # CPU spent evaluating in threads (workers = 0), for the node's CPU split
        self.cpu_s = 0.0  # CPU spent evaluating, in worker processes and threads (the duty cycle's measure)
        if workers > 0:
            pin_blas_threads()  # before the first worker process is spawned: they inherit the env

    def _timed(self, fn, *args):  # type: ignore[no-untyped-def]
        t0 = time.thread_time()
        try:
            return fn(*args)
        finally:
            dt = time.thread_time() - t0
            self.thread_cpu_s += dt
            self.cpu_s += dt

    async def call(self, fn, *args):  # type: ignore[no-untyped-def]
        """``fn(*args)`` (a module-level function) off the event loop: in a worker process, or in a
        thread with ``workers = 0``; its CPU time counts in ``cpu_s``."""
        out, _ = await self.call_timed(fn, *args)
        return out

    async def call_timed(self, fn, *args):  # type: ignore[no-untyped-def]
        """:meth:`call`, and the CPU seconds this call took (for a rest after it: other calls may
        run meanwhile, so the change of ``cpu_s`` would count theirs too)."""
        if self.workers == 0:
            # one thread at a time: problems keep per-process caches (gym envs) that are not thread-safe
            before = self.cpu_s
            out = await trio.to_thread.run_sync(self._timed, fn, *args, limiter=self.limiter)
            return out, self.cpu_s - before  # one thread at a time: nothing else counted meanwhile
        out, cpu = await trio_parallel.run_sync(_cpu_timed, fn, *args, kill_on_cancel=True, limiter=self.limiter)
        self.cpu_s += cpu
        return out, cpu

    async def evaluate(self, X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        if self.one_call:
            return await self.call(_evaluate_torch, self.problem, X, seeds, self.device, self.workers)
        evaluate = partial(evaluate_batch, device=self.device)  # the device: torch:* problems only
        if self.workers == 0:
            return await self.call(evaluate, self.problem, X, seeds)
        chunks = np.array_split(X, min(self.workers, len(X)))
        results: list[np.ndarray | None] = [None] * len(chunks)

        async def one(i: int, chunk: np.ndarray) -> None:
            results[i] = await self.call(evaluate, self.problem, chunk, seeds)

        async with trio.open_nursery() as nursery:
            for i, chunk in enumerate(chunks):
                nursery.start_soon(one, i, chunk)
        return np.concatenate([r for r in results if r is not None])
