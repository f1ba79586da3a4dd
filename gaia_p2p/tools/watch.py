"""``gaia-node watch``: a live view of every island of an experiment.

With ``--bootstrap`` it joins the network as a light peer (it evaluates nothing, publishes nothing,
subscribes to the telemetry topic only); without, it attaches to the local node of ``--data-dir``
and shows that node's view of the network. ``--json`` streams NDJSON events instead of a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from functools import partial
from typing import Any

import numpy as np

from gaia_p2p.core.ranking import Basis, keeps_no_resident, network_best, rank
from gaia_p2p.errors import EXIT_OK, EXIT_RUNTIME
from gaia_p2p.tools import fmt

SPARK = "▁▂▃▄▅▆▇█"


def add_parser(sub: Any) -> None:
    w = sub.add_parser("watch", help="live view of every island (a light peer, or attached to the local node)")
    w.add_argument("--bootstrap", metavar="MULTIADDR", action="append",
                   help="join the network through this node as a light peer (repeatable)")
    w.add_argument("--data-dir", metavar="DIR", help="without --bootstrap: the local node to attach to")
    w.add_argument("--json", action="store_true", help="NDJSON: one JSON object per event, for piping")
    w.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    w.add_argument("--listen", metavar="MULTIADDR", default="/ip4/0.0.0.0/tcp/0",
                   help="light peer listen address (default /ip4/0.0.0.0/tcp/0)")
    w.add_argument("--pull-rate", type=float, default=1.0, metavar="PER_S",
                   help="with --bootstrap: also ask connected islands for a heartbeat (/gaia/telemetry/1.0.0), "
                        "at most this many per second in all (default 1; 0: gossip only)")
    w.add_argument("--pull-age", type=float, default=10.0, metavar="SECONDS",
                   help="pull an island only when nothing was heard from it for this long (default 10)")
    w.add_argument("--debug", action="store_true", help="show tracebacks")
    w.set_defaults(run=run)


def sparkline(values: list[float], width: int = 24) -> str:
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return SPARK[-1] * len(vals)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / (hi - lo) * (len(SPARK) - 1) + 0.5))] for v in vals)


short = fmt.short_peer


def _tested_cell(standing: Any, now: float) -> str:
    """``180.00 (100 ep) 30 s``: the last test's mean, its episodes and age; ``*`` after the mean:
    of an earlier resident."""
    x = standing.tested
    if standing.basis == Basis.EXACT:
        return "exact"
    if x is None:
        return "untested"
    mark = "" if x.get("current", True) else "*"
    return f"{fmt.num(x['mean'], 2)}{mark} ({x['episodes']} ep) {fmt.ago(x.get('at'), now).replace(' ago', '')}"


def pool_shares(islands: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per pool id: the members seen, the members they count, each seen member's share of the
    items evaluated for the pool (heartbeats r5; islands in no pool are left out), and the member
    seen keeping the pool's resident (r6; None while none of those seen says it keeps it)."""
    pools: dict[str, dict[str, Any]] = {}
    for r in islands:
        p = r.get("pool")
        if p:
            e = pools.setdefault(p["id"], {"seen": [], "members": 0, "own": {}, "checks": 0, "evicted": 0,
                                           "keeper": None})
            e["seen"].append(r["peer_id"])
            if p.get("keeps", True):
                e["keeper"] = r["peer_id"]
            e["members"] = max(e["members"], p["members"])
            e["own"][r["peer_id"]] = p["own"]
            e["checks"] += p["checks"]
            e["evicted"] = max(e["evicted"], p["evicted"])
    for e in pools.values():
        total = sum(e["own"].values())
        e["share"] = {peer: (own / total if total else 0.0) for peer, own in e["own"].items()}
    return pools


def _best_cell(r: dict[str, Any], pools: dict[str, dict[str, Any]]) -> str:
    """The row's best; a member that does not keep its pool's resident points at the one that does
    (its own best is of an earlier resident, or none: showing it would show a stale number)."""
    if not keeps_no_resident(r):
        return fmt.num(r.get("best_fitness"), 2)
    keeper = pools[r["pool"]["id"]]["keeper"]
    return f"pool: {short(keeper)}" if keeper else "pool's"


def _pool_cell(r: dict[str, Any], pools: dict[str, dict[str, Any]]) -> str:
    """``3f2a91 x3 34%``: the pool, the members its node counts, the node's share of its items."""
    p = r.get("pool")
    if not p:
        return "-"
    return f"{p['id'][:6]} x{p['members']} {pools[p['id']]['share'][r['peer_id']]:.0%}"


