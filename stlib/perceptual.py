"""The perceptual objective: a fixed VGG loss network, its layers and weights, and the normalised loss terms.

One objective serves image optimisation (Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional
Neural Networks", CVPR 2016, Eq. 7: alpha * L_content + beta * L_style) and the training of feed-forward
networks (Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016, Eq. 1: a weighted sum of feature reconstruction, style reconstruction and total variation terms).
The two papers differ only in the layers they read and in what is optimised (pixels, or a network's weights):
`stlib.gatys` and `stlib.train` both build a `PerceptualLoss` from an `ObjectiveConfig`.

Normalised terms, with F_l the features of the judged image y at layer l, P_l those of the content target x,
G_l their normalised Gram matrices (`stlib.losses.gram_matrix`) and A_l the style target's Gram matrix:

- content: ``mean_l ||F_l - P_l||^2 / ||P_l||^2`` over the content layers (Gatys Eq. 1, Johnson Eq. 2), both
  norms means over the C*H*W values (and the batch): the *relative* squared feature error, 0 for y = x
  (`content_scale`);
- style: ``sum_l w_l ||G_l - A_l||_F^2 / ||A_l||_F^2`` with the layer weights w_l scaled to sum to 1 (Gatys
  Eq. 4-5, Johnson Eq. 4): each layer's Gram error relative to its target (`relative_style_weights`);
- TV: `stlib.losses.total_variation`, the mean squared difference of neighbouring pixels (Johnson Sec. 3.3);
- pixel (Johnson Sec. 4.2, the super-resolution baseline l_pixel): ``||y - x||^2 / (C*H*W)``, the mean squared
  error of the pixels in [0, 1], *not* normalised, so that minimising it is maximising PSNR. Off by default
  (`ObjectiveConfig.pixel_weight` = 0); with only this term the VGG is never run.

Dividing by the targets' own magnitudes removes the scale of the activations, which differs by ~60x between
torchvision's ImageNet VGG and the Caffe-style offline VGG16 (`stlib.vgg`), and every term is a mean over
positions: one set of weights means the same for every weight source and image size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .hardware import autocast
from .images import load_tensor, to_tensor
from .losses import content_loss, gram_matrix, style_loss, total_variation
from .options import check_options, option
from .vgg import VGGFeatures, layer_names

__all__ = [
    "CONTENT_LAYERS",
    "JOHNSON_CONTENT_LAYER",
    "JOHNSON_STYLE_LAYERS",
    "STYLE_LAYERS",
    "VGG_PASSES",
    "FeatureError",
    "ObjectiveConfig",
    "PerceptualLoss",
    "blend_weights",
    "content_scale",
    "feature_distance",
    "gram_distance",
    "relative_style_weights",
    "style_size_curve",
]

CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
"""Gatys et al.'s content layer 'conv4_2', read after its ReLU as in their Caffe code (in-place ReLUs)."""

STYLE_LAYERS: dict[str, float] = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0}
"""Gatys et al.'s style layers 'conv1_1' ... 'conv5_1' (after their ReLUs), equally weighted."""

JOHNSON_CONTENT_LAYER = "relu2_2"
"""Johnson et al. Sec. 4.1: content (feature reconstruction) loss at relu2_2 of VGG16."""

JOHNSON_STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
"""Johnson et al. Sec. 4.1: style reconstruction loss at relu1_2, relu2_2, relu3_3 and relu4_3."""

VGG_PASSES = ("split", "fused", "shared")
"""How `PerceptualLoss` gets the content targets: a truncated copy of the network ("split"), one pass over the
targets and the outputs together ("fused"), or a no-grad pass of the same network ("shared", no copy)."""

_ARCHS = ("vgg16", "vgg19")
_POOLS = ("max", "avg")


