"""Torch evaluation backend: LunarLander (forward pass only) and spirals (whole fitness).

Devices: :func:`resolve_device` turns ``auto | cpu | cuda`` into ``cpu`` or ``cuda`` and raises
:class:`EvaluationError` with the fix when torch is missing or CUDA is asked for but unavailable.

Spirals: :func:`evaluate_spirals_torch` computes the fitness of the whole population in batched
passes (batched ``matmul`` of per-candidate weights against the whole dataset), the same formula as
:func:`gaia_p2p.problems.spirals.evaluate_spirals`. float64 by default on every device, GPUs
included: spirals is a deterministic problem whose migrant claims are checked with a relative
tolerance of 1e-6 (``gaia_p2p.core.island.CLAIM_TOLERANCE``), and float64 keeps a GPU node's
fitness within ~1e-15 of a CPU node's, so claims reproduce across devices. float32 (``dtype=``,
used by ``scripts/bench_torch.py`` only) differs from float64 by up to 2e-7 (random weights of
std 0.5) or 1.8e-6 (std 3), measured on 1000 candidates: the size of the tolerance itself, so the
daemon does not use it. On one device and dtype a candidate's fitness is bit-identical run to run and on CPU in
any batch (tested); on CUDA it may differ between batch sizes at rounding level (cuBLAS picks
kernels by shape), always far inside the tolerance.

LunarLander: same episodes, lockstep loop and parameter layout as :mod:`gaia_p2p.problems.lunar`; only the
batched forward pass of the whole running population runs in torch (``bmm`` over stacked weights,
float64 by default). Results equal the numpy backend except on rounding-level argmax ties.

torch is imported inside the function: importing this module (or ``gaia_p2p.problems.evaluate``)
does not import torch. The env physics stays on the CPU, so a GPU only pays off for large policies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gaia_p2p.errors import EvaluationError
from gaia_p2p.problems import lunar, spirals

DEVICES = ("auto", "cpu", "cuda")

# Intermediate (n_chunk, n_points, width) tensors of spirals stay below this many elements: in
# cache on a CPU (float64 2 MiB; measured here, popsize 1024, 2-16-1, 1 thread: 65 ms per
# population with 2**18, ~400 ms with 2**23; times the intra-op threads), large batches on a GPU
# (float64 512 MiB).
MAX_CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 26}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if torch sees a GPU, else ``cpu``; ``cuda`` without one -> EvaluationError."""
    if device not in DEVICES:
        raise EvaluationError(f"evaluation.device = {device!r} is not one of {', '.join(DEVICES)}; "
                              f"pass --device auto, --device cpu or --device cuda")
    try:
        import torch
    except ImportError as e:
        raise EvaluationError(f"evaluation.backend = 'torch' but torch is not importable ({e}); "
                              f"pip install -e '.[torch]' or pass --backend numpy") from None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise EvaluationError(f"evaluation.device = 'cuda' but torch {torch.__version__} ({build}) sees no CUDA "
                              f"GPU (torch.cuda.is_available() is False); pass --device cpu (or --device auto), "
                              f"or run on a machine with an NVIDIA GPU and a CUDA build of torch")
    return device


_SPIRALS_DATA: dict[tuple[str, str], tuple[Any, Any]] = {}


def _spirals_data(dev: Any, tdtype: Any) -> tuple[Any, Any]:
    """The dataset as (points, labels) tensors on ``dev``, made once per device and dtype."""
    import torch

    key = (str(dev), str(tdtype))
    if key not in _SPIRALS_DATA:
        points, labels = spirals.dataset()
        _SPIRALS_DATA[key] = (torch.as_tensor(np.array(points), dtype=tdtype, device=dev),
                              torch.as_tensor(np.array(labels), dtype=tdtype, device=dev))
    return _SPIRALS_DATA[key]


