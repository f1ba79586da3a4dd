"""Three real `gaia-node start` processes on 127.0.0.1, `gaia-node status`, SIGTERM, restart."""

from __future__ import annotations

import time

import pytest

from cli_helpers import NodeProc, wait_for

pytestmark = pytest.mark.e2e



def test_three_processes_find_each_other_migrate_stop_and_resume(tmp_path):
    common = ("--problem", "rastrigin", "--dim", "10", "--set", "migration.interval=5")
    nodes = [NodeProc(tmp_path, "n0", *common, "--workers", "1", "--seed", "1", "--sigma", "0.3")]
    try:
        nodes[0].start()
        started = nodes[0].wait_event("node_started", 60)
        boot = started["addrs"][0]
        assert boot.startswith("/ip4/127.0.0.1/tcp/") and started["peer_id"] in boot
        for i, sigma in ((1, "0.8"), (2, "1.5")):
            nodes.append(NodeProc(tmp_path, f"n{i}", *common, "--workers", "0", "--seed", str(i + 1),
                                  "--sigma", sigma, "--bootstrap", boot).start())
        ids = [n.wait_event("node_started", 60)["peer_id"] for n in nodes]
        t0 = time.monotonic()

        def all_connected():
            sts = [n.status() for n in nodes]
            return sts if all(len(s["peers"]) >= 2 and s["routing_table_size"] >= 2 for s in sts) else None

        statuses = wait_for(all_connected, "every node to have >= 2 peers", 60)
        print(f"all 3 connected {time.monotonic() - t0:.1f} s after the last node_started")
        for s, pid in zip(statuses, ids):
            assert s["peer_id"] == pid
            assert set(s["peers"]) >= set(ids) - {pid}
            assert s["topics"] == [f"/gaia/{s['experiment_id']}/migrants/1", f"/gaia/{s['experiment_id']}/announce/1",
                                   f"/gaia/{s['experiment_id']}/telemetry/1"]
            assert s["island"]["generation"] > 0 and s["island"]["evaluations"] > 0
        assert len({s["experiment_id"] for s in statuses}) == 1

        def accepted():
            sts = [n.status() for n in nodes]
            return sts if sum(s["migrants"]["accepted"] for s in sts) >= 1 else None

        statuses = wait_for(accepted, ">= 1 accepted migrant somewhere", 90)
        assert sum(s["migrants"]["sent"] for s in statuses) >= 1
        for s in statuses:
            assert set(s["migrants"]) >= {"sent", "received", "accepted", "rejected"}
            assert isinstance(s["migrants"]["rejected"], dict)

        # status over libp2p (/gaia/status/1.0.0) from outside
        remote = nodes[1].status("--peer", boot)
        assert remote["peer_id"] == ids[0]

        # SIGTERM: clean exit 0 within 5 s, checkpoint written
        before = {}
        for n, pid in zip(nodes, ids):
            gen = n.status()["island"]["generation"]
            rc, took = n.terminate(timeout_s=10)
            assert rc == 0, n.log_path.read_text()[-2000:]
            assert took < 5.0, f"{n.data_dir.name} took {took:.2f} s to stop"
            assert (n.data_dir / "checkpoint.msgpack").exists()
            before[pid] = n.events("node_stopped")[-1]["generation"]
            assert before[pid] >= gen

        # restart n1 with the same data dir: same peer id, resumes from its checkpoint
        n1 = nodes[1]
        n1.start()
        restarted = n1.wait_event("node_started", 60, after=1)
        assert restarted["peer_id"] == ids[1]
        loaded = n1.wait_event("checkpoint_loaded", 30)
        assert loaded["generation"] == before[ids[1]]
        assert restarted["generation"] == before[ids[1]]
        st = wait_for(lambda: (s := n1.status())["island"]["generation"] > before[ids[1]] and s, "progress", 30)
        assert st["island"]["evaluations"] > 0
        rc, took = n1.terminate(timeout_s=10)
        assert rc == 0 and took < 5.0
    finally:
        for n in nodes:
            n.kill()
