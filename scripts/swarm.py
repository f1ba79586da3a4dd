#!/usr/bin/env python3
"""Start N local gaia-node processes with heterogeneous islands and stream their merged logs.

    python scripts/swarm.py                       # 4 nodes on LunarLander, Ctrl-C stops them all
    python scripts/swarm.py --nodes 3 --problem rastrigin --dim 30 --duration 60

Node 0 listens on 127.0.0.1 (a free port); the others bootstrap from it only and find each other
through the DHT. Islands cycle through CMA-ES sigma 0.3 / 0.5 / 0.8 and one OpenAI-ES. Each node
has its own data dir under --base-dir, so a second run resumes every island from its checkpoint
(pass --fresh to start over). Every process is ended by PID on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRESETS = [
    ("cmaes", "0.3", ()),
    ("cmaes", "0.5", ()),
    ("cmaes", "0.8", ()),
    ("openai-es", "0.1", ("--set", "island.lr=0.03")),
]
SHOWN = {"node_started", "generation_completed", "migrant_published", "migrant_accepted", "migrant_rejected",
         "peer_connected", "peer_disconnected", "peer_discovered", "message_rejected", "node_stopped",
         "checkpoint_loaded", "bootstrap_failed"}
COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]


def fmt_event(name: str, ev: dict, color: bool, every: int) -> str | None:
    event = ev.get("event", "?")
    if event not in SHOWN:
        return None
    if event == "generation_completed" and ev.get("generation", 0) % every:
        return None
    keys = {
        "node_started": ("peer_id", "optimizer", "settings", "addrs"),
        "generation_completed": ("generation", "evaluations", "best_fitness", "mean_fitness", "sigma",
                                 "evals_per_s", "n_peers"),
        "migrant_published": ("generation", "best_fitness", "n_peers"),
        "migrant_accepted": ("src", "fitness", "replaced_fitness"),
        "migrant_rejected": ("src", "reason", "fitness"),
    }.get(event, tuple(k for k in ev if k not in ("event", "timestamp", "level", "island_id")))
    parts = []
    for k in keys:
        if k not in ev:
            continue
        v = ev[k]
        if isinstance(v, float):
            v = f"{v:.3f}" if abs(v) < 1e5 else f"{v:.3g}"
        elif isinstance(v, str) and v.startswith("12D3Koo"):
            v = "…" + v[-6:]
        parts.append(f"{k}={v}")
    prefix = f"{COLORS[int(name[1:]) % len(COLORS)]}{name:>4}\033[0m" if color else f"{name:>4}"
    return f"{prefix} {event:<21} {' '.join(parts)}"


STARTED: list[str] = []  # names of nodes that logged node_started (pump threads append)


def pump(name: str, stream, out_lock: threading.Lock, color: bool, every: int, raw: bool) -> None:
    for line in iter(stream.readline, ""):
        line = line.rstrip("\n")
        if '"node_started"' in line:
            STARTED.append(name)
        if raw:
            text = f"{name} {line}"
        else:
            try:
                ev = json.loads(line)
                text = fmt_event(name, ev, color, every) if isinstance(ev, dict) else f"{name:>4} {line}"
            except ValueError:
                text = f"{name:>4} {line}"
        if text:
            with out_lock:
                print(text, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--problem", default="lunarlander",
                    help="any gaia-node --problem: a built-in, gym:ENV-ID or package.module:name (default lunarlander)")
    ap.add_argument("--dim", type=int, default=None, help="test functions: parameters")
    ap.add_argument("--workers", type=int, default=1, help="worker processes per node (default 1)")
    ap.add_argument("--base-dir", type=Path, default=None, help="data dirs go here (default: a new temp dir)")
    ap.add_argument("--duration", type=float, default=None, help="stop everything after this many seconds")
    ap.add_argument("--every", type=int, default=10, help="show every Nth generation_completed line")
    ap.add_argument("--raw", action="store_true", help="print the JSON lines as they are (prefixed by node)")
    ap.add_argument("--fresh", action="store_true", help="start every island over")
    ap.add_argument("--topology", default="full", choices=["full", "ring", "random"])
    ap.add_argument("extra", nargs="*", help="more gaia-node start flags for every node (after --)")
    a = ap.parse_args()
    if a.nodes < 1:
        ap.error("--nodes must be >= 1")
    base = a.base_dir or Path(tempfile.mkdtemp(prefix="gaia-swarm-"))
    base.mkdir(parents=True, exist_ok=True)
    empty = base / "no_bootstrap.toml"
    empty.write_text("bootstrap = []\n")
    color = sys.stdout.isatty()
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    threads: list[threading.Thread] = []
    print(f"swarm: {a.nodes} nodes, data dirs under {base}", flush=True)

    def spawn(i: int, bootstrap: str | None) -> subprocess.Popen:
        algo, sigma, more = PRESETS[i % len(PRESETS)]
        cmd = [sys.executable, "-m", "gaia_p2p", "start", "--data-dir", str(base / f"n{i}"),
               "--listen", "/ip4/127.0.0.1/tcp/0", "--set", f"network.bootstrap_file={empty}", "--log-format", "json",
               "--problem", a.problem, "--optimizer", algo, "--sigma", sigma, *more,
               "--workers", str(a.workers), "--topology", a.topology, "--seed", str(1000 + i)]
        if a.dim:
            cmd += ["--dim", str(a.dim)]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        if a.fresh:
            cmd += ["--fresh"]
        cmd += a.extra
        # own session: a terminal's Ctrl-C reaches only this script, which then stops each node by PID
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(p)
        return p

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rc = 0
    try:
        p0 = spawn(0, None)
        boot = None
        deadline = time.monotonic() + 60
        while boot is None:
            line = p0.stdout.readline()
            if not line:
                print("swarm: node 0 exited before it started", file=sys.stderr)
                return 1
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {}
            out = fmt_event("n0", ev, color, a.every) if ev else line.rstrip()
            if out:
                print(out, flush=True)
            if ev.get("event") == "node_started":
                boot = ev["addrs"][0]
            if time.monotonic() > deadline:
                print("swarm: node 0 did not start within 60 s", file=sys.stderr)
                return 1
        print(f"swarm: bootstrap {boot}", flush=True)
        t = threading.Thread(target=pump, args=("n0", p0.stdout, lock, color, a.every, a.raw), daemon=True)
        t.start()
        threads.append(t)
        for i in range(1, a.nodes):
            p = spawn(i, boot)
            t = threading.Thread(target=pump, args=(f"n{i}", p.stdout, lock, color, a.every, a.raw), daemon=True)
            t.start()
            threads.append(t)
        # --duration counts from the moment every node is up (a loaded machine starts them slowly)
        up_deadline = time.monotonic() + 60
        while len(set(STARTED)) < a.nodes - 1 and time.monotonic() < up_deadline and not stop.is_set():
            if all(p.poll() is not None for p in procs[1:]):
                break
            time.sleep(0.2)
        end = time.monotonic() + a.duration if a.duration else None
        while not stop.is_set() and (end is None or time.monotonic() < end):
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        print("swarm: stopping every node (SIGTERM)", flush=True)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
                rc = 1
        for t in threads:
            t.join(timeout=2)
        codes = [p.returncode for p in procs]
        print(f"swarm: stopped, exit codes {codes}; data dirs under {base}", flush=True)
        if any(c not in (0, -signal.SIGTERM) for c in codes):
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
