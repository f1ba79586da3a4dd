"""AutoNAT v1 (/libp2p/autonat/1.0.0): learn whether peers can dial us, and help them learn it.

py-libp2p 0.8.1 ships ``libp2p.host.autonat.AutoNATService``, but its dial-back cannot tell a
reachable node from an unreachable one: it "dials" with ``host.connect``, which returns at once
when a connection to the peer exists, and the requester is always connected (it just opened the
request stream over it). Every answer is OK, whatever the requester advertised
(``tests/integration/test_reachability.py::test_upstream_autonat_says_ok_to_a_node_nobody_can_dial``). It also
has no rate limit, dials every address of a request up to 64 KiB, trusts the peer id written in the
request rather than the one the connection authenticated, keeps the addresses it dialled in the
peerstore, and counts a peer that does not speak AutoNAT as a "private" verdict.

So this module speaks the same wire format (upstream's protobuf ``Message``) with its own server
and client:

- **server**: a dial-back is a fresh TCP connection plus a Noise handshake that proves the
  requester's peer id (the one its connection authenticated, not the one in the request), then
  closed: it neither reuses nor registers a connection. Only addresses on the IP the request came
  from are dialled (``core.reachability.dialback_targets``), at most 4, never over a relayed
  connection; per-peer, per-IP and global token buckets and at most ``MAX_CONCURRENT_DIALBACKS``
  at once bound what anyone can make us do;
- **client**: every ``interval_s`` (more often while unknown) a few connected peers are asked;
  OK and E_DIAL_ERROR are verdicts, anything else (a refusal, no answer, no AutoNAT) is not.
  ``core.reachability.ReachabilityTracker`` turns verdicts into public / private / unknown.

A relay layer reads :attr:`AutoNAT.status` and waits on :meth:`AutoNAT.wait_changed` or registers
:meth:`AutoNAT.on_change`. The addresses peers observed us at (identify's ``observed_addr``) are
kept per peer, since py-libp2p's own ObservedAddrManager drops loopback and private observations
and only shows an address once 4 peers agree.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import multiaddr
import numpy as np
import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.core.reachability import (MAX_REQUEST_ADDRS, DialBackLimiter, Reachability, ReachabilityTracker,
                                        Verdict, describe, dialback_targets, normalize_ip, pick_servers)

log = structlog.get_logger("gaia.reachability")

AUTONAT_PROTOCOL = "/libp2p/autonat/1.0.0"
#: a request or response larger than this is refused (a valid one is a peer id and a few addresses)
MAX_MESSAGE_BYTES = 4096
#: dial-backs in flight at most; more requests meanwhile are refused, not queued
MAX_CONCURRENT_DIALBACKS = 4
#: peers whose observation of our address we keep at most (the newest)
MAX_OBSERVED = 32
#: peers we remember having asked at most
MAX_ASKED = 256
REQUEST_TIMEOUT_S = 5.0  # reading a request, and writing its answer
DIAL_TIMEOUT_S = 5.0  # one dial-back attempt, TCP and Noise
QUERY_TIMEOUT_S = 4 * DIAL_TIMEOUT_S  # a server may try up to 4 addresses


class Asked(StrEnum):
    """What asking one peer came to; ``asked_<value>`` counters."""
    DIALLED_BACK = "dialled_back"
    DIAL_FAILED = "dial_failed"
    REFUSED = "refused"  # E_DIAL_REFUSED, E_BAD_REQUEST, E_INTERNAL_ERROR: no verdict about us
    NO_ANSWER = "no_answer"  # stream failed, timed out, or the peer does not speak AutoNAT
    BAD_ANSWER = "bad_answer"


def _message_class() -> Any:
    from libp2p.host.autonat.pb.autonat_pb2 import Message

    return Message


def tcp_endpoint(addr: multiaddr.Multiaddr) -> tuple[str, int] | None:
    """(ip, port) of a /ip4|ip6/../tcp/.. address, or None (dns, circuit, other transports)."""
    try:
        names = [p.name for p in addr.protocols()]
        if len(names) < 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp" or "p2p-circuit" in names:
            return None
        return str(addr.value_for_protocol(names[0])), int(addr.value_for_protocol("tcp"))
    except Exception:  # the multiaddr package raises many types on odd input
        return None


def _thin(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    """Only /ipX/../tcp/..: the /p2p/ID suffix and anything after is not dialled."""
    names = [p.name for p in addr.protocols()]
    return multiaddr.Multiaddr(f"/{names[0]}/{addr.value_for_protocol(names[0])}/tcp/{addr.value_for_protocol('tcp')}")


class AutoNAT:
    """Both halves of AutoNAT on one host. ``install()`` serves requests; ``run()`` asks peers."""

    def __init__(self, host: Any, *, rng: np.random.Generator, advertised: Callable[[], list[str]] | None = None,
                 confirmations: int = 2, interval_s: float = 120.0, unknown_interval_s: float = 10.0,
                 peers_per_round: int = 3, limiter: DialBackLimiter | None = None,
                 dial_timeout_s: float = DIAL_TIMEOUT_S, guess_from_observed: bool = True) -> None:
        self.host, self.rng = host, rng
        self.advertised = advertised if advertised is not None else self._listen_addrs
        self.interval_s, self.unknown_interval_s = interval_s, unknown_interval_s
        self.peers_per_round, self.dial_timeout_s = peers_per_round, dial_timeout_s
        self.guess_from_observed = guess_from_observed
        # verdicts older than a few rounds no longer count: a laptop moves from home to a café
        self.tracker = ReachabilityTracker(confirmations=confirmations, ttl_s=3 * interval_s + 60)
        self.limiter = limiter if limiter is not None else DialBackLimiter()
        self.dialbacks = trio.Semaphore(MAX_CONCURRENT_DIALBACKS)
        self.stats: Counter[str] = Counter()
        self.last_asked: dict[str, float] = {}
        self.observed: OrderedDict[str, str] = OrderedDict()  # peer -> the address it saw us at
        self._changed = trio.Event()
        self._callbacks: list[Callable[[Reachability], None]] = []

    # ---- what others read ---------------------------------------------------------------------

    @property
    def status(self) -> Reachability:
        return self.tracker.status

    def on_change(self, callback: Callable[[Reachability], None]) -> None:
        """``callback(new_status)`` on every change (called on the trio loop; must not block)."""
        self._callbacks.append(callback)

    async def wait_changed(self) -> Reachability:
        """Wait for the next change of status, and return it."""
        await self._changed.wait()
        return self.status

    def snapshot(self) -> dict[str, Any]:
        now = trio.current_time()
        s = self.tracker.summary(now)
        s["text"] = describe(s)
        s["observed_addrs"] = sorted(set(self.observed.values()))
        s["stats"] = dict(sorted(self.stats.items()))
        return s

    # ---- setup ----------------------------------------------------------------------------------

    def install(self) -> None:
        self.host.set_stream_handler(AUTONAT_PROTOCOL, self.handle)
        self._watch_observed_addrs()

    def _watch_observed_addrs(self) -> None:
        """Keep the address each peer's identify says it saw us at. py-libp2p hands every observation
        to its ObservedAddrManager.record_observation (even those it then drops), so we read them there."""
        manager = getattr(self.host, "_observed_addr_manager", None)
        if manager is None:
            return
        original = manager.record_observation

        def record(conn: Any, observed: Any, local_addrs: Any) -> None:
            try:
                peer = str(conn.muxed_conn.peer_id)
                self.observed.pop(peer, None)
                self.observed[peer] = str(observed)
                while len(self.observed) > MAX_OBSERVED:
                    self.observed.popitem(last=False)
            except Exception:
                pass
            original(conn, observed, local_addrs)

        manager.record_observation = record

    def _listen_addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_transport_addrs()]

    def request_addrs(self) -> list[bytes]:
        """What we ask peers to dial: each IP peers observed us at with each listen port of its
        family (what a router that forwards our port would expose; first, so that many interface
        addresses cannot push them past MAX_REQUEST_ADDRS), then our advertised addresses."""
        out: list[str] = []
        ports: dict[str, set[int]] = {"ip4": set(), "ip6": set()}
        for a in self.host.get_transport_addrs():
            ep = tcp_endpoint(a)
            if ep is not None:
                ports["ip6" if ":" in ep[0] else "ip4"].add(ep[1])
        for seen in list(self.observed.values()) if self.guess_from_observed else []:
            ep = tcp_endpoint(multiaddr.Multiaddr(seen))
            if ep is not None:
                fam = "ip6" if ":" in ep[0] else "ip4"
                out.extend(f"/{fam}/{ep[0]}/tcp/{p}" for p in sorted(ports[fam]))
        out.extend(a for a in self.advertised() if not a.startswith(("/ip4/0.0.0.0/", "/ip6/::/")))
        raw: list[bytes] = []
        for a in dict.fromkeys(out):
            try:
                raw.append(_thin(multiaddr.Multiaddr(a)).to_bytes())
            except Exception:
                continue
        return raw[:MAX_REQUEST_ADDRS]

    # ---- server ---------------------------------------------------------------------------------

    async def handle(self, stream: Any) -> None:
        """Answer one dial-back request. Hostile or broken input is counted (``served_<reason>``),
        logged, and the stream closed; nothing raises out of here."""
        from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

        Message = _message_class()
        peer = "?"
        try:
            peer_id = stream.muxed_conn.peer_id
            peer = str(peer_id)
            with trio.fail_after(REQUEST_TIMEOUT_S):
                data = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_BYTES)
            request = Message()
            request.ParseFromString(data)
            response = await self._answer(request, peer_id, stream)
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await stream.write(encode_varint_prefixed(response.SerializeToString()))
        except Exception as e:
            self.stats["served_bad_request"] += 1
            log.info("autonat_request_rejected", peer_id=peer, reason="bad_request", error=f"{type(e).__name__}: {e}")
            await _reset(stream)
            return
        try:
            await stream.close()
        except Exception:
            pass

    def _refuse(self, status: str, reason: str, peer: str, text: str) -> Any:
        Message = _message_class()
        self.stats[f"served_{reason}"] += 1
        log.info("autonat_request_refused", peer_id=peer, reason=reason)
        response = Message(type=Message.DIAL_RESPONSE)
        response.dialResponse.status = getattr(Message, status)
        response.dialResponse.statusText = text
        return response

    async def _answer(self, request: Any, peer_id: Any, stream: Any) -> Any:
        Message = _message_class()
        peer = str(peer_id)
        if request.type != Message.DIAL or not request.HasField("dial"):
            return self._refuse("E_BAD_REQUEST", "bad_request", peer, "expected a DIAL")
        if request.dial.peer.id and request.dial.peer.id != peer_id.to_bytes():
            # We only ever dial the peer the connection authenticated, so a request for another id
            # is not something to serve: it is a mistake or an attempt to make us dial someone else.
            return self._refuse("E_BAD_REQUEST", "peer_id_mismatch", peer, "peer id is not the connection's")
        conn_addrs = []
        try:
            conn_addrs = [str(a) for a in stream.muxed_conn.get_transport_addresses() or []]
        except Exception:
            pass
        if any("/p2p-circuit" in a for a in conn_addrs):
            return self._refuse("E_DIAL_REFUSED", "relayed", peer, "requests over relayed connections are refused")
        remote = None
        try:
            remote = stream.get_remote_address()
        except Exception:
            pass
        observed_ip = normalize_ip(str(remote[0])) if remote else None
        if observed_ip is None:
            return self._refuse("E_DIAL_REFUSED", "no_observed_ip", peer, "cannot see where the request came from")
        parsed: list[multiaddr.Multiaddr | None] = []
        for raw in list(request.dial.peer.addrs)[:MAX_REQUEST_ADDRS]:
            try:
                parsed.append(multiaddr.Multiaddr(bytes(raw)))
            except Exception:
                parsed.append(None)
        endpoints = [tcp_endpoint(a) if a is not None else None for a in parsed]
        targets = dialback_targets(endpoints, observed_ip)
        if not targets:
            return self._refuse("E_DIAL_REFUSED", "no_matching_addr", peer,
                                "no advertised TCP address on the IP the request came from")
        limit = self.limiter.allow(peer, observed_ip, trio.current_time())
        if limit is not None:
            return self._refuse("E_DIAL_REFUSED", limit, peer, "too many requests")
        try:
            self.dialbacks.acquire_nowait()
        except trio.WouldBlock:
            return self._refuse("E_DIAL_REFUSED", "busy", peer, "too many dial-backs in flight")
        try:
            for i in targets:
                addr = parsed[i]
                assert addr is not None
                if await self._dial_back(peer_id, _thin(addr)):
                    self.stats["served_dialled_back"] += 1
                    log.debug("autonat_dialled_back", peer_id=peer, addr=str(addr))
                    response = Message(type=Message.DIAL_RESPONSE)
                    response.dialResponse.status = Message.OK
                    response.dialResponse.addr = _thin(addr).to_bytes()
                    return response
        finally:
            self.dialbacks.release()
        self.stats["served_dial_failed"] += 1
        response = Message(type=Message.DIAL_RESPONSE)
        response.dialResponse.status = Message.E_DIAL_ERROR
        response.dialResponse.statusText = "dial-back failed"
        return response

    async def _dial_back(self, peer_id: Any, addr: multiaddr.Multiaddr) -> bool:
        """A new TCP connection to ``addr``, a Noise handshake proving it is ``peer_id`` and the
        muxer negotiated, then closed. Not through the swarm: ``host.connect`` would reuse the connection the request came
        on (upstream's bug), and a registered connection would count against limits and notify."""
        network = self.host.get_network()
        raw = None
        try:
            with trio.fail_after(self.dial_timeout_s):
                transport = network.transport_manager.transport_for_dialing(addr)
                if transport is None:
                    return False
                raw = await transport.dial(addr)
                secured = await network.upgrader.upgrade_security(raw, True, peer_id)
                # The muxer too, though we send nothing over it: a peer whose inbound connection
                # stops after Noise logs a libp2p ERROR ("fail to upgrade mux") for each dial-back.
                muxed = await network.upgrader.upgrade_connection(secured, peer_id)
                await muxed.close()
                return True
        except Exception as e:  # refused, timed out, wrong peer behind the address, handshake failed
            log.debug("autonat_dial_back_failed", peer_id=str(peer_id), addr=str(addr),
                      error=f"{type(e).__name__}: {e}")
            return False
        finally:
            if raw is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await raw.close()
                    except Exception:
                        pass

    # ---- client ---------------------------------------------------------------------------------

    async def ask(self, server: Any) -> Asked:
        """Ask one connected peer to dial us back; feeds its verdict to the tracker."""
        from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

        Message = _message_class()
        key = str(server)
        self._note_asked(key, trio.current_time())
        request = Message(type=Message.DIAL)
        request.dial.peer.id = self.host.get_id().to_bytes()
        request.dial.peer.addrs.extend(self.request_addrs())
        stream = None
        try:
            with trio.fail_after(QUERY_TIMEOUT_S):
                stream = await self.host.new_stream(server, [AUTONAT_PROTOCOL])
                await stream.write(encode_varint_prefixed(request.SerializeToString()))
                data = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_BYTES)
        except Exception as e:
            log.debug("autonat_no_answer", peer_id=key, error=f"{type(e).__name__}: {e}")
            return self._count(Asked.NO_ANSWER)
        finally:
            if stream is not None:
                await _reset(stream)
        response = Message()
        try:
            response.ParseFromString(data)
        except Exception:
            return self._count(Asked.BAD_ANSWER)
        if response.type != Message.DIAL_RESPONSE:
            return self._count(Asked.BAD_ANSWER)
        status = response.dialResponse.status
        if status == Message.OK:
            addr = None
            try:
                addr = str(multiaddr.Multiaddr(bytes(response.dialResponse.addr)))
            except Exception:
                pass
            self._verdict(Verdict(server=key, ok=True, at=trio.current_time(), addr=addr))
            return self._count(Asked.DIALLED_BACK)
        if status == Message.E_DIAL_ERROR:
            self._verdict(Verdict(server=key, ok=False, at=trio.current_time()))
            return self._count(Asked.DIAL_FAILED)
        return self._count(Asked.REFUSED)

    def _note_asked(self, key: str, now: float) -> None:
        self.last_asked.pop(key, None)  # newest last: the oldest goes first when the table is full
        self.last_asked[key] = now
        while len(self.last_asked) > MAX_ASKED:
            self.last_asked.pop(next(iter(self.last_asked)))

    def _count(self, outcome: Asked) -> Asked:
        self.stats[f"asked_{outcome}"] += 1
        return outcome

    def _verdict(self, verdict: Verdict) -> None:
        self._changed_to(self.tracker.status, self.tracker.record(verdict))

    def _changed_to(self, old: Reachability, new: Reachability | None) -> None:
        if new is None:
            return
        s = self.snapshot()
        log.info(logs.REACHABILITY_CHANGED, old=str(old), new=str(new), text=s["text"], asked=s["asked"],
                 dialled_back=s["dialled_back"], dialled_at=s["dialled_at"])
        event, self._changed = self._changed, trio.Event()
        event.set()
        for callback in list(self._callbacks):
            try:
                callback(new)
            except Exception as e:  # a reader's bug must not stop reachability
                log.warning("reachability_callback_failed", error=f"{type(e).__name__}: {e}")

    async def check_once(self) -> list[Asked]:
        """One round: ask up to ``peers_per_round`` connected peers not asked lately, all at once."""
        now = trio.current_time()
        old = self.tracker.status
        self._changed_to(old, self.tracker.update(now))  # verdicts may have expired
        connected = [str(p) for p in self.host.get_connected_peers()]
        by_name = {str(p): p for p in self.host.get_connected_peers()}
        chosen = pick_servers(connected, self.last_asked, now=now, k=self.peers_per_round,
                              retry_after_s=self.interval_s, rng=self.rng)
        results: list[Asked] = []

        async def one(name: str) -> None:
            results.append(await self.ask(by_name[name]))

        async with trio.open_nursery() as nursery:
            for name in chosen:
                nursery.start_soon(one, name)
        return results

    async def run(self) -> None:
        """Ask peers forever: every ``unknown_interval_s`` while the status is unknown, else every
        ``interval_s`` (each peer at most once per ``interval_s``)."""
        while True:
            try:
                await self.check_once()
            except Exception as e:  # our bug or py-libp2p's: reachability is not worth the node
                self.stats["round_failed"] += 1
                log.warning("reachability_round_failed", error=f"{type(e).__name__}: {e}")
            wait = self.unknown_interval_s if self.status == Reachability.UNKNOWN else self.interval_s
            await trio.sleep(wait * float(self.rng.uniform(0.8, 1.2)) if math.isfinite(wait) else wait)


async def _reset(stream: Any) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:
            pass
