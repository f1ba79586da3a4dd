"""Fitness off the event loop: chunks of the population go to worker processes (trio-parallel).

Each worker steps many candidates in lockstep (problems/lunar.py), BLAS threads pinned to 1.
``workers = 0`` evaluates in a thread instead (cheap test functions, in-process tests).
"""

from __future__ import annotations

import numpy as np
import trio
import trio_parallel

from gaia_p2p.core.experiment import ProblemConfig
from gaia_p2p.problems.evaluate import evaluate_batch, pin_blas_threads


class Evaluator:
    def __init__(self, problem: ProblemConfig, workers: int) -> None:
        self.problem = problem
        self.workers = workers
        self.limiter = trio.CapacityLimiter(max(1, workers))
        if workers > 0:
            pin_blas_threads()  # before the first worker process is spawned: they inherit the env

    async def evaluate(self, X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        if self.workers == 0:
            return await trio.to_thread.run_sync(evaluate_batch, self.problem, X, seeds)
        chunks = np.array_split(X, min(self.workers, len(X)))
        results: list[np.ndarray | None] = [None] * len(chunks)

        async def one(i: int, chunk: np.ndarray) -> None:
            results[i] = await trio_parallel.run_sync(
                evaluate_batch, self.problem, chunk, seeds, kill_on_cancel=True, limiter=self.limiter)

        async with trio.open_nursery() as nursery:
            for i, chunk in enumerate(chunks):
                nursery.start_soon(one, i, chunk)
        return np.concatenate([r for r in results if r is not None])
