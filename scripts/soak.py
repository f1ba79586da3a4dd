#!/usr/bin/env python3
"""A node under weeks-in-hours of strangers: monitoring, churn and hostile peers, for hours.

    python scripts/soak.py --duration 7200 --out docs/bench/soak.json     # the figures of docs/RELIABILITY.md
    python scripts/soak.py --duration 120 --queries 20 --out /tmp/s.json   # a quick look

One victim ``gaia-node start`` process (sphere-30, workers 0, duty cycle 0.25, 127.0.0.1). Then:

1. ``--queries`` real ``gaia-node status --peer ADDR`` processes in a row (each a fresh identity and
   a fresh inbound connection, as a monitoring script makes them);
2. until ``--duration`` seconds after the start, all at once:
   - monitoring: ``gaia-node status --peer`` every ``--status-every`` s;
   - churn: an honest node (fresh data dir, so a fresh identity every time) bootstraps from the
     victim, runs ``--churn-up`` s, gets SIGTERM, stays down ``--churn-down`` s;
   - hostile peers: every ``--attack-every`` s one attack in its own process (fresh identities,
     bounded in time), in turn: fitness lies from 5 identities, malformed elites, 300 yamux streams
     that never negotiate a protocol, 12 idle /ipfs/kad/1.0.0 streams held 20 s, 20 Sybil
     identities that join the topics and leave;
3. at the end an honest node must still connect and the victim must still answer.

Every ``--sample-every`` s the victim's RSS, open fds and CPU time (from /proc: workers 0 keeps the
whole node in one process), its connections and inbound slots, routing table, pubsub peers, generation
and rejection counters (its local status socket) are recorded. Everything goes to ``--out`` as JSON;
a summary is printed. Every process started here is ended here, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GAIA = [sys.executable, "-m", "gaia_p2p"]
PROBLEM = ["--problem", "sphere", "--dim", "30"]
ATTACKS = ("lies", "malformed", "raw_streams", "kad_idle", "sybils")


def _proc_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / ticks, "rss_mb": rss_kb / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(fields[17])}


def _start_node(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """A ``gaia-node start`` process; returns it and its first 127.0.0.1 address (from node_started)."""
    log = open(data_dir.with_suffix(".log"), "w")
    p = subprocess.Popen([*GAIA, "start", *PROBLEM, "--workers", "0", "--listen", "/ip4/127.0.0.1/tcp/0",
                          "--data-dir", str(data_dir), "--log-format", "json", *extra],
                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"node in {data_dir} exited with {p.returncode}; see {log.name}")
        for line in data_dir.with_suffix(".log").read_text().splitlines():
            if '"node_started"' in line:
                return p, json.loads(line)["addrs"][0]
        time.sleep(0.2)
    p.kill()
    raise SystemExit(f"node in {data_dir} did not start in 60 s")


def _stop(p: subprocess.Popen, timeout_s: float = 10) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def _status_peer(addr: str, timeout_s: float = 30) -> bool:
    try:
        r = subprocess.run([*GAIA, "status", "--peer", addr, "--json"], capture_output=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and b'"peer_id"' in r.stdout


def _local_status(data_dir: Path) -> dict:
    from gaia_p2p.node.control import query_local_status

    return query_local_status(data_dir / "control.sock")


def _sample(t0: float, pid: int, data_dir: Path) -> dict:
    s = {"t": round(time.monotonic() - t0, 1), **_proc_stats(pid)}
    try:
        st = _local_status(data_dir)
    except Exception as e:  # the victim not answering is itself a result
        s["status_error"] = f"{type(e).__name__}: {e}"[:200]
        return s
    rejected = dict(st["migrants"]["rejected"])
    s.update(connections=st.get("connections"), peers=len(st["peers"]), routing_table=st.get("routing_table_size"),
             network_size=st.get("network_size"), generation=st["island"]["generation"],
             rejected=rejected, banned=len(st.get("banned_peers", ())), bad_streams=st.get("pubsub_streams_rejected"))
    return s


# ------------------------------------------------------------------ attacks (each in its own process)

async def _attack(kind: str, addr: str, exp_id: str, topic: str) -> dict:
    import multiaddr
    import trio
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from attacker import elite_bytes, lie_params, malformed_payloads, open_attacker

    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    out: dict = {"kind": kind}
    with trio.move_on_after(60):
        if kind == "lies":  # 5 identities x 3 lies each: every one of them gets banned on sphere
            for _ in range(5):
                async with open_attacker() as a:
                    await a.join(addr, topic)
                    for g in range(3):  # claims sphere's optimum (0), which beats any resident
                        await a.publish(elite_bytes(exp_id, lie_params(30), 0.0, generation=g + 1))
                    await trio.sleep(1)
            out["sent"] = 15
        elif kind == "malformed":
            async with open_attacker() as a:
                await a.join(addr, topic)
                payloads = malformed_payloads(exp_id, 30)
                for _, data, _ in payloads:
                    await a.publish(data)
                    await trio.sleep(0.6)  # under the per-sender rate limit: each one reaches the validator
                out["sent"] = len(payloads)
        elif kind == "raw_streams":  # yamux streams that never negotiate a protocol
            async with open_attacker() as a:
                await a.host.connect(info)
                conn = a.host.get_network().get_connections(info.peer_id)[0]
                n = 0
                for _ in range(300):
                    try:
                        await conn.muxed_conn.open_stream()
                        n += 1
                    except Exception:
                        break
                out["sent"] = n
                await trio.sleep(5)
        elif kind == "kad_idle":  # 12 kad streams held open, saying nothing
            async with open_attacker() as a:
                await a.host.connect(info)
                streams = []
                for _ in range(12):
                    try:
                        streams.append(await a.host.new_stream(info.peer_id, [TProtocol("/ipfs/kad/1.0.0")]))
                    except Exception:
                        break
                out["sent"] = len(streams)
                await trio.sleep(20)
        elif kind == "sybils":  # identities that join the topics and leave
            for _ in range(20):
                async with open_attacker() as a:
                    await a.join(addr, topic)
            out["sent"] = 20
    return out


def _run_attack(kind: str, addr: str, exp_id: str, topic: str) -> None:
    import trio

    from gaia_p2p import logs
    from gaia_p2p.net.host import quiet_libp2p_logging

    logs.configure("json", "critical")
    quiet_libp2p_logging("critical")
    print(json.dumps(trio.run(_attack, kind, addr, exp_id, topic)))


# ------------------------------------------------------------------ the soak

def soak(a: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gaia-soak-"))
    victim_dir = work / "victim"
    victim, addr = _start_node(victim_dir, "--set", "evaluation.duty_cycle=0.25")
    t0 = time.monotonic()
    st = _local_status(victim_dir)
    exp_id, topic = st["experiment_id"], next(t for t in st["mesh"] if t.endswith("/migrants/1"))
    result: dict = {"args": vars(a) | {"out": str(a.out)}, "victim_addr": addr, "samples": [], "attacks": [],
                    "churn_cycles": 0, "queries": {"burst_ok": 0, "burst_failed": 0, "steady_ok": 0, "steady_failed": 0}}
    samples = result["samples"]
    samples.append(_sample(t0, victim.pid, victim_dir))
    next_sample = time.monotonic() + a.sample_every
    churn: subprocess.Popen | None = None
    attack: subprocess.Popen | None = None
    try:
        burst_t = time.monotonic()
        for i in range(a.queries):
            ok = _status_peer(addr)
            result["queries"]["burst_ok" if ok else "burst_failed"] += 1
            if time.monotonic() >= next_sample:
                samples.append(_sample(t0, victim.pid, victim_dir))
                next_sample += a.sample_every
            if (i + 1) % 100 == 0:
                print(f"[soak] {i + 1} status --peer queries: {result['queries']['burst_ok']} answered", flush=True)
        result["queries"]["burst_s"] = round(time.monotonic() - burst_t, 1)
        samples.append(_sample(t0, victim.pid, victim_dir) | {"mark": "burst_done"})

        churn_n, attack_n = 0, 0
        churn_next = attack_next = status_next = time.monotonic()
        churn_until = 0.0
        while time.monotonic() - t0 < a.duration:
            now = time.monotonic()
            if victim.poll() is not None:
                result["victim_exit"] = victim.returncode
                break
            if now >= status_next:
                ok = _status_peer(addr)
                result["queries"]["steady_ok" if ok else "steady_failed"] += 1
                status_next = now + a.status_every
            if churn is None and now >= churn_next:
                churn_n += 1
                churn, _ = _start_node(work / f"churn{churn_n}", "--bootstrap", addr,
                                       "--set", "evaluation.duty_cycle=0.1")
                churn_until = now + a.churn_up
            elif churn is not None and now >= churn_until:
                _stop(churn)
                churn = None
                result["churn_cycles"] = churn_n
                churn_next = now + a.churn_down
            if attack is not None and attack.poll() is not None:
                out = attack.stdout.read().decode().strip().splitlines()
                result["attacks"].append({"t": round(now - t0, 1), "rc": attack.returncode,
                                          **(json.loads(out[-1]) if out and attack.returncode == 0 else {})})
                attack = None
            if attack is None and now >= attack_next:
                kind = ATTACKS[attack_n % len(ATTACKS)]
                attack_n += 1
                attack = subprocess.Popen([sys.executable, __file__, "--attack", kind, addr, exp_id, topic],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
                attack_next = now + a.attack_every
            if now >= next_sample:
                samples.append(_sample(t0, victim.pid, victim_dir))
                next_sample += a.sample_every
                last = samples[-1]
                print(f"[soak] t={last['t']:.0f}s rss={last['rss_mb']:.0f}MB fds={last['fds']} "
                      f"conns={last.get('connections')} rt={last.get('routing_table')} gen={last.get('generation')}",
                      flush=True)
            time.sleep(0.5)
    finally:
        for p in (churn, attack):
            if p is not None:
                _stop(p)
    # the end: an honest newcomer connects, and the victim still answers
    final = _start_node(work / "newcomer", "--bootstrap", addr, "--set", "evaluation.duty_cycle=0.1")[0]
    deadline = time.monotonic() + 60
    connected = False
    while time.monotonic() < deadline and not connected:
        try:
            connected = len(_local_status(work / "newcomer")["peers"]) > 0
        except Exception:
            pass
        time.sleep(1)
    result["newcomer_connected"] = connected
    result["final_status_peer_ok"] = _status_peer(addr)
    samples.append(_sample(t0, victim.pid, victim_dir) | {"mark": "end"})
    _stop(final)
    result["victim_rc"] = _stop(victim)
    result["duration_s"] = round(time.monotonic() - t0, 1)
    result["work_dir"] = str(work)
    return result


def summary(r: dict) -> str:
    s = [x for x in r["samples"] if "rss_mb" in x]
    first, last = s[0], s[-1]
    cpu_pct = 100 * (last["cpu_s"] - first["cpu_s"]) / max(1e-9, last["t"] - first["t"])
    conns = last.get("connections") or {}
    q = r["queries"]
    kinds = [a.get("kind") for a in r["attacks"]]
    attacks = ", ".join(f"{k} {kinds.count(k)}" for k in ATTACKS)
    lines = [
        f"soak: {r['duration_s'] / 3600:.2f} h, victim rc {r['victim_rc']}, exit during soak: {r.get('victim_exit')}",
        f"status --peer in a row: {q['burst_ok']} answered, {q['burst_failed']} failed ({q.get('burst_s', 0)} s)",
        f"status --peer every {r['args']['status_every']} s afterwards: {q['steady_ok']} answered, {q['steady_failed']} failed",
        f"churn cycles: {r['churn_cycles']}; attacks: {len(r['attacks'])} "
        f"({attacks}), "
        f"{sum(1 for a in r['attacks'] if a['rc'] != 0)} attack processes failed",
        f"inbound connections accepted: {conns.get('opened_inbound')}; inbound slots held at the end: "
        f"{conns.get('inbound_slots_held')} of {conns.get('inbound_slots')}",
        f"RSS MB: start {first['rss_mb']:.0f}, max {max(x['rss_mb'] for x in s):.0f}, end {last['rss_mb']:.0f}; "
        f"fds: start {first['fds']}, max {max(x['fds'] for x in s)}, end {last['fds']}; "
        f"CPU {cpu_pct:.0f} % of a core on average",
        f"routing table at the end: {last.get('routing_table')}, network_size {last.get('network_size')}, "
        f"banned {last.get('banned')}, rejected {last.get('rejected')}",
        f"newcomer connected at the end: {r['newcomer_connected']}; final status --peer answered: "
        f"{r['final_status_peer_ok']}",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=7200, help="seconds from the victim's start (default 2 h)")
    ap.add_argument("--queries", type=int, default=1000, help="status --peer queries in a row first")
    ap.add_argument("--status-every", type=float, default=5.0)
    ap.add_argument("--churn-up", type=float, default=60.0)
    ap.add_argument("--churn-down", type=float, default=20.0)
    ap.add_argument("--attack-every", type=float, default=90.0)
    ap.add_argument("--sample-every", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--attack", nargs=4, metavar=("KIND", "ADDR", "EXPERIMENT", "TOPIC"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.attack:
        _run_attack(*a.attack)
        return
    r = soak(a)
    if a.out:
        a.out.write_text(json.dumps(r, indent=1))
    print(summary(r))


if __name__ == "__main__":
    main()
