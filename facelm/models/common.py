"""What every facelm model shares: the parameter counter, the Glorot init, unwrapping.

One of each, so that the BEGAN models, L-Gen and the detector count and initialise
their weights the same way (the authors' Lasagne code: Glorot-uniform weights, zero
biases).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_params", "glorot_init_", "unwrap"]


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters (those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def glorot_init_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Glorot-uniform weights and zero biases for every Conv2d/Linear layer, in place.

    The weights are drawn, in ``module.modules()`` order, from one CPU generator seeded
    with ``seed``: equal seeds give equal weights, and the global RNG is left untouched.
    Returns ``module``.
    """
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, generator=g)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers (any nesting)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model
