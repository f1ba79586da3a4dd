"""gaia_p2p.core stays pure: no trio, libp2p, structlog, gymnasium or torch; no clocks, no global RNG;
and no module of gaia_p2p imports from a layer above its own.

Two checks of the core, as trio keeps ``trio._core`` apart from the rest (docs/ARCHITECTURE.md,
"Packages and what may import what"):
- dynamic: import every core module in a fresh interpreter and look at ``sys.modules``;
- static: read every core file's AST for forbidden imports and global-RNG calls. (Dynamic alone
  cannot do that part: ``cma`` itself pulls in ``multiprocessing`` and so ``socket`` and ``time``.)

The layers (``LAYERS``) are read from every file's AST too, imports inside functions included:
a lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import gaia_p2p.core

CORE_DIR = Path(gaia_p2p.core.__file__).resolve().parent
GAIA_DIR = CORE_DIR.parent
CORE_FILES = sorted(CORE_DIR.glob("*.py"))
CORE_MODULES = sorted(m.name for m in pkgutil.iter_modules(gaia_p2p.core.__path__, "gaia_p2p.core."))

FORBIDDEN_LOADED = ("trio", "libp2p", "structlog", "gymnasium", "torch", "multiaddr", "trio_parallel")
ALLOWED_THIRD_PARTY = {"numpy", "msgpack", "cma", "gaia_p2p"}
ALLOWED_GAIA = {"gaia_p2p", "gaia_p2p.errors", "gaia_p2p.core"}

FORBIDDEN_IMPORTS = {
    "time", "random", "secrets", "uuid", "datetime", "socket", "os", "subprocess", "asyncio", "threading",
    "logging", "trio", "trio_parallel", "libp2p", "multiaddr", "structlog", "gymnasium", "torch",
}
# Seeded, explicit generators only; everything else in numpy.random is the global legacy RNG.
ALLOWED_NP_RANDOM = {"default_rng", "Generator", "SeedSequence", "BitGenerator", "PCG64", "PCG64DXSM", "Philox"}

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def test_core_modules_found():
    assert {"gaia_p2p.core.island", "gaia_p2p.core.optimizer", "gaia_p2p.core.codec", "gaia_p2p.core.migration",
            "gaia_p2p.core.events", "gaia_p2p.core.types", "gaia_p2p.core.experiment"} <= set(CORE_MODULES)


def test_importing_the_core_loads_no_io_framework():
    proc = subprocess.run([sys.executable, "-c", PROBE, *CORE_MODULES], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert set(CORE_MODULES) <= set(loaded)
    tops = {name.split(".")[0] for name in loaded}
    assert not tops & set(FORBIDDEN_LOADED), sorted(tops & set(FORBIDDEN_LOADED))
    # What numpy, msgpack and cma pull in themselves (pycma imports matplotlib when it is installed)
    # is theirs, not ours: measure it in a fresh interpreter and allow exactly that.
    base = subprocess.run([sys.executable, "-c", PROBE, "numpy", "msgpack", "cma"], capture_output=True,
                          text=True, timeout=60)
    assert base.returncode == 0, base.stderr
    allowed = ALLOWED_THIRD_PARTY | {name.split(".")[0] for name in json.loads(base.stdout)}
    third_party = {t for t in tops
                   if t not in sys.stdlib_module_names and not t.startswith("_") and t not in ("cython_runtime",)}
    assert third_party <= allowed, sorted(third_party - allowed)
    gaia = {name for name in loaded if name.startswith("gaia_p2p") and not name.startswith("gaia_p2p.core.")}
    assert gaia <= ALLOWED_GAIA, sorted(gaia - ALLOWED_GAIA)  # not the shell, problems, config or logs


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def where(node: ast.AST) -> str:
        return f"{path.name}:{node.lineno}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_IMPORTS:
                    found.append(f"{where(node)} import {alias.name}")
                if alias.name == "numpy.random":
                    found.append(f"{where(node)} import numpy.random")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"{where(node)} from {node.module} import ...")
            if node.module == "numpy.random":
                bad = [a.name for a in node.names if a.name not in ALLOWED_NP_RANDOM]
                if bad:
                    found.append(f"{where(node)} from numpy.random import {', '.join(bad)}")
            if node.module == "numpy" and any(a.name == "random" for a in node.names):
                found.append(f"{where(node)} from numpy import random")
        elif isinstance(node, ast.Attribute):
            # np.random.X / numpy.random.X
            base = node.value
            if (isinstance(base, ast.Attribute) and base.attr == "random" and isinstance(base.value, ast.Name)
                    and base.value.id in ("np", "numpy") and node.attr not in ALLOWED_NP_RANDOM):
                found.append(f"{where(node)} np.random.{node.attr}")
        elif isinstance(node, ast.Call):
            # an unseeded default_rng() draws its seed from the OS: hidden randomness
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name == "default_rng" and not node.args and not node.keywords:
                found.append(f"{where(node)} default_rng() without a seed")
    return found


@pytest.mark.parametrize("path", CORE_FILES, ids=[p.name for p in CORE_FILES])
def test_core_file_has_no_clock_io_or_global_rng(path):
    assert _violations(path) == []


def test_the_static_check_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nimport random as r\nimport os.path\nfrom trio import sleep\nimport numpy as np\n"
        "from numpy.random import rand\nfrom numpy import random\n"
        "np.random.seed(1)\nx = np.random.rand(3)\ny = np.random.normal()\ng = np.random.default_rng()\n"
        "ok = np.random.default_rng(np.random.SeedSequence(1))\n",
        encoding="utf-8",
    )
    found = _violations(bad)
    for expected in ("import time", "import random", "import os.path", "from trio", "from numpy.random import rand",
                     "from numpy import random", "np.random.seed", "np.random.rand", "np.random.normal",
                     "default_rng() without a seed"):
        assert any(expected in v for v in found), (expected, found)
    assert len(found) == 10, found


def test_shell_decisions_use_no_global_random():
    """net/ and node/ (and the watch client) draw from seeded generators they are given (runtime's
    net_rng), never from the global ``random`` module: a decision of the shell is reproducible from
    the node's seed."""
    import re

    files = [*(GAIA_DIR / "net").glob("*.py"), *(GAIA_DIR / "node").glob("*.py"), GAIA_DIR / "tools" / "watch.py"]
    assert len(files) > 10
    offenders = [p.name for p in files
                 if re.search(r"^\s*(import random|from random import)", p.read_text(encoding="utf-8"), re.M)]
    assert offenders == []


