"""``gaia-node start | status``: argv -> Config; errors -> one line on stderr and an exit code.

Exit codes: 0 ok, 1 runtime failure (no node running, peer unreachable), 2 usage or config error.
"""

from __future__ import annotations

# Before numpy is imported anywhere: one BLAS/OpenMP thread in the daemon's own process too (its
# numpy work is small; threaded BLAS only spun against the evaluation workers). A user value wins.
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
from gaia_p2p.errors import CheckpointError, ConfigError, GaiaError  # noqa: E402

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


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

    s = sub.add_parser("start", help="run a node (a solo LunarLander island when given no flags)")
    s.add_argument("--config", metavar="FILE", help="TOML config file (sections [problem] [island] [migration] "
                   "[network] [evaluation]); flags override it")
    s.add_argument("--data-dir", metavar="DIR", help="identity key, checkpoint, control socket "
                   "(default: a per-user data dir)")
    g = s.add_argument_group("network")
    g.add_argument("--listen", metavar="MULTIADDR", action="append",
                   help="listen address, repeatable (default /ip4/0.0.0.0/tcp/4001; port 0 picks a free port)")
    g.add_argument("--bootstrap", metavar="MULTIADDR", action="append",
                   help="a known peer /ip4/HOST/tcp/PORT/p2p/PEER_ID, repeatable; added to bootstrap_nodes.toml")
    g.add_argument("--bootstrap-file", metavar="FILE", help="bootstrap list (default ./bootstrap_nodes.toml, "
                   "else the one at the project top)")
    g = s.add_argument_group("problem (defines the experiment: nodes only mix with the same problem)")
    g.add_argument("--problem", choices=["lunarlander", "sphere", "rastrigin", "rosenbrock", "spirals"],
                   help="lunarlander (default), a test function, or spirals (an MLP classifier, scored for the "
                        "whole population at once; where the torch backend and a GPU pay)")
    g.add_argument("--dim", type=int, help="parameters of a test function (default 30)")
    g.add_argument("--hidden", type=_positive_int_list, metavar="N[,N...]",
                   help="hidden layer sizes of the MLP (lunarlander policy, spirals classifier; default 16)")
    g.add_argument("--episodes", type=int, help="episodes per candidate per generation (default 1)")
    g = s.add_argument_group("island (per node: heterogeneous islands are the point)")
    g.add_argument("--optimizer", choices=["cmaes", "openai-es"])
    g.add_argument("--sigma", type=float, help="initial step size (default 0.5)")
    g.add_argument("--popsize", type=int, help="population per generation (default 32 on lunarlander)")
    g.add_argument("--seed", type=int, help="random seed (default: drawn once, then kept in the checkpoint)")
    g.add_argument("--lr", type=float, help="openai-es Adam learning rate (default 0.03)")
    g.add_argument("--restarts", choices=["ipop", "off"],
                   help="cmaes: when pycma's stop criteria fire, restart from x0 with twice the population "
                        "(ipop, default) or just go on (off)")
    g = s.add_argument_group("migration")
    g.add_argument("--migration-interval", type=int, metavar="GENS", help="emit the best every GENS generations "
                   "(default 10)")
    g.add_argument("--topology", choices=["full", "ring", "random"], help="whose migrants to consider "
                   "(default full)")
    g.add_argument("--random-k", type=int, metavar="K", help="random topology: peers drawn per interval")
    g.add_argument("--no-migration", action="store_true", help="run an isolated island (control experiments)")
    g.add_argument("--accept-any", action="store_true", help="take migrants even when not better than our best")
    g.add_argument("--migration-entry", choices=["inject", "adopt"],
                   help="an accepted migrant is injected as one sample (default) or adopted as the new mean")
    g.add_argument("--network-rate", type=float, metavar="R", help="elites per second the whole network may "
                   "carry; each node publishes at most every (nodes / R) s (default 0.5; 0: no network budget)")
    g.add_argument("--no-fetch", action="store_true",
                   help="never ask peers for their best over /gaia/elite/1.0.0 (on joining; ring/random sources); "
                        "we still answer others")
    g.add_argument("--publish-always", action="store_true", help="publish the best every interval even when it is "
                   "unchanged or a migrant's copy (default: only news)")
    g.add_argument("--accept-margin", type=float, metavar="F",
                   help="noisy problems: a migrant must beat the resident by more than F (default 0)")
    g.add_argument("--reeval-episodes", type=int, metavar="N",
                   help="episodes on which the resident best, the generation's champion and each migrant are "
                        "re-scored (same fresh seeds for all) before one replaces another (default 3 on "
                        "lunarlander)")
    g = s.add_argument_group("evaluation")
    g.add_argument("--workers", type=int, help="worker processes (default: the machine's cores; 0 = a thread)")
    g.add_argument("--backend", choices=["numpy", "torch"])
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="torch backend device (default auto)")
    g.add_argument("--duty-cycle", type=float, metavar="F", help="share of its workers' capacity the island "
                   "uses, 0.01..1; it sleeps the rest (default 1)")
    g.add_argument("--duty-clock", choices=["wall", "cpu"], help="measure the duty cycle in wall time "
                   "(default) or in the CPU time the island used (fair when nodes share a box that has room)")
    g = s.add_argument_group("run")
    g.add_argument("--max-generations", type=int, help="stop after this many generations (default: run forever)")
    g.add_argument("--checkpoint-interval", type=float, metavar="SECONDS", help="periodic checkpoint (default 10)")
    g.add_argument("--target-fitness", type=float, metavar="F",
                   help="test the resident on fresh episodes once its estimate reaches F and log "
                        "target_reached when the test passes (default 200 on lunarlander)")
    g.add_argument("--test-episodes", type=int, metavar="N", help="episodes of that test (default 100)")
    g.add_argument("--test-interval", type=float, metavar="SECONDS",
                   help="at most one such test per SECONDS (default 20; 0 = at every new resident)")
    g.add_argument("--stop-at-target", action="store_true", help="stop (exit 0) once the target is reached")
    g.add_argument("--fresh", action="store_true", help="move an existing checkpoint aside and start a new island")
    g.add_argument("--log-format", choices=["auto", "console", "json"])
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    g.add_argument("--log-interval", type=float, metavar="SECONDS",
                   help="at most one generation_completed line per SECONDS (default 1; 0 = every generation)")
    g.add_argument("--libp2p-log-level", default="error", choices=["debug", "info", "warning", "error", "critical"],
                   help="level of py-libp2p's own logs (default error)")
    g.add_argument("--telemetry-interval", type=float, metavar="SECONDS",
                   help="heartbeat period on the experiment's telemetry topic (default 5)")
    g.add_argument("--telemetry-rate", type=float, metavar="R", help="heartbeats per second for the whole "
                   "network; each node sends one every max(--telemetry-interval, nodes / R) s (default 0.05)")
    g.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on 127.0.0.1:PORT (default off)")
    g.add_argument("--debug", action="store_true", help="show tracebacks")

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


