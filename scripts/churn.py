#!/usr/bin/env python3
"""Churn for longer than CI can afford: N real nodes, random SIGKILL + restart, memory sampled.

    python scripts/churn.py --nodes 6 --duration 180

Node 0 is the bootstrap and stays up; every `--every` seconds a random other node is SIGKILLed and
restarted `--down` seconds later with the same data dir. Reports: crashes of survivors (must be 0),
seconds from restart to being back in every survivor's topic view and to its first migrant, and the
RSS of every long-lived process (node 0 and the never-killed ones) at start and end.
Every process is ended by PID on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gaia_p2p.node.control import query_local_status  # noqa: E402

GAIA = [sys.executable, "-m", "gaia_p2p"]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Node:
    def __init__(self, base: Path, i: int, args: list[str]) -> None:
        self.i, self.dir, self.log_path, self.args = i, base / f"n{i}", base / f"n{i}.log", args
        self.proc: subprocess.Popen | None = None

    def start(self, bootstrap: str | None) -> None:
        extra = ["--bootstrap", bootstrap] if bootstrap else []
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([*GAIA, "start", "--data-dir", str(self.dir), *self.args, *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def status(self) -> dict | None:
        try:  # the control socket directly: a `gaia-node status` process per poll costs ~1 s of CPU
            return query_local_status(self.dir / "control.sock", timeout_s=10)
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if hasattr(self, "log"):
            self.log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--every", type=float, default=15, help="seconds between kills")
    ap.add_argument("--down", type=float, default=3, help="seconds a killed node stays down")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--duty-cycle", type=float, default=None, help="each node's evaluation.duty_cycle (long soaks)")
    ap.add_argument("--out", type=Path, default=None, help="write the RSS series (JSON) here")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="gaia-churn-"))
    (base / "empty.toml").write_text("bootstrap = []\n")
    common = ["--listen", "/ip4/127.0.0.1/tcp/0", "--problem", "rastrigin", "--dim", "10", "--workers", "0",
              "--set", "migration.interval=5", "--set", "telemetry_interval_s=2", "--set", "checkpoint_interval_s=2",
              "--log-format", "json", "--set", "log_interval_s=5", "--set", f"network.bootstrap_file={base / 'empty.toml'}",
              *(["--set", f"evaluation.duty_cycle={a.duty_cycle}"] if a.duty_cycle else [])]
    nodes = [Node(base, i, [*common, "--seed", str(i + 1), "--sigma", str(0.5 + 0.5 * i)]) for i in range(a.nodes)]
    print(f"# python scripts/churn.py --nodes {a.nodes} --duration {a.duration} --every {a.every} "
          f"--down {a.down} --seed {seed}" + (f" --duty-cycle {a.duty_cycle}" if a.duty_cycle else "")
          + f"\n# logs under {base}", flush=True)
    series: list[dict] = []  # (t, RSS of every process that was never killed)
    t_start = time.monotonic()
    killed_ever: set[int] = set()
    rejoin, first_migrant, kills = [], [], 0
    try:
        nodes[0].start(None)
        boot = None
        for _ in range(600):
            st = nodes[0].status()
            if st:
                boot = st["addrs"][0]
                break
            time.sleep(0.1)
        assert boot, "node 0 did not start"
        for n in nodes[1:]:
            n.start(boot)
        time.sleep(5)
        rss0 = {n.i: rss_mb(n.proc.pid) for n in nodes}
        t_end = time.monotonic() + a.duration
        while time.monotonic() < t_end:
            time.sleep(a.every)
            victim = nodes[rnd.randrange(1, a.nodes)]
            st = victim.status() or {}
            pid = st.get("peer_id")
            victim.kill()
            kills += 1
            killed_ever.add(victim.i)
            time.sleep(a.down)
            t0 = time.monotonic()
            victim.start(boot)
            others = [n for n in nodes if n is not victim]
            back = got = None
            while time.monotonic() - t0 < 60 and (back is None or got is None):
                sts = [o.status() for o in others]
                if back is None and pid and all(s and pid in s["topic_peers"] for s in sts):
                    back = time.monotonic() - t0
                vs = victim.status()
                if got is None and vs and vs["migrants"]["received"] > 0:
                    got = time.monotonic() - t0
                time.sleep(0.3)
            rejoin.append(back)
            first_migrant.append(got)
            series.append({"t": round(time.monotonic() - t_start, 1), "kills": kills,
                           "rss_mb": {f"n{n.i}": round(rss_mb(n.proc.pid), 1) for n in nodes if n.i not in killed_ever}})
            dead = [n.i for n in nodes if n.proc.poll() is not None]
            print(f"kill {kills}: n{victim.i} back in every view after {back and round(back, 1)} s, first migrant "
                  f"after {got and round(got, 1)} s; exited processes: {dead}", flush=True)
        survivors = [n for n in nodes if n.i not in killed_ever]
        if a.out:
            a.out.write_text(json.dumps({"seed": seed, "nodes": a.nodes, "duration": a.duration,
                                         "series": series}, indent=1))
        if len(series) >= 4:  # growth over the second half: what a leak would show
            half = series[len(series) // 2:]
            for n in survivors:
                k = f"n{n.i}"
                pts = [(x["t"], x["rss_mb"][k]) for x in half if k in x["rss_mb"]]
                if len(pts) >= 2:
                    (t0_, r0), (t1_, r1) = pts[0], pts[-1]
                    print(f"{k}: RSS {r0:.0f} -> {r1:.0f} MB over the second half "
                          f"({(r1 - r0) / max(t1_ - t0_, 1e-9) * 3600:+.1f} MB/hour)")
        crashes = [n.i for n in nodes if n.proc.poll() is not None]
        print("\n| long-lived node | RSS at start (MB) | RSS at end (MB) |\n|---|---|---|")
        for n in survivors:
            print(f"| n{n.i} | {rss0[n.i]:.0f} | {rss_mb(n.proc.pid):.0f} |")
        ok = [x for x in rejoin if x is not None]
        okm = [x for x in first_migrant if x is not None]
        print(f"\nkills {kills}; crashed processes {crashes}; rejoin s: median "
              f"{sorted(ok)[len(ok) // 2] if ok else None} (max {max(ok) if ok else None}, "
              f"{len(rejoin) - len(ok)} not within 60 s); first migrant s: median "
              f"{sorted(okm)[len(okm) // 2] if okm else None} (max {max(okm) if okm else None})")
        return 0 if not crashes else 1
    finally:
        for n in nodes:
            n.kill()


if __name__ == "__main__":
    sys.exit(main())
