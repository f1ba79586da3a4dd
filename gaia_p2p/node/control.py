"""Status endpoints: a local unix socket in the data dir, and ``/gaia/status/1.0.0`` over libp2p.

Both answer with the same JSON object (protocols/gaia-status-v1.md). Framing on the libp2p stream:
unsigned-varint length prefix + UTF-8 JSON, request first, then response, then the stream closes;
requests and a peer's response are decoded by core/wire.py (kinds ``STATUS_REQUEST``, ``STATUS_RESPONSE``).
The unix socket speaks newline-delimited JSON: ``{"cmd": "status"}\\n`` -> one JSON line.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from gaia_p2p.core import wire
from gaia_p2p.core.wire import Kind, Reason
from gaia_p2p.errors import RemoteProtocolError

log = structlog.get_logger("gaia.control")

STATUS_PROTOCOL = "/gaia/status/1.0.0"
MAX_REQUEST_BYTES = wire.LIMITS[Kind.STATUS_REQUEST].max_bytes
MAX_RESPONSE_BYTES = wire.LIMITS[Kind.STATUS_RESPONSE].max_bytes
STREAM_TIMEOUT_S = 10.0


def encode_uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


async def read_exactly(stream: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise EOFError("stream closed early")
        buf += chunk
    return buf


async def read_frame(stream: Any, max_bytes: int) -> bytes:
    n, shift = 0, 0
    for _ in range(10):
        b = (await read_exactly(stream, 1))[0]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    else:
        raise ValueError("varint too long")
    if n > max_bytes:
        raise ValueError(f"frame of {n} bytes exceeds {max_bytes}")
    return await read_exactly(stream, n)


# ------------------------------------------------------------------ one request, one response


async def serve_request(stream: Any, *, max_request: int,
                        respond: Callable[[str, bytes], tuple[bytes, Reason | None]],
                        stats: Any, event: str, logger: Any) -> None:
    """Server side of a request/response stream protocol (gaia-elite-v1, gaia-telemetry-v1 pull): one
    framed request, one framed response, close. ``respond(peer, request)`` gives the response and a
    refusal code or None; counted in ``stats`` as ``served`` or ``refused_<code>``. Malformed
    requests and broken streams are logged under ``event`` with the peer and reason; never raises."""
    try:
        peer = str(stream.muxed_conn.peer_id)
    except Exception:
        peer = "?"
    try:
        with trio.fail_after(STREAM_TIMEOUT_S):
            resp, err = respond(peer, await read_frame(stream, max_request))
            stats["served" if err is None else f"refused_{err}"] += 1
            if err in (Reason.BAD_REQUEST, Reason.UNSUPPORTED_VERSION):
                logger.warning(event, peer_id=peer, reason=err)
            await stream.write(encode_uvarint(len(resp)) + resp)
            await stream.close()
    except (Exception, trio.TooSlowError) as e:
        stats[f"refused_{Reason.STREAM_ERROR}"] += 1
        logger.warning(event, peer_id=peer, reason=Reason.STREAM_ERROR, error=f"{type(e).__name__}: {e}"[:200])
        try:
            await stream.reset()
        except Exception:
            pass


async def request(host: Any, peer_id: str, protocol: str, req: bytes, max_response: int) -> bytes:
    """Client side: open ``protocol`` to ``peer_id``, send one framed request, return the framed
    response. Raises on any failure (no such protocol, reset, timeout), the stream reset first."""
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID

    stream = None
    try:
        with trio.fail_after(STREAM_TIMEOUT_S):
            stream = await host.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
            await stream.write(encode_uvarint(len(req)) + req)
            data = await read_frame(stream, max_response)
            await stream.close()
            return data
    except Exception:  # trio.TooSlowError included
        if stream is not None:
            try:
                await stream.reset()
            except Exception:
                pass
        raise


# ------------------------------------------------------------------ libp2p status protocol


def status_stream_handler(get_status: Callable[[], dict[str, Any]]) -> Callable[[Any], Any]:
    async def handler(stream: Any) -> None:
        try:
            with trio.fail_after(STREAM_TIMEOUT_S):
                req = wire.decode(Kind.STATUS_REQUEST, await read_frame(stream, MAX_REQUEST_BYTES) or b"{}")
                if req.get("v", 1) != 1:
                    body = {"error": "unsupported request version", "v": 1}
                else:
                    body = get_status()
                data = json.dumps(body, separators=(",", ":")).encode()
                await stream.write(encode_uvarint(len(data)) + data)
                await stream.close()
        except (Exception, trio.TooSlowError) as e:
            reason = e.reason if isinstance(e, RemoteProtocolError) else Reason.STREAM_ERROR
            log.warning("status_request_failed", reason=reason, error=f"{type(e).__name__}: {e}"[:200])
            try:
                await stream.reset()
            except Exception:
                pass

    return handler


async def query_peer_status(addr: str, *, timeout_s: float = 15.0) -> dict[str, Any]:
    """Start a throwaway host, dial ``addr``, ask it ``/gaia/status/1.0.0``."""
    import multiaddr
    from libp2p import create_yamux_muxer_option, new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from gaia_p2p.net.libp2p_fixes import noise_only_security

    kp = create_new_key_pair()
    host = new_host(key_pair=kp, muxer_opt=create_yamux_muxer_option(), sec_opt=noise_only_security(kp))
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    with trio.fail_after(timeout_s):
        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            await host.connect(info)
            try:
                stream = await host.new_stream(info.peer_id, [TProtocol(STATUS_PROTOCOL)])
                req = json.dumps({"v": 1}).encode()
                await stream.write(encode_uvarint(len(req)) + req)
                data = await read_frame(stream, MAX_RESPONSE_BYTES)
                await stream.close()
            finally:
                # hang up: leaving host.run() does not close its connections, and a caller that
                # stays alive (watch, tests) would keep the node's connection open
                await host.disconnect(info.peer_id)
            return wire.decode(Kind.STATUS_RESPONSE, data)


# ------------------------------------------------------------------ local unix socket


async def serve_control(path: Path, get_status: Callable[[], dict[str, Any]], *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()  # a stale socket from a killed node; the data-dir lock says we own it
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(STREAM_TIMEOUT_S):
                    buf = b""
                    while b"\n" not in buf and len(buf) < MAX_REQUEST_BYTES:
                        chunk = await stream.receive_some(MAX_REQUEST_BYTES)
                        if not chunk:
                            break
                        buf += chunk
                    body: dict[str, Any]
                    try:
                        req = wire.decode(Kind.STATUS_REQUEST, buf.split(b"\n", 1)[0] or b"{}")
                        body = get_status() if req.get("cmd", "status") == "status" else \
                            {"error": f"unknown command {req!r}"}
                    except RemoteProtocolError as e:
                        body = {"error": f"bad request ({e})"}
                    await stream.send_all(json.dumps(body, separators=(",", ":")).encode() + b"\n")
            except (Exception, trio.TooSlowError) as e:
                log.debug("control_request_failed", error=f"{type(e).__name__}: {e}"[:200])

    try:
        await trio.serve_listeners(handle, [listener], task_status=task_status)
    finally:
        try:
            path.unlink()
        except OSError:
            pass


def query_local_status(path: Path, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Blocking client for the CLI. Raises ConnectionError when no node listens there (or it answers nonsense)."""
    if not path.exists():
        raise ConnectionError(f"no control socket at {path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise ConnectionError(str(e)) from None
        s.sendall(b'{"cmd":"status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_RESPONSE_BYTES:
                raise ConnectionError("status response too large")
    try:
        return wire.decode(Kind.STATUS_RESPONSE, buf)
    except RemoteProtocolError as e:
        raise ConnectionError(f"not a status answer ({e})") from None
