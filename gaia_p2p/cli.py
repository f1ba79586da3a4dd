"""``gaia-node start | status``: argv -> Config; errors -> one line on stderr and an exit code.

Exit codes: 0 ok, 1 runtime failure (no node running, peer unreachable), 2 usage or config error.
"""

from __future__ import annotations

# Before numpy is imported anywhere: one BLAS/OpenMP thread in the daemon's own process too. Its
# numpy work is small, and BLAS threads would compete with the evaluation workers for the same
# cores. A value the user set wins.
from gaia_p2p.threads import single_thread_env

single_thread_env()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from gaia_p2p import __version__  # noqa: E402
from gaia_p2p.core.experiment import describe  # noqa: E402
from gaia_p2p.core.ranking import network_best  # noqa: E402
from gaia_p2p.errors import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, CheckpointError, ConfigError, GaiaError  # noqa: E402
from gaia_p2p.tools import fmt  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 16 or 32,32")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gaia-node", description="Coordinator-free gradient-free training: one island per node, "
                "elites shared over libp2p gossipsub, peers found through a Kademlia DHT.")
    p.add_argument("--version", action="version", version=f"gaia-node {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("start", help="run a node (a solo LunarLander island when given no flags)",
                       description="Run a node. Settings come from defaults < the TOML file (--config) < "
                       "GAIA_<SECTION>_<KEY> environment variables < these flags and --set. Only everyday "
                       "settings have a flag; every setting (docs/CONFIG.md) can be given as --set KEY=VALUE "
                       "or in the TOML file.")
    add_start_flags(s)

    st = sub.add_parser("status", help="show what a node is doing")
    st.add_argument("--data-dir", metavar="DIR", help="data dir of the local node (default: the per-user one)")
    st.add_argument("--peer", metavar="MULTIADDR", help="ask a remote node over /gaia/status/1.0.0 instead")
    st.add_argument("--json", action="store_true", help="one JSON object instead of text")
    st.add_argument("--debug", action="store_true", help="show tracebacks")

    # More commands live in their own modules: each has add_parser(subparsers) and run(args) -> int,
    # and imports nothing heavy at module level.
    for modname in EXTRA_COMMANDS:
        importlib.import_module(modname).add_parser(sub)
    return p


EXTRA_COMMANDS: tuple[str, ...] = ("gaia_p2p.tools.watch", "gaia_p2p.tools.plot", "gaia_p2p.tools.replay",
                                   "gaia_p2p.tools.evaluate")


# The flags of `gaia-node start`, by argument group: (config key, argparse keywords). The flag's
# name comes from config.FLAGS and its choices from config.CHOICES, so that config errors, which name
# the same table, always name a flag that exists.
START_GROUPS: tuple[tuple[str, tuple[tuple[str, dict[str, Any]], ...]], ...] = (
    ("problem (defines the experiment: nodes only mix with the same problem)", (
        ("problem.name", {"help": "lunarlander (default), a test function, spirals (an MLP classifier scored "
                                  "for the whole population at once: where --backend torch and a GPU pay), gym:ENV_ID "
                                  "(any gymnasium env) or your own Problem (package.module:name, docs/PROBLEMS.md)"}),
        ("problem.dim", {"type": int, "metavar": "N", "help": "parameters of a test function (default 30)"}),
        ("problem.hidden", {"type": "int_list", "metavar": "N[,N...]",
                            "help": "hidden layer sizes of the MLP (lunarlander policy, spirals; default 16)"}),
    )),
    ("island (per node: heterogeneous islands are the point)", (
        ("island.optimizer", {"help": "default cmaes"}),
        ("island.sigma", {"type": float, "metavar": "F", "help": "initial step size (default 0.5)"}),
        ("island.popsize", {"type": int, "metavar": "N", "help": "population per generation (default 32 on "
                                                                 "lunarlander and for openai-es, pycma's otherwise)"}),
        ("island.seed", {"type": int, "metavar": "N", "help": "random seed (default: drawn once, then kept in the "
                                                              "checkpoint)"}),
    )),
    ("network", (
        ("network.listen", {"action": "append", "metavar": "MULTIADDR",
                            "help": "listen address, repeatable (default /ip4/0.0.0.0/tcp/4001 and "
                                    "/ip6/::/tcp/4001; port 0 picks a free port)"}),
        ("network.bootstrap", {"action": "append", "metavar": "MULTIADDR",
                               "help": "a known peer /ip4/HOST/tcp/PORT/p2p/PEER_ID (or /dns4/NAME/..., "
                                       "/dns6/NAME/..., /dnsaddr/NAME/p2p/PEER_ID, resolved at start), "
                                       "repeatable; added to bootstrap_nodes.toml"}),
        ("migration.topology", {"help": "whose migrants to consider: everyone's (full, default), the ring "
                                        "predecessor's, or a few random peers'"}),
        ("pool.name", {"metavar": "NAME", "help": "share one search with the nodes started with the same pool "
                                                  "name and island settings (docs/POOLS.md; default: an island "
                                                  "of its own)"}),
    )),
    ("evaluation", (
        ("evaluation.workers", {"type": int, "metavar": "N",
                                "help": "worker processes (default: the machine's cores; 0 = a thread)"}),
        ("evaluation.backend", {"help": "numpy (default) or torch (whole population in batched passes)"}),
        ("evaluation.device", {"help": "torch backend device (default auto: cuda when available)"}),
    )),
    ("data and output", (
        ("data_dir", {"metavar": "DIR", "help": "identity key, checkpoint, control socket (default: a per-user "
                                                "data dir)"}),
        ("fresh", {"action": "store_true", "help": "move an existing checkpoint aside and start a new island"}),
        ("log_format", {"help": "auto (default: console on a terminal, else json)"}),
        ("metrics_port", {"type": int, "metavar": "PORT",
                          "help": "serve Prometheus metrics on 127.0.0.1:PORT (default off)"}),
    )),
)


