"""gaia_p2p.core stays pure: no trio, libp2p, structlog, gymnasium or torch; no clocks, no global RNG.

Two checks, as trio keeps ``trio._core`` apart from the rest (docs/ARCHITECTURE.md, "Packages and what may import what"):
- dynamic: import every core module in a fresh interpreter and look at ``sys.modules``;
- static: read every core file's AST for forbidden imports and global-RNG calls. (Dynamic alone
  cannot do that part: ``cma`` itself pulls in ``multiprocessing`` and so ``socket`` and ``time``.)
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
    """node/ draws from seeded generators it is given (runtime's net_rng), never from the global
    ``random`` module: a decision of the shell is reproducible from the node's seed."""
    import re
    from pathlib import Path

    node = Path(__file__).resolve().parents[2] / "gaia_p2p" / "node"
    offenders = [p.name for p in node.glob("*.py")
                 if re.search(r"^\s*(import random|from random import)", p.read_text(encoding="utf-8"), re.M)]
    assert offenders == []
