"""Prometheus metrics on ``127.0.0.1:PORT/metrics`` (``gaia-node start --metrics-port PORT``).

A tiny HTTP/1.x server on trio (``trio.serve_listeners``): one request per connection
(``Connection: close``), the request head capped at :data:`MAX_REQUEST_BYTES`, every connection
done within :data:`CONNECTION_DEADLINE_S`.
``GET /metrics`` (a query string is ignored) answers text format 0.0.4 made by prometheus_client's
``generate_latest`` from a private registry whose one collector reads ``get_status()`` (the dict of
``Node.status()``, ``protocols/gaia-status-v1.md``) at scrape time: no metric state is kept here,
so nothing can drift from what ``gaia-node status`` shows. Anything else: 404 (405 for another
method on /metrics, 400 for a malformed or oversized request head). No threads.

Metrics (all labelled ``peer_id`` and ``experiment_id``; missing or null status fields are left out):

==================================== ======= ==============================================
gaia_node_info                       gauge   1; labels also version, problem, algorithm
gaia_generation                      gauge   completed generations
gaia_evaluations_total               counter candidate evaluations
gaia_episodes_total                  counter env episodes spent (island.episodes, when reported)
gaia_best_fitness                    gauge   resident best (running mean of re-evaluations)
gaia_tested_score                    gauge   mean of the last test on fresh episodes (noisy problems, once tested)
gaia_test_episodes_total             counter episodes spent on tests on fresh episodes (not training)
gaia_mean_fitness                    gauge   mean fitness of the last generation
gaia_sigma                           gauge   optimizer step size
gaia_evals_per_second                gauge   over the last generation
gaia_peers                           gauge   connected peers
gaia_topic_peers                     gauge   peers in our experiment's migrants topic
gaia_routing_table_size              gauge   Kademlia routing table entries
gaia_migrants_sent_total             counter
gaia_migrants_received_total         counter
gaia_migrants_accepted_total         counter
gaia_migrants_rejected_total         counter label reason (protocols/gaia-migration-v1.md)
gaia_telemetry_rejected_total        counter label reason (telemetry topic, when reported)
gaia_pubsub_streams_rejected_total   counter undecodable pubsub streams reset (fix A)
gaia_network_bytes_in_total          counter libp2p TCP payload received (after Noise and muxer framing)
gaia_network_bytes_out_total         counter libp2p TCP payload sent
gaia_pubsub_copies_in_total          counter pubsub message copies received, duplicates included
gaia_cpu_seconds_total               counter label part: process | island (optimizer) | network (the rest)
gaia_uptime_seconds                  gauge
==================================== ======= ==============================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import structlog
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gaia_p2p import logs
from gaia_p2p.errors import ConfigError

log = structlog.get_logger("gaia.metrics")

HOST = "127.0.0.1"
PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192  # request line + headers; a scrape's is ~200 bytes
CONNECTION_DEADLINE_S = 5.0
LINGER_S = 0.5  # after answering, drain unread input this long at most ...
LINGER_MAX_BYTES = 256 * 1024  # ... and this much at most, so the answer is not lost to a TCP reset

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


class StatusCollector:
    """A prometheus_client collector that turns one ``get_status()`` dict into metric families."""

    def __init__(self, get_status: Callable[[], dict[str, Any]]) -> None:
        self.get_status = get_status

    def collect(self) -> Iterator[Metric]:
        s = self.get_status()
        isl = s.get("island") or {}
        mig = s.get("migrants") or {}
        names = ["peer_id", "experiment_id"]
        ids = [str(s.get("peer_id", "")), str(s.get("experiment_id", ""))]

        def family(kind: type, name: str, doc: str, value: Any) -> Metric:
            v = _num(value)
            fam = kind(f"gaia_{name}", doc, labels=names)
            if v is not None:
                fam.add_metric(ids, v)
            return fam

        info = GaugeMetricFamily("gaia_node_info", "gaia-node identity (value 1)",
                                 labels=[*names, "version", "problem", "algorithm"])
        info.add_metric([*ids, str(s.get("version", "")), str((s.get("problem") or {}).get("name", "")),
                         str((s.get("optimizer") or {}).get("algorithm", ""))], 1.0)
        yield info
        G, C = GaugeMetricFamily, CounterMetricFamily
        peers, topic_peers = s.get("peers"), s.get("topic_peers")
        fams = [
            family(G, "generation", "Completed generations of this island", isl.get("generation")),
            family(C, "evaluations", "Candidate evaluations so far", isl.get("evaluations")),
            family(C, "episodes", "Episodes spent, re-evaluations included (test functions: evaluations)",
                   isl.get("episodes")),
            family(G, "best_fitness", "Resident best fitness (running mean of its re-evaluations)",
                   isl.get("best_fitness")),
            family(G, "tested_score", "Mean of the last test on fresh episodes (core/target.py)",
                   ((s.get("target") or {}).get("last_test") or {}).get("mean")),
            family(C, "test_episodes", "Episodes spent on tests on fresh episodes (not training)",
                   (s.get("target") or {}).get("test_episodes_used")),
            family(G, "mean_fitness", "Mean fitness of the last generation's candidates", isl.get("mean_fitness")),
            family(G, "sigma", "Optimizer step size", isl.get("sigma")),
            family(G, "evals_per_second", "Evaluations per second over the last generation", isl.get("evals_per_s")),
            family(G, "peers", "Connected peers", len(peers) if isinstance(peers, list) else None),
            family(G, "topic_peers", "Peers in this experiment's migrants topic",
                   len(topic_peers) if isinstance(topic_peers, list) else None),
            family(G, "routing_table_size", "Kademlia routing table entries", s.get("routing_table_size")),
            family(C, "migrants_sent", "Migrants published", mig.get("sent")),
            family(C, "migrants_received", "Migrants received (valid wire messages)", mig.get("received")),
            family(C, "migrants_accepted", "Migrants accepted into the island", mig.get("accepted")),
            family(C, "pubsub_streams_rejected", "Pubsub streams reset for an undecodable RPC",
                   s.get("pubsub_streams_rejected")),
            family(G, "uptime_seconds", "Seconds since the node started", s.get("uptime_s")),
        ]
        traffic = s.get("traffic") or {}
        fams += [
            family(C, "network_bytes_in", "libp2p TCP payload bytes received", traffic.get("bytes_in")),
            family(C, "network_bytes_out", "libp2p TCP payload bytes sent", traffic.get("bytes_out")),
            family(C, "pubsub_copies_in", "Pubsub message copies received, duplicates included",
                   traffic.get("pubsub_copies_in")),
        ]
        yield from fams
        cpu = s.get("cpu") or {}
        fam = C("gaia_cpu_seconds", "CPU seconds of the node process, by part", labels=[*names, "part"])
        for part in ("process", "island", "network"):
            v = _num(cpu.get(f"{part}_s"))
            if v is not None:
                fam.add_metric([*ids, part], v)
        yield fam
        for name, doc, counts in (
                ("migrants_rejected", "Migrants and wire messages rejected, by reason", mig.get("rejected")),
                ("telemetry_rejected", "Telemetry messages rejected, by reason", s.get("telemetry_rejected"))):
            fam = C(f"gaia_{name}", doc, labels=[*names, "reason"])
            for reason, n in sorted((counts if isinstance(counts, dict) else {}).items()):
                v = _num(n)
                if v is not None:
                    fam.add_metric([*ids, str(reason)], v)
            yield fam


def make_registry(get_status: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)  # no describe(): nothing is read at registration
    registry.register(StatusCollector(get_status))  # type: ignore[arg-type]
    return registry


def _response(code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request head up to the blank line; None if the peer closed or it is oversized."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        if len(buf) >= MAX_REQUEST_BYTES:
            return None
        chunk = await stream.receive_some(MAX_REQUEST_BYTES - len(buf))
        if not chunk:
            return bytes(buf) if buf.count(b"\n") >= 1 else None  # an HTTP/1.0-style request without headers
        buf += chunk
    return bytes(buf)


def route(head: bytes | None, registry: CollectorRegistry) -> bytes:
    """The full response to one request head (pure, apart from reading the status at scrape time)."""
    if head is None:
        return _response(400, b"bad request\n")
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _response(400, b"bad request\n")
    method, target = parts[0], parts[1]
    path = target.split(b"?", 1)[0]
    if path != PATH.encode():
        return _response(404, b"not found; metrics are at /metrics\n")
    if method != b"GET":
        return _response(405, b"method not allowed; use GET\n")
    try:
        body = generate_latest(registry)
    except Exception as e:  # a bug in status(); the node must keep running, so answer 500 and log it
        log.error(logs.METRICS_SCRAPE_FAILED, error=f"{type(e).__name__}: {e}")
        return _response(500, b"internal error\n")
    return _response(200, body, CONTENT_TYPE)


async def serve_metrics(port: int, get_status: Callable[[], dict[str, Any]], *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``/metrics`` on 127.0.0.1:``port`` until cancelled; ``task_status.started(actual_port)``.

    Port 0 picks a free port. A port that cannot be bound raises :class:`ConfigError`.
    """
    registry = make_registry(get_status)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(CONNECTION_DEADLINE_S):
                try:
                    head = await _read_head(stream)
                    await stream.send_all(route(head, registry))
                    # Lingering close: closing with unread input (an oversized head, a POST body)
                    # makes the kernel send RST, and the client may lose our answer. Signal EOF,
                    # then drain a bounded amount for a short while.
                    await stream.send_eof()
                    with trio.move_on_after(LINGER_S):
                        drained = 0
                        while drained < LINGER_MAX_BYTES and (chunk := await stream.receive_some(65536)):
                            drained += len(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the scraper went away; nothing to answer

    # trio.serve_tcp(handle, port, host=HOST) is exactly these two calls; bound here first, so a
    # port in use is one ConfigError raised from nursery.start(), not a group from inside a nursery.
    try:
        listeners = await trio.open_tcp_listeners(port, host=HOST)
    except OSError as e:
        raise ConfigError(f"config error: metrics_port = {port} cannot be bound on {HOST} ({e.strerror}); "
                          f"pass another --metrics-port") from None
    actual = listeners[0].socket.getsockname()[1]
    log.info(logs.METRICS_STARTED, url=f"http://{HOST}:{actual}{PATH}")
    task_status.started(actual)
    await trio.serve_listeners(handle, listeners)
