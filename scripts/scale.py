#!/usr/bin/env python3
"""N real gaia-node processes on this machine: discovery, elite delivery, bytes and CPU per node.

    python scripts/scale.py --nodes 40 --duration 120 --out docs/bench/scale-40

Node 0 is the only bootstrap; nodes 1..N-1 join every ``--join-interval`` seconds ("the last join"
is when the last node answers on its control socket). Each node runs rastrigin-30 (cheap to
evaluate, in a thread) at ``--duty-cycle`` so that N islands fit on two cores and the node's
networking is not starved by its own evaluation; migration stays at the defaults (every
10 generations, at most as often as the network-wide elite budget allows), so every node publishes
as often as the default policy lets it: the stress case. Measured, per node, from its control socket
(status: routing table, ``traffic`` and ``cpu`` counters) and its JSON log at debug level:

- discovery: seconds from the last join until every routing table holds >= 90 % of the others;
- delivery: share of (elite published, other node) pairs where that node logged ``migrant_received``
  (elites published between ``--warmup`` after the last join and 10 s before the end);
  publish -> receive latency from the log timestamps (one clock: same machine);
- bytes/s in+out on the wire (TCP payload after Noise and yamux), pubsub message copies received/s;
- CPU: the node's own split (status ``cpu``): process CPU minus the island (optimizer ask/tell) minus
  the evaluation thread (``--workers 0``: rastrigin is cheap) = networking, control socket and
  logging: an upper bound for what the network costs the node.

Writes OUT.json (every number) and prints a markdown row. Every process is ended by PID on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gaia_p2p.node.control import query_local_status  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from churn import rss_mb  # noqa: E402

GAIA = [sys.executable, "-m", "gaia_p2p"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return float("nan")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            pass
    return out


class Node:
    def __init__(self, base: Path, i: int) -> None:
        self.i, self.dir, self.log_path = i, base / f"n{i}", base / f"n{i}.log"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self, args: list[str]) -> None:
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([*GAIA, "start", "--data-dir", str(self.dir), *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.time()

    def status(self) -> dict | None:
        try:
            return query_local_status(self.dir / "control.sock", timeout_s=10)
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        if hasattr(self, "log"):
            self.log.close()


def parse_log(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def ts(ev: dict) -> float:
    return datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def summarize(paths: list[Path], png: Path | None) -> int:
    """One markdown table (and a PNG: bytes and CPU per node against N) from several runs' JSON."""
    runs = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: (r["nodes"], r["label"]))
    print("| run | N | table >= 90 % after last join | elites delivered | latency p50 / p99 | KB/s per node, "
          "median (max) | copies in /s | mesh peers | pubsub sent B/s: messages / IHAVE | network CPU, median (max) "
          "| generations/s per node |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        med, mx = r["median"], r["max"]
        rt = "-" if r["rt90_after_last_join_s"] is None else f"{r['rt90_after_last_join_s']:.0f} s"
        dl = "-" if not r["pairs"] else f"{100 * r['delivery']:.1f} % ({r['deliveries']}/{r['pairs']})"
        mesh = f"{med['mesh_peers']:.1f}" if "mesh_peers" in med else "-"
        kinds = med.get("rpc_bytes_out_per_s") or {}
        sent = f"{kinds['publish']:.0f} / {kinds['ihave']:.0f}" if "publish" in kinds else "-"
        print(f"| {r['label']} | {r['nodes']} | {rt} | {dl} | {r['latency_p50_s']:.2f} / {r['latency_p99_s']:.2f} s | "
              f"{med['bytes_per_s'] / 1024:.2f} ({mx['bytes_per_s'] / 1024:.2f}) | {med['copies_in_per_s']:.2f} | "
              f"{mesh} | {sent} | "
              f"{100 * med['cpu_network']:.2f} % ({100 * mx['cpu_network']:.2f} %) | {med['gens_per_s']:.1f} |")
    if png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        base = [r for r in runs if "meshsub" not in r["label"]]
        ns = [r["nodes"] for r in base]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        a1.plot(ns, [r["median"]["bytes_per_s"] / 1024 for r in base], "-o", label="all protocols, median")
        a1.plot(ns, [r["max"]["bytes_per_s"] / 1024 for r in base], "--", color="grey", label="max node")
        for proto in sorted({k for r in base for k in r["median"].get("by_protocol_per_s", {})}):
            ys = [r["median"]["by_protocol_per_s"].get(proto, 0) / 1024 for r in base]
            if max(ys) > 0.05:
                a1.plot(ns, ys, ":", marker=".", label=f"{proto} (payload)")
        a1.axhline(2, color="r", lw=0.8, label="goal: 2 KB/s at N = 40")
        a1.set_xlabel("node processes (N)")
        a1.set_ylabel("KB/s per node, in + out")
        a1.set_title("bytes per node against N (steady state)")
        a1.legend(fontsize=7)
        a1.grid(alpha=0.3)
        a2.plot(ns, [100 * r["median"]["cpu_network"] for r in base], "-o", label="median")
        a2.plot(ns, [100 * r["max"]["cpu_network"] for r in base], "--", color="grey", label="max node")
        a2.axhline(5, color="r", lw=0.8, label="goal: 5 % of a core")
        a2.set_xlabel("node processes (N)")
        a2.set_ylabel("% of a core")
        a2.set_title("networking CPU per node (process - island - evaluation)")
        a2.legend(fontsize=7)
        a2.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        print(f"wrote {png}")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--summarize":
        ap = argparse.ArgumentParser(description="summarize scale runs")
        ap.add_argument("--summarize", nargs="+", type=Path, required=True)
        ap.add_argument("--png", type=Path, default=None)
        s = ap.parse_args()
        return summarize(s.summarize, s.png)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=40)
    ap.add_argument("--duration", type=float, default=120, help="seconds to run after the last join")
    ap.add_argument("--warmup", type=float, default=30, help="seconds after the last join before measuring")
    ap.add_argument("--join-interval", type=float, default=0.25)
    ap.add_argument("--duty-cycle", type=float, default=None, help="per node (default 0.6 / nodes, max 0.2)")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json")
    ap.add_argument("--label", default="")
    ap.add_argument("node_args", nargs="*", help="extra gaia-node start flags (after --)")
    a = ap.parse_args()
    if a.duration < a.warmup + 12:  # rates need two samples (5 s apart) after the warmup, elites 10 s before the end
        ap.error(f"--duration {a.duration:g} is too short for --warmup {a.warmup:g}: "
                 f"use --duration {a.warmup + 12:g} or more")

    def on_term(*_):  # SIGTERM: unwind through `finally`, which stops every node by PID
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    duty = a.duty_cycle if a.duty_cycle is not None else min(0.2, 0.6 / a.nodes)
    base = Path(tempfile.mkdtemp(prefix="gaia-scale-"))
    (base / "empty.toml").write_text("bootstrap = []\n")
    port0 = free_port()
    common = ["--problem", "rastrigin", "--dim", "30", "--workers", "0", "--set", f"evaluation.duty_cycle={duty:.4f}",
              "--log-format", "json", "--set", "log_level=debug", "--set", "log_interval_s=10",
              "--set", "checkpoint_interval_s=30", "--set", f"network.bootstrap_file={base / 'empty.toml'}",
              *a.node_args]
    cmd = " ".join(["python scripts/scale.py", f"--nodes {a.nodes}", f"--duration {a.duration:g}",
                    f"--join-interval {a.join_interval:g}", *(["--", *a.node_args] if a.node_args else [])])
    print(f"# {cmd}\n# duty cycle {duty:.4f} per node; logs under {base}", flush=True)
    nodes = [Node(base, i) for i in range(a.nodes)]
    samples: list[dict] = []
    try:
        nodes[0].start([*common, "--seed", "1", "--listen", f"/ip4/127.0.0.1/tcp/{port0}"])
        boot = None
        deadline = time.time() + 60
        while boot is None and time.time() < deadline:
            st = nodes[0].status()
            if st:
                boot = next(x for x in st["addrs"] if "127.0.0.1" in x)
            else:
                time.sleep(0.2)
        if boot is None:
            print("bootstrap node did not start; see", nodes[0].log_path)
            return 1
        for n in nodes[1:]:
            n.start([*common, "--seed", str(n.i + 1), "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot])
            time.sleep(a.join_interval)
        # the last join: when the last node is up (listening, dialling its bootstrap), not when it
        # was spawned (40 interpreters importing libp2p on 2 cores take a while)
        t_spawned = time.time()
        while time.time() < t_spawned + 120 and any(n.status() is None for n in nodes):
            time.sleep(0.5)
        t_join = time.time()
        print(f"# {a.nodes} started ({t_join - t_spawned:.0f} s after the last spawn)", flush=True)
        converged_at = None
        end = t_join + a.duration
        while time.time() < end:
            t = time.time()
            row = {"t": t - t_join, "nodes": []}
            for n in nodes:
                st = n.status()
                wpids = children(n.proc.pid) if n.proc else []
                row["nodes"].append(None if st is None else {
                    "rt": st["routing_table_size"], "peers": len(st["peers"]), "topic_peers": len(st["topic_peers"]),
                    "traffic": st["traffic"], "cpu": st["cpu"], "proc_cpu_s": proc_cpu_s(n.proc.pid),
                    "worker_cpu_s": sum(proc_cpu_s(w) for w in wpids), "rss_mb": rss_mb(n.proc.pid),
                    "generation": st["island"]["generation"], "best": st["island"]["best_fitness"],
                    "sent": st["migrants"]["sent"], "mesh": st.get("mesh", {}), "alive": n.proc.poll() is None})
            samples.append(row)
            rts = [x["rt"] if x else 0 for x in row["nodes"]]
            if converged_at is None and min(rts) >= 0.9 * (a.nodes - 1):
                converged_at = row["t"]
                print(f"# every routing table >= 90 % at +{converged_at:.1f} s after the last join", flush=True)
            if len(samples) % 5 == 1:
                print(f"  +{row['t']:.0f}s routing table min {min(rts)} median {statistics.median(rts)}  "
                      f"peers min {min((x['peers'] if x else 0) for x in row['nodes'])}", flush=True)
            time.sleep(max(0.0, (2.0 if converged_at is None else 5.0) - (time.time() - t)))
    finally:
        for n in nodes:
            n.stop()
    crashed = [n.i for n in nodes if n.proc and n.proc.returncode not in (0, -signal.SIGTERM)]
    return report(a, nodes, samples, t_join, converged_at, duty, cmd, crashed)


def report(a: argparse.Namespace, nodes: list[Node], samples: list[dict], t_join: float,
           converged_at: float | None, duty: float, cmd: str, crashed: list[int]) -> int:
    N = a.nodes
    # window for rates: from warmup to the last sample
    win = [s for s in samples if s["t"] >= a.warmup]
    first, last = win[0], win[-1]
    dt = last["t"] - first["t"]
    per_node = []
    for i in range(N):
        x0, x1 = first["nodes"][i], last["nodes"][i]
        if not x0 or not x1:
            continue
        d = {k: x1["traffic"][k] - x0["traffic"][k] for k in x1["traffic"] if k != "by_protocol"}
        bp0, bp1 = x0["traffic"].get("by_protocol", {}), x1["traffic"].get("by_protocol", {})
        by_protocol = {k: round((v - bp0.get(k, 0)) / dt, 1) for k, v in bp1.items()}
        per_node.append({
            "bytes_per_s": (d["bytes_in"] + d["bytes_out"]) / dt, "bytes_in_per_s": d["bytes_in"] / dt,
            "bytes_out_per_s": d["bytes_out"] / dt, "copies_in_per_s": d["pubsub_copies_in"] / dt,
            "rpcs_out_per_s": d["pubsub_rpcs_out"] / dt, "ihave_out_per_s": d["pubsub_ihave_out"] / dt,
            "publish_out_per_s": d["pubsub_publish_out"] / dt,
            "rpc_bytes_out_per_s": {k[len("pubsub_"):-len("_bytes_out")]: round(d.get(k, 0) / dt, 1)
                                    for k in ("pubsub_publish_bytes_out", "pubsub_ihave_bytes_out",
                                              "pubsub_control_bytes_out", "pubsub_subscription_bytes_out",
                                              "pubsub_rpc_bytes_out")},
            "cpu_process": (x1["proc_cpu_s"] - x0["proc_cpu_s"]) / dt,
            "cpu_island": (x1["cpu"]["island_s"] - x0["cpu"]["island_s"]) / dt,
            "cpu_eval_thread": (x1["cpu"]["eval_thread_s"] - x0["cpu"]["eval_thread_s"]) / dt,
            "cpu_network": (x1["cpu"]["network_s"] - x0["cpu"]["network_s"]) / dt,
            "cpu_worker": (x1["worker_cpu_s"] - x0["worker_cpu_s"]) / dt,
            "gens_per_s": (x1["generation"] - x0["generation"]) / dt,
            "elites_sent_per_s": (x1["sent"] - x0["sent"]) / dt, "rss_mb": x1["rss_mb"],
            "mesh_peers": statistics.mean((x1.get("mesh") or {"": 0}).values()),
            "by_protocol_per_s": by_protocol})
    # delivery from the logs
    t0, t1 = t_join + a.warmup, t_join + last["t"] - 10
    pubs: dict[tuple[str, int], float] = {}
    recv: dict[tuple[str, int], dict[str, float]] = {}
    pid_of: dict[int, str] = {}
    for n in nodes:
        for ev in parse_log(n.log_path):
            e = ev.get("event")
            if e == "node_started":
                pid_of[n.i] = ev["peer_id"]
            elif e == "migrant_published":
                pubs[(pid_of.get(n.i, "?"), ev["generation"])] = ts(ev)
            elif e == "migrant_received":
                recv.setdefault((ev["src"], ev["generation"]), {})[pid_of.get(n.i, "?")] = ts(ev)
    in_window = {k: t for k, t in pubs.items() if t0 <= t <= t1}
    pairs = got = 0
    lat: list[float] = []
    for k, t in in_window.items():
        rs = recv.get(k, {})
        pairs += N - 1
        got += sum(1 for r in rs if r != k[0])
        lat += [rt - t for r, rt in rs.items() if r != k[0]]
    nested = ("by_protocol_per_s", "rpc_bytes_out_per_s")
    keys = [k for k in per_node[0] if k not in nested] if per_node else []
    med = {k: statistics.median(p[k] for p in per_node) for k in keys}
    mx = {k: max(p[k] for p in per_node) for k in keys}
    protos = sorted({k for p in per_node for k in p["by_protocol_per_s"]})
    med["by_protocol_per_s"] = {k: statistics.median(p["by_protocol_per_s"].get(k, 0) for p in per_node)
                                for k in protos}
    kinds = sorted({k for p in per_node for k in p.get("rpc_bytes_out_per_s", {})})
    med["rpc_bytes_out_per_s"] = {k: statistics.median(p["rpc_bytes_out_per_s"].get(k, 0) for p in per_node)
                                  for k in kinds}
    res = {"command": cmd, "label": a.label, "nodes": N, "duty_cycle": duty, "duration_s": a.duration,
           "rt90_after_last_join_s": converged_at, "window_s": dt, "elites_published": len(in_window),
           "deliveries": got, "pairs": pairs, "delivery": got / pairs if pairs else None,
           "latency_p50_s": pct(lat, 0.5), "latency_p99_s": pct(lat, 0.99), "median": med, "max": mx,
           "crashed": crashed, "per_node": per_node,
           # the time series, without each sample's per-protocol detail (kept in per_node)
           "samples": [{"t": smp["t"], "nodes": [None if x is None else
                                                 {k: v for k, v in x.items() if k != "traffic"}
                                                 | {"traffic": {k: v for k, v in x["traffic"].items()
                                                                if k != "by_protocol"}}
                                                 for x in smp["nodes"]]} for smp in samples]}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    rt = "-" if converged_at is None else f"{converged_at:.0f} s"
    dl = "-" if not pairs else f"{100 * got / pairs:.2f} % ({got}/{pairs})"
    print(f"| {a.label or N} | {N} | {rt} | {dl} | {res['latency_p50_s']:.2f} / {res['latency_p99_s']:.2f} s | "
          f"{med.get('bytes_per_s', 0) / 1024:.2f} ({mx.get('bytes_per_s', 0) / 1024:.2f}) | "
          f"{med.get('copies_in_per_s', 0):.1f} | {100 * med.get('cpu_network', 0):.1f} % "
          f"({100 * mx.get('cpu_network', 0):.1f} %) | {med.get('elites_sent_per_s', 0):.3f} | "
          f"{med.get('gens_per_s', 0):.1f} | {len(crashed)} |")
    print("# median bytes/s by protocol (stream payload):", json.dumps(med["by_protocol_per_s"]))
    return 0 if not crashed else 1


if __name__ == "__main__":
    sys.exit(main())
