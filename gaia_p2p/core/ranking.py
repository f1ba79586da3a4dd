"""Which island's best is the network's best, honestly.

On a noisy problem an island's ``best_fitness`` is an estimate: the running mean of a few
re-scores of its resident, and the largest of many such estimates is biased upward (the winner's
curse: in an 8-node LunarLander run the highest estimate, 240, scored 148 over 100 fresh
episodes). A test on fresh episodes (core/target.py) measures the resident instead. The rule:

1. An island is ranked by its **tested score** (the mean of its last test on fresh episodes) when
   it has one, by its **estimate** otherwise; on a deterministic problem the estimate is exact and
   counts as measured.
2. Every measured island (tested or exact) ranks above every island with an estimate only,
   whatever the numbers: an untested 240 is not shown as better than a tested 180. The estimate is
   still shown, marked, and :func:`network_best` names the highest untested estimate when it lies
   above the measured best, so nobody is told less than there is.
3. Ties: the higher number first, then the peer id (a stable order).

A tested score may be of an earlier resident (``current`` False): the island held it, the test
measured it, and the resident replaced it only after beating it on a few re-scores; it still ranks
as tested, and the views say "earlier resident". Tests of different islands use the same fresh
episode seeds (gaia_p2p/problems/policy_eval.py), so their scores compare like with like.

Pure: the rows are the views' plain dicts (core/telemetry.py ``to_json``: ``best_fitness``,
``exact``, ``tested``, ``pool``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Basis(StrEnum):
    EXACT = "exact"  # a deterministic problem: the estimate is the score
    TESTED = "tested"  # the mean of a test on fresh episodes
    ESTIMATE = "estimate"  # untested: a running mean of a few re-scores, biased upward at the top
    NONE = "none"  # nothing yet


#: the tiers of rule 2: measured first, then estimates, then nothing
TIER = {Basis.EXACT: 0, Basis.TESTED: 0, Basis.ESTIMATE: 1, Basis.NONE: 2}


@dataclass(frozen=True)
class Standing:
    """An island's place in the ranking: what it is ranked by, and on what basis."""

    peer_id: str
    basis: Basis
    score: float | None  # the number it is ranked by (tested mean, exact or estimated fitness)
    estimate: float | None  # its best_fitness, whatever the basis
    tested: Mapping[str, Any] | None  # its last test (mean, episodes, generation, current, ...)

    @property
    def measured(self) -> bool:
        return TIER[self.basis] == 0


def keeps_no_resident(row: Mapping[str, Any]) -> bool:
    """A pool member whose heartbeat says another member keeps the pool's resident (telemetry r6)."""
    return (row.get("pool") or {}).get("keeps") is False


def standing(row: Mapping[str, Any]) -> Standing:
    """The standing of one view row. A pool member that does not keep the pool's resident (its
    heartbeat's ``pool.keeps`` False) is ranked by nothing: its best is of an earlier resident it
    kept, or none, and the keeper's row carries the pool's."""
    est, tested = row.get("best_fitness"), row.get("tested")
    if keeps_no_resident(row):
        return Standing(row["peer_id"], Basis.NONE, None, est, None)
    if row.get("exact") and est is not None:
        return Standing(row["peer_id"], Basis.EXACT, est, est, None)
    if tested and tested.get("mean") is not None:
        return Standing(row["peer_id"], Basis.TESTED, float(tested["mean"]), est, tested)
    if est is not None:
        return Standing(row["peer_id"], Basis.ESTIMATE, est, est, None)
    return Standing(row["peer_id"], Basis.NONE, None, None, None)


def _key(s: Standing) -> tuple[int, float, str]:
    return TIER[s.basis], -(s.score if s.score is not None else 0.0), s.peer_id


def rank(rows: Iterable[Mapping[str, Any]]) -> list[tuple[Standing, Mapping[str, Any]]]:
    """The rows, best first, by the module's rule, each with its standing."""
    return sorted(((standing(r), r) for r in rows), key=lambda sr: _key(sr[0]))


@dataclass(frozen=True)
class NetworkBest:
    best: Standing | None  # the top of the ranking
    untested_above: Standing | None  # the highest untested estimate, when it exceeds best's score


def network_best(rows: Iterable[Mapping[str, Any]]) -> NetworkBest:
    ranked = [s for s, _ in rank(rows)]
    if not ranked or ranked[0].basis == Basis.NONE:
        return NetworkBest(None, None)
    best = ranked[0]
    above = None
    if best.measured:
        estimates = [s for s in ranked if s.basis == Basis.ESTIMATE and s.score is not None and best.score is not None
                     and s.score > best.score]
        above = estimates[0] if estimates else None
    return NetworkBest(best, above)
