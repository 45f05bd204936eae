"""Image optimisation through a fixed VGG: feature inversion, texture synthesis and style transfer.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks" (CVPR 2016): start from
an image (white noise or the photo) and change its *pixels* by gradient descent so that its VGG features
match targets:

- content reconstruction (Sec. 2.1, Fig. 1 bottom): minimise L_content (Eq. 1) at one layer;
- style reconstruction / texture synthesis (Sec. 2.2, Fig. 1 top): minimise L_style (Eq. 4-5) over a set
  of layers;
- style transfer (Sec. 2.3, Eq. 7): minimise alpha * L_content + beta * L_style (+ TV), `stylize`.

`stylize` adds the extensions of Gatys, Ecker, Bethge, Hertzmann & Shechtman, "Controlling Perceptual
Factors in Neural Style Transfer" (CVPR 2017): colour preservation (Sec. 5, see `stlib.color`), several
styles mixed by blending their Gram matrices (Sec. 4), and coarse-to-fine optimisation (Sec. 6.1: optimise
at a small size, upsample the result and use it as the start at the next size).

The objective is `stlib.perceptual`'s normalised one (`GatysLoss` wraps a `stlib.perceptual.PerceptualLoss`
with the photo's features as fixed content targets), so one set of weights works for every VGG weight source
and image size: the same weights give a similar balance at 256 and at 1024 px (the notebook and
`benchmarks/gatys.py` check it).

Optimisation: L-BFGS (the paper's choice) with one forward and backward pass per iteration, or Adam for
comparison. The image is a float32 tensor kept in [0, 1] by clamping after every step; with
``precision="bf16"`` only the VGG's activations are computed in bfloat16 (Gram matrices and losses in
float32), the pixels and their gradients stay float32. A NaN or infinite loss raises
`OptimizationDiverged` at once, so a diverged run never returns a black image.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .color import color_histogram_match, combine_luminance, luminance, match_luminance
from .hardware import PRECISIONS, keep_freed_memory, resolve_precision
from .images import save_gif
from .options import accept_former_keywords, check_options, nest_settings, option, require
from .perceptual import CONTENT_LAYERS, STYLE_LAYERS, ObjectiveConfig, PerceptualLoss, blend_weights

if TYPE_CHECKING:
    from .vgg import VGGFeatures

__all__ = [
    "CONTENT_LAYERS",
    "STYLE_LAYERS",
    "GatysConfig",
    "GatysLoss",
    "OptimizationDiverged",
    "Result",
    "init_image",
    "optimize_image",
    "reconstruct_content",
    "reconstruct_style",
    "resize_tensor",
    "stylize",
]

LossFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]
Callback = Callable[[int, torch.Tensor, dict[str, float]], "bool | None"]

_OPT, _LOSS = "optimisation", "loss"
_INITS = ("content", "noise", "blurred-noise")
_COLOR_METHODS = ("luminance", "histogram")


class OptimizationDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message says at which iteration and what to change."""


@dataclass
class Result:
    """An optimised image (1, 3, H, W) in [0, 1] with its per-iteration loss history and optional snapshots.

    Every history entry holds the loss terms (``content``, ``style``, ``tv``, ``total`` for `stylize`) and
    ``time``, the seconds since the start; multi-scale runs also record ``size`` (the longest side).
    """

    image: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    snapshots: list[torch.Tensor] = field(default_factory=list)

    def losses(self, key: str = "total") -> list[float]:
        """The values of one loss term over the iterations."""
        return [h[key] for h in self.history]

    def save_gif(self, path: str | os.PathLike, duration_ms: int = 120, hold_last_ms: int = 1500) -> Path:
        """Atomically write the snapshots (resized to the final image's size) as an animated GIF."""
        if not self.snapshots:
            raise ValueError("This result has no snapshots; set GatysConfig(snapshot_every=N) to record them.")
        h, w = self.image.shape[-2:]
        return save_gif([resize_tensor(s, (h, w)) for s in self.snapshots], path, duration_ms, hold_last_ms)


