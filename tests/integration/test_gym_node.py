"""A node on a gym:<EnvId> problem: trains, tests its best on fresh episodes against the env's
target, and says in status what its experiment id is made from."""

from __future__ import annotations

import dataclasses

import trio

from gaia_p2p.cli import render_status
from gaia_p2p.node.runtime import Node, run

from swarm_helpers import node_config, wait_until


async def test_a_cartpole_node_trains_and_tests_its_best(tmp_path):
    cfg = node_config(tmp_path, 0, problem="gym:CartPole-v1", popsize=8)
    assert cfg.target == 475.0  # CartPole-v1's registered reward_threshold
    cfg = dataclasses.replace(cfg, target_fitness=20.0, test_episodes=5, test_interval_s=0.0,
                              problem=dataclasses.replace(cfg.problem, max_steps=50))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node: Node = await nursery.start(run, cfg)
            await wait_until(lambda: node.target.last is not None, "a test of the best on fresh episodes", 45, on=(node,))
            assert node.target.last.test_episodes == 5 and 0 < node.target.last.mean <= 50
            s = node.status()
            made = s["experiment"]["made_from"]
            assert (made["problem"], made["env"], made["max_steps"], made["dim"]) == ("gym", "CartPole-v1", 50, 114)
            assert "made from     gym CartPole-v1, env_args {}, obs_norm none, policy mlp 4-16-2 argmax, " \
                   "max_steps 50, dim 114" in render_status(s)
            nursery.cancel_scope.cancel()
