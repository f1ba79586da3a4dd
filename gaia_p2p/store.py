"""The data dir: an exclusive lock, the identity key (net/host.py) and atomic checkpoints."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import msgpack

from gaia_p2p.errors import CheckpointError, ConfigError

CHECKPOINT_FILE = "checkpoint.msgpack"
CHECKPOINT_MAGIC = "gaia-checkpoint"
CHECKPOINT_VERSION = 1
LOCK_FILE = "node.lock"
CONTROL_SOCKET = "control.sock"


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def control_socket(self) -> Path:
        return self.path / CONTROL_SOCKET

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ConfigError(f"config error: data_dir = {str(self.path)!r} cannot be created ({e.strerror}); "
                              f"pass --data-dir with a writable directory") from None

    def lock(self) -> int:
        """Take the data dir for this process. Two nodes must never share one identity and checkpoint."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"config error: data_dir = {str(self.path)!r} is in use by another running "
                              f"gaia-node; pass a different --data-dir for a second node") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        # Half-written temp files of a killed predecessor: we hold the lock, so they are stale.
        for stale in self.path.glob(CHECKPOINT_FILE + ".tmp-*"):
            try:
                stale.unlink()
            except OSError:
                pass
        return fd

    def write_checkpoint(self, state: dict[str, Any]) -> int:
        """Atomic: write a temp file, fsync it, rename over the old one, fsync the directory."""
        blob = msgpack.packb({"magic": CHECKPOINT_MAGIC, "version": CHECKPOINT_VERSION, **state}, use_bin_type=True)
        tmp = self.checkpoint.with_name(self.checkpoint.name + f".tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint)
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return len(blob)

    def read_checkpoint(self) -> dict[str, Any] | None:
        path = self.checkpoint
        if not path.exists():
            return None
        try:
            data = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is corrupt ({type(e).__name__}); pass --fresh to move it "
                                  f"aside and start a new island") from None
        if not isinstance(data, dict) or data.get("magic") != CHECKPOINT_MAGIC:
            raise CheckpointError(f"checkpoint {path} is not a gaia-node checkpoint; pass --fresh to move it "
                                  f"aside and start a new island")
        if data.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint {path} has version {data.get('version')!r}, this gaia-node reads "
                                  f"version {CHECKPOINT_VERSION}; pass --fresh to start a new island")
        return data

    def move_checkpoint_aside(self) -> Path | None:
        if not self.checkpoint.exists():
            return None
        n = 0
        while (dest := self.checkpoint.with_name(f"{self.checkpoint.name}.old{n}")).exists():
            n += 1
        os.replace(self.checkpoint, dest)
        return dest
