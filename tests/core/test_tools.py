"""``gaia-node plot | replay | evaluate`` (gaia_p2p/tools/): on synthetic logs, on logs and checkpoints of
real ``gaia-node start`` runs, and on bad input (one line on stderr, exit 2).

The commands run in-process through ``cli.main`` with ``EXTRA_COMMANDS`` naming the tool modules,
so these tests pass whether or not cli.py lists them yet.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import numpy as np
import pytest

from gaia_p2p import cli
from gaia_p2p.core import codec
from gaia_p2p.core.experiment import ProblemConfig, experiment_id
from gaia_p2p.core.types import Elite
from gaia_p2p.problems.functions import sphere
from gaia_p2p.problems.lunar import param_count, rollout_lunar
from gaia_p2p.problems.policy_eval import EVAL_SEED_BASE, evaluate_policy
from gaia_p2p.tools.plot import network_best, parse_logs, plot_logs

TOOLS = ("gaia_p2p.tools.plot", "gaia_p2p.tools.replay", "gaia_p2p.tools.evaluate")
START_TIMEOUT_S = 60
LUNAR_DIM = param_count((8, 16, 4))


@pytest.fixture(autouse=True)
def _tool_commands(monkeypatch):
    monkeypatch.setattr(cli, "EXTRA_COMMANDS", tuple(dict.fromkeys((*cli.EXTRA_COMMANDS, *TOOLS))))


def gaia(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``gaia-node ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:  # argparse usage errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, code: int = 2) -> str:
    assert rc == code, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- runs


def start_node(tmp: Path, name: str, *args: str) -> tuple[Path, Path]:
    """One ``gaia-node start`` run to completion; returns (data dir, JSON log)."""
    empty = tmp / "no_bootstrap.toml"
    empty.write_text("bootstrap = []\n")
    data, log = tmp / name, tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "gaia_p2p", "start", "--workers", "0", "--listen", "/ip4/127.0.0.1/tcp/0",
             "--data-dir", str(data), "--log-format", "json", "--set", "log_interval_s=0", "--set", f"network.bootstrap_file={empty}",
             *args], stdout=subprocess.DEVNULL, stderr=f, env=env, timeout=START_TIMEOUT_S)
    assert proc.returncode == 0, log.read_text()[-2000:]
    return data, log


@pytest.fixture(scope="module")
def sphere_run(tmp_path_factory) -> tuple[Path, Path]:
    return start_node(tmp_path_factory.mktemp("sphere"), "node", "--problem", "sphere", "--set", "max_generations=30")


@pytest.fixture(scope="module")
def lunar_run(tmp_path_factory) -> tuple[Path, Path]:
    # migration.interval 1: a noisy island picks its resident in assessment rounds, one per interval
    return start_node(tmp_path_factory.mktemp("lunar"), "node", "--problem", "lunarlander", "--set", "max_generations=2",
                      "--popsize", "8", "--set", "migration.interval=1")


# ------------------------------------------------------------------------------------------- plot


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def write_synthetic_log(path: Path, n_islands: int = 3, generations: int = 40, seed: int = 1) -> int:
    """A merged JSON log of ``n_islands`` LunarLander islands; returns the number of migrations."""
    rng = random.Random(seed)
    t0 = 1_760_000_000.0
    peers = [f"12D3KooWSynthetic{i:02d}{'x' * 30}isl{i:05d}" for i in range(n_islands)]
    lines: list[dict] = []
    for i, p in enumerate(peers):
        lines.append({"peer_id": p, "problem": "lunarlander", "event": "node_started", "island_id": p[-8:],
                      "level": "info", "timestamp": _iso(t0 + 0.1 * i)})
    best = [-250.0 + 30 * i for i in range(n_islands)]
    evals = [0] * n_islands
    n_mig = 0
    for g in range(1, generations + 1):
        for i, p in enumerate(peers):
            t = t0 + 1 + g * (0.5 + 0.25 * i)
            evals[i] += 35
            best[i] += rng.uniform(0, 8)
            if g % 10 == 0 and i == (g // 10) % n_islands:
                new = max(best) + 5
                lines.append({"src": peers[(i + 1) % n_islands], "generation": g, "fitness": new,
                              "replaced_fitness": best[i], "event": "migrant_accepted", "island_id": p[-8:],
                              "level": "info", "timestamp": _iso(t - 0.01)})
                best[i] = new
                n_mig += 1
            lines.append({"generation": g, "evaluations": evals[i], "best_fitness": best[i],
                          "mean_fitness": best[i] - 80, "sigma": 0.4, "event": "generation_completed",
                          "island_id": p[-8:], "level": "info", "timestamp": _iso(t)})
    lines.sort(key=lambda d: d["timestamp"])
    with open(path, "w") as f:
        f.write("a line that is not JSON\n")
        f.write('{"event": "generation_completed", "generation": 1}\n')  # lacks keys: skipped
        for d in lines:
            f.write(json.dumps(d) + "\n")
    return n_mig


def test_plot_synthetic_log(tmp_path):
    from PIL import Image

    log = tmp_path / "swarm.log"
    n_mig = write_synthetic_log(log)
    out = tmp_path / "fitness.png"
    summary = plot_logs([log], out)
    assert summary["n_series"] == 3
    assert summary["n_points"] == 3 * 40
    assert summary["n_migrations"] == n_mig > 0
    assert summary["solved"] == 200.0  # lunarlander: the solved line is drawn
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 800 and img.height > 300
    assert plot_logs([log], tmp_path / "b.png", solved="none")["solved"] is None


def test_plot_cli_prints_one_summary_line(tmp_path, capsys):
    log = tmp_path / "swarm.log"
    write_synthetic_log(log)
    out = tmp_path / "x.png"
    rc, stdout, err = gaia(capsys, "plot", str(log), "-o", str(out), "--solved", "150")
    assert rc == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and "3 islands" in lines[0] and str(out) in lines[0], stdout
    assert out.stat().st_size > 10_000


def test_network_best_and_watch_captures(tmp_path):
    """watch --json captures (telemetry + migration lines); the network best runs over the sum of evaluations."""
    cap = tmp_path / "watch.ndjson"
    a, b = "12D3KooWAAAAaaaaaaaa", "12D3KooWBBBBbbbbbbbb"
    rows = [
        {"event": "watch_started", "experiment_id": "0" * 32, "peer_id": "12D3KooWwatcher", "time": 99.0},
        {"event": "telemetry", "peer_id": a, "generation": 1, "evaluations": 10, "best_fitness": -5.0, "time": 100.0},
        {"event": "telemetry", "peer_id": b, "generation": 1, "evaluations": 20, "best_fitness": -3.0, "time": 101.0},
        {"event": "telemetry", "peer_id": a, "generation": 2, "evaluations": 30, "best_fitness": -1.0, "time": 102.0},
        {"event": "telemetry", "peer_id": a, "generation": 2, "evaluations": 30, "best_fitness": -1.0,
         "time": 102.5},  # the same point again: counted once
        {"event": "telemetry", "peer_id": b, "generation": 2, "evaluations": 40, "best_fitness": None,
         "time": 103.0},  # no best yet: skipped
        {"event": "migration", "src": b, "dst": a, "generation": 2, "gain": 2.0, "time": 101.5},
        {"event": "migration", "src": b, "dst": a, "generation": 2, "gain": 2.0, "time": 101.6},  # repeated
        {"event": "telemetry", "peer_id": "x", "generation": 3},  # lacks keys
    ]
    cap.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    parsed = parse_logs([cap])
    assert sorted(parsed.series) == ["aaaaaaaa", "bbbbbbbb"]  # island id: last 8 chars of the peer id
    assert sum(len(s.points) for s in parsed.series.values()) == 3
    assert [m[1] for m in parsed.series["aaaaaaaa"].migrations] == [b]
    xs, ys = network_best(parsed.series.values())
    assert xs == [10, 30, 50] and ys == [-5.0, -3.0, -1.0]
    summary = plot_logs([cap], tmp_path / "t.png")
    assert summary["n_series"] == 2 and summary["n_migrations"] == 1
    assert summary["solved"] is None  # problem unknown: no solved line


def test_plot_real_log(sphere_run, tmp_path):
    _, log = sphere_run
    summary = plot_logs([log], tmp_path / "sphere.png")
    assert summary["n_series"] == 1
    assert summary["n_points"] == 30  # log_interval_s 0: every generation logged
    assert summary["problems"] == ["sphere"] and summary["solved"] is None


def test_plot_bad_input_exits_2(tmp_path, capsys):
    line = one_line_error(*gaia(capsys, "plot", str(tmp_path / "missing.log"), "-o", str(tmp_path / "a.png"))[::2])
    assert "missing.log" in line and line.startswith("gaia-node plot: ")
    junk = tmp_path / "junk.log"
    junk.write_text('not json\n{"event": "node_stopped"}\n[1, 2]\n')
    line = one_line_error(*gaia(capsys, "plot", str(junk), "-o", str(tmp_path / "a.png"))[::2])
    assert "no usable events" in line
    log = tmp_path / "ok.log"
    write_synthetic_log(log)
    line = one_line_error(*gaia(capsys, "plot", str(log), "--solved", "high", "-o", str(tmp_path / "a.png"))[::2])
    assert "--solved" in line
    assert not (tmp_path / "a.png").exists()


# -------------------------------------------------------------------------------- evaluate / replay


def test_evaluate_policy_is_deterministic():
    params = np.random.default_rng(1234).normal(0.0, 0.5, LUNAR_DIM)
    a = evaluate_policy(params, (16,), episodes=6, seed0=EVAL_SEED_BASE)
    b = evaluate_policy(params.copy(), [16], episodes=6, seed0=EVAL_SEED_BASE)
    assert a == b
    assert a["episodes"] == 6 and len(a["returns"]) == 6
    assert a["min"] <= a["mean"] <= a["max"] and a["std"] >= 0 and 0.0 <= a["solved_share"] <= 1.0
    ref = rollout_lunar(params[None, :], [EVAL_SEED_BASE + i for i in range(6)], (16,))
    assert a["returns"] == [float(x) for x in ref.returns[0]]
    assert evaluate_policy(params, (16,), episodes=6, seed0=0)["returns"] != a["returns"]


def test_evaluate_lunar_checkpoint(lunar_run, capsys):
    data, _ = lunar_run
    rc, out, err = gaia(capsys, "evaluate", "--data-dir", str(data), "--episodes", "5", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["problem"] == "lunarlander" and res["hidden"] == [16] and res["generation"] == 2
    assert res["episodes"] == 5 and res["seed0"] == EVAL_SEED_BASE and len(res["returns"]) == 5
    rc, out, err = gaia(capsys, "evaluate", "--checkpoint", str(data / "checkpoint.msgpack"), "--episodes", "5")
    assert rc == 0, err
    assert f"mean {res['mean']:.2f}" in out and "% of episodes >= 200" in out


def test_evaluate_sphere_checkpoint_prints_fitness(sphere_run, capsys):
    data, _ = sphere_run
    rc, out, err = gaia(capsys, "evaluate", "--data-dir", str(data), "--json")
    assert rc == 0, err
    res = json.loads(out)
    ck = msgpack.unpackb((data / "checkpoint.msgpack").read_bytes(), raw=False, strict_map_key=False)
    params = np.frombuffer(ck["island"]["best_params"], dtype="<f8")
    assert res["problem"] == "sphere" and res["fitness"] == pytest.approx(float(sphere(params[None])[0]))
    assert res["fitness"] == pytest.approx(ck["island"]["best_fitness"], rel=1e-6)


def test_a_pool_member_that_kept_no_resident_says_its_checkpoint_is_not_the_pools_best(sphere_run, tmp_path,
                                                                                       capsys):
    """Only the keeper holds a pool's best (core/pool.py Pool.keeper): a non-keeper's checkpoint
    holds a resident it kept earlier, or none, and whoever evaluates it is told so."""
    data, _ = sphere_run
    ck = msgpack.unpackb((data / "checkpoint.msgpack").read_bytes(), raw=False, strict_map_key=False)
    keeper = "12D3KooW" + "K" * 44
    for who, told in ((keeper, False), ("12D3KooW" + "O" * 44, True)):
        member = tmp_path / who[-4:]
        member.mkdir()
        (member / "checkpoint.msgpack").write_bytes(msgpack.packb(
            {**ck, "peer_id": who, "pool": {"pid": "3f2a91c04b7de815", "log": [], "evicted": [], "keeper": keeper}},
            use_bin_type=True))
        rc, out, err = gaia(capsys, "evaluate", "--data-dir", str(member))
        assert rc == 0, err
        assert (f"not its pool's best: that is kept by ..{keeper[-8:]}" in out + err) is told, out + err


def test_replay_lunar_checkpoint_writes_a_gif(lunar_run, tmp_path, capsys):
    from PIL import Image

    data, _ = lunar_run
    gif = tmp_path / "lander.gif"
    rc, out, err = gaia(capsys, "replay", "--data-dir", str(data), "--episodes", "1", "--every", "3",
                        "-o", str(gif), "--seed", "5")
    assert rc == 0, err
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.n_frames > 1
    assert gif.stat().st_size < 5_000_000
    ep = [line for line in out.splitlines() if line.startswith("episode 1/1")]
    assert len(ep) == 1, out
    # The replayed episode is the one `evaluate --seed 5 --episodes 1` scores.
    rc, out2, err = gaia(capsys, "evaluate", "--data-dir", str(data), "--episodes", "1", "--seed", "5", "--json")
    res = json.loads(out2)
    assert f"return {res['returns'][0]:8.2f}" in ep[0] and f"length {res['lengths'][0]} steps" in ep[0]


def test_elite_file_and_hidden(lunar_run, tmp_path, capsys):
    data, _ = lunar_run
    ck = msgpack.unpackb((data / "checkpoint.msgpack").read_bytes(), raw=False, strict_map_key=False)
    params = np.frombuffer(ck["island"]["best_params"], dtype="<f8").astype(np.float32)
    elite = Elite(experiment_id=experiment_id(ProblemConfig()), generation=2, fitness=-100.0, seeds=(1,),
                  params=params, algorithm="cmaes", settings={})
    f = tmp_path / "best.elite"
    f.write_bytes(codec.encode_elite(elite))
    rc, out, err = gaia(capsys, "evaluate", "--elite", str(f), "--episodes", "3", "--json")
    assert rc == 0, err
    assert json.loads(out)["episodes"] == 3
    line = one_line_error(*gaia(capsys, "evaluate", "--elite", str(f), "--hidden", "32")[::2])
    assert "--hidden" in line and "212" in line


def test_evaluate_and_replay_bad_input_exit_2(sphere_run, tmp_path, capsys):
    sphere_data, _ = sphere_run
    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"\xc1\xff not msgpack at all")
    not_ck = tmp_path / "other.msgpack"
    not_ck.write_bytes(msgpack.packb({"hello": 1}))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    no_best = tmp_path / "no_best.msgpack"
    no_best.write_bytes(msgpack.packb({"magic": "gaia-checkpoint", "version": 1, "problem": ProblemConfig().canonical(),
                                       "island": {"generation": 0, "best_params": None}}))
    cases = [
        (("evaluate", "--checkpoint", str(tmp_path / "nope.msgpack")), "no such file"),
        (("evaluate", "--checkpoint", str(garbage)), "corrupt"),
        (("evaluate", "--checkpoint", str(not_ck)), "not a gaia-node checkpoint"),
        (("evaluate", "--data-dir", str(empty_dir)), "no checkpoint.msgpack"),
        (("evaluate", "--checkpoint", str(no_best)), "no best policy yet"),
        (("evaluate", "--elite", str(garbage)), "not a valid elite"),
        (("replay", "--data-dir", str(sphere_data), "-o", str(tmp_path / "x.gif")), "not a LunarLander policy"),
        (("replay", "--checkpoint", str(garbage), "-o", str(tmp_path / "x.gif")), "corrupt"),
        (("evaluate",), "one of the arguments"),  # argparse: a source is required
        (("replay", "--data-dir", str(sphere_data), "--every", "0"), "--every"),
    ]
    for argv, expected in cases:
        rc, _, err = gaia(capsys, *argv)
        line = one_line_error(rc, err)
        assert expected in line, (argv, line)
    assert not (tmp_path / "x.gif").exists()


def test_tool_modules_import_nothing_heavy():
    probe = ("import sys, gaia_p2p.tools.plot, gaia_p2p.tools.replay, gaia_p2p.tools.evaluate; "
             "heavy = [m for m in ('matplotlib', 'gymnasium', 'PIL', 'pygame', 'trio', 'libp2p', 'numpy', "
             "'structlog', 'msgpack') if m in sys.modules]; "
             "print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", proc.stdout


def test_plot_event_names_are_those_of_logs_py():
    from gaia_p2p import logs
    from gaia_p2p.tools import plot

    assert (plot.NODE_STARTED, plot.GENERATION_COMPLETED, plot.MIGRANT_ACCEPTED) == (
        logs.NODE_STARTED, logs.GENERATION_COMPLETED, logs.MIGRANT_ACCEPTED)


def test_replay_bounds_the_frames_it_keeps(tmp_path, monkeypatch):
    """Past MAX_FRAMES, every other frame is dropped (episode ends kept) and playback time is preserved."""
    from PIL import Image

    from gaia_p2p.tools import replay

    monkeypatch.setattr(replay, "MAX_FRAMES", 20)
    params = np.zeros(LUNAR_DIM)
    params[-4:] = [0.0, 0.0, 1.0, 0.0]  # output bias only: always fire the main engine
    res = replay.replay(params, (16,), tmp_path / "up.gif", episodes=2, seed=0, every=1)
    ref = evaluate_policy(params, (16,), episodes=2, seed0=0)
    assert res["returns"] == ref["returns"] and res["lengths"] == ref["lengths"]
    assert res["frames"] <= 20 + 1 and res["every"] > 1
    with Image.open(tmp_path / "up.gif") as img:
        assert img.n_frames > 1
