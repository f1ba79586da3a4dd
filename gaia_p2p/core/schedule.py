"""Scheduling and rate-limit policy of the shell: pure, with ``now`` and an explicit rng as inputs.

- ``TokenBucket``: per-key rate limit (the gossipsub validators' per-sender limit);
- ``pick``: which peers a joiner asks for their best (/gaia/elite/1.0.0);
- ``next_due``: which island a watcher pulls a heartbeat from next (/gaia/telemetry/1.0.0);
- ``duty_sleep``: how long an island rests after a generation to use its share of the machine;
- ``FetchPlan``: whom an island asks for its best over /gaia/elite/1.0.0, and when;
- ``AnnouncedFetches``: which announced large elites it fetches, and when.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum
from typing import Self

import numpy as np

from gaia_p2p.core.migration import Topology, ring_predecessor
from gaia_p2p.core.wire import Reason

#: keys a TokenBucket remembers at most (the oldest go first): a Sybil flood cannot grow it
MAX_BUCKET_KEYS = 4096


class TokenBucket:
    """``burst`` tokens per key, refilled at ``rate_per_s``; ``cost`` tokens (default one) per allowed event."""

    def __init__(self, rate_per_s: float, burst: float, *, max_keys: int = MAX_BUCKET_KEYS) -> None:
        self.rate, self.burst, self.max_keys = rate_per_s, burst, max_keys
        self.tokens: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        tokens, last = self.tokens.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self.tokens[key] = (tokens, now)
            return False
        self.tokens[key] = (tokens - cost, now)
        if len(self.tokens) > self.max_keys:
            self.tokens.pop(next(iter(self.tokens)))
        return True


def pick(peers: Iterable[str], k: int, exclude: set[str], rng: np.random.Generator) -> list[str]:
    """Up to ``k`` random peers not in ``exclude``."""
    pool = sorted(set(peers) - exclude)
    if len(pool) <= k:
        return [pool[int(i)] for i in rng.permutation(len(pool))]
    return [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]


def next_due(peers: list[str], last_seen: dict[str, float], not_before: dict[str, float], *, now: float,
             wall_now: float, max_age: float, rng: np.random.Generator) -> str | None:
    """The peer to pull next: among those not backed off (``not_before``, on the ``now`` clock) and
    not heard from for ``max_age`` seconds (``last_seen``, on the ``wall_now`` clock: heartbeats
    carry wall time), the one heard from longest ago (never heard from: first); ties drawn at random."""
    due = [p for p in peers if not_before.get(p, -math.inf) <= now
           and wall_now - last_seen.get(p, -math.inf) >= max_age]
    if not due:
        return None
    oldest = min(last_seen.get(p, -math.inf) for p in due)
    tied = [p for p in due if last_seen.get(p, -math.inf) == oldest]
    return tied[int(rng.integers(len(tied)))]


def duty_sleep(*, cpu_s: float, wall_s: float, duty: float, cores: int) -> float:
    """Seconds to rest after a generation so that the island uses ``duty`` of its ``cores``.

    ``cpu_s > 0`` (``duty_clock = "cpu"``): the generation cost ``cpu_s`` CPU seconds (evaluation in
    workers or threads, the test, the island's ask/tell) over ``wall_s``; the cycle lasts
    ``cpu_s / (duty x cores)``. Alone on a machine (CPU ~ wall x cores) this is the wall-time rule;
    when other processes slow the computation down, the rest shrinks instead of growing with it, so
    N nodes emulated on one box with room to spare stay N equal machines. On an overloaded box
    nobody yields under this rule, which is why it is not the default. ``cpu_s = 0`` (the wall clock,
    or a GPU, whose work is not CPU time): ``wall x (1 - duty) / duty``."""
    if cpu_s <= 0.0:
        return wall_s * (1.0 - duty) / duty
    return max(0.0, cpu_s / (duty * cores) - wall_s)


class FetchWhy(StrEnum):
    """Why an elite is fetched (logged with each fetch)."""

    JOIN = "join"  # full topology, while joining: start from the network's best
    RING = "ring"  # our ring predecessor, every migration interval
    RANDOM = "random"  # our random sources, every migration interval


class Outcome(StrEnum):
    """Base of what asking one peer over a request/response protocol came to (``FetchOutcome`` here,
    ``PullOutcome`` in node/pull.py): each member is the name it is counted under, and
    ``failed_<reason>`` is an answer rejected with that reason code."""

    @classmethod
    def failed(cls, reason: Reason) -> Self:
        """The answer was rejected as ``reason``."""
        return cls(f"failed_{reason}")


class FetchOutcome(Outcome):
    """What asking one peer for its best over /gaia/elite/1.0.0 came to; node/fetch.py counts each
    under its name (``elite_fetch`` in gaia-status-v1). ``answered_<err>``: the peer refused (its
    ``err`` code); ``failed_<reason>``: its answer broke a gaia-migration-v1 check (that reason
    code); ``failed_unreachable``: no answer (no such protocol, reset, timeout)."""

    FETCHED = "fetched"
    ANSWERED_BAD_REQUEST = "answered_bad_request"
    ANSWERED_UNSUPPORTED_VERSION = "answered_unsupported_version"
    ANSWERED_WRONG_EXPERIMENT = "answered_wrong_experiment"
    ANSWERED_NO_ELITE = "answered_no_elite"
    ANSWERED_NOT_BETTER = "answered_not_better"
    ANSWERED_RATE_LIMITED = "answered_rate_limited"
    FAILED_OVERSIZE = "failed_oversize"
    FAILED_MALFORMED = "failed_malformed"
    FAILED_BAD_VERSION = "failed_bad_version"
    FAILED_BAD_FIELD = "failed_bad_field"
    FAILED_WRONG_EXPERIMENT = "failed_wrong_experiment"
    FAILED_WRONG_DIMENSION = "failed_wrong_dimension"
    FAILED_NON_FINITE = "failed_non_finite"
    FAILED_UNREACHABLE = "failed_unreachable"

    @classmethod
    def answered(cls, err: Reason) -> FetchOutcome:
        """The peer refused with ``err`` (one of node/fetch.py's ERRORS)."""
        return cls(f"answered_{err}")


#: fetch outcomes after which a joiner may ask the same peer again (it had nothing, or was not reached)
RETRY_OUTCOMES = frozenset({FetchOutcome.ANSWERED_NO_ELITE, FetchOutcome.FAILED_UNREACHABLE})


class FetchPlan:
    """Point-to-point migration over /gaia/elite/1.0.0 (node/fetch.py):

    - full topology: while joining (the first ``join_window_s``), ask up to ``join_peers`` live
      peers once each for their best, so a newcomer starts from the network's best instead of
      waiting for publishes spread out by the network-wide budget (a peer that had no best yet, or
      could not be reached, may be asked again ``retry_s`` later);
    - ring and random topologies: ask our source(s) every migration interval, at most every
      ``pull_min_s`` seconds (fast problems finish an interval in a fraction of a second).

    Large transfers prefer a direct path: ``relayed`` names the live peers we reach only through a
    circuit relay (its bytes are the relay's, and counted against a per-circuit limit). A joiner
    asks directly reachable peers first; when ``large`` (our elites exceed what a fetch may put on a
    relay), a relayed-only peer is not asked at all: a ring or random pull from it waits (counted in
    ``deferred``) until hole punching gives a direct connection, and is made within
    ``pull_min_s`` of it.
    """

    def __init__(self, *, self_id: str, topology: Topology, interval: int, started_at: float, join_peers: int,
                 join_window_s: float, pull_min_s: float, retry_s: float = 10.0) -> None:
        self.self_id, self.topology, self.interval = self_id, topology, interval
        self.started_at, self.join_peers, self.join_window_s = started_at, join_peers, join_window_s
        self.pull_min_s, self.retry_s = pull_min_s, retry_s
        self.joined: set[str] = set()  # peers that answered a join request (at most join_peers)
        self.tried: dict[str, float] = {}  # peer -> last join request (live peers only: bounded)
        self.next_pull_gen, self.next_pull_at = 0, -math.inf
        self.deferred = 0  # asks not made: the peer was reachable only through a relay, and the elite large

    def finished(self, now: float) -> bool:
        """Nothing left to do: a full-topology island has joined (gossip carries the news from then on)."""
        return self.topology == Topology.FULL and (
            len(self.joined) >= self.join_peers or now - self.started_at >= self.join_window_s)

    def targets(self, *, now: float, live: frozenset[str], generation: int, random_sources: frozenset[str],
                rng: np.random.Generator, relayed: frozenset[str] = frozenset(),
                large: bool = False) -> list[tuple[str, FetchWhy]]:
        """Whom to ask now (each asked once per call)."""
        if self.finished(now):
            return []
        if self.topology == Topology.FULL:
            self.tried = {p: t for p, t in self.tried.items() if p in live}
            ready = {p for p in live if now - self.tried.get(p, -math.inf) >= self.retry_s}
            want = self.join_peers - len(self.joined)
            chosen = pick(ready - relayed, want, self.joined, rng)
            if len(chosen) < want and not large:
                chosen += pick(ready & relayed, want - len(chosen), self.joined, rng)
            for p in chosen:
                self.tried[p] = now
            return [(p, FetchWhy.JOIN) for p in chosen]
        if generation < self.next_pull_gen or now < self.next_pull_at or not live:
            return []
        if self.topology == Topology.RING:
            src = ring_predecessor(self.self_id, live)
            asks = [(src, FetchWhy.RING)] if src else []
        else:
            asks = [(p, FetchWhy.RANDOM) for p in sorted(random_sources & live)]
        if large:
            waiting = [a for a in asks if a[0] in relayed]
            if waiting:
                self.deferred += len(waiting)
                asks = [a for a in asks if a[0] not in relayed]
                if not asks:  # nothing to ask now: the next call tries again (the punch may have worked)
                    self.next_pull_at = now + self.pull_min_s
                    return []
        self.next_pull_gen, self.next_pull_at = generation + self.interval, now + self.pull_min_s
        return asks

    def answered(self, peer: str, why: FetchWhy, outcome: FetchOutcome) -> None:
        """The outcome of asking ``peer``: a join counts once the peer answered (with an elite, or
        "nothing better than yours")."""
        if why == FetchWhy.JOIN and outcome not in RETRY_OUTCOMES:
            self.joined.add(peer)


class AnnounceOutcome(StrEnum):
    """What a received announcement of a large elite came to (``announcements`` in gaia-status-v1)."""

    QUEUED = "queued"  # kept: its announcer is asked once the fetcher is free
    NOT_BETTER = "skipped_not_better"  # its claim does not beat our resident's
    TOPOLOGY = "skipped_topology"  # ring / random: the fetch plan asks the sources by itself
    DEFERRED_RELAYED = "deferred_relayed"  # reachable through a relay only: too big for a circuit
    DROPPED = "dropped"  # the queue was full of better claims


#: announcers waiting for a fetch at most (the lowest claim goes first): 1,000 identities announcing
#: at once cost 16 entries
MAX_PENDING_ANNOUNCERS = 16
#: one announcer gets at most one fetch from us in this many seconds, however often it announces
ANNOUNCER_FETCH_MIN_S = 10.0


class AnnouncedFetches:
    """Which announced large elites to fetch, and when (gaia-migration-v1, "Large elites"; node/runtime.py
    runs one fetch at a time). Per announcer only its latest claim is kept; the fetcher takes the
    highest claim that still beats ours and whose announcer was not asked in the last
    ``min_s`` seconds. A stranger that announces made-up claims costs us one fetch per ``min_s``
    of its own upload (the fetched elite then goes through every check a gossiped one does)."""

    def __init__(self, *, max_pending: int = MAX_PENDING_ANNOUNCERS, min_s: float = ANNOUNCER_FETCH_MIN_S) -> None:
        self.max_pending, self.min_s = max_pending, min_s
        self.pending: dict[str, float] = {}  # announcer -> its latest claim
        self.asked_at: dict[str, float] = {}  # announcer -> when we last fetched from it (bounded below)

    def offer(self, src: str, claim: float, *, ours: float | None, topology: Topology,
              relayed_only: bool) -> AnnounceOutcome:
        if topology != Topology.FULL:
            return AnnounceOutcome.TOPOLOGY
        if ours is not None and not claim > ours:
            return AnnounceOutcome.NOT_BETTER
        if relayed_only:
            return AnnounceOutcome.DEFERRED_RELAYED
        if src not in self.pending and len(self.pending) >= self.max_pending:
            lowest = min(self.pending, key=lambda p: (self.pending[p], p))
            if self.pending[lowest] >= claim:
                return AnnounceOutcome.DROPPED
            del self.pending[lowest]
        self.pending[src] = claim
        return AnnounceOutcome.QUEUED

    def next(self, now: float, ours: float | None) -> tuple[str, float] | None:
        """The announcer to fetch from now and its claim (taken off the queue), or None. Claims that
        no longer beat ours leave the queue."""
        for src in [p for p, c in self.pending.items() if ours is not None and not c > ours]:
            del self.pending[src]
        ready = [p for p in self.pending if now - self.asked_at.get(p, -math.inf) >= self.min_s]
        if not ready:
            return None
        src = max(ready, key=lambda p: (self.pending[p], p))
        claim = self.pending.pop(src)
        for p in [p for p, t in self.asked_at.items() if now - t >= self.min_s]:
            del self.asked_at[p]  # bounded by the announcers asked in the last min_s seconds
        self.asked_at[src] = now
        return src, claim

    def wait_s(self, now: float) -> float | None:
        """Seconds until a pending announcer may be asked (0: now), None with nothing pending."""
        if not self.pending:
            return None
        return max(0.0, min(self.asked_at.get(p, -math.inf) + self.min_s for p in self.pending) - now)
