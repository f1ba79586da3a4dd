"""How many nodes are in the experiment: the estimate behind every node's share of the network-wide
publish and telemetry budgets (a gap of ``size / rate`` seconds between two publishes).

An over-estimate throttles the node, so identities that cost nothing must not move it: a peer counts
only once it has been there ``settle_s`` (peers seen while we were starting count at once, since a
joining node can tell no peer from another and erring on the quiet side is the safe error then), and
past our own start the estimate rises by at most ``max(growth_abs, doubling)`` per minute. It falls
back as soon as peers leave. So 1,000 identities that join and leave within ``settle_s`` move it by
nothing, 1,000 that stay move it by a few nodes a minute, and a real network that grows over minutes
is followed (4 -> 40 nodes in about 4 minutes).

Pure: the shell passes the clock (``now``, trio's) and what it sees, with the time it first saw each.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SETTLE_S = 60.0
GROWTH_ABS_PER_MIN = 4.0  # nodes per minute, whatever the size (so a small network can grow)
HEARD_WINDOW_S = 600.0


@dataclass(frozen=True)
class SizeEstimate:
    value: float  # nodes, us included
    at: float  # the ``now`` it was computed for

    @property
    def nodes(self) -> int:
        return max(1, int(self.value))


def settled(first_seen: Iterable[float], *, now: float, started_at: float, settle_s: float) -> int:
    """Peers seen at least ``settle_s`` ago, or while we were starting (our first ``settle_s``)."""
    return sum(1 for t in first_seen if now - t >= settle_s or t < started_at + settle_s)


def estimate_size(*, now: float, started_at: float, topic_peers: Mapping[str, float],
                  routing_peers: Mapping[str, float], heard: Mapping[str, tuple[float, float]],
                  prev: SizeEstimate | None, settle_s: float = SETTLE_S, heard_window_s: float = HEARD_WINDOW_S,
                  growth_abs_per_min: float = GROWTH_ABS_PER_MIN) -> SizeEstimate:
    """The estimate at ``now``: us plus the most of the settled topic peers, the settled routing-table
    peers and the islands heard on telemetry (first heard settled, last heard within
    ``heard_window_s``), its rise capped since ``prev``.

    ``topic_peers`` / ``routing_peers`` (the shell passes routing-table peers while connected):
    peer id -> when first seen (without a break); ``heard``: island id -> (first, last) heartbeat. A
    node connects to a few dozen peers at most, so the topic alone undercounts a large network, which
    telemetry makes up for; the routing table may count nodes of other experiments, which only errs
    on the quiet side. Islands heard count for the whole window after their last heartbeat: one
    heartbeat per fake identity stretches the estimate (within the cap) for that long."""
    heard_live = [first for first, last in heard.values() if now - last < heard_window_s]
    kw = dict(now=now, started_at=started_at, settle_s=settle_s)
    target = 1.0 + max(settled(topic_peers.values(), **kw), settled(routing_peers.values(), **kw),
                       settled(heard_live, **kw))
    if prev is None or target <= prev.value or now < started_at + settle_s:
        return SizeEstimate(target, now)
    minutes = max(0.0, now - prev.at) / 60.0
    ceiling = prev.value * 2.0 ** minutes + growth_abs_per_min * minutes
    return SizeEstimate(min(target, ceiling), now)


def window_for(period_s: float) -> float:
    """Islands heard within 2.5 heartbeat periods (at least HEARD_WINDOW_S) count: with every node on
    the same period that is each of them; a fixed window would undercount once periods exceed it."""
    return max(HEARD_WINDOW_S, 2.5 * period_s) if math.isfinite(period_s) else HEARD_WINDOW_S


#: Peers (topic, routing table) and islands (telemetry) a SizeTracker keeps a first-seen time for.
MAX_TRACKED = 4096
MAX_HEARD = 1024  # the network view's bound (node/netview.py)
RECOUNT_S = 1.0  # the shell asks before every generation: recount at most this often


def first_seen(prev: Mapping[str, float], now_seen: Iterable[str], now: float) -> dict[str, float]:
    """``prev`` for the peers still there, ``now`` for the new ones; a peer that left is forgotten (it
    starts over if it comes back). At most MAX_TRACKED peers (the rest are not counted)."""
    out: dict[str, float] = {}
    for p in now_seen:
        if len(out) >= MAX_TRACKED:
            break
        out[p] = prev.get(p, now)
    return out


class SizeTracker:
    """What a node has seen of the network, and the estimate from it: the shell reports topic peers,
    connected routing-table peers and heartbeats, with trio's clock; ``nodes`` is the estimate."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.topic: dict[str, float] = {}
        self.routing: dict[str, float] = {}
        self.heard: OrderedDict[str, tuple[float, float]] = OrderedDict()  # island -> (first, last)
        self.estimate: SizeEstimate | None = None

    def fresh(self, now: float) -> bool:
        """The last count is recent enough to answer without a recount."""
        return self.estimate is not None and now - self.estimate.at < RECOUNT_S

    def observe(self, *, now: float, topic_peers: Iterable[str], routing_peers: Iterable[str],
                period_s: float) -> int:
        """Recount with what is seen now (``period_s``: the heartbeat period, for the heard window)."""
        self.topic = first_seen(self.topic, topic_peers, now)
        self.routing = first_seen(self.routing, routing_peers, now)
        self.estimate = estimate_size(now=now, started_at=self.started_at, topic_peers=self.topic,
                                      routing_peers=self.routing, heard=self.heard, prev=self.estimate,
                                      heard_window_s=window_for(period_s))
        return self.estimate.nodes

    def heard_island(self, peer: str, now: float) -> None:
        """A heartbeat of ``peer`` arrived; the oldest-heard beyond MAX_HEARD go."""
        first, _ = self.heard.pop(peer, (now, now))
        self.heard[peer] = (first, now)
        while len(self.heard) > MAX_HEARD:
            self.heard.popitem(last=False)
