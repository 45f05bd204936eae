"""Training feed-forward style networks with perceptual losses (Johnson et al.), resumable and distributed.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016. The image transformation network f_W (`stlib.transformer`) is trained so that y = f_W(x)
minimises a weighted sum of perceptual losses computed by a fixed loss network phi, VGG16 (Sec. 3, Eq. 1):

- feature reconstruction (content) loss at ``relu2_2`` (Sec. 3.2, Eq. 2);
- style reconstruction loss: Gram matrices (Eq. 3) at ``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3``
  (Eq. 4, summed over layers, Sec. 3.2 "Style Reconstruction Loss");
- total variation regulariser (Sec. 3.3 "Simple Loss Functions").

Training details (Sec. 4.1 "Style Transfer"): 256 x 256 crops of the 80k COCO training images, batch size 4,
40,000 iterations (about two epochs), Adam with learning rate 1e-3, no weight decay or dropout, and a total
variation strength between 1e-6 and 1e-4 chosen per style by cross-validation. `TrainConfig`'s defaults
follow them, except for the loss weights, which refer to normalised terms (next).

The objective is `stlib.perceptual`'s (the same normalised terms as `stlib.gatys`, so the same weights work
for the offline, Caffe-scale, and the torchvision VGG16, whose raw features differ by a factor of about 60):
content relative to the photo's features at relu2_2 (the denominator is the mean square of this batch's content
targets, a constant of the step), style relative to the style image's Gram matrices (computed once; layer
weights w_l = 1/4), TV the mean squared difference of neighbouring pixels in [0, 1] (about 0.002-0.01 for
photos; the paper's 1e-6...1e-4 refer to sums over 0-255 pixels and are not comparable).

The loop (`train`) is the paper's algorithm: each step takes a batch of photos, makes the network's inputs and
the objective's targets from it (`pairs`; style transfer: the photo is both), computes y = f_W(input), the
objective's terms for (target, y), and one Adam step. The objective and the pairs are parameters, so the
paper's second task, single-image super-resolution (Sec. 4.2: the same network family and loss network,
feature reconstruction at relu2_2 on (low-resolution input, high-resolution target) pairs), trains with the
same loop.

Stability (not in the paper; off unless ``stability_weight`` > 0): a network applied frame by frame to video
flickers when nothing in training asks its output to follow the picture (A. Gupta, J. Johnson, A. Alahi,
L. Fei-Fei, "Characterizing and Improving Stability in Neural Style Transfer", ICCV 2017). With a weight, each
step also runs the network on a second frame, the inputs moved by up to ``stability_shift`` pixels plus camera
noise (``stability_noise`` grey levels), and adds the weight times the mean squared difference between that output
and the first output moved the same way (`stlib.losses.stability_loss`; a known move, so no optical flow). With
``stability_border`` 0 the frame's edges count too. One term answers three defects that `stlib.artifacts` measures:
flicker under noise and motion, patterns locked to the pixel lattice (they stay while the picture moves) and bands
along the borders (the frame's edge must look like the same place inside a larger frame). It costs one more
forward and backward pass of the transformation network, not of the VGG.

Slow start (measured on a CPU, 96 px crops, batch 4): the network's first few hundred steps produce blobs
in the style's colours, with the content term near its value for a flat image (~1); on the same batches a
plain 4-layer convolutional net learns the identity in 60 steps while `TransformerNet` (the same
architecture as pytorch/examples') does not, and wrapping it as y = x + f(x) gives a recognisable, lightly
stylised photo after 160 steps. Long runs (the paper's 40k steps) get past this phase. ``style_warmup=N``
ramps the style weight from 0 over the first N steps (off by default, as in the paper); in a 350-step test
it did not by itself get past the blob phase.

Defaults: content 1, style 5, TV 10. They were chosen with the same normalised objective optimised per
image (`stlib.gatys` with content at relu2_2 and these style layers, Tübingen + Starry Night, 192 px):
style 2 already gives a clearly stylised, recognisable town, 10 a strongly stylised one, 50 loses detail.
A feed-forward network reaches less style than per-image optimisation, hence the middle value.

Speed: the style Gram matrices are computed once; the content targets need only relu2_2, so they come
from a separate no-grad VGG pass truncated there (a third of the cost of a pass to relu4_3, and no
backward). Concatenating the photos into the stylised batch's VGG pass (``vgg_pass="fused"``) runs a single
forward, but then the backward also computes input gradients for the photo half, which costs more FLOPs;
it is kept for comparison (`benchmarks/train.py` measures both). Mixed precision (``precision="auto"``)
uses bfloat16 where the hardware really has it (CUDA GPUs with bf16; CPUs with AMX or AVX512-BF16, where
bf16 convolutions are fast, unlike AVX2-only CPUs, where they are emulated and several times *slower* than
float32), float16 with a GradScaler on older GPUs, and float32 otherwise. ``channels_last`` and
``compile`` (`torch.compile`) are options.

Checkpoints (every ``checkpoint_every`` steps and at the end, each file written atomically):

- the model file ``out`` (safetensors + JSON metadata, see `stlib.checkpoint`): what `load_model` reads;
- the training state ``<run_dir>/state.pt`` (`torch.save`, loaded with ``weights_only=True``): weights,
  Adam, scheduler, grad scaler, the RNG states (torch, CUDA, Python, NumPy) and the data order
  (`ShuffleSampler.state_dict`), so ``resume=True`` continues exactly where the state was saved: on a CPU
  the loss curve of a resumed run is identical, step for step, to an uninterrupted one. A killed process
  (even SIGKILL) loses at most ``checkpoint_every`` steps.

A NaN or infinite loss stops the run with `TrainingDiverged` before the weights are updated, keeping the
last good checkpoint. Logs in ``run_dir``: ``train.csv`` (step, loss terms, learning rate, images/s), a grid
of stylised validation photos every ``val_every`` steps (``val/step_NNNNNN.jpg``) and ``evolution.gif``.

Several GPUs (or CPU processes): ``torchrun --nproc_per_node=N -m stlib train ...`` runs one process per
device; `train` sees the torchrun environment (``WORLD_SIZE`` > 1), joins the process group
(`stlib.hardware.init_distributed`) and wraps the network in `DistributedDataParallel`. Each step every rank
takes ``batch_size`` images of one shared random order (a global batch of N x ``batch_size``), so the data order and the
checkpoint's sampler position do not depend on which rank read what. Rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from stlib import __version__

from .assets import file_sha256
from .checkpoint import CheckpointError, load_model, read_state, rng_state, save_model, set_rng_state, write_state
from .data import ImageFolderDataset, ShuffleSampler, make_loader, square_crop
from .hardware import PRECISIONS, autocast, init_distributed, keep_freed_memory, resolve_device, resolve_precision
from .images import atomic_write, load_image, load_tensor, save_image
from .losses import stability_loss
from .options import accept_former_keywords, check_options, option, require
from .perceptual import VGG_PASSES, ObjectiveConfig, PerceptualLoss
from .superres import degrade
from .transformer import TransformerConfig, TransformerNet

__all__ = [
    "SCHEDULES",
    "SR_LOSSES",
    "TASKS",
    "Pairs",
    "ResumeError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "lr_at",
    "same_photo",
    "square_photo",
    "stop_on_signal",
    "train",
]

SCHEDULES = ("constant", "step", "cosine", "onecycle")
TASKS = ("style", "superres")
SR_LOSSES = ("feat", "pixel")
_FILES, _OPT, _LOG, _LOSS, _TASK = "files", "optimisation", "logging", "loss", "task"
_STATE_FORMAT = "stlib.train-state"

# Settings a resumed run may change; every other one must match the saved state (they shape the trajectory).
# The style image, precision and VGG weights are compared by content (sha256) and resolved value instead.
_RESUMABLE_CHANGES = frozenset(
    {"steps", "log_every", "val_every", "checkpoint_every", "val", "val_count", "val_size", "progress",
     "num_workers", "compile", "channels_last", "resume", "out", "run_dir", "device", "style", "precision",
     "init"}
)  # fmt: skip

Callback = Callable[[int, dict[str, float]], "bool | None"]
Pairs = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""A batch of photos (B, 3, S, S) -> (the network's inputs, the objective's targets)."""


