"""``gaia-node plot LOG [LOG ...] -o out.png``: fitness curves of every island in some logs.

Inputs, any mix, one JSON object per line (anything else on a line is skipped, as are lines that
lack the keys below; a line may carry a prefix before its ``{``, like ``scripts/swarm.py --raw``):

- logs of ``gaia-node start --log-format json``: ``generation_completed`` (``timestamp`` ISO UTC,
  ``generation``, ``evaluations``, ``best_fitness``, ``island_id``), ``migrant_accepted`` (``src``,
  ``fitness``, ``replaced_fitness``, ``timestamp``, ``island_id``) and ``node_started``
  (``peer_id``, ``problem``);
- captures of ``gaia-node watch --json``: ``"event": "telemetry"`` with ``peer_id``,
  ``generation``, ``evaluations``, ``best_fitness`` and ``time`` (unix seconds), and
  ``"event": "migration"`` with ``src``, ``dst`` (the receiving peer id), ``generation`` and ``time``;
- tests on fresh episodes: ``policy_tested`` log lines (``mean``, ``test_episodes``,
  ``generation``, ``timestamp``, ``island_id``) and a telemetry line's ``tested`` (``mean``,
  ``episodes``, ``generation``, ``at``).

The same point (island, generation, evaluations) or acceptance (island, source, generation) read
from both a log and a capture counts once.

One series per island, keyed by its island id (the last 8 characters of its peer id). The figure
has two panels: best fitness vs wall time (seconds since the first event) and best fitness vs
evaluations, the latter with a dashed black "network best" (the best of the islands' latest values)
vs the evaluations of all islands together, and, where there are tests, a dotted grey "network
best, tested" (the best of the islands' latest tested scores). Accepted migrants are marked on the receiving island's
curve, at its first point logged after the acceptance. The curves are the islands' *estimates*
(on a noisy problem a running mean of a few re-scores, biased upward at the top); each test on
fresh episodes is a filled diamond of the island's colour at its tested score, at the time of the
test (and at the island's evaluations then), so the distance between a curve and its diamonds is
the estimate's optimism. A horizontal line marks "solved" (200 on LunarLander, or ``--solved``).

Nothing heavy at import time: matplotlib is imported inside :func:`plot_logs`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gaia_p2p.errors import ConfigError

LUNAR_SOLVED = 200.0
ISLAND_ID_CHARS = 8  # island_id = the last 8 characters of the peer id (node/runtime.py)
# Event names of gaia_p2p/logs.py, spelled out: importing it loads structlog (the CLI builds this
# parser on every run, so the module imports nothing heavy).
NODE_STARTED = "node_started"
GENERATION_COMPLETED = "generation_completed"
MIGRANT_ACCEPTED = "migrant_accepted"
TELEMETRY_EVENT = "telemetry"  # gaia-node watch --json (core/telemetry.py to_json)
MIGRATION_EVENT = "migration"  # gaia-node watch --json (node/netview.py)
POLICY_TESTED = "policy_tested"  # a test on fresh episodes (node/runtime.py _maybe_test)


@dataclass
class Series:
    island_id: str
    # (unix time, generation, evaluations, best fitness), sorted by time once loaded
    points: list[tuple[float, int, int, float]] = field(default_factory=list)
    # (unix time, source peer id) of each accepted migrant
    migrations: list[tuple[float, str]] = field(default_factory=list)
    # (unix time, tested score, test episodes) of each test on fresh episodes
    tests: list[tuple[float, float, int]] = field(default_factory=list)


@dataclass
class Parsed:
    series: dict[str, Series] = field(default_factory=dict)
    problems: set[str] = field(default_factory=set)
    t0: float = math.inf  # time of the first event (node_started or a usable one)

    def island(self, island_id: str) -> Series:
        s = self.series.get(island_id)
        if s is None:
            s = self.series[island_id] = Series(island_id)
        return s


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else None


def _iso_time(x: Any) -> float | None:
    if not isinstance(x, str):
        return None
    try:
        return datetime.fromisoformat(x).timestamp()
    except ValueError:
        return None


def _island_of(ev: dict[str, Any]) -> str | None:
    for key in ("island_id", "peer_id"):
        v = ev.get(key)
        if isinstance(v, str) and v:
            return v[-ISLAND_ID_CHARS:]
    return None


def _json_lines(path: Path) -> Iterable[dict[str, Any]]:
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; pass log files of 'gaia-node start --log-format json'") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; pass log files") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    with f:
        for line in f:
            start = line.find("{")
            if start < 0:
                continue
            try:
                ev = json.loads(line[start:])
            except ValueError:
                continue
            if isinstance(ev, dict):
                yield ev


def parse_logs(paths: Sequence[str | Path]) -> Parsed:
    """Read every usable event of ``paths`` (see the module docstring); unusable lines are skipped."""
    out = Parsed()
    seen: set[tuple[str, int, int]] = set()  # the same point from a log and a watch capture counts once
    seen_mig: set[tuple[str, str, int]] = set()
    seen_test: set[tuple[str, int, float]] = set()  # a heartbeat repeats the last test; a log tells it once

    def tested(isl: str | None, t: float | None, gen: Any, mean: Any, n: Any) -> None:
        gen, mean, n = _int(gen), _number(mean), _int(n)
        if isl is None or t is None or gen is None or mean is None or not n or (isl, gen, mean) in seen_test:
            return
        seen_test.add((isl, gen, mean))
        out.island(isl).tests.append((t, mean, n))

    for path in paths:
        for ev in _json_lines(Path(path)):
            name = ev.get("event")
            if name == POLICY_TESTED:
                tested(_island_of(ev), _iso_time(ev.get("timestamp")), ev.get("generation"), ev.get("mean"),
                       ev.get("test_episodes"))
                continue
            if name == TELEMETRY_EVENT and isinstance(ev.get("tested"), dict):
                x = ev["tested"]
                tested(_island_of(ev), _number(x.get("at")), x.get("generation"), x.get("mean"), x.get("episodes"))
            if name == NODE_STARTED:
                if isinstance(ev.get("problem"), str):
                    out.problems.add(ev["problem"])
                t = _iso_time(ev.get("timestamp"))
                if t is not None:  # the clock starts when the first node does
                    out.t0 = min(out.t0, t)
                continue
            if isinstance(ev.get("problem"), str):
                out.problems.add(ev["problem"])
            if name == GENERATION_COMPLETED:
                t = _iso_time(ev.get("timestamp"))
            elif name == TELEMETRY_EVENT:
                t = _number(ev.get("time"))
            elif name in (MIGRANT_ACCEPTED, MIGRATION_EVENT):
                if name == MIGRATION_EVENT:  # watch --json: the receiver is `dst`, the time is unix seconds
                    t, dst = _number(ev.get("time")), ev.get("dst")
                    isl = dst[-ISLAND_ID_CHARS:] if isinstance(dst, str) and dst else None
                else:
                    t, isl = _iso_time(ev.get("timestamp")), _island_of(ev)
                src = ev.get("src") if isinstance(ev.get("src"), str) else "?"
                if t is None or isl is None:
                    continue
                gen = _int(ev.get("generation"))
                if gen is not None:  # the same acceptance in a log and in a watch capture counts once
                    if (isl, src, gen) in seen_mig:
                        continue
                    seen_mig.add((isl, src, gen))
                out.island(isl).migrations.append((t, src))
                out.t0 = min(out.t0, t)
                continue
            else:
                continue
            gen, evals, best = _int(ev.get("generation")), _int(ev.get("evaluations")), _number(ev.get("best_fitness"))
            isl = _island_of(ev)
            if t is None or gen is None or evals is None or best is None or isl is None:
                continue
            if (isl, gen, evals) in seen:
                continue
            seen.add((isl, gen, evals))
            out.island(isl).points.append((t, gen, evals, best))
            out.t0 = min(out.t0, t)
    for s in out.series.values():
        s.points.sort()
        s.migrations.sort()
        s.tests.sort()
    # An island with migrations but no fitness point has no curve to mark: drop it.
    out.series = {k: s for k, s in sorted(out.series.items()) if s.points}
    return out


def network_best(series: Iterable[Series]) -> tuple[list[int], list[float]]:
    """Best of the islands' latest best fitness vs the sum of their latest evaluation counts."""
    merged = sorted((t, s.island_id, evals, best) for s in series for t, _, evals, best in s.points)
    evals_of: dict[str, int] = {}
    best_of: dict[str, float] = {}
    xs: list[int] = []
    ys: list[float] = []
    for _, isl, evals, best in merged:
        evals_of[isl] = evals
        best_of[isl] = best
        xs.append(sum(evals_of.values()))
        ys.append(max(best_of.values()))
    return xs, ys


