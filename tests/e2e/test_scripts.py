"""The launch and benchmark scripts run end to end on a tiny budget (their numbers live in docs/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_swarm_script_starts_and_stops_every_node(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "swarm.py"), "--nodes", "3", "--problem", "sphere",
                        "--dim", "5", "--workers", "0", "--duration", "8", "--base-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "exit codes [0, 0, 0]" in r.stdout
    assert r.stdout.count("node_started") == 3
    for i in range(3):
        assert (tmp_path / f"n{i}" / "checkpoint.msgpack").exists()


def test_bench_islands_quick(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_islands.py"), "--quick", "--problem", "sphere",
                        "--dim", "5", "--arms", "central,swarm,control", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    table = (tmp_path / "sphere-quick.md").read_text()
    assert table.count("\n| ") >= 4  # header + 3 arms
    assert (tmp_path / "sphere-quick.png").stat().st_size > 1000


def test_bench_envs_quick(tmp_path):
    """scripts/bench_envs.py --quick (CartPole-v1): a node and both baselines train and are tested (the n4
    arm is bench_islands' own path, run by test_bench_islands_quick)."""
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_envs.py"), "--quick", "--arms", "n1,cma,oes",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    table = (tmp_path / "envs-quick.md").read_text()
    assert "target 200" in table and table.count("\n| ") >= 4  # header + 3 arms
    runs = json.loads((tmp_path / "envs-quick.json").read_text())["runs"]
    assert [r["arm"] for r in runs] == ["n1", "cma", "oes"]
    assert all(r["episodes_total"] > 0 and r["env"] == "CartPole-v1" for r in runs)
    assert [r["nodes"] for r in runs] == [1, 0, 0] and all(r["env_steps"] > 0 for r in runs[1:])


def test_scale_script_measures_a_small_swarm(tmp_path):
    """scripts/scale.py on 3 processes: every node reports traffic and CPU, the JSON has them all."""
    import json

    out = tmp_path / "scale"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "scale.py"), "--nodes", "3", "--duration", "15",
                        "--warmup", "3", "--out", str(out)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["nodes"] == 3 and len(res["per_node"]) == 3 and not res["crashed"]
    for node in res["per_node"]:
        assert node["bytes_per_s"] > 0 and node["cpu_process"] > 0
        assert "/meshsub/1.1.0" in node["by_protocol_per_s"]
    assert res["rt90_after_last_join_s"] is not None  # 3 nodes find each other


def test_join_script_runs_both_modes(tmp_path):
    """scripts/join.py on a tiny network: both modes run, every process is stopped, JSON is written."""
    out = tmp_path / "join.json"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "join.py"), "--nodes", "2", "--mature", "3",
                        "--trials", "1", "--watch", "8", "--dim", "5", "--out", str(out)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "# with fetch:" in r.stdout and "# without fetch:" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["fetch"] for row in rows] == [True, False]
    assert rows[1]["elite_fetch"].get("fetched", 0) == 0  # migration.fetch=false asked nobody


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_islands", REPO / "scripts" / "bench_islands.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_islands"] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    return bench


