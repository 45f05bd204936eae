"""Perceptual losses on VGG features: content, style (Gram matrices) and total variation.

Equations, with F_l the (C_l, H_l*W_l) feature matrix of layer l of the generated image, P_l that of the
content image and G_l = F_l F_l^T / (C_l H_l W_l) its normalised Gram matrix:

- Gram matrix: Gatys et al. (CVPR 2016) Eq. 3, normalised by C*H*W as in Johnson et al. (ECCV 2016) Eq. 3,
  so its scale does not depend on the image size.
- Content (feature reconstruction) loss: Johnson et al. Eq. 2, ``||F_l - P_l||^2 / (C_l H_l W_l)``, a mean
  squared error (Gatys et al. Eq. 1 is the same up to a constant factor).
- Style reconstruction loss: Johnson et al. Eq. 4, the squared Frobenius norm ``||G_l - A_l||_F^2`` of the
  Gram difference, summed over layers with weights w_l as in Gatys et al. Eq. 5.
- Total variation regulariser: Johnson et al. Sec. 3.3 (after Mahendran & Vedaldi, CVPR 2015), the
  squared differences of neighbouring pixels, averaged so it does not grow with the image size.

All losses average over the batch and return a scalar tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["content_loss", "gram_matrix", "style_loss", "total_variation"]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix (B, C, C) of features (B, C, H, W): channel correlations / (C*H*W)."""
    if features.dim() != 4:
        raise ValueError(f"gram_matrix expects (B, C, H, W) features, got shape {tuple(features.shape)}.")
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)  # (B, C, H*W)
    # Products of bf16/fp16 features are summed over H*W terms: do it in fp32 to keep the precision.
    f = f.float() if f.dtype in (torch.float16, torch.bfloat16) else f
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)  # (B, C, C)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature reconstruction loss: mean squared difference of two (B, C, H, W) feature maps."""
    if features.shape[1:] != target.shape[1:]:
        raise ValueError(
            f"content_loss: features {tuple(features.shape)} and target {tuple(target.shape)} differ in shape."
        )
    diff = features.float() - target.float()  # target may have batch 1 and broadcast over B
    return diff.pow(2).mean()


def style_loss(
    features: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Style reconstruction loss: sum over layers of w_l * ||G(features_l) - target_l||_F^2, batch-averaged.

    `target_grams` are precomputed with `gram_matrix` (shape (1, C, C) broadcasts over the batch);
    `weights` defaults to 1 for every layer of `target_grams`.
    """
    weights = dict.fromkeys(target_grams, 1.0) if weights is None else weights
    missing = [name for name in weights if name not in features or name not in target_grams]
    if missing:
        raise KeyError(f"style_loss: no features or target Gram for layer(s) {', '.join(missing)}.")
    total = torch.zeros((), device=next(iter(features.values())).device)
    for name, weight in weights.items():
        gram = gram_matrix(features[name])  # (B, C, C)
        diff = gram - target_grams[name].float()
        total = total + weight * diff.pow(2).sum(dim=(1, 2)).mean()
    return total


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Total variation regulariser of a (B, C, H, W) image: mean squared difference of neighbouring pixels."""
    if image.dim() != 4:
        raise ValueError(f"total_variation expects (B, C, H, W), got shape {tuple(image.shape)}.")
    dx = image[..., :, 1:] - image[..., :, :-1]  # (B, C, H, W-1)
    dy = image[..., 1:, :] - image[..., :-1, :]  # (B, C, H-1, W)
    return dx.float().pow(2).mean() + dy.float().pow(2).mean()