def add_start_flags(s: argparse.ArgumentParser) -> None:
    from gaia_p2p.config import CHOICES, FLAGS

    s.add_argument("--config", metavar="FILE", help="TOML config file (top-level keys and sections [problem] "
                   "[island] [migration] [network] [evaluation])")
    s.add_argument("--set", metavar="KEY=VALUE", action="append", dest="set_items",
                   help="any setting, e.g. --set migration.interval=5 or --set log_interval_s=0; repeatable")
    s.add_argument("--debug", action="store_true", help="show tracebacks")
    for title, flags in START_GROUPS:
        g = s.add_argument_group(title)
        for key, kwargs in flags:
            kw = dict(kwargs)
            if kw.get("type") == "int_list":
                kw["type"] = _positive_int_list
            if key in CHOICES:
                kw["choices"] = CHOICES[key]
            g.add_argument(FLAGS[key], dest=key, **kw)


def _overrides(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags given and --set, as build_config overrides; one key given by both is an error."""
    from gaia_p2p.config import FLAGS, parse_set

    out = parse_set(a.set_items)
    for key, flag in FLAGS.items():
        value = getattr(a, key)
        if value is None or value is False:  # not given (a store_true flag not given is False)
            continue
        section, _, name = key.rpartition(".")
        if name in out.get(section, {}):
            raise ConfigError(f"config error: {key} is given both by {flag} and by --set; pass one of them")
        out.setdefault(section, {})[name] = tuple(value) if isinstance(value, list) else value
    return out


def cmd_start(a: argparse.Namespace) -> int:
    from gaia_p2p.config import build_config, load_bootstrap_file

    cfg = build_config(toml_path=a.config, overrides=_overrides(a))
    load_bootstrap_file(cfg)  # fail fast, before any import of libp2p
    from gaia_p2p import logs

    logs.configure(cfg.log_format, cfg.log_level, live_progress=True)
    import trio

    from gaia_p2p.net.host import quiet_libp2p_logging
    from gaia_p2p.node.shutdown import serve

    quiet_libp2p_logging(cfg.libp2p_log_level)
    try:
        trio.run(serve, cfg)
    except BaseExceptionGroup as group:
        # serve() runs the node inside a nursery, so trio (strict exception groups) wraps a startup
        # GaiaError (corrupt checkpoint, data dir in use) in a group; unwrap a lone one so main()
        # reports it as one line and the right exit code instead of a traceback.
        lone = _lone_exception(group)
        if isinstance(lone, GaiaError):
            raise lone from None
        raise
    return EXIT_OK


def _lone_exception(group: BaseExceptionGroup) -> BaseException | None:
    """The single leaf of a (nested) exception group, or None when it holds several."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def _sig(x: Any) -> str:
    """4 significant digits: a target of 200 or -0.02 and a return of 233.1 all read right."""
    return "-" if x is None else f"{x:.4g}"


def _bytes(n: float) -> str:
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if abs(n) < 1024 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def _estimate(isl: dict[str, Any]) -> str:
    """What the island's best rests on: exact (a deterministic problem) or an estimate from re-scores."""
    if isl.get("exact"):
        return "exact"
    n = isl.get("best_n")
    return "estimate" if n is None else f"estimate of {n} re-score{'s' if n != 1 else ''}"


def _tested_line(s: dict[str, Any], now: float) -> str | None:
    """The last test on fresh episodes; none on a deterministic problem (its best is exact)."""
    isl, target = s["island"], s.get("target") or {}
    if isl.get("exact") or "best_n" not in isl:
        return None
    last, share = target.get("last_test"), target.get("share") or 0.0
    used = target.get("test_episodes_used", 0)
    training = isl.get("episodes") or 0
    spent = (f"tests spent {used} episodes ({100 * used / training:.1f} % of training, "
             f"at most {100 * share:g} %)" if share and training else f"tests spent {used} episodes")
    if not last:
        when = (f"each new resident within {100 * share:g} % of the episodes" if share else
                "at the target only" if target.get("fitness") is not None else "off: no target and test_share 0")
        return f"tested          not yet (fresh-episode tests: {when}); {spent}"
    who = "the resident" if last.get("current") else "an earlier resident"
    src = "" if last["source"] == "local" else f", from {last['source'][:16]}"
    return (f"tested          {_sig(last['mean'])} +- {_sig(last['std'])} over {last['test_episodes']} fresh episodes, "
            f"{who} (generation {last['generation']}{src}, {last.get('why', 'target')} test, "
            f"{fmt.ago(last.get('at'), now)}, estimate then {_sig(last.get('estimate'))}); {spent}")


def reachability_words(s: dict[str, Any]) -> str:
    """What AutoNAT found and what it means for other nodes: "private (no peer could dial us back;
    asked 3); others reach us through relay …a1b2c3" or "...; no relay reservation yet: other
    nodes cannot reach us, we can only dial out"."""
    text = s["reachability"].get("text", "?")
    rel = (s.get("connections") or {}).get("relay") or {}
    relays = sorted(rel.get("reservations") or {})
    if relays:
        via = ", ".join(fmt.short_peer(r) for r in relays)
        return f"{text}; others reach us through relay{'s' if len(relays) > 1 else ''} {via}"
    if s["reachability"].get("status") == "private":
        return f"{text}; no relay reservation yet: other nodes cannot reach us, we can only dial out"
    return text


def _elite_fetch_line(counts: dict[str, int]) -> list[str]:
    """The elite protocol's counters in one line (none before the first fetch or announcement):
    what we fetched and served, and how large elites travelled (announced, announcements taken)."""
    shown = {k: v for k, v in counts.items() if v}
    if not shown:
        return []
    main = [f"{k} {shown.pop(k)}" for k in ("fetched", "served", "announced") if k in shown]
    rest = [f"{k.removeprefix('announcement_')} {v}" for k, v in sorted(shown.items()) if k.startswith("announcement_")]
    other = [f"{k} {v}" for k, v in sorted(shown.items()) if not k.startswith("announcement_")]
    return ["elite fetch     " + "  ".join(main + other)
            + (f"   announcements received: {', '.join(rest)}" if rest else "")]


def render_status(s: dict[str, Any], now: float | None = None) -> str:
    import time

    now = time.time() if now is None else now
    isl, mig, opt = s["island"], s["migrants"], s["optimizer"]
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(mig["rejected"].items())) or "none"
    settings = " ".join(f"{k}={v}" for k, v in opt["settings"].items() if k != "popsize")
    keeper = (s.get("pool") or {}).get("resident_keeper")  # a pool member's resident may be another's
    lines = [
        f"peer id         {s['peer_id']}",
        *[f"listen          {a}" if i == 0 else f"                {a}" for i, a in enumerate(s["addrs"])],
        f"peers           {len(s['peers'])} connected, {len(s['topic_peers'])} in the experiment, "
        f"routing table {s['routing_table_size']}"
        f"{', mesh ' + '/'.join(str(v) for v in s['mesh'].values()) if s.get('mesh') else ''}",
        *[f"                {p}" for p in s["peers"][:16]],
        *([f"                ... and {len(s['peers']) - 16} more"] if len(s["peers"]) > 16 else []),
        f"experiment      {s['experiment_id']} ({s['problem'].get('name')}, dim {opt['dim']})",
        *([f"  made from     {describe(s['experiment']['made_from'])}"] if s.get("experiment") else []),
        *([f"reachability    {reachability_words(s)}"] if s.get("reachability") else []),
        *[f"  observed at   {a}" for a in ((s.get("reachability") or {}).get("observed_addrs") or [])[:4]],
        f"topics          {', '.join(s['topics'])}",
        f"optimizer       {opt['algorithm']} popsize={opt['popsize']} {settings} seed={opt['seed']}"
        f"{' restarted ' + str(opt['restarts']) + 'x' if opt.get('restarts') else ''}",
        f"migration       every {s['migration']['interval']} generations, topology {s['migration']['topology']}"
        f"{'' if s['migration']['enabled'] else ' (disabled)'}",
        f"generation      {isl['generation']}   evaluations {isl['evaluations']}   "
        f"{fmt.num(isl['evals_per_s'], 1)} evals/s",
        f"fitness         best {fmt.num(isl['best_fitness'])} ({_estimate(isl)}, from {isl['best_source'][:16]})   "
        f"mean {fmt.num(isl['mean_fitness'])}   sigma {fmt.num(isl['sigma'], 4)}",
        *([f"                (the pool's resident is kept by ..{keeper[-8:]}"
           + ("; this one is ours from when we last kept it)" if isl["best_fitness"] is not None else ")")]
          if keeper and keeper != s["peer_id"] else []),
        f"migrants        sent {mig['sent']}  received {mig['received']}  accepted {mig['accepted']}  "
        f"rejected: {rejected}",
        *_elite_fetch_line(s.get("elite_fetch") or {}),
        f"uptime          {fmt.num(s['uptime_s'], 0)} s   data dir {s['data_dir']}",
    ]
    traffic, cpu = s.get("traffic") or {}, s.get("cpu") or {}
    if traffic and s.get("uptime_s"):
        up = max(float(s["uptime_s"]), 1e-9)
        lines.insert(-1, f"traffic         in {_bytes(traffic.get('bytes_in', 0))} out {_bytes(traffic.get('bytes_out', 0))}"
                         f" ({_bytes((traffic.get('bytes_in', 0) + traffic.get('bytes_out', 0)) / up)}/s on average),"
                         f" {traffic.get('pubsub_copies_in', 0)} pubsub copies received")
    if cpu and s.get("uptime_s"):
        up = max(float(s["uptime_s"]), 1e-9)
        lines.insert(-1, f"cpu             {100 * cpu.get('process_s', 0) / up:.1f} % of a core on average: island "
                         f"{100 * cpu.get('island_s', 0) / up:.1f} %, network and the rest "
                         f"{100 * cpu.get('network_s', 0) / up:.1f} % (workers not included)")
    tested = _tested_line(s, now)
    if tested:  # right under the estimate it is the check of
        lines.insert(next(i for i, x in enumerate(lines) if x.startswith("fitness ")) + 1, tested)
    net = (s.get("network") or {}).get("islands") or []
    if net:
        lines.insert(-1, f"network         {len(net)} islands (ours now, the others as of their last heartbeat), "
                         f"{sum(int(r.get('cpus') or 0) for r in net)} cores, best {fmt.network_best(network_best(net))}")
    rel = (s.get("connections") or {}).get("relay") or {}
    if rel.get("reservations") or rel.get("relayed_peers") or rel.get("served_reservations"):
        st = rel.get("stats") or {}
        lines.insert(-1, f"relay           {len(rel.get('reservations') or {})} reservations held, "
                         f"{len(rel.get('relayed_peers') or [])} relayed connections"
                         + (f"; serving {rel['served_reservations']} reservations, {rel.get('served_circuits', 0)} "
                            f"circuits, {_bytes(st.get('bytes_relayed', 0))} relayed" if rel.get("service") else ""))
    pool = s.get("pool")
    if pool:
        lines.insert(-1, f"pool            {pool['id']}: {len(pool['members'])} members, generation "
                         f"{pool['generation']}, we evaluated {pool['own_items']} items ({pool['helped']} helping"
                         + (f", {pool['speed']} items/s" if pool.get("speed") is not None else "") + "), "
                         f"{pool['checks']} spot checks, {len(pool['evicted'])} evicted, "
                         f"{len(pool.get('fenced', []))} fenced off (another past), {pool['replays']} log replays"
                         + (", accusations " + ", ".join(f"{n} {k}" for k, n in sorted(pool["accusations"].items()))
                            if pool.get("accusations") else "")
                         + (", the resident kept " + ("by us" if pool["resident_keeper"] == s.get("peer_id")
                                                      else f"by ..{pool['resident_keeper'][-8:]}")
                            if pool.get("resident_keeper") else ""))
        for peer, rec in sorted(pool.get("records", {}).items()):
            if peer in pool["members"]:
                lines.insert(-1, f"  member ..{peer[-8:]}  {rec['items']} items in our log, checks "
                                 f"{rec['matched']}/{rec['checked']} matched, platform {rec['platform'] or '?'}"
                                 + (f", {rec['speed']} items/s" if rec.get("speed") is not None else ""))
    target = s.get("target") or {}
    if target.get("fitness") is not None:
        last = target.get("last_test")
        reached = target.get("reached")
        text = f"target          {_sig(target['fitness'])}: "
        if reached:
            text += (f"REACHED at generation {reached['generation']} ({reached['episodes']} episodes), "
                     f"{_sig(reached['mean'])} over {reached['test_episodes']} fresh episodes")
        elif last:
            text += f"last test {_sig(last['mean'])} over {last['test_episodes']} episodes (not yet)"
        else:
            text += "not tested yet (the target test starts when the best estimate reaches it)"
        lines.insert(-1, text)
    if isl.get("episodes") is not None and isl.get("episodes") != isl.get("evaluations"):
        lines.insert(-1, f"episodes        {isl['episodes']} (training; tests not included)")
    return "\n".join(lines)


