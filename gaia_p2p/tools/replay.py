"""``gaia-node replay``: watch a trained LunarLander policy fly, as an animated GIF.

    gaia-node replay (--data-dir DIR | --checkpoint FILE | --elite FILE [--hidden 16])
                     [--episodes 1] [--seed 0] [-o lander.gif] [--fps 30] [--every 2]

Episode ``i`` runs ``gymnasium.make("LunarLander-v3", render_mode="rgb_array")`` reset with seed
``SEED + i``, headless (``SDL_VIDEODRIVER=dummy``), with the policy of ``problems/lunar.py``
(argmax of the MLP's logits), until it terminates or hits the problem's step limit. So the return
printed for an episode is the one ``gaia-node evaluate --seed SEED --episodes 1`` reports for it.
Every Nth frame (``--every``) goes into the GIF, plus each episode's last frame, held for a second.
Frames are downscaled when the GIF would exceed about 5 MB.

Nothing heavy at import time: numpy, gymnasium, pygame and PIL are imported when used.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_p2p.errors import ConfigError
from gaia_p2p.tools import policy as policy_io

if TYPE_CHECKING:
    import numpy as np

MAX_GIF_BYTES = 5_000_000
HOLD_LAST_FRAME_MS = 1000
MAX_EPISODES = 100
# Frames kept in memory are palette images at most this wide (LunarLander renders 600x400).
MAX_FRAME_WIDTH = 600
# Most frames kept (about 240 KB each in memory at 600x400, a few KB each in the GIF).
MAX_FRAMES = 1000


def _int_in(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} must be in {lo}..{hi}")
        return v

    return parse


def run_episode(params: np.ndarray, hidden: Sequence[int], seed: int, max_steps: int, every: int,
                on_frame: Any) -> tuple[float, int]:
    """One rendered episode; ``on_frame(rgb_array, last)`` gets every ``every``-th frame and the last.

    Returns (return, length in steps).
    """
    import gymnasium
    import numpy as np

    from gaia_p2p.problems.lunar import ENV_ID, numpy_policy_factory

    act = numpy_policy_factory(np.asarray(params, dtype=np.float64).reshape(1, -1), hidden)(np.zeros(1, dtype=int))
    env = gymnasium.make(ENV_ID, render_mode="rgb_array", max_episode_steps=max_steps)
    try:
        obs, _ = env.reset(seed=int(seed))
        total, t = 0.0, 0
        on_frame(env.render(), False)
        while True:
            a = act(np.asarray(obs, dtype=np.float32).reshape(1, -1))[0]
            obs, r, terminated, truncated, _ = env.step(a)
            total += float(r)
            t += 1
            done = terminated or truncated
            if done or t % every == 0:
                on_frame(env.render(), done)
            if done:
                return total, t
    finally:
        env.close()


class _Frames:
    """Palette frames and their durations, bounded in number (and so in memory).

    Past :data:`MAX_FRAMES` kept frames, every other one is dropped (each episode's last frame is
    always kept), the survivors' durations double so playback speed stays the same, and from then
    on only every second offered frame is taken.
    """

    def __init__(self, frame_ms: int) -> None:
        self.images: list[Any] = []
        self.durations: list[int] = []
        self.last: list[bool] = []
        self.frame_ms = frame_ms
        self.stride = 1  # 1 offered frame in `stride` is kept
        self._offered = 0

    def add(self, rgb: np.ndarray, last: bool) -> None:
        import numpy as np
        from PIL import Image

        self._offered += 1
        if not last and (self._offered - 1) % self.stride:
            return
        img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
        if img.width > MAX_FRAME_WIDTH:
            img = img.resize((MAX_FRAME_WIDTH, round(img.height * MAX_FRAME_WIDTH / img.width)), Image.LANCZOS)
        # LunarLander has few colours; 64 per frame keep the flames and the GIF small.
        self.images.append(img.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        self.durations.append(HOLD_LAST_FRAME_MS if last else self.frame_ms * self.stride)
        self.last.append(last)
        if last:
            self._offered = 0
        if len(self.images) > MAX_FRAMES:
            self._thin()

    def _thin(self) -> None:
        keep = [i for i in range(len(self.images)) if i % 2 == 0 or self.last[i]]
        self.images = [self.images[i] for i in keep]
        self.durations = [d if self.last[i] else 2 * d for i, d in zip(keep, (self.durations[i] for i in keep))]
        self.last = [self.last[i] for i in keep]
        self.stride *= 2

    def encode(self, frames: list[Any]) -> bytes:
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=self.durations,
                       loop=0, optimize=False, disposal=1)
        return buf.getvalue()

    def to_gif(self) -> tuple[bytes, tuple[int, int]]:
        """Encoded GIF; halves the resolution (up to 3 times) while it is larger than MAX_GIF_BYTES."""
        from PIL import Image

        frames = self.images
        data = self.encode(frames)
        for _ in range(3):
            if len(data) <= MAX_GIF_BYTES:
                break
            w, h = frames[0].size
            size = (max(1, round(w * 0.6)), max(1, round(h * 0.6)))
            frames = [f.convert("RGB").resize(size, Image.LANCZOS).quantize(
                colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) for f in frames]
            data = self.encode(frames)
        return data, frames[0].size


def replay(params: np.ndarray, hidden: Sequence[int], out: str | Path, *, episodes: int = 1, seed: int = 0,
           fps: int = 30, every: int = 2, max_steps: int = 1000) -> dict[str, Any]:
    """Render ``episodes`` episodes into the GIF ``out``. Returns returns, lengths, frames, size."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless pygame, before gymnasium imports it
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    frames = _Frames(frame_ms=max(20, round(1000 / fps)))
    returns: list[float] = []
    lengths: list[int] = []
    for i in range(episodes):
        ret, n = run_episode(params, hidden, seed + i, max_steps, every, frames.add)
        returns.append(ret)
        lengths.append(n)
        line = f"episode {i + 1}/{episodes}  seed {seed + i}  return {ret:8.2f}  length {n} steps"
        print(line, flush=True)
    data, size = frames.to_gif()
    out = Path(out)
    try:
        out.write_bytes(data)
    except OSError as e:
        raise ConfigError(f"-o {out}: cannot write the GIF ({e.strerror})") from None
    return {"returns": returns, "lengths": lengths, "frames": len(frames.images), "size": size,
            "bytes": len(data), "out": str(out), "every": every * frames.stride}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay", help="render the best LunarLander policy of a checkpoint or elite to an animated GIF",
        description="Fly a trained LunarLander policy headless and write an animated GIF; prints each "
                    "episode's return and length.")
    policy_io.add_source_arguments(p)
    p.add_argument("--episodes", type=_int_in(1, MAX_EPISODES), default=1, help="episodes (default 1)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1 - MAX_EPISODES), default=0,
                   help="seed of the first episode; episode i uses SEED+i (default 0)")
    p.add_argument("-o", "--output", default="lander.gif", metavar="FILE", help="GIF to write (default lander.gif)")
    p.add_argument("--fps", type=_int_in(1, 50), default=30, help="GIF frames per second (default 30)")
    p.add_argument("--every", type=_int_in(1, 1000), default=2, metavar="N",
                   help="keep every Nth env frame (default 2)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(run=run)


def run(a: argparse.Namespace) -> int:
    pol = policy_io.load_from_args(a)
    policy_io.require_lunar(pol, "gaia-node replay")
    print(f"policy  {pol.describe()}", flush=True)
    res = replay(pol.params, pol.hidden, a.output, episodes=a.episodes, seed=a.seed, fps=a.fps, every=a.every,
                 max_steps=pol.max_steps)
    w, h = res["size"]
    if res["every"] != a.every:
        print(f"note: more than {MAX_FRAMES} frames; kept every {res['every']}th env frame instead", flush=True)
    mean = sum(res["returns"]) / len(res["returns"])
    print(f"wrote {res['out']}: {res['frames']} frames, {w}x{h}, {res['bytes'] / 1e6:.2f} MB; "
          f"mean return {mean:.2f} over {len(res['returns'])} episode{'s' if len(res['returns']) != 1 else ''}")
    sys.stdout.flush()
    return 0