def network_tested(series: Iterable[Series]) -> tuple[list[int], list[float]]:
    """Best of the islands' latest tested scores vs the sum of their latest evaluation counts (the
    network best as `gaia-node watch` ranks it, once every island shown has a test)."""
    merged = sorted([(t, 0, s.island_id, evals) for s in series for t, _, evals, _ in s.points]
                    + [(t, 1, s.island_id, mean) for s in series for t, mean, _ in s.tests])
    evals_of: dict[str, int] = {}
    tested_of: dict[str, float] = {}
    xs: list[int] = []
    ys: list[float] = []
    for _, kind, isl, value in merged:
        if kind == 0:
            evals_of[isl] = int(value)
        else:
            tested_of[isl] = float(value)
        if tested_of:
            xs.append(sum(evals_of.values()))
            ys.append(max(tested_of.values()))
    return xs, ys


def _point_after(s: Series, t: float) -> tuple[float, int, int, float]:
    """The island's first point logged at or after ``t`` (its best then includes the migrant)."""
    for p in s.points:
        if p[0] >= t:
            return p
    return s.points[-1]


def _resolve_solved(solved: float | str | None, problems: set[str]) -> float | None:
    if solved is None:
        return LUNAR_SOLVED if "lunarlander" in problems else None
    if isinstance(solved, str):
        if solved.lower() == "none":
            return None
        try:
            return float(solved)
        except ValueError:
            raise ConfigError(f"--solved {solved!r}: must be a number or 'none'") from None
    return float(solved)


