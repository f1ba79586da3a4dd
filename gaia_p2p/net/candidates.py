"""Peers that DHT lookups named and we have not met: dial candidates, bounded, with backoff.

A FIND_NODE answer names up to 20 peers (a hostile one: as many as it likes) with addresses nobody
vouched for. None of them enters the routing table for being named (libp2p_fixes N); each becomes a
candidate here, is dialled a few times at most with growing pauses, and, once connected and
identified as a DHT server, enters the table (net/discovery.py). Bounded three ways: the whole
table, the candidates one source may have named (so one answer cannot crowd out everyone else's),
and the attempts per candidate. A candidate that used up its attempts is remembered for
``forget_s``, so being named again does not earn it new attempts.

Pure bookkeeping: the caller passes the time in.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

MAX_CANDIDATES = 256
PER_SOURCE = 20  # one FIND_NODE answer's worth (kad's bucket size)
MAX_ATTEMPTS = 3
BACKOFF_S = 10.0  # pause after the first failed dial; doubles after each
FORGET_S = 600.0  # how long a candidate that used up its attempts stays known (and ignored)


@dataclass
class _Candidate:
    source: str
    attempts: int = 0
    next_at: float = 0.0
    given_up_at: float | None = None


class DialCandidates:
    def __init__(self, *, max_entries: int = MAX_CANDIDATES, per_source: int = PER_SOURCE,
                 max_attempts: int = MAX_ATTEMPTS, backoff_s: float = BACKOFF_S, forget_s: float = FORGET_S) -> None:
        self.max_entries = max_entries
        self.per_source = per_source
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.forget_s = forget_s
        self._entries: OrderedDict[str, _Candidate] = OrderedDict()
        self._by_source: Counter[str] = Counter()
        # peers we once held a connection with (as many as entries, the oldest go): a given-up one
        # that is named again gets new attempts (it was real; a made-up peer never gets here)
        self._was_connected: OrderedDict[str, None] = OrderedDict()
        self.stats = {"offered": 0, "refused_full": 0, "refused_per_source": 0, "given_up": 0, "dialled": 0,
                      "renewed": 0}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer: str) -> bool:
        return peer in self._entries

    def offer(self, peer: str, source: str, now: float, *, capped: bool = True) -> bool:
        """``source`` named ``peer``: keep it as a candidate unless it is known or a bound says no
        (``capped=False``: no per-source cap, for sources bounded elsewhere, such as our own table)."""
        c = self._entries.get(peer)
        if c is not None:
            if c.given_up_at is None or peer not in self._was_connected:
                return False
            c.attempts, c.given_up_at, c.next_at = 0, None, now  # back after a partition, say
            self.stats["renewed"] += 1
            return True
        if len(self._entries) >= self.max_entries:
            self.prune(now)
        if len(self._entries) >= self.max_entries:
            self.stats["refused_full"] += 1
            return False
        if capped and self._by_source[source] >= self.per_source:
            self.stats["refused_per_source"] += 1
            return False
        self._entries[peer] = _Candidate(source, next_at=now)
        self._by_source[source] += 1
        self.stats["offered"] += 1
        return True

    def due(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` candidates to dial now: the fewest attempts first, then the oldest."""
        ready = [(c.attempts, i, p) for i, (p, c) in enumerate(self._entries.items())
                 if c.given_up_at is None and c.next_at <= now]
        return [p for _, _, p in sorted(ready)[:max(0, limit)]]

    def dialled(self, peer: str, ok: bool, now: float, *, isolated: bool = False) -> None:
        """A dial of ``peer`` ended: a connected peer is no candidate any more; a failed one waits
        ``backoff_s * 2**(attempts - 1)`` or, after ``max_attempts``, is given up. A failure while we
        hold no connection at all (``isolated``: a partition, our link down) says nothing about the
        peer: it costs no attempt and is tried again after ``backoff_s``."""
        c = self._entries.get(peer)
        if c is None:
            return
        self.stats["dialled"] += 1
        if ok:
            self._remove(peer)
            return
        if isolated:
            c.next_at = now + self.backoff_s
            return
        c.attempts += 1
        if c.attempts >= self.max_attempts:
            c.given_up_at = now
            self.stats["given_up"] += 1
        else:
            c.next_at = now + self.backoff_s * 2 ** (c.attempts - 1)

    def connected(self, peer: str) -> None:
        """``peer`` is connected: no candidate any more, and remembered as real."""
        self.discard(peer)
        self._was_connected[peer] = None
        self._was_connected.move_to_end(peer)
        while len(self._was_connected) > self.max_entries:
            self._was_connected.popitem(last=False)

    def discard(self, peer: str) -> None:
        """We met ``peer`` some other way (it dialled us, a lookup's query connected it)."""
        if peer in self._entries:
            self._remove(peer)

    def prune(self, now: float) -> None:
        """Forget candidates given up more than ``forget_s`` ago."""
        for peer in [p for p, c in self._entries.items()
                     if c.given_up_at is not None and now - c.given_up_at >= self.forget_s]:
            self._remove(peer)

    def _remove(self, peer: str) -> None:
        c = self._entries.pop(peer)
        self._by_source[c.source] -= 1
        if self._by_source[c.source] <= 0:
            del self._by_source[c.source]
