"""`gaia-node watch --json` as a light peer next to 3 real nodes: heartbeats from all, migrations seen."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from cli_helpers import GAIA, NodeProc

pytestmark = pytest.mark.e2e


def _watch(boot: str, *args: str) -> tuple[subprocess.Popen, list[dict]]:
    """`gaia-node watch --json` as a light peer; its events are collected by a reader thread."""
    watcher = subprocess.Popen([*GAIA, "watch", "--bootstrap", boot, "--json", "--listen", "/ip4/127.0.0.1/tcp/0",
                                *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict] = []

    def read() -> None:
        for line in watcher.stdout:
            events.append(json.loads(line))  # stdout must be pure NDJSON

    threading.Thread(target=read, daemon=True).start()
    return watcher, events


def _stop(watcher: subprocess.Popen | None, nodes: list[NodeProc]) -> None:
    if watcher is not None and watcher.poll() is None:
        watcher.kill()
        watcher.wait(timeout=10)
    for n in nodes:
        n.kill()


def test_watch_sees_every_island_and_a_migration(tmp_path):
    common = ("--problem", "rastrigin", "--dim", "10", "--set", "migration.interval=5", "--workers", "0",
              "--set", "telemetry_interval_s=1", "--set", "telemetry_rate=100")
    nodes = [NodeProc(tmp_path, "n0", *common, "--seed", "1", "--sigma", "0.3")]
    watcher = None
    try:
        nodes[0].start()
        boot = nodes[0].wait_event("node_started", 60)["addrs"][0]
        for i, sigma in ((1, "1.0"), (2, "2.0")):
            nodes.append(NodeProc(tmp_path, f"n{i}", *common, "--seed", str(i + 1), "--sigma", sigma,
                                  "--bootstrap", boot).start())
        ids = {n.wait_event("node_started", 60)["peer_id"] for n in nodes}
        watcher, events = _watch(boot, "--duration", "90")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            seen = {e["peer_id"] for e in events if e.get("event") == "telemetry"}
            migrations = [e for e in events if e.get("event") == "migration"]
            if seen >= ids and migrations:
                break
            time.sleep(0.5)
        seen = {e["peer_id"] for e in events if e.get("event") == "telemetry"}
        assert seen >= ids, f"heartbeats from {len(seen & ids)} of 3 islands"
        migrations = [e for e in events if e.get("event") == "migration"]
        assert migrations, "no migration event seen"
        assert {m["dst"] for m in migrations} <= ids and {m["src"] for m in migrations} <= ids
        tele = next(e for e in events if e.get("event") == "telemetry")
        assert {"generation", "evaluations", "best_fitness", "evals_per_s", "cpus", "algorithm"} <= set(tele)
        assert events[0]["event"] == "watch_started"
    finally:
        _stop(watcher, nodes)


def test_watch_pulls_heartbeats_from_islands_that_do_not_gossip_them_yet(tmp_path):
    """With the default network-wide telemetry budget an island heartbeats once per n / 0.05 s; here
    not at all within the test (first heartbeat >= 1800 s away). The watcher still shows every island
    within seconds: it pulls them over /gaia/telemetry/1.0.0."""
    common = ("--problem", "rastrigin", "--dim", "10", "--workers", "0", "--set", "telemetry_interval_s=3600")
    nodes = [NodeProc(tmp_path, "n0", *common, "--seed", "1")]
    watcher = None
    try:
        nodes[0].start()
        boot = nodes[0].wait_event("node_started", 60)["addrs"][0]
        nodes.append(NodeProc(tmp_path, "n1", *common, "--seed", "2", "--bootstrap", boot).start())
        ids = {n.wait_event("node_started", 60)["peer_id"] for n in nodes}
        watcher, events = _watch(boot, "--duration", "60", "--pull-age", "2")
        deadline = time.monotonic() + 60

        def pulled() -> dict[str, list[dict]]:
            out: dict[str, list[dict]] = {}
            for e in list(events):
                if e.get("event") == "telemetry":
                    out.setdefault(e["peer_id"], []).append(e)
            return out

        while time.monotonic() < deadline and not (set(pulled()) >= ids and
                                                   all(len(v) >= 2 for v in pulled().values())):
            time.sleep(0.5)
        got = pulled()
        assert set(got) >= ids, f"heartbeats from {len(set(got) & ids)} of 2 islands"
        assert all(e["via"] == "pull" for v in got.values() for e in v)
        # pulled again once stale: the generation moves on in the view
        assert all(v[-1]["generation"] > v[0]["generation"] for k, v in got.items() if k in ids)
    finally:
        _stop(watcher, nodes)
