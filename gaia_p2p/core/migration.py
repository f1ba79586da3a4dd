"""Migration policy: which peers' migrants an island considers (topology), and in what order it
evaluates them (``Intake``: fair, bounded, per source).

Pure. Peer ids are the base58 strings libp2p prints; rings are sorted by that string, so every node
that sees the same live set computes the same ring without talking to anyone.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

class Topology(StrEnum):
    """Whose migrants an island considers: everyone's, its ring predecessor's, or ``random_k`` live peers'."""
    FULL = "full"
    RING = "ring"
    RANDOM = "random"


class Entry(StrEnum):
    """How an accepted migrant enters the optimizer: one clipped sample of the next population
    (pycma ``inject``), or the search mean moves to it (sigma and covariance kept)."""
    INJECT = "inject"
    ADOPT = "adopt"


#: The values as plain strs: the choice lists of config.py and the CLI (argparse prints their repr).
TOPOLOGIES = tuple(t.value for t in Topology)
ENTRIES = tuple(e.value for e in Entry)


def ring_predecessor(self_id: str, live_peers: Iterable[str]) -> str | None:
    """The peer just before ``self_id`` in the sorted ring of ``live_peers`` plus ourselves.

    Migrants flow around the ring in increasing id order, so an island takes migrants only from
    its predecessor. ``None`` when we are alone.
    """
    ring = sorted(set(live_peers) | {self_id})
    if len(ring) < 2:
        return None
    i = ring.index(self_id)
    return ring[i - 1]


def draw_random_sources(live_peers: Iterable[str], k: int, rng: np.random.Generator) -> frozenset[str]:
    """``k`` distinct live peers drawn uniformly (all of them when fewer than ``k``)."""
    peers = sorted(set(live_peers))
    if len(peers) <= k:
        return frozenset(peers)
    idx = rng.choice(len(peers), size=k, replace=False)
    return frozenset(peers[int(i)] for i in idx)


def source_allowed(topology: str, src: str, self_id: str, live_peers: frozenset[str],
                   random_sources: frozenset[str]) -> bool:
    """Receiver-side topology filter."""
    if topology == Topology.FULL:
        return True
    if topology == Topology.RING:
        return src == ring_predecessor(self_id, live_peers | {src} if src not in live_peers else live_peers)
    if topology == Topology.RANDOM:
        return src in random_sources
    raise ValueError(f"unknown topology {topology!r}")


# ------------------------------------------------------------------ fair intake

#: A source's standing, from its record: served in this order (lower first), evicted in the reverse.
TRUSTED, UNKNOWN, SUSPECT = 0, 1, 2


@dataclass
class PeerRecord:
    """What re-evaluation told us about one author's claims."""

    held: int = 0  # claims that held (reproduced; on noisy problems: measured within the slack)
    failed: int = 0  # claims that did not
    served: int = -1  # the intake round that last took one of its migrants (-1: never)

    @property
    def standing(self) -> int:
        if self.failed > self.held:
            return SUSPECT
        return TRUSTED if self.held else UNKNOWN


class Intake:
    """Migrants waiting for an assessment round: one per source (the latest wins), at most
    ``max_sources`` sources. Each round takes up to ``per_round`` of them, trusted sources first, then
    unknown ones, then at most ``suspect_slots`` suspects (sources whose claims failed more often than
    they held); within a standing, the source served longest ago first, then arrival order. So one
    source's flood supersedes only its own migrant, many sources' floods cannot push out a trusted
    source's migrant, and liars, once found out, cost at most ``suspect_slots`` evaluations a round.

    When all ``max_sources`` slots are taken, a newcomer takes the slot of the worst-ranked pending
    source if it ranks strictly better, else it is turned away. Records are kept for at most
    ``max_records`` sources (the least recently updated are forgotten first)."""

    def __init__(self, *, max_sources: int, per_round: int, suspect_slots: int = 1, max_records: int = 1024) -> None:
        self.max_sources, self.per_round = max(1, max_sources), max(1, per_round)
        self.suspect_slots, self.max_records = suspect_slots, max(1, max_records)
        self.pending: dict[str, tuple[int, Any]] = {}  # source -> (arrival number, item)
        self.records: OrderedDict[str, PeerRecord] = OrderedDict()
        self.round = 0
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self.pending)

    def standing(self, src: str) -> int:
        rec = self.records.get(src)
        return UNKNOWN if rec is None else rec.standing

    def _rank(self, src: str, arrival: float) -> tuple[int, int, float]:
        rec = self.records.get(src)
        return (UNKNOWN, -1, arrival) if rec is None else (rec.standing, rec.served, arrival)

    def offer(self, src: str, item: Any) -> tuple[bool, list[tuple[str, Any, str]]]:
        """Queue ``item`` from ``src``. Returns whether it was queued, and the items it displaced with
        the reason: ``superseded`` (the source's older one), ``queue_full`` (a worse-ranked source's)."""
        displaced: list[tuple[str, Any, str]] = []
        if src in self.pending:
            displaced.append((src, self.pending.pop(src)[1], "superseded"))
        elif len(self.pending) >= self.max_sources:
            worst = max(self.pending, key=lambda s: self._rank(s, self.pending[s][0]))
            if self._rank(worst, self.pending[worst][0]) <= self._rank(src, math.inf):
                return False, displaced
            displaced.append((worst, self.pending.pop(worst)[1], "queue_full"))
        self._arrivals += 1
        self.pending[src] = (self._arrivals, item)
        return True, displaced

    def take(self) -> list[tuple[str, Any]]:
        """The migrants of the next assessment round, in serving order; the rest keep waiting."""
        chosen: list[tuple[str, Any]] = []
        suspects = 0
        for src in sorted(self.pending, key=lambda s: self._rank(s, self.pending[s][0])):
            if len(chosen) == self.per_round:
                break
            if self.standing(src) == SUSPECT:
                if suspects >= self.suspect_slots:
                    continue
                suspects += 1
            chosen.append((src, self.pending.pop(src)[1]))
            self._touch(src).served = self.round
        self.round += 1
        return chosen

    def outcome(self, src: str, held: bool) -> PeerRecord:
        rec = self._touch(src)
        if held:
            rec.held += 1
        else:
            rec.failed += 1
        return rec

    def _touch(self, src: str) -> PeerRecord:
        rec = self.records.pop(src, None) or PeerRecord()
        self.records[src] = rec
        while len(self.records) > self.max_records:
            self.records.popitem(last=False)
        return rec