EXTRA_COMMANDS: tuple[str, ...] = ("gaia_p2p.node.watch", "gaia_p2p.tools.plot", "gaia_p2p.tools.replay",
                                   "gaia_p2p.tools.evaluate")


def _overrides(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "": {"data_dir": a.data_dir, "log_format": a.log_format, "log_level": a.log_level,
             "max_generations": a.max_generations, "checkpoint_interval_s": a.checkpoint_interval,
             "log_interval_s": a.log_interval, "metrics_port": a.metrics_port,
             "telemetry_interval_s": a.telemetry_interval, "telemetry_rate": a.telemetry_rate,
             "target_fitness": a.target_fitness,
             "test_episodes": a.test_episodes, "test_interval_s": a.test_interval, "stop_at_target": True if a.stop_at_target else None,
             "fresh": True if a.fresh else None},
        "problem": {"name": a.problem, "dim": a.dim, "hidden": a.hidden, "episodes": a.episodes},
        "island": {"optimizer": a.optimizer, "sigma": a.sigma, "popsize": a.popsize, "seed": a.seed, "lr": a.lr,
                   "restarts": a.restarts},
        "migration": {"interval": a.migration_interval, "topology": a.topology, "random_k": a.random_k,
                      "enabled": False if a.no_migration else None,
                      "accept_only_better": False if a.accept_any else None,
                      "reeval_episodes": a.reeval_episodes, "entry": a.migration_entry,
                      "accept_margin": a.accept_margin, "network_rate": a.network_rate,
                      "publish_only_new": False if a.publish_always else None,
                      "fetch": False if a.no_fetch else None},
        "network": {"listen": tuple(a.listen) if a.listen else None,
                    "bootstrap": tuple(a.bootstrap) if a.bootstrap else None,
                    "bootstrap_file": a.bootstrap_file},
        "evaluation": {"workers": a.workers, "backend": a.backend, "device": a.device,
                       "duty_cycle": a.duty_cycle, "duty_clock": a.duty_clock},
    }


