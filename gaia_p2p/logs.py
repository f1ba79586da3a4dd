"""structlog setup (console on a TTY, JSON lines otherwise or with --log-format json) and event names.

Event names are stable: scripts and tests parse them. Standard keys and their meaning:
  peer_id      base58 libp2p peer id (ours in node_started, the remote one elsewhere)
  island_id    our own peer id, bound to every line of a node
  generation   island generation count (completed generations)
  evaluations  candidate evaluations so far (one evaluation = `episodes` episodes on lunarlander)
  best_fitness the resident best's fitness: running mean of its re-evaluations (higher is better)
  mean_fitness mean fitness of the generation's candidates
  sigma        optimizer step size
  evals_per_s  evaluations per second over the last generation
  duration_s   seconds
  topic        gossipsub topic
  reason       stable reason code of a rejection (see protocols/gaia-migration-v1.md)
  error        text of an error
  src          peer id that originated a migrant (signed gossipsub `from`)
  url          an address we serve on (metrics_started: http://127.0.0.1:PORT/metrics)
"""

from __future__ import annotations

import logging
import sys

import structlog

# lifecycle
NODE_STARTED = "node_started"
NODE_STOPPING = "node_stopping"
NODE_STOPPED = "node_stopped"
CHECKPOINT_WRITTEN = "checkpoint_written"
CHECKPOINT_LOADED = "checkpoint_loaded"
# network
PEER_CONNECTED = "peer_connected"
PEER_DISCONNECTED = "peer_disconnected"
PEER_DISCOVERED = "peer_discovered"
BOOTSTRAP_CONNECTED = "bootstrap_connected"
BOOTSTRAP_FAILED = "bootstrap_failed"
BOOTSTRAP_RESOLVED = "bootstrap_resolved"  # a /dns4, /dns6 or /dnsaddr bootstrap and what it resolved to
REACHABILITY_CHANGED = "reachability_changed"  # AutoNAT: public / private / unknown (net/reachability.py)
IPV6_UNAVAILABLE = "ipv6_unavailable"  # no IPv6 on this host: the /ip6 listen addresses were dropped
PUBSUB_STREAM_REJECTED = "pubsub_stream_rejected"
# metrics endpoint (node/metrics.py, --metrics-port)
METRICS_STARTED = "metrics_started"
METRICS_SCRAPE_FAILED = "metrics_scrape_failed"
# island
GENERATION_COMPLETED = "generation_completed"
OPTIMIZER_RESTARTED = "optimizer_restarted"
MIGRANT_PUBLISHED = "migrant_published"
MIGRANT_ACCEPTED = "migrant_accepted"
ELITE_FETCHED = "elite_fetched"
MIGRANT_REJECTED = "migrant_rejected"
MESSAGE_REJECTED = "message_rejected"
POLICY_TESTED = "policy_tested"
PEER_BANNED = "peer_banned"
PEER_UNRESPONSIVE = "peer_unresponsive"
TARGET_REACHED = "target_reached"


def _round_floats(_logger: object, _name: str, event: dict) -> dict:
    """Console only: 5 significant digits are plenty for a human; JSON keeps full precision."""
    for k, v in event.items():
        if isinstance(v, float):
            event[k] = float(f"{v:.5g}")
    return event


class ProgressStream:
    """A terminal stream with one live status line kept under the scrolling log lines."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.stream = stream
        self.line = ""

    def write(self, text: str) -> None:
        self.stream.write("\r\033[K" + text)
        if self.line and text.endswith("\n"):
            self.stream.write(self.line)
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def set(self, line: str) -> None:
        self.line = line[: 200]
        self.stream.write("\r\033[K" + self.line)
        self.stream.flush()

    def close(self) -> None:
        if self.line:
            self.stream.write("\n")
            self.line = ""
        self.stream.flush()


_progress: list[ProgressStream] = []


def progress() -> ProgressStream | None:
    """The live progress line, when logs go to a terminal in console format (else None)."""
    return _progress[0] if _progress else None


def configure(fmt: str = "auto", level: str = "info", stream=None, *, live_progress: bool = False) -> str:  # noqa: ANN001
    """Configure structlog once per process. Returns the format chosen ("console" or "json").

    With ``live_progress`` and a console on a TTY, a status line stays at the bottom of the log."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    _progress.clear()
    if live_progress and fmt == "console" and stream.isatty():
        stream = ProgressStream(stream)
        _progress.append(stream)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors = [*shared, structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        tty = _progress[0].stream.isatty() if _progress else stream.isatty()
        processors = [*shared, _round_floats, structlog.dev.ConsoleRenderer(colors=tty)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return fmt
