"""Network-wide budgets: the per-node period stretches with the number of peers (flat bytes in N)."""

from __future__ import annotations

import pytest

from gaia_p2p.config import build_config
from gaia_p2p.net.liveness import probe_period


@pytest.mark.parametrize(("n_peers", "expected"), [(0, 5.0), (3, 5.0), (5, 5.0), (39, 39.0), (999, 999.0)])
def test_ping_period_stretches_with_peers(n_peers, expected):
    assert probe_period(5.0, n_peers, 1.0) == expected


def test_ping_period_without_cap_is_the_interval():
    assert probe_period(5.0, 500, 0.0) == 5.0


def test_budget_flags_reach_the_config():
    cfg = build_config(env={"GAIA_MIGRATION_NETWORK_RATE": "0.25"},
                       overrides={"evaluation": {"duty_cycle": 0.2}, "": {"telemetry_rate": 2.0}})
    assert cfg.migration.network_rate == 0.25
    assert cfg.evaluation.duty_cycle == 0.2
    assert cfg.telemetry_rate == 2.0
    defaults = build_config(env={})
    assert defaults.migration.network_rate == 0.5 and defaults.migration.publish_only_new
    assert defaults.evaluation.duty_cycle == 1.0


def test_a_heartbeat_tells_the_three_largest_gains_oldest_first():
    """Telemetry size must not grow with the heartbeat period (which grows with N)."""
    from collections import deque

    from gaia_p2p.core.telemetry import Migration
    from gaia_p2p.node.runtime import ACC_PER_HEARTBEAT, told_accepts

    recent = deque((Migration(f"peer{i}", i, g) for i, g in enumerate([1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 0.5, 0.1])),
                   maxlen=8)
    told = told_accepts(recent)
    assert ACC_PER_HEARTBEAT == 3 and [m.gain for m in told] == [9.0, 8.0, 7.0]
    assert told_accepts(deque()) == () and len(told_accepts(deque(list(recent)[:2]))) == 2


def test_duty_cycle_alone_on_a_machine_is_the_wall_time_rule():
    from gaia_p2p.core.schedule import duty_sleep

    # one worker that got a whole core: CPU = wall
    assert duty_sleep(cpu_s=0.3, wall_s=0.3, duty=0.2, cores=1) == pytest.approx(0.3 * 0.8 / 0.2)
    # two workers, both busy: CPU = 2 x wall, the same rest
    assert duty_sleep(cpu_s=0.6, wall_s=0.3, duty=0.2, cores=2) == pytest.approx(0.3 * 0.8 / 0.2)


def test_duty_cycle_keeps_a_slowed_node_at_its_share():
    """Another process took half the core during the generation: the work (CPU) was the same, the
    wall time doubled. The wall-time rule would rest twice as long, halving the node's share; by
    CPU the whole cycle stays cpu / duty."""
    from gaia_p2p.core.schedule import duty_sleep

    rest = duty_sleep(cpu_s=0.3, wall_s=0.6, duty=0.2, cores=1)
    assert rest == pytest.approx(0.3 / 0.2 - 0.6)
    assert 0.6 + rest == pytest.approx(0.3 / 0.2)  # the share: 0.3 s of CPU per 1.5 s
    # so slow that the compute alone exceeded the cycle: no rest at all, never negative
    assert duty_sleep(cpu_s=0.1, wall_s=2.0, duty=0.2, cores=1) == 0.0


def test_duty_cycle_without_a_cpu_measure_falls_back_to_wall_time():
    from gaia_p2p.core.schedule import duty_sleep

    assert duty_sleep(cpu_s=0.0, wall_s=0.5, duty=0.5, cores=4) == pytest.approx(0.5)


async def test_the_evaluator_counts_the_cpu_of_its_worker_processes_and_threads():
    import numpy as np

    from gaia_p2p.core.experiment import ProblemConfig
    from gaia_p2p.node.evaluator import Evaluator
    from gaia_p2p.problems.policy_eval import evaluate_policy

    p = ProblemConfig(name="lunarlander")
    X = np.random.default_rng(0).normal(0, 0.5, size=(4, p.param_dim))
    for workers in (0, 1):
        ev = Evaluator(p, workers)
        fit = await ev.evaluate(X, (1, 2))
        assert fit.shape == (4,) and ev.cpu_s > 0.0
        before = ev.cpu_s
        res = await ev.call(evaluate_policy, X[0], p.hidden, 3)
        assert res["episodes"] == 3 and ev.cpu_s > before
        assert (ev.thread_cpu_s == ev.cpu_s) if workers == 0 else ev.thread_cpu_s == 0.0
