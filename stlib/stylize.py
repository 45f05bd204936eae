"""Using trained feed-forward style networks: stylising images (in tiles when large), files and video frames.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016, Sec. 3.1: the image transformation network is fully convolutional, so a network trained on
256 x 256 crops stylises an image of any size in one forward pass (Sec. 4.1, "Qualitative Results", shows
512 and 1024 px results of 256 px-trained networks). Model files are `stlib.checkpoint`'s; `load_model` and
`read_metadata` are re-exported here, beside what uses them.

Large images (`stylize_image` with ``tile=N``): the network sees at most N x N pixels at a time, so peak
memory depends on N, not on the image. Tiles start on the network's stride-4 grid (so they subsample like
the whole image), overlap by at least ``overlap`` pixels and are blended with feathered weights, a linear
ramp across each overlap (weight 1 on the image's own borders), so no seam shows. Instance normalisation
(Ulyanov et al. 2016) would normalise each tile by its own statistics, giving tiles of different tone; by
default every tile instead uses the statistics of the whole image, measured in one extra pass over the
image downscaled to fit in a tile. The result is close to, not equal to, the untiled one: the statistics
come from a smaller image, and a tile's padded borders differ from the real neighbourhood within the
network's receptive field (about 50 px each side for the default network), so larger tiles and overlaps
(e.g. 512 / 64) bring it closer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .backends import Backend
from .checkpoint import load_model, read_metadata
from .images import expand_inputs, is_image_name, load_tensor, save_image
from .transformer import TransformerNet

__all__ = [
    "load_model",
    "read_metadata",
    "run_network",
    "stylize_files",
    "stylize_frame",
    "stylize_image",
    "tile_count",
]


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def _check_eval(model: torch.nn.Module, caller: str) -> None:
    if model.training:
        raise ValueError(f"{caller} needs a model in eval mode: call model.eval() first (load_model returns one).")


def _tile_boxes(height: int, width: int, tile: int, overlap: int, align: int = 4) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every tile: at most `tile` x `tile`, starting on the network's stride grid.

    `align` is `TransformerConfig.multiple` (4 for the style network's two stride-2 stages): tiles that start on
    this grid sample the input as the whole image does.
    """
    size = tile - tile % align
    step = max(align, (size - overlap) // align * align)

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        last = -(-(length - size) // align)  # the last start, in grid units, rounded up: it reaches the edge
        gaps = -(-last // (step // align))  # fewest gaps of at most `step` pixels
        return [i * last // gaps * align for i in range(gaps + 1)]  # evenly spread over the grid

    return [
        (top, left, min(top + size, height), min(left + size, width))
        for top in starts(height)
        for left in starts(width)
    ]


def _ramp(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """Blending weights (size,) of one tile side: linear ramps over `overlap` pixels where tiles overlap."""
    position = torch.arange(size, dtype=torch.float32) + 0.5  # (size,), pixel centres
    weight = torch.ones(size)
    if overlap > 0 and ramp_start:
        weight = torch.minimum(weight, position / overlap)
    if overlap > 0 and ramp_end:
        weight = torch.minimum(weight, (size - position) / overlap)
    return weight  # > 0 everywhere: every pixel gets some weight from every tile covering it


def _box_weights(box: tuple[int, int, int, int], overlap: int, height: int, width: int) -> torch.Tensor:
    """Feathered blending weights (1, 1, h, w) of one tile: ramps on its sides inside the image only."""
    top, left, bottom, right = box
    wy = _ramp(bottom - top, overlap, top > 0, bottom < height)  # (h,)
    wx = _ramp(right - left, overlap, left > 0, right < width)  # (w,)
    return (wy[:, None] * wx[None, :])[None, None]  # (1, 1, h, w)


class _SharedInstanceNorm:
    """Make every InstanceNorm2d of a model use fixed, shared statistics (a context manager).

    Inside the ``with`` block, the first forward pass records each layer's per-channel mean and variance;
    every later pass (the tiles) normalises with them instead of its own input's statistics.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
        self.fixed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __enter__(self) -> _SharedInstanceNorm:
        for index, layer in enumerate(self.layers):
            layer.forward = self._make_forward(index, layer)  # instance attribute shadows the class method
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self.layers:
            del layer.forward

    def _make_forward(self, index: int, layer: torch.nn.InstanceNorm2d):
        def forward(x: torch.Tensor) -> torch.Tensor:  # (1, C, h, w)
            if index not in self.fixed:  # the statistics pass: record, then normalise as usual
                var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)  # (C,), (C,)
                self.fixed[index] = (mean, var)
                return type(layer).forward(layer, x)
            mean, var = (t.to(x.dtype)[None, :, None, None] for t in self.fixed[index])  # (1, C, 1, 1)
            y = (x - mean) * torch.rsqrt(var + layer.eps)
            if layer.affine:
                y = y * layer.weight[None, :, None, None] + layer.bias[None, :, None, None]
            return y

        return forward


def stylize_image(
    model: TransformerNet,
    image: torch.Tensor,
    tile: int | None = None,
    overlap: int = 32,
    shared_stats: bool = True,
) -> torch.Tensor:
    """Stylise a (1, 3, H, W) or (3, H, W) image in [0, 1]; with `tile`, in overlapping N x N tiles.

    With ``shared_stats`` (default) every tile's instance norms use the statistics of the whole image,
    measured in one extra pass over the image downscaled to fit in a tile, rather than each tile's own, so
    that the tiles match in tone and the result stays close to the untiled one.
    """
    if getattr(getattr(model, "config", None), "task", "style") != "style":
        raise ValueError("stylize_image needs a style network; this one upscales (use stlib.upscale.upscale_image).")
    return run_network(model, image, tile, overlap, shared_stats, caller="stylize_image")


def run_network(
    model: TransformerNet,
    image: torch.Tensor,
    tile: int | None = None,
    overlap: int = 32,
    shared_stats: bool = True,
    caller: str = "run_network",
) -> torch.Tensor:
    """Any `TransformerNet` on a (1, 3, H, W) or (3, H, W) image: the output is `upscale` times larger (style: 1).

    `stylize_image` for style networks and `stlib.upscale.upscale_image` for super-resolution networks; `tile`
    and `overlap` are in input pixels.
    """
    _check_eval(model, caller)
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{caller} expects a (1, 3, H, W) or (3, H, W) RGB tensor, got {shape}.")
    if image.dim() == 4 and image.shape[0] != 1:
        raise ValueError(f"{caller} takes one image at a time, got a batch of {image.shape[0]}.")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 16):
        raise ValueError(f"tile must be None or an integer of at least 16 pixels, got {tile!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be an integer >= 0, got {overlap!r}.")
    if tile is not None and 2 * overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be less than half the tile size ({tile}).")
    device, dtype = _model_device_dtype(model)
    x = image if image.dim() == 4 else image.unsqueeze(0)  # (1, 3, H, W)
    height, width = x.shape[-2:]
    config = getattr(model, "config", None)
    align, scale = (config.multiple, config.upscale) if config is not None else (4, 1)

    with torch.inference_mode():
        if tile is None or (height <= tile and width <= tile):
            out = model(x.to(device=device, dtype=dtype)).float().clamp(0, 1).to(image.device)  # (1, 3, H, W)
            return out if image.dim() == 4 else out[0]
        boxes = _tile_boxes(height, width, tile, overlap, align)
        if shared_stats and any(isinstance(m, torch.nn.InstanceNorm2d) for m in model.modules()):
            shrink = min(1.0, tile / max(height, width))
            size = (max(8, round(height * shrink)), max(8, round(width * shrink)))
            whole = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)  # fits a tile
            with _SharedInstanceNorm(model):
                model(whole.to(device=device, dtype=dtype))  # records the statistics of the whole image
                out = _blend_tiles(model, x, boxes, overlap, device, dtype, scale)
        else:
            out = _blend_tiles(model, x, boxes, overlap, device, dtype, scale)
        out = out.to(image.device)
    return out if image.dim() == 4 else out[0]


def _blend_tiles(
    model: torch.nn.Module,
    x: torch.Tensor,
    boxes: list[tuple[int, int, int, int]],
    overlap: int,
    device: torch.device,
    dtype: torch.dtype,
    scale: int = 1,
) -> torch.Tensor:
    """Run the model on each (top, left, bottom, right) box of x (1, 3, H, W); blend with feathered weights.

    The model's outputs are `scale` times larger than its inputs (super-resolution); so are the boxes there.
    """
    height, width = x.shape[-2:]
    total = torch.zeros(1, 3, scale * height, scale * width, device=x.device)  # weighted sum of tile outputs
    weights = torch.zeros(1, 1, scale * height, scale * width, device=x.device)  # sum of weights
    for box in boxes:
        top, left, bottom, right = box
        piece = x[..., top:bottom, left:right].to(device=device, dtype=dtype)  # (1, 3, <=tile, <=tile)
        styled = model(piece).float().clamp(0, 1).to(x.device)  # (1, 3, s*h, s*w)
        out_box = tuple(scale * v for v in box)
        w = _box_weights(out_box, scale * overlap, scale * height, scale * width).to(x.device)  # (1, 1, s*h, s*w)
        top, left, bottom, right = out_box
        total[..., top:bottom, left:right] += styled * w
        weights[..., top:bottom, left:right] += w
    return (total / weights).clamp(0, 1)  # (1, 3, s*H, s*W)


def stylize_frame(model: TransformerNet | Backend, frame: np.ndarray) -> np.ndarray:
    """Stylise one video frame: uint8 (H, W, 3) RGB in, uint8 (H, W, 3) RGB out; nothing else changes.

    `model` is a network (run as it is) or a `stlib.backends.Backend` (the same network on a faster engine).
    """
    if isinstance(model, Backend):
        device, dtype = model.device, torch.float32
    else:
        _check_eval(model, "stylize_frame")
        device, dtype = _model_device_dtype(model)
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        what = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"stylize_frame expects a uint8 (H, W, 3) RGB array, got a {what}.")
    with torch.inference_mode():
        x = torch.from_numpy(np.array(frame, copy=True)).to(device)  # (H, W, 3) uint8, our own copy
        x = x.permute(2, 0, 1).unsqueeze(0).to(dtype).div(255)  # (1, 3, H, W) in [0, 1]
        y = model(x).float().clamp(0, 1)  # (1, 3, H, W)
        y = y[0].mul(255).round().to(torch.uint8).permute(1, 2, 0)  # (H, W, 3)
        return y.cpu().numpy()


def stylize_files(
    model: TransformerNet,
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    size: int | None = None,
    tile: int | None = None,
    overlap: int = 32,
) -> list[Path]:
    """Stylise image files and folders into `out` (a folder, or a file name for one image); return the paths.

    Each output keeps its input's name (and format when it can be written, else PNG); files are written
    atomically. `size` resizes the longest side of each input first (None: keep its size).
    """
    files = expand_inputs(inputs, "stylize_files")
    out = Path(out)
    if is_image_name(out) and not out.is_dir():
        if len(files) != 1:
            raise ValueError(f"'{out}' is a file name but there are {len(files)} input images; give a folder instead.")
        targets = [out]
    else:
        targets = [out / (p.name if is_image_name(p) else f"{p.stem}.png") for p in files]
        seen: dict[Path, Path] = {}
        for source, target in zip(files, targets, strict=True):
            if target in seen:
                raise ValueError(
                    f"Inputs '{seen[target]}' and '{source}' would both be written to '{target}'; "
                    "stylise them into different folders."
                )
            seen[target] = source
    for source, target in zip(files, targets, strict=True):
        if target.resolve() == source.resolve():
            raise ValueError(f"Refusing to overwrite the input '{source}' with its stylised version.")
    written = []
    for source, target in zip(files, targets, strict=True):
        image = load_tensor(source, size=size)  # (1, 3, H, W); ImageError names the file
        written.append(save_image(stylize_image(model, image, tile=tile, overlap=overlap), target))
    return written


def tile_count(height: int, width: int, tile: int, overlap: int = 32, align: int = 4) -> int:
    """How many tiles `stylize_image` runs for an H x W image (1 when the image fits in one tile)."""
    if height <= tile and width <= tile:
        return 1
    return len(_tile_boxes(height, width, tile, overlap, align))
