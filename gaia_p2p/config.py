"""One frozen Config tree: defaults < TOML file (--config) < environment (GAIA_*) < CLI flags and --set.

Validated once at start. Every bad-input message names the key, the value, the rule and a fix that
exists (the key's own flag from ``FLAGS``, else ``--set section.key=VALUE`` and the TOML key), and is
raised as ``ConfigError`` so the CLI prints one line and exits 2.

This module is the one source of the settings' choice lists (``CHOICES``) and of which settings have
a flag of their own (``FLAGS``); ``gaia_p2p.cli`` builds its parser from both.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaia_p2p.core import codec
from gaia_p2p.core.experiment import GYM_PREFIX, OBS_NORMS, PROBLEMS, TEST_FUNCTIONS, TORCH_PREFIX, ProblemConfig
from gaia_p2p.core.migration import ENTRIES, TOPOLOGIES, Entry, Topology
from gaia_p2p.core.types import ALGORITHMS, RESTARTS, Algorithm, Restarts
from gaia_p2p.errors import ConfigError, EvaluationError

LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"
# IPv6 next to IPv4 by default: many home connections have a public IPv6 address and no public IPv4
# one. A machine without IPv6 drops it at start with a log line (net/addrs.usable_listen_addrs).
DEFAULT_LISTEN6 = "/ip6/::/tcp/4001"

# Every setting whose value is one of a fixed set, by key; validate() checks them all, and the CLI's
# `choices=` come from here. The core's own choices are its StrEnums (core/types.py, core/migration.py:
# light modules, so the CLI parser, built for every command and for --help, does not load pycma).
CHOICES: dict[str, tuple[str, ...]] = {
    "problem.obs_norm": OBS_NORMS,
    "island.optimizer": ALGORITHMS,
    "island.restarts": RESTARTS,
    "migration.topology": TOPOLOGIES,
    "network.relay_client": ("auto", "on", "off"),
    "network.relay_service": ("auto", "on", "off"),
    "migration.entry": ENTRIES,
    "network.meshsub": ("1.1", "1.2"),
    "evaluation.backend": ("numpy", "torch"),
    "evaluation.device": ("auto", "cpu", "cuda"),
    "evaluation.duty_clock": ("wall", "cpu"),
    "pool.transport": ("gossip", "direct"),
    "log_format": LOG_FORMATS,
    "log_level": LOG_LEVELS,
    "libp2p_log_level": (*LOG_LEVELS, "critical"),
}

# The everyday settings, the only ones with a flag of their own on `gaia-node start`. Every other
# setting is reached through the TOML file, GAIA_* or `--set KEY=VALUE`, so that `--help` stays a
# page a person can read.
FLAGS: dict[str, str] = {
    "data_dir": "--data-dir",
    "fresh": "--fresh",
    "problem.name": "--problem",
    "problem.dim": "--dim",
    "problem.hidden": "--hidden",
    "island.optimizer": "--optimizer",
    "island.sigma": "--sigma",
    "island.popsize": "--popsize",
    "island.seed": "--seed",
    "network.listen": "--listen",
    "network.bootstrap": "--bootstrap",
    "migration.topology": "--topology",
    "pool.name": "--pool",
    "evaluation.workers": "--workers",
    "evaluation.backend": "--backend",
    "evaluation.device": "--device",
    "log_format": "--log-format",
    "metrics_port": "--metrics-port",
}


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("gaia-p2p", appauthor=False))


@dataclass(frozen=True)
class IslandConfig:
    optimizer: str = Algorithm.CMAES.value
    sigma: float = 0.5
    popsize: int | None = None  # None: 32 on lunarlander and for openai-es, pycma's default otherwise
    seed: int | None = None  # None: drawn at first start, then kept in the checkpoint
    lr: float = 0.03  # openai-es Adam step size
    restarts: str = Restarts.IPOP.value  # cmaes, sep-cmaes: restart a stalled run with twice the population (IPOP) | off


@dataclass(frozen=True)
class MigrationConfig:
    enabled: bool = True
    interval: int = 10
    accept_only_better: bool = True
    topology: str = Topology.FULL.value
    random_k: int = 2
    max_pending: int = 8
    min_publish_interval_s: float = 1.0
    network_rate: float = 0.5  # elites/s for the whole network: gap >= (live peers + 1) / rate (0: off)
    publish_only_new: bool = True  # skip residents that are migrants' copies or already published
    reeval_episodes: int | None = None  # None: 3 on noisy problems (lunarlander), 1 otherwise
    entry: str = Entry.INJECT.value  # how an accepted migrant enters the optimizer: inject | adopt
    accept_margin: float = 0.0  # noisy problems: needed lead over the resident on the same seeds
    max_lies: int = 3  # deterministic problems: claims that did not reproduce before a peer is banned (0: never)
    fetch: bool = True  # /gaia/elite/1.0.0: ask peers for their best when joining; ring/random pull their sources
    # an elite whose encoding is longer is announced (~80 bytes) and its parameters fetched by the
    # peers that want them, instead of gossiped (gaia-migration-v1, "Large elites"); 16 KiB is ~4,000
    # parameters. At most MAX_ELITE_BYTES (256 KiB): nothing larger is ever gossiped.
    gossip_max_bytes: int = codec.GOSSIP_MAX_BYTES


@dataclass(frozen=True)
class PoolConfig:
    # Nodes of one experiment started with the same pool name (and the same island settings) run one
    # optimizer together (core/pool.py, docs/POOLS.md); "" runs an island of its own.
    name: str = ""
    check_share: float = 0.05  # share of the pool's results re-evaluated by another member (spot checks)
    help_after: float = 0.5  # help with others' items after this share of our own share's duration
    min_help_wait_s: float = 0.2  # ... and at least this long (about two gossip rounds)
    # how our results reach the others: "gossip" (the pool's gossipsub topic: signed, forwarded, reaches
    # members we hold no connection with) or "direct" (one stream per member: fewer bytes and less
    # CPU, but only to members we are connected to). Every member takes both.
    transport: str = "gossip"


@dataclass(frozen=True)
class NetworkConfig:
    listen: tuple[str, ...] = (DEFAULT_LISTEN, DEFAULT_LISTEN6)
    bootstrap: tuple[str, ...] = ()
    bootstrap_file: str | None = None  # None: ./bootstrap_nodes.toml, else the one shipped at the repo top
    heartbeat_s: float = 1.0
    # Mesh degree: a node receives each message about once per mesh peer, and every copy costs CPU
    # and bytes (docs/LIBP2P.md, "Cost"), so fewer is cheaper; 4 still keeps a 40-node mesh
    # connected. The band is narrow because a mesh shrinks back to `degree` only once it passes
    # `degree_high` and inbound GRAFTs fill it up to there: a wide band lets the copies per node
    # grow with the network (docs/BENCHMARKS.md, "Scaling").
    degree: int = 4
    degree_low: int = 3
    degree_high: int = 5
    gossip_peers: int = 3  # IHAVE recipients per topic per heartbeat (py-libp2p: max(6, 25 % of peers))
    eclipse_protection: bool = False  # every local peer shares one IP; enable on real networks
    max_rpc_bytes: int = 1 << 20
    refresh_min_s: float = 2.0  # DHT refresh period while the routing table is small
    refresh_max_s: float = 300.0  # backed off to this once it is stable
    max_peers: int = 64  # dial at most this many discovered peers
    # inbound connections (handshaking or open) one IP address may hold: peer ids cost nothing, so
    # the per-peer cap alone lets one machine with many identities take every inbound slot
    max_inbound_per_ip: int = 8
    limits_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # CIDRs the per-IP limit skips (one machine's swarm)
    keepalive_s: float = 5.0  # ping every connected peer this often; silent for 4x this -> disconnect (0: off)
    meshsub: str = "1.1"  # gossipsub version offered first: "1.1" (1.2 and 1.0 accepted) or "1.2"
    keepalive_rate: float = 0.25  # at most this many pings/s in all: many peers stretch the period (0: no cap)
    # Reachability (AutoNAT, net/reachability.py): serve dial-backs and ask peers to dial us back
    # every autonat_interval_s; public/private needs autonat_confirmations agreeing peers.
    autonat: bool = True
    autonat_interval_s: float = 120.0
    autonat_confirmations: int = 2
    # Circuit relay v2 and hole punching (net/relay.py, docs/RELAY.md). relay_client: "on" reserves
    # slots on relays and advertises /p2p-circuit addresses (a node behind NAT); "auto" does so while
    # AutoNAT says private (network.autonat; Relay.set_private). relay_service "auto": on unless
    # relay_client is "on". Limits are the relay's, per reservation / circuit.
    relay_client: str = "auto"
    relay_service: str = "auto"
    relay_reservations: int = 2  # relays a client keeps a reservation on
    relay_max_reservations: int = 32  # reservations a relay holds in all
    relay_circuits_per_peer: int = 4  # concurrent circuits to one reserved peer
    relay_circuit_bytes: int = 1 << 20  # bytes per circuit (both ways together), then it is reset
    relay_circuit_s: int = 600  # seconds per circuit, then it is reset
    relay_reservation_ttl_s: int = 900  # a reservation lasts this long unless renewed (at 3/4)
    # An elite fetch goes over a relayed-only connection only while an elite is at most this big
    # (64 KiB: half the 128 KiB per circuit that libp2p relays grant by default); bigger ones wait
    # for a direct connection (hole punching). core/schedule.FetchPlan.
    relay_fetch_max_bytes: int = 64 * 1024
    hole_punch: bool = True  # DCUtR on relayed connections


@dataclass(frozen=True)
class EvaluationConfig:
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # 0: evaluate in a thread
    backend: str = "numpy"
    device: str = "auto"  # torch backend: auto (cuda if available) | cpu | cuda
    # Share of its workers' capacity the island uses; it sleeps the rest (1.0: flat out). A
    # volunteer's "use at most 20 % of my machine", or one small machine among many emulated on one
    # box. duty_clock: "wall" (the compute phase's wall time) or "cpu" (the CPU time the island and
    # its workers used; keeps each node's share when a box is shared but not overloaded). See
    # node/runtime.py duty_sleep and docs/BENCHMARKS.md section 4.
    duty_cycle: float = 1.0
    duty_clock: str = "wall"


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    island: IslandConfig = field(default_factory=IslandConfig)
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    log_format: str = "auto"
    log_level: str = "info"
    libp2p_log_level: str = "error"  # py-libp2p's own loggers (net/host.py quiet_libp2p_logging)
    max_generations: int | None = None  # stop (exit 0) after this many generations in total
    checkpoint_interval_s: float = 10.0
    log_interval_s: float = 1.0  # at most one generation_completed line per this many seconds (0: every one)
    fresh: bool = False  # ignore (and move aside) an existing checkpoint
    metrics_port: int | None = None  # Prometheus text metrics on 127.0.0.1:PORT
    telemetry_interval_s: float = 5.0  # heartbeat on the telemetry topic, at least this far apart
    # heartbeats/s for the whole network: period >= (peers + 1) / rate (0: off). Every node sends
    # them, so they are the most numerous message kind; a network-wide budget keeps them a small
    # share of each node's traffic however many nodes there are (docs/BENCHMARKS.md, "Scaling").
    telemetry_rate: float = 0.05
    # "Solved" detection: when the resident's estimate reaches target_fitness, test it on
    # test_episodes fresh episodes (not counted as training) at most every test_interval_s.
    target_fitness: float | None = None  # None: 200 on lunarlander, off otherwise
    test_episodes: int = 100
    test_interval_s: float = 20.0
    # Noisy problems: also test each new resident before the target, as long as all tests together
    # spend at most this share of the training episodes (core/target.py; 0: only the target test).
    test_share: float = 0.05
    stop_at_target: bool = False

    @property
    def target(self) -> float | None:
        if self.target_fitness is not None:
            return self.target_fitness
        return self.problem.default_target

    @property
    def reeval_episodes(self) -> int:
        if self.migration.reeval_episodes is not None:
            return self.migration.reeval_episodes
        return 1 if self.problem.deterministic else 3

    @property
    def popsize(self) -> int | None:
        if self.island.popsize is not None:
            return self.island.popsize
        if self.island.optimizer == Algorithm.OPENAI_ES or self.problem.env_id is not None:
            return 32
        return None


SECTIONS: dict[str, type] = {
    "problem": ProblemConfig,
    "island": IslandConfig,
    "migration": MigrationConfig,
    "pool": PoolConfig,
    "network": NetworkConfig,
    "evaluation": EvaluationConfig,
}


TOP_LEVEL: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config) if f.name not in SECTIONS)


def _fields(section: str) -> dict[str, dataclasses.Field[Any]]:
    """The settable fields of a section (internal ones, filled in at config time, are not settings)."""
    cls = SECTIONS[section] if section else Config
    return {f.name: f for f in dataclasses.fields(cls)
            if (section or f.name not in SECTIONS) and not f.metadata.get("internal")}


# problem.env_args: keyword arguments of gymnasium.make. Bounded, plain values only: they are hashed
# into the experiment id and shown in status.
ENV_ARGS_KEY = "problem.env_args"
MAX_ENV_ARGS = 32
MAX_ENV_ARG_STR = 256
_ENV_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _env_arg_literal(text: str) -> Any:
    """A --set / environment value as TOML would read it (true, 3, -9.8, "x"), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce_env_args(value: Any) -> tuple[tuple[str, Any], ...]:
    hint = f"fix [problem.env_args] in the config file or pass --set {ENV_ARGS_KEY}.KEY=VALUE"
    if isinstance(value, str):
        value = {k.strip(): _env_arg_literal(v.strip()) for k, _, v in
                 (item.partition("=") for item in value.split(",") if item.strip())}
    if not isinstance(value, dict):
        raise ConfigError(f"config error: {ENV_ARGS_KEY} = {value!r} must be a table of KEY = VALUE; {hint}")
    if len(value) > MAX_ENV_ARGS:
        raise ConfigError(f"config error: {ENV_ARGS_KEY} has {len(value)} entries, at most {MAX_ENV_ARGS}; {hint}")
    out = []
    for k, v in value.items():
        if not isinstance(k, str) or not _ENV_ARG_NAME.fullmatch(k):
            raise ConfigError(f"config error: {ENV_ARGS_KEY}.{k} is not a keyword argument name "
                              f"(letters, digits, _; at most 64); {hint}")
        ok = (isinstance(v, (bool, int)) or (isinstance(v, float) and math.isfinite(v))
              or (isinstance(v, str) and len(v) <= MAX_ENV_ARG_STR))
        if not ok:
            raise ConfigError(f"config error: {ENV_ARGS_KEY}.{k} = {v!r} must be a bool, an int, a finite "
                              f"float or a string of at most {MAX_ENV_ARG_STR} characters; {hint}")
        out.append((k, v))
    return tuple(sorted(out))


