"""Run real `gaia-node` processes: JSON logs to a file, addresses parsed from node_started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GAIA = [sys.executable, "-m", "gaia_p2p"]


class NodeProc:
    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.data_dir = tmp / name
        self.log_path = tmp / f"{name}.log"
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> NodeProc:
        empty = self.data_dir.parent / "no_bootstrap.toml"
        empty.write_text("bootstrap = []\n")
        self.log = open(self.log_path, "a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*GAIA, "start", "--data-dir", str(self.data_dir), "--listen", "/ip4/127.0.0.1/tcp/0",
             "--set", f"network.bootstrap_file={empty}", "--log-format", "json", *self.args, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return self

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and (name is None or ev.get("event") == name):
                out.append(ev)
        return out

    # what a node's log says about its connections: printed when a network test fails, so that a
    # failure on CI shows who dialled whom, what failed and what was dropped
    CONNECTION_EVENTS = ("node_started", "bootstrap_connected", "bootstrap_failed", "peer_connected",
                         "peer_disconnected", "peer_unresponsive", "peer_connections_aborted",
                         "peer_discovered", "dht_peers_refused", "inbound_refused", "reachability_changed")

    def connection_story(self) -> str:
        lines = []
        for ev in self.events():
            if ev.get("event") in self.CONNECTION_EVENTS:
                rest = {k: v for k, v in ev.items() if k not in ("event", "timestamp", "level", "island_id")}
                lines.append(f"  {ev.get('timestamp', '?')[11:23]} {ev['event']} {json.dumps(rest)[:240]}")
        return f"{self.data_dir.name}:\n" + "\n".join(lines[-40:])

    def wait_event(self, name: str, timeout_s: float, after: int = 0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            evs = self.events(name)
            if len(evs) > after:
                return evs[after]
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.data_dir.name} exited with {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {name} from {self.data_dir.name} in {timeout_s} s:\n"
                             f"{self.log_path.read_text()[-3000:]}")

    def status(self, *extra: str) -> dict:
        r = subprocess.run([*GAIA, "status", "--data-dir", str(self.data_dir), "--json", *extra],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def terminate(self, timeout_s: float) -> tuple[int, float]:
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout_s)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        """For `finally`: end our own process (and its workers, in its own session) by PID."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        if hasattr(self, "log"):
            self.log.close()


def wait_for(predicate, what: str, timeout_s: float, poll_s: float = 0.25):
    """Poll ``predicate`` until it returns something truthy (returned) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")
