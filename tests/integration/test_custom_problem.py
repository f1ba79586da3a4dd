"""A user's own Problem (examples/tiny_regression) found by module path and by entry point, checked
at config time, its experiment id made from its package and version, run by a 2-node swarm."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import trio

from gaia_p2p.cli import render_status
from gaia_p2p.config import build_config
from gaia_p2p.core.experiment import experiment_id
from gaia_p2p.errors import ConfigError, EvaluationError
from gaia_p2p.node.runtime import Node, run
from gaia_p2p.problems import plugin
from gaia_p2p.problems.evaluate import evaluate_batch

from swarm_helpers import node_config, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_regression"
REF = "gaia_tiny_regression:TinyRegression"


@pytest.fixture
def example(monkeypatch):
    """The example importable (as if pip-installed) and the plugin cache empty before and after."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    plugin.load.cache_clear()
    yield
    plugin.load.cache_clear()
    sys.modules.pop("gaia_tiny_regression", None)


def problem_of(name: str):
    return build_config(env={}, overrides={"problem": {"name": name}}).problem


class _FakeEntryPoint:
    """What importlib.metadata gives for `[project.entry-points."gaia_p2p.problems"]` of an installed
    distribution (examples/tiny_regression/pyproject.toml), without installing it."""

    def __init__(self, name: str, value: str, dist: str, version: str) -> None:
        self.name, self.value, self.group = name, value, plugin.ENTRY_POINT_GROUP
        self.dist = types.SimpleNamespace(name=dist, version=version)

    def load(self):
        return importlib.metadata.EntryPoint(self.name, self.value, self.group).load()


def fake_entry_points(monkeypatch, version: str = "0.1.0") -> None:
    eps = [_FakeEntryPoint("tiny-regression", REF, "gaia-tiny-regression", version)]
    monkeypatch.setattr(plugin, "_entry_points", lambda: eps)
    plugin.load.cache_clear()


def test_the_example_pyproject_declares_the_entry_point():
    import tomllib

    doc = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert doc["project"]["entry-points"][plugin.ENTRY_POINT_GROUP] == {"tiny-regression": REF}


def test_found_by_module_path(example):
    p = problem_of(REF)
    assert (p.param_dim, p.deterministic, p.plugin.name, p.plugin.version) == (8, False, "tiny-regression", "1")
    cfg = build_config(env={}, overrides={"problem": {"name": REF}})
    assert cfg.target == -0.02 and cfg.reeval_episodes == 3  # its target; noisy: re-evaluated on 3 episodes
    X = np.vstack([np.zeros(8), np.linspace(-1, 1, 8)])
    f = evaluate_batch(p, X, (1, 2))
    assert f.shape == (2,) and f[1] > f[0] and f[1] > -0.02  # the true weights score near the noise floor
    assert not np.array_equal(f, evaluate_batch(p, X, (3, 4)))  # noisy: the seeds matter


def test_found_by_entry_point_and_its_package_version_is_in_the_id(example, monkeypatch):
    fake_entry_points(monkeypatch, "0.1.0")
    p = problem_of("tiny-regression")
    assert (p.plugin.dist, p.plugin.dist_version) == ("gaia-tiny-regression", "0.1.0")
    id_010 = experiment_id(p)
    fake_entry_points(monkeypatch, "0.2.0")
    assert experiment_id(problem_of("tiny-regression")) != id_010  # new code, new experiment
    with pytest.raises(ConfigError, match=r"no installed package declares an entry point 'nope'.*installed: tiny-regression"):
        problem_of("nope")


def test_plugin_ids_differ_when_anything_that_changes_fitness_differs(example):
    base = problem_of(REF)
    info = base.plugin
    variants = [dataclasses.replace(info, **change) for change in (
        {"name": "other"}, {"version": "2"}, {"dim": 9}, {"deterministic": True}, {"dist": "x"},
        {"dist_version": "9"}, {"config": (("noise", 0.2),)})]
    ids = {experiment_id(dataclasses.replace(base, plugin=v)) for v in (info, *variants)}
    assert len(ids) == 1 + len(variants)
    # how it was named is not: a module path and an entry point of one package are one experiment
    assert experiment_id(dataclasses.replace(base, plugin=dataclasses.replace(info, ref="x"))) == experiment_id(base)


class _NoDim:
    name, version, deterministic, target = "x", "1", False, None

    def evaluate(self, X, seeds):
        return np.zeros(len(X))


