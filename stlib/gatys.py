"""Image optimisation through a fixed VGG: feature inversion, texture synthesis and style transfer.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks" (CVPR 2016): start from
an image (white noise or the photo) and change its *pixels* by gradient descent so that its VGG features
match targets:

- content reconstruction (Sec. 2.1, Fig. 1 bottom): minimise L_content (Eq. 1) at one layer;
- style reconstruction / texture synthesis (Sec. 2.2, Fig. 1 top): minimise L_style (Eq. 4-5) over a set
  of layers;
- style transfer (Sec. 2.3, Eq. 7): minimise alpha * L_content + beta * L_style (+ TV).

The paper optimises with L-BFGS; Adam is offered for comparison. Pixels stay in [0, 1] by clamping after
every step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .losses import content_loss, gram_matrix, style_loss, total_variation
from .vgg import VGGFeatures

__all__ = [
    "OptimizationDiverged",
    "Result",
    "init_image",
    "optimize_image",
    "reconstruct_content",
    "reconstruct_style",
]

LossFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]
Callback = Callable[[int, torch.Tensor, dict[str, float]], None]


class OptimizationDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message says at which iteration and what to change."""


@dataclass
class Result:
    """An optimised image (1, 3, H, W) in [0, 1] with its per-iteration loss history."""

    image: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def losses(self, key: str = "total") -> list[float]:
        """The values of one loss term over the iterations."""
        return [h[key] for h in self.history]


def init_image(
    kind: str, like: torch.Tensor | None = None, size: tuple[int, int] | None = None, seed: int = 0
) -> torch.Tensor:
    """Starting image (1, 3, H, W): ``"noise"`` (uniform white noise), ``"blurred-noise"`` or ``"content"``."""
    if like is None and size is None:
        raise ValueError("init_image needs `like` (an image) or `size` (height, width).")
    h, w = size if size is not None else like.shape[-2:]
    device = like.device if like is not None else None
    gen = torch.Generator().manual_seed(seed)
    if kind == "content":
        if like is None:
            raise ValueError("init 'content' needs the content image.")
        return like.detach().clone().float()
    if kind == "noise":
        return torch.rand(1, 3, h, w, generator=gen).to(device)
    if kind == "blurred-noise":
        # Low-frequency noise around mid-grey: upsampled coarse noise reads as soft blobs, not speckle.
        coarse = torch.rand(1, 3, max(1, h // 8), max(1, w // 8), generator=gen)
        blurred = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        return (0.5 + 0.5 * (blurred - 0.5)).clamp(0, 1).to(device)
    raise ValueError(f"Unknown init {kind!r}; choose 'content', 'noise' or 'blurred-noise'.")


def optimize_image(
    loss_fn: LossFn,
    init: torch.Tensor,
    iterations: int,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Result:
    """Minimise ``loss_fn(image)["total"]`` over the pixels of `init` (not modified); returns a `Result`.

    Each iteration costs exactly one forward and backward pass for both optimisers (L-BFGS runs without
    line search, as in Gatys et al.'s and Johnson's implementations), so their histories are comparable.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}.")
    image = init.detach().clone().float().clamp_(0, 1).requires_grad_(True)
    if optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [image], lr=lr or 1.0, max_iter=1, history_size=50, tolerance_grad=0.0, tolerance_change=0.0
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam([image], lr=lr or 0.02)
    else:
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose 'lbfgs' or 'adam'.")

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc=optimizer, leave=False)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        terms = loss_fn(image)
        total = terms["total"]
        value = float(total.detach())
        if not math.isfinite(value):
            raise OptimizationDiverged(
                f"The loss became {value} at iteration {len(history) + 1}; lower the learning rate or the "
                "loss weights, or use float32 instead of bf16."
            )
        total.backward()
        elapsed = time.perf_counter() - start
        history.append({k: float(v.detach()) for k, v in terms.items()} | {"time": elapsed})
        return total

    try:
        for i in range(iterations):
            opt.step(closure)
            with torch.no_grad():
                image.clamp_(0, 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['total']:.4g}")
            if callback is not None:
                callback(i + 1, image.detach(), history[-1])
    finally:
        if bar is not None:
            bar.close()
    return Result(image.detach(), history, time.perf_counter() - start)


def reconstruct_content(
    image: torch.Tensor,
    layer: str,
    iterations: int = 300,
    weights: str | None = "auto",
    arch: str = "vgg16",
    init: str = "noise",
    tv_weight: float = 0.05,
    seed: int = 0,
    optimizer: str = "lbfgs",
    callback: Callback | None = None,
) -> Result:
    """Invert one layer: find an image whose `layer` features match those of `image` (1, 3, H, W).

    The content loss is divided by the target's mean square, so it starts near 1 at every layer and
    `tv_weight` means the same everywhere. A small total-variation term (Mahendran & Vedaldi, CVPR 2015)
    removes the high-frequency part of the noise that the network cannot see and so cannot correct.
    """
    with VGGFeatures([layer], arch=arch, weights=weights).to(image.device) as vgg:
        target = vgg(image)[layer].detach()
        scale = float(target.pow(2).mean()) or 1.0

        def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
            content = content_loss(vgg(x)[layer], target) / scale
            tv = total_variation(x)
            return {"content": content, "tv": tv, "total": content + tv_weight * tv}

        start = init_image(init, like=image, seed=seed)
        return optimize_image(loss_fn, start, iterations, optimizer=optimizer, callback=callback)


def reconstruct_style(
    style: torch.Tensor,
    layers: Sequence[str],
    size: tuple[int, int] | None = None,
    iterations: int = 200,
    weights: str | None = "auto",
    arch: str = "vgg16",
    pool: str = "max",
    seed: int = 0,
    optimizer: str = "lbfgs",
    callback: Callback | None = None,
) -> Result:
    """Texture synthesis: an image of `size` (H, W) whose Gram matrices at `layers` match the style's.

    Every layer's loss is divided by the squared norm of its target Gram matrix, so each layer counts
    equally whatever the scale of its activations (Gatys et al. weight layers equally, w_l = 1/|layers|).
    """
    with VGGFeatures(layers, arch=arch, weights=weights, pool=pool).to(style.device) as vgg:
        targets = {name: gram_matrix(f).detach() for name, f in vgg(style).items()}  # {layer: (1, C, C)}
        layer_weights = {name: 1.0 / (len(targets) * float(g.pow(2).sum())) for name, g in targets.items()}

        def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
            loss = style_loss(vgg(x), targets, layer_weights)
            return {"style": loss, "total": loss}

        start = init_image("noise", like=style, size=size, seed=seed)
        return optimize_image(loss_fn, start, iterations, optimizer=optimizer, callback=callback)