def same_photo(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Style transfer's pairs: the network stylises the photo, whose content is also the target."""
    return batch, batch


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class ResumeError(ValueError):
    """A training run cannot be resumed; the message is one sentence naming the state file."""


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every setting of `train`; defaults follow Johnson et al. Sec. 4.1 (loss weights: normalised terms)."""

    task: str = option(
        "style", "style: a style network (Johnson et al. Sec. 4.1); superres: super-resolution (Sec. 4.2)",
        choices=TASKS, group=_TASK,
    )  # fmt: skip
    loss: str = option(
        "feat", "superres: feat (the paper's l_feat at --content-layer) or pixel (l_pixel, the mean squared error)",
        choices=SR_LOSSES, group=_TASK,
    )  # fmt: skip
    blur_sigma: float = option(
        0.0, "superres: Gaussian blur (sigma, high-resolution pixels) before the bicubic downscaling "
        "(the paper: 1; the benchmarks' protocol: 0)", check="non_negative", group=_TASK,
    )  # fmt: skip
    style: str | None = option(None, "the style image (task style)", metavar="PATH", group=_FILES)
    data: str | None = option(
        None, "folder of training photos, any tree (required)", metavar="DIR", group=_FILES, required=True
    )
    out: str | None = option(
        None, "model file (.safetensors; default: checkpoints/<style>.safetensors)", flag=("-o", "--out"),
        metavar="FILE", group=_FILES,
    )  # fmt: skip
    run_dir: str | None = option(
        None, "logs, validation grids and state (default: <out>.run/)", metavar="DIR", group=_FILES
    )
    size: int = option(256, "training crops are size x size", check="positive", group=_OPT)
    style_size: int | None = option(256, "longest side of the style image; 0: as the file", none=0, group=_OPT)
    batch_size: int = option(4, "per process", check="positive", group=_OPT)
    steps: int = option(
        40_000, "optimiser steps (paper: 40k, about 2 epochs of COCO at batch 4)", check="positive", group=_OPT
    )
    lr: float = option(1e-3, "Adam's learning rate (peak for onecycle)", check="positive", group=_OPT)
    schedule: str = option("constant", "learning-rate schedule (paper: constant)", choices=SCHEDULES, group=_OPT)
    warmup_steps: int = option(
        0, "linear LR warm-up before constant, step and cosine", check="non_negative", group=_OPT
    )
    lr_step_every: int = option(
        10_000, "step schedule: multiply the rate by --lr-gamma every N steps", check="positive", group=_OPT
    )
    lr_gamma: float = option(0.5, "step schedule: the factor", check="positive", group=_OPT)
    style_warmup: int = option(
        0, "ramp the style weight from 0 over the first N steps (0: off, as the paper)", check="non_negative",
        group=_LOSS,
    )  # fmt: skip
    stability_weight: float = option(
        0.0, "weight of the stability term: the output must follow a move of the input by up to "
        "--stability-shift px plus camera noise (Gupta et al. 2017); 0: off (the paper)", check="non_negative",
        group=_LOSS,
    )  # fmt: skip
    stability_shift: int = option(
        3, "largest move (px) of the stability term's second frame", check="non_negative", group=_LOSS
    )
    stability_noise: float = option(
        2.0, "standard deviation of the stability term's camera noise, grey levels (of 255)", check="non_negative",
        group=_LOSS,
    )  # fmt: skip
    stability_border: int = option(
        0, "pixels along each side of the stability term's window left out; 0: the frame's edges must follow too "
        "(no bands along the borders)", check="non_negative", group=_LOSS,
    )  # fmt: skip
    seed: int = option(0, "initial weights, data order and crops", check="non_negative", group=_OPT)
    limit: int | None = option(
        None, "use only the first N training photos", check="positive", metavar="N", group=_FILES
    )
    log_every: int = option(
        50, "CSV row (means over the interval) and progress-bar update every N steps", check="positive", group=_LOG
    )
    val_every: int = option(500, "validation grid every N steps; 0: none", check="non_negative", group=_LOG)
    checkpoint_every: int = option(500, "model file + training state every N steps", check="positive", group=_LOG)
    val: str | None = option(
        None, "validation photos (default: the first --val-count training photos)", metavar="DIR", group=_FILES
    )
    val_count: int = option(4, "validation photos in the grid", check="positive", group=_LOG)
    val_size: int = option(
        256, "validation photos: shorter side resized to this, centre square crop", check="positive", group=_LOG
    )
    transformer: TransformerConfig | Mapping[str, Any] | None = field(
        default=None, metadata={"group": "network", "nested": TransformerConfig, "partial": True}
    )  # None: the task's network, TransformerConfig() or TransformerConfig.superres(); a dict changes some fields
    objective: ObjectiveConfig | Mapping[str, Any] | None = field(
        default=None, metadata={"group": _LOSS, "nested": ObjectiveConfig, "partial": True}
    )  # None: the task's objective, ObjectiveConfig.johnson(task, loss); a dict changes some settings
    precision: str = option(
        "auto", "autocast (weights stay float32); auto: see stlib.hardware", choices=PRECISIONS, group=_OPT
    )
    channels_last: bool = option(False, "NHWC memory layout (faster on GPUs)", group=_OPT)
    compile: bool = option(False, "torch.compile the network (slow start, faster steps on GPUs)", group=_OPT)
    vgg_pass: str = option(
        "split", "split: truncated no-grad content pass; fused: one pass on [x; y]; shared: a no-grad pass of the "
        "same VGG", choices=VGG_PASSES, group=_LOSS,
    )  # fmt: skip
    device: str = option("auto", "auto (CUDA when available), cpu, cuda, cuda:1 ...", group=_OPT)
    num_workers: int | None = option(
        None, "data-loading processes (default: 0 on CPU, min(8, cores / 2) with CUDA)", check="non_negative",
        group=_OPT,
    )  # fmt: skip
    resume: bool = option(False, "continue from the run folder's training state", group=_FILES)
    init: str | None = option(
        None, "start from a model file's weights, e.g. a shipped style (fresh optimiser; not with --resume)",
        metavar="MODEL", group=_FILES,
    )  # fmt: skip
    progress: bool = option(True, "no progress bar", flag="--quiet", group=_OPT)

    def __post_init__(self) -> None:
        if self.transformer is None or isinstance(self.transformer, Mapping):
            changes = dict(self.transformer or {})
            if self.task == "superres":
                base = TransformerConfig.superres(changes.pop("upscale", 4))
            else:
                base = TransformerConfig()
            self.transformer = replace(base, **changes)
        if self.objective is None or isinstance(self.objective, Mapping):
            self.objective = replace(ObjectiveConfig.johnson(self.task, self.loss), **(self.objective or {}))
        for name in ("style", "data", "out", "run_dir", "val", "init"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))

    def validate(self) -> None:
        """Raise ValueError with one clear sentence for the first invalid setting."""
        if self.task not in TASKS:
            raise ValueError(f"TrainConfig.task must be one of {', '.join(TASKS)}, got {self.task!r}.")
        if self.task == "style" and not self.style:
            raise ValueError("Training a style network needs a style image (TrainConfig.style; --style IMAGE).")
        if self.task == "superres":
            self._validate_superres()
        if not self.data:
            raise ValueError("TrainConfig.data is required: a folder of training photos.")
        check_options(self)  # the options' declared limits and choices
        require(self, "positive_int", "style_size", none_ok=True)  # 0 on the command line: None
        if self.size < 16:
            raise ValueError(f"TrainConfig.size must be at least 16 pixels (VGG pools 4 times), got {self.size}.")
        if self.lr_gamma > 1:
            raise ValueError(f"TrainConfig.lr_gamma must be in (0, 1], got {self.lr_gamma!r}.")
        if not isinstance(self.transformer, TransformerConfig):
            raise ValueError(f"TrainConfig.transformer must be a TransformerConfig, got {self.transformer!r}.")
        self._validate_stability()  # its margin needs the network's multiple
        self.objective.validate()  # weights and layers, one sentence naming the setting

    def _validate_stability(self) -> None:
        if self.stability_weight > 0:
            if self.task != "style":
                raise ValueError("TrainConfig.stability_weight is for style networks (task 'style'); set it to 0.")
            if self.size - 2 * self.stability_margin <= 2 * self.stability_border:
                least = 2 * (self.stability_margin + self.stability_border)
                raise ValueError(
                    f"TrainConfig.size {self.size} is too small for the stability term with a "
                    f"{self.stability_shift} px move: it needs more than {least}."
                )

    @property
    def stability_margin(self) -> int:
        """The stability term's margin: the largest move, rounded up to a multiple of the network's `multiple`."""
        multiple = self.transformer.multiple
        return -(-self.stability_shift // multiple) * multiple

    def _validate_superres(self) -> None:
        if self.style:
            raise ValueError("TrainConfig.style must be empty for task 'superres' (super-resolution has no style).")
        if self.loss not in SR_LOSSES:
            raise ValueError(f"TrainConfig.loss must be one of {', '.join(SR_LOSSES)}, got {self.loss!r}.")
        scale = self.transformer.upscale
        if scale == 1:
            raise ValueError("Task 'superres' needs a network that upscales: set its upscale to 2, 4 or 8.")
        if self.size % scale or self.val_size % scale:
            raise ValueError(
                f"TrainConfig.size ({self.size}) and val_size ({self.val_size}) must be multiples of the "
                f"upscaling factor {scale}: the low-resolution inputs are size / {scale} pixels."
            )

    @property
    def scale(self) -> int:
        """The upscaling factor of the network (1 for style transfer)."""
        return self.transformer.upscale

    def pairs(self) -> Pairs:
        """The task's (inputs, targets) of a batch of photos: `same_photo`, or `superres.degrade`d inputs."""
        if self.task == "style":
            return same_photo
        scale, sigma = self.transformer.upscale, self.blur_sigma
        return lambda photos: (degrade(photos, scale, sigma), photos)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the network's and the objective's configs nested); `from_dict` reverses it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from `to_dict` output, also an earlier stlib's (the objective's settings flat, as in the shipped
        models' metadata); unknown keys are an error, missing ones take their defaults."""
        known = {f.name for f in fields(cls)} | set(_FLAT_OBJECTIVE)
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig key(s) {', '.join(unknown)}.")
        return cls(**dict(data))

    def perceptual_loss(
        self, style: torch.Tensor | None, precision: str | None = None, device: torch.device | str = "cpu"
    ) -> PerceptualLoss:
        """The objective this config trains with, for a style image (1, 3, H, W) (None: super-resolution).

        `precision` overrides the config's: pass ``"fp32"`` to *score* outputs, so that the number does not depend on
        the CPU (``"auto"`` is bf16 on CPUs with native bf16, see `stlib.hardware`). Without a style image the
        objective is built on `device`; with one, on the style image's device.
        """
        device = style.device if style is not None else torch.device(device)
        loss = PerceptualLoss(
            () if style is None else style, self.objective,
            precision=resolve_precision(precision or self.precision, device), channels_last=self.channels_last,
            vgg_pass=self.vgg_pass, style_warmup=self.style_warmup,
        )  # fmt: skip
        return loss.to(device)

    def out_path(self) -> Path:
        """The model file: `out`, or checkpoints/<style name>.safetensors."""
        if self.out:
            return Path(self.out)
        if self.task == "superres":
            return Path("checkpoints") / "superres" / f"x{self.scale}_{self.loss}.safetensors"
        return Path("checkpoints") / f"{Path(self.style or 'style').stem}.safetensors"

    def run_path(self) -> Path:
        """The folder of logs, validation grids and the training state."""
        if self.run_dir:
            return Path(self.run_dir)
        out = self.out_path()
        return out.with_name(f"{out.stem}.run")


