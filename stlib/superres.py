"""Single-image super-resolution: the degradation model, the field's evaluation protocol and post-processing.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016, Sec. 4.2: the paper's second task upsamples a low-resolution image by f = 4 or 8 with a network
of the style network's family, trained with a per-pixel loss (l_pixel, MSE) or a feature reconstruction
loss (l_feat at relu2_2 of VGG16, Eq. 2), and scores it with PSNR and SSIM (Wang et al., "Image Quality
Assessment: From Error Visibility to Structural Similarity", IEEE TIP 2004) on Set5, Set14 and BSD100.

Degradation (`downscale`): the paper blurs the high-resolution image with a Gaussian of sigma = 1 and then
downsamples it by f with bicubic interpolation; the benchmark convention (and SRCNN's tables) use plain
bicubic downsampling with antialiasing (`blur_sigma=0`). A model is scored on the degradation it was trained on.

Evaluation protocol (`evaluate`), the field's convention so that numbers are comparable across papers:

- the high-resolution image is cropped to a multiple of f (top-left kept);
- the low-resolution input is its bicubic (PIL, antialiased) downscale by f;
- PSNR and SSIM are computed on the luminance Y of ITU-R BT.601 as MATLAB's ``rgb2ycbcr``
  (Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255 values, so Y lies in [16, 235]), not rounded;
- f pixels are cropped from every border before scoring (interpolation cannot know what lies outside);
- PSNR uses a peak of 255; SSIM uses an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  over the valid region only (Wang et al.'s reference ``ssim_index.m``);
- scores are averaged per image (not per pixel) over the set.

With this protocol bicubic upsampling scores 28.43 dB (x4) and 24.40 dB (x8) on Set5, as in the literature
(28.42 and 24.40; e.g. Dong et al., SRCNN, TPAMI 2016, Table 3); ``tests/test_superres.py`` pins both.

Post-processing (`match_histogram`): the paper matches the histogram of the network's output to that of the
low-resolution input, channel by channel, so that the output keeps the input's colours and contrast.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import list_images, load_image

__all__ = [
    "SRScore",
    "bicubic_upscale",
    "crop_to_multiple",
    "degrade",
    "downscale",
    "evaluate",
    "match_histogram",
    "psnr_y",
    "rgb_to_y",
    "ssim_y",
]

Upscaler = Callable[[Image.Image], Image.Image]

_SSIM_WINDOW, _SSIM_SIGMA, _K1, _K2, _PEAK = 11, 1.5, 0.01, 0.03, 255.0


def rgb_to_y(image: Image.Image | np.ndarray) -> np.ndarray:
    """Luminance Y of ITU-R BT.601 as MATLAB's rgb2ycbcr: (H, W, 3) RGB in 0-255 -> (H, W) float64 in [16, 235]."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_y needs an (H, W, 3) RGB image, got shape {rgb.shape}.")
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def crop_to_multiple(image: Image.Image, scale: int) -> Image.Image:
    """The top-left part of `image` whose width and height are multiples of `scale`."""
    w, h = image.size
    if w < scale or h < scale:
        raise ValueError(f"An image of {w}x{h} pixels is smaller than the scale factor {scale}.")
    return image.crop((0, 0, w - w % scale, h - h % scale))


def _gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """A normalised 1-D Gaussian (size,) in float64; size defaults to 2 * ceil(3 sigma) + 1."""
    size = size or 2 * math.ceil(3 * sigma) + 1
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur of an RGB image (reflect padding), rounded back to 8 bits."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float64)).permute(2, 0, 1)[None]  # (1, 3, H, W)
    k = _gaussian_kernel(sigma)
    pad = len(k) // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    out = x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()  # (H, W, 3)
    return Image.fromarray(out)


