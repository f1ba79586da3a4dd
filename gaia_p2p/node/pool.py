"""A pool member's shell (protocols/gaia-pool-v1.md); the policy is core/pool.py.

- ``PoolMember``: what a pool member owns besides the island: the tasks that evaluate its work,
  publish its results, receive the others', tick the pool's clock and fetch the log, and the
  handlers of the pool's effects that need no island (node/runtime.py dispatches them).
- ``PoolTopic``: ``/gaia/<experiment-id>/pool/<pool-id>/1``, the gossip topic members tell their
  results on; its validator decodes once (core/poolwire.py on core/wire.py), rate-limits per sender and counts
  rejections by reason. Its topic peers are the pool's members as this node sees them.
- ``DirectResults``: ``/gaia/pool/results/1.0.0`` (``pool.transport = "direct"``): results sent once
  to each member over a long-lived stream instead of over gossipsub.
- ``PoolLogService``: ``/gaia/pool/log/1.0.0``, a member behind or on the losing side of a fork asks
  one member for the log (the returns of every generation from a point on) and replays it.
- ``platform_class()``: which replicas are bit-identical to ours (same machine type, numpy and
  OpenBLAS kernel): only their results are checked exactly.
"""

from __future__ import annotations

import ctypes
import platform
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
import trio

from gaia_p2p.core import poolwire
from gaia_p2p.core.events import Evaluate
from gaia_p2p.core.pool import (AbandonWork, Accusation, Accuse, EvaluateItems, FetchLog, ItemsAbandoned,
                                ItemsEvaluated, LogReceived, MembersChanged, Pool, PoolInput, PublishResults, Results,
                                RoundComplete, RoundStarted, Tick, Work, received)
from gaia_p2p.core.schedule import Outcome, TokenBucket
from gaia_p2p.core.wire import Reason
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node.control import encode_uvarint, read_frame, request, serve_request
from gaia_p2p.node.gossip import ValidatedTopic

if TYPE_CHECKING:
    from gaia_p2p.node.evaluator import Evaluator

log = structlog.get_logger("gaia.pool")

POOL_LOG_PROTOCOL = "/gaia/pool/log/1.0.0"
POOL_RESULTS_PROTOCOL = "/gaia/pool/results/1.0.0"
#: direct results: inbound streams at most (one per member), closed after this long without a frame,
#: and how long one write may take before that member's stream is dropped (a stuck peer delays no one)
MAX_RESULTS_STREAMS, RESULTS_IDLE_S, RESULTS_WRITE_S = 64, 120.0, 2.0
#: log requests answered per asking peer: 1 a second, bursts of 3 (a joiner asks once or twice)
SERVE_RATE_PER_S, SERVE_BURST = 1.0, 3.0
#: pool results waiting to be published at most (one message per evaluation; full: the network is
#: stuck, the newest is dropped and counted, and the others' helpers fill the gap)
PUBLISH_QUEUE = 16
#: how often the pool's clock ticks (helping and spot checks start on a tick) and how often its
#: members are looked up (the pool topic's peers)
TICK_S, MEMBERS_S = 0.05, 1.0


class PoolLogOutcome(Outcome):
    """What asking one member for the pool's log came to, counted under this name (``failed_<reason>``:
    the answer broke a gaia-pool-v1 check; ``failed_unreachable``: no answer)."""

    FETCHED = "fetched"
    REFUSED = "refused"  # an empty answer: rate-limited, or our request broke a check there
    FAILED_TOO_LARGE = "failed_too_large"
    FAILED_NOT_MSGPACK = "failed_not_msgpack"
    FAILED_BAD_VERSION = "failed_bad_version"
    FAILED_BAD_FIELD = "failed_bad_field"
    FAILED_WRONG_POOL = "failed_wrong_pool"
    FAILED_NONFINITE = "failed_nonfinite"
    FAILED_UNREACHABLE = "failed_unreachable"


def pool_topic(experiment_id: str, pid: str) -> str:
    return f"/gaia/{experiment_id}/pool/{pid}/1"


