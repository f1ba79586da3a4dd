"""SIGKILL at arbitrary moments (checkpoints every 0.2 s, so often mid-write) never corrupts the checkpoint."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from cli_helpers import NodeProc
from gaia_p2p.store import DataDir

pytestmark = pytest.mark.e2e


def test_sigkill_never_leaves_a_corrupt_checkpoint_and_restart_resumes(tmp_path):
    seed = random.randrange(1 << 30)
    print(f"random kill times from seed {seed}")
    rnd = random.Random(seed)
    node = NodeProc(tmp_path, "n0", "--problem", "rastrigin", "--dim", "10", "--workers", "0",
                    "--set", "checkpoint_interval_s=0.2", "--seed", "3")
    data = DataDir(node.data_dir)
    generations = []
    try:
        for round_ in range(4):
            node.start()
            started = node.wait_event("node_started", 60, after=round_)
            if round_:
                # resumed: the generation it starts from is the last checkpointed one
                assert started["generation"] == generations[-1]
                # and a temp file the killed predecessor may have left mid-write is gone
                assert not list(node.data_dir.glob("checkpoint.msgpack.tmp-*"))
            node.wait_event("checkpoint_written", 30, after=len(node.events("checkpoint_written")))
            time.sleep(rnd.uniform(0.0, 0.6))
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)
            node.log.close()
            ck = data.read_checkpoint()  # raises CheckpointError if torn
            assert ck is not None and ck["island"]["generation"] > 0
            generations.append(ck["island"]["generation"])
        assert generations == sorted(generations), generations
    finally:
        node.kill()
