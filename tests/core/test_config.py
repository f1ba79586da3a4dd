"""gaia_p2p.config: precedence defaults < TOML < env < overrides, and every bad input is a ConfigError.

Every test passes ``env=`` explicitly, so the developer's own GAIA_* variables never leak in.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

from gaia_p2p.cli import build_parser
from gaia_p2p.config import (
    CHOICES,
    DEFAULT_LISTEN,
    DEFAULT_LISTEN6,
    FLAGS,
    SECTIONS,
    Config,
    IslandConfig,
    MigrationConfig,
    all_keys,
    build_config,
    load_bootstrap_file,
    parse_set,
)
from gaia_p2p.core.experiment import ProblemConfig
from gaia_p2p.errors import ConfigError

PEER = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
GOOD_BOOTSTRAP = f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}"


def write(tmp_path: Path, text: str, name: str = "gaia.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(field: str, **kw: Any) -> str:
    """Build a config that must fail; check the message shape and return it."""
    kw.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        build_config(**kw)
    msg = str(info.value)
    assert msg.startswith("config error:"), msg
    assert field in msg, msg
    assert "\n" not in msg, msg  # the CLI prints it as one line
    return msg


# ------------------------------------------------------------------------------------------------
# precedence


def test_defaults():
    cfg = build_config(env={})
    assert cfg.problem == ProblemConfig()
    assert cfg.island == IslandConfig()
    assert cfg.migration == MigrationConfig()
    assert cfg.network.listen == (DEFAULT_LISTEN, DEFAULT_LISTEN6) == ("/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001")
    assert cfg.network.bootstrap == ()
    assert (cfg.log_format, cfg.log_level, cfg.max_generations, cfg.fresh) == ("auto", "info", None, False)
    assert isinstance(cfg.data_dir, Path)
    assert cfg.popsize == 32  # lunarlander


def test_precedence_defaults_toml_env_overrides(tmp_path):
    toml = write(tmp_path, """