def cmd_status(a: argparse.Namespace) -> int:
    if a.peer:
        from gaia_p2p.config import check_peer_addr

        check_peer_addr(a.peer, "--peer", "pass the node's full address /ip4/HOST/tcp/PORT/p2p/PEER_ID "
                        "(printed in its node_started line)")
        import trio

        from gaia_p2p.node.control import query_peer_status
        from gaia_p2p.net.host import quiet_libp2p_logging

        quiet_libp2p_logging("critical")
        try:
            status = trio.run(query_peer_status, a.peer)
        except (Exception, trio.TooSlowError) as e:
            print(f"gaia-node status: cannot reach {a.peer} ({type(e).__name__}: {e}); is the node running and "
                  f"the address right?", file=sys.stderr)
            return EXIT_RUNTIME
    else:
        from gaia_p2p.config import default_data_dir
        from gaia_p2p.node.control import query_local_status
        from gaia_p2p.store import DataDir

        data_dir = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
        try:
            status = query_local_status(DataDir(data_dir).control_socket)
        except (ConnectionError, OSError):
            print(f"gaia-node status: no gaia-node is running with data dir {data_dir}; start one with "
                  f"'gaia-node start' or pass --data-dir / --peer", file=sys.stderr)
            return EXIT_RUNTIME
    if a.json:
        print(json.dumps(status, indent=None, sort_keys=True))
    else:
        print(render_status(status))
    return EXIT_OK


