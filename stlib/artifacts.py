"""Artefact statistics of stylised images: periodic grids, border bands and temporal flicker.

Three defects that a loss value does not show but a viewer does, each measured by one number so that a test or a
benchmark can follow it from one network to the next:

- **Grid** (`grid_strength`): a regular pattern with the period of the network's stride-2 stages (2 or 4 px),
  the "checkerboard artefacts" of A. Odena, V. Dumoulin, C. Olah, "Deconvolution and Checkerboard Artifacts",
  Distill 2016. The luminance is high-pass filtered, only *flat* regions are kept (sky, water, walls: where a
  pattern cannot be the photo's own texture), and the pixels are grouped by their phase (row mod p, column mod
  p). Without a periodic pattern the p x p phase means are all about equal; a grid of period p makes them differ.
  The statistic is their standard deviation, in 8-bit grey levels.
- **Border** (`border_bands`): a band along an edge that looks unlike the interior (from the convolutions'
  padding): the mean colour of the outer `band` pixels of each side against the next `band` pixels inwards, in
  grey levels. A photo has small values; compare a network's output with its input's.
- **Flicker** (`noise_flicker`, `warp_error`): a feed-forward network applied frame by frame to video can change
  its output more than the frames change (A. Gupta, J. Johnson, A. Alahi, L. Fei-Fei, "Characterizing and
  Improving Stability in Neural Style Transfer", ICCV 2017). `noise_flicker` is the mean output change caused by
  camera-like noise on the input divided by the mean input change (1 for the identity, more for an unstable
  network); `warp_error` moves the input by a few pixels (a known motion, no optical flow needed) and measures
  how far the output is from the first output moved the same way, relative to the input's change.

All functions take images as (1, 3, H, W) float tensors in [0, 1]; the flicker functions take any callable with
that interface (a `TransformerNet` in eval mode, a `stlib.backends.Backend`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["SIDES", "border_bands", "grid_strength", "noise_flicker", "warp_error"]

Stylizer = Callable[[torch.Tensor], torch.Tensor]

SIDES = ("top", "bottom", "left", "right")
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601


def _check(image: torch.Tensor, min_side: int = 16) -> None:
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"Expected one RGB image of shape (1, 3, H, W), got {tuple(image.shape)}.")
    if min(image.shape[-2:]) < min_side:
        raise ValueError(f"The image is too small ({tuple(image.shape[-2:])}): both sides need >= {min_side} pixels.")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, H, W) with reflect padding."""
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def grid_strength(image: torch.Tensor, period: int, flat_fraction: float = 0.5) -> float:
    """Standard deviation (grey levels) of the period x period phase means of the high-passed luminance, flat areas."""
    _check(image, min_side=8 * period)
    if period < 2:
        raise ValueError(f"The period must be at least 2 pixels, got {period}.")
    if not 0 < flat_fraction <= 1:
        raise ValueError(f"flat_fraction must be in (0, 1], got {flat_fraction}.")
    luma = (image.float().cpu()[0] * _LUMA.view(3, 1, 1)).sum(0)[None, None] * 255  # (1, 1, H, W), 0-255
    residual = luma - _gaussian_blur(luma, sigma=float(period))  # the fine structure, periodic patterns included
    # Flat areas: the lowest local gradient of the blurred luminance (a grid cannot hide in the photo's texture).
    smooth = _gaussian_blur(luma, sigma=float(period))
    gy, gx = torch.gradient(smooth[0, 0])
    activity = _gaussian_blur((gx.abs() + gy.abs())[None, None], sigma=2.0 * period)[0, 0]  # (H, W)
    flat = activity <= torch.quantile(activity.flatten(), flat_fraction)
    h, w = (s - s % period for s in luma.shape[-2:])
    residual, flat = residual[0, 0, :h, :w], flat[:h, :w]
    means = torch.zeros(period, period)
    for a in range(period):
        for b in range(period):
            sel = flat[a::period, b::period]
            if not bool(sel.any()):
                raise ValueError("No flat area left to measure a grid in; use a larger image or flat_fraction.")
            means[a, b] = residual[a::period, b::period][sel].mean()
    return float(means.std(unbiased=False))


def border_bands(image: torch.Tensor, band: int = 8) -> dict[str, float]:
    """Per side, the distance (grey levels) between the mean colours of the outer `band` px and the next `band` px."""
    _check(image, min_side=4 * band)
    x = image.float().cpu()[0] * 255  # (3, H, W)
    pairs = {
        "top": (x[:, :band], x[:, band : 2 * band]),
        "bottom": (x[:, -band:], x[:, -2 * band : -band]),
        "left": (x[:, :, :band], x[:, :, band : 2 * band]),
        "right": (x[:, :, -band:], x[:, :, -2 * band : -band]),
    }
    return {side: float((outer.mean((1, 2)) - inner.mean((1, 2))).norm()) for side, (outer, inner) in pairs.items()}


def noise_flicker(stylize: Stylizer, image: torch.Tensor, sigma: float = 2.0 / 255, seed: int = 0) -> float:
    """Mean |f(x + n) - f(x)| / mean |n| for Gaussian camera noise n of std `sigma` (1: the identity)."""
    _check(image)
    noise = sigma * torch.randn(image.shape, generator=torch.Generator().manual_seed(seed)).to(image.device)
    noisy = (image + noise).clamp(0, 1)
    with torch.inference_mode():
        a, b = stylize(image).float(), stylize(noisy).float()
    return float((b - a).abs().mean() / (noisy - image).abs().mean().clamp_min(1e-12))


def warp_error(stylize: Stylizer, image: torch.Tensor, shift: tuple[int, int] = (3, 2)) -> float:
    """Mean |f(move(x)) - move(f(x))| / mean |move(x) - x| over the interior, for a move by `shift` (dy, dx) px.

    0 for a network that follows motion exactly (an ideal video stylisation), about 1 when its output changes as
    much as the frame does but not along with it, more for one that flickers.
    """
    _check(image)
    dy, dx = shift
    m = max(abs(dy), abs(dx))
    if m == 0:
        raise ValueError("warp_error needs a non-zero shift.")
    h, w = image.shape[-2:]
    # The second frame: the same scene moved by (dy, dx); both frames are crops of one larger image.
    first = image[..., m : h - m, m : w - m]
    second = image[..., m - dy : h - m - dy, m - dx : w - m - dx]
    with torch.inference_mode():
        a, b = stylize(first).float(), stylize(second).float()
    # In the second frame, the content of first[y, x] sits at (y + dy, x + dx); compare where both are defined.
    inner = (slice(None), slice(None), slice(m + dy, h - 3 * m + dy), slice(m + dx, w - 3 * m + dx))
    base = (slice(None), slice(None), slice(m, h - 3 * m), slice(m, w - 3 * m))
    change = (b[inner] - a[base]).abs().mean()
    frame_change = (second - first).abs().mean().clamp_min(1e-12)
    return float(change / frame_change)
