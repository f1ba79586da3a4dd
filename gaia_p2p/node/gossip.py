"""The migrants topic (and the large elites' announcements, the heartbeats): a gossipsub validator
that decodes, checks and rate-limits every message.

Rejections are counted by reason and logged at WARNING with the originator's peer id; a rejected
message is neither delivered nor forwarded, and the validator's rejection feeds gossipsub's
invalid-message penalty for the forwarding peer (net/scoring.py), except for ``IGNORED_REASONS``,
gossipsub IGNOREs that are not the forwarder's fault.

On deterministic problems cheap to evaluate (``claim_checker``) the validator also re-evaluates the
elite and rejects a claim that does not reproduce (``claim_mismatch``), so that a lie is not
forwarded and its forwarder pays; elsewhere the island judges the claim after delivery and the
shell charges the forwarder (``penalize``) when it says so. Each message is decoded once: the
receiver takes the validator's result (``take``).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.core import codec
from gaia_p2p.core.experiment import SPIRALS_N_POINTS, TEST_FUNCTIONS, ProblemConfig
from gaia_p2p.core.island import claim_holds
from gaia_p2p.core.schedule import TokenBucket
from gaia_p2p.core.telemetry import Telemetry, decode_telemetry
from gaia_p2p.core.types import Announcement, Elite
from gaia_p2p.core.wire import Reason
from gaia_p2p.errors import RemoteProtocolError
from gaia_p2p.net import libp2p_fixes

log = structlog.get_logger("gaia.gossip")

#: Rejected without a score penalty: a rate limit (an honest relay can pass on a burst that our own
#: bucket for its origin has just refused) and our own bug.
IGNORED_REASONS = frozenset({Reason.RATE_LIMITED, Reason.INTERNAL_ERROR})
#: Decoded messages kept for the receiver, at most (the oldest go; the receiver then decodes again).
MAX_DECODED = 256
#: spirals: multiply-adds of one elite's evaluation (points x parameters) checked inside the validator
#: at most (~2 ms of numpy); test functions cost O(dim) and are always checked there.
INLINE_CHECK_MAX_MACS = 2**21


class ValidatedTopic:
    """A gossipsub topic whose every message is decoded, checked and rate-limited per sender."""

    def __init__(self, topic: str, experiment_id: str, self_id: str, rate_per_s: float, burst: float) -> None:
        self.topic = topic
        self.experiment_id = experiment_id
        self.self_id = self_id
        self.rejected: Counter[str] = Counter()
        self.bucket = TokenBucket(rate_per_s, burst)
        self.decoded: OrderedDict[bytes, tuple[Any, str]] = OrderedDict()  # message key -> (value, forwarder)

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError

    def check(self, origin: str, value: Any) -> None:
        """Further checks of a decoded message from a peer; raises ``RemoteProtocolError``."""

    def take(self, msg: Any) -> tuple[Any, str]:
        """The validator's decoding of a delivered message and the peer that forwarded it ("" when the
        entry is gone: decoded again). Raises ``RemoteProtocolError`` like ``decode``."""
        hit = self.decoded.pop(_key(msg), None)
        return hit if hit is not None else (self.decode(msg.data), "")

    def reject(self, reason: str, origin: str, detail: str = "", *, in_validator: bool = True) -> None:
        """Counted and logged; inside the gossipsub validator, some reasons are IGNOREs rather than
        invalid messages (``in_validator=False``: the message did not come through gossipsub)."""
        self.rejected[reason] += 1
        if reason in IGNORED_REASONS and in_validator:
            libp2p_fixes.ignore_message()
        log.warning(logs.MESSAGE_REJECTED, topic=self.topic, reason=reason, peer_id=origin, error=detail[:200],
                    count=self.rejected[reason])

    def validator(self, msg_forwarder: Any, msg: Any) -> bool:
        """Sync gossipsub validator: must never raise."""
        try:
            origin = _origin(msg)
            if origin != self.self_id and not self.bucket.allow(origin, trio.current_time()):
                self.reject(Reason.RATE_LIMITED, origin)
                return False
            value = self.decode(msg.data)
            if origin != self.self_id:  # our own publishes are not delivered to us: nothing to keep
                self.check(origin, value)
                self.decoded[_key(msg)] = (value, str(msg_forwarder))
                while len(self.decoded) > MAX_DECODED:
                    self.decoded.popitem(last=False)
            return True
        except RemoteProtocolError as e:
            self.reject(e.reason, _origin(msg), e.detail)
            return False
        except Exception as e:  # a bug of ours must not let a peer take the node down
            self.reject(Reason.INTERNAL_ERROR, _origin(msg), f"{type(e).__name__}: {e}")
            return False


class MigrantTopic(ValidatedTopic):
    """``/gaia/<experiment-id>/migrants/1`` (protocols/gaia-migration-v1.md)."""

    def __init__(self, topic: str, experiment_id: str, dim: int, self_id: str,
                 rate_per_s: float = 2.0, burst: float = 10.0, *,
                 measure: Callable[[Elite], float] | None = None,
                 on_lie: Callable[[str], None] | None = None) -> None:
        super().__init__(topic, experiment_id, self_id, rate_per_s, burst)
        self.dim = dim
        self.measure = measure  # claim_checker(problem): re-evaluates an elite here, before forwarding
        self.on_lie = on_lie  # told the author of each claim the validator refuted

    def decode(self, data: bytes) -> Elite:
        return codec.decode_elite(data, experiment_id=self.experiment_id, dim=self.dim)

    def check(self, origin: str, value: Any) -> None:
        if self.measure is None:
            return
        measured = self.measure(value)
        if not claim_holds(value.fitness, measured):
            if self.on_lie is not None:
                self.on_lie(origin)
            raise RemoteProtocolError(Reason.CLAIM_MISMATCH, f"claimed {value.fitness!r}, measured {measured!r}")


def claim_checker(problem: ProblemConfig) -> Callable[[Elite], float] | None:
    """The fitness of one elite, computed inside the validator, for deterministic problems where that
    is cheap (microseconds for test functions); None elsewhere (LunarLander: episodes, in workers)."""
    if not problem.deterministic or problem.is_plugin:  # a user's code: its cost is unknown, keep it in workers
        return None
    if problem.name not in TEST_FUNCTIONS and problem.param_dim * SPIRALS_N_POINTS > INLINE_CHECK_MAX_MACS:
        return None
    return partial(_measure, problem)


def _measure(problem: ProblemConfig, elite: Elite) -> float:
    from gaia_p2p.problems.evaluate import evaluate_batch

    # the params as the island scores them: float32 off the wire, evaluated in float64
    return float(evaluate_batch(problem, elite.params.astype(np.float64)[None, :], ())[0])


def penalize(gossipsub: Any, peer: str, topic: str) -> bool:
    """Charge ``peer`` one invalid message on ``topic`` (gossipsub's P4, net/scoring.py), as if the
    validator had rejected what it forwarded: for a lie found only after delivery. False when the
    peer id does not parse or the router keeps no scores."""
    from libp2p.peer.id import ID

    scorer = getattr(gossipsub, "scorer", None)
    if scorer is None:
        return False
    try:
        pid = ID.from_base58(peer)
    except ValueError:
        return False
    scorer.on_invalid_message(pid, topic)
    return True


class AnnounceTopic(ValidatedTopic):
    """``/gaia/<experiment-id>/announce/1``: large elites' announcements (gaia-migration-v1, "Large
    elites"); what a receiver fetches is node/runtime.py's ``AnnouncedFetches``."""

    def __init__(self, topic: str, experiment_id: str, dim: int, self_id: str,
                 rate_per_s: float = 2.0, burst: float = 10.0) -> None:
        super().__init__(topic, experiment_id, self_id, rate_per_s, burst)
        self.dim = dim

    def decode(self, data: bytes) -> Announcement:
        return codec.decode_announcement(data, experiment_id=self.experiment_id, dim=self.dim)


class TelemetryTopic(ValidatedTopic):
    """``/gaia/<experiment-id>/telemetry/1`` (protocols/gaia-telemetry-v1.md)."""

    def __init__(self, topic: str, experiment_id: str, self_id: str,
                 rate_per_s: float = 1.0, burst: float = 5.0) -> None:
        super().__init__(topic, experiment_id, self_id, rate_per_s, burst)

    def decode(self, data: bytes) -> Telemetry:
        return decode_telemetry(data, experiment_id=self.experiment_id)


def _key(msg: Any) -> bytes:
    """The message's author and sequence number (gossipsub's default message id)."""
    return bytes(msg.from_id) + bytes(msg.seqno)


def _origin(msg: Any) -> str:
    try:
        from libp2p.peer.id import ID

        return str(ID(msg.from_id))
    except Exception:
        return "?"