def evaluate_spirals_torch(
    X: np.ndarray,
    hidden: Sequence[int] = (16,),
    device: str = "cpu",
    dtype: str = "float64",
) -> np.ndarray:
    """Fitness ``(n,)`` like :func:`gaia_p2p.problems.spirals.evaluate_spirals`, in torch on ``device``.

    ``device`` is ``cpu`` or ``cuda`` (see :func:`resolve_device`). Returns float64 numpy.
    """
    import torch

    sizes = spirals.layer_sizes(hidden)
    X = np.asarray(X, dtype=np.float64)
    P = lunar.param_count(sizes)
    if X.ndim != 2 or X.shape[1] != P:
        raise ValueError(f"X must have shape (n, {P}) for layer sizes {sizes}, got {X.shape}")
    n = X.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    tdtype = getattr(torch, dtype)
    dev = torch.device(device)
    points, labels = _spirals_data(dev, tdtype)
    N = points.shape[0]
    budget = MAX_CHUNK_ELEMENTS.get(dev.type, MAX_CHUNK_ELEMENTS["cuda"])
    if dev.type == "cpu":
        budget *= torch.get_num_threads()  # a cache-sized share per intra-op thread
    step = spirals.chunk_rows(N, sizes, budget)
    out = []
    with torch.inference_mode():
        params = torch.as_tensor(X, dtype=tdtype, device=dev)  # one host-to-device copy
        for lo in range(0, n, step):
            chunk = params[lo : lo + step]
            c = chunk.shape[0]
            h = points  # (N, in), broadcast over the chunk by the first matmul
            off = 0
            for a, b in zip(sizes[:-2], sizes[1:-1]):  # hidden layers
                W = chunk[:, off : off + a * b].reshape(c, a, b)
                off += a * b
                bias = chunk[:, off : off + b].unsqueeze(1)
                off += b
                h = torch.tanh(torch.matmul(h, W) + bias)  # (c, N, b)
            # Output layer (one logit) as multiply + sum: a (c, N, a) @ (c, a, 1) bmm gives a
            # candidate a different last bit in a batch than alone (torch 2.13 CPU, measured).
            w = chunk[:, off : off + sizes[-2]].unsqueeze(1)  # (c, 1, a)
            z = (h * w).sum(dim=2) + chunk[:, off + sizes[-2] :]  # (c, N) logits
            loss = torch.clamp_min(z, 0.0) - z * labels + torch.log1p(torch.exp(-z.abs()))
            out.append(-loss.mean(dim=1))
        return torch.cat(out).to(device="cpu", dtype=torch.float64).numpy()


def evaluate_lunar_torch(
    X: np.ndarray,
    seeds: Sequence[int],
    hidden: Sequence[int] = (16,),
    max_steps: int = 1000,
    device: str = "cpu",
    dtype: str = "float64",
) -> np.ndarray:
    """Fitness ``(n,)`` like :func:`gaia_p2p.problems.lunar.evaluate_lunar`, forward pass in torch."""
    return rollout_lunar_torch(X, seeds, hidden, max_steps, device=device, dtype=dtype).fitness


def rollout_lunar_torch(
    X: np.ndarray,
    seeds: Sequence[int],
    hidden: Sequence[int] = (16,),
    max_steps: int = 1000,
    device: str = "cpu",
    dtype: str = "float64",
) -> lunar.LunarRollouts:
    import torch

    X = np.asarray(X, dtype=np.float64)
    sizes = lunar.layer_sizes(hidden)
    P = lunar.param_count(sizes)
    if X.ndim != 2 or X.shape[1] != P:
        raise ValueError(f"X must have shape (n, {P}) for hidden={tuple(hidden)}, got {X.shape}")
    tdtype = getattr(torch, dtype)
    dev = torch.device(device)
    layers = [
        (
            torch.as_tensor(np.ascontiguousarray(W), dtype=tdtype, device=dev),
            torch.as_tensor(np.ascontiguousarray(b), dtype=tdtype, device=dev).unsqueeze(1),
        )
        for W, b in lunar.unpack(X, sizes)
    ]

    def make(rows: np.ndarray) -> Callable[[np.ndarray], list[int]]:
        idx = torch.as_tensor(rows, dtype=torch.long, device=dev)
        sel = [(W.index_select(0, idx), b.index_select(0, idx)) for W, b in layers]
        hidden_layers, (W_out, b_out) = sel[:-1], sel[-1]

        def act(obs: np.ndarray) -> list[int]:
            with torch.inference_mode():
                h = torch.from_numpy(obs).to(device=dev, dtype=tdtype).unsqueeze(1)  # (m, 1, in)
                for W, b in hidden_layers:
                    h = torch.tanh(torch.bmm(h, W) + b)
                logits = torch.bmm(h, W_out) + b_out
                return logits.squeeze(1).argmax(dim=1).tolist()

        return act

    with torch.inference_mode():
        return lunar.rollout_lockstep(X.shape[0], seeds, max_steps, make)
