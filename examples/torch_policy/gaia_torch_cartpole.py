"""A torch.nn.Module as a gaia-p2p policy (docs/PROBLEMS.md, "Torch models").

    PYTHONPATH=examples/torch_policy gaia-node start --problem torch:gaia_torch_cartpole:make_policy
    PYTHONPATH=examples/torch_policy gaia-node start --problem torch:gaia_torch_cartpole:make_module \
        --set problem.env=CartPole-v1      # a bare Module: the env comes from the config
"""

import torch

from gaia_p2p.problems.torch_policy import TorchPolicy


def make_module() -> torch.nn.Module:
    """Observation (4) -> 2 logits; the node takes the argmax as CartPole's action."""
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def make_policy() -> TorchPolicy:
    # version: part of the experiment id; bump it when forward() changes in a way the layers do not show
    return TorchPolicy(make_module(), env="CartPole-v1", version="1")
