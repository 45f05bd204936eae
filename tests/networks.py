"""The tests' tiny style network, declared here once: 8/16/32 channels and one residual block, fast on a CPU."""

from __future__ import annotations

from dataclasses import replace

import torch

from stlib.transformer import TransformerConfig, TransformerNet

TINY = TransformerConfig(width=0.25, num_residual_blocks=1)
"""Johnson et al.'s image transformation network at a quarter of its width, with one residual block."""


def tiny_net(seed: int = 0, **changes: object) -> TransformerNet:
    """A random `TINY` network (its config with `changes`), seeded, in eval mode."""
    torch.manual_seed(seed)
    return TransformerNet(replace(TINY, **changes)).eval()
