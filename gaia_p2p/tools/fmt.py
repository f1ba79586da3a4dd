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


def short_peer(peer_id: str) -> str:
    return "…" + peer_id[-6:]


def ago(t: float | None, now: float) -> str:
    """``12 s ago``, ``5 min ago``, ``3.2 h ago`` (``-`` when unknown)."""
    if t is None:
        return "-"
    d = max(0.0, now - float(t))
    return f"{d:.0f} s ago" if d < 120 else f"{d / 60:.0f} min ago" if d < 7200 else f"{d / 3600:.1f} h ago"


def network_best(nb: Any, nd: int = 3) -> str:
    """core/ranking.py's NetworkBest in words: the best and what it rests on, and the highest
    untested estimate when it lies above a measured best."""
    b = nb.best
    if b is None:
        return "-"
    what = {"exact": "exact", "tested": "tested on fresh episodes", "estimate": "an untested estimate"}[str(b.basis)]
    text = f"{num(b.score, nd)} ({what}, {short_peer(b.peer_id)})"
    if nb.untested_above is not None:
        u = nb.untested_above
        text += f"; higher untested estimate {num(u.score, nd)} ({short_peer(u.peer_id)}), not ranked above it"
    return text
