"""The target test: once the resident's estimate reaches the target, score it on fresh episodes.

On a noisy problem the estimate of the best of many candidates is biased upward (the largest of
many noisy estimates), so "reached the target" means: the resident, re-scored on ``test_episodes``
fresh episodes that training never used, averages at least the target. On a deterministic problem
the estimate is the score, and no episode is spent.

Pure: the shell asks :meth:`TargetTest.due` after every generation with trio's ``now``, runs the
test it is told to (in the evaluation workers), and hands the result to :meth:`TargetTest.record`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FreshScore:
    """One test of a resident on fresh episodes (the ``last_test`` of ``gaia-node status``)."""

    generation: int
    episodes: int  # the island's training episodes when it was tested
    mean: float
    std: float
    min: float
    solved_share: float
    test_episodes: int
    passed: bool
    source: str  # where the tested resident came from: "local" or the peer it migrated from

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TargetTest:
    """When to test, and what the tests found. ``target`` None: never."""

    def __init__(self, target: float | None, interval_s: float) -> None:
        self.target = target
        self.interval_s = interval_s
        self.last: FreshScore | None = None
        self.reached: FreshScore | None = None  # the first test that passed
        self.episodes_used = 0  # fresh episodes spent on tests (not training)
        self._tested_key: bytes | None = None
        self._tested_at = -math.inf

    def due(self, *, best_params: np.ndarray | None, best_fitness: float, best_n: int, deterministic: bool,
            now: float) -> bool:
        """Test now? The estimate reached the target, the resident was re-scored at least once (a
        provisional resident's one-episode estimate is the most biased), it is not the one tested
        last, and the last test is ``interval_s`` old. A True answer counts as the test's start."""
        if self.target is None or best_params is None or not best_fitness >= self.target:
            return False
        if not deterministic and best_n < 1:
            return False
        key = best_params.tobytes()
        if key == self._tested_key or now - self._tested_at < self.interval_s:
            return False
        self._tested_key, self._tested_at = key, now
        return True

    def record(self, scores: dict[str, Any], *, generation: int, episodes: int, source: str,
               spent_episodes: int) -> FreshScore:
        """The result of the test :meth:`due` asked for: ``scores`` has mean, std, min, solved_share
        and episodes (``gaia_p2p.problems.policy_eval.evaluate_policy``'s keys)."""
        assert self.target is not None
        self.episodes_used += spent_episodes
        result = FreshScore(generation=generation, episodes=episodes, mean=float(scores["mean"]),
                            std=float(scores["std"]), min=float(scores["min"]),
                            solved_share=float(scores["solved_share"]), test_episodes=int(scores["episodes"]),
                            passed=float(scores["mean"]) >= self.target, source=source)
        self.last = result
        if result.passed and self.reached is None:
            self.reached = result
        return result

    @staticmethod
    def exact(fitness: float) -> dict[str, Any]:
        """The scores of a deterministic problem's resident: its fitness, with nothing spent."""
        return {"mean": fitness, "std": 0.0, "min": fitness, "solved_share": 1.0, "episodes": 1}