def platform_class() -> str:
    """Machine type, numpy version and OpenBLAS kernel ("x86_64-np2.4.6-SkylakeX"): two replicas
    with the same class compute bit-identical candidates and returns (measured: different OpenBLAS
    kernels give candidates that differ by ~4e-9, and then different returns)."""
    core = "unknown"
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and line.rstrip().endswith(".so")})
        for path in libs:
            lib = ctypes.CDLL(path)
            for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    core = fn().decode("ascii", "replace")
                    break
    except OSError:
        pass  # no /proc (not Linux) or no OpenBLAS: the class says "unknown" and is compared as such
    text = f"{platform.machine()}-np{np.__version__}-{core}"
    return "".join(c if c.isalnum() or c in "_.:+-" else "_" for c in text)[:poolwire.MAX_PLATFORM]


class PoolTopic(ValidatedTopic):
    """Results (and accusations) of the pool's members; each message is decoded once, in the validator."""

    def __init__(self, topic: str, experiment_id: str, pid: str, self_id: str,
                 rate_per_s: float = 50.0, burst: float = 100.0) -> None:
        super().__init__(topic, experiment_id, self_id, rate_per_s, burst)
        self.pid = pid

    def decode(self, data: bytes) -> Results | Accusation:
        return poolwire.decode_message(data, pid=self.pid)

    def admit(self, origin: str, data: bytes) -> Results | Accusation:
        """A message (results or an accusation) that came over a direct stream: the validator's checks (rate, decoding),
        raising ``RemoteProtocolError``."""
        if not self.bucket.allow(origin, trio.current_time()):
            raise RemoteProtocolError(Reason.RATE_LIMITED, "")
        return self.decode(data)


class DirectResults:
    """``/gaia/pool/results/1.0.0``: each member's results go once to every other member, framed
    (unsigned varint + the gossip message's bytes) on one long-lived stream per member pair. No
    per-message signature (the connection is authenticated) and no forwarding: a member hears only
    the members it holds a connection with, which in a small pool are all of them (gossipsub's
    topic peers, the pool's members, are connected peers)."""

    def __init__(self, host: Any, topic: PoolTopic, feed: Callable[[PoolInput], None],
                 banned: Callable[[str], bool] = lambda peer: False) -> None:
        self.host, self.topic, self._feed, self._banned = host, topic, feed, banned
        self.out: dict[str, Any] = {}  # member -> our stream to it
        self.inbound: set[str] = set()  # members whose stream to us is open
        self.stats: Counter[str] = Counter()

    async def send(self, peers: list[str], data: bytes) -> None:
        frame = encode_uvarint(len(data)) + data
        for peer in peers:
            with trio.move_on_after(RESULTS_WRITE_S) as late:
                try:
                    stream = self.out.get(peer)
                    if stream is None:
                        from libp2p.custom_types import TProtocol
                        from libp2p.peer.id import ID

                        stream = await self.host.new_stream(ID.from_base58(peer), [TProtocol(POOL_RESULTS_PROTOCOL)])
                        self.out[peer] = stream
                    await stream.write(frame)
                    self.stats["sent"] += 1
                    continue
                except Exception as e:  # noqa: BLE001 - reset, gone, no such protocol: that member's problem
                    self.stats["send_failed"] += 1
                    log.debug("pool_results_send_failed", peer_id=peer, error=f"{type(e).__name__}: {e}"[:200])
            if late.cancelled_caught:
                self.stats["send_timed_out"] += 1
            await self._drop(peer)
        for gone in set(self.out) - set(peers):  # members no more: their streams go
            await self._drop(gone)

    async def _drop(self, peer: str) -> None:
        stream = self.out.pop(peer, None)
        if stream is not None:
            with trio.move_on_after(1.0):
                try:
                    await stream.reset()
                except Exception:  # noqa: BLE001 - already broken
                    pass

    async def handle(self, stream: Any) -> None:
        """A member's stream of results to us, until it closes, idles or breaks a rule (a frame that
        does not decode ends it; a rate-limited one is dropped, counted)."""
        peer = str(stream.muxed_conn.peer_id)
        if peer in self.inbound or len(self.inbound) >= MAX_RESULTS_STREAMS or self._banned(peer):
            self.stats["refused_stream"] += 1
            await stream.reset()
            return
        self.inbound.add(peer)
        try:
            while True:
                with trio.move_on_after(RESULTS_IDLE_S) as idle:
                    try:
                        data = await read_frame(stream, poolwire.MAX_RESULTS_BYTES)
                    except ValueError as e:  # a length beyond the limit, or no varint
                        self.topic.reject(Reason.TOO_LARGE, peer, str(e), in_validator=False)
                        return
                if idle.cancelled_caught:
                    self.stats["closed_idle"] += 1
                    return
                try:
                    msg = self.topic.admit(peer, data)
                except RemoteProtocolError as e:
                    self.topic.reject(e.reason, peer, e.detail, in_validator=False)
                    if e.reason == Reason.RATE_LIMITED:
                        continue
                    return
                self.stats["received"] += 1
                self._feed(received(peer, msg))
        except Exception as e:  # noqa: BLE001 - EOF, reset: the member left or restarted
            self.stats["closed"] += 1
            log.debug("pool_results_stream_closed", peer_id=peer, error=f"{type(e).__name__}: {e}"[:200])
        finally:
            self.inbound.discard(peer)
            with trio.move_on_after(1.0):
                try:
                    await stream.reset()
                except Exception:  # noqa: BLE001 - already closed
                    pass


