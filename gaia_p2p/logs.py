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
PUBSUB_STREAM_REJECTED = "pubsub_stream_rejected"
# island
GENERATION_COMPLETED = "generation_completed"
MIGRANT_PUBLISHED = "migrant_published"
MIGRANT_ACCEPTED = "migrant_accepted"
MIGRANT_REJECTED = "migrant_rejected"
MESSAGE_REJECTED = "message_rejected"


def _round_floats(_logger: object, _name: str, event: dict) -> dict:
    """Console only: 5 significant digits are plenty for a human; JSON keeps full precision."""
    for k, v in event.items():
        if isinstance(v, float):
            event[k] = float(f"{v:.5g}")
    return event


def configure(fmt: str = "auto", level: str = "info", stream=None) -> str:  # noqa: ANN001
    """Configure structlog once per process. Returns the format chosen ("console" or "json")."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors = [*shared, structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors = [*shared, _round_floats, structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return fmt