def test_bench_islands_scaling_summary():
    """The monotone verdicts: strict, with ties, or not; an unsolved run counts as the cap."""
    import argparse

    bench = _bench_module()
    Run = bench.Run
    solve = {"n1": [None, 200.0, 300.0], "n2": [150.0, 200.0, None], "n4": [100.0, 120.0, 90.0]}
    runs = [Run(arm=arm, seed=s + 1, nodes=bench.scale_arm(arm), solved=t is not None, wall_to_solve_s=t)
            for arm, ts in solve.items() for s, t in enumerate(ts)]
    md = bench.scaling_summary(runs, argparse.Namespace(problem="lunarlander", max_wall=360.0), checkpoints=2)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
            if line.startswith("| ") and not line.startswith("| |")}
    assert rows["seed 1"] == ["360*", "150.0", "100.0", ""]
    assert rows["**median**"] == ["300", "200", "100", "yes"]  # n1: 200, 300, 360 (cap)
    assert rows["solved by 180 s"] == ["0 of 3", "1 of 3", "3 of 3", "yes"]
    assert rows["solved by 360 s"] == ["2 of 3", "2 of 3", "3 of 3", "with ties"]

    curves = {"n1": [(10.0, 1, -50.0), (20.0, 2, -5.0)], "n2": [(10.0, 1, -40.0), (20.0, 2, -9.0)]}
    runs = [Run(arm=arm, seed=1, nodes=bench.scale_arm(arm), best_estimate=c[-1][2], curve=c) for arm, c in curves.items()]
    md = bench.scaling_summary(runs, argparse.Namespace(problem="rastrigin", max_wall=20.0), checkpoints=2)
    assert "| median at 10 s | -50.00 | -40.00 | yes |" in md
    assert "| median at 20 s | -5.00 | -9.00 | **no** |" in md
    assert bench.scaling_summary(runs[:1], argparse.Namespace(problem="rastrigin", max_wall=20.0)) == ""


def test_bench_islands_wire_by_protocol():
    """Each protocol's payload counts once (a node's counter holds what it sent and received), per
    evaluation; what the TCP sockets carried beyond it is framing."""
    bench = _bench_module()
    node = {"bytes_in": 700, "bytes_out": 700, "copies_in": 0, "network_s": 1.0, "uptime_s": 100.0, "evaluations": 10,
            "by_protocol": {"/gaia/pool/results/1.0.0": 800, "/meshsub/1.1.0": 400}}
    md = bench.wire_table([bench.Run(arm="d2", seed=1, nodes=2, wire=[node, node])])
    assert "| d2 | 2 | 20 | 70 | 0.00 | 1.00 (1.00-1.00) |" in md
    assert "| /gaia/pool/results/1.0.0 | 40 |" in md and "| /meshsub/1.1.0 | 20 |" in md
    assert "| framing and handshakes | 10 |" in md


def test_bench_islands_presets():
    """n<K> arms: "mixed" cycles the presets, "default" gives every node the default CMA-ES settings."""
    bench = _bench_module()

    def opts(flags: list[str]) -> tuple[str, str, str]:
        duty = next(f.partition("=")[2] for f in flags if f.startswith("evaluation.duty_cycle="))
        return flags[flags.index("--optimizer") + 1], flags[flags.index("--sigma") + 1], duty

    mixed = [opts(f) for f in bench.arm_nodes("n8", 4, "lunarlander", 2, 0.12)]
    default = [opts(f) for f in bench.arm_nodes("n8", 4, "lunarlander", 2, 0.12, "default")]
    assert len(mixed) == len(default) == 8
    assert set(default) == {("cmaes", "0.5", "0.12")}
    ladder = bench.arm_nodes("n8", 4, "rastrigin", 2, 0.1, "ladder", 14)
    assert [f[f.index("--popsize") + 1] for f in ladder] == ["14", "28", "56", "112", "224", "448", "896", "896"]
    assert {opts(f)[:2] for f in ladder} == {("cmaes", "0.5")}
    assert mixed[0] == ("cmaes", "0.5", "0.12") and {m[0] for m in mixed} == {"cmaes", "openai-es"}


def test_bench_islands_pool_arms():
    """p<K> and d<K> are pools (d: results over direct streams), n<K> islands."""
    bench = _bench_module()
    assert bench.pool_flags("n8", 11, 32, None) == []
    assert bench.scale_arm("d8k") == 8 and bench.scale_arm("n8k") is None and bench.scale_arm("d4s") == 4
    duties = [f[f.index("--set") + 1] for f in bench.arm_nodes("d4s", 4, "lunarlander", 2, 0.12, "default")]
    assert duties == ["evaluation.duty_cycle=0.12"] * 3 + ["evaluation.duty_cycle=0.03"]
    assert bench.pool_flags("d8k", 11, 32, None) == ["--pool", "bench-s11", "--popsize", "256",
                                                    "--set", "pool.transport=direct"]
    assert bench.pool_flags("p8", 11, 32, "k") == ["--pool", "bench-s11", "--popsize", "256"]
    assert bench.pool_flags("d4", 12, 32, None) == ["--pool", "bench-s12", "--popsize", "32",
                                                   "--set", "pool.transport=direct"]


