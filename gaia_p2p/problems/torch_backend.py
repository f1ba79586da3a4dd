"""Torch evaluation backend for LunarLander (benchmark comparison, GPU devices).

Same episodes, lockstep loop and parameter layout as :mod:`gaia_p2p.problems.lunar`; only the
batched forward pass of the whole running population runs in torch (``bmm`` over stacked weights,
float64 by default). Results equal the numpy backend except on rounding-level argmax ties.

torch is imported inside the function: importing this module (or ``gaia_p2p.problems.evaluate``)
does not import torch. The env physics stays on the CPU, so a GPU only pays off for large policies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from gaia_p2p.problems import lunar


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
