"""Colour preservation for style transfer: luminance-only transfer and colour-histogram matching.

Gatys, Ecker, Bethge, Hertzmann & Shechtman, "Controlling Perceptual Factors in Neural Style Transfer"
(CVPR 2017), Sec. 5 offers two ways to keep the photo's colours while taking the painting's style:

- Luminance-only transfer (Sec. 5.2): transfer style on the luminance channel only, then recombine the
  result's luminance with the content's colour (chroma) channels. Before the transfer the style's luminance
  is matched to the content's mean and standard deviation (Eq. 9: ``L_s' = sigma_c / sigma_s (L_s - mu_s)
  + mu_c``), so that the painting's brightness does not override the photo's.
- Colour-histogram matching (Sec. 5.1): recolour the *style* image with a linear map ``x' = A x + b`` so that
  the mean and the 3x3 covariance of its RGB pixels equal the content's, then transfer as usual.
  ``A = Sigma_c^(1/2) Sigma_s^(-1/2)`` (``"sqrt"``, the "Image Analogies" colour transfer) or
  ``A = L_c L_s^(-1)`` with Cholesky factors (``"cholesky"``).

YCbCr here is the full-range ITU-R BT.601 colour space of JPEG, with every channel in [0, 1] (chroma
centred on 0.5). All functions take and return (B, C, H, W) float tensors and never modify their inputs.
"""

from __future__ import annotations

import torch

__all__ = [
    "color_histogram_match",
    "combine_luminance",
    "luminance",
    "match_luminance",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

# Rows: Y, Cb, Cr as weighted sums of R, G, B (BT.601 full range, as in JPEG/JFIF).
_RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ]
)
_YCBCR_OFFSET = torch.tensor([0.0, 0.5, 0.5])
_EPS = 1e-5  # variance floor: a flat or grey image has (near) zero variance in some direction


def _check_rgb(image: torch.Tensor, name: str) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} expects a (B, 3, H, W) RGB image, got shape {tuple(image.shape)}.")


def _apply_matrix(image: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``matrix @ pixel + offset`` for (B, 3, H, W) images."""
    m = matrix.to(image.device, image.dtype)
    o = offset.to(image.device, image.dtype).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", m, image) + o  # (B, 3, H, W)


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] to YCbCr (B, 3, H, W): luminance Y, chroma Cb and Cr centred on 0.5."""
    _check_rgb(image, "rgb_to_ycbcr")
    return _apply_matrix(image, _RGB_TO_YCBCR, _YCBCR_OFFSET)


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """YCbCr (B, 3, H, W) back to RGB (B, 3, H, W); not clamped, so it inverts `rgb_to_ycbcr` exactly."""
    _check_rgb(image, "ycbcr_to_rgb")
    inverse = torch.linalg.inv(_RGB_TO_YCBCR.double()).float()
    centred = image - _YCBCR_OFFSET.to(image.device, image.dtype).view(1, 3, 1, 1)
    return _apply_matrix(centred, inverse, torch.zeros(3))


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Luminance Y (B, 1, H, W) of an RGB image (B, 3, H, W): 0.299 R + 0.587 G + 0.114 B."""
    _check_rgb(image, "luminance")
    return rgb_to_ycbcr(image)[:, :1]


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's luminance (B, 1, H, W) shifted and scaled to the content's mean and std (Gatys 2017, Eq. 9)."""
    style_y, content_y = luminance(style), luminance(content)  # (B, 1, H, W) each
    mu_s, sigma_s = style_y.mean(dim=(1, 2, 3), keepdim=True), style_y.std(dim=(1, 2, 3), keepdim=True)
    mu_c, sigma_c = content_y.mean(dim=(1, 2, 3), keepdim=True), content_y.std(dim=(1, 2, 3), keepdim=True)
    return ((style_y - mu_s) * (sigma_c / sigma_s.clamp_min(_EPS)) + mu_c).clamp(0, 1)


def combine_luminance(luma: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """RGB image (B, 3, H, W) with the luminance `luma` (B, 1, H, W) and the chroma of `colors`, clamped to [0, 1]."""
    _check_rgb(colors, "combine_luminance")
    if luma.dim() != 4 or luma.shape[1] != 1 or luma.shape[-2:] != colors.shape[-2:]:
        raise ValueError(
            f"combine_luminance expects luma (B, 1, H, W) the size of colors {tuple(colors.shape)}, "
            f"got {tuple(luma.shape)}."
        )
    ycbcr = torch.cat([luma.to(colors.dtype), rgb_to_ycbcr(colors)[:, 1:]], dim=1)  # (B, 3, H, W)
    return ycbcr_to_rgb(ycbcr).clamp(0, 1)


def _pixel_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3,) and covariance (3, 3) of the RGB pixels of one image (1, 3, H, W), in float64."""
    pixels = image[0].reshape(3, -1).double()  # (3, H*W)
    mean = pixels.mean(dim=1)  # (3,)
    centred = pixels - mean[:, None]  # (3, H*W)
    cov = centred @ centred.T / max(1, pixels.shape[1] - 1)  # (3, 3)
    return mean, cov + _EPS * torch.eye(3, dtype=cov.dtype, device=cov.device)


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Symmetric square root (or inverse square root) of a symmetric positive definite (3, 3) matrix."""
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(_EPS).pow(-0.5 if inverse else 0.5)
    return vectors @ torch.diag(values) @ vectors.T


def color_histogram_match(source: torch.Tensor, reference: torch.Tensor, method: str = "sqrt") -> torch.Tensor:
    """Recolour `source` (1, 3, H, W) so its RGB mean and covariance equal `reference`'s (Gatys 2017, Sec. 5.1).

    `method` picks the 3x3 map: ``"sqrt"`` (symmetric square roots, Image Analogies) or ``"cholesky"``.
    The result is clamped to [0, 1], which can shift the statistics slightly for extreme colours.
    """
    _check_rgb(source, "color_histogram_match")
    _check_rgb(reference, "color_histogram_match")
    if source.shape[0] != 1 or reference.shape[0] != 1:
        raise ValueError("color_histogram_match works on one image at a time (batch size 1).")
    mu_s, cov_s = _pixel_stats(source)
    mu_r, cov_r = _pixel_stats(reference)
    if method == "sqrt":
        matrix = _sqrtm(cov_r) @ _sqrtm(cov_s, inverse=True)  # (3, 3)
    elif method == "cholesky":
        matrix = torch.linalg.cholesky(cov_r) @ torch.linalg.inv(torch.linalg.cholesky(cov_s))  # (3, 3)
    else:
        raise ValueError(f"Unknown colour matching method {method!r}; choose 'sqrt' or 'cholesky'.")
    offset = mu_r - matrix @ mu_s  # (3,)
    return _apply_matrix(source.double(), matrix, offset).to(source.dtype).clamp(0, 1)
