"""A pool without a network, for tests and benchmarks: members whose evaluations finish at once and
whose messages are delivered by hand, step by step (``step``). Everything else is the real
``core/pool.Pool``. A member may lie: it inflates a share of the returns it reports (never those of
its own spot checks, which it keeps to itself); or accuse an honest member falsely, once a generation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gaia_p2p.core import pool as P

Fitness = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


def quadratic(X: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    """A cheap deterministic return (the same on every member, as a platform class gives)."""
    return -np.sum(np.asarray(X) ** 2, axis=1) + 0.001 * seeds[0] % 7


class Member:
    """One pool member with the candidates every replica would draw from the shared state (here: from
    the generation alone) and an evaluator that answers at once."""

    def __init__(self, name: str, *, pid: str, lam: int = 12, dim: int = 4, fitness: Fitness = quadratic,
                 lie: float = 0.0, lie_rate: float = 1.0, check_share: float = 0.3, slowness: float = 1.0,
                 min_help_wait_s: float = 0.1, max_arrival_wait_s: float = 1.0, accuse: str | None = None) -> None:
        self.name, self.lam, self.dim, self.fitness = name, lam, dim, fitness
        self.lie, self.lie_rate = lie, lie_rate
        self.accuse = accuse  # a member it accuses of an item of each generation it completes
        self.slowness = slowness  # its evaluations say they took this many times as long (its speed code follows)
        self.pool = P.Pool(pid=pid, self_id=name, platform="same", episodes=1,
                           policy=P.PoolPolicy(check_share=check_share, min_help_wait_s=min_help_wait_s,
                                               max_arrival_wait_s=max_arrival_wait_s))
        self.rng = np.random.default_rng([ord(c) for c in name])
        self.lie_rng = np.random.default_rng([ord(c) for c in name] + [1])
        self.lies_told = 0
        self.outbox: list[P.Results | P.Accusation] = []
        self.inbox: list[tuple[float, str, P.Results | P.Accusation]] = []  # (due, sender, message) in flight to us
        self.work: list[P.EvaluateItems] = []
        self.completed: list[int] = []
        self.replays: list[P.Replay] = []
        self.evicted: list[str] = []
        self.fetches: list[P.FetchLog] = []
        self.fetches_served = 0  # of self.fetches, those step() answered

    def candidates(self, g: int) -> np.ndarray:
        return np.random.default_rng([g, 1]).normal(size=(self.lam, self.dim)).astype(np.float32).astype(np.float64)

    def feed(self, event: P.PoolInput, now: float) -> None:
        for e in self.pool.handle(event, now=now, rng=self.rng):
            if isinstance(e, P.EvaluateItems):
                self.work.append(e)
            elif isinstance(e, P.PublishResults):
                self.outbox.append(e.results)
            elif isinstance(e, P.Accuse):
                self.outbox.append(e.accusation)
            elif isinstance(e, P.RoundComplete):
                self.completed.append(e.generation)
                if self.accuse is not None:
                    told = [i for i, src in enumerate(self.pool._done_rounds[-1].source) if src == self.accuse]
                    self.outbox += [P.Accusation(e.generation, told[0], self.accuse)] if told else []
            elif isinstance(e, P.Replay):
                self.replays.append(e)
            elif isinstance(e, P.Evict):
                self.evicted.append(e.peer)
            elif isinstance(e, P.FetchLog):
                self.fetches.append(e)

    def start_round(self, now: float) -> None:
        g = self.pool.generation
        self.feed(P.RoundStarted(g, self.candidates(g), self.pool.seeds_for(g)), now)

    def do_work(self, now: float, seconds: float = 0.01) -> None:
        """Every evaluation asked for, at once; each says it took ``seconds`` per item (times ``slowness``)."""
        while self.work:
            w = self.work.pop(0)
            r = np.asarray(self.fitness(w.candidates, w.seeds), dtype=np.float64)
            if self.lie and w.why != P.Work.CHECK:
                told = self.lie_rng.random(len(r)) < self.lie_rate
                self.lies_told += int(told.sum())
                r = r + self.lie * told
            self.feed(P.ItemsEvaluated(w.generation, w.indices, r, w.why,
                                       seconds=seconds * self.slowness * len(w.indices)), now)


def answer_log(server: Member, start: int, head: bytes) -> P.LogReceived:
    """What the log service (node/pool.py) answers: from ``start`` when our heads agree there, else all."""
    pool = server.pool
    if start > pool.generation or pool.heads[start] != head:
        start = 0
    return P.LogReceived(server.name, start, pool.log_from(start))


def step(members: list[Member], now: float, *, deliver_from: set[str] | None = None, latency: float = 0.0,
         seconds: float = 0.01) -> None:
    """Every member works (an evaluation takes ``seconds`` per item), then every message is sent to the others
    and those due are delivered (a message arrives ``latency`` after it was sent), then the log
    fetches asked of a member among ``members`` are answered, then a tick."""
    for m in members:
        if m.pool.round is None and m.pool.busy is None and not m.work:
            m.start_round(now)
        m.do_work(now, seconds)
    for m in members:
        out, m.outbox = m.outbox, []
        if deliver_from is not None and m.name not in deliver_from:
            continue
        for r in out:
            for other in members:
                if other is not m:
                    other.inbox.append((now + latency, m.name, r))
    for m in members:
        due = [x for x in m.inbox if x[0] <= now]
        m.inbox = [x for x in m.inbox if x[0] > now]
        for _, src, r in due:
            m.feed(P.received(src, r), now)
    by_name = {m.name: m for m in members}
    for m in members:
        for f in m.fetches[m.fetches_served:]:
            if f.peer in by_name:
                m.feed(answer_log(by_name[f.peer], f.start, f.head), now)
        m.fetches_served = len(m.fetches)
    for m in members:
        m.feed(P.Tick(), now)


def form(members: list[Member]) -> None:
    """Every member learns every other."""
    for m in members:
        m.feed(P.MembersChanged(frozenset(x.name for x in members)), 0.0)
