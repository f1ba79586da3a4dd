"""The Prometheus endpoint (gaia_p2p/node/metrics.py) over a real socket on 127.0.0.1, port 0.

A fake ``get_status`` dict stands in for ``Node.status()``; a raw trio socket client does the
HTTP, and prometheus_client's own parser reads the answer. The last test scrapes a real in-process
node, so the collector is checked against the real status dict too.
"""

from __future__ import annotations

import copy
import socket

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from gaia_p2p.errors import ConfigError
from gaia_p2p.node import metrics
from gaia_p2p.node.metrics import serve_metrics
from gaia_p2p.node.runtime import run

from swarm_helpers import node_config, wait_until

PEER = "12D3KooWFakePeerForMetricsTest000000000000000000000"
EXP = "0123456789abcdef0123456789abcdef"

STATUS = {
    "v": 1,
    "version": "0.1.0",
    "peer_id": PEER,
    "addrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"],
    "peers": ["12D3KooWA", "12D3KooWB", "12D3KooWC"],
    "topic_peers": ["12D3KooWA", "12D3KooWB"],
    "routing_table_size": 7,
    "experiment_id": EXP,
    "topics": [f"/gaia/{EXP}/migrants/1"],
    "problem": {"name": "lunarlander", "episodes": 1},
    "optimizer": {"algorithm": "cmaes", "popsize": 32, "dim": 212, "settings": {"sigma0": 0.5}, "seed": 1},
    "migration": {"enabled": True, "interval": 10, "topology": "full", "accept_only_better": True},
    "target": {"fitness": 200.0, "last_test": {"mean": 98.5, "test_episodes": 100}, "test_episodes_used": 100},
    "island": {"generation": 42, "evaluations": 1344, "episodes": 1500, "best_fitness": 123.5, "best_source": "local",
               "mean_fitness": -20.25, "sigma": 0.375, "evals_per_s": 812.5},
    "migrants": {"sent": 4, "received": 9, "accepted": 2, "rejected": {"not_better": 6, "bad_field": 1}},
    "telemetry_rejected": {"bad_field": 2},
    "pubsub_streams_rejected": 3,
    "workers": 2,
    "uptime_s": 61.5,
    "data_dir": "/tmp/x",
    "pid": 1,
}


async def http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``request`` raw, read to EOF; (status line, headers, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status, *header_lines = head.decode("ascii").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return status, headers, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n".encode()


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


IDS = (("experiment_id", EXP), ("peer_id", PEER))


async def test_metrics_reflect_status_at_scrape_time():
    status = copy.deepcopy(STATUS)
    calls = []

    def get_status():
        calls.append(1)
        return status

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, 0, get_status)
            assert isinstance(port, int) and port > 0
            assert calls == []  # nothing read before the first scrape

            line, headers, body = await http(port, get("/metrics"))
            assert line == "HTTP/1.1 200 OK"
            assert headers["content-type"].startswith("text/plain; version=0.0.4")
            assert int(headers["content-length"]) == len(body)
            got = samples(body)
            expected = {
                "gaia_generation": 42, "gaia_evaluations_total": 1344, "gaia_episodes_total": 1500,
                "gaia_best_fitness": 123.5, "gaia_tested_score": 98.5, "gaia_test_episodes_total": 100,
                "gaia_mean_fitness": -20.25, "gaia_sigma": 0.375, "gaia_evals_per_second": 812.5, "gaia_peers": 3,
                "gaia_topic_peers": 2, "gaia_routing_table_size": 7, "gaia_migrants_sent_total": 4,
                "gaia_migrants_received_total": 9, "gaia_migrants_accepted_total": 2,
                "gaia_pubsub_streams_rejected_total": 3, "gaia_uptime_seconds": 61.5,
            }
            for name, value in expected.items():
                assert got[(name, IDS)] == value, name
            assert got[("gaia_migrants_rejected_total", (*IDS, ("reason", "not_better")))] == 6
            assert got[("gaia_migrants_rejected_total", (*IDS, ("reason", "bad_field")))] == 1
            assert got[("gaia_telemetry_rejected_total", (*IDS, ("reason", "bad_field")))] == 2
            info = [k for k in got if k[0] == "gaia_node_info"]
            assert len(info) == 1 and ("problem", "lunarlander") in info[0][1] and got[info[0]] == 1
            types = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
            assert types["gaia_evaluations"] == "counter" and types["gaia_best_fitness"] == "gauge"

            # Read again at the next scrape; a null field (no best yet) is left out, not faked.
            status["island"] = status["island"] | {"generation": 43, "best_fitness": None}
            status["migrants"]["rejected"]["rate_limited"] = 5
            _, _, body = await http(port, get("/metrics?x=1"))
            got = samples(body)
            assert got[("gaia_generation", IDS)] == 43
            assert ("gaia_best_fitness", IDS) not in got
            assert got[("gaia_migrants_rejected_total", (*IDS, ("reason", "rate_limited")))] == 5
            assert len(calls) == 2
            nursery.cancel_scope.cancel()


