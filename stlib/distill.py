"""Slim style networks distilled from a trained one: same style, a fraction of the computation per frame.

Knowledge distillation (G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network", 2015)
applied to the image transformation network of Johnson et al. (ECCV 2016, Sec. 3.1): a small student
`TransformerNet` (`slim_config`; `DistillConfig`'s default: width 0.25, 5 residual blocks and a sub-pixel output,
7 % of the teacher's FLOPs) learns to reproduce the trained teacher's output y_t = teacher(x) for photos x. Its loss,
for the student's output y_s,

    L = l1_weight * ||y_s - y_t||_1                                         (pixels in [0, 1], mean)
      + feature_weight * mean_l ||F_l(y_s) - F_l(y_t)||^2 / ||F_l(y_t)||^2   (Johnson Eq. 2, target y_t)
      + gram_weight * sum_l w_l ||G_l(y_s) - G_l(y_t)||_F^2 / ||G_l(y_t)||_F^2  (Johnson Eq. 4, target y_t)
      + objective_weight * J(x, y_s)                                         (Johnson Eq. 1: the teacher's own)

with F_l the activations of the teacher's own loss network (its VGG, weights and layers, read from the teacher's
training metadata), G_l their Gram matrices, w_l the teacher's style-layer weights scaled to sum to 1 (the terms:
`stlib.perceptual.feature_distance`, `gram_distance`), and J the objective the teacher was trained with
(`PerceptualLoss`: content against the photo, style against the painting, TV), which is also the score
`benchmarks/quality.py` compares student and teacher by. L1 alone (the three other weights 0: no VGG is run)
regresses a narrow student to the mean of the teacher's fine, high-contrast strokes: a blurred picture whose
objective is several times the teacher's. The feature and Gram terms ask instead for the features and texture
statistics of the teacher's picture of that photo, which a small network can meet without copying every stroke in
place, and J keeps it honest to the photo and the painting (`benchmarks/RESULTS.md`, "Perceptual distillation").
The first `DistillConfig.l1_steps` steps use L1 alone (no VGG, ~10x cheaper a step): the student learns the
teacher's colours and layout before the VGG terms refine its texture. The student starts from the teacher itself
(`prune`: its most useful residual blocks and most active channels; ``DistillConfig.start="pruned"``, the default),
which keeps the teacher's picture of faces, windows and edges that a random start (``"random"``) has to learn
again: 1.31x the teacher's objective after 4,000 steps against 1.43x after 5,641 from a random start
(`benchmarks/RESULTS.md`, "Pruned start"); `DistillConfig.init` starts from a student file. With
``DistillConfig.subpixel_output`` (the default) the student ends in a 5x5 sub-pixel convolution at half resolution
(Shi et al., CVPR 2016) instead of the last x2 stage and the 9x9 output convolution at full resolution, the
costliest part of a slim network per frame (`benchmarks/RESULTS.md`, "Sub-pixel students"); `prune` fits that layer
by least squares.

The teacher's outputs are computed once per photo and cached in memory as 8-bit images, like the photos
(`DistillConfig.size` sets the photo size, whole photos rather than crops, so that the teacher's
instance-norm statistics are those of the image the student sees; `DistillConfig.limit` caps the number of
photos). With a VGG term, the teacher's picture needs its VGG features (and the photo its content targets) at every
step; they too are kept after a photo's first use, up to `DistillConfig.feature_cache_gb` (about 34 MB a photo at
192 px in float32, half in bf16), which saves the step's two forward VGG passes that do not involve the student.
With one photo a step the weights stay noisy where the loss levels off; `DistillConfig.average` writes an
exponential moving average of them instead (B. T. Polyak, A. B. Juditsky, "Acceleration of Stochastic
Approximation by Averaging", 1992), which scored better than the single files of the unaveraged runs before it
(`benchmarks/RESULTS.md`, "The teacher's objective alone, a moving average of the weights, larger photos").
The student copies the teacher's normalisation, upsampling, output and ``input_skip`` options (with
``input_skip`` it starts as the identity).
The result is a normal model file: `stlib.checkpoint.load_model`, the ``stylize`` / ``video`` commands and the
webcam widget use it like any other; its metadata names the teacher and carries the teacher's training
configuration, so `benchmarks/quality.py` can score it with the teacher's own perceptual objective.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from stlib import __version__

from .assets import file_sha256, style_image
from .checkpoint import CheckpointError, load_model, read_metadata, read_state, save_model, write_state
from .data import ImageFolderDataset
from .hardware import autocast, keep_freed_memory, resolve_precision
from .images import load_tensor, to_tensor
from .options import check_options, option
from .perceptual import ContentTargets, feature_distance, gram_distance
from .transformer import TransformerConfig, TransformerNet, pad_to_multiple

__all__ = ["DistillConfig", "DistillResult", "distill", "prune", "slim_config"]

_PRUNE_PHOTOS = 16  # photos the teacher's activations are measured on for `prune`
_INHERITED = ("style", "style_sha256", "train_config", "vgg_weights", "dataset")  # teacher metadata kept


def slim_config(
    teacher: TransformerConfig, width: float = 0.25, num_residual_blocks: int = 3, subpixel_output: bool = False
) -> TransformerConfig:
    """The student architecture for `teacher`: its options, with the width, blocks and sub-pixel output changed."""
    changes = {"width": width, "num_residual_blocks": num_residual_blocks, "subpixel_output": subpixel_output}
    return TransformerConfig(**{**asdict(teacher), **changes})


def prune(teacher: TransformerNet, config: TransformerConfig, photos: list[torch.Tensor]) -> TransformerNet:
    """A student of architecture `config` made of `teacher`'s most useful residual blocks and most active channels.

    Structured pruning (H. Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017), as a start for
    distillation: the residual blocks whose removal changes the teacher's picture of `photos` most are kept, in
    order (a residual network still works with blocks removed: A. Veit et al., NeurIPS 2016), and in each channel
    space (a stage's output, which the next convolution reads; the residual stream; each block's inner space) the
    channels with the largest mean activation x norm of the weights that read them. Every convolution but the last is
    followed by an instance norm, which renormalises what the lost channels took from its sum, so the pruned network
    already paints a rough version of the teacher's picture. Last, the output convolution, which is linear in the
    features it reads, is refitted to the teacher's output on `photos` by least squares (Y. He, X. Zhang, J. Sun,
    "Channel Pruning for Accelerating Very Deep Neural Networks", ICCV 2017): what the dropped channels drew is
    redrawn from the kept ones as well as a linear layer can (about half the copied layer's error on photos). A
    student with ``subpixel_output`` has no last x2 stage and gets its 5x5 sub-pixel output convolution from that
    fit alone. `config` must be `teacher`'s architecture with a smaller or equal width and number of residual
    blocks, and may add ``subpixel_output``.
    """
    cfg = teacher.config
    same = {
        **asdict(config),
        "width": cfg.width,
        "num_residual_blocks": cfg.num_residual_blocks,
        "subpixel_output": cfg.subpixel_output,
    }
    if same != asdict(cfg) or cfg.upscale != 1 or cfg.subpixel_output or cfg.norm != "instance":
        raise ValueError(
            f"prune makes a narrower, shallower copy of a style network with instance norm; got {config} "
            f"for a teacher {cfg}."
        )
    if config.num_residual_blocks > cfg.num_residual_blocks or any(
        a > b for a, b in zip(config.channels, cfg.channels, strict=True)
    ):
        raise ValueError(f"prune cannot widen or deepen: {config} is larger than the teacher's {cfg}.")
    if not photos:
        raise ValueError("prune needs at least one photo to measure the teacher's activations on.")
    teacher = teacher.eval()
    depth = cfg.downsampling
    blocks = [b.block for b in teacher.residuals]
    kept_blocks = _useful_blocks(teacher, config.num_residual_blocks, photos)
    # Where each channel space is produced (the module whose output holds its activations) and who reads it.
    encoder_out = [teacher.encoder[3 * k + 2] for k in range(depth + 1)]  # ReLUs after each encoder stage
    decoder_out = [teacher.decoder[3 * j + 2] for j in range(depth)]  # ReLUs after each x2 stage
    spaces: dict[str, list[nn.Module]] = {f"enc{k}": [encoder_out[k]] for k in range(depth)}
    spaces["stream"] = [encoder_out[depth], *(teacher.residuals[i] for i in range(len(blocks)))]
    spaces.update({f"inner{i}": [blocks[i][2]] for i in range(len(blocks))})
    spaces.update({f"dec{j}": [decoder_out[j]] for j in range(depth)})
    activity = _mean_activity(teacher, spaces, photos)  # name -> (C,) mean |activation|
    readers: dict[str, list[torch.Tensor]] = {  # the weights that read each space, as (C_out, C_in, k, k)
        **{f"enc{k}": [_conv_of(teacher.encoder[3 * (k + 1)]).weight] for k in range(depth)},
        "stream": [blocks[i][0].weight for i in kept_blocks] + [_in_weight(teacher.decoder[0])],
        **{f"inner{i}": [blocks[i][3].weight] for i in range(len(blocks))},
        **{f"dec{j}": [_in_weight(teacher.decoder[3 * (j + 1)])] for j in range(depth)},
    }
    widths = {f"enc{k}": config.channels[k] for k in range(depth)}
    widths.update({"stream": config.channels[depth], **{f"inner{i}": config.channels[depth] for i in kept_blocks}})
    widths.update({f"dec{j}": config.channels[depth - 1 - j] for j in range(depth)})
    keep = {}
    for name, width in widths.items():
        reach = sum(w.detach().transpose(0, 1).flatten(1).norm(dim=1) for w in readers[name])  # (C,)
        keep[name] = torch.topk(activity[name] * reach, width).indices.sort().values
    student = TransformerNet(config).eval()
    with torch.no_grad():
        for k in range(depth + 1):  # encoder: stage k reads enc{k-1} (or RGB) and writes enc{k} (the stream at the end)
            rows = keep["stream"] if k == depth else keep[f"enc{k}"]
            cols = keep[f"enc{k - 1}"] if k else None
            _copy_stage(teacher.encoder, student.encoder, 3 * k, rows, cols)
        for new, old in enumerate(kept_blocks):
            inner = keep[f"inner{old}"]
            _copy_stage(blocks[old], student.residuals[new].block, 0, inner, keep["stream"])
            _copy_stage(blocks[old], student.residuals[new].block, 3, keep["stream"], inner)
        stages = depth - 1 if config.subpixel_output else depth  # sub-pixel: the last x2 stage is in the output
        for j in range(stages):
            cols = keep["stream"] if j == 0 else keep[f"dec{j - 1}"]
            _copy_stage(teacher.decoder, student.decoder, 3 * j, keep[f"dec{j}"], cols)
        if not config.subpixel_output:
            _copy_stage(teacher.decoder, student.decoder, 3 * depth, None, keep[f"dec{depth - 1}"])
    _fit_output(student, teacher, photos)
    return student


def _fit_output(student: TransformerNet, teacher: TransformerNet, photos: list[torch.Tensor]) -> None:
    """Refit `student`'s output convolution to `teacher`'s output on `photos` by least squares (ridge to its weights).

    Minimises sum ||conv(f) - y||^2 + ridge * ||w - w_0||^2 over the convolution's weights and bias w, for the
    student's features f before it and the teacher's output y before the output scaling (its own units), starting
    weights w_0: where the photos say nothing (fewer pixels than weights, dead features) the weights stay w_0.
    """
    conv = student.decoder[-1]
    weights = torch.cat([conv.weight.detach().flatten(1), conv.bias.detach()[:, None]], 1).T.double()  # (K+1, C_out)
    gram = torch.zeros(len(weights), len(weights), dtype=torch.float64)  # (K+1, K+1): sum of x x^T over pixels
    moment = torch.zeros_like(weights)  # (K+1, C_out): sum of x y^T over pixels
    pad = conv.padding[0]
    with torch.no_grad():
        for photo in photos:
            x = pad_to_multiple(photo, teacher.config.multiple)
            features = student.decoder[:-1](student.residuals(student.encoder(x)))  # (1, C_in, h, w)
            target = teacher.raw_output(x)  # (1, 3, H, W)
            if student.config.subpixel_output:
                target = F.pixel_unshuffle(target, 2)  # (1, 12, H/2, W/2): each 2x2 block of RGB pixels
            patches = F.unfold(F.pad(features, (pad,) * 4, mode=conv.padding_mode), conv.kernel_size)[0]  # (K, h*w)
            patches = torch.cat([patches, torch.ones_like(patches[:1])]).double()  # (K+1, h*w)
            gram += patches @ patches.T  # in float64: the ridge below is far smaller than float32's rounding
            moment += patches @ target[0].flatten(1).T.double()
        ridge = 1e-6 * float(gram.diagonal().mean()) + 1e-12
        eye = torch.eye(len(gram), dtype=torch.float64)
        solution = torch.linalg.solve(gram + ridge * eye, moment + ridge * weights)  # (K+1, C_out)
        conv.weight.copy_(solution[:-1].T.reshape_as(conv.weight))
        conv.bias.copy_(solution[-1])


def _conv_of(module: nn.Module) -> nn.Module:
    """The convolution of a stage: itself, or the one after a nearest-neighbour upsampling."""
    return module[-1] if isinstance(module, nn.Sequential) else module


def _in_weight(module: nn.Module) -> torch.Tensor:
    """A stage's weights as (C_out, C_in, k, k), also for a transposed convolution (stored (C_in, C_out, k, k))."""
    conv = _conv_of(module)
    return conv.weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else conv.weight


def _copy_stage(
    source: nn.Sequential, target: nn.Sequential, index: int, rows: torch.Tensor | None, cols: torch.Tensor | None
) -> None:
    """Copy the convolution at `index` (output channels `rows`, input channels `cols`; None: all) and its norm."""
    conv, into = _conv_of(source[index]), _conv_of(target[index])
    weight = conv.weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else conv.weight  # (out, in, k, k)
    weight = weight if rows is None else weight[rows]
    weight = weight if cols is None else weight[:, cols]
    into.weight.copy_(weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else weight)
    into.bias.copy_(conv.bias if rows is None else conv.bias[rows])
    if rows is not None and index + 1 < len(source) and isinstance(source[index + 1], nn.InstanceNorm2d):
        target[index + 1].weight.copy_(source[index + 1].weight[rows])
        target[index + 1].bias.copy_(source[index + 1].bias[rows])


def _mean_activity(
    net: TransformerNet, spaces: dict[str, list[nn.Module]], photos: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each space's mean absolute activation per channel (C,) over `photos`, at the outputs of its modules."""
    sums: dict[str, torch.Tensor] = {}
    handles = []
    for name, modules in spaces.items():
        for module in modules:

            def hook(_module, _inputs, output, name=name):  # output (1, C, H, W)
                sums[name] = sums.get(name, 0) + output.detach().abs().mean(dim=(0, 2, 3))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for photo in photos:
                net(photo)
    finally:
        for handle in handles:
            handle.remove()
    return sums


def _useful_blocks(net: TransformerNet, count: int, photos: list[torch.Tensor]) -> list[int]:
    """The indices of the `count` residual blocks whose removal changes `net`'s pictures most, in order."""
    blocks = list(net.residuals)
    harm = []
    try:
        with torch.no_grad():
            full = [net(photo) for photo in photos]
            for i in range(len(blocks)):
                net.residuals = nn.Sequential(*blocks[:i], *blocks[i + 1 :])
                harm.append(sum(float((net(p) - f).abs().mean()) for p, f in zip(photos, full, strict=True)))
    finally:
        net.residuals = nn.Sequential(*blocks)
    return sorted(sorted(range(len(blocks)), key=lambda i: -harm[i])[:count])


@dataclass
class DistillConfig:
    """Settings of `distill`; the defaults are the first stage of the shipped slim network's recipe."""

    teacher: str = option(help="the trained network (.safetensors)", positional=True, metavar="FILE")
    data: str = option(help="a folder of photos (any tree)", metavar="DIR")
    output: str = option(help="the student's model file (.safetensors)", flag=("-o", "--output"), metavar="OUT")
    width: float = option(0.25, "student channel multiplier: 8/16/32 channels at 0.25", check="positive")
    num_residual_blocks: int = option(5, "student residual blocks", flag="--blocks")
    subpixel_output: bool = option(
        True, "student: the last x2 stage and 9x9 output conv as one 5x5 sub-pixel conv at half resolution (faster)"
    )
    size: int = option(192, "shorter photo side", check="positive")
    limit: int | None = option(
        1000, "use at most N photos (cached in memory as uint8: ~0.3 MB each at 192 px)", check="positive", metavar="N"
    )
    l1_weight: float = option(1.0, "weight of the pixel term |student - teacher|", check="non_negative")
    feature_weight: float = option(
        1.0, "weight of the VGG feature term (all three VGG weights 0: L1 alone, no VGG)", check="non_negative"
    )
    gram_weight: float = option(10.0, "weight of the Gram-matrix (texture) term", check="non_negative")
    objective_weight: float = option(
        1.0, "weight of the teacher's own objective (content vs the photo, style vs the painting)", check="non_negative"
    )
    start: str = option(
        "pruned", "the student's first weights: pruned from the teacher, or random", choices=("pruned", "random")
    )
    init: str | None = option(
        None, "start the student from this model file (the same architecture; instead of --start)", metavar="FILE"
    )
    l1_steps: int = option(
        500, "first N steps with L1 alone (no VGG: ~10x cheaper a step)", check="non_negative", metavar="N"
    )
    average: float = option(
        0.0, "decay of a moving average of the student's weights, written as the student (e.g. 0.998; 0: none)",
        check="fraction", metavar="DECAY",
    )  # fmt: skip
    feature_cache_gb: float = option(
        4.0, "memory (GB) for the teacher pictures' VGG features, kept after first use (0: recompute each step)",
        check="non_negative", metavar="GB",
    )  # fmt: skip
    precision: str = option("auto", "autocast of the student and VGG (auto: bf16 on CPUs with native bf16)",
                            choices=("auto", "fp32", "bf16"))  # fmt: skip
    steps: int = option(2600, "optimiser steps", check="positive")
    lr: float = option(2e-3, "Adam learning rate (cosine decay to lr / 20)", check="positive")
    seed: int = option(0, "student initialisation and photo order")
    checkpoint_every: int = option(250, "model file + state every N steps", check="positive")
    log_every: int = option(50, "progress-bar update every N steps", check="positive")
    resume: bool = option(False, "continue from OUT's saved state (NAME.distill.pt)")
    progress: bool = option(True, "no progress bar", flag="--quiet")

    def validate(self) -> None:
        """Raise ValueError (one sentence naming the setting) for settings that cannot work."""
        check_options(self)  # the options' declared limits and choices
        if self.size < 16:
            raise ValueError(f"DistillConfig.size must be at least 16 pixels, got {self.size}.")
        weights = ("l1_weight", "feature_weight", "gram_weight", "objective_weight")
        if self.average == 1:
            raise ValueError(f"DistillConfig.average must be a number in [0, 1), got {self.average!r}.")
        if not any(getattr(self, name) for name in weights):
            raise ValueError("DistillConfig has no loss: give one of the four *_weight settings a value > 0.")
        if self.l1_steps > 0 and self.l1_weight == 0:
            raise ValueError("DistillConfig.l1_steps needs l1_weight > 0: the first steps train with L1 alone.")
        if Path(self.output).suffix != ".safetensors":
            raise ValueError(f"Cannot write the student to '{self.output}': the file name must end in .safetensors.")
        if Path(self.output).resolve() == Path(self.teacher).resolve():
            raise ValueError(f"The student would overwrite its teacher '{self.teacher}'; choose another output.")

    @property
    def perceptual(self) -> bool:
        """Whether the loss has a VGG term (feature, Gram or the teacher's objective)."""
        return self.feature_weight > 0 or self.gram_weight > 0 or self.objective_weight > 0

    def state_path(self) -> Path:
        """Where the resumable training state is kept: beside the output, ``NAME.distill.pt``."""
        out = Path(self.output)
        return out.with_name(out.stem + ".distill.pt")


@dataclass(frozen=True)
class DistillResult:
    """What `distill` did: the student file, its size and cost relative to the teacher, the final losses."""

    path: Path
    steps: int
    l1: float  # mean absolute difference from the teacher over the last `log_every` steps, in [0, 1] units
    loss: float  # the weighted total (module docstring) over the same steps
    seconds: float
    student: str  # TransformerNet.describe() of the student
    flops_ratio: float  # student / teacher FLOPs at 640 x 480


def _photos(config: DistillConfig) -> list[torch.Tensor]:
    """The distillation photos, each (1, 3, H, W) float with the shorter side `size`; read as the training set is
    (`stlib.data.ImageFolderDataset`: unreadable files skipped and reported once)."""
    photos = []
    for image in ImageFolderDataset(config.data, size=config.size, limit=config.limit).first():
        scale = config.size / min(image.size)
        photos.append(to_tensor(image.resize((round(image.width * scale), round(image.height * scale)))))
    return photos


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> uint8, the form photos and targets are cached in (a quarter of float32)."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def _from_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255)


class _LossNetwork:
    """The teacher's training objective (`PerceptualLoss` of the settings in its metadata) and its layers."""

    def __init__(
        self,
        teacher_file: str,
        teacher_info: Mapping[str, Any],
        precision: str,
        with_objective: bool,
        with_imitation: bool = True,
        cache_bytes: int = 0,
    ) -> None:
        from .train import TrainConfig  # stlib.train is the heavier module; only the perceptual terms need it

        settings = teacher_info.get("train_config")
        if not isinstance(settings, Mapping):
            raise ValueError(
                f"'{teacher_file}' has no training settings in its metadata, so its loss network is unknown; "
                "distil it with L1 alone (--feature-weight 0 --gram-weight 0 --objective-weight 0)."
            )
        config = TrainConfig.from_dict(settings)
        try:
            painting = style_image(Path(config.style or "").stem)
        except KeyError:
            raise ValueError(
                f"'{teacher_file}' was trained on '{config.style}', which is not a painting in style_images/; "
                "distil it with L1 alone (--feature-weight 0 --gram-weight 0 --objective-weight 0)."
            ) from None
        style = load_tensor(painting, size=config.style_size)  # (1, 3, H, W), as the teacher was trained
        self.objective = config.perceptual_loss(style, precision=precision)
        self.style_layers = dict(self.objective.style_layers)
        self.layers = list(dict.fromkeys([*self.objective.content_layers, *self.style_layers]))
        self.with_objective = with_objective  # the objective's content targets cost a (truncated) VGG pass
        self.with_imitation = with_imitation  # the feature and Gram terms cost a VGG pass of the teacher's picture
        self.cache: dict[int, tuple[dict[str, torch.Tensor], ContentTargets]] = {}  # photo index -> its targets
        self.cache_bytes, self.cached_bytes = cache_bytes, 0

    def targets(
        self, index: int, photo: torch.Tensor, target: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], ContentTargets]:
        """The teacher's picture's VGG features and the photo's content targets, kept while the cache has room."""
        if index in self.cache:
            return self.cache[index]
        wanted = {}
        if self.with_imitation:
            with torch.no_grad():
                wanted = {name: value for name, value in self.objective.features(target).items() if name in self.layers}
        content = self.objective.content_targets(photo) if self.with_objective else {}
        tensors = [*wanted.values(), *(features for features, _scale in content.values())]
        size = sum(t.numel() * t.element_size() for t in tensors)
        if self.cached_bytes + size <= self.cache_bytes:
            self.cache[index] = wanted, content
            self.cached_bytes += size
        return self.cache.get(index, (wanted, content))

    def terms(
        self, index: int, photo: torch.Tensor, output: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The student's VGG terms: ["feature" and "gram" against the teacher's picture,] ["objective": its total]."""
        wanted, content = self.targets(index, photo, target)
        got = self.objective.features(output)
        terms = {}
        if self.with_imitation:
            terms["feature"] = feature_distance(got, wanted, self.layers)
            terms["gram"] = gram_distance(got, wanted, self.style_layers)
        if self.with_objective:
            terms["objective"] = self.objective.judge(output, content, feats=got)["total"]
        return terms


def _lr(config: DistillConfig, step: int) -> float:
    """Cosine decay from `lr` to `lr / 20` over the run."""
    floor = config.lr / 20
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))


# settings that may change when a run is resumed
_NOT_SHAPING = ("resume", "progress", "checkpoint_every", "log_every", "feature_cache_gb")


def _shaping(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape the student (all but `_NOT_SHAPING`)."""
    return {k: v for k, v in settings.items() if k not in _NOT_SHAPING}


def _load_state(path: Path) -> dict[str, Any]:
    """The saved distillation state at `path`; a ValueError naming the file when it is missing or unreadable."""
    try:
        state = read_state(path)
    except FileNotFoundError:
        raise ValueError(f"Cannot resume: there is no distillation state '{path}' (start without --resume).") from None
    except CheckpointError:
        raise ValueError(f"Cannot resume from '{path}': it is not a readable distillation state.") from None
    if not {"config", "model", "optimizer", "step", "rng"} <= set(state):
        raise ValueError(f"Cannot resume from '{path}': it is not a distillation state of stlib.")
    return state


def distill(config: DistillConfig, callback: Callable[[int, float], Any] | None = None) -> DistillResult:
    """Train a slim student to reproduce a trained network's output (see the module docstring); resumable.

    `callback(step, loss)` runs after every step (and after that step's checkpoint); returning True stops.
    """
    from tqdm.auto import tqdm

    config.validate()
    teacher = load_model(config.teacher, task="style")
    teacher_info = read_metadata(config.teacher)["info"]
    teacher_sha256 = file_sha256(config.teacher)  # once: the file the photos' targets come from
    precision = resolve_precision(config.precision, "cpu")
    keep_freed_memory()  # no page faults for each step's activations (`stlib.hardware`)
    loss_network = _loss_network(config, teacher_info, precision)
    student_config = slim_config(teacher.config, config.width, config.num_residual_blocks, config.subpixel_output)
    photos = _photos(config)  # float (1, 3, H, W) each, until cached as uint8 below
    student = _starting_student(config, teacher, student_config, photos)
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    averaged = _averaged(student, config.average)
    step = _resume(config, student, optimizer, averaged) if config.resume else 0

    targets = []  # uint8 (1, 3, H, W) each: the photo and the teacher's answer, computed once
    with torch.inference_mode():
        for index, photo in enumerate(tqdm(photos, disable=not config.progress, desc="teacher", unit="photo")):
            photos[index] = _to_uint8(photo)
            targets.append(_to_uint8(teacher(photo)))

    student.train()
    history: list[dict[str, float]] = []  # the terms of the last `log_every` steps
    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, disable=not config.progress, desc="distil", unit="step")
    while step < config.steps:
        index = int(torch.randint(len(photos), (1,)))
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        network = loss_network if step >= config.l1_steps else None  # the first l1_steps: L1 alone
        terms = _loss_terms(student, index, _from_uint8(photos[index]), _from_uint8(targets[index]), network, precision)
        loss = sum(getattr(config, f"{name}_weight") * value for name, value in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if averaged is not None:
            averaged.update_parameters(student)
        step += 1
        history = (history + [{"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}])[-config.log_every :]
        bar.update(1)
        if step % config.log_every == 0:
            bar.set_postfix({k: f"{v:.4g}" for k, v in _means(history).items()})
        saved = step % config.checkpoint_every == 0 or step == config.steps
        if saved:
            _checkpoint(student, averaged, optimizer, config, teacher, teacher_info, teacher_sha256, step, history)
        if callback is not None and callback(step, history[-1]["loss"]):  # after the checkpoint; True stops the run
            if not saved:
                _checkpoint(student, averaged, optimizer, config, teacher, teacher_info, teacher_sha256, step, history)
            break
    bar.close()
    if loss_network is not None:
        loss_network.objective.close()
    student.eval()
    means = _means(history)
    return DistillResult(
        Path(config.output),
        step,
        means.get("l1", float("nan")),
        means.get("loss", float("nan")),
        time.perf_counter() - start,
        student.describe(),
        student.flops(480, 640) / teacher.flops(480, 640),
    )


def _loss_network(config: DistillConfig, teacher_info: Mapping[str, Any], precision: str) -> _LossNetwork | None:
    """The VGG terms' loss network, or None when the loss is L1 alone."""
    if not config.perceptual:
        return None
    return _LossNetwork(
        config.teacher,
        teacher_info,
        precision,
        with_objective=config.objective_weight > 0,
        with_imitation=config.feature_weight > 0 or config.gram_weight > 0,
        cache_bytes=int(config.feature_cache_gb * 1e9),
    )


def _averaged(student: TransformerNet, decay: float) -> AveragedModel | None:
    """An exponential moving average of the student's weights (Polyak and Juditsky 1992), or None for decay 0."""
    if decay == 0:
        return None
    return AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _resume(
    config: DistillConfig, student: TransformerNet, optimizer: torch.optim.Optimizer, averaged: AveragedModel | None
) -> int:
    """Load the saved state into the student, the optimiser and the average; the step it was saved at."""
    state_path = config.state_path()
    state = _load_state(state_path)
    defaults = {f.name: f.default for f in fields(DistillConfig) if f.default is not MISSING}
    if _shaping({**defaults, **state["config"]}) != _shaping(asdict(config)):  # settings added later: defaults
        raise ValueError(f"Cannot resume from '{state_path}': it was made with other distillation settings.")
    student.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if averaged is not None:
        averaged.load_state_dict(state["average"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def _starting_student(
    config: DistillConfig, teacher: TransformerNet, student_config: TransformerConfig, photos: list[torch.Tensor]
) -> TransformerNet:
    """The student before its first step: pruned from the teacher, loaded from --init, or random (seeded)."""
    torch.manual_seed(config.seed)
    student = TransformerNet(student_config)
    if config.resume:
        return student  # the saved state replaces the weights
    if config.init is not None:
        _load_init(student, config.init)
    elif config.start == "pruned":
        tc = teacher.config
        if student_config.num_residual_blocks > tc.num_residual_blocks or student_config.width > tc.width:
            raise ValueError(
                f"Cannot prune '{config.teacher}' into the student: it has width {tc.width:g} and "
                f"{tc.num_residual_blocks} residual blocks, the student {config.width:g} and "
                f"{config.num_residual_blocks} (choose a smaller --width or --blocks, or --start random)."
            )
        student = prune(teacher, student_config, photos[:_PRUNE_PHOTOS])
    return student


def _load_init(student: TransformerNet, path: str) -> None:
    """Copy the weights of the model file `path` into `student`; a ValueError when its architecture differs."""
    start = load_model(path, task="style")
    if start.config != student.config:
        raise ValueError(
            f"Cannot start the student from '{path}': it is {start.describe()}, the student {student.describe()}."
        )
    student.load_state_dict(start.state_dict())


def _loss_terms(
    student: TransformerNet,
    index: int,
    photo: torch.Tensor,
    target: torch.Tensor,
    loss_network: _LossNetwork | None,
    precision: str,
) -> dict[str, torch.Tensor]:
    """The unweighted terms for photo `index` (1, 3, H, W) and the teacher's output: "l1" and the VGG terms."""
    with autocast("cpu", precision):
        output = student(photo)  # (1, 3, H, W)
        terms = {"l1": F.l1_loss(output.float(), target)}
        if loss_network is not None:
            terms.update(loss_network.terms(index, photo, output, target))
    return terms


def _means(history: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each logged term over the steps of `history` that have it (empty: {})."""
    keys = dict.fromkeys(key for h in history for key in h)
    return {key: sum(h[key] for h in history if key in h) / sum(key in h for h in history) for key in keys}


def _checkpoint(
    student: TransformerNet,
    averaged: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    config: DistillConfig,
    teacher: TransformerNet,
    teacher_info: dict[str, Any],
    teacher_sha256: str,
    step: int,
    history: list[dict[str, float]],
) -> None:
    """Write the student's model file (metadata naming its teacher) and the resumable state, each atomically.

    With a moving average the model file holds the averaged weights; the state holds both.
    """
    was_training = student.training
    student.eval()
    info = {
        "kind": "distilled",
        "distilled_from": os.path.basename(config.teacher),
        "teacher_sha256": teacher_sha256,
        "teacher_transformer": teacher.config_dict(),
        "distill_config": asdict(config),
        "step": step,
        "l1": _means(history).get("l1"),
        "losses": _means(history),  # the terms' means over the last log_every steps
        "stlib_version": __version__,
        # the teacher's training settings: the objective the student is scored with (benchmarks/quality.py)
        **{key: teacher_info[key] for key in _INHERITED if key in teacher_info},
    }
    save_model(student if averaged is None else averaged.module, config.output, info=info)
    student.train(was_training)
    state = {"model": student.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    if averaged is not None:
        state["average"] = averaged.state_dict()
    write_state(config.state_path(), {**state, "rng": torch.get_rng_state(), "config": asdict(config)})
