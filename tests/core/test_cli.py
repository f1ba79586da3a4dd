"""The real CLI as a subprocess: bad input gives one line on stderr and the documented exit code.

Exit codes (gaia_p2p/errors.py, EXIT_*): 0 ok, 1 runtime failure, 2 usage or config error. No traceback
unless --debug.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT_S = 60


def gaia(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    return subprocess.run([sys.executable, "-m", "gaia_p2p", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["start", "--sigma", "-1"], "island.sigma"),
        (["start", "--sigma", "abc"], "--sigma"),
        (["start", "--topology", "star"], "--topology"),
        (["start", "--bootstrap", "garbage"], "network.bootstrap"),
        (["start", "--config", "/nonexistent.toml"], "/nonexistent.toml"),
        (["start", "--listen", "/ip4/127.0.0.1/udp/1"], "network.listen"),
        (["start", "--set", "network.heartbeat_s=0"], "pass --set network.heartbeat_s=1.0"),
        (["start", "--set", "island.sigmaa=1"], "did you mean island.sigma?"),
        (["start", "--set", "island.sigma"], "KEY=VALUE"),
        (["start", "--sigma", "1", "--set", "island.sigma=2"], "both by --sigma and by --set"),
        (["start", "--duty-cycle", "0.5"], "--duty-cycle -> --set evaluation.duty_cycle=VALUE"),
        (["start", "--no-migration"], "--set migration.enabled=false"),
        (["start", "--no-such-flag"], "see 'gaia-node start --help'"),
        (["start", "--problem", "gym:NoSuchEnv-v1"], "is not a registered gymnasium env"),
        (["start", "--problem", "gym:FrozenLake-v1"], "only Box observations are supported"),
        (["start", "--problem", "no_such_pkg.mod:Thing"], "cannot import no_such_pkg.mod"),
        (["start", "--problem", "sphre"], "did you mean sphere?"),
        (["start", "--set", "network.relay_client=maybe"], "network.relay_client = 'maybe', must be one of auto, on, off"),
        (["start", "--set", "network.relay_circuit_bytes=10"], "network.relay_circuit_bytes"),
    ],
    ids=["sigma-negative", "sigma-not-a-number", "unknown-topology", "bad-bootstrap", "missing-config",
         "udp-listen", "set-out-of-range", "set-unknown-key", "set-no-value", "flag-and-set", "removed-flag",
         "removed-switch", "unknown-flag", "unknown-gym-env", "unsupported-obs-space", "missing-problem-module",
         "misspelt-problem", "relay-client-choice", "relay-circuit-bytes-range"],
)
def test_bad_start_input_exits_2_with_one_line(tmp_path, args, expected):
    line = one_line_error(gaia(*args, cwd=tmp_path), 2)
    assert line.startswith("gaia-node start: "), line
    assert expected in line, line


PEER = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWN6tyKye2UVWbWansfKMpKEz2hSfQh4UKUBRo4YFg2Pmu"


@pytest.mark.parametrize(("args", "expected"), [
    (["--pull-rate", "-1"], "--pull-rate"),
    (["--pull-rate", "nan"], "--pull-rate"),
    (["--pull-age", "0.1"], "--pull-age"),
])
def test_bad_watch_input_exits_2_with_one_line_before_dialing(tmp_path, args, expected):
    line = one_line_error(gaia("watch", "--bootstrap", PEER, *args, cwd=tmp_path), 2)
    assert line.startswith("gaia-node watch: ") and expected in line, line


def test_status_without_a_running_node_exits_1(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    line = one_line_error(gaia("status", "--data-dir", str(data), cwd=tmp_path), 1)
    assert line.startswith("gaia-node status: ") and str(data) in line, line


def test_a_bad_value_in_gaia_toml_names_its_key_and_a_flag_that_exists(tmp_path):
    (tmp_path / "gaia.toml").write_text("[island]\nsigma = -1\n[migration]\ninterval = 10\n")
    line = one_line_error(gaia("start", "--config", "gaia.toml", cwd=tmp_path), 2)
    assert "island.sigma = -1.0" in line and "pass --sigma 0.5 or set [island] sigma in the config file" in line
    assert line.endswith("(value from gaia.toml)"), line
    (tmp_path / "gaia.toml").write_text("[migration]\ninterval = 0\n")
    line = one_line_error(gaia("start", "--config", "gaia.toml", cwd=tmp_path), 2)
    assert "migration.interval = 0" in line and "--set migration.interval=10" in line, line


def test_start_help_reads_in_one_screen_per_group(tmp_path):
    proc = gaia("start", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("\n\n")
    titles = [g.splitlines()[0] for g in groups[2:]]
    for title in ("problem", "island", "network", "evaluation", "data and output"):
        assert any(t.startswith(title) for t in titles), titles
    assert all(len(g.splitlines()) <= 24 for g in groups), [len(g.splitlines()) for g in groups]


def test_help_exits_0(tmp_path):
    for args in (["--help"], ["start", "--help"], ["status", "--help"]):
        proc = gaia(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "usage: gaia-node" in proc.stdout and proc.stderr == ""


def test_no_command_prints_help_and_exits_2(tmp_path):
    proc = gaia(cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: gaia-node" in proc.stdout


def test_corrupt_checkpoint_exits_2_naming_the_file_and_fresh(tmp_path):
    data = tmp_path / "node"
    data.mkdir()
    checkpoint = data / "checkpoint.msgpack"
    garbage = bytes(range(256))[::-1] * 4
    checkpoint.write_bytes(garbage)
    proc = gaia("start", "--data-dir", str(data), "--problem", "sphere", "--listen", "/ip4/127.0.0.1/tcp/0",
                "--workers", "0", "--log-format", "json", cwd=tmp_path)
    line = one_line_error(proc, 2)
    assert str(checkpoint) in line and "--fresh" in line, line
    assert checkpoint.read_bytes() == garbage  # left alone: only --fresh moves it aside


def test_data_dir_in_use_exits_2(tmp_path):
    data = tmp_path / "node"
    data.mkdir()
    fd = os.open(data / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running gaia-node holds it
        proc = gaia("start", "--data-dir", str(data), "--problem", "sphere", "--listen", "/ip4/127.0.0.1/tcp/0",
                    "--workers", "0", "--log-format", "json", cwd=tmp_path)
    finally:
        os.close(fd)
    line = one_line_error(proc, 2)
    assert str(data) in line and "in use" in line, line


def test_status_says_in_words_how_other_nodes_reach_a_private_node():
    from gaia_p2p.cli import reachability_words

    relay = "12D3KooWRelayRelayRelayRelayRelayRelayRelayRelayRe1a1b2c"
    private = {"status": "private", "text": "private (no peer could dial us back; asked 3)"}
    held = {"reachability": private, "connections": {"relay": {"reservations": {relay: 600}}}}
    assert reachability_words(held) == ("private (no peer could dial us back; asked 3); others reach us "
                                        "through relay …1a1b2c")
    alone = {"reachability": private, "connections": {"relay": {"reservations": {}}}}
    assert reachability_words(alone).endswith("no relay reservation yet: other nodes cannot reach us, we can only "
                                              "dial out")
    public = {"reachability": {"status": "public", "text": "public (3 of 3 peers dialled us back)"}}
    assert reachability_words(public) == "public (3 of 3 peers dialled us back)"
