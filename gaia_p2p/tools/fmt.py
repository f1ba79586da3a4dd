"""Number formatting shared by ``gaia-node status`` (cli.render_status) and ``gaia-node watch``."""

from __future__ import annotations

from typing import Any


def num(x: Any, nd: int = 3) -> str:
    """``-`` for a missing value, ``nd`` decimals for a float (exponent form from 1e6 on), else ``str``."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) < 1e6 else f"{x:.{nd}e}"
    return str(x)
