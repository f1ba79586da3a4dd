"""The pool's protocol handlers (protocols/gaia-pool-v1.md); the policy is core/pool.py.

- ``PoolTopic``: ``/gaia/<experiment-id>/pool/<pool-id>/1``, the gossip topic members tell their
  results on; its validator decodes once (core/poolwire.py on core/wire.py), rate-limits per sender and counts
  rejections by reason. Its topic peers are the pool's members as this node sees them.
- ``PoolLogService``: ``/gaia/pool/log/1.0.0``, a member behind or on the losing side of a fork asks
  one member for the log (the returns of every generation from a point on) and replays it.
- ``platform_class()``: which replicas are bit-identical to ours (same machine type, numpy and
  OpenBLAS kernel): only their results are checked exactly.
"""

from __future__ import annotations

import ctypes
import platform
from collections import Counter
from typing import Any

import numpy as np
import structlog
import trio

from gaia_p2p.core import poolwire
from gaia_p2p.core.pool import Pool, Results
from gaia_p2p.core.schedule import Outcome, TokenBucket
from gaia_p2p.core.wire import Reason
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node.control import request, serve_request
from gaia_p2p.node.gossip import ValidatedTopic

log = structlog.get_logger("gaia.pool")

POOL_LOG_PROTOCOL = "/gaia/pool/log/1.0.0"
#: log requests answered per asking peer: 1 a second, bursts of 3 (a joiner asks once or twice)
SERVE_RATE_PER_S, SERVE_BURST = 1.0, 3.0


class PoolLogOutcome(Outcome):
    """What asking one member for the pool's log came to, counted under this name (``failed_<reason>``:
    the answer broke a gaia-pool-v1 check; ``failed_unreachable``: no answer)."""

    FETCHED = "fetched"
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
    """Results of the pool's members; each message is decoded once, in the validator."""

    def __init__(self, topic: str, experiment_id: str, pid: str, self_id: str,
                 rate_per_s: float = 50.0, burst: float = 100.0) -> None:
        super().__init__(topic, experiment_id, self_id, rate_per_s, burst)
        self.pid = pid

    def decode(self, data: bytes) -> Results:
        return poolwire.decode_results(data, pid=self.pid)


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