@dataclass
class ObjectiveConfig:
    """The objective: loss network (architecture, weights, pooling), layers and term weights (normalised terms).

    The defaults are Gatys et al.'s layers with the course's weights; `johnson` gives Johnson et al.'s objective for
    training (nested in `stlib.train.TrainConfig`). A single layer name, or style layers listed without weights, are
    accepted. Each setting's limits are declared once, on its option, and `validate` applies them.
    """

    arch: str = option("vgg16", "loss network; the offline weights exist only for vgg16", choices=_ARCHS, group="loss")
    vgg_weights: str | None = option(
        "auto", "VGG weights: auto, imagenet, offline (VGG16 only) or a state-dict file", flag="--weights", group="loss"
    )
    pool: str = option("max", "VGG pooling (avg: Gatys et al.'s smoother option)", choices=_POOLS, group="loss")
    content_layers: tuple[str, ...] = option(CONTENT_LAYERS, "content layers", metavar="LAYER", group="loss")
    style_layers: dict[str, float] = option(
        help="style layers with optional weights w_l, e.g. relu1_1:2 relu3_1", factory=lambda: dict(STYLE_LAYERS),
        metavar="LAYER[:W]", group="loss",
    )  # fmt: skip
    content_weight: float = option(1.0, "alpha, weight of the content loss", check="non_negative", group="loss")
    style_weight: float = option(10.0, "beta, weight of the style loss", check="non_negative", group="loss")
    tv_weight: float = option(10.0, "weight of the total variation loss", check="non_negative", group="loss")
    pixel_weight: float = field(default=0.0, metadata={"check": "non_negative"})  # super-resolution's l_pixel

    def __post_init__(self) -> None:
        if isinstance(self.content_layers, str):
            self.content_layers = (self.content_layers,)
        self.content_layers = tuple(self.content_layers)
        if isinstance(self.style_layers, str):
            self.style_layers = {self.style_layers: 1.0}
        elif not isinstance(self.style_layers, Mapping):
            self.style_layers = dict.fromkeys(self.style_layers, 1.0)

    @classmethod
    def johnson(cls, task: str = "style", loss: str = "feat") -> ObjectiveConfig:
        """Johnson et al.'s objective for a training task: style (Sec. 4.1) or super-resolution (Sec. 4.2).

        Style: content at `JOHNSON_CONTENT_LAYER`, style at `JOHNSON_STYLE_LAYERS`, the default weights (content 1,
        style 10, TV 10: the normalised terms above make them work for Gatys' and Johnson's layers alike, and they
        trained the shipped style networks); super-resolution: l_feat at relu2_2
        (`loss` "feat") or l_pixel ("pixel"), no style, no TV.
        """
        if task == "superres":
            feat = loss == "feat"
            return cls(
                content_layers=(JOHNSON_CONTENT_LAYER,), style_layers={}, content_weight=1.0 if feat else 0.0,
                style_weight=0.0, tv_weight=0.0, pixel_weight=0.0 if feat else 1.0,
            )  # fmt: skip
        return cls(content_layers=(JOHNSON_CONTENT_LAYER,), style_layers=JOHNSON_STYLE_LAYERS)

    def validate(self) -> None:
        """Raise ValueError with one clear sentence for the first invalid setting."""
        check_options(self)  # the options' declared limits and choices
        if not self.content_layers and self.content_weight > 0:
            raise ValueError("content_layers is empty but content_weight > 0; name a layer such as 'relu4_2'.")
        if self.style_weight > 0:
            if not self.style_layers:
                raise ValueError("style_layers is empty but style_weight > 0; name layers such as 'relu1_1'.")
            bad = {k: v for k, v in self.style_layers.items() if not (math.isfinite(v) and v >= 0)}
            if bad or sum(self.style_layers.values()) <= 0:
                raise ValueError(f"style_layers weights must be >= 0 with a positive sum, got {self.style_layers}.")
        known = layer_names(self.arch)
        unknown = [n for n in (*self.content_layers, *self.style_layers) if n not in known]
        if unknown:
            raise ValueError(f"Unknown {self.arch} layer(s) {', '.join(unknown)} (see stlib.vgg.layer_names).")

    def active(self) -> ObjectiveConfig:
        """The objective without the layers whose term has weight 0 (they cannot change the total)."""
        content = self.content_layers if self.content_weight > 0 else ()
        style = {k: w for k, w in self.style_layers.items() if w > 0} if self.style_weight > 0 else {}
        return replace(self, content_layers=content, style_layers=style)