@dataclass
class GatysConfig:
    """Every setting of `stylize`: the objective (a nested `stlib.perceptual.ObjectiveConfig`) and the optimisation.

    The defaults give a good Starry Night transfer of a photo at 256-512 px. Weights refer to the normalised loss
    terms of `stlib.perceptual`, so they mean the same for ImageNet and offline VGG weights and at every size.
    ``objective`` takes an `ObjectiveConfig` (e.g. a trained network's, `TrainConfig.objective`) or a dict of the
    settings that differ from Gatys et al.'s, e.g. ``GatysConfig(objective={"style_weight": 20}, size=256)``.
    An earlier version's keywords are still accepted: ``autocast=`` for ``precision``, and the objective's settings
    given flat (``style_weight=``, ``weights=`` ...), which go into ``objective``.
    """

    objective: ObjectiveConfig | Mapping[str, Any] | None = field(
        default=None, metadata={"group": _LOSS, "nested": ObjectiveConfig}
    )  # None: Gatys et al.'s layers with the course's weights, ObjectiveConfig(); a dict changes some settings

    optimizer: str = option("lbfgs", "L-BFGS (the paper's) or Adam", choices=("lbfgs", "adam"), group=_OPT)
    lr: float | None = option(None, "step size (default 1.0 for lbfgs, 0.02 for adam)", check="positive", group=_OPT)
    iterations: int | tuple[int, ...] = option(
        300, "L-BFGS/Adam iterations: one count, or one per scale", check="positive", metavar="N", group=_OPT
    )
    size: int | None = option(512, "longest side of the result in pixels", check="positive", metavar="PX", group=_OPT)
    style_scale: float = option(1.0, "size of the style image relative to the content", check="positive", group=_LOSS)
    init: str = option("content", "starting image", choices=_INITS, group=_OPT)
    seed: int = option(0, "seed of the noise inits", group=_OPT)
    style_blend: tuple[float, ...] | None = option(
        None, "one blend weight per --style (default: equal)", flag="--blend", check="non_negative", metavar="W",
        group="images",
    )  # fmt: skip
    preserve_colors: bool = option(False, "keep the photo's colours (Gatys et al. 2017, Sec. 5)", group=_LOSS)
    color_method: str = option(
        "luminance", "with --preserve-colors: transfer luminance only, or recolour the style to the photo's colours",
        choices=_COLOR_METHODS, group=_LOSS,
    )  # fmt: skip
    scales: tuple[int, ...] | None = option(
        None, "coarse-to-fine sizes, e.g. 256 512 (overrides --size)", check="positive", metavar="PX", group=_OPT
    )
    snapshot_every: int = 0  # keep a copy of the image every N iterations (for a GIF); 0: none
    progress: bool = option(True, "no progress bar", flag="--quiet", group=_OPT)
    channels_last: bool = True  # NHWC memory layout for the VGG (faster convolutions)
    truncate: bool = True  # run the VGG only up to the deepest layer used
    precision: str = option(
        "fp32", "autocast of the VGG's activations: bf16 and fp16 are fast on GPUs only (auto: see stlib.hardware)",
        choices=PRECISIONS, flag=("--precision", "--autocast"), group=_OPT,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.objective is None or isinstance(self.objective, Mapping):
            self.objective = ObjectiveConfig(**(self.objective or {}))
        if isinstance(self.iterations, list):
            self.iterations = tuple(self.iterations)
        if self.scales is not None:
            self.scales = tuple(self.scales)
        if self.style_blend is not None:
            self.style_blend = tuple(self.style_blend)

    def validate(self) -> None:
        """Raise ValueError with one clear sentence for the first invalid setting."""
        self.objective.validate()  # its options' declared limits and choices, and its layers
        check_options(self)  # the optimisation options' limits and choices
        n_scales = len(self.scales) if self.scales else 1
        if isinstance(self.iterations, tuple) and len(self.iterations) != n_scales:
            raise ValueError(f"iterations has {len(self.iterations)} entries but there are {n_scales} scales.")
        if self.size is not None and self.size < 16:
            raise ValueError(f"size must be at least 16 pixels (the VGG pools 4 times), got {self.size}.")
        if self.scales is not None:
            if len(self.scales) == 0 or any(s < 16 for s in self.scales):
                raise ValueError(f"scales must be sizes of at least 16 pixels, got {self.scales}.")
            if any(b <= a for a, b in zip(self.scales, self.scales[1:], strict=False)):
                raise ValueError(f"scales must increase from coarse to fine, got {self.scales}.")
        require(self, "non_negative_int", "snapshot_every")

    def iterations_per_scale(self) -> tuple[int, ...]:
        """The number of iterations at each scale (one entry for a single-scale run)."""
        n_scales = len(self.scales) if self.scales else 1
        return self.iterations if isinstance(self.iterations, tuple) else (self.iterations,) * n_scales


_OBJECTIVE_SETTINGS = frozenset(f.name for f in fields(ObjectiveConfig))


def _former_names(settings: dict[str, Any]) -> dict[str, Any]:
    """An earlier GatysConfig's keywords as now: ``autocast`` is ``precision``, ``weights`` is ``vgg_weights``, and
    the objective's settings, once fields of GatysConfig itself, go into the nested ``objective``."""
    if "autocast" in settings:
        if "precision" in settings:
            raise TypeError("GatysConfig takes precision or its former name autocast, not both.")
        settings["precision"] = settings.pop("autocast") or "fp32"  # autocast None: float32
    flat = {k: settings.pop(k) for k in [*settings] if k in _OBJECTIVE_SETTINGS or k == "weights"}
    if "weights" in flat:
        if "vgg_weights" in flat:
            raise TypeError("GatysConfig takes vgg_weights or its former name weights, not both.")
        flat["vgg_weights"] = flat.pop("weights")
    nest_settings(settings, "objective", ObjectiveConfig, flat)
    return settings


accept_former_keywords(GatysConfig, _former_names)


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


def resize_tensor(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a (B, C, H, W) image: an int sets the longest side (aspect kept), a tuple is (height, width)."""
    h, w = image.shape[-2:]
    if isinstance(size, int):
        scale = size / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if tuple(size) == (h, w):
        return image.clone()
    shrinking = size[0] < h or size[1] < w
    out = F.interpolate(image.float(), size=size, mode="bicubic", align_corners=False, antialias=shrinking)
    return out.clamp(0, 1)


def _optimizer(image: torch.Tensor, name: str, lr: float | None) -> torch.optim.Optimizer:
    """L-BFGS (one evaluation per step, no line search) or Adam over the pixels of `image`."""
    if name == "lbfgs":
        return torch.optim.LBFGS(
            [image], lr=lr or 1.0, max_iter=1, history_size=50, tolerance_grad=0.0, tolerance_change=0.0
        )
    if name == "adam":
        return torch.optim.Adam([image], lr=lr or 0.02)
    raise ValueError(f"Unknown optimizer {name!r}; choose 'lbfgs' or 'adam'.")


def optimize_image(
    loss_fn: LossFn,
    init: torch.Tensor,
    iterations: int,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> Result:
    """Minimise ``loss_fn(image)["total"]`` over the pixels of `init` (not modified); returns a `Result`.

    Each iteration costs exactly one forward and backward pass for both optimisers (L-BFGS runs without
    line search, as in Gatys et al.'s and Johnson's implementations), so their histories are comparable.
    The pixels are float32 and clamped to [0, 1] after every step. ``callback(step, image, losses)`` runs
    after every step; returning True stops the optimisation early. Without a line search an L-BFGS step can
    overshoot, so the returned image is the one with the lowest objective seen (the image after the last
    step is evaluated once more, without a gradient, to take part); the history keeps every iteration.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}.")
    if init.device.type == "cpu":
        keep_freed_memory()  # each iteration reuses the last one's VGG activations' memory (`stlib.hardware`)
    image = init.detach().clone().float().clamp_(0, 1).requires_grad_(True)
    opt = _optimizer(image, optimizer, lr)
    history: list[dict[str, float]] = []
    best: dict = {"loss": math.inf, "image": None}  # the lowest objective evaluated so far, and its image
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc=desc or optimizer, leave=False)

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
        if value < best["loss"]:
            best["loss"], best["image"] = value, image.detach().clone()
        elapsed = time.perf_counter() - start
        history.append({k: float(v.detach()) for k, v in terms.items()} | {"time": elapsed})
        return total

    try:
        for i in range(iterations):
            opt.step(closure)
            with torch.no_grad():
                if not bool(torch.isfinite(image).all()):
                    raise OptimizationDiverged(
                        f"The image became NaN or infinite at iteration {i + 1}; lower the learning rate or "
                        "the loss weights."
                    )
                image.clamp_(0, 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['total']:.4g}")
            if callback is not None and callback(i + 1, image.detach(), history[-1]):
                break
        with torch.no_grad():
            last = float(loss_fn(image)["total"])  # the image after the last step, not evaluated yet
        if best["image"] is None or last <= best["loss"]:
            best["image"] = image.detach()
    finally:
        if bar is not None:
            bar.close()
    return Result(best["image"], history, time.perf_counter() - start)