log_level = "warning"
[island]
sigma = 0.7
seed = 3
[migration]
interval = 4
topology = "ring"
[problem]
name = "sphere"
dim = 12
""")
    env = {"GAIA_ISLAND_SIGMA": "0.8", "GAIA_MIGRATION_INTERVAL": "5", "GAIA_LOG_LEVEL": "error"}
    overrides = {"island": {"sigma": 0.9, "seed": None}, "": {"log_level": None}}

    assert build_config(env={}).island.sigma == 0.5
    toml_only = build_config(toml_path=toml, env={})
    assert (toml_only.island.sigma, toml_only.migration.interval, toml_only.log_level) == (0.7, 4, "warning")
    with_env = build_config(toml_path=toml, env=env)
    assert (with_env.island.sigma, with_env.migration.interval, with_env.log_level) == (0.8, 5, "error")
    full = build_config(toml_path=toml, env=env, overrides=overrides)
    assert full.island.sigma == 0.9  # flag beats env beats file
    assert full.island.seed == 3  # a None override (flag not given) changes nothing
    assert full.log_level == "error"
    assert full.migration.interval == 5
    assert (full.migration.topology, full.problem.name, full.problem.dim) == ("ring", "sphere", 12)
    assert full.popsize is None  # sphere + cmaes: pycma's default


def test_env_values_are_coerced_and_other_variables_ignored(tmp_path):
    env = {
        "GAIA_MIGRATION_ENABLED": "false",
        "GAIA_MIGRATION_ACCEPT_ONLY_BETTER": "0",
        "GAIA_NETWORK_LISTEN": "/ip4/127.0.0.1/tcp/0, /ip6/::1/tcp/0",
        "GAIA_NETWORK_BOOTSTRAP": GOOD_BOOTSTRAP,
        "GAIA_PROBLEM_HIDDEN": "32,32",
        "GAIA_ISLAND_POPSIZE": "20",
        "GAIA_DATA_DIR": str(tmp_path / "data"),
        "GAIA_MAX_GENERATIONS": "7",
        "GAIA_NOT_A_SETTING": "whatever",  # top level: not ours, ignored
        "HOME": "/nowhere",
        "ISLAND_SIGMA": "-1",  # no GAIA_ prefix
    }
    cfg = build_config(env=env)
    assert cfg.migration.enabled is False and cfg.migration.accept_only_better is False
    assert cfg.network.listen == ("/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0")
    assert cfg.network.bootstrap == (GOOD_BOOTSTRAP,)
    assert cfg.problem.hidden == (32, 32)
    assert cfg.island.popsize == 20 and cfg.popsize == 20
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.max_generations == 7
    assert cfg.island.sigma == 0.5


def test_config_is_frozen():
    cfg = build_config(env={})
    with pytest.raises(AttributeError):
        cfg.island.sigma = 1.0  # type: ignore[misc]
    assert isinstance(cfg, Config)


# ------------------------------------------------------------------------------------------------
# validation


INVALID = [
    ("problem", "name", "pong", "problem.name"),
    ("problem", "dim", 0, "problem.dim"),
    ("problem", "dim", 262145, "problem.dim"),
    ("problem", "hidden", (), "problem.hidden"),
    ("problem", "hidden", (16, 0), "problem.hidden"),
    ("problem", "episodes", 0, "problem.episodes"),
    ("problem", "max_steps", 0, "problem.max_steps"),
    ("island", "optimizer", "sgd", "island.optimizer"),
    ("island", "sigma", -1.0, "island.sigma"),
    ("island", "sigma", 0.0, "island.sigma"),
    ("island", "sigma", math.nan, "island.sigma"),
    ("island", "sigma", math.inf, "island.sigma"),
    ("island", "popsize", 2, "island.popsize"),
    ("island", "seed", -1, "island.seed"),
    ("island", "lr", 0.0, "island.lr"),
    ("migration", "topology", "star", "migration.topology"),
    ("migration", "interval", 0, "migration.interval"),
    ("migration", "random_k", 0, "migration.random_k"),
    ("migration", "max_pending", 0, "migration.max_pending"),
    ("migration", "min_publish_interval_s", -1.0, "migration.min_publish_interval_s"),
    ("migration", "network_rate", -0.1, "migration.network_rate"),
    ("network", "keepalive_rate", -1.0, "network.keepalive_rate"),
    ("evaluation", "duty_cycle", 0.0, "evaluation.duty_cycle"),
    ("evaluation", "duty_cycle", 1.5, "evaluation.duty_cycle"),
    ("evaluation", "duty_clock", "sundial", "evaluation.duty_clock"),
    ("", "telemetry_rate", -1.0, "telemetry_rate"),
    ("network", "listen", (), "network.listen"),
    ("network", "heartbeat_s", 0.0, "network.heartbeat_s"),
    ("network", "degree", 100, "network.degree"),
    ("network", "max_rpc_bytes", 10, "network.max_rpc_bytes"),
    ("network", "refresh_min_s", 0.0, "network.refresh_min_s"),
    ("network", "max_peers", 0, "network.max_peers"),
    ("network", "autonat_interval_s", 1.0, "network.autonat_interval_s"),
    ("network", "autonat_interval_s", math.inf, "network.autonat_interval_s"),
    ("network", "autonat_confirmations", 0, "network.autonat_confirmations"),
    ("evaluation", "workers", -1, "evaluation.workers"),
    ("evaluation", "backend", "jax", "evaluation.backend"),
    ("", "log_format", "xml", "log_format"),
    ("", "log_level", "loud", "log_level"),
    ("", "max_generations", 0, "max_generations"),
    ("", "checkpoint_interval_s", 0.0, "checkpoint_interval_s"),
]


@pytest.mark.parametrize(("section", "name", "value", "field"), INVALID,
                         ids=[f"{f}={v!r}" for _, _, v, f in INVALID])
def test_every_invalid_value_is_a_config_error_naming_its_field(section, name, value, field):
    config_error(field, overrides={section: {name: value}})


def test_openai_es_needs_an_even_population():
    msg = config_error("island.popsize", overrides={"island": {"optimizer": "openai-es", "popsize": 7}})
    assert "even" in msg
    assert build_config(env={}, overrides={"island": {"optimizer": "openai-es"}}).popsize == 32


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"GAIA_ISLAND_SIGMA": "abc"}, "island.sigma"),
        ({"GAIA_ISLAND_POPSIZE": "many"}, "island.popsize"),
        ({"GAIA_MIGRATION_ENABLED": "maybe"}, "migration.enabled"),
        ({"GAIA_PROBLEM_HIDDEN": "16,x"}, "problem.hidden"),
        ({"GAIA_MAX_GENERATIONS": "1.5"}, "max_generations"),
        ({"GAIA_ISLAND_SIGMA": "-2"}, "island.sigma"),
        ({"GAIA_ISLAND_SIGMAA": "1"}, "island.sigmaa"),  # a typo in a section's variable is not ignored
    ],
)
def test_bad_env_values_are_config_errors(env, field):
    config_error(field, env=env)


def test_a_type_error_names_value_and_fix():
    msg = config_error("island.sigma", env={"GAIA_ISLAND_SIGMA": "abc"})
    assert "'abc'" in msg and "--sigma" in msg


# ------------------------------------------------------------------------------------------------
# the TOML file


def test_unknown_toml_keys_are_rejected(tmp_path):
    msg = config_error("island.sigmaa", toml_path=write(tmp_path, "[island]\nsigmaa = 0.3\n"))
    assert "sigma" in msg.split("known:")[1]  # lists what is known
    config_error("colour", toml_path=write(tmp_path, 'colour = "blue"\n', "top.toml"))
    config_error("islands", toml_path=write(tmp_path, "[islands]\nsigma = 0.3\n", "section.toml"))
    config_error("[island]", toml_path=write(tmp_path, "island = 3\n", "not_table.toml"))


def test_bad_toml_values_are_rejected(tmp_path):
    config_error("island.sigma", toml_path=write(tmp_path, '[island]\nsigma = "wide"\n'))
    config_error("migration.interval", toml_path=write(tmp_path, "[migration]\ninterval = 2.5\n", "i.toml"))
    config_error("problem.hidden", toml_path=write(tmp_path, '[problem]\nhidden = 16\n', "h.toml"))


def test_toml_that_does_not_parse_or_does_not_exist(tmp_path):
    bad = write(tmp_path, "[island\nsigma = \n")
    msg = config_error(bad, toml_path=bad)
    assert "not valid TOML" in msg
    missing = str(tmp_path / "nope.toml")
    msg = config_error(missing, toml_path=missing)
    assert "does not exist" in msg and "--config" in msg


# ------------------------------------------------------------------------------------------------
# multiaddrs


@pytest.mark.parametrize("addr", [
    "garbage",
    "/ip4/127.0.0.1/udp/1",
    "/ip4/127.0.0.1",
    "/ip4/999.1.1.1/tcp/1",
    "/ip4/127.0.0.1/tcp/99999",
    f"/ip4/127.0.0.1/tcp/0/p2p/{PEER}",
])
def test_bad_listen_addresses(addr):
    msg = config_error("network.listen", overrides={"network": {"listen": (addr,)}})
    assert repr(addr) in msg and "--listen" in msg


@pytest.mark.parametrize("addr", [
    "garbage",
    "/ip4/10.0.0.1/tcp/4001",  # no peer id
    f"/ip4/10.0.0.1/udp/4001/p2p/{PEER}",  # not tcp
    "/ip4/10.0.0.1/tcp/4001/p2p/0OIl",  # not base58
    f"/dnsaddr/example.com/tcp/4001/p2p/{PEER}",  # dnsaddr names no port: its TXT records do
    f"/unix/tmp/sock/p2p/{PEER}",
])
def test_bad_bootstrap_addresses(addr):
    msg = config_error("network.bootstrap", overrides={"network": {"bootstrap": (GOOD_BOOTSTRAP, addr)}})
    assert repr(addr) in msg


def test_good_addresses_pass():
    cfg = build_config(env={}, overrides={"network": {
        "listen": ("/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/4001"),
        "bootstrap": (GOOD_BOOTSTRAP, f"/dns4/example.com/tcp/4001/p2p/{PEER}", f"/dns6/example.com/tcp/4001/p2p/{PEER}",
                      f"/dnsaddr/example.com/p2p/{PEER}", "/dnsaddr/example.com"),
    }})  # names are only checked for form here; they are resolved at start (tests/integration/test_dns_bootstrap.py)
    assert len(cfg.network.listen) == 2 and len(cfg.network.bootstrap) == 5


# ------------------------------------------------------------------------------------------------
# bootstrap_nodes.toml


def with_bootstrap_file(path: str | None) -> Config:
    return build_config(env={}, overrides={"network": {"bootstrap_file": path}})


def test_bootstrap_file_good(tmp_path):
    other = f"/ip4/10.0.0.2/tcp/4002/p2p/{PEER}"
    path = write(tmp_path, f'bootstrap = ["{GOOD_BOOTSTRAP}", "{other}"]\n', "bootstrap_nodes.toml")
    assert load_bootstrap_file(with_bootstrap_file(path)) == (GOOD_BOOTSTRAP, other)
    empty = write(tmp_path, "bootstrap = []\n", "empty.toml")
    assert load_bootstrap_file(with_bootstrap_file(empty)) == ()


def test_bootstrap_file_default_is_looked_up_in_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path, f'bootstrap = ["{GOOD_BOOTSTRAP}"]\n', "bootstrap_nodes.toml")
    monkeypatch.chdir(tmp_path)
    assert load_bootstrap_file(with_bootstrap_file(None)) == (GOOD_BOOTSTRAP,)


@pytest.mark.parametrize(("text", "expected"), [
    ("bootstrap = [\n", "not a readable TOML file"),
    ('bootstrap = ["garbage"]\n', "'garbage'"),
    (f'bootstrap = ["/ip4/10.0.0.1/tcp/4001", "{GOOD_BOOTSTRAP}"]\n', "/p2p/PEER_ID"),
    ('bootstrap = "not a list"\n', "must be a list"),
    ("bootstrap = [1, 2]\n", "must be a list"),
])
def test_bootstrap_file_bad(tmp_path, text, expected):
    path = write(tmp_path, text, "bootstrap_nodes.toml")
    with pytest.raises(ConfigError) as info:
        load_bootstrap_file(with_bootstrap_file(path))
    msg = str(info.value)
    assert msg.startswith("config error:") and path in msg and expected in msg, msg


def test_bootstrap_file_given_but_missing(tmp_path):
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        load_bootstrap_file(with_bootstrap_file(missing))
    msg = str(info.value)
    assert msg.startswith("config error: network.bootstrap_file") and missing in msg and "does not exist" in msg


# ------------------------------------------------------------------------------------------------
# every config error names a flag or a key that exists


def start_flags() -> set[str]:
    """Every option string of the real `gaia-node start` parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt for action in sub.choices["start"]._actions for opt in action.option_strings}


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return '"' + str(value) + '"'


