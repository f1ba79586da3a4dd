"""A hostile peer: a real py-libp2p host with its own GossipSub + Pubsub, and the bytes it sends.

Built like a gaia node's pubsub (StrictSign, ``libp2p_fixes.gossipsub_options`` and
``MESHSUB_PROTOCOLS``, Noise only) but with no topic validator: it publishes whatever it is given,
signed with its own key. Besides the normal ``publish`` path it can write signed messages straight
onto a pubsub stream of its own (``open_stream`` + ``send_frames``), as a hostile implementation
would: a flood that py-libp2p's 32-RPC outbound queue does not thin out, a replay of a message with
the same seqno, traffic after the victim blacklisted it.

No pytest in here: ``scripts/hostile_peer.py`` imports this module too.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgpack
import multiaddr
import numpy as np
import trio

from gaia_p2p.core import codec
from gaia_p2p.core.types import Elite
from gaia_p2p.net import libp2p_fixes
from gaia_p2p.problems.functions import FUNCTIONS

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
#: Parameters of every "valid-looking" elite and lie: 2.5 in every coordinate, a poor rastrigin point
#: (each coordinate sits on a maximum of the cosine term: 26.25 per dimension).
LIE_VALUE = 2.5
#: What a liar claims for them (rastrigin is <= 0 after negation; -262.5 is the truth at dim 10).
LIE_CLAIM = -0.001
#: A subscription the victim's pubsub records from any peer, even a blacklisted one: seeing it there
#: proves that every frame sent before it on the same stream was read (a sentinel for "nothing came").
SENTINEL_TOPIC = "/hostile/sentinel/1"


@dataclass
class Attacker:
    host: Any
    pubsub: Any
    gossipsub: Any
    topic: str = ""
    victim: Any = None  # libp2p ID, set by join()
    streams: list[Any] = field(default_factory=list)

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id())

    async def join(self, victim_addr: str, topic: str, timeout_s: float = 20.0) -> str:
        """Subscribe to ``topic``, connect to the victim, wait until the victim is in our mesh (our
        ``publish`` then reaches it). Returns the victim's peer id."""
        from libp2p.peer.peerinfo import info_from_p2p_addr

        info = info_from_p2p_addr(multiaddr.Multiaddr(victim_addr))
        self.topic, self.victim = topic, info.peer_id
        await self.pubsub.subscribe(topic)  # its channel fills with the victim's elites; py-libp2p drops the excess
        with trio.fail_after(timeout_s):
            await self.host.connect(info)
        await self.pubsub.wait_for_mesh(info.peer_id, topic, timeout=timeout_s)
        return str(info.peer_id)

    def victim_in_our_topic_view(self) -> bool:
        return self.victim in self.pubsub.peer_topics.get(self.topic, ())

    def sign(self, data: bytes, *, seqno: bytes | None = None) -> Any:
        """A StrictSign message from us on our topic, built and signed exactly as Pubsub.publish does."""
        from libp2p.pubsub.pb import rpc_pb2
        from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

        msg = rpc_pb2.Message(data=data, topicIDs=[self.topic], from_id=self.host.get_id().to_bytes(),
                              seqno=seqno if seqno is not None else self.pubsub._next_seqno())
        msg.signature = self.host.get_private_key().sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
        msg.key = self.host.get_public_key().serialize()
        return msg

    async def publish(self, data: bytes) -> None:
        """The normal path: our Pubsub signs it and our GossipSub routes it to its mesh peers."""
        await self.pubsub.publish(self.topic, data)

    async def publish_msg(self, msg: Any) -> None:
        """The normal path for a message signed with ``sign`` (so that we know its seqno)."""
        await self.pubsub.push_msg(self.host.get_id(), msg)

    async def open_stream(self) -> Any:
        """A pubsub stream of our own to the victim, outside our Pubsub's bookkeeping and queues."""
        from libp2p.custom_types import TProtocol

        stream = await self.host.new_stream(self.victim, [TProtocol(p) for p in libp2p_fixes.MESHSUB_PROTOCOLS])
        self.streams.append(stream)
        return stream

    async def send_frames(self, stream: Any, msgs: Iterable[Any], *, subscribe: Iterable[str] = ()) -> int:
        """Write each message as its own RPC frame, back to back (as fast as the stream takes them),
        then one frame subscribing to ``subscribe``. Returns the messages written."""
        from libp2p.pubsub.pb import rpc_pb2
        from libp2p.utils.varint import encode_varint_prefixed

        n = 0
        for msg in msgs:
            await stream.write(encode_varint_prefixed(rpc_pb2.RPC(publish=[msg]).SerializeToString()))
            n += 1
        topics = list(subscribe)
        if topics:
            sub = rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t) for t in topics])
            await stream.write(encode_varint_prefixed(sub.SerializeToString()))
        return n

    def queue_subscription(self, topic: str) -> None:
        """A SUBSCRIBE for ``topic`` queued behind whatever our Pubsub already queued for the victim
        (same FIFO, same stream): once the victim records it, it has read everything before it."""
        from libp2p.pubsub.pb import rpc_pb2

        self.gossipsub.send_rpc(self.victim, rpc_pb2.RPC(
            subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic)]))