def test_bench_islands_splits_episodes_to_solve_into_generations_and_their_cost():
    """An episodes ratio is the seed's search (generations: n1's and the pools' differ) times what
    a generation cost; n<K> islands have no one generation and are left out."""
    bench = _bench_module()
    Run = bench.Run
    runs = [Run(arm="n1", seed=1, nodes=1, solved=True, episodes_to_solve=3300, node0=[(0, 0.0), (100, 250.0)]),
            Run(arm="d8", seed=1, nodes=8, solved=True, episodes_to_solve=7800, node0=[(0, 0.0), (200, 100.0)]),
            Run(arm="n8", seed=1, nodes=8, solved=True, episodes_to_solve=9000, node0=[(0, 0.0), (30, 60.0)]),
            Run(arm="n1", seed=2, nodes=1, solved=False, episodes_total=4000, node0=[(0, 0.0), (125, 400.0)]),
            Run(arm="d8", seed=2, nodes=8, solved=True, episodes_to_solve=3900, node0=[(0, 0.0), (100, 50.0)])]
    md = bench.search_and_cost(runs)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
            if line.startswith("| ") and not line.startswith("| |")}
    assert "| | n1 | d8 |" in md  # no n8 column
    assert rows["seed 1"] == ["100 (33.0, 2.50 s)", "200 (39.0, 0.50 s)"]
    assert rows["seed 2"] == ["125* (32.0, 3.20 s)", "100 (39.0, 0.50 s)"]
    assert rows["**median generations to solve (solved runs)**"] == ["100", "150"]
    assert rows["**median episodes per generation**"] == ["32.5", "39.0"]


def test_bench_islands_pool_pace_compares_pools_at_one_generation():
    bench = _bench_module()
    Run = bench.Run
    node0 = {"p1": [(1, 0.0), (40, 40.0), (50, 50.0)], "d2": [(1, 0.0), (50, 25.0), (60, 30.0)],
             "d8": [(1, 0.0), (50, 10.0)], "n1": [(1, 0.0), (50, 5.0)]}
    runs = [Run(arm=arm, seed=3, nodes=bench.scale_arm(arm), node0=pts) for arm, pts in node0.items()]
    md = bench.pool_pace(runs)
    assert "| | p1 | d2 | d8 |" in md  # islands are not pools
    assert "| seed 3, generation 50 | 50.0 s (1.00x) | 25.0 s (2.00x) | 10.0 s (5.00x) |" in md, md
    assert "| **median speedup** | 1.00x | 2.00x | 5.00x |" in md
    assert bench.pool_pace([r for r in runs if r.arm != "p1"]) == ""


def test_bench_pool_lies_catches_a_liar_that_lies_on_every_result():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_pool_lies.py"), "--trials", "3", "--sizes", "3",
                        "--rates", "1", "--check-share", "0.3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    row = next(line for line in r.stdout.splitlines() if line.startswith("| 3 | 1 |"))
    assert "| 3 of 3 |" in row, row


def test_pool_faults_script_kills_a_member_and_a_joiner_catches_up():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "pool_faults.py"), "--members", "3", "--problem", "sphere",
                        "--popsize", "8", "--duty", "0.2", "--before", "4", "--join-after", "2", "--after", "6"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = dict(line.strip("|").split("|")[:2] for line in r.stdout.splitlines() if line.startswith("| ") and "---" not in line)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["joiner: start to log replayed, s"] != "-" and rows["joiner: start to its first own evaluations, s"] != "-", r.stdout
    assert rows["exit codes (SIGTERM at the end; the killed one -9)"] == "[0, 0, -9, 0]", r.stdout
