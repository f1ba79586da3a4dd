"""Churn: real node processes SIGKILLed and restarted; survivors keep evolving, the dead leave the
mesh, the restarted come back with the same peer id, resume from their checkpoint and rejoin.

CI runs a small bounded version (4 nodes, 2 kill/restart cycles); the bootstrap node stays up so
restarted nodes can find the others again (its address is the only one they know).
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from cli_helpers import NodeProc, wait_for

pytestmark = pytest.mark.e2e



def test_churn_kill_and_restart(tmp_path):
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    print(f"churn schedule from seed {seed}")
    common = ("--problem", "rastrigin", "--dim", "10", "--workers", "0", "--set", "migration.interval=5",
              "--set", "telemetry_interval_s=1", "--set", "telemetry_rate=100", "--set", "checkpoint_interval_s=1",
              # measured: how soon a restarted node gets migrants when peers publish every interval
              # (with the default "news only" budget a converged swarm may stay quiet for minutes)
              "--set", "migration.network_rate=0", "--set", "migration.publish_only_new=false")
    nodes = [NodeProc(tmp_path, "n0", *common, "--seed", "1")]
    try:
        nodes[0].start()
        boot = nodes[0].wait_event("node_started", 60)["addrs"][0]
        for i in range(1, 4):
            nodes.append(NodeProc(tmp_path, f"n{i}", *common, "--seed", str(i + 1), "--sigma", str(0.5 + i),
                                  "--bootstrap", boot).start())
        ids = [n.wait_event("node_started", 60)["peer_id"] for n in nodes]
        wait_for(lambda: all(len(n.status()["topic_peers"]) >= 3 for n in nodes), "a full mesh of 4", 60)
        rejoin_s, first_migrant_s = [], []
        for cycle in range(2):
            i = rnd.randrange(1, 4)
            victim = nodes[i]
            survivors = [n for j, n in enumerate(nodes) if j != i]
            gens = {n.data_dir.name: n.status()["island"]["generation"] for n in survivors}
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=10)
            victim.log.close()
            # survivors keep evolving and the dead peer leaves their connections and topic view
            wait_for(lambda: all(s.status()["island"]["generation"] > gens[s.data_dir.name] for s in survivors),
                     "survivors to keep making generations", 20)
            wait_for(lambda: all(ids[i] not in s.status()["topic_peers"] for s in survivors),
                     "the dead peer to leave every survivor's topic view", 30)
            ck_gen = victim.events("checkpoint_written")[-1]["generation"]
            n_started = len(victim.events("node_started"))
            t0 = time.monotonic()
            victim.start()
            started = victim.wait_event("node_started", 60, after=n_started)
            assert started["peer_id"] == ids[i]
            assert started["generation"] >= ck_gen  # resumed from (at least) its last checkpoint
            wait_for(lambda: all(ids[i] in s.status()["topic_peers"] for s in survivors),
                     "the restarted node back in every survivor's topic view", 60)
            rejoin_s.append(time.monotonic() - t0)
            wait_for(lambda: victim.status()["migrants"]["received"] > 0, "a migrant reaching it", 60)
            first_migrant_s.append(time.monotonic() - t0)
        print(f"rejoin (process start -> in every survivor's mesh view): {[round(x, 1) for x in rejoin_s]} s; "
              f"first migrant received: {[round(x, 1) for x in first_migrant_s]} s")
        for n in nodes:
            assert n.proc.poll() is None, f"{n.data_dir.name} died: {n.log_path.read_text()[-1500:]}"
    finally:
        for n in nodes:
            n.kill()