# Switches that `gaia-node start` no longer has, with the setting each one set.
_OLD_SWITCHES = {"--no-migration": "migration.enabled=false", "--accept-any": "migration.accept_only_better=false",
                 "--publish-always": "migration.publish_only_new=false", "--no-fetch": "migration.fetch=false",
                 "--stop-at-target": "stop_at_target=true"}


def _set_for(flag: str) -> str | None:
    """The --set item for a flag `gaia-node start` does not have, when its name says which setting it meant."""
    from gaia_p2p.config import all_keys

    if flag in _OLD_SWITCHES:
        return _OLD_SWITCHES[flag]
    name = flag.lstrip("-").partition("=")[0].replace("-", "_")
    for key in all_keys():
        if name in (key.replace(".", "_"), key.rpartition(".")[2]) or name + "_s" == key.rpartition(".")[2]:
            return f"{key}=VALUE"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a, extra = parser.parse_known_args(argv)
    if extra:
        prog = f"gaia-node {a.command}" if a.command else "gaia-node"
        hints = [f"{x} -> --set {_set_for(x)}" for x in extra
                 if a.command == "start" and x.startswith("--") and _set_for(x)]
        parser.exit(EXIT_USAGE, f"{prog}: error: unrecognized arguments: {' '.join(extra)}; "
                    + (f"settings without a flag of their own: {', '.join(hints)}" if hints else
                       f"see '{prog} --help'") + "\n")
    if a.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if a.command == "start":
            return cmd_start(a)
        if a.command == "status":
            return cmd_status(a)
        return int(a.run(a))
    except ConfigError as e:
        if a.debug:
            raise
        print(f"gaia-node {a.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointError as e:
        if a.debug:
            raise
        print(f"gaia-node {a.command}: checkpoint error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except GaiaError as e:
        if a.debug:
            raise
        print(f"gaia-node {a.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


def console_main() -> None:
    """Entry point of the ``gaia-node`` script.

    By the time main() returns, the checkpoint is written and the sockets are closed; what is left
    is the interpreter's teardown of py-libp2p's objects, which takes seconds and does nothing we
    need. Flushing and leaving at once keeps SIGTERM -> exit within the 5 s a supervisor expects.
    """
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    console_main()