def content_scale(target: torch.Tensor) -> torch.Tensor:
    """||P||^2 as a mean over all values of a content target (B, C, H, W); 1 for an all-zero target."""
    scale = target.float().pow(2).mean()
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def relative_style_weights(layer_weights: Mapping[str, float], grams: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """w_l / (sum_l w_l * ||A_l||_F^2) for target Gram matrices A_l (1, C, C): each layer's error relative to A_l."""
    total = sum(layer_weights.values())
    return {name: w / (total * (float(grams[name].pow(2).sum()) or 1.0)) for name, w in layer_weights.items()}


def feature_distance(
    features: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], layers: Sequence[str]
) -> torch.Tensor:
    """Mean over `layers` of ||F_l - T_l||^2 / ||T_l||^2 (each (B, C, H, W)): the content term, target T."""
    total = sum(content_loss(features[name], target[name]) / content_scale(target[name]) for name in layers)
    return total / max(1, len(layers))


def gram_distance(
    features: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], weights: Mapping[str, float]
) -> torch.Tensor:
    """sum_l w_l ||G(F_l) - G(T_l)||_F^2 / ||G(T_l)||_F^2 per image, batch mean, `weights` scaled to sum to 1."""
    norm = sum(weights.values())
    total = torch.zeros((), device=next(iter(features.values())).device)
    for name, weight in weights.items():
        gram = gram_matrix(target[name])  # (B, C, C)
        error = (gram_matrix(features[name]) - gram).pow(2).sum(dim=(1, 2))  # (B,)
        total = total + weight / norm * (error / gram.pow(2).sum(dim=(1, 2)).clamp_min(1e-12)).mean()
    return total


ContentTargets = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {layer: (features (B, C, H, W), scale ())}