_FLAT_OBJECTIVE = ("content_layer", "style_layers", "content_weight", "style_weight", "tv_weight", "vgg_weights")
"""The objective's settings as an earlier TrainConfig held them, beside the others (now in `TrainConfig.objective`)."""


def _nest_objective(settings: dict[str, Any]) -> dict[str, Any]:
    """An earlier TrainConfig's keywords (``style_weight=``, ``content_layer=`` ...) with the objective's nested.

    The shipped models' metadata holds them so; the former meaning is kept: super-resolution had no style term, and
    its pixel loss no content term, whatever the flat weights said.
    """
    flat = {k: settings.pop(k) for k in _FLAT_OBJECTIVE if k in settings}
    flat = {k: v for k, v in flat.items() if v is not None}  # tv_weight None: the task's
    if not flat:
        return settings
    if "content_layer" in flat:
        flat["content_layers"] = (flat.pop("content_layer"),)
    if settings.get("task") == "superres":
        flat.pop("style_layers", None)
        flat.pop("style_weight", None)
        if settings.get("loss") == "pixel":
            flat.pop("content_weight", None)
    nested = settings.get("objective")
    if isinstance(nested, ObjectiveConfig):
        settings["objective"] = replace(nested, **flat)
    else:
        settings["objective"] = {**flat, **(nested or {})}
    return settings


