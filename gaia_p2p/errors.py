"""Exception hierarchy: one root, our bugs vs. a peer's bad data vs. bad user input."""

from __future__ import annotations

# Exit codes of every gaia-node command: ok, a runtime failure (no node running, peer unreachable),
# a usage or config error.
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class GaiaError(Exception):
    """Root of every error raised on purpose by gaia-p2p."""


class ConfigError(GaiaError):
    """Bad configuration or CLI input. The message names field, value, rule and fix."""


class LocalProtocolError(GaiaError):
    """We broke a rule ourselves: a bug. Crash loudly."""


class RemoteProtocolError(GaiaError):
    """A peer sent something we must reject. Log it, count it by ``reason``, keep running."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class EvaluationError(GaiaError):
    """A fitness evaluation failed (bad problem config, worker crash)."""


class CheckpointError(GaiaError):
    """A checkpoint file is unreadable, corrupt or belongs to another experiment."""