async def test_other_paths_methods_and_garbage():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, 0, lambda: STATUS)
            line, _, body = await http(port, get("/"))
            assert line == "HTTP/1.1 404 Not Found" and b"/metrics" in body
            line, _, _ = await http(port, get("/metricsx"))
            assert line.startswith("HTTP/1.1 404")
            line, _, _ = await http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            assert line.startswith("HTTP/1.1 405")
            line, _, _ = await http(port, b"\x00\xff garbage\r\n\r\n")
            assert line.startswith("HTTP/1.1 400")
            # An endless head is cut at MAX_REQUEST_BYTES, not buffered.
            big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (2 * metrics.MAX_REQUEST_BYTES)
            line, _, _ = await http(port, big)
            assert line.startswith("HTTP/1.1 400")
            # Still serving after all that.
            line, _, _ = await http(port, get("/metrics"))
            assert line == "HTTP/1.1 200 OK"
            nursery.cancel_scope.cancel()


async def test_silent_client_is_dropped_at_the_deadline(monkeypatch):
    monkeypatch.setattr(metrics, "CONNECTION_DEADLINE_S", 0.3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, 0, lambda: STATUS)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                with trio.fail_after(5):
                    assert await stream.receive_some(100) == b""  # server closed it, said nothing
            nursery.cancel_scope.cancel()


async def test_broken_status_answers_500_and_keeps_serving():
    def broken():
        raise KeyError("island")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, 0, broken)
            line, _, _ = await http(port, get("/metrics"))
            assert line.startswith("HTTP/1.1 500")
            line, _, _ = await http(port, get("/nope"))
            assert line.startswith("HTTP/1.1 404")
            nursery.cancel_scope.cancel()


async def test_port_in_use_is_a_config_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                with pytest.raises(ConfigError, match=f"metrics_port = {port}"):
                    await nursery.start(serve_metrics, port, lambda: STATUS)


async def test_metrics_of_a_real_node(tmp_path):
    """The collector reads the real Node.status() dict (what runtime.py passes to serve_metrics)."""
    cfg = node_config(tmp_path, 0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run, cfg)
            port = await nursery.start(serve_metrics, 0, node.status)
            await wait_until(lambda: node.island.generation >= 3, "3 generations", 5, on=(node,))
            line, _, body = await http(port, get("/metrics"))
            assert line == "HTTP/1.1 200 OK"
            got = samples(body)
            ids = (("experiment_id", node.exp_id), ("peer_id", node.peer_id))
            assert got[("gaia_generation", ids)] >= 3
            assert got[("gaia_evaluations_total", ids)] > 0
            assert got[("gaia_best_fitness", ids)] < 0  # sphere, negated
            assert ("gaia_uptime_seconds", ids) in got and ("gaia_routing_table_size", ids) in got
            nursery.cancel_scope.cancel()