accept_former_keywords(TrainConfig, _nest_objective)


def lr_at(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based) under the config's schedule."""
    base, total, warm = config.lr, config.steps, config.warmup_steps
    if config.schedule == "onecycle":
        # Smith & Topin, "Super-Convergence" (2017), as torch's OneCycleLR: cosine from lr/25 up to lr over
        # the first 30% of the steps, then cosine down to lr/25e4.
        peak_at = max(1, round(0.3 * total))
        start, final = base / 25, base / 25e4
        if step < peak_at:
            return start + (base - start) * (1 - math.cos(math.pi * step / peak_at)) / 2
        t = min(1.0, (step - peak_at) / max(1, total - peak_at))
        return final + (base - final) * (1 + math.cos(math.pi * t)) / 2
    if step < warm:
        return base * (step + 1) / warm
    if config.schedule == "constant":
        return base
    if config.schedule == "step":
        return base * config.lr_gamma ** ((step - warm) // config.lr_step_every)
    t = min(1.0, (step - warm) / max(1, total - warm))  # cosine (Loshchilov & Hutter, SGDR, 2017), to 0
    return base * (1 + math.cos(math.pi * t)) / 2


@dataclass
class TrainResult:
    """What `train` returns: the trained network (eval mode) and where everything was written."""

    model: TransformerNet
    checkpoint: Path  # the model file (safetensors)
    state: Path  # the training state (resume from it)
    run_dir: Path
    step: int  # optimiser steps done in total (including those of resumed runs)
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per step of this call
    seconds: float = 0.0
    images_per_s: float = 0.0  # over this call's steps, all processes together
    precision: str = "fp32"
    device: str = "cpu"
    log: Path | None = None  # train.csv
    gif: Path | None = None  # evolution of the validation grid

    def losses(self, key: str = "total") -> list[float]:
        """The values of one loss term over this call's steps."""
        return [h[key] for h in self.history]


# ----------------------------------------------------------------------------------------------------------
# The training loop: setup, restore, one step, validate, checkpoint
# ----------------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    callback: Callback | None = None,
    *,
    objective: nn.Module | None = None,
    pairs: Pairs | None = None,
) -> TrainResult:
    """Train a style network (Johnson et al.); resumable, distributed under torchrun; see the module docs.

    `callback(step, losses)` is called after every step with the loss terms and learning rate as floats
    (on every rank); returning True stops training after a checkpoint. `objective(targets, outputs)` returns the
    scalar terms ``{"total", *objective.terms}`` (default: `TrainConfig.perceptual_loss` of the style image, closed
    at the end; a given one is moved to the device and left open); `pairs(photos) -> (inputs, targets)` makes
    the network's inputs and the objective's targets from each batch of photos (default: the task's,
    `TrainConfig.pairs`: the photo twice for style, degraded photo and photo for super-resolution).
    """
    config.validate()
    requested = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    rank, world, owns_group = init_distributed(requested.type)
    try:
        run = _setup(config, requested, rank, world, objective, pairs or config.pairs())
        try:
            _restore(run)
            _distribute(run)
            return _loop(run, callback)
        finally:
            if objective is None:
                run.objective.close()
    finally:
        if owns_group:
            dist.destroy_process_group()


