"""SIGINT/SIGTERM -> cancel the root scope; the node then writes its final checkpoint, shielded."""

from __future__ import annotations

import signal

import structlog
import trio

from gaia_p2p import logs
from gaia_p2p.config import Config
from gaia_p2p.node.runtime import run

log = structlog.get_logger("gaia.shutdown")


async def serve(cfg: Config) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    log.info(logs.NODE_STOPPING, signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await run(cfg)
            nursery.cancel_scope.cancel()