# Lowest first; a module may import from its own layer and those below (docs/ARCHITECTURE.md).
# Shared utilities sit under everything: they import none of gaia_p2p but each other. config sits
# above problems: resolving a gym env or a user's Problem (config.resolve_problem) needs them.
LAYERS = {
    "__init__": 0, "errors": 0, "threads": 0, "logs": 0, "store": 0,
    "core": 1, "problems": 2, "config": 3, "net": 4, "node": 5, "tools": 6, "cli": 7, "__main__": 7,
}


def _layer_of(dotted: str) -> str:
    """``gaia_p2p.net.host`` -> ``net``; ``gaia_p2p`` (its ``__init__``) -> ``__init__``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _gaia_imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of every gaia_p2p module or name that ``tree`` imports, at any depth."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y / from .. import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base == "gaia_p2p":  # "from gaia_p2p import logs" imports gaia_p2p.logs, "__version__" the root
                found += [(node.lineno, f"gaia_p2p.{a.name}" if a.name in LAYERS else base) for a in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in dict.fromkeys(found) if name == "gaia_p2p" or name.startswith("gaia_p2p.")]


def upward_imports(root: Path) -> list[str]:
    """Every import in the package at ``root`` (named ``gaia_p2p``) from a layer above the importer's."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(("gaia_p2p", *(rel.parts[:-1] if is_package else rel.parts)))
        own = _layer_of(module) if module != "gaia_p2p" else "__init__"
        if own not in LAYERS:
            bad.append(f"{rel}.py: {own!r} has no layer in LAYERS; give it one")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _gaia_imports(tree, module, is_package):
            target = _layer_of(name)
            if LAYERS.get(target, len(LAYERS)) > LAYERS[own]:
                bad.append(f"{rel}.py:{line} ({own}) imports {name} ({target})")
    return bad


def test_no_module_imports_from_a_higher_layer():
    assert {"net", "node", "tools", "problems"} <= {p.name for p in GAIA_DIR.iterdir() if p.is_dir()}
    assert upward_imports(GAIA_DIR) == []


def test_the_layer_check_catches_upward_imports(tmp_path):
    root = tmp_path / "gaia_p2p"
    for pkg in ("core", "net", "node", "tools"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("", encoding="utf-8")
    (root / "__init__.py").write_text("__version__ = '0'\n", encoding="utf-8")
    (root / "config.py").write_text(
        "from gaia_p2p.core import codec\n"           # down: fine
        "def validate():\n    from gaia_p2p.net.addrs import check\n",  # up, inside a function
        encoding="utf-8")
    (root / "net" / "host.py").write_text(
        "from gaia_p2p import __version__, logs\nfrom . import traffic\nfrom ..config import X\n"  # all fine
        "from ..node import gossip\n", encoding="utf-8")  # up, relative
    (root / "node" / "runtime.py").write_text(
        "import gaia_p2p.net.host\nclass A:\n    def f(self):\n        import gaia_p2p.tools.evaluate\n",
        encoding="utf-8")
    (root / "tools" / "watch.py").write_text("from gaia_p2p import cli\nfrom gaia_p2p.node import netview\n",
                                             encoding="utf-8")
    (root / "extra.py").write_text("", encoding="utf-8")
    found = upward_imports(root)
    assert found == [
        "config.py:3 (config) imports gaia_p2p.net.addrs (net)",
        "extra.py: 'extra' has no layer in LAYERS; give it one",
        "net/host.py:4 (net) imports gaia_p2p.node (node)",
        "node/runtime.py:4 (node) imports gaia_p2p.tools.evaluate (tools)",
        "tools/watch.py:1 (tools) imports gaia_p2p.cli (cli)",
    ], found


WITHOUT_TORCH = """
import importlib, json, pkgutil, sys
sys.modules["torch"] = None  # `import torch` raises ImportError, as where it is not installed
import gaia_p2p
failed = {}
for m in pkgutil.walk_packages(gaia_p2p.__path__, "gaia_p2p."):
    if m.name == "gaia_p2p.__main__":  # runs the CLI
        continue
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed[m.name] = f"{type(e).__name__}: {e}"
print(json.dumps({"failed": failed, "count": sum(1 for n in sys.modules if n.startswith("gaia_p2p."))}))
"""


def test_every_module_imports_without_torch():
    """torch is optional (the `torch` extra): every module, the torch backend and torch:* problems
    included, imports without it; torch is imported inside the functions that need it."""
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == {}
    assert out["count"] >= 50  # every module of the package was imported