class PerceptualLoss(nn.Module):
    """The normalised objective (module docstring) through a fixed VGG; style Gram matrices computed once.

    ``loss(x, y)`` judges outputs y against content targets x, both (B, C, H, W) in [0, 1] (C = 3, or 1 for a
    luminance image, repeated to RGB), and returns the scalar terms ``{"content", "style", "tv", "total"}``
    (float32; `terms` names all but the total; "pixel" joins them when the objective has a pixel term).
    Style transfer passes the photos as x; `content_targets` and `judge` split the call where the targets stay
    fixed (Gatys' optimisation of one image). Several style images are blended by mixing their Gram matrices,
    A_l = sum_i b_i A_l^(i), with weights `blend` summing to 1.
    `precision` ("fp32", "bf16", "fp16") is the autocast of the VGG's activations; Gram matrices and losses are
    float32. The VGG runs channels_last (NHWC) when asked and always in bf16, whose convolutions run natively in
    NHWC (oneDNN's on CPUs, cuDNN's on GPUs): on a CPU its bf16 forward pass took 172 ms instead of 233 (256x256,
    batch 4), while in fp32 NHWC made the backward pass slower there. Use it in a ``with`` block (or call `close`)
    to remove the VGG's hooks.
    """

    terms = ("content", "style", "tv")

    def __init__(
        self,
        styles: torch.Tensor | Sequence[torch.Tensor] = (),
        config: ObjectiveConfig | None = None,
        *,
        blend: Sequence[float] | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        vgg_pass: str = "split",
        truncate: bool = True,
        style_warmup: int = 0,
    ) -> None:
        super().__init__()
        config = config or ObjectiveConfig()
        config.validate()
        if vgg_pass not in VGG_PASSES:
            raise ValueError(f"vgg_pass must be one of {', '.join(VGG_PASSES)}, got {vgg_pass!r}.")
        styles = [styles] if isinstance(styles, torch.Tensor) else list(styles)
        for style in styles:
            if style.dim() != 4 or style.shape[0] != 1 or style.shape[1] not in (1, 3):
                raise ValueError(f"The style image must be a (1, 3, H, W) tensor, got shape {tuple(style.shape)}.")
        if config.style_layers and not styles and config.style_weight > 0:
            raise ValueError("The objective has style layers but no style image was given.")
        channels_last = channels_last or precision == "bf16"
        self.config, self.precision, self.channels_last, self.vgg_pass = config, precision, channels_last, vgg_pass
        self.weights = {"content": config.content_weight, "style": config.style_weight, "tv": config.tv_weight}
        self.style_warmup = style_warmup
        if config.pixel_weight > 0:
            self.terms = (*type(self).terms, "pixel")
            self.weights["pixel"] = config.pixel_weight
        # Without a content weight the pixel term replaces the features (super-resolution's l_pixel): no VGG pass.
        pixel_only = config.pixel_weight > 0 and config.content_weight == 0
        self.content_layers = () if pixel_only else tuple(config.content_layers)
        self.style_layers = dict(config.style_layers) if styles else {}
        self.vgg = VGGFeatures(self._layers(truncate), arch=config.arch, weights=config.vgg_weights, pool=config.pool)
        split = vgg_pass == "split" and self.content_layers
        # The content targets need only the first layers: a second, truncated copy (split pass).
        self.content_vgg = (
            VGGFeatures(self.content_layers, arch=config.arch, weights=config.vgg_weights, pool=config.pool)
            if split
            else None
        )
        self.to(styles[0].device if styles else "cpu")
        if channels_last:
            self.to(memory_format=torch.channels_last)
        grams = self._style_grams(styles, blend) if self.style_layers else {}
        for name, gram in grams.items():
            self.register_buffer(f"gram_{name}", gram, persistent=False)
        self.layer_weights = relative_style_weights(self.style_layers, grams)

    def at_step(self, step: int) -> None:
        """Training's schedule of the weights at optimiser step `step`: the style weight ramps up from 0 over the
        first `style_warmup` steps (a network that first learns to reconstruct its input learns faster)."""
        if self.style_warmup:
            self.weights["style"] = self.config.style_weight * min(1.0, step / self.style_warmup)

    def _layers(self, truncate: bool) -> list[str]:
        layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))
        if not truncate:
            layers.append(layer_names(self.config.arch)[-1])  # run the whole network (the plain, slower path)
        return layers or [layer_names(self.config.arch)[0]]  # a TV-only objective still needs a network to hold

    def _style_grams(self, styles: list[torch.Tensor], blend: Sequence[float] | None) -> dict[str, torch.Tensor]:
        """The blended target Gram matrices {layer: (1, C, C)}, float32."""
        weights = blend_weights(blend, len(styles))
        grams: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for weight, style in zip(weights, styles, strict=True):
                feats = self.features(style)
                for name in self.style_layers:
                    g = weight * gram_matrix(feats[name]).float().detach()
                    grams[name] = g if name not in grams else grams[name] + g
        return grams

    @property
    def style_grams(self) -> dict[str, torch.Tensor]:
        """The style targets' (blended) Gram matrices {layer: (1, C, C)}."""
        return {name: getattr(self, f"gram_{name}") for name in self.style_layers}

    @property
    def source(self) -> str:
        """The resolved weight source of the loss network ("imagenet", "offline" or a path)."""
        return self.vgg.source

    def features(self, image: torch.Tensor, vgg: VGGFeatures | None = None) -> dict[str, torch.Tensor]:
        """VGG activations {layer: (B, C, H, W)} of RGB or luminance images, in the configured precision."""
        x = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image  # (B, 3, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.precision):
            return (vgg or self.vgg)(x)

    def content_targets(self, x: torch.Tensor) -> ContentTargets:
        """The content targets of images x (B, C, H, W): {layer: (features, `content_scale`)}, no gradient."""
        if not self.content_layers:
            return {}
        with torch.no_grad():
            feats = self.features(x, self.content_vgg)
            return {name: (feats[name].detach(), content_scale(feats[name])) for name in self.content_layers}

    def judge(
        self,
        y: torch.Tensor,
        targets: ContentTargets,
        feats: dict[str, torch.Tensor] | None = None,
        pixels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss terms of outputs y (B, C, H, W) against precomputed content `targets` (and y's features).

        `pixels` (B, C, H, W) are the target images of the pixel term (required when the objective has one).
        """
        if feats is None:
            feats = self.features(y) if targets or self.style_layers else {}
        zero = torch.zeros((), device=y.device)
        content = zero
        for name, (target, scale) in targets.items():
            content = content + content_loss(feats[name], target) / scale
        content = content / max(1, len(targets))
        style = style_loss(feats, self.style_grams, self.layer_weights) if self.style_layers else zero
        tv = total_variation(y)
        w = self.weights
        total = w["content"] * content + w["style"] * style + w["tv"] * tv
        terms = {"content": content, "style": style, "tv": tv}
        if "pixel" in w:
            if pixels is None:
                raise ValueError("The objective has a pixel term: judge needs the target images (pixels=...).")
            terms["pixel"] = F.mse_loss(y.float(), pixels.float())  # l_pixel: mean over B, C, H, W
            total = total + w["pixel"] * terms["pixel"]
        return {**terms, "total": total}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms of outputs y (B, C, H, W) for content targets x (B, C, H, W), e.g. the photos."""
        if self.vgg_pass != "fused" or not self.content_layers:  # targets from a no-grad pass, then a pass for y
            return self.judge(y, self.content_targets(x), pixels=x)
        both = self.features(torch.cat([x, y.to(x.dtype)]))  # fused: one pass over [x; y] (2B, C, H, W)
        batch = x.shape[0]
        targets = {name: both[name][:batch].detach() for name in self.content_layers}
        targets = {name: (t, content_scale(t)) for name, t in targets.items()}
        return self.judge(y, targets, {name: value[batch:] for name, value in both.items()}, pixels=x)

    def close(self) -> None:
        """Remove the VGG's forward hooks."""
        self.vgg.close()
        if self.content_vgg is not None:
            self.content_vgg.close()

    def __enter__(self) -> PerceptualLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeatureError:
    """A per-image metric for `stlib.superres.evaluate`: the relative squared feature error that l_feat minimises.

    ``FeatureError()(output, target)`` for two RGB PIL images of one size: the content term of a `PerceptualLoss`
    at `layer` (default relu2_2, Johnson et al. Sec. 4.2), ``||phi(output) - phi(target)||^2 / ||phi(target)||^2``;
    0 for the target itself, lower is closer in the loss network's eyes.
    """

    def __init__(self, layer: str = JOHNSON_CONTENT_LAYER, vgg_weights: str = "auto") -> None:
        objective = ObjectiveConfig(
            vgg_weights=vgg_weights, content_layers=(layer,), style_layers={}, style_weight=0.0, tv_weight=0.0
        )
        self.loss = PerceptualLoss((), objective, precision="fp32")
        self.source = self.loss.source  # which VGG weights judged ("imagenet" or "offline")

    def __call__(self, output: Image.Image, target: Image.Image) -> float:
        """The relative feature error of `output` against `target`."""
        with torch.no_grad():
            return float(self.loss(to_tensor(target), to_tensor(output))["content"])

    def close(self) -> None:
        """Remove the loss network's hooks (`PerceptualLoss.close`)."""
        self.loss.close()


def style_size_curve(
    outputs: torch.Tensor, style: str | os.PathLike, config: ObjectiveConfig, sizes: Sequence[int]
) -> list[float]:
    """The style term of outputs (B, 3, H, W) against the style image file resized to each longest side in `sizes`.

    Where the curve is lowest, the outputs match the painting as it looks at that size: a feed-forward network
    paints strokes of a fixed size in pixels, that of its training ``style_size`` (benchmarks/style_scale.py).
    The style term only (fp32, batch mean), with `config`'s layers and weights; the painting is resized as
    training resizes it (`stlib.images.load_tensor`).
    """
    only_style = replace(config, content_layers=(), content_weight=0.0, tv_weight=0.0, pixel_weight=0.0)
    curve: list[float] = []
    feats = None  # the outputs' features: computed once, judged against each size's Gram matrices
    for size in sizes:
        resized = load_tensor(style, size=size, device=outputs.device)
        with PerceptualLoss(resized, only_style, precision="fp32") as objective, torch.no_grad():
            feats = objective.features(outputs) if feats is None else feats
            curve.append(float(objective.judge(outputs, {}, feats)["style"]))
    return curve


def blend_weights(blend: Sequence[float] | None, n_styles: int) -> list[float]:
    """Blend weights of `n_styles` style images scaled to sum to 1 (equal weights when `blend` is None)."""
    if blend is None:
        return [1.0 / n_styles] * n_styles
    if len(blend) != n_styles:
        raise ValueError(f"Got {n_styles} style image(s) but {len(blend)} blend weight(s); give one weight per style.")
    if any(not (math.isfinite(b) and b >= 0) for b in blend) or sum(blend) <= 0:
        raise ValueError(f"Blend weights must be >= 0 with a positive sum, got {tuple(blend)}.")
    return [b / sum(blend) for b in blend]
