"""Helpers for in-process multi-node tests: real libp2p hosts on 127.0.0.1, port 0, one trio.run."""

from __future__ import annotations

from pathlib import Path

import trio

from gaia_p2p.config import Config, build_config


def node_config(tmp_path: Path, i: int, *, bootstrap: tuple[str, ...] = (), problem: str = "sphere",
                dim: int = 10, **island: object) -> Config:
    data = tmp_path / f"node{i}"
    empty = tmp_path / "no_bootstrap.toml"
    empty.write_text("bootstrap = []\n")
    return build_config(env={}, overrides={
        "": {"data_dir": data, "checkpoint_interval_s": 3600.0, "telemetry_rate": 0.0},
        "problem": {"name": problem, "dim": dim},
        "island": {"seed": 1000 + i, "sigma": 0.5 + 0.2 * i, **island},
        # no network-wide budget, no "news only": these tests are about other behaviours and want a
        # migrant every few generations (the budget: tests/core, scripts/scale.py, e2e with defaults)
        "migration": {"interval": 5, "min_publish_interval_s": 0.5, "network_rate": 0.0, "publish_only_new": False},
        "network": {"listen": ("/ip4/127.0.0.1/tcp/0",), "bootstrap": bootstrap,
                    "bootstrap_file": str(empty), "heartbeat_s": 0.5, "refresh_min_s": 0.5},
        "evaluation": {"workers": 0},
    })


async def wait_until(predicate, what: str, timeout_s: float, poll_s: float = 0.1, *, on=()) -> None:
    """Bounded wait on a condition over live node state; fails with ``what``. With ``on`` (nodes
    whose island state the condition reads), it is checked after each input those nodes handle
    (``Node.fed``) instead of every ``poll_s``."""
    with trio.move_on_after(timeout_s):
        while not predicate():
            if on:
                await _any_fed(on)
            else:
                await trio.sleep(poll_s)
        return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def _any_fed(nodes) -> None:
    """Returns once any of ``nodes`` handled its next input."""
    async with trio.open_nursery() as nursery:
        async def one(n) -> None:
            await n.fed()
            nursery.cancel_scope.cancel()

        for n in nodes:
            nursery.start_soon(one, n)