def reconstruct_content(
    image: torch.Tensor,
    layer: str,
    iterations: int = 300,
    *,
    vgg_weights: str | None = "auto",
    arch: str = "vgg16",
    tv_weight: float = 0.05,
    init: str = "noise",
    seed: int = 0,
    optimizer: str = "lbfgs",
    callback: Callback | None = None,
) -> Result:
    """Invert one layer: find an image whose `layer` features match those of `image` (1, 3, H, W).

    The objective is `stlib.perceptual`'s content term alone (divided by the target's mean square, so it starts
    near 1 at every layer and `tv_weight` means the same everywhere) plus a small total-variation term (Mahendran
    & Vedaldi, CVPR 2015) that removes the high-frequency part of the noise the network cannot see.
    """
    objective = ObjectiveConfig(arch, vgg_weights, "max", (layer,), {}, 1.0, 0.0, tv_weight)
    with PerceptualLoss((), objective).to(image.device) as loss:
        targets = loss.content_targets(image)
        start = init_image(init, like=image, seed=seed)
        return optimize_image(lambda x: loss.judge(x, targets), start, iterations, optimizer, callback=callback)


def reconstruct_style(
    style: torch.Tensor,
    layers: Sequence[str],
    size: tuple[int, int] | None = None,
    iterations: int = 200,
    *,
    vgg_weights: str | None = "auto",
    arch: str = "vgg16",
    pool: str = "max",
    seed: int = 0,
    optimizer: str = "lbfgs",
    callback: Callback | None = None,
) -> Result:
    """Texture synthesis: an image of `size` (H, W) whose Gram matrices at `layers` match the style's.

    The objective is `stlib.perceptual`'s style term alone: every layer's error relative to its target Gram
    matrix, so each layer counts equally whatever the scale of its activations (w_l = 1/|layers|, as Gatys et al.).
    """
    objective = ObjectiveConfig(arch, vgg_weights, pool, (), dict.fromkeys(layers, 1.0), 0.0, 1.0, 0.0)
    with PerceptualLoss(style, objective) as loss:
        start = init_image("noise", like=style, size=size, seed=seed)
        return optimize_image(lambda x: loss.judge(x, {}), start, iterations, optimizer, callback=callback)


