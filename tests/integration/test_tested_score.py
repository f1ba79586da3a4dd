"""Two nodes on a noisy problem (a real gymnasium CartPole, real libp2p hosts on 127.0.0.1): each
tests its resident on fresh episodes before any target (periodic tests, within test_share of its
training episodes), and the tested score travels in the heartbeat, so the other node's status and
network view show and rank by it; a deterministic problem's heartbeat says its best is exact."""

from __future__ import annotations

import dataclasses

import trio

from gaia_p2p.cli import render_status
from gaia_p2p.node.runtime import Node, run

from swarm_helpers import node_config, wait_until


def noisy_config(tmp_path, i, **kw):
    cfg = node_config(tmp_path, i, problem="gym:CartPole-v1", popsize=8, **kw)
    # the target (475) is out of reach at 50 steps: every test here is a periodic one
    return dataclasses.replace(cfg, test_episodes=5, test_interval_s=0.0, test_share=0.5, telemetry_interval_s=0.5,
                               problem=dataclasses.replace(cfg.problem, max_steps=50))


def row_of(node: Node, peer: str) -> dict | None:
    return next((r for r in node.status()["network"]["islands"] if r["peer_id"] == peer), None)


async def test_the_tested_score_is_in_status_and_travels_in_telemetry(tmp_path):
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a: Node = await nursery.start(run, noisy_config(tmp_path, 0))
            b: Node = await nursery.start(run, noisy_config(tmp_path, 1, bootstrap=(a.addrs()[0],)))
            await wait_until(lambda: a.target.last is not None, "A's first test on fresh episodes", 60, on=(a,))
            last = a.status()["target"]["last_test"]
            assert last["why"] == "periodic" and last["test_episodes"] == 5 and last["passed"] is False
            assert 0 < last["mean"] <= 50 and last["estimate"] is not None and last["at"] > 0
            target = a.status()["target"]
            # tests are counted apart from training, within their share of it
            assert 0 < target["test_episodes_used"] <= 0.5 * a.island.episodes_used and target["share"] == 0.5

            await wait_until(lambda: (row_of(b, a.peer_id) or {}).get("tested") is not None,
                             "B to hear A's tested score in a heartbeat", 30, on=(a, b))
            seen = row_of(b, a.peer_id)
            assert seen["exact"] is False and seen["tested"]["episodes"] == 5
            assert seen["tested"]["generation"] <= a.island.generation and seen["tested"]["source"] in ("local", b.peer_id)
            text = render_status(b.status())
            assert "tested          " in text and "network         2 islands" in text
            assert "tested on fresh episodes" in text  # A is tested: the network best is a tested score
            nursery.cancel_scope.cancel()


async def test_a_deterministic_problems_heartbeat_says_exact_and_carries_no_test(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            cfg = dataclasses.replace(node_config(tmp_path, 0), telemetry_interval_s=0.5)
            a: Node = await nursery.start(run, cfg)
            b: Node = await nursery.start(run, dataclasses.replace(
                node_config(tmp_path, 1, bootstrap=(a.addrs()[0],)), telemetry_interval_s=0.5))
            await wait_until(lambda: row_of(b, a.peer_id) is not None, "B to hear A's heartbeat", 30, on=(a, b))
            seen = row_of(b, a.peer_id)
            assert seen["exact"] is True and seen["tested"] is None
            s = b.status()
            assert s["island"]["exact"] is True and s["target"]["share"] == 0.0
            text = render_status(s)
            assert "(exact, from" in text and "\ntested " not in text and "untested" not in text
            nursery.cancel_scope.cancel()


async def test_a_restarted_node_keeps_its_tests_and_their_share(tmp_path):
    cfg = noisy_config(tmp_path, 0)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a: Node = await nursery.start(run, cfg)
            await wait_until(lambda: a.target.last is not None, "A's first test on fresh episodes", 60, on=(a,))
            nursery.cancel_scope.cancel()  # the final checkpoint is written on the way out
        last, used, tests = a.target.last, a.target.episodes_used, dict(a.target.tests)
        async with trio.open_nursery() as nursery:
            b: Node = await nursery.start(run, cfg)
            assert b.target.last == last and b.target.episodes_used == used and b.target.tests == tests
            assert b.status()["target"]["last_test"]["current"] == a.target.is_current(b.island.best_params)
            nursery.cancel_scope.cancel()


async def test_a_pool_member_rests_after_its_test_as_after_its_other_evaluations(tmp_path, monkeypatch):
    """On the duty cycle an island rests once a generation, its test included; a pool member rests
    after each of its evaluations, so its test must bring a rest of its own, for that test's CPU
    (else an emulated member would test at full speed where an island of the same machine does not)."""
    from gaia_p2p.node.evaluator import Evaluator

    tests_cpu: list[float] = []
    rests_cpu: list[float] = []
    call_timed, rest = Evaluator.call_timed, Node.rest

    async def spy_call_timed(self, fn, *args):
        out, cpu = await call_timed(self, fn, *args)
        if getattr(getattr(fn, "func", fn), "__name__", "") == "evaluate_policy":  # a partial, or not
            tests_cpu.append(cpu)
        return out, cpu

    async def spy_rest(self, *, cpu_s, wall_s):
        rests_cpu.append(cpu_s)
        await rest(self, cpu_s=cpu_s, wall_s=wall_s)

    monkeypatch.setattr(Evaluator, "call_timed", spy_call_timed)
    monkeypatch.setattr(Node, "rest", spy_rest)
    cfg = noisy_config(tmp_path, 0)
    cfg = dataclasses.replace(cfg, pool=dataclasses.replace(cfg.pool, name="t"),
                              evaluation=dataclasses.replace(cfg.evaluation, duty_cycle=0.5, duty_clock="cpu"))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a: Node = await nursery.start(run, cfg)
            assert a.member is not None
            await wait_until(lambda: a.target.tests.get("periodic", 0) >= 1, "the member's first test", 60, on=(a,))
            await wait_until(lambda: tests_cpu and tests_cpu[0] in rests_cpu, "the rest after it", 10, on=(a,))
            nursery.cancel_scope.cancel()
    assert tests_cpu[0] > 0
