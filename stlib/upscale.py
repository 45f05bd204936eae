"""Applying super-resolution networks: images and files upscaled by a trained network, optionally tiled.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016, Sec. 4.2: a network of the style network's family (`stlib.transformer`, ``upscale`` = f) maps a
low-resolution image to one f times larger in one forward pass; the paper then matches the output's colour
histogram to the input's (`stlib.superres.match_histogram`, optional here). The degradation the networks were
trained on, the evaluation protocol and the scores live in `stlib.superres`; training in `stlib.train`
(``task="superres"``); the model files in `stlib.checkpoint` (a style network is refused here, and a
super-resolution network by the style tools).

Memory: one forward pass holds a few activations of the network's full width at the *output* resolution; an
input whose output would need more than `MAX_UNTILED_BYTES` is refused unless it is tiled (``tile``: overlapping
tiles of the input, blended with feathered weights, as `stlib.stylize` does).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from .images import ImageError, expand_inputs, is_image_name, load_image, save_image, to_pil, to_tensor
from .stylize import run_network
from .superres import match_histogram
from .transformer import TransformerNet

__all__ = ["MAX_UNTILED_BYTES", "MIN_SIDE", "activation_bytes", "upscale_files", "upscale_image"]

MIN_SIDE = 8
"""The smallest input side (pixels) the networks upscale: below it there is nothing to interpolate from."""

MAX_UNTILED_BYTES = 4 * 2**30
"""The most activation memory (estimated by `activation_bytes`) one untiled forward pass may need: 4 GiB."""


def activation_bytes(model: TransformerNet, height: int, width: int) -> int:
    """Estimated peak activation memory (bytes) of `model` on an H x W input: 3 float32 maps at the output size."""
    config = model.config
    return 3 * 4 * config.channels[0] * (config.upscale * height) * (config.upscale * width)


def _check_superres(model: TransformerNet) -> None:
    if getattr(getattr(model, "config", None), "task", None) != "superres":
        raise ValueError("upscale_image needs a super-resolution network (upscale > 1); this one is a style network.")


def upscale_image(
    model: TransformerNet,
    image: torch.Tensor,
    tile: int | None = None,
    overlap: int = 16,
    histogram: bool = False,
) -> torch.Tensor:
    """Upscale a (1, 3, H, W) or (3, H, W) image in [0, 1] by the network's factor; `tile` in input pixels.

    ``histogram=True`` matches each channel's histogram to the input's (the paper's post-processing).
    """
    _check_superres(model)
    height, width = image.shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"An image of {width}x{height} pixels is too small to upscale (at least {MIN_SIDE} px a side)."
        )
    if tile is None and activation_bytes(model, height, width) > MAX_UNTILED_BYTES:
        raise ValueError(
            f"An image of {width}x{height} pixels is too large to upscale x{model.config.upscale} in one piece "
            f"(about {activation_bytes(model, height, width) / 2**30:.0f} GiB); pass a tile size such as 256."
        )
    out = run_network(model, image, tile=tile, overlap=overlap, caller="upscale_image")
    if histogram:
        matched = match_histogram(to_pil(out), to_pil(image))
        out = to_tensor(matched).to(out.device).reshape(out.shape)
    return out


def upscale_files(
    model: TransformerNet,
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    tile: int | None = None,
    histogram: bool = False,
) -> list[Path]:
    """Upscale image files and folders into `out` (a folder, or a file name for one image); return the paths.

    Outputs keep their input's name as PNG (lossless: the detail is the point); files are written atomically
    and an input is never overwritten. A bad image is an `ImageError` naming the file, before it is written.
    The network runs on a channels_last copy (NHWC: about 1.5x faster on a CPU, `benchmarks/superres.py`).
    """
    _check_superres(model)
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    files = expand_inputs(inputs, "upscale_files")
    out = Path(out)
    single = is_image_name(out) and not out.is_dir()
    if single and len(files) != 1:
        raise ValueError(f"'{out}' is a file name but there are {len(files)} input images; give a folder instead.")
    targets = [out] if single else [out / f"{p.stem}.png" for p in files]
    if len(set(targets)) != len(targets):
        raise ValueError("Two inputs have the same name; upscale them into different folders.")
    for source, target in zip(files, targets, strict=True):
        if target.resolve() == source.resolve():
            raise ValueError(f"Refusing to overwrite the input '{source}' with its upscaled version.")
    written = []
    for source, target in zip(files, targets, strict=True):
        image = to_tensor(load_image(source))  # ImageError names the file
        try:
            result = upscale_image(model, image, tile=tile, histogram=histogram)
        except ValueError as err:
            raise ImageError(f"Cannot upscale '{source}': {str(err)[0].lower()}{str(err)[1:]}") from None
        written.append(save_image(result, target))
    return written