class PoolLogService:
    """Serves our log to a member that asks, and asks one for its log."""

    def __init__(self, host: Any, pool: Pool) -> None:
        self.host, self.pool = host, pool
        self.bucket = TokenBucket(SERVE_RATE_PER_S, SERVE_BURST)
        self.stats: Counter[str] = Counter()

    def answer(self, req: bytes) -> bytes:
        """The log from the asker's generation on when its head there is ours, else from the genesis."""
        start, head = poolwire.decode_log_request(req, pid=self.pool.pid)
        if start > self.pool.generation or self.pool.heads[start] != head:
            start = 0
        returns = self.pool.log_from(start)[:poolwire.MAX_LOG_GENERATIONS]
        return poolwire.encode_log(self.pool.pid, start, returns)

    async def handle(self, stream: Any) -> None:
        def respond(peer: str, req: bytes) -> tuple[bytes, Reason | None]:
            if not self.bucket.allow(peer, trio.current_time()):
                return b"", Reason.RATE_LIMITED
            try:
                return self.answer(req), None
            except RemoteProtocolError as e:
                return b"", Reason(e.reason)

        await serve_request(stream, max_request=256, respond=respond, stats=self.stats,
                            event="pool_log_request_rejected", logger=log)

    async def fetch(self, peer: str, start: int, head: bytes) -> tuple[int, tuple[np.ndarray, ...]] | None:
        """``peer``'s log from ``start`` (or from 0, when our pasts differ); None on failure (logged)."""
        try:
            data = await request(self.host, peer, POOL_LOG_PROTOCOL,
                                 poolwire.encode_log_request(self.pool.pid, start, head), poolwire.MAX_LOG_BYTES)
            if not data:
                self.stats[PoolLogOutcome.REFUSED] += 1
                log.info("pool_log_refused", peer_id=peer)
                return None
            got = poolwire.decode_log(data, pid=self.pool.pid)
        except RemoteProtocolError as e:
            self.stats[PoolLogOutcome.failed(Reason(e.reason))] += 1
            log.warning("pool_log_rejected", peer_id=peer, reason=e.reason, error=e.detail[:200])
            return None
        except Exception as e:  # noqa: BLE001 - no such protocol, reset, timeout: the peer's problem, counted
            self.stats[PoolLogOutcome.FAILED_UNREACHABLE] += 1
            log.info("pool_log_failed", peer_id=peer, error=f"{type(e).__name__}: {e}"[:200])
            return None
        self.stats[PoolLogOutcome.FETCHED] += 1
        return got


