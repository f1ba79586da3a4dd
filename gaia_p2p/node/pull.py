"""``/gaia/telemetry/1.0.0``: ask one peer for its heartbeat now (protocols/gaia-telemetry-v1.md, "Pull").

The telemetry topic is budgeted network-wide (``telemetry_rate``): each island heartbeats once per
network_size / 0.05 s, 800 s with 40 nodes. A node's own view can live with that; a person looking
at ``gaia-node watch`` cannot. So the watcher also pulls: it asks the islands it is connected to for
a heartbeat, the stalest first, at a bounded pace (``--pull-rate`` in all, each island at most every
``--pull-age`` seconds). The answer is the very heartbeat the island would gossip, checked by the
same decoder; the responder is the peer Noise authenticated on the stream, so no signature is needed.
The islands pay one small answer per watcher per ``--pull-age``, nothing per network member.

Framing: unsigned-varint length + msgpack map, one request and one response per stream, each
unpacked once by core/wire.py (kinds ``TELEMETRY_REQUEST``, ``TELEMETRY``).
Request ``{"v": 1, "exp": <experiment id>}``; response: the heartbeat map, or ``{"v": 1, "err": ...}``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import structlog
import trio

from gaia_p2p.core import wire
from gaia_p2p.core.schedule import Outcome, TokenBucket, next_due
from gaia_p2p.core.telemetry import MAX_TELEMETRY_BYTES, Telemetry, telemetry_from_map
from gaia_p2p.core.wire import Kind, Reason
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node.control import request, serve_request

log = structlog.get_logger("gaia.pull")

TELEMETRY_PROTOCOL = "/gaia/telemetry/1.0.0"
VERSION = 1
MAX_REQUEST_BYTES = wire.LIMITS[Kind.TELEMETRY_REQUEST].max_bytes
#: per asking peer: a watcher pulls each island every --pull-age (10 s default); a burst of 3 covers
#: a restart of the watcher
SERVE_RATE_PER_S, SERVE_BURST = 0.5, 3.0
ERRORS = (Reason.BAD_REQUEST, Reason.UNSUPPORTED_VERSION, Reason.WRONG_EXPERIMENT, Reason.RATE_LIMITED)


class PullOutcome(Outcome):
    """What asking one island for its heartbeat came to, counted under this name by the watcher:
    ``refused_<err>``: the island refused (its ``err``); ``failed_<reason>``: the answer broke a
    gaia-telemetry-v1 check (that reason code); ``failed_unreachable``: no answer."""

    PULLED = "pulled"
    REFUSED_BAD_REQUEST = "refused_bad_request"
    REFUSED_UNSUPPORTED_VERSION = "refused_unsupported_version"
    REFUSED_WRONG_EXPERIMENT = "refused_wrong_experiment"
    REFUSED_RATE_LIMITED = "refused_rate_limited"
    FAILED_OVERSIZE = "failed_oversize"
    FAILED_MALFORMED = "failed_malformed"
    FAILED_BAD_VERSION = "failed_bad_version"
    FAILED_BAD_FIELD = "failed_bad_field"
    FAILED_NON_FINITE = "failed_non_finite"
    FAILED_WRONG_EXPERIMENT = "failed_wrong_experiment"
    FAILED_UNREACHABLE = "failed_unreachable"

    @classmethod
    def refused(cls, err: Reason) -> PullOutcome:
        """The island refused with ``err`` (one of ERRORS)."""
        return cls(f"refused_{err}")


#: after these outcomes a peer is not asked again for this long (an older node without the
#: protocol, a node of another experiment); other failures wait --pull-age like a success
BACKOFF_S = {PullOutcome.FAILED_UNREACHABLE: 60.0, PullOutcome.REFUSED_WRONG_EXPERIMENT: 600.0,
             PullOutcome.REFUSED_UNSUPPORTED_VERSION: 600.0}


def encode_request(experiment_id: str) -> bytes:
    return msgpack.packb({"v": VERSION, "exp": experiment_id}, use_bin_type=True)


def decide(req: bytes, *, experiment_id: str) -> Reason | None:
    """Why a request is refused (an ERRORS code), or None to answer it."""
    try:
        obj = wire.decode(Kind.TELEMETRY_REQUEST, req)
        if type(obj.get("v")) is not int:
            return Reason.BAD_REQUEST
        wire.version(obj, VERSION, Reason.UNSUPPORTED_VERSION)
    except RemoteProtocolError as e:
        return Reason(e.reason)
    if obj.get("exp") != experiment_id:
        return Reason.WRONG_EXPERIMENT
    return None


def encode_refusal(err: Reason) -> bytes:
    return msgpack.packb({"v": VERSION, "err": err}, use_bin_type=True)


def decode_response(data: bytes, *, experiment_id: str) -> Telemetry | Reason:
    """A heartbeat (checked like a gossiped one), or the responder's refusal code; unpacked once.
    Raises RemoteProtocolError for anything else."""
    obj = wire.decode(Kind.TELEMETRY, data)  # the bounds of a heartbeat: a refusal is smaller still
    if "err" in obj:
        err = obj["err"]
        if obj.get("v") != VERSION or len(obj) != 2 or type(err) is not str or err not in ERRORS:
            raise RemoteProtocolError(Reason.MALFORMED, f"bad refusal {wire.short(obj)}")
        return Reason(err)
    return telemetry_from_map(obj, experiment_id=experiment_id)


class TelemetryService:
    """Answers pulls with our current heartbeat; counters for status."""

    def __init__(self, experiment_id: str, heartbeat: Callable[[], bytes]) -> None:
        self.experiment_id, self.heartbeat = experiment_id, heartbeat
        self.bucket = TokenBucket(SERVE_RATE_PER_S, SERVE_BURST)
        self.stats: Counter[str] = Counter()  # served, refused_<err>

    async def handle(self, stream: Any) -> None:
        def respond(peer: str, req: bytes) -> tuple[bytes, str | None]:
            err = Reason.RATE_LIMITED if not self.bucket.allow(peer, trio.current_time()) else \
                decide(req, experiment_id=self.experiment_id)
            return (self.heartbeat() if err is None else encode_refusal(err)), err

        await serve_request(stream, max_request=MAX_REQUEST_BYTES, respond=respond, stats=self.stats,
                            event="telemetry_request_rejected", logger=log)


async def pull(host: Any, peer_id: str, experiment_id: str) -> tuple[Telemetry | None, PullOutcome]:
    """Ask ``peer_id`` for its heartbeat: ``(telemetry or None, outcome)``. Never raises."""
    try:
        data = await request(host, peer_id, TELEMETRY_PROTOCOL, encode_request(experiment_id), MAX_TELEMETRY_BYTES)
        got = decode_response(data, experiment_id=experiment_id)
    except RemoteProtocolError as e:
        log.warning("telemetry_pull_rejected", peer_id=peer_id, reason=e.reason, error=e.detail[:200])
        return None, PullOutcome.failed(Reason(e.reason))
    except Exception as e:  # no such protocol (an older node), reset, timeout
        log.debug("telemetry_pull_failed", peer_id=peer_id, error=f"{type(e).__name__}: {e}"[:200])
        return None, PullOutcome.FAILED_UNREACHABLE
    if isinstance(got, Reason):
        return None, PullOutcome.refused(got)
    return got, PullOutcome.PULLED


async def pull_loop(host: Any, experiment_id: str, *, peers: Callable[[], list[str]],
                    last_seen: Callable[[], dict[str, float]], on_pulled: Callable[[str, Telemetry], None],
                    rate: float, max_age: float, stats: Counter[str], rng: np.random.Generator) -> None:
    """Pull the stalest connected island, at most ``rate`` pulls per second in all."""
    not_before: dict[str, float] = {}
    while True:
        await trio.sleep(1.0 / rate)
        now = trio.current_time()
        not_before = {p: t for p, t in not_before.items() if t > now}  # bounded by live backoffs
        peer = next_due(peers(), last_seen(), not_before, now=now, wall_now=time.time(), max_age=max_age,
                        rng=rng)
        if peer is None:
            continue
        t, outcome = await pull(host, peer, experiment_id)
        stats[outcome] += 1
        not_before[peer] = trio.current_time() + BACKOFF_S.get(outcome, max_age)
        if t is not None:
            on_pulled(peer, t)
