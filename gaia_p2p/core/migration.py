"""Migration policy: which peers' migrants an island considers (topology) and how it compares them.

Pure functions. Peer ids are the base58 strings libp2p prints; rings are sorted by that string,
so every node that sees the same live set computes the same ring without talking to anyone.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

TOPOLOGIES = ("full", "ring", "random")


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


def ring_successor(self_id: str, live_peers: Iterable[str]) -> str | None:
    ring = sorted(set(live_peers) | {self_id})
    if len(ring) < 2:
        return None
    i = ring.index(self_id)
    return ring[(i + 1) % len(ring)]


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
    if topology == "full":
        return True
    if topology == "ring":
        return src == ring_predecessor(self_id, live_peers | {src} if src not in live_peers else live_peers)
    if topology == "random":
        return src in random_sources
    raise ValueError(f"unknown topology {topology!r}")