@dataclass
class _Run:
    """Everything one training run holds; its counters (`step`, `epoch`, `batches_in_epoch`) move on each step."""

    config: TrainConfig
    device: torch.device
    rank: int
    world: int
    precision: str
    model: TransformerNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    objective: nn.Module
    pairs: Pairs
    dataset: ImageFolderDataset
    style_sha256: str | None
    train_model: nn.Module | None = None  # the model as trained: wrapped for DDP and compiled
    sampler: ShuffleSampler | None = None  # the current epoch's (its position goes into checkpoints)
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    saved_step: int | None = None  # the step of the last checkpoint written or resumed from

    @property
    def main(self) -> bool:
        """Whether this process writes logs and checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def terms(self) -> tuple[str, ...]:
        """The logged loss terms: the objective's, and "stability" when it has a weight."""
        return (*self.objective.terms, *(("stability",) if self.config.stability_weight else ()))

    @property
    def global_batch(self) -> int:
        """Photos per step, all processes together."""
        return self.config.batch_size * self.world

    @property
    def state_path(self) -> Path:
        """The training state file."""
        return self.config.run_path() / "state.pt"

    def batches(self, position: int) -> Iterator[torch.Tensor]:
        """Batches (B, 3, S, S) of this process for the current epoch, from `position` photos in."""
        config, cuda = self.config, self.device.type == "cuda"
        workers = config.num_workers
        if workers is None:
            workers = min(8, (os.cpu_count() or 2) // 2) if cuda else 0
        loader = make_loader(
            self.dataset, config.batch_size, seed=config.seed, epoch=self.epoch, position=position,
            num_workers=workers, pin_memory=cuda, rank=self.rank, world=self.world,
        )  # fmt: skip
        self.sampler = loader.sampler
        return iter(loader)


def _setup(
    config: TrainConfig, device: torch.device, rank: int, world: int, objective: nn.Module | None, pairs: Pairs
) -> _Run:
    """Data, a freshly initialised network (or `init`'s weights), optimiser, schedule and the objective."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest convolution once
    else:
        keep_freed_memory()  # no page faults for each step's activations (1.5x faster steps on a CPU)
    precision = resolve_precision(config.precision, device)
    style, style_sha256 = None, None
    if config.style:
        style_path = Path(config.style)
        style = load_tensor(style_path, size=config.style_size, device=device) if objective is None else None
        style_sha256 = file_sha256(style_path)  # ImageError above, or OSError here, names a missing style image
    dataset = ImageFolderDataset(
        config.data, size=config.size, crop="random", seed=config.seed, limit=config.limit,
        resize=config.task == "style",  # super-resolution: crops of the photos' own pixels
    )  # fmt: skip
    if len(dataset) < config.batch_size * world:
        raise ValueError(
            f"Training folder '{config.data}' has {len(dataset)} images, fewer than one batch of "
            f"{config.batch_size * world}."
        )
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = TransformerNet(config.transformer).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.init and not config.resume:
        _load_initial_weights(model, Path(config.init))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(config, s) / config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    # The task's objective (no style image: super-resolution), or the one given.
    objective = config.perceptual_loss(style, device=device) if objective is None else objective.to(device)
    return _Run(
        config, device, rank, world, precision, model, optimizer, scheduler, scaler, objective, pairs, dataset,
        style_sha256,
    )  # fmt: skip


def _load_initial_weights(model: TransformerNet, path: Path) -> None:
    """Copy a model file's weights into `model`: same architecture, or a variant whose weights have the same shapes.

    A variant (e.g. ``downsample="antialiased"`` from a strided network) is named in one printed line.
    """
    source = load_model(path)  # a CheckpointError names the file when it is not a model file
    weights = source.state_dict()
    if source.config != model.config:
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        if {name: tuple(t.shape) for name, t in weights.items()} != shapes:
            raise ValueError(
                f"Model file '{path}' holds a {source.describe().split(':')[0]}, but the training settings ask for a "
                f"{model.describe().split(':')[0]}: set the network options to match it."
            )
        old, new = source.config_dict(), model.config_dict()
        changes = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in new if old[k] != new[k])
        print(f"Starting from the weights of '{path}' in a network variant: {changes}.", flush=True)
    model.load_state_dict(weights)  # copies into the existing tensors: device and layout kept


def _restore(run: _Run) -> None:
    """With ``resume``: continue exactly where the saved state stopped (weights, optimiser, RNGs, data order)."""
    path = run.state_path
    if not run.config.resume:
        if run.main and path.exists():
            print(f"Starting a new run: '{path}' will be replaced (use resume=True to continue it).", flush=True)
        return
    saved = _load_state(path)
    _check_resumable(path, saved, run)
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"], run.device)
    run.step, run.epoch = int(saved["step"]), int(saved["epoch"])
    run.batches_in_epoch = int(saved["sampler"]["position"]) // run.global_batch
    run.saved_step = run.step
    if run.main:
        print(f"Resuming from '{path}' at step {run.step}.", flush=True)


def _distribute(run: _Run) -> None:
    """The model as trained: wrapped in DistributedDataParallel under torchrun, compiled when asked."""
    train_model: nn.Module = run.model
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [run.device.index] if run.device.type == "cuda" else None
        train_model = DistributedDataParallel(run.model, device_ids=device_ids)
    if run.config.compile:
        train_model = torch.compile(train_model)
    run.train_model = train_model


def _step(run: _Run, photos: torch.Tensor) -> dict[str, float]:
    """One optimiser step on a batch of photos (B, 3, S, S); returns the step's loss terms and learning rate."""
    config, objective = run.config, run.objective
    if hasattr(objective, "at_step"):
        objective.at_step(run.step)  # the objective's own schedule of its weights (e.g. a style warm-up)
    photos = photos.to(run.device, non_blocking=True)
    if config.channels_last:
        photos = photos.contiguous(memory_format=torch.channels_last)
    inputs, targets = run.pairs(photos)
    with autocast(run.device, run.precision):
        outputs = run.train_model(inputs)  # (B, 3, S, S), raw output
    terms = objective(targets, outputs)
    if config.stability_weight:
        terms["stability"] = _stability(run, inputs, outputs)
        terms["total"] = terms["total"] + config.stability_weight * terms["stability"]
    names = ("total", *run.terms)
    values = torch.stack([terms[k].detach().float() for k in names])
    if run.world > 1:
        dist.all_reduce(values)  # every rank logs (and checks) the same mean values
        values /= run.world
    entry = dict(zip(names, values.tolist(), strict=True))
    if not all(math.isfinite(v) for v in entry.values()):
        kept = (
            f"the last good checkpoint '{config.out_path()}' (step {run.saved_step})"
            if run.saved_step is not None
            else "no checkpoint was written yet"
        )
        detail = ", ".join(f"{k} {entry[k]}" for k in run.terms)
        raise TrainingDiverged(
            f"Training diverged at step {run.step + 1}: the loss is {entry['total']} ({detail}); {kept} is kept. "
            "Lower the learning rate or the loss weights."
        )
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms["total"]).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.step += 1
    run.batches_in_epoch += 1
    return {"step": run.step, **entry, "lr": lr}


