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
- Stability (`stability_loss`): a feed-forward network applied frame by frame should move its output with the
  picture and not react to camera noise (A. Gupta, J. Johnson, A. Alahi, L. Fei-Fei, "Characterizing and
  Improving Stability in Neural Style Transfer", ICCV 2017, Sec. 4: a noisy copy of the frame; here also a
  known move, so no optical flow is needed): ``||f(T(x) + n) - T(f(x))||^2`` averaged over the pixels, with T
  an integer translation and n Gaussian noise, the frame's edges included unless a border is left out.

All losses average over the batch and return a scalar tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .options import check_options, option

__all__ = ["StabilityConfig", "content_loss", "gram_matrix", "stability_loss", "style_loss", "total_variation"]


class _Gram(torch.autograd.Function):
    """F F^T of (B, C, N) features, differentiated in one product: d/dF = (dG + dG^T) F."""

    @staticmethod
    def forward(ctx, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        g = torch.bmm(f, f.transpose(1, 2))  # (B, C, C)
        return g.float() if g.dtype == torch.bfloat16 else g

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        grad = (grad + grad.transpose(1, 2)).to(f.dtype)  # (B, C, C), symmetric
        if f.stride(1) == 1:  # f is the (B, C, N) view of channels_last features: keep their layout
            return torch.bmm(f.transpose(1, 2), grad).transpose(1, 2)  # (B, C, N) view of a (B, N, C) product
        return torch.bmm(grad, f)  # (B, C, N): one product, not two


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix (B, C, C), at least float32, of features (B, C, H, W): channel correlations / (C*H*W).

    bfloat16 features (training with ``precision="bf16"``) are multiplied in bfloat16: the matrix product sums in
    float32 and its result is rounded to bfloat16 (relative error below 2^-8, about that of the features
    themselves), 2-10x faster on a CPU with native bf16 than converting the features to float32 first.
    float16 features are converted (their sums over H*W would overflow float16's range).
    """
    if features.dim() != 4:
        raise ValueError(f"gram_matrix expects (B, C, H, W) features, got shape {tuple(features.shape)}.")
    b, c, h, w = features.shape
    if features.is_contiguous() or not features.is_contiguous(memory_format=torch.channels_last):
        f = features.reshape(b, c, h * w)  # (B, C, H*W)
    else:  # channels_last: the same matrix as a view, no copy
        f = features.permute(0, 2, 3, 1).reshape(b, h * w, c).transpose(1, 2)  # (B, C, H*W)
    f = f.float() if f.dtype == torch.float16 else f
    return _Gram.apply(f) / (c * h * w)  # (B, C, C)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Feature reconstruction loss: mean squared difference of two (B, C, H, W) feature maps."""
    if features.shape[1:] != target.shape[1:]:
        raise ValueError(
            f"content_loss: features {tuple(features.shape)} and target {tuple(target.shape)} differ in shape."
        )
    features = features.float()
    # mse_loss, not (f - t).pow(2).mean(): one fused backward instead of a chain of multiplications of a broadcast
    # gradient, which took 229 ms against 6 on a CPU for the relu2_2 features of a 256x256 batch of 4 (bf16).
    return F.mse_loss(features, target.float().expand_as(features))  # target may have batch 1: broadcast over B


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
    image = image.float()
    dx = F.mse_loss(image[..., :, 1:], image[..., :, :-1])  # over (B, C, H, W-1) horizontal neighbours
    dy = F.mse_loss(image[..., 1:, :], image[..., :-1, :])  # over (B, C, H-1, W) vertical neighbours
    return dx + dy


def stability_loss(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    shift: tuple[int, int],
    noise_std: float,
    margin: int,
    border: int = 0,
) -> torch.Tensor:
    """Mean squared difference between f(a moved, noisy second frame) and the first output moved the same way.

    `inputs` (B, 3, H, W) are the first frames and `outputs` = model(inputs); the second frame is the window of
    the inputs moved by ``shift = (dy, dx)`` pixels (|dy|, |dx| <= `margin`), of size (H - 2 margin, W - 2 margin),
    plus Gaussian noise of standard deviation `noise_std` (image units). `border` pixels of each side of the
    window are left out (there the second frame's network sees padding where the first saw the picture); with 0
    the edges count too: a network must then paint the frame's edges as it paints the same place inside a larger
    frame, which leaves no room for bands along the borders.
    """
    dy, dx = shift
    height, width = inputs.shape[-2:]
    if max(abs(dy), abs(dx)) > margin or border < 0 or min(height, width) - 2 * margin <= 2 * border:
        raise ValueError(
            f"stability_loss: shift {shift} needs |dy|, |dx| <= margin {margin}, and a {height}x{width} input "
            f"must keep more than {2 * border} pixels inside the margin."
        )
    rows, cols = slice(margin + dy, height - margin + dy), slice(margin + dx, width - margin + dx)
    frame = inputs[..., rows, cols]  # (B, 3, H - 2m, W - 2m): the picture moved by (dy, dx)
    if noise_std > 0:
        frame = frame + noise_std * torch.randn_like(frame)
    inner = (slice(border, frame.shape[-2] - border), slice(border, frame.shape[-1] - border))
    second = model(frame)[..., inner[0], inner[1]]
    moved = outputs[..., rows, cols][..., inner[0], inner[1]]
    return (second.float() - moved.float()).pow(2).mean()


@dataclass
class StabilityConfig:
    """The stability term of training (Gupta et al., ICCV 2017; `stability_loss`): off unless `weight` > 0."""

    weight: float = option(
        0.0, "weight of the stability term: the output must follow a move of the input by up to --stability-shift px "
        "plus camera noise (Gupta et al. 2017); 0: off (the paper)", flag="--stability-weight", check="non_negative",
        group="loss",
    )  # fmt: skip
    shift: int = option(
        3, "largest move (px) of the stability term's second frame", flag="--stability-shift", check="non_negative",
        group="loss",
    )  # fmt: skip
    noise: float = option(
        2.0, "standard deviation of the stability term's camera noise, grey levels (of 255)",
        flag="--stability-noise", check="non_negative", group="loss",
    )  # fmt: skip
    border: int = option(
        0, "pixels along each side of the stability term's window left out; 0: the frame's edges must follow too "
        "(no bands along the borders)", flag="--stability-border", check="non_negative", group="loss",
    )  # fmt: skip

    def margin(self, multiple: int) -> int:
        """The largest move rounded up to a multiple of the network's `multiple` (its input sizes)."""
        return -(-self.shift // multiple) * multiple

    def validate(self, size: int, multiple: int) -> None:
        """Raise ValueError (one sentence) for settings outside their limits or a crop `size` too small for them."""
        check_options(self)
        margin = self.margin(multiple)
        if self.weight > 0 and size - 2 * margin <= 2 * self.border:
            raise ValueError(
                f"The training size {size} is too small for the stability term with a {self.shift} px move: "
                f"it needs more than {2 * (margin + self.border)}."
            )