def plot_logs(paths: Sequence[str | Path], out: str | Path, solved: float | str | None = None) -> dict[str, Any]:
    """Draw the figure of ``paths`` into ``out`` (PNG, or any format matplotlib infers from the name).

    ``solved``: None draws the solved line at 200 when a log says the problem is lunarlander; a
    number draws it there; ``"none"`` draws none. Returns ``{"n_series", "n_points",
    "n_migrations", "n_tests", "out", "problems", "solved"}``. Raises :class:`ConfigError` on an unreadable file
    or when no usable event is found.
    """
    if not paths:
        raise ConfigError("no log file given; pass log files of 'gaia-node start --log-format json'")
    parsed = parse_logs(paths)
    if not parsed.series:
        names = ", ".join(str(p) for p in paths)
        raise ConfigError(f"no usable events in {names}: expected JSON lines with generation_completed (from "
                          f"'gaia-node start --log-format json') or telemetry (from 'gaia-node watch --json')")
    solved_y = _resolve_solved(solved, parsed.problems)
    series = list(parsed.series.values())
    t0 = parsed.t0

    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # not pyplot: no global figure state, no GUI

    fig = Figure(figsize=(13, 5.2), dpi=110, layout="constrained")
    ax_t, ax_e = fig.subplots(1, 2, sharey=True)
    n = len(series)
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    n_mig = n_tests = 0
    lw = 1.6 if n <= 10 else 1.1
    for i, s in enumerate(series):
        color = cmap(i % cmap.N)
        ts = [p[0] - t0 for p in s.points]
        es = [p[2] for p in s.points]
        bs = [p[3] for p in s.points]
        ax_t.plot(ts, bs, color=color, lw=lw, label=s.island_id)
        ax_e.plot(es, bs, color=color, lw=lw, label=s.island_id)
        if s.migrations:
            at = [_point_after(s, t) for t, _ in s.migrations]
            n_mig += len(at)
            kw = dict(marker="o", s=34, facecolors="white", edgecolors=color, linewidths=1.6, zorder=3)
            ax_t.scatter([p[0] - t0 for p in at], [p[3] for p in at], **kw)
            ax_e.scatter([p[2] for p in at], [p[3] for p in at], **kw)
        if s.tests:
            n_tests += len(s.tests)
            kw = dict(marker="D", s=30, color=color, edgecolors="black", linewidths=0.6, zorder=5)
            ax_t.scatter([t - t0 for t, _, _ in s.tests], [m for _, m, _ in s.tests], **kw)
            ax_e.scatter([_point_after(s, t)[2] for t, _, _ in s.tests], [m for _, m, _ in s.tests], **kw)
    xs, ys = network_best(series)
    if n > 1:
        ax_e.plot(xs, ys, color="black", ls="--", lw=1.8, label="network best\n(vs total evaluations)", zorder=4)
        if n_tests:
            xs, ys = network_tested(series)
            ax_e.plot(xs, ys, color="dimgray", ls=":", lw=1.8, drawstyle="steps-post",
                      label="network best, tested\n(latest tests)", zorder=4)

    ax_t.set_xlabel("wall time since the first event (s)")
    ax_e.set_xlabel("evaluations (per island; network best: all islands together)" if n > 1 else "evaluations")
    ax_t.set_ylabel("best fitness (curves: estimates; diamonds: tested)" if n_tests else "best fitness")
    ax_t.set_title("best fitness vs time")
    ax_e.set_title("best fitness vs evaluations")
    for ax in (ax_t, ax_e):
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
        if solved_y is not None:
            ax.axhline(solved_y, color="tab:green", ls=":", lw=1.5)
            ax.annotate(f"solved ({solved_y:g})", xy=(0.005, solved_y), xycoords=("axes fraction", "data"),
                        xytext=(2, 3), textcoords="offset points", color="tab:green", fontsize=9)
    if solved_y is not None:  # keep the line in view even before anyone gets near it
        lo, hi = ax_t.get_ylim()
        ax_t.set_ylim(min(lo, solved_y), max(hi, solved_y + 0.04 * (hi - lo)))

    handles, labels = ax_e.get_legend_handles_labels()
    if n_mig:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="white", markeredgecolor="gray",
                              markeredgewidth=1.6, markersize=6))
        labels.append("migrant accepted")
    if n_tests:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], ls="", marker="D", markerfacecolor="gray", markeredgecolor="black",
                              markeredgewidth=0.6, markersize=6))
        labels.append("tested on fresh\nepisodes")
    fig.legend(handles, labels, loc="outside right center", title="island", fontsize=9, title_fontsize=9,
               ncols=1 if n <= 16 else 2, frameon=False)
    problem = ", ".join(sorted(parsed.problems)) or "unknown problem"
    n_points = sum(len(s.points) for s in series)
    fig.suptitle(f"gaia-p2p: {problem}, {n} island{'s' if n != 1 else ''}, {n_points} points, "
                 f"{n_mig} migrant{'s' if n_mig != 1 else ''} accepted"
                 + (f", {n_tests} test{'s' if n_tests != 1 else ''} on fresh episodes" if n_tests else ""), fontsize=11)
    out = Path(out)
    try:
        fig.savefig(out)
    except (OSError, ValueError) as e:
        raise ConfigError(f"-o {out}: cannot write the figure ({e})") from None
    return {"n_series": n, "n_points": n_points, "n_migrations": n_mig, "n_tests": n_tests, "out": str(out),
            "problems": sorted(parsed.problems), "solved": solved_y}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot", help="plot best fitness of every island from JSON logs",
        description="Plot best fitness vs time and vs evaluations, one curve per island, from logs of "
                    "'gaia-node start --log-format json' (and 'gaia-node watch --json' captures).")
    p.add_argument("logs", nargs="+", metavar="LOG", help="JSON-lines log files (any number, any mix)")
    p.add_argument("-o", "--output", default="gaia.png", metavar="FILE", help="image to write (default gaia.png)")
    p.add_argument("--solved", default=None, metavar="Y|none",
                   help="draw the 'solved' line at Y (default: 200 on lunarlander, none otherwise); 'none': no line")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(run=run)


def run(a: argparse.Namespace) -> int:
    summary = plot_logs(a.logs, a.output, solved=a.solved)
    n, pts, mig = summary["n_series"], summary["n_points"], summary["n_migrations"]
    tests = summary["n_tests"]
    print(f"plot: {n} island{'s' if n != 1 else ''}, {pts} points, {mig} migrant{'s' if mig != 1 else ''} "
          f"accepted" + (f", {tests} test{'s' if tests != 1 else ''} on fresh episodes" if tests else "")
          + f" -> {summary['out']}")
    sys.stdout.flush()
    return 0
