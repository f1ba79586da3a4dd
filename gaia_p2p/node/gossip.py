"""The migrants topic: a gossipsub validator that decodes, checks and rate-limits every message.

Rejections are counted by reason and logged at WARNING with the originator's peer id; a rejected
message is neither delivered nor forwarded, and the validator's rejection feeds gossipsub's
invalid-message penalty for the forwarding peer (node/scoring.py), except for ``IGNORED_REASONS``,
gossipsub IGNOREs that are not the forwarder's fault.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.core import codec
from gaia_p2p.core.telemetry import Telemetry, decode_telemetry
from gaia_p2p.core.types import Elite
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.node import libp2p_fixes

log = structlog.get_logger("gaia.gossip")

#: Rejected without a score penalty: a rate limit (an honest relay can pass on a burst that our own
#: bucket for its origin has just refused) and our own bug.
IGNORED_REASONS = frozenset({"rate_limited", "internal_error"})


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate, self.burst = rate_per_s, burst
        self.tokens: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self.tokens.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.tokens[key] = (tokens, now)
            return False
        self.tokens[key] = (tokens - 1.0, now)
        if len(self.tokens) > 4096:  # bound memory under a sybil flood
            self.tokens.pop(next(iter(self.tokens)))
        return True


class ValidatedTopic:
    """A gossipsub topic whose every message is decoded, checked and rate-limited per sender."""

    def __init__(self, topic: str, experiment_id: str, self_id: str, rate_per_s: float, burst: float) -> None:
        self.topic = topic
        self.experiment_id = experiment_id
        self.self_id = self_id
        self.rejected: Counter[str] = Counter()
        self.valid = 0
        self.bucket = TokenBucket(rate_per_s, burst)

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError

    def reject(self, reason: str, origin: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        if reason in IGNORED_REASONS:
            libp2p_fixes.ignore_message()
        log.warning(logs.MESSAGE_REJECTED, topic=self.topic, reason=reason, peer_id=origin, error=detail[:200],
                    count=self.rejected[reason])

    def validator(self, msg_forwarder: Any, msg: Any) -> bool:
        """Sync gossipsub validator: must never raise."""
        try:
            origin = _origin(msg)
            if origin != self.self_id and not self.bucket.allow(origin, trio.current_time()):
                self.reject("rate_limited", origin)
                return False
            self.decode(msg.data)
            self.valid += 1
            return True
        except RemoteProtocolError as e:
            self.reject(e.reason, _origin(msg), e.detail)
            return False
        except Exception as e:  # a bug of ours must not let a peer take the node down
            self.reject("internal_error", _origin(msg), f"{type(e).__name__}: {e}")
            return False


class MigrantTopic(ValidatedTopic):
    """``/gaia/<experiment-id>/migrants/1`` (protocols/gaia-migration-v1.md)."""

    def __init__(self, topic: str, experiment_id: str, dim: int, self_id: str,
                 rate_per_s: float = 2.0, burst: float = 10.0) -> None:
        super().__init__(topic, experiment_id, self_id, rate_per_s, burst)
        self.dim = dim

    def decode(self, data: bytes) -> Elite:
        return codec.decode_elite(data, experiment_id=self.experiment_id, dim=self.dim)


class TelemetryTopic(ValidatedTopic):
    """``/gaia/<experiment-id>/telemetry/1`` (protocols/gaia-telemetry-v1.md)."""

    def __init__(self, topic: str, experiment_id: str, self_id: str,
                 rate_per_s: float = 1.0, burst: float = 5.0) -> None:
        super().__init__(topic, experiment_id, self_id, rate_per_s, burst)

    def decode(self, data: bytes) -> Telemetry:
        return decode_telemetry(data, experiment_id=self.experiment_id)


def _origin(msg: Any) -> str:
    try:
        from libp2p.peer.id import ID

        return str(ID(msg.from_id))
    except Exception:
        return "?"