def bad_values(key: str) -> list[Any]:
    """Values of the wrong type and far out of any range for the setting's type."""
    section, _, name = key.rpartition(".")
    cls = SECTIONS[section] if section else Config
    typ = str(next(f.type for f in dataclasses.fields(cls) if f.name == name))
    if "tuple" in typ:
        return [5, ["x"], [], [0], ["garbage"]]
    if "bool" in typ:
        return ["maybe", 3]
    if "float" in typ:
        return ["wide", math.nan, -1e12, 1e12, 0.0, 0.011]
    if "int" in typ:
        return ["many", 2.5, -10**12, 10**12, 0, 1, 2]
    if "Path" in typ:
        return [5]
    return ["not-a-choice", 5, "no spaces/or slashes"]


KEYS = all_keys()


def test_the_schema_is_every_field():
    assert set(KEYS) == ({f.name for f in dataclasses.fields(Config)} - set(SECTIONS)) | {
        f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
        if not f.metadata.get("internal")}  # filled in at config time (a gym env's spaces, a plugin)
    assert set(FLAGS) <= set(KEYS) and set(CHOICES) <= set(KEYS)


def test_every_flag_of_the_table_is_in_the_parser():
    flags = start_flags()
    assert set(FLAGS.values()) <= flags
    assert {"--set", "--config"} <= flags
    assert len(flags - {"-h", "--help"}) <= 21  # a page a person reads, not every knob