# ----------------------------------------------------------------------------------------------------------
# Style transfer (Gatys et al. 2016, Eq. 7) with the 2017 extensions
# ----------------------------------------------------------------------------------------------------------


def _check_image(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"The {name} image must be a torch.Tensor, got {type(image).__name__}.")
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"The {name} image must have shape (1, 3, H, W), got {tuple(image.shape)}.")
    if min(image.shape[-2:]) < 16:
        raise ValueError(f"The {name} image is too small ({tuple(image.shape[-2:])}); both sides need >= 16 pixels.")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"The {name} image contains NaN or infinite values.")


class GatysLoss:
    """The normalised style transfer objective of `stlib.perceptual`, targets computed once; call it on images.

    ``loss(x)`` for a (1, C, H, W) image in [0, 1] (C = 3, or 1 for a luminance image, which is repeated to
    RGB) returns ``{"content", "style", "tv", "total"}`` scalar tensors. Several styles are blended by
    mixing their Gram matrices, A_l = sum_i b_i A_l^(i), with weights `blend` summing to 1 (for a squared
    error this has the same gradient as blending the per-style losses). Only the layers of terms with a
    positive weight run. Use it in a ``with`` block (or call `close`) to remove the VGG's hooks.
    """

    def __init__(
        self,
        content: torch.Tensor,
        styles: torch.Tensor | Sequence[torch.Tensor],
        config: GatysConfig | None = None,
        blend: Sequence[float] | None = None,
    ) -> None:
        self.config = config = config or GatysConfig()
        config.validate()
        styles = [styles] if isinstance(styles, torch.Tensor) else list(styles)
        if not styles:
            raise ValueError("Give at least one style image.")
        self.objective = PerceptualLoss(
            styles,
            config.objective.active(),
            blend=blend if blend is not None else config.style_blend,
            precision=resolve_precision(config.precision, content.device),
            channels_last=config.channels_last,
            vgg_pass="shared",
            truncate=config.truncate,
        ).to(content.device)
        self.content_targets = self.objective.content_targets(content)  # {layer: ((1, C, H, W), scale)}

    @property
    def vgg(self) -> VGGFeatures:
        """The loss network (`stlib.vgg.VGGFeatures`)."""
        return self.objective.vgg

    @property
    def style_targets(self) -> dict[str, torch.Tensor]:
        """The (blended) style Gram matrices {layer: (1, C, C)}."""
        return self.objective.style_grams

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """VGG activations {layer: (1, C, H, W)} of an RGB or luminance image, in the configured precision."""
        return self.objective.features(image)

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms and their weighted sum for one image (1, C, H, W) in [0, 1]."""
        return self.objective.judge(image, self.content_targets)

    def close(self) -> None:
        """Remove the VGG's forward hooks."""
        self.objective.close()

    def __enter__(self) -> GatysLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_image(kind: str, content: torch.Tensor, seed: int) -> torch.Tensor:
    """The first scale's starting image, with as many channels as `content` (3, or 1 for luminance)."""
    start = init_image(kind, like=content if content.shape[1] == 3 else content.expand(-1, 3, -1, -1), seed=seed)
    return start if content.shape[1] == 3 else luminance(start)


