"""A pool: several nodes run ONE optimizer together (docs/POOLS.md, protocols/gaia-pool-v1.md).

Every member holds a replica of the same island optimizer, started from the same genesis (the
pool id covers the experiment and every optimizer setting). Generation g's candidates follow from
the replica's state and its episode seeds from (pool id, g), so members exchange only returns:
``(generation, candidate index, return)``, never parameters.

- **Who evaluates what**: the live members, ranked by a hash of (g, member), are dealt the
  candidates of generation g in turn, in proportion to the speed each tells with its results
  (equal speeds: shares differ by one item at most). Nobody coordinates: each member computes the
  same owners from its own view of who is live and how fast; views that differ for a moment give
  an item two owners (the second result is a free spot check) or none (a helper takes it).
- **Parts and helping** (work stealing): an owner evaluates its share in parts, front to back,
  and tells each. A member whose own share is done takes at once the untouched end of a share
  that is behind (its owner has told a part, and is not yet at those items); for what may be
  under way it waits a little (``help_after`` of its own share's duration, plus the delay it
  measures between its share's end and the others' results arriving: on a loaded network results
  take longer than a gossip round, and helping then only repeats work in flight). Helpers deal
  what they help with among themselves, the items of members that have told nothing for this
  generation first. A dead or slow member delays the pool by about one part, not forever; work
  of a generation that completed meanwhile is abandoned.
- **The log is the state**: once all returns of g are known every member tells its replica the same
  float32-rounded returns. The returns of every generation form the pool's result log, chained by
  hash (``heads``): every results message carries the head it was computed from, so members that
  disagree about the past see it at once. A member that is behind (a joiner, a restarted node) or
  on the losing side of a fork (the side fewer members announce; on a tie both sides fetch)
  fetches the log and replays it: from its own last consistent generation, or from the genesis.
  A fetched log replaces ours only when more members tell results from it than from ours (one
  member cannot rewrite the pool's past by running ahead); on a tie, when it extends ours, or when
  its head after the first generation where the two differ is the smaller one (both sides of a
  fork decide alike).
  The winning side fences the other off (it owns no items of theirs) until it tells results from
  their past again, so a member that never gives way (a liar that evicted everyone else) costs
  the others nothing.
  No optimizer state (a pickle is code) ever crosses the wire.
- **Replicas of one platform class are bit-identical** (same BLAS kernel: same candidates); across
  classes they drift by rounding only, so a result is checked exactly only against a member of our
  own class, and statistically (``cross_class_z``) against others.
- **Spot checks**: each result is re-evaluated by ``check_share`` other members on average, each in
  the time it otherwise waits for the rest of a generation. A same-class mismatch is a
  lie: the member is evicted (the shell bans it). Its earlier returns stay in the log (every replica
  used them; the harm is bounded by the generations it took to catch it).

Pure: ``now`` and an explicit rng are inputs; no clocks, no global random, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from gaia_p2p.errors import LocalProtocolError

POOL_VERSION = 1
HEAD_BYTES = 16


class Work(StrEnum):
    """Why a member evaluates an item."""
    OWN = "own"  # its share (``owners``)
    HELP = "help"  # unknown items of others, once its own share is done
    CHECK = "check"  # a spot check of a result another member reported


class Help(StrEnum):
    """Which unknown items a helper considers (``Pool._help_items``)."""
    UNTOUCHED = "untouched"  # those no owner has started (at once)
    DEALT = "dealt"  # all of the unfinished owners', dealt among the helpers (after the help wait)
    EVERYTHING = "everything"  # any (after several waits: a helper died too)


def share_part(share: int, parts: int) -> int:
    """How many items of a share of ``share`` items its owner evaluates at once: ``ceil(share / parts)``."""
    return max(1, -(-share // parts))


class Eviction(StrEnum):
    LIED = "pool_result_mismatch"  # a same-class spot check did not reproduce its return
    DRIFTED = "pool_cross_class_bias"  # a cross-class member's returns sit far above our re-scores
    FALSE_ACCUSATION = "pool_false_accusation"  # it accused a member whose return we reproduced


def _canonical(v: object) -> str:
    """A setting's value as text: null, true/false, decimal ints, shortest round-trip floats, strings as they are."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def pool_id(experiment_id: str, name: str, settings: dict[str, object]) -> str:
    """The pool's name on the wire: 16 hex digits of blake2b (8 bytes) over the experiment, the pool
    name and every optimizer setting that shapes the replica (other values: another pool), joined
    by 0x1f: ``gaia-pool-v1``, experiment id, name, then ``key=value`` sorted by key."""
    text = "\x1f".join([f"gaia-pool-v{POOL_VERSION}", experiment_id, name,
                        *(f"{k}={_canonical(settings[k])}" for k in sorted(settings))])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def pool_seed(pid: str) -> int:
    """The genesis seed of the pool's optimizer (every member's replica starts from it)."""
    return int.from_bytes(hashlib.blake2b(f"seed:{pid}".encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


def generation_seeds(pid: str, generation: int, episodes: int) -> tuple[int, ...]:
    """Episode seeds of every candidate of ``generation`` (common random numbers, like an island's)."""
    return tuple(int.from_bytes(hashlib.blake2b(f"episodes:{pid}:{generation}:{k}".encode(),
                                                digest_size=4).digest(), "big") & 0x7FFFFFFF
                 for k in range(episodes))


def ask_rng(pid: str, generation: int) -> np.random.Generator:
    """The rng a replica's ``ask`` gets for ``generation`` (OpenAI-ES draws its noise from it)."""
    return np.random.default_rng([pool_seed(pid), generation, 5])


#: weights of a member's speed code relative to the median code of the members (-16 .. +8 steps of
#: a quarter octave: 1/16 .. 4 times the median's share), as integers so that every member deals alike:
#: ``round(1024 * 2 ** (r / 4))``
SPEED_WEIGHTS = {r: round(1024 * 2 ** (r / 4)) for r in range(-16, 9)}
SPEED_MIN, SPEED_MAX = -128, 127  # the code on the wire: items per second = 2 ** (code / 4)


def rank(generation: int | str, members: tuple[str, ...] | frozenset[str] | set[str]) -> tuple[str, ...]:
    """The members ranked for ``generation`` (or another key) by BLAKE2b("{g}:{m}") (largest first)."""
    return tuple(sorted(members, key=lambda m: hashlib.blake2b(f"{generation}:{m}".encode(), digest_size=8).digest(),
                        reverse=True))


#: the key the resident's keeper is ranked by (:meth:`Pool.keeper`)
RESIDENT_KEY = "resident"


def weights(members: tuple[str, ...], speeds: dict[str, int | None] | None) -> dict[str, int]:
    """Each member's weight in the dealing: ``SPEED_WEIGHTS`` of its speed code minus the median of
    the known codes (clamped to -16 .. +8; a member with no known code counts as the median), so a
    member at a quarter of the others' speed gets a quarter of their items and one that claims to
    be fast gets at most 4 times the median's share. No codes known: all equal."""
    speeds = speeds or {}
    known = sorted(c for m in members if (c := speeds.get(m)) is not None)
    median = known[(len(known) - 1) // 2] if known else 0
    return {m: SPEED_WEIGHTS[0 if (c := speeds.get(m)) is None else max(-16, min(8, c - median))] for m in members}


def owners(generation: int, n: int, members: tuple[str, ...],
           speeds: dict[str, int | None] | None = None) -> tuple[str, ...]:
    """The member that evaluates each of the ``n`` items of ``generation``: the members ranked by
    ``rank``, items dealt in turn by smooth weighted round robin over ``weights`` (each item: every
    member's credit grows by its weight, the member with the most credit, the first ranked among
    equals, takes the item and loses the total weight). With equal weights item i goes to rank
    i mod len(members) and shares differ by at most one item (a generation waits for its largest
    share); with speeds, a member's share follows its speed (a slow member is given less, rather
    than being waited for or helped with all of it). The ranking, so who gets the extra items,
    changes every generation."""
    ranked = rank(generation, members)
    w = weights(ranked, speeds)
    total = sum(w.values())
    credit = dict.fromkeys(ranked, 0)
    out = []
    for _ in range(n):
        for m in ranked:
            credit[m] += w[m]
        best = max(ranked, key=lambda m: credit[m])  # max keeps the first of equals: the higher ranked
        credit[best] -= total
        out.append(best)
    return tuple(out)


def genesis_head(pid: str) -> bytes:
    return hashlib.blake2b(f"gaia-pool-v{POOL_VERSION}:{pid}".encode(), digest_size=HEAD_BYTES).digest()


def next_head(head: bytes, generation: int, returns: np.ndarray) -> bytes:
    """The head after ``generation``: blake2b(head || generation as 8 bytes big-endian || returns as
    float32 little-endian)."""
    data = head + int(generation).to_bytes(8, "big") + np.asarray(returns, dtype="<f4").tobytes()
    return hashlib.blake2b(data, digest_size=HEAD_BYTES).digest()


# ---------------------------------------------------------------- messages (decoded: core/poolwire.py)


@dataclass(frozen=True)
class Results:
    """What a member tells: returns of some items of one generation, and the head it computed them
    from (the log before ``generation``)."""
    generation: int
    head: bytes
    indices: tuple[int, ...]
    returns: np.ndarray  # float32, one per index
    # the sender's platform class; None: as told before (only a generation's first message tells it)
    platform: str | None
    # the sender's speed code (``SPEED_MIN`` .. ``SPEED_MAX``); None: not measured yet, or an r1 sender
    speed: int | None = None


@dataclass(frozen=True)
class Accusation:
    """What a member tells when it evicts ``accused`` for a lie: item ``index`` of ``generation``,
    as it entered the teller's log from ``accused``, did not reproduce on the accused's platform
    class. Each member of that class that has the same return from ``accused`` in its own log
    re-evaluates the item once: the accused goes if it does not reproduce, the accuser if it does."""
    generation: int
    index: int
    accused: str


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class RoundStarted:
    """The island asks for ``generation``: ``candidates`` (float32 values) on ``seeds``."""
    generation: int
    candidates: np.ndarray
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class ItemsEvaluated:
    """Our own evaluation of some items is done."""
    generation: int
    indices: tuple[int, ...]
    returns: np.ndarray
    why: Work
    seconds: float  # wall time it took (the help wait scales with it)


@dataclass(frozen=True)
class ItemsAbandoned:
    """Our evaluation of some items was stopped (``AbandonWork``): no returns."""
    generation: int
    indices: tuple[int, ...]
    why: Work


@dataclass(frozen=True)
class ResultsReceived:
    src: str
    results: Results


@dataclass(frozen=True)
class AccusationReceived:
    src: str
    accusation: Accusation


@dataclass(frozen=True)
class MembersChanged:
    members: frozenset[str]  # live pool peers (us excluded or included: we are added)


@dataclass(frozen=True)
class Tick:
    """Time passes: the pool may start helping or a spot check."""


@dataclass(frozen=True)
class LogReceived:
    """A member answered our log request: the returns of generations ``start`` .. on."""
    src: str
    start: int
    returns: tuple[np.ndarray, ...]


PoolInput = (RoundStarted | ItemsEvaluated | ItemsAbandoned | ResultsReceived | AccusationReceived | MembersChanged
             | Tick | LogReceived)


def received(src: str, msg: Results | Accusation) -> ResultsReceived | AccusationReceived:
    """The input for a message of the results channel that ``src`` sent."""
    return AccusationReceived(src, msg) if isinstance(msg, Accusation) else ResultsReceived(src, msg)


# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class EvaluateItems:
    generation: int
    indices: tuple[int, ...]
    candidates: np.ndarray  # (len(indices), dim)
    seeds: tuple[int, ...]
    why: Work


@dataclass(frozen=True)
class PublishResults:
    results: Results


@dataclass(frozen=True)
class RoundComplete:
    """Every return of ``generation`` is known: the island is told these (float32-rounded)."""
    generation: int
    returns: np.ndarray
    own: int  # items of it that we evaluated ourselves


@dataclass(frozen=True)
class AbandonWork:
    """Generation ``generation`` is complete while our own share or help for it is still being
    evaluated: stop it (its returns would only be checks), so that we start the next generation's
    share with the others instead of late. A member that finishes obsolete work first starts every
    share late, is helped every generation, and the pool waits for the help each time."""
    generation: int


@dataclass(frozen=True)
class FetchLog:
    """Ask ``peer`` for the log from generation ``start`` on (``head``: ours at ``start``)."""
    peer: str
    start: int
    head: bytes
    why: str  # "behind" | "fork"


@dataclass(frozen=True)
class Replay:
    """The pool's log is now ``log`` (every generation), equal to the old one before ``start``: the
    replica catches up on it (rebuilt from the genesis when its own past after ``start`` differs).
    The island's generation in flight is abandoned."""
    start: int
    log: tuple[np.ndarray, ...]
    src: str


@dataclass(frozen=True)
class Evict:
    peer: str
    reason: Eviction
    detail: str


@dataclass(frozen=True)
class Accuse:
    """Tell the pool why we evicted a member (``Accusation``)."""
    accusation: Accusation


@dataclass(frozen=True)
class KeeperChanged:
    """The member that keeps the pool's resident changed: ``keeper`` now (``ours``: we are it). The
    island assesses, publishes and tests a resident only while it keeps it (:meth:`Pool.keeper`)."""
    keeper: str
    ours: bool


PoolEffect = (EvaluateItems | PublishResults | RoundComplete | AbandonWork | FetchLog | Replay | Evict | Accuse
              | KeeperChanged)


# ---------------------------------------------------------------- the state machine


@dataclass(frozen=True)
class PoolPolicy:
    check_share: float = 0.05  # share of the pool's results spot-checked (re-evaluated by another member)
    help_after: float = 0.5  # wait this share of our own share's duration before helping
    min_help_wait_s: float = 0.2  # ... and at least this (about two gossip rounds)
    arrival_weight: float = 0.2  # weight of a new sample in the arrival delay's moving average
    arrival_margin: float = 1.5  # wait this multiple of the average delay (about half the arrivals come later than it)
    max_arrival_wait_s: float = 1.0  # the delay counted at most (in a pool of two, a slow member is waited for this long)
    help_chunk: int = 8  # items one helping evaluation takes at most
    share_chunks: int = 3  # an owner evaluates (and tells) its share in this many parts, front to back
    help_all_after: float = 3.0  # this multiple of the help wait on, help with every unknown item, not only our part
    speed_samples: int = 5  # our speed: the median of this many own parts (one slow start or hiccup does not count)
    behind_by: int = 2  # a member this many generations ahead of us: we fetch the log
    fetch_retry_s: float = 5.0  # between two log fetches at most once
    max_checks_queued: int = 64  # spot checks waiting for idle time (the oldest go)
    recent_rounds: int = 32  # completed generations whose candidates we keep (late results, accusations)
    cross_class_z: float = 4.0  # evict a cross-class member whose returns exceed our re-scores by this many SE
    cross_class_min: int = 10  # ... once it has this many checks
    max_members: int = 256  # member records kept (the stalest go first)
    max_log: int = 100_000  # generations kept in the log (a joiner needs it all: beyond, the pool refuses joiners)


def _items_per_s(code: int | None) -> float | None:
    return None if code is None else round(2 ** (code / 4), 1)


@dataclass
class MemberRecord:
    platform: str = ""
    generation: int = -1  # the latest generation it told results for
    head: bytes = b""
    heard_at: float = -math.inf
    speed: int | None = None  # its latest speed code
    items: int = 0  # results of its that entered the log first
    checked: int = 0  # spot checks of its results (ours, or a duplicate of ours)
    matched: int = 0
    cross_n: int = 0  # cross-class checks: count, sum and sum of squares of (reported - ours)
    cross_sum: float = 0.0
    cross_sq: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"platform": self.platform, "generation": self.generation, "items": self.items,
                "speed": _items_per_s(self.speed),
                "checked": self.checked, "matched": self.matched, "cross_checked": self.cross_n,
                "cross_bias": round(self.cross_sum / self.cross_n, 4) if self.cross_n else None}


@dataclass
class _Round:
    generation: int
    candidates: np.ndarray
    seeds: tuple[int, ...]
    started_at: float
    returns: np.ndarray  # float32, nan = unknown
    source: list[str]  # who told each known return ("" = unknown)
    share: tuple[int, ...]  # ours (``owners``)
    owners: tuple[str, ...]
    share_done_at: float | None = None
    helped_at: float = -math.inf  # our last help of it ended (the next waits again: the others' help is in flight)
    own_s: float = 0.0  # the seconds our share's parts took
    told: bool = False  # we published results of it (the first message tells our platform class)
    own: int = 0
    heard: bool = False  # results of another owner of items arrived (the arrival delay sampled)

    def unknown(self) -> list[int]:
        return [i for i, s in enumerate(self.source) if not s]


@dataclass
class _Check:
    generation: int
    index: int
    candidate: np.ndarray
    seeds: tuple[int, ...]
    claimed: float
    src: str
    accuser: str | None = None  # a check an accusation asked for (of our class: the accuser goes if it reproduces)


@dataclass
class PoolCounters:
    own: int = 0  # items we evaluated for the pool (own share and help)
    helped: int = 0  # of which helping
    checks: int = 0  # spot checks evaluated
    results_in: int = 0
    results_rejected: dict[str, int] = field(default_factory=dict)
    wasted: int = 0  # our evaluations that arrived after the item was known
    abandoned: int = 0  # our evaluations stopped because their generation was complete
    replays: int = 0
    replayed_generations: int = 0
    evicted: int = 0
    accusations: dict[str, int] = field(default_factory=dict)  # received, by what became of each

    def accusation(self, outcome: str) -> None:
        self.accusations[outcome] = self.accusations.get(outcome, 0) + 1

    def reject(self, reason: str) -> None:
        self.results_rejected[reason] = self.results_rejected.get(reason, 0) + 1


class Pool:
    """One member's view of the pool. ``handle(input, now, rng)`` returns the effects."""

    def __init__(self, *, pid: str, self_id: str, platform: str, episodes: int,
                 policy: PoolPolicy | None = None) -> None:
        self.pid, self.self_id, self.platform, self.episodes = pid, self_id, platform, episodes
        self.policy = policy or PoolPolicy()
        self.log: list[np.ndarray] = []  # float32 returns of generations 0 .. len - 1
        self.heads: list[bytes] = [genesis_head(pid)]  # heads[g]: the log before generation g
        self.members: frozenset[str] = frozenset({self_id})
        self.records: dict[str, MemberRecord] = {}
        self.evicted: set[str] = set()
        self.fenced: dict[str, int] = {}  # members on the other side of a fork we keep -> the generation
        self.round: _Round | None = None
        self.ahead: dict[int, dict[int, tuple[float, str, bytes]]] = {}  # generation -> index -> (return, src, head)
        self.busy: Work | None = None
        self.checks: list[_Check] = []
        self.counters = PoolCounters()
        self.last_share_s = 0.0
        self.speed: int | None = None  # our speed code, told with our results (``owners`` deals by it)
        self._speed_samples: deque[float] = deque(maxlen=self.policy.speed_samples)  # log2 items/s
        self.arrival_delay_s = 0.0  # moving average: others' first results after our share was done
        # the last completed: their late arrivals count, accusations of their items are checked
        self._done_rounds: deque[_Round] = deque(maxlen=self.policy.recent_rounds)
        self.fetching_since = -math.inf
        self._pending_check: _Check | None = None  # the spot check being evaluated
        self._keeper = self_id  # who keeps the resident, as last told (alone: we do)

    # ------------------------------------------------------------ views

    @property
    def generation(self) -> int:
        return len(self.log)

    def live_members(self) -> tuple[str, ...]:
        return tuple(sorted(self.members - self.evicted - self.fenced.keys() | {self.self_id}))

    def speeds(self, members: tuple[str, ...]) -> dict[str, int | None]:
        """The speed codes the members told last (ours: what we tell)."""
        return {m: self.speed if m == self.self_id else (self.records[m].speed if m in self.records else None)
                for m in members}

    def keeper(self) -> str:
        """The member that keeps the pool's resident: the first of the live members ranked for
        ``RESIDENT_KEY``. The replicas are one search, and everything about its best individual is
        work every member would do alike: scoring the resident, the centroid and the migrants in
        the assessment rounds, publishing the resident as a migrant, testing it on fresh episodes.
        One member does it for all, the others only evaluate the pool's items (and help the keeper
        with its share meanwhile). The key is fixed, so the resident stays with one member while
        the members do; when the keeper leaves, the next one takes over with the resident it holds
        (none, or an older one: the next assessment round's centroid replaces it). Members that
        disagree on who is live may both keep a resident for a while; each publishes and tests
        its own, as an island would."""
        return rank(RESIDENT_KEY, self.live_members())[0]

    def seeds_for(self, generation: int) -> tuple[int, ...]:
        return generation_seeds(self.pid, generation, self.episodes)

    def statistics(self) -> dict[str, object]:
        c = self.counters
        return {"id": self.pid, "generation": self.generation, "members": list(self.live_members()),
                "platform": self.platform, "head": self.heads[-1].hex(),
                "own_items": c.own, "helped": c.helped, "help_wait_s": round(self.help_wait(), 3),
                "speed": _items_per_s(self.speed),
                "checks": c.checks, "wasted": c.wasted, "abandoned": c.abandoned, "accusations": dict(c.accusations),
                "resident_keeper": self._keeper,
                "results_in": c.results_in, "results_rejected": dict(c.results_rejected),
                "replays": c.replays, "replayed_generations": c.replayed_generations,
                "evicted": sorted(self.evicted), "fenced": sorted(self.fenced),
                "records": {p: r.as_dict() for p, r in sorted(self.records.items())}}

    def summary(self) -> dict[str, object]:
        """What the pool came to, for the log line a node writes when it stops: our work, and each
        member's items in our log, checks and speed."""
        st = self.statistics()
        return {k: st[k] for k in ("generation", "own_items", "helped", "checks", "wasted", "abandoned", "speed",
                                   "help_wait_s", "replays")} | {
            "evicted": len(self.evicted),
            "members": {p[-8:]: [r.items, r.checked, r.matched, _items_per_s(r.speed)]
                        for p, r in sorted(self.records.items())}}

    # ------------------------------------------------------------ driving

    def handle(self, event: PoolInput, *, now: float, rng: np.random.Generator) -> list[PoolEffect]:
        effects = self._handle(event, now, rng)
        keeper = self.keeper()  # the live members change with joins, departures, evictions and forks
        if keeper != self._keeper:
            self._keeper = keeper
            effects.append(KeeperChanged(keeper, keeper == self.self_id))
        return effects

    def _handle(self, event: PoolInput, now: float, rng: np.random.Generator) -> list[PoolEffect]:
        if isinstance(event, RoundStarted):
            return self._started(event, now, rng)
        if isinstance(event, ItemsEvaluated):
            return self._evaluated(event, now, rng)
        if isinstance(event, ItemsAbandoned):
            self.busy = None
            self.counters.abandoned += len(event.indices)
            return self._next_work(now)
        if isinstance(event, ResultsReceived):
            return self._received(event.src, event.results, now, rng)
        if isinstance(event, AccusationReceived):
            return self._accused(event.src, event.accusation, now)
        if isinstance(event, MembersChanged):
            self.members = frozenset(event.members) | {self.self_id}
            return self._next_work(now)
        if isinstance(event, Tick):
            return self._next_work(now, tick=True)
        if isinstance(event, LogReceived):
            return self._log_received(event, now)
        raise LocalProtocolError(f"pool cannot handle {type(event).__name__}")

    def _record(self, peer: str) -> MemberRecord:
        rec = self.records.get(peer)
        if rec is None:
            if len(self.records) >= self.policy.max_members:
                stalest = min(self.records, key=lambda p: self.records[p].heard_at)
                del self.records[stalest]
                self.fenced.pop(stalest, None)
            rec = self.records[peer] = MemberRecord()
        return rec

    def _started(self, ev: RoundStarted, now: float, rng: np.random.Generator) -> list[PoolEffect]:
        if ev.generation != self.generation:
            raise LocalProtocolError(f"the island asks for generation {ev.generation}, the pool log is at "
                                     f"{self.generation}")
        n = len(ev.candidates)
        members = self.live_members()
        owned = owners(ev.generation, n, members, self.speeds(members))
        rnd = _Round(ev.generation, np.asarray(ev.candidates), tuple(ev.seeds), now,
                     np.full(n, np.nan, dtype=np.float32), [""] * n,
                     tuple(i for i, o in enumerate(owned) if o == self.self_id), owned)
        self.round = rnd
        effects: list[PoolEffect] = []
        for i, (value, src, head) in sorted(self.ahead.pop(ev.generation, {}).items()):
            if head != self.heads[ev.generation]:
                effects.extend(self._fork(src, ev.generation, now))
            elif i < n and src not in self.evicted:
                self._learn(rnd, i, value, src, effects)
        self.ahead = {g: v for g, v in self.ahead.items() if g > ev.generation}
        if not rnd.share:
            rnd.share_done_at = now
        return effects + self._maybe_complete(rng) + self._next_work(now)

    def _learn(self, rnd: _Round, i: int, value: float, src: str, effects: list[PoolEffect]) -> None:
        """A return for item i: the first one known is used; a second one is compared (a spot check
        for free where one of the two is ours)."""
        if not rnd.source[i]:
            rnd.returns[i] = np.float32(value)
            rnd.source[i] = src
            if src != self.self_id:
                self._record(src).items += 1
            return
        known, known_src = float(rnd.returns[i]), rnd.source[i]
        if known_src == src:
            return
        if src == self.self_id:
            effects.extend(self._compare(known_src, value, known, (rnd.generation, i)))
        elif known_src == self.self_id:
            effects.extend(self._compare(src, known, float(np.float32(value)), (rnd.generation, i)))

    def _compare(self, peer: str, ours: float, theirs: float, item: tuple[int, int] | None = None) -> list[PoolEffect]:
        """Our return of an item (``item``: generation and index) against ``peer``'s; evicts a liar
        and accuses it before the pool."""
        if peer in self.evicted:
            return []
        rec = self._record(peer)
        rec.checked += 1
        if rec.platform == self.platform:
            if np.float32(ours) == np.float32(theirs):
                rec.matched += 1
                return []
            evict = self._evict(peer, Eviction.LIED, f"reported {theirs!r}, measured {ours!r} (same platform class)")
            return evict + ([Accuse(Accusation(item[0], item[1], peer))] if item is not None else [])
        d = float(theirs) - float(ours)
        rec.cross_n += 1
        rec.cross_sum += d
        rec.cross_sq += d * d
        if abs(d) <= 1e-5 * max(1.0, abs(ours)):
            rec.matched += 1
        n = rec.cross_n
        if n >= self.policy.cross_class_min:
            mean = rec.cross_sum / n
            var = max(rec.cross_sq / n - mean * mean, 1e-12)
            z = mean / math.sqrt(var / n)
            if z > self.policy.cross_class_z:
                return self._evict(peer, Eviction.DRIFTED, f"mean excess {mean:.4g} over {n} checks (z {z:.1f})")
        return []

    def _evict(self, peer: str, reason: Eviction, detail: str) -> list[PoolEffect]:
        self.evicted.add(peer)
        self.counters.evicted += 1
        self.checks = [c for c in self.checks if peer not in (c.src, c.accuser)]
        return [Evict(peer, reason, detail)]

    def _accused(self, src: str, acc: Accusation, now: float) -> list[PoolEffect]:
        """``src`` says ``acc.accused`` lied about an item. Checked only where it can be decided
        exactly: accuser and accused of one platform class (the accuser claims an exact mismatch),
        the item's return in our log from the accused (so we hold the very claim), the generation
        among our recent rounds. Of our class: one re-evaluation, queued before the other checks;
        the accused goes if it does not reproduce, the accuser if it does (a stranger's false
        accusation costs each of us one evaluation, once). Of another class: the same check, judged
        statistically as any cross-class check. One accusation per accuser waits at a time."""
        m = acc.accused
        records = self.records
        accused_class = self.platform if m == self.self_id else (records[m].platform if m in records else "")
        rnd = self._recent_round(acc.generation)
        waiting = [c for c in self.checks + [self._pending_check] if c is not None]
        if src in self.evicted or m in self.evicted or m == src:
            outcome = "ignored"
        elif not accused_class or src not in records or records[src].platform != accused_class:
            outcome = "cross_class"
        elif rnd is None or not 0 <= acc.index < len(rnd.source):
            outcome = "stale"
        elif rnd.source[acc.index] != m:
            outcome = "unverifiable"  # its claim did not enter our log: not ours to judge
        elif any(c.accuser == src for c in waiting):
            outcome = "duplicate"
        else:
            outcome = "queued"
            same = [c for c in waiting if (c.src, c.generation, c.index) == (m, acc.generation, acc.index)]
            for c in same:  # a check of that item was drawn already: it now decides the accusation too
                c.accuser = c.accuser or src
            if not same:
                self.checks.append(_Check(acc.generation, acc.index, rnd.candidates[acc.index].copy(), rnd.seeds,
                                          float(rnd.returns[acc.index]), m, src))
        self.counters.accusation(outcome)
        return self._next_work(now) if outcome == "queued" else []

    def _checked(self, c: _Check, value: float) -> list[PoolEffect]:
        """A spot check's return against the claim it checks. An accusation's check that reproduces
        the claim evicts the accuser; one that does not, the accused (``_compare``, which accuses it
        in turn). Our own return is checked only when we are accused."""
        if c.src in self.evicted:
            return []
        exact = c.src == self.self_id or (c.src in self.records and self.records[c.src].platform == self.platform)
        if c.accuser is not None and exact and np.float32(value) == np.float32(c.claimed):
            self.counters.accusation("false")
            if c.accuser in self.evicted:
                return []
            return self._evict(c.accuser, Eviction.FALSE_ACCUSATION,
                               f"accused {c.src} of item {c.index} of generation {c.generation}, which reproduced")
        if c.src == self.self_id:  # accused, and our own evaluation did not reproduce: nobody to blame
            self.counters.accusation("own_not_reproduced")
            return []
        effects = self._compare(c.src, value, c.claimed, (c.generation, c.index))
        if c.accuser is not None:
            self.counters.accusation("upheld" if c.src in self.evicted else "not_exact")
        return effects

    def _recent_round(self, generation: int) -> _Round | None:
        if self.round is not None and self.round.generation == generation:
            return self.round
        return next((r for r in self._done_rounds if r.generation == generation), None)

    def _maybe_complete(self, rng: np.random.Generator) -> list[PoolEffect]:
        rnd = self.round
        if rnd is None or rnd.unknown():
            return []
        returns = rnd.returns.astype(np.float32)
        self.log.append(returns)
        self.heads.append(next_head(self.heads[-1], rnd.generation, returns))
        if len(self.log) > self.policy.max_log:
            raise LocalProtocolError("pool log full")  # unreachable in practice: 100k generations
        self.round = None
        self._done_rounds.append(rnd)
        self.queue_checks(rnd.generation, rnd.candidates, rnd.seeds, rnd.source, returns, rng)
        abandon = [AbandonWork(rnd.generation)] if self.busy in (Work.OWN, Work.HELP) else []
        return abandon + [RoundComplete(rnd.generation, returns.astype(np.float64), rnd.own)]

    def queue_checks(self, rnd_generation: int, candidates: np.ndarray, seeds: tuple[int, ...],
                     sources: list[str], returns: np.ndarray, rng: np.random.Generator) -> None:
        """Draw the spot checks of a completed generation: each result of another member with
        probability check_share / (members - 1), so that every result is checked by check_share
        members on average, whatever the pool's size, and checks cost check_share of the pool's
        evaluations (each member checking check_share of all the others' results cost 35 % at 8
        members, and the member that drew the most checks started its next share late); times our
        speed relative to the median member's when we are slower (a check holds a slow member up
        for longer: the fast ones check the slow one). Ours and those already compared are not drawn."""
        members = self.live_members()
        share = (self.policy.check_share / max(1, len(members) - 1)
                 * min(1.0, weights(members, self.speeds(members))[self.self_id] / SPEED_WEIGHTS[0]))
        for i, src in enumerate(sources):
            if src and src != self.self_id and src not in self.evicted and rng.random() < share:
                self.checks.append(_Check(rnd_generation, i, candidates[i].copy(), seeds, float(returns[i]), src))
        del self.checks[:-self.policy.max_checks_queued]

    def _next_work(self, now: float, *, tick: bool = False) -> list[PoolEffect]:
        """Idle: our share first, then help with what is unknown, then a spot check. Untouched parts
        of others' shares are taken on a tick only, not on each message: the messages of one
        moment (an owner's parts, told one after the other) all count before we judge it slow."""
        if self.busy is not None:
            return []
        rnd = self.round
        if rnd is not None:
            if rnd.share_done_at is None:
                todo = [i for i in rnd.share if not rnd.source[i]]
                if todo:
                    return [self._evaluate(rnd, tuple(todo[:share_part(len(rnd.share), self.policy.share_chunks)]),
                                           Work.OWN)]
                rnd.share_done_at, self.last_share_s = now, rnd.own_s
            unknown = rnd.unknown()
            if unknown:
                # the parts of other shares their owners have not started: at once (nobody is on them)
                items = self._help_items(rnd, unknown, Help.UNTOUCHED) if tick else ()
                wait = self.help_wait()
                idle_since = max(rnd.share_done_at, rnd.helped_at)
                if not items and now - idle_since >= wait:  # what may be under way, after the wait
                    late = now - idle_since >= self.policy.help_all_after * wait
                    items = self._help_items(rnd, unknown, Help.EVERYTHING if late else Help.DEALT)
                if items:
                    return [self._evaluate(rnd, items, Work.HELP)]
        if self.checks and rnd is not None and rnd.share_done_at is not None:
            # an accusation's check first (the pool waits to hear if the accused lies), else the newest
            accused = [k for k, c in enumerate(self.checks) if c.accuser is not None]
            c = self._pending_check = self.checks.pop(accused[0] if accused else -1)
            self.busy = Work.CHECK
            return [EvaluateItems(c.generation, (c.index,), c.candidate[None, :], c.seeds, Work.CHECK)]
        return []

    def _help_items(self, rnd: _Round, unknown: list[int], how: Help) -> tuple[int, ...]:
        """What we help with. The helpers are us and the members whose share is done (they told
        results for this generation and all their items are known). The items of the other owners
        (the silent ones, probably dead, first; each share from its end, as its owner works from
        the front) are dealt in turn among the helpers and we take the unknown ones of our part,
        so that helpers split a dead or slow member's share instead of all taking the same items.
        ``UNTOUCHED``: of owners that told results for this generation (alive, at work, slower than
        us), only the items beyond the part each may be evaluating now (its first unknown
        ``share_part`` items), at most half a part of our own size: the end of a share whose items
        turned out slow is taken while its owner works on the front. ``EVERYTHING``: a
        helper that died after telling its share leaves its part unknown: any unknown item."""
        g = rnd.generation
        told = {m for m, r in self.records.items() if r.generation >= g}
        quiet = {o for o in rnd.owners if o != self.self_id and o not in told}

        def silent_first_from_the_end(i: int) -> tuple[bool, int]:
            return rnd.owners[i] not in quiet, -i

        if how == Help.EVERYTHING:
            items = unknown
        else:
            pending = {rnd.owners[i] for i in unknown}
            helpers = rank(g, {self.self_id} | (told & set(self.live_members()) - pending))
            targets = [i for i, o in enumerate(rnd.owners) if o not in helpers]
            if how == Help.UNTOUCHED:
                chunks = self.policy.share_chunks
                shares: dict[str, list[int]] = {}
                for i in targets:
                    if rnd.owners[i] in told:  # alive and at work on this generation, only slower than us
                        shares.setdefault(rnd.owners[i], []).append(i)
                targets = [i for share in shares.values()
                           for i in [j for j in share if not rnd.source[j]][share_part(len(share), chunks):]]
            targets.sort(key=silent_first_from_the_end)
            items = [i for i in targets[helpers.index(self.self_id)::len(helpers)] if not rnd.source[i]]
            if how == Help.UNTOUCHED:  # half a part of ours: its owner is on its way to them
                items = items[:max(1, share_part(len(rnd.share), self.policy.share_chunks) // 2)]
        return tuple(sorted(sorted(items, key=silent_first_from_the_end)[:self.policy.help_chunk]))

    def help_wait(self) -> float:
        """Seconds after our share is done before we help: a part of our share's duration plus the
        measured arrival delay with a margin (at most ``max_arrival_wait_s``)."""
        return max(self.policy.min_help_wait_s, self.policy.help_after * self.last_share_s
                   + min(self.policy.arrival_margin * self.arrival_delay_s, self.policy.max_arrival_wait_s))

    def _heard(self, rnd: _Round, src: str, now: float) -> None:
        """Results of ``src`` for ``rnd``. The first owner heard gives a sample of the arrival delay:
        how long after our share was done (0 if before) the FASTEST other member's results arrive,
        so a slow member does not count as network delay (with more than one other member).
        A late arrival (after the round completed with our help) counts too, or a delay that makes
        us help would never be measured."""
        if rnd.heard or src not in rnd.owners or src == self.self_id:
            return
        rnd.heard = True
        delay = 0.0 if rnd.share_done_at is None else max(0.0, now - rnd.share_done_at)
        w = self.policy.arrival_weight
        self.arrival_delay_s = (1 - w) * self.arrival_delay_s + w * delay

    def _evaluate(self, rnd: _Round, items: tuple[int, ...], why: Work) -> EvaluateItems:
        self.busy = why
        return EvaluateItems(rnd.generation, items, rnd.candidates[list(items)], rnd.seeds, why)

    def _evaluated(self, ev: ItemsEvaluated, now: float, rng: np.random.Generator) -> list[PoolEffect]:
        self.busy = None
        returns = np.asarray(ev.returns, dtype=np.float32)
        effects: list[PoolEffect] = []
        if ev.why == Work.CHECK:
            self.counters.checks += 1
            c = self._pending_check
            self._pending_check = None
            if c is not None:
                effects.extend(self._checked(c, float(returns[0])))
            return effects + self._next_work(now)
        rnd = self.round
        if ev.why == Work.OWN:
            self._measure_speed(len(ev.indices), ev.seconds)
        self.counters.own += len(ev.indices)
        if ev.why == Work.HELP:
            self.counters.helped += len(ev.indices)
        if rnd is None or rnd.generation != ev.generation:
            self.counters.wasted += len(ev.indices)  # the pool went on without us
            return effects + self._next_work(now)
        fresh = [k for k, i in enumerate(ev.indices) if not rnd.source[i]]
        self.counters.wasted += len(ev.indices) - len(fresh)
        for k, i in enumerate(ev.indices):
            self._learn(rnd, i, float(returns[k]), self.self_id, effects)
        rnd.own += len(fresh)
        if ev.why == Work.OWN:
            rnd.own_s += ev.seconds
        elif ev.why == Work.HELP:
            rnd.helped_at = now
        effects.append(PublishResults(Results(ev.generation, self.heads[ev.generation], tuple(ev.indices),
                                              returns, None if rnd.told else self.platform, self.speed)))
        rnd.told = True
        return effects + self._maybe_complete(rng) + self._next_work(now)

    def _measure_speed(self, items: int, seconds: float) -> None:
        """Our speed, from how long our own shares take (the duty cycle's rest included: a slower
        machine's share takes longer). The code told changes only when the median of the last
        samples moved more than one step away from it, so that members keep dealing alike."""
        self._speed_samples.append(math.log2(max(items, 1) / max(seconds, 1e-6)))
        centre = 4 * float(np.median(self._speed_samples))
        if self.speed is None or abs(centre - self.speed) > 1.0:
            self.speed = max(SPEED_MIN, min(SPEED_MAX, round(centre)))

    def _received(self, src: str, res: Results, now: float, rng: np.random.Generator) -> list[PoolEffect]:
        if src in self.evicted:
            self.counters.reject("evicted")
            return []
        self.counters.results_in += 1
        rec = self._record(src)
        rec.heard_at = now
        if res.platform is not None:
            rec.platform = res.platform
        if res.speed is not None:
            rec.speed = res.speed
        if res.generation >= rec.generation:
            rec.generation, rec.head = res.generation, res.head
        g = res.generation
        if g <= self.generation and res.head == self.heads[g]:
            self.fenced.pop(src, None)  # it shares our past (again)
        if g < self.generation:
            # late: compare with the log where we evaluated the item ourselves is not known any more;
            # a head that differs from ours at g is a fork
            if self.heads[g] != res.head:
                return self._fork(src, g, now)
            for done in self._done_rounds:
                if done.generation == g:
                    self._heard(done, src, now)
            self.counters.reject("late")
            return []
        if g >= self.generation + self.policy.behind_by:
            return self._behind(src, now)
        if g == self.generation and res.head != self.heads[g]:
            return self._fork(src, g, now)
        rnd = self.round
        if g > self.generation or rnd is None:
            # ahead of us, or between a completed round and the island's next ask: kept for then
            # (with the head it came from, checked once we know ours)
            buf = self.ahead.setdefault(g, {})
            for i, r in zip(res.indices, res.returns):
                buf.setdefault(int(i), (float(r), src, res.head))
            return []
        self._heard(rnd, src, now)
        effects: list[PoolEffect] = []
        for i, r in zip(res.indices, res.returns):
            if 0 <= int(i) < len(rnd.source):
                self._learn(rnd, int(i), float(r), src, effects)
        if src in self.evicted:
            return effects
        return effects + self._maybe_complete(rng) + self._next_work(now)

    def _behind(self, src: str, now: float) -> list[PoolEffect]:
        if now - self.fetching_since < self.policy.fetch_retry_s:
            return []
        self.fetching_since = now
        return [FetchLog(src, self.generation, self.heads[-1], "behind")]

    def _fork(self, src: str, g: int, now: float) -> list[PoolEffect]:
        """``src`` computed generation g from another past than ours. The side more members announce
        keeps its log; we only ever move ourselves. On a tie both sides fetch the other's log, and
        the log rule (``_log_received``) settles it the same way on both."""
        theirs = self.records[src].head if self.records[src].generation == g else None
        ours = self.heads[g]
        at_g = [r for p, r in self.records.items() if p not in self.evicted and r.generation == g]
        support_theirs = sum(1 for r in at_g if r.head == theirs)
        support_ours = 1 + sum(1 for r in at_g if r.head == ours)
        if theirs is None or support_ours > support_theirs:
            # it works from another past: its items are no longer ours to wait for (a member that
            # gives way, replays our log and tells results from our head is a member again)
            self.fenced[src] = g
            self.counters.reject("fork_kept")
            return []
        if now - self.fetching_since < self.policy.fetch_retry_s:
            return []
        self.fetching_since = now
        return [FetchLog(src, 0, self.heads[0], "fork")]

    def _log_received(self, ev: LogReceived, now: float) -> list[PoolEffect]:
        """Adopt a member's log when it extends ours, or when we asked because of a fork (then it
        replaces ours from the first generation where the two differ)."""
        self.fetching_since = -math.inf
        if ev.start > self.generation or not ev.returns:
            self.counters.reject("log_unusable")
            return []
        new_log = self.log[:ev.start] + [np.asarray(r, dtype=np.float32) for r in ev.returns]
        same = next((k for k in range(ev.start, min(len(new_log), len(self.log)))
                     if new_log[k].tobytes() != self.log[k].tobytes()), min(len(new_log), len(self.log)))
        if same == len(new_log) or (ev.start > 0 and same < len(self.log)):
            # nothing new, or a suffix that contradicts us: asked as "behind", but it is a fork;
            # the next results message of that side brings the fork rule in
            self.counters.reject("log_not_longer" if same == len(new_log) else "log_forked")
            return []
        heads = self.heads[:same + 1]
        for k in range(same, len(new_log)):
            heads.append(next_head(heads[-1], k, new_log[k]))
        # the log of one member is not the pool's: take it only when more members tell results
        # from it than from ours, or a member that runs ahead alone, or claims to, would rewrite
        # everyone's past with whatever it serves. A tie: a log that only extends ours is taken; of
        # two that differ, the one with the smaller head after the first generation they differ in
        # (both sides of a fork compute the same answer, however far each has gone since)
        theirs, ours = self._support(heads), 1 + self._support(self.heads)
        if theirs == ours and same < len(self.log):
            take = heads[same + 1] < self.heads[same + 1]
        else:
            take = theirs >= ours
        if not take:
            if ev.src in self.records:  # fenced entries stay within the member records' bound
                self.fenced[ev.src] = len(new_log)
            self.counters.reject("log_outvoted")
            return []
        self.log, self.heads = new_log, heads
        self.round, self.ahead = None, {}
        self.fenced.clear()  # our past changed: who works from another one is learnt anew
        self.counters.replays += 1
        self.counters.replayed_generations += len(new_log) - same
        return [Replay(same, tuple(new_log), ev.src)]

    def _support(self, heads: list[bytes]) -> int:
        """Members (not us, not evicted) whose latest results were computed from the past ``heads`` describes."""
        return sum(1 for p, r in self.records.items() if p not in self.evicted
                   and 0 <= r.generation < len(heads) and heads[r.generation] == r.head)

    def log_from(self, start: int) -> tuple[np.ndarray, ...]:
        return tuple(self.log[start:])

    # ------------------------------------------------------------ checkpoint

    def to_checkpoint(self) -> dict[str, object]:
        # the keeper is not restored (it follows from who is live); it is written for tools/policy.py,
        # which tells whoever plays a non-keeper's checkpoint that its best is not the pool's
        return {"pid": self.pid, "log": [r.astype("<f4").tobytes() for r in self.log],
                "evicted": sorted(self.evicted), "keeper": self._keeper}

    def restore(self, data: dict[str, object]) -> None:
        if data.get("pid") != self.pid:
            raise LocalProtocolError("checkpoint of another pool")
        self.log = [np.frombuffer(b, dtype="<f4").copy() for b in data.get("log", [])]  # type: ignore[union-attr]
        self.heads = [genesis_head(self.pid)]
        for k, r in enumerate(self.log):
            self.heads.append(next_head(self.heads[-1], k, r))
        self.evicted = set(data.get("evicted", []))  # type: ignore[arg-type]