@pytest.mark.parametrize("key", KEYS)
def test_a_bad_value_in_the_toml_file_names_a_flag_and_key_that_exist(tmp_path, key):
    flags, keys = start_flags(), set(KEYS)
    section, _, name = key.rpartition(".")
    messages = []
    for i, value in enumerate(bad_values(key)):
        line = f"{name} = {toml_literal(value)}\n"
        path = write(tmp_path, f"[{section}]\n{line}" if section else line, f"bad{i}.toml")
        overrides = {"": {"stop_at_target": True}} if key == "target_fitness" else None  # no bad float alone
        try:
            load_bootstrap_file(build_config(toml_path=path, env={}, overrides=overrides))
        except ConfigError as e:
            messages.append(str(e))
    assert messages, f"no bad value of {key} was rejected"
    for msg in messages:
        assert msg.startswith("config error:") and "\n" not in msg, msg
        named_flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", msg))
        assert named_flags <= flags, (named_flags - flags, msg)
        named_keys = set(re.findall(r"--set ([a-z0-9_.]+)=", msg))
        named_keys |= {f"{s}.{n}" for s, n in re.findall(r"\[([a-z]+)\] ([a-z0-9_]+) in the config file", msg)}
        named_keys |= set(re.findall(r"(?<![\w.-])([a-z0-9_]+) at the top of the config file", msg))
        assert named_keys <= keys, (named_keys - keys, msg)
        assert named_flags - {"--config"} or named_keys, f"names no flag or key: {msg}"
        assert name in msg, msg


