#!/usr/bin/env python3
"""A pool under faults, with real gaia-node processes on 127.0.0.1: a member killed with SIGKILL
mid-run, then a fresh node joining the running pool.

    python scripts/pool_faults.py --members 4 --before 40 --join-after 20 --after 30

Reports, from the first member's log (every generation logged): the median generation before the
kill and the longest generation in the 10 s after it (a dead member's items are helped after a
short wait: the pool must not stall), and for the joiner the seconds from its start to the
replay of the pool's log and to its first own evaluations.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_islands import Node  # scripts/ is on the path when this runs as a script


def stamp(ev: dict) -> float:
    return datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()


class Member(Node):
    """A gaia-node process of bench_islands (start, stop) that keeps every log event."""

    def __init__(self, base: Path, name: str, args: list[str]) -> None:
        super().__init__(base, name, args)
        self.events: list[dict] = []

    def poll(self) -> None:
        with open(self.log_path, "rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self.pos += len(complete)
        for line in complete.splitlines():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def first(self, name: str) -> dict | None:
        return next((e for e in self.events if e.get("event") == name), None)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no goodbye, no checkpoint
        self.proc.wait(timeout=10)


def wait_for(m: Member, name: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m.poll()
        ev = m.first(name)
        if ev is not None:
            return ev
        if m.proc is not None and m.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{m.log_path.name}: no {name} within {timeout_s} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--problem", default="lunarlander")
    ap.add_argument("--popsize", type=int, default=32)
    ap.add_argument("--duty", type=float, default=0.12)
    ap.add_argument("--before", type=float, default=40.0, help="seconds of pool before the kill")
    ap.add_argument("--join-after", type=float, default=20.0, help="seconds after the kill a fresh node joins")
    ap.add_argument("--after", type=float, default=30.0, help="seconds the run goes on once the joiner started")
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    cmd = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__), *sys.argv[1:]])
    base = Path(tempfile.mkdtemp(prefix="gaia-pool-faults-"))
    (base / "no_bootstrap.toml").write_text("bootstrap = []\n")
    common = ["--problem", a.problem, "--pool", f"faults-s{a.seed}", "--popsize", str(a.popsize), "--workers", "1",
              "--log-format", "json", "--set", "log_interval_s=0", "--set", f"evaluation.duty_cycle={a.duty}",
              "--set", "evaluation.duty_clock=cpu", "--set", f"network.bootstrap_file={base / 'no_bootstrap.toml'}",
              "--set", "checkpoint_interval_s=3600"]
    members = [Member(base, f"m{i}", common) for i in range(a.members)]
    joiner = Member(base, "joiner", common)
    print(f"# {cmd}\n# logs under {base}", flush=True)
    try:
        members[0].start()
        boot = wait_for(members[0], "node_started", 60)["addrs"][0]
        for m in members[1:]:
            m.args = [*m.args, "--bootstrap", boot]
            m.start()
        time.sleep(a.before)  # the pool's own pace: nothing to wait for but time
        victim = members[-1]
        victim.kill()
        killed_at = time.time()
        time.sleep(a.join_after)
        joiner.args = [*joiner.args, "--bootstrap", boot]
        joiner.start()
        wait_for(joiner, "node_started", 60)  # its Python start is not the pool's business
        time.sleep(a.after)
    finally:
        for m in [*members, joiner]:
            if m.proc is not None:
                m.stop()
    for m in [*members, joiner]:
        if m.proc is not None:
            m.poll()
    gens = [(int(e["generation"]), stamp(e)) for e in members[0].events if e.get("event") == "generation_completed"]
    durations = [(t1, t1 - t0) for (_, t0), (_, t1) in zip(gens, gens[1:])]
    before = [d for t, d in durations if t < killed_at]
    around = [d for t, d in durations if killed_at <= t <= killed_at + 10]
    started = joiner.first("node_started")
    replayed = joiner.first("pool_log_replayed")
    # its first own evaluations in the pool: after the replay (before it, a joiner is a pool of one
    # and its counter may already have counted some)
    done = [e for e in joiner.events if e.get("event") == "generation_completed"]
    solo = max((e.get("evaluations", 0) for e in done if replayed and stamp(e) < stamp(replayed)), default=0)
    own = next((e for e in done if replayed and stamp(e) >= stamp(replayed) and e.get("evaluations", 0) > solo), None)
    rows = [
        ("members, killed", f"{a.members}, 1 (SIGKILL at {a.before:.0f} s)"),
        ("median generation before the kill, s", f"{statistics.median(before):.2f}" if before else "-"),
        ("longest generation in the 10 s after the kill, s", f"{max(around):.2f}" if around else "-"),
        ("generations of member 0 in the 10 s after the kill", str(len(around))),
        ("joiner: start to log replayed, s",
         f"{stamp(replayed) - stamp(started):.1f} (to generation {replayed['generation']})" if started and replayed else "-"),
        ("joiner: start to its first own evaluations, s", f"{stamp(own) - stamp(started):.1f}" if started and own else "-"),
        ("exit codes (SIGTERM at the end; the killed one -9)",
         str([m.proc.returncode for m in [*members, joiner] if m.proc is not None])),
    ]
    print(f"\nCommand: `{cmd}`\n\n| | |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
