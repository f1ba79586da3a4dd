"""The network view: latest telemetry per island and recent migrations, from the telemetry topic.

A node keeps one (for `gaia-node status` and `gaia-node watch` attached to it); a light watcher
keeps its own. Bounded: at most ``max_peers`` islands and ``max_migrations`` events.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from typing import Any

from gaia_p2p.core.telemetry import Telemetry, to_json


class NetView:
    def __init__(self, max_peers: int = 1024, max_migrations: int = 200, history: int = 120) -> None:
        self.islands: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.history: dict[str, deque[float]] = {}
        self.migrations: deque[dict[str, Any]] = deque(maxlen=max_migrations)
        self._seen_migrations: deque[tuple[str, str, int]] = deque(maxlen=max_migrations * 4)
        self.max_peers = max_peers
        self.history_len = history

    def add(self, peer_id: str, t: Telemetry, now: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Record one heartbeat; returns its JSON form and the migration events it reported first."""
        now = time.time() if now is None else now
        rec = to_json(peer_id, t, now)
        self.islands[peer_id] = rec
        self.islands.move_to_end(peer_id)
        while len(self.islands) > self.max_peers:
            old, _ = self.islands.popitem(last=False)
            self.history.pop(old, None)
        if t.best_fitness is not None and (t.pool is None or t.pool.keeps):  # a non-keeper's best is stale
            self.history.setdefault(peer_id, deque(maxlen=self.history_len)).append(t.best_fitness)
        new = []
        for m in t.migrations:
            key = (m.src, peer_id, m.generation)
            if key in self._seen_migrations:
                continue
            self._seen_migrations.append(key)
            ev = {"event": "migration", "src": m.src, "dst": peer_id, "generation": m.generation,
                  "gain": m.gain, "time": now}
            self.migrations.append(ev)
            new.append(ev)
        return rec, new

    def snapshot(self, own: dict[str, Any] | None = None) -> dict[str, Any]:
        """The view as plain data; ``own``: the viewing node's row as of now, in place of its last
        heartbeat (which may be a minute old under the network-wide heartbeat budget)."""
        islands = dict(self.islands)
        if own is not None:
            islands[own["peer_id"]] = own
        return {"islands": list(islands.values()), "migrations": list(self.migrations)[-20:],
                "history": {k: list(v) for k, v in self.history.items()}}


def local_capabilities(backend: str) -> dict[str, Any]:
    """CPU cores, and the GPU only when torch is in use already (importing torch costs seconds)."""
    caps: dict[str, Any] = {"cpus": os.cpu_count() or 1, "gpu": None, "gpu_mem_mb": 0}
    if backend == "torch":
        try:
            import torch

            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                caps["gpu"] = str(props.name)[:64]
                caps["gpu_mem_mb"] = int(props.total_memory // (1 << 20))
        except Exception:
            pass
    return caps

