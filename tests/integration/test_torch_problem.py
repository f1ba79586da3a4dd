"""A torch.nn.Module policy (examples/torch_policy) trained by a 2-node in-process swarm on
CartPole: both nodes in one experiment, migrants exchanged, status says what the id is made from."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import trio

pytest.importorskip("torch", reason="torch:* problems need torch; pip install -e '.[torch]'")

from gaia_p2p.cli import render_status  # noqa: E402
from gaia_p2p.core.experiment import experiment_id  # noqa: E402
from gaia_p2p.node.runtime import Node, run  # noqa: E402
from gaia_p2p.problems import torch_policy  # noqa: E402

from swarm_helpers import node_config, wait_until  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torch_policy"
PROBLEM = "torch:gaia_torch_cartpole:make_policy"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    torch_policy.load.cache_clear()
    yield
    torch_policy.load.cache_clear()
    sys.modules.pop("gaia_torch_cartpole", None)


async def test_two_nodes_train_a_torch_module(tmp_path, example):
    def cfg(i: int, bootstrap: tuple[str, ...] = ()):
        c = node_config(tmp_path, i, bootstrap=bootstrap, problem=PROBLEM, popsize=8)
        return dataclasses.replace(
            c, problem=dataclasses.replace(c.problem, max_steps=100),
            migration=dataclasses.replace(c.migration, interval=2),
            evaluation=dataclasses.replace(c.evaluation, device="cpu"))

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a: Node = await nursery.start(run, cfg(0))
            b: Node = await nursery.start(run, cfg(1, (a.addrs()[0],)))
            assert a.exp_id == b.exp_id
            # each island starts from its own factory call's random initialisation, not from zeros
            assert not np.array_equal(a.island.opt.mean, np.zeros(a.island.opt.dim))
            await wait_until(lambda: b.peer_id in a.p2p.topic_peers(a.topic.topic)
                             and a.peer_id in b.p2p.topic_peers(b.topic.topic), "both on the topic", 30)
            await wait_until(lambda: a.island.counters.received + b.island.counters.received >= 1,
                             "a migrant received", 40, on=(a, b))
            await wait_until(lambda: min(a.island.generation, b.island.generation) >= 4, "4 generations each", 30,
                             on=(a, b))
            for node in (a, b):
                s = node.status()
                assert s["experiment"]["id"] == node.exp_id == experiment_id(node.cfg.problem)
                made = s["experiment"]["made_from"]
                assert (made["problem"], made["env"], made["policy"]["class"], made["dim"]) == (
                    "torch", "CartPole-v1", "torch.nn.modules.container.Sequential", 114)
                assert s["migrants"]["rejected"].get("wrong_experiment", 0) == 0
                text = render_status(s)
                assert "made from     torch torch.nn.modules.container.Sequential (architecture " in text, text
                assert node.island.best_fitness >= 8  # CartPole: at least a few steps balanced
            nursery.cancel_scope.cancel()