class PoolMember:
    """A pool member's shell: the pool's replica (``pool``), its topic, its log service, and the
    tasks around them. Inputs go to ``feed`` (the node's one loop); the effects come back to the
    handlers below through node/runtime.py's dispatch table."""

    def __init__(self, p2p: Any, pool: Pool, topic: PoolTopic, *, genesis: Callable[[], Any],
                 evaluator: Evaluator, feed: Callable[[PoolInput], None],
                 rest: Callable[..., Awaitable[None]] | None = None, direct: bool = False,
                 banned: Callable[[str], bool] = lambda peer: False) -> None:
        self.p2p, self.pool, self.topic = p2p, pool, topic
        self.genesis = genesis  # a fresh optimizer at the pool's start (a replay from the genesis)
        self.evaluator, self._feed = evaluator, feed  # node/evaluator.py: the node's workers
        # the duty cycle's rest (Node.rest) after each evaluation: a member emulating a slower machine
        # is slow at its own items, and the others see its results late, as from a slower machine.
        # It counts all evaluation CPU since the evaluation began, so the extras of an assessment
        # round, scored meanwhile, are charged there too.
        self._rest = rest
        self.log_service = PoolLogService(p2p.host, pool)
        # every member takes direct results; ``direct`` says whether we send ours that way too
        self._banned = banned  # the island's bans (lies told as migrants): not members, no streams
        self.direct = DirectResults(p2p.host, topic, feed, banned)
        self.send_direct = direct
        self._work_in, self._work_out = trio.open_memory_channel[EvaluateItems](1)
        self._working: tuple[EvaluateItems, trio.CancelScope] | None = None  # the evaluation under way
        self._publishes_in, self._publishes_out = trio.open_memory_channel[Results | Accusation](PUBLISH_QUEUE)
        self.publishes_dropped = 0
        self._round_done = trio.Event()
        self._round_result: RoundComplete | None = None
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> dict[str, object]:
        return self.pool.statistics() | {"topic": self.topic.topic, "rejected": dict(self.topic.rejected),
                                         "transport": "direct" if self.send_direct else "gossip",
                                         "direct": dict(self.direct.stats),
                                         "log_service": dict(self.log_service.stats),
                                         "publishes_dropped": self.publishes_dropped}

    # ------------------------------------------------------------ the tasks

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribes, serves the log, and runs the member's tasks until cancelled."""
        pubsub = self.p2p.pubsub
        pubsub.set_topic_validator(self.topic.topic, self.topic.validator, is_async_validator=False)
        sub = await pubsub.subscribe(self.topic.topic)
        self.p2p.host.set_stream_handler(POOL_LOG_PROTOCOL, self.log_service.handle)
        self.p2p.host.set_stream_handler(POOL_RESULTS_PROTOCOL, self.direct.handle)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._receive, sub)
            nursery.start_soon(self._work)
            nursery.start_soon(self._publish)
            nursery.start_soon(self._clock)
            task_status.started()

    async def evaluate_generation(self, effect: Evaluate) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The island's generation, done by the pool: the candidates go to the pool (our share,
        help, the others' results), the extras of an assessment round are ours and scored here
        meanwhile. The returns, the extras' fitness and how many items we evaluated; None when a
        replay of the pool's log abandoned the generation."""
        if effect.generation < self.pool.generation:
            # a replay passed it after the runner took it off the channel (``_pool_replay`` drains
            # only an Evaluate still queued; the runner yields once it has taken one): abandoned, as
            # one in flight would be, and the island's next Evaluate is already queued
            return None
        self._round_done, self._round_result = trio.Event(), None
        self._feed(RoundStarted(effect.generation, effect.candidates, effect.seeds))
        extra_fit = await self.evaluator.evaluate(effect.extras, effect.extra_seeds) if len(effect.extras) else np.zeros(0)
        await self._round_done.wait()
        done = self._round_result
        if done is None or done.generation != effect.generation:
            return None
        return done.returns, extra_fit, done.own

    async def _work(self) -> None:
        """The pool's evaluations (own share, help, spot checks), one at a time, fed back."""
        first = True
        async for work in self._work_out:
            t0, cpu0 = trio.current_time(), self.evaluator.cpu_s
            with trio.CancelScope() as scope:  # cancelled by ``abandon``
                self._working = (work, scope)
                # a worker's evaluation runs to its end (trio-parallel waits for it); the rest stops
                returns = await self.evaluator.evaluate(work.candidates, work.seeds)
                if self._rest is not None and not first:  # the first also started the workers
                    await self._rest(cpu_s=self.evaluator.cpu_s - cpu0, wall_s=trio.current_time() - t0)
            self._working = None
            first = False
            if scope.cancelled_caught:
                self._feed(ItemsAbandoned(work.generation, work.indices, work.why))
                continue
            self._feed(ItemsEvaluated(work.generation, work.indices, returns, work.why,
                                      seconds=trio.current_time() - t0))

    async def _publish(self) -> None:
        async for msg in self._publishes_out:
            data = poolwire.encode(self.pool.pid, msg)
            if not self.send_direct:
                await self.p2p.pubsub.publish(self.topic.topic, data)
                continue
            connected = set(self.p2p.connected_peers())
            await self.direct.send([p for p in self.pool.live_members() if p != self.pool.self_id and p in connected], data)

    async def _receive(self, sub: Any) -> None:
        from libp2p.peer.id import ID

        me = str(self.p2p.peer_id)
        while True:
            msg = await sub.get()
            src = str(ID(msg.from_id))
            if src == me:
                continue
            try:
                decoded, _ = self.topic.take(msg)  # decoded by the validator
            except RemoteProtocolError as e:  # cannot happen after validation, but never let a peer kill us
                self.topic.reject(e.reason, src, e.detail)
                continue
            self._feed(received(src, decoded))

    def live_members(self) -> frozenset[str]:
        """The pool's members as far as we can tell: its topic's peers that are not banned, and us."""
        me = str(self.p2p.peer_id)
        return frozenset(p for p in self.p2p.topic_peers(self.topic.topic) if not self._banned(p)) | {me}

    async def _clock(self) -> None:
        members_at = -float("inf")
        while True:
            await trio.sleep(TICK_S)
            now = trio.current_time()
            if now - members_at >= MEMBERS_S:
                members_at = now
                live = self.live_members()
                if live != self.pool.members:
                    self._feed(MembersChanged(live))
            if self.pool.round is not None or self.pool.checks:
                self._feed(Tick())

    async def _fetch_log(self, effect: FetchLog) -> None:
        """The member that told us of the generation we lack, when we hold a connection to it; else
        one we are connected to that is on the pool's topic (a joiner hears of members through the
        mesh before it has their addresses; every member that agrees holds the same log)."""
        connected = set(self.p2p.connected_peers())
        peer = effect.peer
        if peer not in connected:
            near = sorted(connected & set(self.p2p.topic_peers(self.topic.topic)))
            peer = near[0] if near else peer
        got = await self.log_service.fetch(peer, effect.start, effect.head)
        if got is not None:
            start, returns = got
            self._feed(LogReceived(peer, start, returns))

    # ------------------------------------------------------------ effect handlers (never block)

    def want_evaluation(self, effect: EvaluateItems) -> None:
        self._work_in.send_nowait(effect)  # the pool asks for one evaluation at a time

    def abandon(self, effect: AbandonWork) -> None:
        """Stop our own share or help of a generation that is complete (a later one's, or a spot
        check, goes on)."""
        if self._working is not None:
            work, scope = self._working
            if work.why != Work.CHECK and work.generation <= effect.generation:
                scope.cancel()

    def publish(self, effect: PublishResults | Accuse) -> None:
        msg = effect.results if isinstance(effect, PublishResults) else effect.accusation
        try:
            self._publishes_in.send_nowait(msg)
        except trio.WouldBlock:
            self.publishes_dropped += 1
            log.warning("pool_results_dropped", generation=msg.generation, queued=PUBLISH_QUEUE,
                        dropped=self.publishes_dropped)

    def round_complete(self, effect: RoundComplete) -> None:
        self._round_result = effect
        self._round_done.set()

    def abandon_round(self) -> None:
        """The log was replaced under the generation in flight: its waiter returns None."""
        self._round_result = None
        self._round_done.set()

    def fetch_log(self, effect: FetchLog) -> None:
        assert self._nursery is not None, "the pool asked for its log before its tasks ran"
        self._nursery.start_soon(self._fetch_log, effect)
