"""``/gaia/elite/1.0.0``: ask one peer for its current best elite (protocols/gaia-elite-v1.md).

Gossip is the broadcast path, and the network-wide budget makes each island speak rarely (once per
network_size / network_rate seconds: 80 s with 40 nodes, half an hour with 1000). This stream
protocol is the point-to-point path, used where a broadcast is the wrong tool:

- **joining**: a new island asks up to ``JOIN_PEERS`` peers for their best right away, instead of
  waiting for their next publish;
- **ring and random topologies**: an island takes migrants from one or k named sources only, so it
  asks them directly once per migration interval (cost per node: the topology's degree, not N).

A fetched elite enters the island exactly like a gossiped one from the same peer (the responder,
authenticated by Noise): decoded with the same checks, filtered by the topology, re-evaluated on
our seeds, accepted only if better, its claim checked on deterministic problems. The request says
what the asker already has (``above``), so a responder that has nothing better answers with a few
bytes (announce-and-fetch: the parameters travel only to a peer that wants them).

Framing: unsigned-varint length + msgpack map, one request and one response per stream; both are
unpacked by core/wire.py (kinds ``ELITE_REQUEST``, ``ELITE_RESPONSE``), the elite inside by core/codec.py.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import structlog
import trio

from gaia_p2p.core import codec, wire
from gaia_p2p.core.schedule import FetchOutcome, TokenBucket
from gaia_p2p.core.types import Elite
from gaia_p2p.core.wire import Kind, Reason
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node.control import request, serve_request

log = structlog.get_logger("gaia.fetch")

ELITE_PROTOCOL = "/gaia/elite/1.0.0"
VERSION = 1
MAX_REQUEST_BYTES = wire.LIMITS[Kind.ELITE_REQUEST].max_bytes
MAX_RESPONSE_BYTES = wire.LIMITS[Kind.ELITE_RESPONSE].max_bytes
#: Peers a joining island asks (once each) for their best.
JOIN_PEERS = 3
#: Ring and random topologies ask their source(s) at most this often (seconds).
PULL_MIN_S = 5.0
#: Requests answered per asking peer: 1 every 2 s, bursts of 3.
SERVE_RATE_PER_S, SERVE_BURST = 0.5, 3.0
#: Elite bytes answered per second to all askers together, and the burst: a large elite's announcement
#: makes every peer it beats ask at once, and 1,000 identities asking for a 1 MiB elite must not make
#: us upload a gigabyte. Beyond it: ``rate_limited`` (the asker tries again later).
SERVE_BYTES_PER_S, SERVE_BYTES_BURST = 4 << 20, 8 << 20
#: Response error codes (``err``).
ERRORS = (Reason.BAD_REQUEST, Reason.UNSUPPORTED_VERSION, Reason.WRONG_EXPERIMENT, Reason.NO_ELITE,
          Reason.NOT_BETTER, Reason.RATE_LIMITED)


# ------------------------------------------------------------------ pure: messages


def encode_request(experiment_id: str, above: float | None) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "exp": experiment_id,
                            "above": None if above is None or not math.isfinite(above) else float(above)}
    return msgpack.packb(body, use_bin_type=True)


def decode_request(data: bytes) -> tuple[str, float | None]:
    """``(experiment_id, above)``; raises RemoteProtocolError("bad_request" | "unsupported_version")."""
    obj = wire.decode(Kind.ELITE_REQUEST, data)
    wire.version(obj, VERSION, Reason.UNSUPPORTED_VERSION)
    exp = wire.experiment(obj, reason=Reason.BAD_REQUEST)
    above = obj.get("above")
    if above is not None:
        above = wire.finite(wire.number(above, "above", Reason.BAD_REQUEST), "above", Reason.BAD_REQUEST)
    return exp, above


def encode_response(*, elite: bytes | None = None, err: Reason | None = None) -> bytes:
    if (elite is None) == (err is None) or (err is not None and err not in ERRORS):
        raise ValueError("a response carries exactly one of elite or a known err")
    body: dict[str, Any] = {"v": VERSION}
    if elite is not None:
        body["elite"] = elite
    else:
        body["err"] = err
    return msgpack.packb(body, use_bin_type=True)


def decode_response(data: bytes, *, experiment_id: str, dim: int) -> Elite | Reason:
    """The elite (checked like a gossiped one), or the responder's error code.

    Raises RemoteProtocolError with a gaia-migration-v1 reason code (``malformed``,
    ``bad_version``, ...) when the response or the elite inside it is bad."""
    obj = wire.decode(Kind.ELITE_RESPONSE, data)
    wire.version(obj, VERSION)
    if "elite" in obj:
        return codec.decode_elite(wire.field(obj, "elite", bytes), experiment_id=experiment_id, dim=dim,
                                  fetched=True)
    err = obj.get("err")
    if type(err) is not str or err not in ERRORS:
        raise RemoteProtocolError(Reason.BAD_FIELD, f"err = {wire.short(err)}: a response needs elite or a known err")
    return Reason(err)


def decide(req: bytes, *, experiment_id: str,
           best: Callable[[], tuple[bytes, float] | None]) -> tuple[Reason | None, bytes | None]:
    """The server's whole decision, pure: ``(err, None)`` or ``(None, our encoded elite)``;
    ``best()`` gives our encoded resident and its claim."""
    try:
        exp, above = decode_request(req)
    except RemoteProtocolError as e:
        return Reason(e.reason), None
    if exp != experiment_id:
        return Reason.WRONG_EXPERIMENT, None
    mine = best()
    if mine is None:
        return Reason.NO_ELITE, None
    data, claim = mine
    if above is not None and not claim > above:
        return Reason.NOT_BETTER, None
    return None, data


def answer(req: bytes, *, experiment_id: str, best: Callable[[], tuple[bytes, float] | None]) -> bytes:
    """``decide``, encoded as the response."""
    err, elite = decide(req, experiment_id=experiment_id, best=best)
    return encode_response(elite=elite, err=err)


# ------------------------------------------------------------------ shell: server and client


class EliteService:
    """Serves our best and fetches peers' best; counters for status."""

    def __init__(self, host: Any, experiment_id: str, dim: int,
                 best: Callable[[], tuple[bytes, float] | None]) -> None:
        self.host, self.experiment_id, self.dim, self.best = host, experiment_id, dim, best
        self.bucket = TokenBucket(SERVE_RATE_PER_S, SERVE_BURST)
        self.upload = TokenBucket(SERVE_BYTES_PER_S, SERVE_BYTES_BURST, max_keys=1)  # one key: everyone
        self.stats: Counter[str] = Counter()  # served, refused_<err>, fetched, answered_<err>, failed_<reason>

    def respond(self, peer: str, req: bytes, now: float) -> tuple[bytes, str | None]:
        """Our answer to ``peer``'s request and its refusal code (None: an elite): the per-peer rate,
        then ``decide``, then the upload budget shared by all askers."""
        if not self.bucket.allow(peer, now):
            err, elite = Reason.RATE_LIMITED, None
        else:
            err, elite = decide(req, experiment_id=self.experiment_id, best=self.best)
            if elite is not None and not self.upload.allow("", now, cost=len(elite)):
                err, elite = Reason.RATE_LIMITED, None
        return encode_response(elite=elite, err=err), err

    async def handle(self, stream: Any) -> None:
        await serve_request(stream, max_request=MAX_REQUEST_BYTES,
                            respond=lambda peer, req: self.respond(peer, req, trio.current_time()),
                            stats=self.stats, event="elite_request_rejected", logger=log)

    async def fetch(self, peer_id: str, above: float | None) -> tuple[Elite | None, FetchOutcome]:
        """Ask ``peer_id`` for its best above ``above``: ``(elite or None, outcome)``, the outcome being
        the counter it was counted under. Never raises: failures are counted and logged."""
        try:
            data = await request(self.host, peer_id, ELITE_PROTOCOL, encode_request(self.experiment_id, above),
                                 MAX_RESPONSE_BYTES)
            got = decode_response(data, experiment_id=self.experiment_id, dim=self.dim)
        except RemoteProtocolError as e:
            log.warning("elite_fetch_rejected", peer_id=peer_id, reason=e.reason, error=e.detail[:200])
            return None, self._count(FetchOutcome.failed(Reason(e.reason)))
        except Exception as e:  # no such protocol (older node), reset, timeout
            log.debug("elite_fetch_failed", peer_id=peer_id, error=f"{type(e).__name__}: {e}"[:200])
            return None, self._count(FetchOutcome.FAILED_UNREACHABLE)
        if isinstance(got, Reason):
            return None, self._count(FetchOutcome.answered(got))
        return got, self._count(FetchOutcome.FETCHED)

    def _count(self, outcome: FetchOutcome) -> FetchOutcome:
        self.stats[outcome] += 1
        return outcome