def _stability(run: _Run, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """`stlib.losses.stability_loss` for a random move of up to `stability_shift` px in each direction."""
    config = run.config
    shift = config.stability_shift
    dy, dx = torch.randint(-shift, shift + 1, (2,)).tolist()  # the global generator: resumes exactly
    with autocast(run.device, run.precision):
        return stability_loss(
            run.train_model, inputs, outputs, (dy, dx), config.stability_noise / 255, config.stability_margin,
            config.stability_border,
        )  # fmt: skip


def _loop(run: _Run, callback: Callback | None) -> TrainResult:
    """The steps from the current one to ``config.steps`` (or a stop), with logs, validation and checkpoints."""
    config = run.config
    validation = _Validation(run)  # the first grid, before the clock starts
    log = _Log(run)
    history: list[dict[str, float]] = []
    iterator = run.batches(run.batches_in_epoch * run.global_batch)
    start_step, stop = run.step, False
    try:
        while run.step < config.steps and not stop:
            try:
                photos = next(iterator)  # (B, 3, S, S)
            except StopIteration:
                run.epoch, run.batches_in_epoch = run.epoch + 1, 0
                iterator = run.batches(0)
                continue
            entry = _step(run, photos)
            entry["time"] = log.elapsed()
            history.append(entry)
            stop = callback is not None and bool(callback(run.step, {k: v for k, v in entry.items() if k != "step"}))
            log.record(entry, force=stop)
            validation.maybe_save(run.step)
            if run.step % config.checkpoint_every == 0 or run.step == config.steps or stop:
                _checkpoint(run, entry)
    finally:
        log.close()
    return _finish(run, history, log.elapsed(), validation.gif(), done=run.step - start_step)


def _finish(run: _Run, history: list[dict[str, float]], seconds: float, gif: Path | None, done: int) -> TrainResult:
    """The trained network in eval mode and where everything was written."""
    run.model.eval()
    run.model.requires_grad_(False)
    return TrainResult(
        model=run.model,
        checkpoint=run.config.out_path(),
        state=run.state_path,
        run_dir=run.config.run_path(),
        step=run.step,
        history=history,
        seconds=seconds,
        images_per_s=done * run.global_batch / seconds if done and seconds > 0 else 0.0,
        precision=run.precision,
        device=str(run.device),
        log=run.config.run_path() / "train.csv" if run.main else None,
        gif=gif,
    )


@contextlib.contextmanager
def stop_on_signal() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM asks a single-process training run to stop after the current step, with a checkpoint.

    Yields a function telling whether a stop was asked for (``train(config, callback=lambda step, losses:
    stop_requested())``); a second signal stops at once (KeyboardInterrupt).
    Under torchrun (several processes) the signals keep their default meaning: ranks stopping at different
    steps would wait on each other forever.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked: list[str] = []

    def handler(signum: int, frame: object) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signal.Signals(signum).name)
        print(f"\n{asked[0]}: stopping after this step with a checkpoint (again to stop at once)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(asked)
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: the model file and the training state, from one record of the run
# ----------------------------------------------------------------------------------------------------------


def _records(run: _Run, losses: Mapping[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model file's ``info`` and the training state: what both say about the run, and what each adds."""
    config, source = run.config.to_dict(), getattr(run.objective, "source", None)
    shared = {
        "step": run.step,
        "style_sha256": run.style_sha256,
        "world_size": run.world,
        "precision": run.precision,
        "stlib_version": __version__,
    }
    info = {
        **shared,
        "losses": dict(losses),
        "style": Path(run.config.style).name if run.config.style else None,
        "task": run.config.task,
        "train_config": config,
        "vgg_weights": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    assert run.sampler is not None
    state = {
        **shared,
        "format": _STATE_FORMAT,
        "version": 1,
        "epoch": run.epoch,
        "sampler": run.sampler.state_dict(consumed=run.batches_in_epoch * run.global_batch),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rng_state(run.device),
        "config": config,
        "vgg_source": source,
    }
    return info, state


def _checkpoint(run: _Run, losses: Mapping[str, float]) -> None:
    """Write the model file and the training state (rank 0, each atomically); every rank waits for them."""
    if run.main:
        info, state = _records(run, losses)
        save_model(run.model, run.config.out_path(), info=info)
        write_state(run.state_path, state)
    if run.world > 1:
        dist.barrier()
    run.saved_step = run.step


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = read_state(path)
    except FileNotFoundError:
        raise ResumeError(f"Cannot resume: there is no training state '{path}' (start without --resume).") from None
    except CheckpointError as err:
        raise ResumeError(f"Cannot resume: {err}") from None
    if state.get("format") != _STATE_FORMAT:
        raise ResumeError(f"Cannot resume from '{path}': it is not an stlib training state.")
    return state


def _check_resumable(path: Path, saved: Mapping[str, Any], run: _Run) -> None:
    """ResumeError unless the run being started matches the saved one in everything that shapes training."""
    config = run.config
    if saved["style_sha256"] != run.style_sha256:
        raise ResumeError(f"Cannot resume from '{path}': it was trained on another style image than '{config.style}'.")
    if saved["world_size"] != run.world:
        raise ResumeError(
            f"Cannot resume from '{path}': it was saved by {saved['world_size']} process(es), this run has {run.world}."
        )
    now = {"precision": run.precision, "vgg_source": getattr(run.objective, "source", None)}
    for key, what in (("precision", "precision"), ("vgg_source", "VGG weights")):
        if saved[key] != now[key]:
            raise ResumeError(
                f"Cannot resume from '{path}': it was trained with {what} {saved[key]!r}, not {now[key]!r}."
            )
    old, new = _comparable(saved["config"]), _comparable(config.to_dict())
    diffs = [k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k]]
    if diffs:
        detail = "; ".join(f"{k} was {old.get(k)!r}, now {new[k]!r}" for k in diffs[:3])
        raise ResumeError(f"Cannot resume from '{path}' with different settings ({detail}).")


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A training config as a flat dict to compare runs by: today's form (also of an earlier stlib's state), folders
    resolved, the objective's settings as ``objective.NAME`` (its VGG weights are compared by their resolved source)."""
    flat = TrainConfig.from_dict(settings).to_dict()
    objective = flat.pop("objective")
    flat |= {f"objective.{k}": v for k, v in objective.items() if k != "vgg_weights"}
    for key in ("data", "val"):
        if flat.get(key):
            flat[key] = str(Path(flat[key]).resolve())
    return flat


# ----------------------------------------------------------------------------------------------------------
# Logs and validation
# ----------------------------------------------------------------------------------------------------------


class _Log:
    """The progress bar and train.csv (rank 0): one row of means per ``log_every`` steps; times from the start.

    On resume, the CSV rows after the resumed step are dropped (a killed run may have logged past its state).
    """

    def __init__(self, run: _Run) -> None:
        from tqdm.auto import tqdm

        self.run, config = run, run.config
        self.keys = ("total", *run.terms, "lr")
        self.fields = ("step", "epoch", *self.keys, "images_per_s", "seconds")
        self.path = config.run_path() / "train.csv" if run.main else None
        if self.path is not None:
            self._rewrite(run.step if config.resume else None)
        self.bar = tqdm(total=config.steps, initial=run.step, disable=not (config.progress and run.main), unit="step")
        self.started = self.interval_start = time.perf_counter()
        self.sums: dict[str, float] = {}
        self.steps = 0

    def _rewrite(self, resume_step: int | None) -> None:
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    try:
                        if int(row["step"]) <= resume_step and all(row.get(k) for k in self.fields):
                            rows.append(row)
                    except (TypeError, ValueError):
                        continue  # a line cut short by a killed process
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode()
        atomic_write(self.path, lambda file: file.write(data))

    def elapsed(self) -> float:
        """Seconds since the loop started."""
        return time.perf_counter() - self.started

    def record(self, entry: Mapping[str, float], force: bool = False) -> None:
        """Add one step; write a row of means every ``log_every`` steps, at the last step, or when `force`."""
        for key in self.keys:
            self.sums[key] = self.sums.get(key, 0.0) + entry[key]
        self.steps += 1
        self.bar.update(1)
        step, config = self.run.step, self.run.config
        if not (step % config.log_every == 0 or step == config.steps or force):
            return
        now = time.perf_counter()
        row = {k: v / self.steps for k, v in self.sums.items()}
        row |= {"step": step, "epoch": self.run.epoch, "seconds": round(now - self.started, 3)}
        row["images_per_s"] = round(self.steps * self.run.global_batch / max(now - self.interval_start, 1e-9), 3)
        if self.path is not None:
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow({k: row[k] for k in self.fields})
        self.bar.set_postfix(loss=f"{row['total']:.4g}", img_s=f"{row['images_per_s']:.1f}", refresh=False)
        self.sums, self.steps, self.interval_start = {}, 0, now

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()


class _Validation:
    """A grid of the network's outputs on fixed validation photos every ``val_every`` steps (rank 0), and a GIF."""

    def __init__(self, run: _Run) -> None:
        self.run, config = run, run.config
        self.folder = config.run_path() / "val"
        self.photos = _validation_photos(config, run.dataset) if run.main and config.val_every else None
        if self.photos is not None and run.step == 0:
            save_image(torch.cat(list(self.photos), dim=2), self.folder / "originals.jpg")
            self.maybe_save(0)

    def maybe_save(self, step: int) -> None:
        """Save ``val/step_NNNNNN.jpg`` when `step` is a validation step."""
        if self.photos is None or step % self.run.config.val_every != 0:
            return
        inputs, _ = self.run.pairs(self.photos)
        _save_grid(self.run.model, inputs, self.folder / f"step_{step:06d}.jpg")

    def gif(self) -> Path | None:
        """``evolution.gif`` of the grids saved so far (None without validation)."""
        if self.photos is None:
            return None
        return _save_gif(sorted(self.folder.glob("step_*.jpg")), self.run.config.run_path() / "evolution.gif")


def square_photo(path: str | os.PathLike, size: int) -> torch.Tensor:
    """A validation photo: shorter side resized to `size`, centre square crop, (1, 3, size, size)."""
    return square_crop(load_image(path), size)


def _validation_photos(config: TrainConfig, dataset: ImageFolderDataset) -> torch.Tensor:
    """The fixed validation batch (N, 3, S, S): the first readable photos of `config.val`, or of the training set.

    The training set's own reader: unreadable files are skipped and reported once, as in training.
    """
    source = ImageFolderDataset(config.val, size=config.val_size) if config.val else dataset
    return source.first_squares(config.val_count, config.val_size)


def _save_grid(model: TransformerNet, photos: torch.Tensor, path: Path) -> None:
    """Stylise the validation photos (N, 3, S, S) and save them side by side as one image (3, S, N*S)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        styled = torch.cat([model(p[None].to(device)).float().cpu() for p in photos])  # (N, 3, S, S)
    model.train(was_training)
    save_image(torch.cat(list(styled), dim=2), path)  # (3, S, N*S)


def _save_gif(frames: list[Path], path: Path, max_frames: int = 100) -> Path | None:
    """An animated GIF of the validation grids (at most `max_frames`, evenly spaced, the last one held)."""
    from PIL import Image

    if len(frames) < 2:
        return None
    if len(frames) > max_frames:
        keep = sorted({round(i * (len(frames) - 1) / (max_frames - 1)) for i in range(max_frames)})
        frames = [frames[i] for i in keep]
    images = []
    for frame in frames:
        with Image.open(frame) as img:
            img = img.convert("RGB")
            scale = min(1.0, 1024 / img.width)
            images.append(img.resize((round(img.width * scale), round(img.height * scale))))
    durations = [150] * (len(images) - 1) + [1500]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    data = buffer.getvalue()
    return atomic_write(path, lambda file: file.write(data))