@asynccontextmanager
async def open_attacker(*, heartbeat_s: float = 0.5) -> AsyncIterator[Attacker]:
    """A fresh identity (so a fresh per-sender rate limit at the victim), listening on 127.0.0.1."""
    from libp2p import create_yamux_muxer_option, new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.pubsub.gossipsub import GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service

    kp = create_new_key_pair()
    host = new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(), sec_opt=libp2p_fixes.noise_only_security(kp))
    gossipsub = GossipSub(protocols=list(libp2p_fixes.MESHSUB_PROTOCOLS), **libp2p_fixes.gossipsub_options(
        heartbeat_s=heartbeat_s, degree=6, degree_low=4, degree_high=12, eclipse_protection=False))
    libp2p_fixes.bound_equivocation_cache(gossipsub)
    pubsub = Pubsub(host, gossipsub, strict_signing=True)
    # The same guard a gaia node installs (our own stream errors are of no interest): without it, a
    # frame from the victim that arrives while our Pubsub service is stopping raises "Nursery is
    # closed to new arrivals" out of the host (a CI failure of test_replayed_message_is_delivered_once
    # at teardown, after its assertions had passed).
    libp2p_fixes.guard_pubsub_stream_handlers(host, pubsub, lambda peer, why: None)
    libp2p_fixes.install_outgoing_rpc_pipeline(pubsub, stages=())  # B only: whole RPCs
    listen = [multiaddr.Multiaddr(LOOPBACK)]
    async with host.run(listen_addrs=listen):
        async with background_trio_service(pubsub), background_trio_service(gossipsub):
            await pubsub.wait_until_ready()
            attacker = Attacker(host=host, pubsub=pubsub, gossipsub=gossipsub)
            try:
                yield attacker
            finally:
                for s in attacker.streams:  # close, not reset: a reset makes the victim drop our pubsub peer
                    with trio.move_on_after(1):
                        try:
                            await s.close()
                        except Exception:
                            pass


# --------------------------------------------------------------------------------------------------
# payloads


def true_fitness(problem: str, params: np.ndarray) -> float:
    """What the victim will measure for ``params`` (float32 on the wire, scored in float64)."""
    x = np.asarray(params, dtype=np.float32).astype(np.float64)[None, :]
    return float(FUNCTIONS[problem](x)[0])


def lie_params(dim: int) -> np.ndarray:
    return np.full(dim, LIE_VALUE, dtype=np.float32)


def elite_bytes(exp_id: str, params: np.ndarray, fitness: float, generation: int = 1) -> bytes:
    """A well-formed elite (the canonical encoding) claiming ``fitness`` for ``params``."""
    return codec.encode_elite(Elite(experiment_id=exp_id, generation=generation, fitness=float(fitness), seeds=(),
                                    params=np.asarray(params, dtype=np.float32), algorithm="cma-es",
                                    settings={"sigma": 0.5}))


def honest_elite(exp_id: str, problem: str, dim: int, generation: int = 1) -> bytes:
    """Valid, true claim, poor fitness: passes every check and is rejected by the island as not_better."""
    p = lie_params(dim)
    return elite_bytes(exp_id, p, true_fitness(problem, p), generation)


def lie_elite(exp_id: str, dim: int, generation: int = 1) -> bytes:
    """Valid format, false claim: -0.001 for a point whose real fitness is -26.25 * dim."""
    return elite_bytes(exp_id, lie_params(dim), LIE_CLAIM, generation)


def _elite_map(exp_id: str, dim: int, **override: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"v": 1, "exp": exp_id, "gen": 1, "fit": -1000.0, "seeds": [], "dim": dim,
                         "params": lie_params(dim).tobytes(), "algo": "cma-es", "cfg": {}}
    m.update(override)
    return m


def _pack(m: dict[str, Any]) -> bytes:
    return msgpack.packb(m, use_bin_type=True, use_single_float=False)


def malformed_payloads(exp_id: str, dim: int) -> list[tuple[str, bytes, str]]:
    """``(attack, data, reason code the victim must count)`` for every message-level attack."""
    good = _pack(_elite_map(exp_id, dim))
    # [[[ ... [nil] ... ]]] 5000 levels deep as the value of an unknown key of an otherwise valid
    # elite (unknown keys are ignored, but the whole message must be well-formed): 0x8a = map of 10.
    deep = bytes([0x8A]) + good[1:] + msgpack.packb("x") + b"\x91" * 5000 + b"\xc0"
    nan_params = lie_params(dim).copy()
    nan_params[3] = np.nan
    other_exp = "0123456789abcdef" * 2
    return [
        ("random bytes (512 B)", random.Random(20261125).randbytes(512), codec.MALFORMED),
        ("truncated elite", good[: len(good) // 2], codec.MALFORMED),
        ("oversize (300 KiB pad, < 1 MiB RPC)", _pack(_elite_map(exp_id, dim, pad=b"\0" * (300 * 1024))),
         codec.OVERSIZE),
        ("msgpack nested 5000 deep", deep, codec.MALFORMED),
        ("wrong version (v=2)", _pack(_elite_map(exp_id, dim, v=2)), codec.BAD_VERSION),
        ("bad field (gen=-1)", _pack(_elite_map(exp_id, dim, gen=-1)), codec.BAD_FIELD),
        ("wrong experiment", _pack(_elite_map(exp_id, dim, exp=other_exp)), codec.WRONG_EXPERIMENT),
        (f"wrong dimension ({dim + 1})",
         _pack(_elite_map(exp_id, dim + 1, params=lie_params(dim + 1).tobytes())), codec.WRONG_DIMENSION),
        ("NaN in params", _pack(_elite_map(exp_id, dim, params=nan_params.tobytes())), codec.NON_FINITE),
        ("inf fitness", _pack(_elite_map(exp_id, dim, fit=float("inf"))), codec.NON_FINITE),
    ]