def cmd_start(a: argparse.Namespace) -> int:
    from gaia_p2p.config import build_config, load_bootstrap_file

    cfg = build_config(toml_path=a.config, overrides=_overrides(a))
    load_bootstrap_file(cfg)  # fail fast, before any import of libp2p
    from gaia_p2p import logs

    logs.configure(cfg.log_format, cfg.log_level, live_progress=True)
    import trio

    from gaia_p2p.node.host import quiet_libp2p_logging
    from gaia_p2p.node.shutdown import serve

    quiet_libp2p_logging(a.libp2p_log_level)
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


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) < 1e6 else f"{x:.{nd}e}"
    return str(x)


def _bytes(n: float) -> str:
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if abs(n) < 1024 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def render_status(s: dict[str, Any]) -> str:
    isl, mig, opt = s["island"], s["migrants"], s["optimizer"]
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(mig["rejected"].items())) or "none"
    settings = " ".join(f"{k}={v}" for k, v in opt["settings"].items() if k != "popsize")
    lines = [
        f"peer id         {s['peer_id']}",
        *[f"listen          {a}" if i == 0 else f"                {a}" for i, a in enumerate(s["addrs"])],
        f"peers           {len(s['peers'])} connected, {len(s['topic_peers'])} in the experiment, "
        f"routing table {s['routing_table_size']}"
        f"{', mesh ' + '/'.join(str(v) for v in s['mesh'].values()) if s.get('mesh') else ''}",
        *[f"                {p}" for p in s["peers"][:16]],
        *([f"                ... and {len(s['peers']) - 16} more"] if len(s["peers"]) > 16 else []),
        f"experiment      {s['experiment_id']} ({s['problem'].get('name')}, dim {opt['dim']})",
        f"topics          {', '.join(s['topics'])}",
        f"optimizer       {opt['algorithm']} popsize={opt['popsize']} {settings} seed={opt['seed']}"
        f"{' restarted ' + str(opt['restarts']) + 'x' if opt.get('restarts') else ''}",
        f"migration       every {s['migration']['interval']} generations, topology {s['migration']['topology']}"
        f"{'' if s['migration']['enabled'] else ' (disabled)'}",
        f"generation      {isl['generation']}   evaluations {isl['evaluations']}   "
        f"{_fmt(isl['evals_per_s'], 1)} evals/s",
        f"fitness         best {_fmt(isl['best_fitness'])} (from {isl['best_source'][:16]})   "
        f"mean {_fmt(isl['mean_fitness'])}   sigma {_fmt(isl['sigma'], 4)}",
        f"migrants        sent {mig['sent']}  received {mig['received']}  accepted {mig['accepted']}  "
        f"rejected: {rejected}",
        f"uptime          {_fmt(s['uptime_s'], 0)} s   data dir {s['data_dir']}",
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
    net = (s.get("network") or {}).get("islands") or []
    if net:
        bests = [r["best_fitness"] for r in net if r.get("best_fitness") is not None]
        lines.insert(-1, f"network         {len(net)} islands heard (telemetry), network best "
                         f"{_fmt(max(bests)) if bests else '-'}, "
                         f"{sum(int(r.get('cpus') or 0) for r in net)} cores")
    target = s.get("target") or {}
    if target.get("fitness") is not None:
        last = target.get("last_test")
        reached = target.get("reached")
        text = f"target          {_fmt(target['fitness'], 1)}: "
        if reached:
            text += (f"REACHED at generation {reached['generation']} ({reached['episodes']} episodes), "
                     f"{_fmt(reached['mean'], 1)} over {reached['test_episodes']} fresh episodes")
        elif last:
            text += f"last test {_fmt(last['mean'], 1)} over {last['test_episodes']} episodes (not yet)"
        else:
            text += "not tested yet (tests start when the best estimate reaches it)"
        lines.insert(-1, text)
    if isl.get("episodes") is not None and isl.get("episodes") != isl.get("evaluations"):
        lines.insert(-1, f"episodes        {isl['episodes']} (training; tests not included)")
    return "\n".join(lines)


def cmd_status(a: argparse.Namespace) -> int:
    if a.peer:
        from gaia_p2p.node.addrs import check_peer_addr

        check_peer_addr(a.peer, "--peer", "pass the node's full address /ip4/HOST/tcp/PORT/p2p/PEER_ID "
                        "(printed in its node_started line)")
        import trio

        from gaia_p2p.node.control import query_peer_status
        from gaia_p2p.node.host import quiet_libp2p_logging

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
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

    After a clean stop (checkpoint written, sockets closed) the interpreter's own teardown of
    py-libp2p objects took ~3 s here; we flush and leave at once so SIGTERM -> exit stays well
    under 5 s.
    """
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    console_main()
