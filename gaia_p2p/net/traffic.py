"""What the network costs this process: wire bytes, pubsub message copies, CPU not spent optimizing.

``install()`` wraps py-libp2p's TCP stream (every byte any libp2p protocol sends or receives passes
through ``TrioTCPStream.read/write``: after Noise encryption and muxer framing, i.e. what the TCP
socket carries minus TCP/IP headers). Counters are per process: the daemon runs one node per
process; in-process test swarms see the sum of their nodes.

``count_pubsub_copies(pubsub)`` counts every pubsub message copy a node receives, duplicates
included, before the seen-cache drops them: the "hops" whose CPU cost (~1-2 ms each here, whatever
the size, docs/LIBP2P.md "What it costs") dominates a node's networking CPU. ``count_rpc_out`` counts
the RPCs sent, as the last stage of the outgoing-RPC pipeline (net/host.py).
"""

from __future__ import annotations

import time
from typing import Any

COUNTERS: dict[str, int] = {"bytes_in": 0, "bytes_out": 0, "pubsub_copies_in": 0, "pubsub_rpcs_out": 0,
                            "pubsub_rpc_bytes_out": 0, "pubsub_publish_out": 0, "pubsub_ihave_out": 0,
                            "pubsub_iwant_out": 0, "pubsub_graft_prune_out": 0, "pubsub_idontwant_out": 0,
                            # protobuf bytes sent, by what they carry (the RPC's own framing excluded)
                            "pubsub_publish_bytes_out": 0, "pubsub_ihave_bytes_out": 0,
                            "pubsub_control_bytes_out": 0, "pubsub_subscription_bytes_out": 0,
                            "pubsub_publish_largest_out": 0}  # the largest message sent (protobuf bytes)
BY_PROTOCOL: dict[str, int] = {}  # stream payload bytes in+out by protocol id (before muxer/Noise framing)
_installed = [False]


def install() -> None:
    if _installed[0]:
        return
    from libp2p.io.trio import TrioTCPStream

    read, write = TrioTCPStream.read, TrioTCPStream.write

    async def counted_read(self: Any, n: int | None = None) -> bytes:
        data = await read(self, n)
        COUNTERS["bytes_in"] += len(data)
        return data

    async def counted_write(self: Any, data: bytes) -> None:
        await write(self, data)
        COUNTERS["bytes_out"] += len(data)

    TrioTCPStream.read = counted_read  # type: ignore[method-assign]
    TrioTCPStream.write = counted_write  # type: ignore[method-assign]

    from libp2p.network.stream.net_stream import NetStream

    s_read, s_write = NetStream.read, NetStream.write

    async def stream_read(self: Any, n: int | None = None) -> bytes:
        data = await s_read(self, n)
        key = str(self.protocol_id or "negotiating")
        BY_PROTOCOL[key] = BY_PROTOCOL.get(key, 0) + len(data)
        return data

    async def stream_write(self: Any, data: bytes) -> None:
        await s_write(self, data)
        key = str(self.protocol_id or "negotiating")
        BY_PROTOCOL[key] = BY_PROTOCOL.get(key, 0) + len(data)

    NetStream.read = stream_read  # type: ignore[method-assign]
    NetStream.write = stream_write  # type: ignore[method-assign]
    _installed[0] = True


def count_pubsub_copies(pubsub: Any) -> None:
    """Message copies received, duplicates included (every copy goes through ``push_msg``)."""
    push = pubsub.push_msg

    async def push_msg(msg_forwarder: Any, msg: Any) -> None:
        COUNTERS["pubsub_copies_in"] += 1
        await push(msg_forwarder, msg)

    pubsub.push_msg = push_msg


def count_rpc_out(rpc_msg: Any) -> None:
    """A stage of the outgoing-RPC pipeline (``libp2p_fixes.install_outgoing_rpc_pipeline``): the
    RPCs sent and their protobuf bytes, by what they carry. It only reads the RPC's fields, which
    raises nothing on an ``rpc_pb2.RPC``."""
    COUNTERS["pubsub_rpcs_out"] += 1
    COUNTERS["pubsub_rpc_bytes_out"] += rpc_msg.ByteSize()
    COUNTERS["pubsub_publish_out"] += len(rpc_msg.publish)
    sizes = [m.ByteSize() for m in rpc_msg.publish]
    COUNTERS["pubsub_publish_bytes_out"] += sum(sizes)
    COUNTERS["pubsub_publish_largest_out"] = max(COUNTERS["pubsub_publish_largest_out"], *sizes, 0)
    COUNTERS["pubsub_subscription_bytes_out"] += sum(m.ByteSize() for m in rpc_msg.subscriptions)
    if rpc_msg.HasField("control"):
        c = rpc_msg.control
        COUNTERS["pubsub_ihave_out"] += len(c.ihave)
        COUNTERS["pubsub_iwant_out"] += len(c.iwant)
        COUNTERS["pubsub_graft_prune_out"] += len(c.graft) + len(c.prune)
        COUNTERS["pubsub_idontwant_out"] += len(c.idontwant)
        ihave = sum(m.ByteSize() for m in c.ihave)
        COUNTERS["pubsub_ihave_bytes_out"] += ihave
        COUNTERS["pubsub_control_bytes_out"] += c.ByteSize() - ihave


class CpuClock:
    """Process CPU seconds, and the part of it spent in the island (optimizer ask/tell, bookkeeping)."""

    def __init__(self) -> None:
        self.island_s = 0.0

    def __enter__(self) -> CpuClock:
        self._t0 = time.thread_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.island_s += time.thread_time() - self._t0

    def snapshot(self, eval_thread_s: float = 0.0) -> dict[str, float]:
        """``network_s``: the process's CPU not spent in the island or in evaluation threads:
        libp2p, gossip, control socket, logging, and the dispatch of work to worker processes."""
        process = time.process_time()
        return {"process_s": round(process, 3), "island_s": round(self.island_s, 3),
                "eval_thread_s": round(eval_thread_s, 3),
                "network_s": round(max(0.0, process - self.island_s - eval_thread_s), 3)}


def snapshot() -> dict[str, Any]:
    return dict(COUNTERS) | {"by_protocol": dict(list(BY_PROTOCOL.items())[:32])}