def _check_inputs(content: torch.Tensor, style: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The style images as a list, after checking them and the content image (one sentence per problem)."""
    styles = [style] if isinstance(style, torch.Tensor) else list(style)
    if not styles:
        raise ValueError("Give at least one style image.")
    _check_image(content, "content")
    for i, s in enumerate(styles):
        _check_image(s, "style" if len(styles) == 1 else f"style {i + 1}")
    return styles


def _scale_inputs(
    content: torch.Tensor, styles: list[torch.Tensor], size: int, config: GatysConfig
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """At one scale: the content to optimise (RGB, or its luminance), the styles, and the content's colours."""
    c = resize_tensor(content.float(), size)  # (1, 3, h, w)
    style_size = max(16, round(config.style_scale * size))
    ss = [resize_tensor(s.float(), style_size) for s in styles]
    if config.preserve_colors and config.color_method == "luminance":
        return luminance(c), [match_luminance(s, c) for s in ss], c  # (1, 1, h, w), [(1, 1, h', w')], RGB
    if config.preserve_colors:
        ss = [color_histogram_match(s, c) for s in ss]
    return c, ss, c


def stylize(
    content: torch.Tensor,
    style: torch.Tensor | Sequence[torch.Tensor],
    config: GatysConfig | None = None,
    callback: Callback | None = None,
) -> Result:
    """Gatys style transfer of `content` (1, 3, H, W) with one or several `style` images; returns a `Result`.

    The result has the content's aspect ratio and ``config.size`` (or the last of ``config.scales``) as its
    longest side. ``callback(step, image, losses)`` sees the RGB image after every step (steps count on
    across scales); returning True stops early. With ``snapshot_every=N`` the result holds the start image,
    every N-th image and the final one in ``snapshots`` (see `Result.save_gif`).
    """
    config = config or GatysConfig()
    config.validate()
    styles = _check_inputs(content, style)
    blend = blend_weights(config.style_blend, len(styles))
    luma_only = config.preserve_colors and config.color_method == "luminance"
    sizes = config.scales or ((config.size or max(content.shape[-2:])),)
    iterations = config.iterations_per_scale()

    start = time.perf_counter()
    history: list[dict[str, float]] = []
    snapshots: list[torch.Tensor] = []
    state: dict[str, float] = {"step": 0, "stop": False, "offset": 0.0}
    image: torch.Tensor | None = None

    for k, (size, n_iter) in enumerate(zip(sizes, iterations, strict=True)):
        c, ss, colors = _scale_inputs(content, styles, size, config)

        def to_rgb(x: torch.Tensor, colors: torch.Tensor = colors) -> torch.Tensor:
            return combine_luminance(x, colors) if luma_only else x

        init = _start_image(config.init, c, config.seed) if image is None else resize_tensor(image, c.shape[-2:])
        if config.snapshot_every and k == 0:
            snapshots.append(to_rgb(init).detach().cpu())

        def on_step(step: int, x: torch.Tensor, losses: dict[str, float], to_rgb=to_rgb, size=size) -> bool:
            losses["time"] += state["offset"]  # `losses` is the history entry: times count from the start
            if len(sizes) > 1:
                losses["size"] = float(size)
            state["step"] += 1
            n = state["step"]
            if config.snapshot_every and n % config.snapshot_every == 0:
                snapshots.append(to_rgb(x).cpu())
            if callback is not None and callback(n, to_rgb(x), losses):
                state["stop"] = True
            return state["stop"]

        with GatysLoss(c, ss, config, blend) as loss:
            state["offset"] = time.perf_counter() - start
            desc = f"{config.optimizer} {size}px" + (f" ({k + 1}/{len(sizes)})" if len(sizes) > 1 else "")
            part = optimize_image(
                loss, init, n_iter, config.optimizer, config.lr, callback=on_step, progress=config.progress, desc=desc
            )
        history += part.history
        image = part.image
        if config.snapshot_every and state["step"] % config.snapshot_every != 0:
            snapshots.append(to_rgb(image).cpu())  # the last image of this scale
        if state["stop"]:
            break

    assert image is not None
    final = to_rgb(image)
    if not bool(torch.isfinite(final).all()):
        raise OptimizationDiverged("The result contains NaN or infinite pixels; lower the loss weights.")
    return Result(final.detach(), history, time.perf_counter() - start, snapshots)