class _BadOutput:
    name, version, dim, deterministic, target = "bad", "1", 3, True, None

    def __init__(self, out):
        self.out = out

    def evaluate(self, X, seeds):
        return self.out(X)


@pytest.mark.parametrize(("attr", "expected"), [
    ("NoDim", "is not a Problem: .*dim"),
    ("BadVersion", "version"),
    ("HugeDim", "dim 300000 must be an int in 1..262144"),
    ("BadConfig", "config"),
    ("missing", "has no missing"),
])
def test_a_bad_problem_is_a_one_line_config_error(monkeypatch, attr, expected):
    mod = types.ModuleType("gaia_bad_problems")
    mod.NoDim = _NoDim
    mod.BadVersion = type("BadVersion", (_NoDim,), {"dim": 3, "version": ""})
    mod.HugeDim = type("HugeDim", (_NoDim,), {"dim": 300000})
    mod.BadConfig = type("BadConfig", (_NoDim,), {"dim": 3, "config": lambda self: {"x": [1, 2]}})
    monkeypatch.setitem(sys.modules, "gaia_bad_problems", mod)
    plugin.load.cache_clear()
    with pytest.raises(ConfigError, match=expected) as e:
        problem_of(f"gaia_bad_problems:{attr}")
    assert "\n" not in str(e.value) and "--problem" in str(e.value)


@pytest.mark.parametrize("out", [lambda X: np.zeros(len(X) + 1), lambda X: np.full(len(X), np.nan),
                                 lambda X: "not numbers"])
def test_a_bad_evaluate_answer_is_an_evaluation_error(monkeypatch, out):
    mod = types.ModuleType("gaia_bad_out")
    mod.make = lambda: _BadOutput(out)
    monkeypatch.setitem(sys.modules, "gaia_bad_out", mod)
    plugin.load.cache_clear()
    p = problem_of("gaia_bad_out:make")  # a factory function works too
    with pytest.raises(EvaluationError, match="gaia_bad_out:make"):
        evaluate_batch(p, np.zeros((2, 3)), ())


def test_the_plugin_cache_is_bounded(monkeypatch):
    mod = types.ModuleType("gaia_many")
    for i in range(6):
        setattr(mod, f"P{i}", type(f"P{i}", (_NoDim,), {"dim": 2 + i}))
    monkeypatch.setitem(sys.modules, "gaia_many", mod)
    plugin.load.cache_clear()
    for i in range(6):
        problem_of(f"gaia_many:P{i}")
    assert plugin.load.cache_info().currsize == plugin.load.cache_info().maxsize == 4


async def test_two_nodes_train_the_example_and_status_says_what_the_id_is_made_from(tmp_path, example, monkeypatch):
    fake_entry_points(monkeypatch)

    def cfg(i: int, bootstrap: tuple[str, ...] = ()):
        c = node_config(tmp_path, i, bootstrap=bootstrap, problem="tiny-regression", popsize=8)
        return dataclasses.replace(c, migration=dataclasses.replace(c.migration, interval=2))

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            a: Node = await nursery.start(run, cfg(0))
            b: Node = await nursery.start(run, cfg(1, (a.addrs()[0],)))
            assert a.exp_id == b.exp_id
            await wait_until(lambda: b.peer_id in a.p2p.topic_peers(a.topic.topic)
                             and a.peer_id in b.p2p.topic_peers(b.topic.topic), "both on the topic", 30)
            await wait_until(lambda: a.island.counters.received + b.island.counters.received >= 1,
                             "a migrant received", 40, on=(a, b))
            await wait_until(lambda: min(a.island.generation, b.island.generation) >= 5, "5 generations each", 30, on=(a, b))
            for node in (a, b):
                s = node.status()
                assert s["experiment"]["id"] == node.exp_id == experiment_id(node.cfg.problem)
                made = s["experiment"]["made_from"]
                assert (made["problem"], made["name"], made["dist"], made["dist_version"]) == (
                    "plugin", "tiny-regression", "gaia-tiny-regression", "0.1.0")
                assert s["migrants"]["rejected"].get("wrong_experiment", 0) == 0
                text = render_status(s)
                assert "made from     plugin tiny-regression 1 from gaia-tiny-regression 0.1.0, noisy" in text, text
                assert "target          -0.02: " in text, text  # not rounded to -0.0
                assert np.isfinite(node.island.best_fitness)
            nursery.cancel_scope.cancel()
