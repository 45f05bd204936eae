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

Normalised loss terms, so that the same weights work for the offline (Caffe-scale, relu1_2 std ~70) and the
torchvision (ImageNet-scale) VGG16, whose raw features differ by a factor of about 60 (3600 in squares):

- content: ``||phi(y) - phi(x)||^2 / ||phi(x)||^2`` at relu2_2 (both norms means over the batch's C*H*W
  values; the denominator is the mean square of this batch's content targets, a constant of the step):
  the *relative* squared feature error, 0 for y = x;
- style: ``sum_l w_l ||G_l(y) - A_l||_F^2 / ||A_l||_F^2`` with A_l the style image's Gram matrix (computed
  once) and layer weights w_l = 1/4 (summing to 1): each layer's error relative to its target, about 0.6-0.8
  for a photo against a painting;
- TV: `stlib.losses.total_variation`, the mean squared difference of neighbouring pixels in [0, 1] (about
  0.002-0.01 for photos; the paper's 1e-6...1e-4 refer to sums over 0-255 pixels and are not comparable).

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

- the model file ``out`` (safetensors + JSON metadata, see `stlib.stylize`): what `load_model` reads;
- the training state ``<run_dir>/state.pt`` (`torch.save`, loaded with ``weights_only=True``): weights,
  Adam, scheduler, grad scaler, the RNG states (torch, CUDA, Python, NumPy) and the data order
  (`ShuffleSampler.state_dict`), so ``resume=True`` continues exactly where the state was saved: on a CPU
  the loss curve of a resumed run is identical, step for step, to an uninterrupted one. A killed process
  (even SIGKILL) loses at most ``checkpoint_every`` steps.

A NaN or infinite loss stops the run with `TrainingDiverged` before the weights are updated, keeping the
last good checkpoint. Logs in ``run_dir``: ``train.csv`` (step, loss terms, learning rate, images/s), a grid
of stylised validation photos every ``val_every`` steps (``val/step_NNNNNN.jpg``) and ``evolution.gif``.

Several GPUs (or CPU processes): ``torchrun --nproc_per_node=N -m stlib train ...`` runs one process per
device; `train` sees the torchrun environment (``WORLD_SIZE`` > 1), joins the process group (NCCL on GPUs,
Gloo on CPUs) and wraps the network in `DistributedDataParallel`. Each step every rank takes ``batch_size``
images of one shared random order (a global batch of N x ``batch_size``), so the data order and the
checkpoint's sampler position do not depend on which rank read what. Rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import __version__
from .data import ImageFolderDataset, ShuffleSampler, make_loader
from .hardware import PRECISIONS, autocast, resolve_precision
from .images import _atomic_write, load_image, load_tensor, resize, save_image, to_tensor
from .losses import content_loss, gram_matrix, style_loss, total_variation
from .stylize import save_model
from .transformer import TransformerConfig, TransformerNet
from .vgg import VGGFeatures, layer_names

if TYPE_CHECKING:
    from .gatys import GatysConfig

__all__ = [
    "CONTENT_LAYER",
    "SCHEDULES",
    "STYLE_LAYERS",
    "PerceptualLoss",
    "ResumeError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "lr_at",
    "square_photo",
    "train",
]

CONTENT_LAYER = "relu2_2"
"""Johnson et al. Sec. 4.1: content (feature reconstruction) loss at relu2_2 of VGG16."""

STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
"""Johnson et al. Sec. 4.1: style reconstruction loss at relu1_2, relu2_2, relu3_3 and relu4_3."""

SCHEDULES = ("constant", "step", "cosine", "onecycle")
VGG_PASSES = ("split", "fused")
_STATE_FORMAT = "stlib.train-state"
_CSV_FIELDS = ("step", "epoch", "total", "content", "style", "tv", "lr", "images_per_s", "seconds")

# Settings a resumed run may change; every other one must match the saved state (they shape the trajectory).
# The style image, precision and VGG weights are compared by content (sha256) and resolved value instead.
_RESUMABLE_CHANGES = frozenset(
    {"steps", "log_every", "val_every", "checkpoint_every", "val", "val_count", "val_size", "progress",
     "num_workers", "compile", "channels_last", "resume", "out", "run_dir", "device", "style", "precision",
     "vgg_weights", "init"}
)  # fmt: skip

Callback = Callable[[int, dict[str, float]], "bool | None"]


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

    style: str | None = None  # the style image (required)
    data: str | None = None  # folder of training photos, e.g. data/coco/train2017 (required)
    out: str | None = None  # the model file; None: checkpoints/<style name>.safetensors
    run_dir: str | None = None  # logs, validation grids, training state; None: <out without suffix>.run/
    size: int = 256  # training crops are size x size
    style_size: int | None = 256  # longest side of the style image; None: its file size
    batch_size: int = 4  # per process
    steps: int = 40_000  # optimiser steps (paper: 40k, about 2 epochs of COCO at batch 4)
    lr: float = 1e-3  # Adam's learning rate (peak for onecycle)
    schedule: str = "constant"  # "constant" (paper), "step", "cosine" or "onecycle"
    warmup_steps: int = 0  # linear warm-up before "constant", "step" and "cosine"
    lr_step_every: int = 10_000  # "step": multiply the rate by lr_gamma every this many steps
    lr_gamma: float = 0.5
    content_layer: str = CONTENT_LAYER
    style_layers: tuple[str, ...] = STYLE_LAYERS
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 10.0
    style_warmup: int = 0  # ramp the style weight linearly from 0 over the first N steps (0: off, as the paper)
    seed: int = 0  # initial weights, data order and crops
    limit: int | None = None  # use only the first N training images
    log_every: int = 50  # CSV row (means over the interval) and progress-bar update
    val_every: int = 500  # validation grid; 0: none
    checkpoint_every: int = 500  # model file + training state
    val: str | None = None  # folder of validation photos; None: the first val_count training photos
    val_count: int = 4
    val_size: int = 256  # validation photos: shorter side resized to this, centre square crop
    vgg_weights: str | None = "auto"  # loss network weights: "auto", "imagenet", "offline" or a file
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    precision: str = "auto"  # "auto", "fp32", "bf16" or "fp16" (autocast; weights stay float32)
    channels_last: bool = False  # NHWC memory layout (faster on GPUs; slower on the AVX2 CPU measured)
    compile: bool = False  # torch.compile the transformer (slow start, faster steps on GPUs)
    vgg_pass: str = "split"  # "split": truncated no-grad content pass; "fused": one pass on [x; y]
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1" ...
    num_workers: int | None = None  # DataLoader workers; None: 0 on CPU, min(8, cores / 2) with CUDA
    resume: bool = False  # continue from run_dir/state.pt
    init: str | None = None  # start from this model file's weights (fine-tuning, fresh optimiser); not on resume
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        if isinstance(self.transformer, Mapping):
            self.transformer = TransformerConfig(**self.transformer)
        if isinstance(self.style_layers, str):
            self.style_layers = (self.style_layers,)
        self.style_layers = tuple(self.style_layers)
        for name in ("style", "data", "out", "run_dir", "val", "init"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))

    def validate(self) -> None:
        """Raise ValueError with one clear sentence for the first invalid setting."""
        if not self.style:
            raise ValueError("TrainConfig.style is required: the path of the style image.")
        if not self.data:
            raise ValueError("TrainConfig.data is required: a folder of training photos.")
        positive = ["size", "batch_size", "steps", "log_every", "checkpoint_every", "val_count", "val_size"]
        positive += ["lr_step_every"]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}.")
        for name in ("val_every", "warmup_steps", "style_warmup", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}.")
        for name in ("style_size", "limit", "num_workers"):
            value = getattr(self, name)
            low = 0 if name == "num_workers" else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"TrainConfig.{name} must be None or an integer >= {low}, got {value!r}.")
        if self.size < 16:
            raise ValueError(f"TrainConfig.size must be at least 16 pixels (VGG pools 4 times), got {self.size}.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}.")
        if not (math.isfinite(self.lr_gamma) and 0 < self.lr_gamma <= 1):
            raise ValueError(f"TrainConfig.lr_gamma must be in (0, 1], got {self.lr_gamma!r}.")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}.")
        choices = (("schedule", SCHEDULES), ("precision", PRECISIONS), ("vgg_pass", VGG_PASSES))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}."
                )
        known = layer_names("vgg16")
        unknown = [n for n in (self.content_layer, *self.style_layers) if n not in known]
        if unknown:
            raise ValueError(f"Unknown VGG16 layer(s) {', '.join(unknown)} (see stlib.vgg.layer_names()).")
        if not self.style_layers:
            raise ValueError("TrainConfig.style_layers is empty; name layers such as 'relu1_2'.")
        if not isinstance(self.transformer, TransformerConfig):
            raise ValueError(f"TrainConfig.transformer must be a TransformerConfig, got {self.transformer!r}.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the transformer config nested as a dict); `from_dict` reverses it."""
        out = asdict(self)
        out["style_layers"] = list(self.style_layers)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from `to_dict` output; unknown keys are an error, missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig key(s) {', '.join(unknown)}.")
        return cls(**dict(data))

    def gatys_config(self, size: int, iterations: int = 100, init: str = "noise") -> GatysConfig:
        """The `stlib.gatys` settings that minimise this network's objective for one photo of `size` px.

        Same loss network, layers and weights; the style image is `style_size` px as in training, so the
        Gatys result and the network's output can be compared by their objective (Johnson et al. Fig. 5).
        """
        from .gatys import GatysConfig

        style_size = self.style_size if self.style_size is not None else size
        return GatysConfig(
            weights=self.vgg_weights,
            content_layers=(self.content_layer,),
            style_layers=dict.fromkeys(self.style_layers, 1.0),
            content_weight=self.content_weight,
            style_weight=self.style_weight,
            tv_weight=self.tv_weight,
            iterations=iterations,
            size=size,
            style_scale=style_size / size,
            init=init,
        )

    def out_path(self) -> Path:
        """The model file: `out`, or checkpoints/<style name>.safetensors."""
        if self.out:
            return Path(self.out)
        return Path("checkpoints") / f"{Path(self.style or 'style').stem}.safetensors"

    def run_path(self) -> Path:
        """The folder of logs, validation grids and the training state."""
        if self.run_dir:
            return Path(self.run_dir)
        out = self.out_path()
        return out.with_name(f"{out.stem}.run")


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


# ----------------------------------------------------------------------------------------------------------
# Hardware: device, precision, distributed
# ----------------------------------------------------------------------------------------------------------


def _resolve_device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device is {config.device!r} but no CUDA GPU is available.")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def _init_distributed(device_type: str) -> tuple[int, int, bool]:
    """(rank, world size, whether we created the process group) from the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size(), True


# ----------------------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------------------


class PerceptualLoss(nn.Module):
    """Johnson et al.'s normalised perceptual loss (module docstring); style Grams computed once.

    ``loss(x, y)`` takes the photos x and the network's output y, both (B, 3, H, W), and returns the scalar
    terms ``{"content", "style", "tv", "total"}`` (float32).
    """

    def __init__(
        self,
        style: torch.Tensor,
        content_layer: str = CONTENT_LAYER,
        style_layers: tuple[str, ...] = STYLE_LAYERS,
        content_weight: float = 1.0,
        style_weight: float = 5.0,
        tv_weight: float = 10.0,
        vgg_weights: str | None = "auto",
        vgg_pass: str = "split",
        precision: str = "fp32",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if vgg_pass not in VGG_PASSES:
            raise ValueError(f"vgg_pass must be one of {', '.join(VGG_PASSES)}, got {vgg_pass!r}.")
        if style.dim() != 4 or style.shape[:2] != (1, 3):
            raise ValueError(f"The style image must be a (1, 3, H, W) tensor, got shape {tuple(style.shape)}.")
        self.content_layer, self.style_layers = content_layer, tuple(style_layers)
        self.weights = {"content": content_weight, "style": style_weight, "tv": tv_weight}
        self.vgg_pass, self.precision, self.channels_last = vgg_pass, precision, channels_last
        layers = list(dict.fromkeys([*self.style_layers, content_layer]))
        self.vgg = VGGFeatures(layers, weights=vgg_weights)
        # The content targets need only relu2_2: a second, truncated copy of the first layers (split pass).
        self.content_vgg = VGGFeatures([content_layer], weights=vgg_weights) if vgg_pass == "split" else None
        self.to(style.device)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        with torch.no_grad():
            feats = self._features(self.vgg, style)
            grams = {name: gram_matrix(feats[name]).float() for name in self.style_layers}  # {layer: (1, C, C)}
        for name, gram in grams.items():
            self.register_buffer(f"gram_{name}", gram, persistent=False)
        n = len(self.style_layers)
        # w_l / ||A_l||_F^2 with w_l = 1/n: each layer's Gram error relative to its target.
        self.layer_weights = {name: 1.0 / (n * (float(g.pow(2).sum()) or 1.0)) for name, g in grams.items()}

    @classmethod
    def from_config(cls, style: torch.Tensor, config: TrainConfig, precision: str | None = None) -> PerceptualLoss:
        """The objective a `TrainConfig` trains with, for a style image (1, 3, H, W) sized as in training.

        `precision` overrides ``config.precision``: pass ``"fp32"`` to *score* outputs, so that the number does
        not depend on the CPU (``"auto"`` is bf16 on CPUs with native bf16, see `stlib.hardware`).
        """
        return cls(
            style,
            config.content_layer,
            config.style_layers,
            config.content_weight,
            config.style_weight,
            config.tv_weight,
            vgg_weights=config.vgg_weights,
            vgg_pass=config.vgg_pass,
            precision=resolve_precision(precision or config.precision, style.device),
            channels_last=config.channels_last,
        )

    @property
    def style_grams(self) -> dict[str, torch.Tensor]:
        """The style image's Gram matrices {layer: (1, C, C)}."""
        return {name: getattr(self, f"gram_{name}") for name in self.style_layers}

    def _features(self, vgg: VGGFeatures, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.precision):
            return vgg(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms of outputs y (B, 3, H, W) for photos x (B, 3, H, W)."""
        if self.content_vgg is not None:  # split: truncated no-grad pass for the photos, full pass for y
            with torch.no_grad():
                target = self._features(self.content_vgg, x)[self.content_layer]  # (B, C, H/2, W/2)
            feats = self._features(self.vgg, y)
        else:  # fused: one pass over [x; y] (2B, 3, H, W)
            both = self._features(self.vgg, torch.cat([x, y.to(x.dtype)]))
            batch = x.shape[0]
            target = both[self.content_layer][:batch].detach()
            feats = {name: value[batch:] for name, value in both.items()}
        scale = target.float().pow(2).mean().clamp_min(1e-12)  # mean square of the content targets
        content = content_loss(feats[self.content_layer], target) / scale
        style = style_loss(feats, self.style_grams, self.layer_weights)
        tv = total_variation(y)
        w = self.weights
        total = w["content"] * content + w["style"] * style + w["tv"] * tv
        return {"total": total, "content": content, "style": style, "tv": tv}


# ----------------------------------------------------------------------------------------------------------
# Data order across processes
# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state as tensors and plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global legacy RNG is what we save)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),  # (version, tuple of ints, gauss_next)
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np_state["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))  # noqa: NPY002
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def square_photo(path: str | os.PathLike, size: int) -> torch.Tensor:
    """A validation photo: shorter side resized to `size`, centre square crop, (1, 3, size, size)."""
    image = load_image(path)
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = resize(image, (new_w, new_h))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return to_tensor(image.crop((left, top, left + size, top + size)))


def _validation_photos(config: TrainConfig, dataset: ImageFolderDataset) -> torch.Tensor:
    """The fixed validation batch (N, 3, S, S): `config.val`'s first photos, or the first training photos."""
    files = ImageFolderDataset(config.val, size=config.val_size).files if config.val else dataset.files
    return torch.cat([square_photo(p, config.val_size) for p in files[: config.val_count]])


def _write_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    _atomic_write(path, lambda file: file.write(data))


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ResumeError(f"Cannot resume: there is no training state '{path}' (start without --resume).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ResumeError(f"Cannot resume from '{path}': it is not a readable training state ({reason}).") from None
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise ResumeError(f"Cannot resume from '{path}': it is not an stlib training state.")
    return state


def _check_resumable(path: Path, saved: Mapping[str, Any], config: TrainConfig, now: Mapping[str, Any]) -> None:
    """ResumeError unless the run being started matches the saved one in everything that shapes training.

    `now` holds this run's style_sha256, world_size, precision and vgg_source (resolved values).
    """
    if saved["style_sha256"] != now["style_sha256"]:
        raise ResumeError(f"Cannot resume from '{path}': it was trained on another style image than '{config.style}'.")
    if saved["world_size"] != now["world_size"]:
        raise ResumeError(
            f"Cannot resume from '{path}': it was saved by {saved['world_size']} process(es), "
            f"this run has {now['world_size']}."
        )
    for key, what in (("precision", "precision"), ("vgg_source", "VGG weights")):
        if saved[key] != now[key]:
            raise ResumeError(
                f"Cannot resume from '{path}': it was trained with {what} {saved[key]!r}, not {now[key]!r}."
            )
    old, new = saved["config"], config.to_dict()
    for key in ("data", "val"):
        for d in (old, new):
            if d.get(key):
                d[key] = str(Path(d[key]).resolve())
    diffs = [k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k]]
    if diffs:
        detail = "; ".join(f"{k} was {old.get(k)!r}, now {new[k]!r}" for k in diffs[:3])
        raise ResumeError(f"Cannot resume from '{path}' with different settings ({detail}).")


class _CsvLog:
    """train.csv: one row per log interval (rank 0 only); on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    try:
                        if int(row["step"]) <= resume_step and all(row.get(k) for k in _CSV_FIELDS):
                            rows.append(row)
                    except (TypeError, ValueError):
                        continue  # a line cut short by a killed process
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode()
        _atomic_write(path, lambda file: file.write(data))

    def append(self, row: Mapping[str, float]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=_CSV_FIELDS).writerow({k: row[k] for k in _CSV_FIELDS})


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
    return _atomic_write(path, lambda file: file.write(data))


def train(config: TrainConfig, callback: Callback | None = None) -> TrainResult:
    """Train a style network (Johnson et al.); resumable, distributed under torchrun; see the module docs.

    `callback(step, losses)` is called after every step with the loss terms and learning rate as floats
    (on every rank); returning True stops training after a checkpoint.
    """
    config.validate()
    requested = _resolve_device(config, int(os.environ.get("LOCAL_RANK", "0")))
    rank, world, owns_group = _init_distributed(requested.type)
    try:
        return _train(config, callback, requested, rank, world)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _load_initial_weights(model: TransformerNet, path: Path) -> None:
    from .stylize import load_model  # a CheckpointError names the file when it is not a model file

    source = load_model(path)
    if source.config != model.config:
        raise ValueError(
            f"Model file '{path}' holds a {source.describe().split(':')[0]}, but the training settings ask for a "
            f"{model.describe().split(':')[0]}: set the network options to match it."
        )
    model.load_state_dict(source.state_dict())  # copies into the existing tensors: device and layout kept


def _train(config: TrainConfig, callback: Callback | None, device: torch.device, rank: int, world: int) -> TrainResult:
    from tqdm.auto import tqdm

    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest convolution once
    precision = resolve_precision(config.precision, device)
    out, run_dir = config.out_path(), config.run_path()
    state_path = run_dir / "state.pt"
    style_path = Path(config.style)
    style = load_tensor(style_path, size=config.style_size, device=device)  # (1, 3, H, W); ImageError names it
    style_sha = _sha256(style_path)
    dataset = ImageFolderDataset(config.data, size=config.size, crop="random", seed=config.seed, limit=config.limit)
    global_batch = config.batch_size * world
    if len(dataset) < global_batch:
        raise ValueError(
            f"Training folder '{config.data}' has {len(dataset)} images, fewer than one batch of {global_batch}."
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
    loss_fn = PerceptualLoss.from_config(style, config)

    step, epoch, batches_in_epoch = 0, 0, 0
    if config.resume:
        saved = _load_state(state_path)
        now = {"style_sha256": style_sha, "world_size": world, "precision": precision, "vgg_source": loss_fn.vgg.source}
        _check_resumable(state_path, saved, config, now)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        _set_rng_state(saved["rng"], device)
        step, epoch = int(saved["step"]), int(saved["epoch"])
        batches_in_epoch = int(saved["sampler"]["position"]) // global_batch
        if rank == 0:
            print(f"Resuming from '{state_path}' at step {step}.", flush=True)
    elif rank == 0 and state_path.exists():
        print(f"Starting a new run: '{state_path}' will be replaced (use resume=True to continue it).", flush=True)
    start_step = step

    train_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)

    workers = config.num_workers
    if workers is None:
        workers = min(8, (os.cpu_count() or 2) // 2) if device.type == "cuda" else 0
    sampler = ShuffleSampler(len(dataset), config.seed, rank, world)  # the current epoch's (for checkpoints)

    def batches(epoch: int, position: int) -> Iterator[torch.Tensor]:
        nonlocal sampler
        loader = make_loader(
            dataset,
            config.batch_size,
            seed=config.seed,
            epoch=epoch,
            position=position,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            rank=rank,
            world=world,
        )
        sampler = loader.sampler
        return iter(loader)

    main = rank == 0
    log = _CsvLog(run_dir / "train.csv", step if config.resume else None) if main else None
    val_dir = run_dir / "val"
    photos = _validation_photos(config, dataset) if main and config.val_every else None
    if photos is not None and step == 0:
        save_image(torch.cat(list(photos), dim=2), val_dir / "originals.jpg")
        _save_grid(model, photos, val_dir / "step_000000.jpg")

    def checkpoint(last: Mapping[str, float]) -> None:
        if main:
            info = {
                "step": step,
                "losses": dict(last),
                "style": style_path.name,
                "style_sha256": style_sha,
                "train_config": config.to_dict(),
                "vgg_weights": loss_fn.vgg.source,
                "precision": precision,
                "world_size": world,
                "stlib_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            save_model(model, out, info=info)
            state = {
                "format": _STATE_FORMAT,
                "version": 1,
                "step": step,
                "epoch": epoch,
                "sampler": sampler.state_dict(consumed=batches_in_epoch * global_batch),
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(device),
                "config": config.to_dict(),
                "style_sha256": style_sha,
                "world_size": world,
                "precision": precision,
                "vgg_source": loss_fn.vgg.source,
                "stlib_version": __version__,
            }
            _write_state(state_path, state)
        if world > 1:
            dist.barrier()

    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    interval_start, interval_steps = time.perf_counter(), 0
    started = time.perf_counter()
    saved_step = step if config.resume else None
    iterator = batches(epoch, batches_in_epoch * global_batch)
    bar = tqdm(total=config.steps, initial=step, disable=not (config.progress and main), unit="step")
    stop = False
    try:
        while step < config.steps and not stop:
            try:
                x = next(iterator)  # (B, 3, S, S)
            except StopIteration:
                epoch, batches_in_epoch = epoch + 1, 0
                iterator = batches(epoch, 0)
                continue
            if config.style_warmup:  # a network that first learns to reconstruct its input learns faster
                loss_fn.weights["style"] = config.style_weight * min(1.0, step / config.style_warmup)
            x = x.to(device, non_blocking=True)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                y = train_model(x)  # (B, 3, S, S), raw output
            terms = loss_fn(x, y)
            values = torch.stack([terms[k].detach().float() for k in ("total", "content", "style", "tv")])
            if world > 1:
                dist.all_reduce(values)  # every rank logs (and checks) the same mean values
                values /= world
            total, content, style_value, tv = values.tolist()
            if not all(math.isfinite(v) for v in (total, content, style_value, tv)):
                kept = (
                    f"the last good checkpoint '{out}' (step {saved_step})"
                    if saved_step is not None
                    else ("no checkpoint was written yet")
                )
                raise TrainingDiverged(
                    f"Training diverged at step {step + 1}: the loss is {total} (content {content}, style "
                    f"{style_value}, tv {tv}); {kept} is kept. Lower the learning rate or the loss weights."
                )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            batches_in_epoch += 1
            entry = {"step": step, "total": total, "content": content, "style": style_value, "tv": tv, "lr": lr}
            entry["time"] = time.perf_counter() - started
            history.append(entry)
            for key in ("total", "content", "style", "tv", "lr"):
                sums[key] = sums.get(key, 0.0) + entry[key]
            interval_steps += 1
            if callback is not None and callback(step, {k: v for k, v in entry.items() if k != "step"}):
                stop = True
            bar.update(1)

            if step % config.log_every == 0 or step == config.steps or stop:
                now = time.perf_counter()
                row = {k: v / interval_steps for k, v in sums.items()}
                row |= {"step": step, "epoch": epoch, "seconds": round(now - started, 3)}
                row["images_per_s"] = round(interval_steps * global_batch / max(now - interval_start, 1e-9), 3)
                if log is not None:
                    log.append(row)
                bar.set_postfix(loss=f"{row['total']:.4g}", img_s=f"{row['images_per_s']:.1f}", refresh=False)
                sums, interval_steps, interval_start = {}, 0, now
            if photos is not None and config.val_every and step % config.val_every == 0:
                _save_grid(model, photos, val_dir / f"step_{step:06d}.jpg")
            if step % config.checkpoint_every == 0 or step == config.steps or stop:
                checkpoint(entry)
                saved_step = step
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    gif = None
    if photos is not None:
        gif = _save_gif(sorted(val_dir.glob("step_*.jpg")), run_dir / "evolution.gif")
    model.eval()
    model.requires_grad_(False)
    loss_fn.vgg.close()
    if loss_fn.content_vgg is not None:
        loss_fn.content_vgg.close()
    done = step - start_step
    return TrainResult(
        model=model,
        checkpoint=out,
        state=state_path,
        run_dir=run_dir,
        step=step,
        history=history,
        seconds=seconds,
        images_per_s=done * global_batch / seconds if done and seconds > 0 else 0.0,
        precision=precision,
        device=str(device),
        log=run_dir / "train.csv" if main else None,
        gif=gif,
    )