def downscale(image: Image.Image, scale: int, blur_sigma: float = 0.0) -> Image.Image:
    """The low-resolution input: (optionally Gaussian-blurred) bicubic downscale of an RGB image by `scale`.

    `image` must have sides divisible by `scale` (see `crop_to_multiple`). ``blur_sigma=1.0`` is Johnson et
    al.'s degradation; 0 is the benchmark's plain bicubic (PIL's bicubic, antialiased when shrinking).
    """
    if scale < 1:
        raise ValueError(f"The scale factor must be a positive integer, got {scale}.")
    w, h = image.size
    if w % scale or h % scale:
        raise ValueError(f"An image of {w}x{h} pixels cannot be downscaled by exactly {scale}: crop it first.")
    image = image.convert("RGB")
    if blur_sigma > 0:
        image = _blur(image, blur_sigma)
    return image.resize((w // scale, h // scale), Image.Resampling.BICUBIC)


def degrade(hr: torch.Tensor, scale: int, blur_sigma: float = 0.0) -> torch.Tensor:
    """`downscale` for a training batch: (B, 3, H, W) in [0, 1] -> (B, 3, H/scale, W/scale), 8-bit values.

    The same degradation as `downscale` (torch's antialiased bicubic matches PIL's within 1-2 grey levels,
    0.1 on average), rounded to 1/255 steps as the 8-bit images the benchmark feeds the network; no gradient.
    """
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"A {height}x{width} batch cannot be downscaled by exactly {scale}: crop it first.")
    with torch.no_grad():
        x = hr.float()
        if blur_sigma > 0:
            k = _gaussian_kernel(blur_sigma).float().to(x.device)  # (K,)
            pad, channels = len(k) // 2, x.shape[1]
            x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                         groups=channels)  # fmt: skip
            x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                         groups=channels)  # fmt: skip
        low = F.interpolate(x, size=(height // scale, width // scale), mode="bicubic", antialias=True)
        return (low.clamp(0, 1) * 255).round() / 255  # (B, 3, H/scale, W/scale)


def bicubic_upscale(image: Image.Image, scale: int) -> Image.Image:
    """The bicubic baseline: PIL's bicubic interpolation to `scale` times the size."""
    w, h = image.size
    return image.convert("RGB").resize((w * scale, h * scale), Image.Resampling.BICUBIC)


def _scored_pair(output: Image.Image, target: Image.Image, border: int) -> tuple[np.ndarray, np.ndarray]:
    """The Y channels of output and target with `border` pixels cropped from each side, (H', W') float64."""
    if output.size != target.size:
        raise ValueError(f"Cannot score an output of {output.size} against a target of {target.size}.")
    a, b = rgb_to_y(output), rgb_to_y(target)
    if border:
        if min(a.shape) <= 2 * border:
            raise ValueError(f"An image of {output.size} is too small to crop {border} pixels from each border.")
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return a, b


def psnr_y(output: Image.Image, target: Image.Image, border: int = 0) -> float:
    """PSNR in dB on the BT.601 luminance (peak 255), `border` pixels cropped from each side."""
    a, b = _scored_pair(output, target, border)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(_PEAK**2 / mse)


def ssim_y(output: Image.Image, target: Image.Image, border: int = 0) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid region) on the BT.601 luminance."""
    a, b = (torch.from_numpy(y)[None, None] for y in _scored_pair(output, target, border))  # (1, 1, H, W)
    if min(a.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after cropping the border.")
    k = _gaussian_kernel(_SSIM_SIGMA, _SSIM_WINDOW)
    rows, cols = k.view(1, 1, -1, 1), k.view(1, 1, 1, -1)  # the 11x11 window is separable

    def mean(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, rows), cols)  # valid: (1, 1, H - 10, W - 10)

    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a**2
    var_b = mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = (_K1 * _PEAK) ** 2, (_K2 * _PEAK) ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean())


def match_histogram(output: Image.Image, reference: Image.Image) -> Image.Image:
    """`output` with each RGB channel's histogram matched to that of `reference` (any size): the paper's step."""
    out = np.asarray(output.convert("RGB"))
    ref = np.asarray(reference.convert("RGB"))
    matched = np.empty_like(out)
    for c in range(3):
        values, inverse, counts = np.unique(out[..., c].ravel(), return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(ref[..., c].ravel(), return_counts=True)
        quantiles = np.cumsum(counts) / out[..., c].size  # the CDF of the output at each of its values
        ref_quantiles = np.cumsum(ref_counts) / ref[..., c].size
        mapped = np.interp(quantiles, ref_quantiles, ref_values)  # the reference value at the same quantile
        matched[..., c] = np.round(mapped[inverse]).reshape(out.shape[:2]).astype(np.uint8)
    return Image.fromarray(matched)


@dataclass
class SRScore:
    """Scores of one method on one image set: per-image PSNR (dB), SSIM (and `extra`'s metric), and their means."""

    names: list[str] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    extra: list[float] = field(default_factory=list)  # `evaluate(..., extra=...)` per image, e.g. a feature error

    @property
    def mean_psnr(self) -> float:
        """Mean PSNR over the images (dB)."""
        return float(np.mean(self.psnr))

    @property
    def mean_ssim(self) -> float:
        """Mean SSIM over the images."""
        return float(np.mean(self.ssim))

    @property
    def mean_extra(self) -> float:
        """Mean of the extra metric over the images (NaN without one)."""
        return float(np.mean(self.extra)) if self.extra else math.nan


def _image_files(images: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A folder's image files (sorted) or the given files."""
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        return list_images(images)
    if isinstance(images, (str, os.PathLike)):
        return [Path(images)]
    return [Path(p) for p in images]


def evaluate(
    upscale: Upscaler,
    images: str | os.PathLike | Sequence[str | os.PathLike],
    scale: int,
    blur_sigma: float = 0.0,
    extra: Callable[[Image.Image, Image.Image], float] | None = None,
) -> SRScore:
    """Score `upscale` (a low-resolution PIL image -> `scale` times larger) on high-resolution images.

    `extra(output, target)` is a further per-image metric (`SRScore.extra`), e.g. a VGG feature error.
    """
    score = SRScore()
    for path in _image_files(images):
        target = crop_to_multiple(load_image(path), scale)
        low = downscale(target, scale, blur_sigma)
        output = upscale(low)
        if output.size != target.size:
            raise ValueError(
                f"The upscaler turned {low.size[0]}x{low.size[1]} pixels of '{path.name}' into "
                f"{output.size[0]}x{output.size[1]}, not {target.size[0]}x{target.size[1]} (x{scale})."
            )
        score.names.append(path.stem)
        score.psnr.append(psnr_y(output, target, border=scale))
        score.ssim.append(ssim_y(output, target, border=scale))
        if extra is not None:
            score.extra.append(float(extra(output, target)))
    return score