def all_keys() -> tuple[str, ...]:
    """Every setting as ``section.name`` (top-level ones without a section), the TOML schema."""
    return (*TOP_LEVEL, *(f"{s}.{n}" for s in SECTIONS for n in _fields(s)))


def fix_hint(key: str, example: Any = None) -> str:
    """How to set ``key``: its flag when it has one, else ``--set``; and its place in the TOML file."""
    section, _, name = key.rpartition(".")
    where = f"[{section}] {name} in the config file" if section else f"{name} at the top of the config file"
    value = "VALUE" if example is None else str(example)
    flag = FLAGS.get(key)
    if flag and "bool" in str(_fields(section)[name].type):
        return f"pass {flag} or set {where}"
    if flag:
        return f"pass {flag} {value} or set {where}"
    return f"pass --set {key}={value} or set {where}"


def _example(section: str, name: str) -> Any:
    """The field's default when it is a plain number or word, else None (the hint says VALUE)."""
    default = _fields(section)[name].default
    if isinstance(default, bool):
        return "false" if default else "true"
    return default if isinstance(default, (int, float, str)) else None


def _unknown(key: str) -> ConfigError:
    section, _, name = key.rpartition(".")
    if section and section not in SECTIONS:
        return ConfigError(f"config error: unknown section [{section}] (in {key}); sections: {', '.join(SECTIONS)}")
    known = sorted(_fields(section))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {(section + '.') if section else ''}{close[0]}? " if close else ""
    scope = f"in [{section}]" if section else f"at the top level; sections: {', '.join(SECTIONS)}"
    return ConfigError(f"config error: unknown setting {key}; {hint}known: {', '.join(known)} ({scope})")