def render(snapshot: dict[str, Any], source: str, now: float | None = None) -> Any:
    """The table, best first by core/ranking.py: islands with a tested score (or an exact one, on a
    deterministic problem) above those with an estimate only. Where any island's best is an
    estimate, the "tested" column shows each one's last test on fresh episodes (``*``: of an
    earlier resident); on a deterministic problem there is no such column, the best is exact."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    ranked = rank(snapshot.get("islands", []))
    islands = [r for _, r in ranked]
    exact = bool(ranked) and all(st.basis in (Basis.EXACT, Basis.NONE) for st, _ in ranked)
    history = snapshot.get("history", {})
    pools = pool_shares(islands)
    pool_col = (("pool", {}),) if pools else ()  # only where some island is in a pool (telemetry r5)
    now = time.time() if now is None else now
    t = Table(title=f"gaia-node watch — {source}", expand=False)
    for col, kw in (("island", {}), *pool_col, ("optimizer", {}), ("gen", {"justify": "right"}),
                    ("evals", {"justify": "right"}), ("evals/s", {"justify": "right"}),
                    ("best (exact)" if exact else "estimate", {"justify": "right"}),
                    *(() if exact else (("tested", {"justify": "right"}),)),
                    ("best over time", {}), ("mean", {"justify": "right"}),
                    ("sigma", {"justify": "right"}), ("migr in/out", {"justify": "right"}),
                    ("peers", {"justify": "right"}), ("seen", {"justify": "right"})):
        t.add_column(col, **kw)
    for st, r in ranked:
        settings = r.get("settings") or {}
        opt = f"{r.get('algorithm')} σ0={settings.get('sigma0', '?')} λ={settings.get('popsize', '?')}"
        m = r.get("migrants") or {}
        age = now - float(r.get("time") or now)
        pool_cell = (_pool_cell(r, pools),) if pools else ()
        t.add_row(short(r["peer_id"]), *pool_cell, opt, str(r.get("generation")), str(r.get("evaluations")),
                  fmt.num(r.get("evals_per_s"), 0), _best_cell(r, pools),
                  *(() if exact else ("-" if keeps_no_resident(r) else _tested_cell(st, now),)),
                  sparkline(history.get(r["peer_id"], [])), fmt.num(r.get("mean_fitness"), 2),
                  fmt.num(r.get("sigma"), 3), f"{m.get('accepted', 0)}/{m.get('sent', 0)}", str(r.get("peers")),
                  f"{age:.0f}s ago" if age < 3600 else "stale")
    cpus = sum(int(r.get("cpus") or 0) for r in islands)
    gpus = sum(1 for r in islands if r.get("gpu"))
    rate = sum(float(r.get("evals_per_s") or 0.0) for r in islands)
    total = sum(int(r.get("evaluations") or 0) for r in islands)
    pulls = snapshot.get("pull")
    summary = Text(f"network best {fmt.network_best(network_best(islands), 2)}\nislands {len(islands)}   "
                   f"cores {cpus}   GPUs {gpus}   {rate:.0f} evals/s   {total} evaluations"
                   + (f"   pulled {pulls.get('pulled', 0)}/{sum(pulls.values())}" if pulls else ""))
    legend = [] if exact else [Text("estimate: running mean of the resident's re-scores; tested: its last test "
                                    "on fresh episodes (* of an earlier resident); tested islands rank first")]
    for pid, e in sorted(pools.items()):
        legend.append(Text(f"pool {pid}: {e['members']} members ({len(e['seen'])} seen here), "
                           f"{sum(e['own'].values())} items evaluated, {e['checks']} spot checks, "
                           f"{e['evicted']} evicted"
                           + (f", the resident kept by {short(e['keeper'])}" if e["keeper"] else "")))
    lines = [Text("recent migrations:", style="bold")]
    for m in list(snapshot.get("migrations", []))[-6:][::-1]:
        lines.append(Text(f"  {short(m['src'])} -> {short(m['dst'])}  {m['gain']:+.3g}  (gen {m['generation']})"))
    if len(lines) == 1:
        lines.append(Text("  none yet"))
    return Group(t, summary, *legend, *lines)


class Output:
    """Table (rich Live) or NDJSON; both fed with the same events."""

    def __init__(self, as_json: bool, source: str) -> None:
        self.as_json = as_json
        self.source = source
        self.live: Any = None
        if not as_json:
            from rich.live import Live

            self.live = Live(render({}, source), refresh_per_second=2, transient=False)
            self.live.__enter__()

    def event(self, obj: dict[str, Any]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
            sys.stdout.flush()

    def refresh(self, snapshot: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.update(render(snapshot, self.source))

    def close(self) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)


def run(a: argparse.Namespace) -> int:
    if a.bootstrap:
        from gaia_p2p.errors import ConfigError
        from gaia_p2p.config import check_listen_addr, check_peer_addr

        if not (math.isfinite(a.pull_rate) and 0 <= a.pull_rate <= 100):
            raise ConfigError(f"config error: --pull-rate = {a.pull_rate}, must be between 0 and 100 pulls/s "
                              f"(0: gossip only)")
        if not (math.isfinite(a.pull_age) and a.pull_age >= 1):
            raise ConfigError(f"config error: --pull-age = {a.pull_age}, must be at least 1 second")

        for addr in a.bootstrap:
            check_peer_addr(addr, "--bootstrap", "pass a node's full address /ip4/HOST/tcp/PORT/p2p/PEER_ID")
        check_listen_addr(a.listen)
        import trio

        from gaia_p2p import logs
        from gaia_p2p.net.host import quiet_libp2p_logging

        logs.configure("auto", "warning", stream=sys.stderr)  # stdout carries only the view / NDJSON
        quiet_libp2p_logging("critical")
        out = Output(a.json, f"light peer via {a.bootstrap[0][:40]}…")
        try:
            trio.run(_watch_network, a, out)
        except KeyboardInterrupt:
            pass
        finally:
            out.close()
        return EXIT_OK
    return _watch_local(a)


async def _watch_network(a: argparse.Namespace, out: Output) -> None:
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from gaia_p2p.config import NetworkConfig
    from gaia_p2p.core.experiment import telemetry_topic
    from gaia_p2p.errors import GaiaError
    from gaia_p2p.node.control import query_peer_status
    from gaia_p2p.net.discovery import run_discovery
    from gaia_p2p.node.gossip import TelemetryTopic
    from gaia_p2p.net.host import open_p2p
    from gaia_p2p.node.netview import NetView
    from gaia_p2p.node.pull import pull_loop

    from gaia_p2p.net.dns import resolve_bootstrap

    a.bootstrap = list(await resolve_bootstrap(a.bootstrap))  # /dns4, /dns6, /dnsaddr: as for start
    status = None
    for addr in a.bootstrap:
        try:
            status = await query_peer_status(addr)
            break
        except (Exception, trio.TooSlowError) as e:
            err = e
    if status is None:
        raise GaiaError(f"cannot reach any --bootstrap node ({type(err).__name__}: {err}); is it running?")
    exp = status["experiment_id"]
    net = NetworkConfig(listen=(a.listen,), bootstrap=tuple(a.bootstrap))
    view = NetView()
    with trio.move_on_after(a.duration if a.duration else float("inf")):
        async with open_p2p(create_new_key_pair(), net, on_bad_stream=lambda p, e: None) as p2p:
            topic = TelemetryTopic(telemetry_topic(exp), exp, p2p.peer_id)
            p2p.pubsub.set_topic_validator(topic.topic, topic.validator, is_async_validator=False)
            sub = await p2p.pubsub.subscribe(topic.topic)
            out.event({"event": "watch_started", "experiment_id": exp, "topic": topic.topic,
                       "peer_id": p2p.peer_id, "time": time.time()})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_discovery, p2p, net.bootstrap, net, np.random.default_rng())

                pulls: Counter[str] = Counter()

                async def refresher() -> None:
                    while True:
                        out.refresh(view.snapshot() | ({"pull": dict(pulls)} if a.pull_rate > 0 else {}))
                        await trio.sleep(0.5)

                def record(peer: str, t: Any, via: str) -> None:
                    rec, migrations = view.add(peer, t)
                    out.event(rec | {"via": via})
                    for m in migrations:
                        out.event(m)

                nursery.start_soon(refresher)
                if a.pull_rate > 0:
                    nursery.start_soon(partial(
                        pull_loop, p2p.host, exp, peers=p2p.connected_peers,
                        last_seen=lambda: {p: r["time"] for p, r in view.islands.items()},
                        on_pulled=lambda peer, t: record(peer, t, "pull"),
                        rate=a.pull_rate, max_age=a.pull_age, stats=pulls, rng=np.random.default_rng()))
                while True:
                    msg = await sub.get()
                    try:
                        t = topic.decode(msg.data)
                    except Exception:
                        continue
                    record(str(ID(msg.from_id)), t, "gossip")


def _watch_local(a: argparse.Namespace) -> int:
    from pathlib import Path

    from gaia_p2p.config import default_data_dir
    from gaia_p2p.node.control import query_local_status
    from gaia_p2p.store import DataDir

    data_dir = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
    sock = DataDir(data_dir).control_socket
    try:
        status = query_local_status(sock)
    except (ConnectionError, OSError):
        print(f"gaia-node watch: no gaia-node is running with data dir {data_dir}; start one, pass --data-dir, "
              f"or join a network with --bootstrap", file=sys.stderr)
        return EXIT_RUNTIME
    out = Output(a.json, f"node {short(status['peer_id'])} ({data_dir})")
    seen: set[tuple[str, float]] = set()
    seen_mig: set[tuple[str, str, int]] = set()
    end = time.monotonic() + a.duration if a.duration else None
    try:
        while end is None or time.monotonic() < end:
            snap = status.get("network", {})
            for rec in snap.get("islands", []):
                key = (rec["peer_id"], rec.get("sent_time"))
                if key not in seen:
                    seen.add(key)
                    out.event(rec)
            for m in snap.get("migrations", []):
                key = (m["src"], m["dst"], m["generation"])
                if key not in seen_mig:
                    seen_mig.add(key)
                    out.event(m)
            out.refresh(snap)
            time.sleep(1.0)
            try:
                status = query_local_status(sock)
            except (ConnectionError, OSError):
                print("gaia-node watch: the node stopped", file=sys.stderr)
                return EXIT_RUNTIME
    except KeyboardInterrupt:
        pass
    finally:
        out.close()
    return EXIT_OK