def test_set_items_are_validated_like_every_other_source():
    assert parse_set(["migration.interval=5", "log_interval_s=0", "network.listen=/ip4/127.0.0.1/tcp/0"]) == {
        "migration": {"interval": "5"}, "": {"log_interval_s": "0"}, "network": {"listen": "/ip4/127.0.0.1/tcp/0"}}
    cfg = build_config(env={}, overrides=parse_set(["migration.interval=5", "migration.fetch=false",
                                                    "evaluation.duty_cycle=0.25", "problem.hidden=8,8"]))
    assert (cfg.migration.interval, cfg.migration.fetch, cfg.evaluation.duty_cycle, cfg.problem.hidden) == (
        5, False, 0.25, (8, 8))
    for items, field in ((["migration.intervall=5"], "did you mean migration.interval?"),
                         (["islands.sigma=1"], "unknown section [islands]"), (["island.sigma"], "KEY=VALUE")):
        with pytest.raises(ConfigError, match=re.escape(field)) as info:
            parse_set(items)
        assert str(info.value).startswith("config error:")
    msg = config_error("migration.interval", overrides=parse_set(["migration.interval=0"]))
    assert "--set migration.interval=10" in msg


def test_set_sits_at_flag_level(tmp_path):
    toml = write(tmp_path, "[migration]\ninterval = 4\n")
    env = {"GAIA_MIGRATION_INTERVAL": "6"}
    cfg = build_config(toml_path=toml, env=env, overrides=parse_set(["migration.interval=7"]))
    assert cfg.migration.interval == 7
    assert build_config(toml_path=toml, env=env).migration.interval == 6


def test_docs_config_lists_every_setting_with_its_flag():
    """docs/CONFIG.md is the reference of every key: a new setting without a row there fails here."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z0-9_.]+)` \|[^|]*\| (`--[a-z-]+`)? *\|", text, re.M)}
    assert set(rows) == set(KEYS), sorted(set(rows) ^ set(KEYS))
    assert {k: f.strip("`") for k, f in rows.items() if f} == FLAGS


def test_a_bad_value_names_where_it_came_from(tmp_path):
    toml = write(tmp_path, "[network]\nheartbeat_s = 0\n")
    assert config_error("network.heartbeat_s", toml_path=toml).endswith(f"(value from {toml})")
    msg = config_error("migration.interval", env={"GAIA_MIGRATION_INTERVAL": "x"})
    assert msg.endswith("(value from GAIA_MIGRATION_INTERVAL)"), msg
    msg = config_error("island.sigma", toml_path=toml, overrides={"island": {"sigma": -1.0}})
    assert msg.endswith("(value from the command line)"), msg


def test_elites_that_would_not_fit_the_wire_are_refused_at_start():
    """Every elite a config can produce fits MAX_ELITE_BYTES and the gossip RPC limit, or the config
    is refused naming the setting (protocols/gaia-migration-v1.md, "Parameters")."""
    from gaia_p2p.core import codec

    top = codec.MAX_DIM  # above MAX_PUBLISHABLE_DIM elites are announced, their parameters fetched
    sep = {"optimizer": "sep-cmaes"}
    assert build_config(env={}, overrides={"problem": {"name": "sphere", "dim": top}, "island": sep}
                        ).problem.param_dim == top
    msg = config_error("problem.dim", overrides={"problem": {"name": "sphere", "dim": top + 1}, "island": sep})
    assert "must be in 1..262144" in msg and "--dim" in msg, msg
    msg = config_error("problem.hidden", overrides={"problem": {"name": "lunarlander", "hidden": (1024, 256)},
                                                    "island": sep})
    assert f"more than the {top} an elite can carry" in msg, msg
    # the full CMA-ES's covariance is n x n: refused above 10,000 parameters, naming what scales
    msg = config_error("island.optimizer", overrides={"problem": {"name": "sphere", "dim": 20_000}})
    assert "3.2 GB" in msg and "use sep-cmaes or openai-es" in msg and "--optimizer" in msg, msg
    # a 64-64 MLP on BipedalWalker (24 observations, 4 actions): 6,020 parameters, a ~26 KB elite
    walker = {"problem": {"name": "gym:BipedalWalker-v3", "hidden": (64, 64)}}
    cfg = build_config(env={}, overrides=walker)
    assert cfg.problem.param_dim == 6020 and codec.max_elite_bytes(6020) < cfg.network.max_rpc_bytes
    msg = config_error("network.max_rpc_bytes", overrides={**walker, "network": {"max_rpc_bytes": 16384}})
    assert "below the 20480 bytes of a gossip RPC carrying one elite" in msg and "max_rpc_bytes=1048576" in msg, msg
    msg = config_error("migration.gossip_max_bytes", overrides={"migration": {"gossip_max_bytes": 300_000}})
    assert "must be in 256..262144" in msg, msg