def _coerce(section: str, name: str, typ: Any, value: Any) -> Any:
    """Coerce a TOML / env / CLI value to the field's type, or raise ConfigError."""
    label = f"{section}.{name}" if section else name
    t = str(typ)
    try:
        if value is None:
            return None
        if "tuple" in t:
            if isinstance(value, str):
                value = [v for v in (x.strip() for x in value.split(",")) if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            if "int" in t:
                return tuple(int(v) for v in value)
            return tuple(str(v) for v in value)
        if t.startswith("bool") or t == "<class 'bool'>":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if "float" in t:
            return float(value)
        if "int" in t:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if "Path" in t:
            return Path(value).expanduser()
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config error: {label} = {value!r} is not a valid {t.replace('<class ', '').rstrip('>')}; "
            f"{fix_hint(label, _example(section, name))}"
        ) from None


def parse_set(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--set section.key=value`` (repeatable) as overrides; a malformed item or an unknown key is a ConfigError."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"config error: --set {item!r} is not KEY=VALUE; pass e.g. --set migration.interval=5")
        if key.startswith(ENV_ARGS_KEY + "."):  # one keyword argument of the env per --set
            args = out.setdefault("problem", {}).setdefault("env_args", {})
            args[key[len(ENV_ARGS_KEY) + 1:]] = _env_arg_literal(value.strip())
            continue
        if key not in all_keys():
            raise _unknown(key)
        section, _, name = key.rpartition(".")
        out.setdefault(section, {})[name] = value
    return out


def build_config(*, toml_path: str | None = None, env: dict[str, str] | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Merge defaults < TOML < env < overrides (``{"island": {"sigma": 0.3}, "": {"data_dir": ...}}``)."""
    merged: dict[str, dict[str, Any]] = {"": {}, **{s: {} for s in SECTIONS}}
    origin: dict[str, str] = {}  # key -> where its value came from, for the error message

    if toml_path:
        try:
            with open(toml_path, "rb") as f:
                doc = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config error: config file {toml_path} does not exist; pass an existing "
                              f"file to --config") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config error: {toml_path} is not valid TOML ({e}); fix the file") from None
        for key, value in doc.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"config error: [{key}] in {toml_path} must be a table")
                merged[key].update(value)
                origin.update({f"{key}.{name}": toml_path for name in value})
            else:
                merged[""][key] = value
                origin[key] = toml_path

    env = dict(os.environ if env is None else env)
    for var, value in env.items():
        if not var.startswith("GAIA_"):
            continue
        rest = var[5:].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                merged[section][rest[len(section) + 1:]] = value
                origin[f"{section}.{rest[len(section) + 1:]}"] = var
                break
        else:
            if rest in TOP_LEVEL:
                merged[""][rest] = value
                origin[rest] = var

    for section, values in (overrides or {}).items():
        given = {k: v for k, v in values.items() if v is not None}
        if section == "problem" and isinstance(given.get("env_args"), dict):
            # --set problem.env_args.KEY=VALUE adds to (or replaces one key of) the file's table
            base = merged["problem"].get("env_args")
            given["env_args"] = {**(base if isinstance(base, dict) else {}), **given["env_args"]}
        merged.setdefault(section, {}).update(given)
        origin.update({f"{section}.{k}" if section else k: "the command line" for k in given})
    try:
        return _build(merged)
    except ConfigError as e:
        key = re.match(r"config error: ([a-z0-9_.]+) = ", str(e))
        if key and key.group(1) in origin:
            raise ConfigError(f"{e} (value from {origin[key.group(1)]})") from None
        raise


def _build(merged: dict[str, dict[str, Any]]) -> Config:
    built: dict[str, Any] = {}
    for section in ("", *SECTIONS):
        known = _fields(section)
        kwargs = {}
        for name, value in merged[section].items():
            if name not in known:
                raise _unknown(f"{section}.{name}" if section else name)
            if section == "problem" and name == "env_args":
                kwargs[name] = _coerce_env_args(value)
            else:
                kwargs[name] = _coerce(section, name, known[name].type, value)
        if section:
            built[section] = SECTIONS[section](**kwargs)
        else:
            built.update(kwargs)
    cfg = Config(**built)
    validate(cfg)
    resolved = resolve_problem(cfg.problem)
    if resolved is not cfg.problem:
        cfg = dataclasses.replace(cfg, problem=resolved)
    validate_resolved(cfg)
    return cfg


def resolve_problem(p: ProblemConfig) -> ProblemConfig:
    """Fill in what a gym env, a user's torch module or a user's Problem looks like (needs gymnasium,
    torch or the user's package)."""
    if p.is_torch and p.torch is None:
        from gaia_p2p.problems.torch_policy import resolve

        return resolve(p)
    if p.is_gym and p.spaces is None:
        from gaia_p2p.problems.gym import probe

        return dataclasses.replace(p, spaces=probe(p.env_id or "", p.env_args))
    if p.is_plugin and p.plugin is None:
        from gaia_p2p.problems.plugin import load

        return dataclasses.replace(p, plugin=load(p.name)[1])
    return p


# What a gossipsub RPC carrying one elite adds to it: the signed message's from (38 bytes for an
# Ed25519 peer id), seqno, topic, signature and key, protobuf tags and lengths, and room
# for control messages py-libp2p piggybacks on the same RPC. Measured: 213 bytes without control.
PUBSUB_ENVELOPE_BYTES = 4096
#: Most parameters the full CMA-ES is allowed (a 10,000 x 10,000 covariance is 0.8 GB): above, the
#: separable CMA-ES or OpenAI-ES, both linear in the dimension.
MAX_FULL_CMAES_DIM = 10_000


def validate_resolved(cfg: Config) -> None:
    """Checks that need the resolved problem (its dimension, its default target)."""
    p = cfg.problem
    _validate_elite_size(cfg)
    if cfg.stop_at_target and cfg.target is None:
        raise _bad("target_fitness", None, f"stop_at_target needs a target, and {p.name} has no default one", 0)
    if p.is_torch:  # the device its module runs on: refused here, at start, not in the first evaluation
        from gaia_p2p.problems.torch_backend import resolve_device

        try:
            resolve_device(cfg.evaluation.device)
        except EvaluationError as e:
            raise ConfigError(f"config error: {e}") from None


def _validate_elite_size(cfg: Config) -> None:
    """Every elite the node can publish fits the wire (protocols/gaia-migration-v1.md, "Parameters"):
    refused here, at start, rather than found out at the first publish (the encoder refuses it) or
    never (py-libp2p drops an RPC above max_rpc_bytes silently, on the sender)."""
    p, dim = cfg.problem, cfg.problem.param_dim
    if p.name in TEST_FUNCTIONS:
        key, value, example = "problem.dim", p.dim, 30
    elif p.is_torch or p.is_plugin:
        key, value, example = "problem.name", p.name, None
    else:
        key, value, example = "problem.hidden", ",".join(map(str, p.hidden)), 16
    if dim > codec.MAX_DIM:
        raise _bad(key, value, f"gives {p.name} {dim} parameters, more than the {codec.MAX_DIM} an elite can carry "
                   f"(MAX_DIM, protocols/gaia-migration-v1.md)", example)
    if cfg.island.optimizer == Algorithm.CMAES and dim > MAX_FULL_CMAES_DIM:
        raise _bad("island.optimizer", cfg.island.optimizer,
                   f"keeps a {dim} x {dim} covariance matrix for {p.name}'s {dim} parameters "
                   f"({8 * dim * dim / 1e9:.1f} GB, an O(n^3) decomposition every few generations; at most "
                   f"{MAX_FULL_CMAES_DIM} parameters): use sep-cmaes or openai-es", Algorithm.SEP_CMAES.value)
    largest = codec.max_elite_bytes(dim)
    gossiped = min(largest, cfg.migration.gossip_max_bytes)  # anything longer is announced instead
    needed = gossiped + PUBSUB_ENVELOPE_BYTES
    if cfg.network.max_rpc_bytes < needed:
        raise _bad("network.max_rpc_bytes", cfg.network.max_rpc_bytes,
                   f"is below the {needed} bytes of a gossip RPC carrying one elite of {p.name} ({dim} parameters: "
                   f"{gossiped} bytes at most gossiped, plus {PUBSUB_ENVELOPE_BYTES} for the envelope)",
                   max(1 << 20, needed))


def _bad(key: str, value: Any, rule: str, example: Any = None) -> ConfigError:
    return ConfigError(f"config error: {key} = {value!r}, {rule}; {fix_hint(key, example)}")


def _value(cfg: Config, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def _parse_multiaddr(addr: str, label: str, fix: str):  # noqa: ANN202
    from multiaddr import Multiaddr  # here: `gaia-node --help` loads config and needs no multiaddr

    try:
        return Multiaddr(addr)
    except Exception as e:  # the multiaddr package raises many types for bad input
        raise ConfigError(f"config error: {label} = {addr!r} is not a multiaddr ({e}); {fix}") from None


def check_listen_addr(addr: str) -> None:
    fix = "pass e.g. --listen /ip4/127.0.0.1/tcp/0"
    ma = _parse_multiaddr(addr, "network.listen", fix)
    protos = [p.name for p in ma.protocols()]
    if len(protos) != 2 or protos[0] not in ("ip4", "ip6") or protos[1] != "tcp":
        raise ConfigError(f"config error: network.listen = {addr!r}, must be /ip4/HOST/tcp/PORT or "
                          f"/ip6/HOST/tcp/PORT; {fix}")


#: how a peer address may start: an IP, a name resolved at start (A or AAAA), or a dnsaddr name
#: whose TXT records list the addresses (net/dns.py)
PEER_ADDR_FIRST = ("ip4", "ip6", "dns", "dns4", "dns6", "dnsaddr")


def check_peer_addr(addr: str, label: str, fix: str) -> None:
    ma = _parse_multiaddr(addr, label, fix)
    protos = [p.name for p in ma.protocols()]
    if protos[0] not in PEER_ADDR_FIRST:
        raise ConfigError(f"config error: {label} = {addr!r} must start with /ip4, /ip6, /dns4, /dns6 or "
                          f"/dnsaddr; {fix}")
    if protos[0] == "dnsaddr":
        if protos not in (["dnsaddr"], ["dnsaddr", "p2p"]):  # the TXT records' addresses carry their ids
            raise ConfigError(f"config error: {label} = {addr!r} must be /dnsaddr/HOST/p2p/PEER_ID or "
                              f"/dnsaddr/HOST; {fix}")
        if protos == ["dnsaddr"]:
            return
    elif "p2p" not in protos or "tcp" not in protos:
        raise ConfigError(f"config error: {label} = {addr!r} needs a /tcp/PORT and a /p2p/PEER_ID part; {fix}")
    try:
        from libp2p.peer.id import ID

        ID.from_base58(ma.value_for_protocol("p2p"))
    except Exception:
        raise ConfigError(f"config error: {label} = {addr!r} has an invalid peer id; {fix}") from None


def validate(cfg: Config) -> None:
    for key, choices in CHOICES.items():
        if _value(cfg, key) not in choices:
            raise _bad(key, _value(cfg, key), f"must be one of {', '.join(choices)}", choices[0])
    p, i, m, n, e = cfg.problem, cfg.island, cfg.migration, cfg.network, cfg.evaluation
    _validate_problem(cfg)
    if not 1 <= p.dim <= codec.MAX_DIM:
        raise _bad("problem.dim", p.dim, f"must be in 1..{codec.MAX_DIM}", 30)
    if not p.hidden or any(h < 1 or h > 1024 for h in p.hidden):
        raise _bad("problem.hidden", ",".join(map(str, p.hidden)), "must be 1 to many layer sizes in 1..1024",
                   "32,32")
    if not 1 <= p.episodes <= 64:
        raise _bad("problem.episodes", p.episodes, "must be in 1..64", 1)
    if p.max_steps is not None and not 1 <= p.max_steps <= 100_000:
        raise _bad("problem.max_steps", p.max_steps, "must be in 1..100000", 1000)
    if not (math.isfinite(i.sigma) and i.sigma > 0):
        raise _bad("island.sigma", i.sigma, "must be a finite number > 0", 0.5)
    if i.popsize is not None and not 4 <= i.popsize <= 100_000:
        raise _bad("island.popsize", i.popsize, "must be in 4..100000", 32)
    if i.optimizer == Algorithm.OPENAI_ES and cfg.popsize is not None and cfg.popsize % 2:
        raise _bad("island.popsize", cfg.popsize, "must be even for openai-es (antithetic pairs)", 32)
    if i.seed is not None and not 0 <= i.seed < 2**63:
        raise _bad("island.seed", i.seed, "must be in 0..2**63-1", 1)
    if not (math.isfinite(i.lr) and i.lr > 0):
        raise _bad("island.lr", i.lr, "must be > 0", 0.03)
    if m.interval < 1:
        raise _bad("migration.interval", m.interval, "must be >= 1", 10)
    if m.random_k < 1:
        raise _bad("migration.random_k", m.random_k, "must be >= 1", 2)
    if m.max_pending < 1:
        raise _bad("migration.max_pending", m.max_pending, "must be >= 1", 8)
    if not 0 <= m.network_rate <= 1000:
        raise _bad("migration.network_rate", m.network_rate, "must be in 0..1000 (0: no network-wide budget)", 0.5)
    if not m.min_publish_interval_s >= 0:
        raise _bad("migration.min_publish_interval_s", m.min_publish_interval_s, "must be >= 0", 1.0)
    if not (math.isfinite(m.accept_margin) and m.accept_margin >= 0):
        raise _bad("migration.accept_margin", m.accept_margin, "must be >= 0", 0)
    if not 0 <= m.max_lies <= 1_000_000:
        raise _bad("migration.max_lies", m.max_lies, "must be in 0..1000000 (0 = never ban)", 3)
    if not 256 <= m.gossip_max_bytes <= codec.MAX_ELITE_BYTES:
        raise _bad("migration.gossip_max_bytes", m.gossip_max_bytes, f"must be in 256..{codec.MAX_ELITE_BYTES}",
                   codec.GOSSIP_MAX_BYTES)
    if m.reeval_episodes is not None and not 1 <= m.reeval_episodes <= 64:
        raise _bad("migration.reeval_episodes", m.reeval_episodes, "must be in 1..64", 3)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{0,64}", cfg.pool.name):
        raise _bad("pool.name", cfg.pool.name, "must be up to 64 letters, digits, '_', '.' or '-' (\"\": no pool)",
                   "lab")
    if not 0 <= cfg.pool.check_share <= 1:
        raise _bad("pool.check_share", cfg.pool.check_share, "must be in 0..1", 0.05)
    if not 0 <= cfg.pool.help_after <= 100:
        raise _bad("pool.help_after", cfg.pool.help_after, "must be in 0..100", 0.5)
    if not 0 <= cfg.pool.min_help_wait_s <= 10:
        raise _bad("pool.min_help_wait_s", cfg.pool.min_help_wait_s, "must be in 0..10", 0.2)
    if not n.listen:
        raise _bad("network.listen", n.listen, "needs at least one address", "/ip4/127.0.0.1/tcp/0")
    for a in n.listen:
        check_listen_addr(a)
    for a in n.bootstrap:
        check_peer_addr(a, "network.bootstrap", fix_hint("network.bootstrap", "/ip4/HOST/tcp/PORT/p2p/PEER_ID or /dns4/NAME/tcp/PORT/p2p/PEER_ID"))
    if not 0.05 <= n.heartbeat_s <= 120:
        raise _bad("network.heartbeat_s", n.heartbeat_s, "must be in 0.05..120", 1.0)
    for key, value in (("network.degree_low", n.degree_low), ("network.degree", n.degree),
                       ("network.degree_high", n.degree_high)):
        if not 1 <= n.degree_low <= n.degree <= n.degree_high:
            raise _bad(key, value, f"needs 1 <= degree_low <= degree <= degree_high, here {n.degree_low} <= "
                       f"{n.degree} <= {n.degree_high}", {"network.degree_low": 3, "network.degree": 4}.get(key, 5))
    if not 1024 <= n.max_rpc_bytes <= 64 << 20:
        raise _bad("network.max_rpc_bytes", n.max_rpc_bytes, "must be in 1 KiB..64 MiB", 1 << 20)
    if not 0 < n.refresh_min_s:
        raise _bad("network.refresh_min_s", n.refresh_min_s, "must be > 0", 2.0)
    if not n.refresh_min_s <= n.refresh_max_s:
        raise _bad("network.refresh_max_s", n.refresh_max_s, f"must be >= refresh_min_s ({n.refresh_min_s})", 300)
    if not (n.keepalive_s == 0 or 0.5 <= n.keepalive_s <= 3600):
        raise _bad("network.keepalive_s", n.keepalive_s, "must be 0 (off) or in 0.5..3600", 5.0)
    if not 0 <= n.gossip_peers <= 64:
        raise _bad("network.gossip_peers", n.gossip_peers, "must be in 0..64", 3)
    if not 0 <= n.keepalive_rate <= 1000:
        raise _bad("network.keepalive_rate", n.keepalive_rate, "must be in 0..1000 (0: no cap)", 0.25)
    if n.max_peers < 1:
        raise _bad("network.max_peers", n.max_peers, "must be >= 1", 64)
    if not (math.isfinite(n.autonat_interval_s) and 5 <= n.autonat_interval_s <= 86400):
        raise _bad("network.autonat_interval_s", n.autonat_interval_s, "must be in 5..86400", 120)
    if not 1 <= n.autonat_confirmations <= 16:
        raise _bad("network.autonat_confirmations", n.autonat_confirmations, "must be in 1..16", 2)
    if not 0 <= n.relay_reservations <= 16:
        raise _bad("network.relay_reservations", n.relay_reservations, "must be in 0..16", 2)
    if not 0 <= n.relay_max_reservations <= 4096:
        raise _bad("network.relay_max_reservations", n.relay_max_reservations, "must be in 0..4096", 32)
    if not 1 <= n.relay_circuits_per_peer <= 64:
        raise _bad("network.relay_circuits_per_peer", n.relay_circuits_per_peer, "must be in 1..64", 4)
    if not 1024 <= n.relay_circuit_bytes <= 1 << 30:
        raise _bad("network.relay_circuit_bytes", n.relay_circuit_bytes, "must be in 1 KiB..1 GiB", 1 << 20)
    if not 0 <= n.relay_fetch_max_bytes <= 1 << 30:
        raise _bad("network.relay_fetch_max_bytes", n.relay_fetch_max_bytes, "must be in 0..1 GiB", 64 * 1024)
    if not 1 <= n.relay_circuit_s <= 86400:
        raise _bad("network.relay_circuit_s", n.relay_circuit_s, "must be in 1..86400", 600)
    if not 30 <= n.relay_reservation_ttl_s <= 86400:
        raise _bad("network.relay_reservation_ttl_s", n.relay_reservation_ttl_s, "must be in 30..86400", 900)
    if not 1 <= n.max_inbound_per_ip <= 4096:
        raise _bad("network.max_inbound_per_ip", n.max_inbound_per_ip, "must be in 1..4096", 8)
    for cidr in n.limits_exempt:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise _bad("network.limits_exempt", list(n.limits_exempt), f"{cidr!r} is not an IP network",
                       '["127.0.0.0/8"]') from None
    if cfg.metrics_port is not None and not 1 <= cfg.metrics_port <= 65535:
        raise _bad("metrics_port", cfg.metrics_port, "must be in 1..65535", 9100)
    if not 0 <= e.workers <= 1024:
        raise _bad("evaluation.workers", e.workers, "must be in 0..1024 (0 = evaluate in a thread)", 2)
    if not 0.01 <= e.duty_cycle <= 1.0:
        raise _bad("evaluation.duty_cycle", e.duty_cycle, "must be in 0.01..1", 0.5)
    if cfg.max_generations is not None and cfg.max_generations < 1:
        raise _bad("max_generations", cfg.max_generations, "must be >= 1", 100)
    if not 0 <= cfg.telemetry_rate <= 1000:
        raise _bad("telemetry_rate", cfg.telemetry_rate, "must be in 0..1000 (0: no network-wide budget)", 0.05)
    if not 0.2 <= cfg.telemetry_interval_s <= 3600:
        raise _bad("telemetry_interval_s", cfg.telemetry_interval_s, "must be in 0.2..3600", 5)
    if cfg.target_fitness is not None and not math.isfinite(cfg.target_fitness):
        raise _bad("target_fitness", cfg.target_fitness, "must be finite", 200)
    if not 1 <= cfg.test_episodes <= 10_000:
        raise _bad("test_episodes", cfg.test_episodes, "must be in 1..10000", 100)
    if not cfg.test_interval_s >= 0:
        raise _bad("test_interval_s", cfg.test_interval_s, "must be >= 0", 20)
    if not 0 <= cfg.test_share <= 0.5:
        raise _bad("test_share", cfg.test_share, "must be in 0..0.5 (0: test only at the target)", 0.05)
    # gym, torch and plugin problems know their default target only once resolved (validate_resolved)
    if cfg.stop_at_target and not (p.is_gym or p.is_torch or p.is_plugin) and cfg.target is None:
        raise _bad("target_fitness", None, f"stop_at_target needs a target, and {p.name} has no default one", 0)
    if not cfg.log_interval_s >= 0:
        raise _bad("log_interval_s", cfg.log_interval_s, "must be >= 0", 1)
    if not cfg.checkpoint_interval_s > 0:
        raise _bad("checkpoint_interval_s", cfg.checkpoint_interval_s, "must be > 0", 10)


def _validate_problem(cfg: Config) -> None:
    p = cfg.problem
    if p.is_gym and not re.fullmatch(r"[A-Za-z0-9_.:/-]{1,128}", p.name[len(GYM_PREFIX):]):
        raise _bad("problem.name", p.name, "needs a gymnasium env id after gym: (e.g. gym:CartPole-v1)",
                   "gym:CartPole-v1")
    if p.is_plugin and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", p.name):
        raise _bad("problem.name", p.name, f"must be one of {', '.join(PROBLEMS)}, gym:<EnvId> (any gymnasium "
                   f"env), package.module:name or an entry-point name (your own Problem)", PROBLEMS[0])
    if p.is_torch and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*", p.name[len(TORCH_PREFIX):]):
        raise _bad("problem.name", p.name, "needs package.module:factory after torch: (a function returning your "
                   "torch.nn.Module)", "torch:mypolicy:make")
    if (p.is_gym or p.is_plugin) and cfg.evaluation.backend == "torch":
        raise _bad("evaluation.backend", "torch", f"runs lunarlander and spirals only, not {p.name}", "numpy")
    if p.env and not p.is_torch:
        raise ConfigError(f"config error: problem.env = {p.env!r} applies to torch:<factory> problems only, not "
                          f"{p.name}; remove it (gym envs are named --problem gym:<EnvId>)")
    if p.env and not re.fullmatch(r"[A-Za-z0-9_.:/-]{1,128}", p.env):
        raise _bad("problem.env", p.env, "must be a gymnasium env id", "CartPole-v1")
    if not (p.is_gym or p.is_torch):
        if p.env_args:
            raise ConfigError(f"config error: {ENV_ARGS_KEY} = {dict(p.env_args)!r} applies to gym:<EnvId> and "
                              f"torch:<factory> problems only, not {p.name}; remove [problem.env_args] and "
                              f"--set {ENV_ARGS_KEY}.KEY")
        if p.obs_norm != "none":
            raise _bad("problem.obs_norm", p.obs_norm, f"applies to gym:<EnvId> and torch:<factory> problems only, "
                       f"not {p.name}", "none")
    if not (math.isfinite(p.obs_clip) and 0 < p.obs_clip <= 1e6):
        raise _bad("problem.obs_clip", p.obs_clip, "must be in (0, 1e6]", 5.0)


def load_bootstrap_file(cfg: Config) -> tuple[str, ...]:
    """Bootstrap multiaddrs from bootstrap_nodes.toml (``bootstrap = ["/ip4/.../p2p/..."]``)."""
    if cfg.network.bootstrap_file is not None:
        path = Path(cfg.network.bootstrap_file)
        if not path.exists():
            raise ConfigError(f"config error: network.bootstrap_file = {str(path)!r} does not exist; "
                              f"create it or {fix_hint('network.bootstrap_file', 'FILE')}")
    else:
        candidates = [Path.cwd() / "bootstrap_nodes.toml", Path(__file__).resolve().parent.parent / "bootstrap_nodes.toml"]
        path = next((c for c in candidates if c.exists()), None)  # type: ignore[assignment]
        if path is None:
            return ()
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config error: {path} is not a readable TOML file ({e}); fix it or "
                          f"{fix_hint('network.bootstrap_file', 'FILE')}") from None
    addrs = doc.get("bootstrap", [])
    if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
        raise ConfigError(f"config error: {path}: bootstrap must be a list of multiaddr strings")
    for a in addrs:
        check_peer_addr(a, f"{path}: bootstrap", "fix the entry (format /ip4/HOST/tcp/PORT/p2p/PEER_ID, /dns4/NAME/tcp/PORT/p2p/PEER_ID "
                                                  "or /dnsaddr/NAME/p2p/PEER_ID)")
    return tuple(addrs)
