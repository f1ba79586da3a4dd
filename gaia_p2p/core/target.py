"""Tests on fresh episodes: the target test, and periodic tests of the resident before it.

On a noisy problem the estimate of the best of many candidates is biased upward (the largest of
many noisy estimates: the winner's curse), so the island's "best" is only an estimate. A test
scores the resident on ``test_episodes`` fresh episodes that training never used; its mean is the
*tested score*, the one number the views rank islands by (core/ranking.py). Two reasons to test:

- ``Why.TARGET``: the estimate reached the target, and no test has passed it yet; "reached the
  target" means the test averages at least the target. Not bounded by the share, so that reaching
  the target is seen as soon as it happens. On a deterministic problem the estimate is the score,
  and no episode is spent.
- ``Why.PERIODIC``: a new resident on a noisy problem, so that a tested score exists long before the
  target (and on problems without one), and goes on being measured once the target is reached.
  Bounded: all tests together spend at most ``share`` of the training episodes (0: off; never on
  deterministic problems, whose estimate is exact).

Both wait for a resident that was re-scored at least once (a provisional resident's one-episode
estimate is the most biased), that is not the one tested last, and for ``interval_s`` since the
last test. Test episodes are counted apart from training (``episodes_used``).

Pure: the shell asks :meth:`TargetTest.due` after every generation with trio's ``now`` and the
training episodes so far, runs the test it is told to (in the evaluation workers), and hands the
result to :meth:`TargetTest.record` with the wall time it ran at (shown, never compared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

#: the default share of its training episodes a node may spend on tests (``test_share``)
DEFAULT_SHARE = 0.05


class Why(StrEnum):
    TARGET = "target"  # the estimate reached the target
    PERIODIC = "periodic"  # a new resident, within the share of episodes tests may take


@dataclass(frozen=True)
class FreshScore:
    """One test of a resident on fresh episodes (the ``last_test`` of ``gaia-node status``)."""

    generation: int
    episodes: int  # the island's training episodes when it was tested
    mean: float
    std: float
    min: float
    solved_share: float | None  # None: the problem has no "solved" threshold
    test_episodes: int
    passed: bool | None  # None: no target to pass
    source: str  # where the tested resident came from: "local" or the peer it migrated from
    why: str = Why.TARGET
    at: float = 0.0  # the shell's unix time of the test (for display)
    estimate: float | None = None  # the resident's estimate when it was tested

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"why": str(self.why)}


class TargetTest:
    """When to test, and what the tests found. ``target`` None and ``share`` 0: never."""

    def __init__(self, target: float | None, interval_s: float, *, share: float = 0.0,
                 test_episodes: int = 100) -> None:
        self.target = target
        self.interval_s = interval_s
        self.share = share
        self.test_episodes = test_episodes
        self.last: FreshScore | None = None
        self.reached: FreshScore | None = None  # the first test that passed
        self.episodes_used = 0  # fresh episodes spent on tests (not training)
        self.tests: dict[str, int] = {}  # tests run, by Why
        self._tested_key: bytes | None = None  # the resident asked for last
        self._tested_at = -math.inf
        self._last_key: bytes | None = None  # the resident of ``last``

    def due(self, *, best_params: np.ndarray | None, best_fitness: float, best_n: int, deterministic: bool,
            now: float, training_episodes: int = 0) -> Why | None:
        """Which test to run now, if any (the module doc says when). A test asked for counts as
        started: the same resident is not asked for again, and the interval runs from ``now``."""
        if best_params is None or (not deterministic and best_n < 1):
            return None
        key = best_params.tobytes()
        if key == self._tested_key or now - self._tested_at < self.interval_s:
            return None
        if self.target is not None and best_fitness >= self.target and (self.reached is None or deterministic):
            why = Why.TARGET
        elif self.periodic_allowed(deterministic=deterministic, training_episodes=training_episodes):
            why = Why.PERIODIC
        else:
            return None
        self._tested_key, self._tested_at = key, now
        return why

    def periodic_allowed(self, *, deterministic: bool, training_episodes: int) -> bool:
        """Whether one more periodic test keeps all tests within ``share`` of the training episodes."""
        if deterministic or self.share <= 0:
            return False
        return self.episodes_used + self.test_episodes <= self.share * training_episodes

    def record(self, scores: dict[str, Any], *, generation: int, episodes: int, source: str,
               spent_episodes: int, why: Why = Why.TARGET, at: float = 0.0,
               estimate: float | None = None) -> FreshScore:
        """The result of the test :meth:`due` asked for: ``scores`` has mean, std, min, solved_share
        and episodes (``gaia_p2p.problems.policy_eval.evaluate_policy``'s keys)."""
        self.episodes_used += spent_episodes
        self.tests[str(why)] = self.tests.get(str(why), 0) + 1
        mean = float(scores["mean"])
        solved = scores.get("solved_share")
        result = FreshScore(generation=generation, episodes=episodes, mean=mean, std=float(scores["std"]),
                            min=float(scores["min"]), solved_share=None if solved is None else float(solved),
                            test_episodes=int(scores["episodes"]),
                            passed=None if self.target is None else mean >= self.target, source=source,
                            why=why, at=at, estimate=estimate)
        self.last, self._last_key = result, self._tested_key
        if result.passed and self.reached is None:
            self.reached = result
        return result

    def is_current(self, best_params: np.ndarray | None) -> bool:
        """Whether the last test was of this resident (False once another one replaced it)."""
        return self.last is not None and best_params is not None and best_params.tobytes() == self._last_key

    @staticmethod
    def exact(fitness: float) -> dict[str, Any]:
        """The scores of a deterministic problem's resident: its fitness, with nothing spent."""
        return {"mean": fitness, "std": 0.0, "min": fitness, "solved_share": 1.0, "episodes": 1}

    # ------------------------------------------------------------ persistence

    def to_checkpoint(self) -> dict[str, Any]:
        """What a restarted node needs to go on: the tests so far (its share counts them) and
        which resident the last one was of."""
        return {"last": None if self.last is None else self.last.as_dict(),
                "reached": None if self.reached is None else self.reached.as_dict(),
                "episodes_used": self.episodes_used, "tests": dict(self.tests), "last_key": self._last_key}

    def restore(self, data: dict[str, Any]) -> None:
        """What :meth:`to_checkpoint` wrote; raises KeyError, TypeError or ValueError on anything else."""
        last = None if data["last"] is None else FreshScore(**data["last"])
        reached = None if data["reached"] is None else FreshScore(**data["reached"])
        key = data["last_key"]
        if key is not None and type(key) is not bytes:
            raise TypeError("last_key must be bytes")
        self.last, self.reached, self._last_key = last, reached, key
        self.episodes_used = int(data["episodes_used"])
        self.tests = {str(k): int(v) for k, v in dict(data["tests"]).items()}
        self._tested_key = key  # the resident tested last is not tested again after a restart
