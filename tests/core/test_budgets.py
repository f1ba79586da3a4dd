"""Network-wide budgets: the per-node period stretches with the number of peers (flat bytes in N)."""

from __future__ import annotations

import pytest

from gaia_p2p.config import build_config
from gaia_p2p.node.liveness import probe_period


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
