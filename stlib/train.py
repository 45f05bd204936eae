"""Training feed-forward networks with perceptual losses (Johnson et al.): one loop for every task.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016. An image transformation network f_W (`stlib.transformer`) is trained so that y = f_W(x) minimises a
weighted sum of perceptual losses computed by a fixed loss network, VGG16 (Sec. 3, Eq. 1; the normalised terms and
their weights: `stlib.perceptual`, `ObjectiveConfig.johnson`). Training details (Sec. 4.1): 256 x 256 crops of the
80k COCO training images, batch size 4, 40,000 iterations, Adam with learning rate 1e-3; `TrainConfig`'s defaults.

`_step` below is the paper's algorithm: y = f_W(x) for a batch of inputs, the objective's terms of (targets, y),
backward, one Adam step. What varies between tasks is a parameter, not another loop:

- the objective (`TrainConfig.perceptual_loss` by default; a distilled student's: `stlib.distill`);
- the (inputs, targets) pairs: style transfer uses the photo twice (`same_photo`), super-resolution (Sec. 4.2)
  a degraded photo and the photo (`TrainConfig.pairs`), a student a photo and its teacher's picture.

Around the step, the engineering: resume (``resume=True`` continues exactly where ``state.pt`` stopped: weights,
Adam, schedule, every RNG and the data order; a killed process loses at most ``checkpoint_every`` steps), several
processes (``torchrun --nproc_per_node=N -m stlib train``: DistributedDataParallel, one shared data order, rank 0
writes), mixed precision (``precision="auto"``, `stlib.hardware`), a moving average of the weights (``average``,
Polyak & Juditsky 1992), the log and validation grids (`stlib.runlog`), the checkpoints (each file written
atomically). A NaN or infinite loss stops the run with `TrainingDiverged` before the weights change.

Stability (not in the paper; ``stability.weight`` > 0): the output must follow a moved, noisy input (Gupta et al.,
ICCV 2017, `stlib.losses.StabilityConfig`): less flicker on video, no patterns locked to the pixel grid.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from stlib import __version__

from . import checkpoint
from .assets import file_sha256
from .checkpoint import ResumeError
from .data import ImageFolderDataset, Pairs, PairSource, PhotoPairs, square_photo
from .hardware import PRECISIONS, autocast, init_distributed, keep_freed_memory, resolve_device, resolve_precision
from .images import load_tensor
from .losses import StabilityConfig, stability_loss
from .options import accept_former_keywords, check_options, nest_settings, option, require
from .perceptual import VGG_PASSES, ObjectiveConfig, PerceptualLoss
from .runlog import RunLog, ValidationGrids
from .superres import degrade
from .transformer import TransformerConfig, TransformerNet

__all__ = [
    "SCHEDULES",
    "SR_LOSSES",
    "TASKS",
    "ResumeError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "lr_at",
    "same_photo",
    "square_photo",
    "train",
]

SCHEDULES = ("constant", "step", "cosine", "onecycle")
TASKS = ("style", "superres", "distill")
SR_LOSSES = ("feat", "pixel")
_LOSS = "loss"
_GROUPS = ("files", "optimisation", "logging", _LOSS, "task")
_files, _opt, _log, _loss, _task = (partial(option, group=group) for group in _GROUPS)  # options in help groups

# Settings a resumed run may change; every other one must match the saved state (they shape the trajectory).
# The style image, precision and VGG weights are compared by content (sha256) and resolved value instead.
_RESUMABLE_CHANGES = frozenset(
    {"steps", "log_every", "val_every", "checkpoint_every", "val", "val_count", "val_size", "progress", "num_workers",
     "compile", "channels_last", "resume", "out", "run_dir", "device", "style", "precision", "init"}
)  # fmt: skip

Callback = Callable[[int, dict[str, float]], "bool | None"]


def same_photo(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Style transfer's pairs: the network stylises the photo, whose content is also the target."""
    return batch, batch


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


# ----------------------------------------------------------------------------------------------------------
# The loop: one step of the paper's algorithm, and the run around it
# ----------------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig, callback: Callback | None = None, *, objective: nn.Module | None = None,
    pairs: Pairs | None = None, source: PairSource | None = None, model: TransformerNet | None = None,
    info: Mapping[str, Any] | None = None,
) -> TrainResult:  # fmt: skip
    """Train a network (Johnson et al.); resumable, distributed under torchrun; see the module docs.

    `callback(step, losses)` is called after every step (and its checkpoint) with the loss terms and learning rate
    as floats (on every rank); returning True stops training after a checkpoint. `objective(targets, outputs)`
    returns the scalar terms ``{"total", *objective.terms}`` (default: `TrainConfig.perceptual_loss` of the style
    image, closed at the end; a given one is moved to the device and left open). The (inputs, targets) come from
    `source` (default: `PhotoPairs` of the training photos and `pairs`, by default the task's `TrainConfig.pairs`).
    `model` is the starting network (default: a new one, or ``init``'s weights); `info` joins the model file's
    metadata.
    """
    config.validate()
    if config.task == "distill" and (objective is None or source is None):
        raise ValueError("Task 'distill' trains a student on its teacher's pictures: use stlib.distill.distill.")
    requested = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    rank, world, owns_group = init_distributed(requested.type)
    try:
        run = _Run(config, requested, rank, world, objective, source or pairs, model, dict(info or {}))
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


def _step(run: _Run, inputs: torch.Tensor, targets: Any) -> dict[str, float]:
    """One step (Johnson et al. Sec. 3): y = f_W(x), the objective's terms for (targets, y), backward, Adam.

    Returns the step's terms (means over the processes) and learning rate as floats.
    """
    objective, config = run.objective, run.config
    if hasattr(objective, "at_step"):
        objective.at_step(run.step)  # the objective's own schedule of its weights (a style or an L1 warm-up)
    with autocast(run.device, run.precision):
        outputs = run.train_model(inputs)  # (B, 3, H, W), raw output
    terms = objective(targets, outputs)
    if config.stability.weight:  # Gupta et al. 2017: the output follows a moved, noisy input
        terms["stability"] = _stability(run, inputs, outputs)
        terms["total"] = terms["total"] + config.stability.weight * terms["stability"]
    entry = _finite_means(run, terms)  # TrainingDiverged before the weights change
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms["total"]).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.average is not None:
        run.average.update_parameters(run.model)
    run.step += 1
    return {"step": run.step, **entry, "lr": lr}


def _loop(run: _Run, callback: Callback | None) -> TrainResult:
    """The steps from the current one to ``config.steps`` (or a stop), with logs, validation and checkpoints."""
    config = run.config
    grids = _validation(run)  # the first grid, before the clock starts
    log = RunLog(
        config.run_path() / "train.csv" if run.main else None, (*run.terms, "lr"), config.log_every, config.steps,
        run.step, run.global_batch, run.step if config.resume else None, config.progress and run.main,
    )  # fmt: skip
    history: list[dict[str, float]] = []
    start_step, stop = run.step, False
    try:
        while run.step < config.steps and not stop:
            entry = _step(run, *run.source.next())
            entry["time"] = log.elapsed()
            history.append(entry)
            saved = run.step % config.checkpoint_every == 0 or run.step == config.steps
            if saved:
                _checkpoint(run, entry)
            stop = callback is not None and bool(callback(run.step, {k: v for k, v in entry.items() if k != "step"}))
            if stop and not saved:
                _checkpoint(run, entry)
            log.record(run.step, run.source.epoch, entry, force=stop)
            if grids is not None:
                grids.maybe_save(run.step)
    finally:
        log.close()
    gif = grids.gif(config.run_path() / "evolution.gif") if grids is not None else None
    return _finish(run, history, log.elapsed(), gif, done=run.step - start_step)


def _finite_means(run: _Run, terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The logged terms as floats, averaged over the processes; `TrainingDiverged` when one is NaN or infinite."""
    names = ("total", *run.terms)
    values = torch.stack([terms[k].detach().float() for k in names])
    if run.world > 1:
        dist.all_reduce(values)  # every rank logs (and checks) the same mean values
        values /= run.world
    entry = dict(zip(names, values.tolist(), strict=True))
    if all(math.isfinite(v) for v in entry.values()):
        return entry
    kept = f"the last good checkpoint '{run.config.out_path()}' (step {run.saved_step})"
    kept = kept if run.saved_step is not None else "no checkpoint was written yet"
    detail = ", ".join(f"{k} {entry[k]}" for k in run.terms)
    raise TrainingDiverged(
        f"Training diverged at step {run.step + 1}: the loss is {entry['total']} ({detail}); {kept} is kept. "
        "Lower the learning rate or the loss weights."
    )


# ----------------------------------------------------------------------------------------------------------
# Setting up, resuming, distributing
# ----------------------------------------------------------------------------------------------------------


class _Run:
    """Everything one training run holds, set up from its config: data, the starting network (given, new, or
    ``init``'s weights), optimiser, schedule, moving average and objective; `step` moves on with each step."""

    def __init__(
        self, config: TrainConfig, device: torch.device, rank: int, world: int, objective: nn.Module | None,
        source: PairSource | Pairs | None, model: TransformerNet | None, info: dict[str, Any],
    ) -> None:  # fmt: skip
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest convolution once
        else:
            keep_freed_memory()  # no page faults for each step's activations (1.5x faster steps on a CPU)
        self.config, self.device, self.rank, self.world, self.info = config, device, rank, world, info
        self.main, self.global_batch = rank == 0, config.batch_size * world  # rank 0 writes; photos per step
        self.state_path = config.run_path() / "state.pt"
        self.precision = resolve_precision(config.precision, device)
        style, self.style_sha256 = None, None
        if config.style:
            style = load_tensor(config.style, size=config.style_size, device=device) if objective is None else None
            self.style_sha256 = file_sha256(config.style)  # ImageError above, or OSError here, names a missing file
        if source is None or callable(source):
            source = _photo_pairs(config, source or config.pairs(), device, rank, world)
        self.source: PairSource = source
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        if model is None:
            model = TransformerNet(config.transformer)
            if config.init and not config.resume:
                checkpoint.load_weights(model, config.init)
        self.model = self.train_model = model.to(device).train()  # train_model: wrapped for DDP, compiled
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_at(config, s) / config.lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        ema = get_ema_multi_avg_fn(config.average)
        self.average = AveragedModel(model, multi_avg_fn=ema, use_buffers=True) if config.average else None
        # The task's objective (no style image: super-resolution), or the one given.
        self.objective = config.perceptual_loss(style, device=device) if objective is None else objective.to(device)
        self.step, self.saved_step = 0, None  # saved_step: the last checkpoint written or resumed from

    @property
    def terms(self) -> tuple[str, ...]:
        """The logged loss terms: the objective's, and "stability" when it has a weight."""
        return (*self.objective.terms, *(("stability",) if self.config.stability.weight else ()))

    @property
    def written_model(self) -> TransformerNet:
        """The network the model file holds: the moving average of the weights when there is one."""
        return self.model if self.average is None else self.average.module


def _photo_pairs(config: TrainConfig, pairs: Pairs, device: torch.device, rank: int, world: int) -> PhotoPairs:
    """The training photos' square crops, in batches of the task's `pairs`; validation photos from ``val`` or them."""
    dataset = ImageFolderDataset(
        config.data, size=config.size, crop="random", seed=config.seed, limit=config.limit,
        resize=config.task == "style",  # super-resolution: crops of the photos' own pixels
    )  # fmt: skip
    workers = config.num_workers
    if workers is None:
        workers = min(8, (os.cpu_count() or 2) // 2) if device.type == "cuda" else 0
    validation = ImageFolderDataset(config.val, size=config.val_size) if config.val else dataset
    return PhotoPairs(
        dataset, config.batch_size, pairs, device, seed=config.seed, num_workers=workers, rank=rank, world=world,
        channels_last=config.channels_last, validation=(validation, config.val_count, config.val_size),
    )  # fmt: skip


def _restore(run: _Run) -> None:
    """With ``resume``: continue exactly where the saved state stopped (weights, optimiser, RNGs, data order)."""
    path = run.state_path
    if not run.config.resume:
        if run.main and path.exists():
            print(f"Starting a new run: '{path}' will be replaced (use resume=True to continue it).", flush=True)
        return
    saved = checkpoint.read_training_state(path)
    _check_resumable(path, saved, run)
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.scaler.load_state_dict(saved["scaler"])
    if run.average is not None:
        run.average.load_state_dict(saved["average"])
    checkpoint.set_rng_state(saved["rng"], run.device)
    run.source.load_state_dict(saved)
    run.step = run.saved_step = int(saved["step"])
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


def _stability(run: _Run, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """`stlib.losses.stability_loss` for a random move of up to ``stability.shift`` px in each direction."""
    settings, shift = run.config.stability, run.config.stability.shift
    dy, dx = torch.randint(-shift, shift + 1, (2,)).tolist()  # the global generator: resumes exactly
    margin = settings.margin(run.config.transformer.multiple)
    with autocast(run.device, run.precision):
        return stability_loss(run.train_model, inputs, outputs, (dy, dx), settings.noise / 255, margin, settings.border)


def _validation(run: _Run) -> ValidationGrids | None:
    """The validation grids (rank 0, ``val_every`` > 0, a source with validation photos), or None."""
    photos = run.source.validation() if run.main and run.config.val_every else None
    if photos is None:
        return None
    folder = run.config.run_path() / "val"
    return ValidationGrids(run.written_model, folder, run.config.val_every, *photos, step=run.step)


def _finish(run: _Run, history: list[dict[str, float]], seconds: float, gif: Path | None, done: int) -> TrainResult:
    """The trained network (the file's: averaged when asked) in eval mode and where everything was written."""
    model = run.written_model.eval()
    model.requires_grad_(False)
    images_per_s = done * run.global_batch / seconds if done and seconds > 0 else 0.0
    log = run.config.run_path() / "train.csv" if run.main else None
    return TrainResult(
        model, run.config.out_path(), run.state_path, run.config.run_path(), run.step, history, seconds, images_per_s,
        run.precision, str(run.device), log, gif,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: the model file and the training state, from one record of the run
# ----------------------------------------------------------------------------------------------------------


def _records(run: _Run, losses: Mapping[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model file's ``info`` and the training state: what both say about the run, and what each adds."""
    config, source = run.config.to_dict(), getattr(run.objective, "source", None)
    shared = {"step": run.step, "style_sha256": run.style_sha256, "world_size": run.world, "precision": run.precision}
    shared["stlib_version"] = __version__
    info = {
        **shared,
        "losses": dict(losses),
        "style": Path(run.config.style).name if run.config.style else None,
        "task": run.config.task,
        "train_config": config,
        "vgg_weights": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **run.info,
    }
    state = {
        **shared,
        "format": checkpoint.TRAINING_STATE,
        "version": 1,
        **run.source.state_dict(),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": checkpoint.rng_state(run.device),
        "config": config,
        "objective": dict(getattr(run.objective, "settings", {})),
        "vgg_source": source,
    }
    if run.average is not None:
        state["average"] = run.average.state_dict()
    return info, state


def _checkpoint(run: _Run, losses: Mapping[str, float]) -> None:
    """Write the model file and the training state (rank 0, each atomically); every rank waits for them."""
    if run.main:
        info, state = _records(run, losses)
        checkpoint.save_model(run.written_model, run.config.out_path(), info=info)
        checkpoint.write_state(run.state_path, state)
    if run.world > 1:
        dist.barrier()
    run.saved_step = run.step


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
    old = _comparable(saved["config"], saved.get("objective", {}))
    new = _comparable(config.to_dict(), getattr(run.objective, "settings", {}))
    diffs = [k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k]]
    if diffs:
        detail = "; ".join(f"{k} was {old.get(k)!r}, now {new[k]!r}" for k in diffs[:3])
        raise ResumeError(f"Cannot resume from '{path}' with different settings ({detail}).")


def _comparable(settings: Mapping[str, Any], objective: Mapping[str, Any]) -> dict[str, Any]:
    """A training config as a flat dict to compare runs by: today's form (also of an earlier stlib's state), folders
    resolved, the objective's settings as ``objective.NAME`` (its VGG weights are compared by their resolved source),
    and those a given objective states (its ``settings``)."""
    flat = TrainConfig.from_dict(settings).to_dict()
    flat |= {f"objective.{k}": v for k, v in flat.pop("objective").items() if k != "vgg_weights"}
    for key in ("data", "val"):
        if flat.get(key):
            flat[key] = str(Path(flat[key]).resolve())
    return flat | dict(objective)


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every setting of `train`; defaults follow Johnson et al. Sec. 4.1 (loss weights: normalised terms)."""

    task: str = _task(
        "style", "style: a style network (Johnson et al. Sec. 4.1); superres: super-resolution (Sec. 4.2); "
        "distill: a student of a trained network (the distill command)", choices=TASKS,
    )  # fmt: skip
    loss: str = _task("feat", "superres: feat (l_feat) or pixel (l_pixel, the mean squared error)", choices=SR_LOSSES)
    blur_sigma: float = _task(
        0.0, "superres: Gaussian blur (sigma, high-resolution pixels) before the bicubic downscaling "
        "(the paper: 1; the benchmarks' protocol: 0)", check="non_negative",
    )  # fmt: skip
    style: str | None = _files(None, "the style image (task style)", metavar="PATH")
    data: str | None = _files(None, "folder of training photos, any tree (required)", metavar="DIR", required=True)
    out: str | None = _files(
        None, "model file (.safetensors; default: checkpoints/<style>.safetensors)", flag=("-o", "--out"),
        metavar="FILE",
    )  # fmt: skip
    run_dir: str | None = _files(None, "logs, validation grids and state (default: <out>.run/)", metavar="DIR")
    size: int = _opt(256, "training crops are size x size", check="positive")
    style_size: int | None = _opt(256, "longest side of the style image; 0: as the file", none=0)
    batch_size: int = _opt(4, "per process", check="positive")
    steps: int = _opt(40_000, "optimiser steps (paper: 40k, about 2 epochs of COCO at batch 4)", check="positive")
    lr: float = _opt(1e-3, "Adam's learning rate (peak for onecycle)", check="positive")
    schedule: str = _opt("constant", "learning-rate schedule (paper: constant)", choices=SCHEDULES)
    warmup_steps: int = _opt(0, "linear LR warm-up before constant, step and cosine", check="non_negative")
    lr_step_every: int = _opt(10_000, "step schedule: multiply the rate by --lr-gamma every N steps", check="positive")
    lr_gamma: float = _opt(0.5, "step schedule: the factor", check="positive")
    final_lr: float = _opt(0.0, "cosine schedule: the rate it decays to", check="non_negative")
    average: float = _opt(
        0.0, "decay of a moving average of the weights, written as the model (e.g. 0.998; 0: none)",
        check="fraction", metavar="DECAY",
    )  # fmt: skip
    style_warmup: int = _loss(
        0, "ramp the style weight from 0 over the first N steps (0: off, as the paper)", check="non_negative"
    )
    seed: int = _opt(0, "initial weights, data order and crops", check="non_negative")
    limit: int | None = _files(None, "use only the first N training photos", check="positive", metavar="N")
    log_every: int = _log(
        50, "CSV row (means over the interval) and progress-bar update every N steps", check="positive"
    )
    val_every: int = _log(500, "validation grid every N steps; 0: none", check="non_negative")
    checkpoint_every: int = _log(500, "model file + training state every N steps", check="positive")
    val: str | None = _files(None, "validation photos (default: the first --val-count training photos)", metavar="DIR")
    val_count: int = _log(4, "validation photos in the grid", check="positive")
    val_size: int = _log(256, "validation photos: shorter side resized to this, centre square crop", check="positive")
    transformer: TransformerConfig | Mapping[str, Any] | None = field(
        default=None, metadata={"group": "network", "nested": TransformerConfig, "partial": True}
    )  # None: the task's network, TransformerConfig() or TransformerConfig.superres(); a dict changes some fields
    stability: StabilityConfig = field(default_factory=StabilityConfig, metadata={"group": _LOSS})
    objective: ObjectiveConfig | Mapping[str, Any] | None = field(
        default=None, metadata={"group": _LOSS, "nested": ObjectiveConfig, "partial": True}
    )  # None: the task's objective, ObjectiveConfig.johnson(task, loss); a dict changes some settings
    precision: str = _opt("auto", "autocast (weights stay float32); auto: see stlib.hardware", choices=PRECISIONS)
    channels_last: bool = _opt(False, "NHWC memory layout (faster on GPUs)")
    compile: bool = _opt(False, "torch.compile the network (slow start, faster steps on GPUs)")
    vgg_pass: str = _loss(
        "split", "split: truncated no-grad content pass; fused: one pass on [x; y]; shared: no-grad, same VGG",
        choices=VGG_PASSES,
    )  # fmt: skip
    device: str = _opt("auto", "auto (CUDA when available), cpu, cuda, cuda:1 ...")
    num_workers: int | None = _opt(
        None, "data-loading processes (default: 0 on CPU, min(8, cores / 2) with CUDA)", check="non_negative"
    )
    resume: bool = _files(False, "continue from the run folder's training state")
    init: str | None = _files(
        None,
        "start from a model file's weights, e.g. a shipped style (fresh optimiser; not with --resume)",
        metavar="MODEL",
    )
    progress: bool = _opt(True, "no progress bar", flag="--quiet")

    def __post_init__(self) -> None:
        if self.transformer is None or isinstance(self.transformer, Mapping):
            changes = dict(self.transformer or {})
            superres = self.task == "superres"
            base = TransformerConfig.superres(changes.pop("upscale", 4)) if superres else TransformerConfig()
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
        if self.average == 1:
            raise ValueError("TrainConfig.average must be a number in [0, 1), got 1 (the weights would never change).")
        if not isinstance(self.transformer, TransformerConfig):
            raise ValueError(f"TrainConfig.transformer must be a TransformerConfig, got {self.transformer!r}.")
        self.stability.validate(self.size, self.transformer.multiple)
        if self.stability.weight > 0 and self.task != "style":
            raise ValueError("TrainConfig.stability.weight is for style networks (task 'style'); set it to 0.")
        self.objective.validate()  # weights and layers, one sentence naming the setting

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
        known = {f.name for f in fields(cls)} | set(_FORMER)
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig key(s) {', '.join(unknown)}.")
        return cls(**dict(data))

    def perceptual_loss(
        self, style: torch.Tensor | None, precision: str | None = None, device: torch.device | str = "cpu"
    ) -> PerceptualLoss:
        """The objective this config trains with, for a style image (1, 3, H, W) (None: super-resolution, on `device`).

        `precision` overrides the config's: ``"fp32"`` *scores* outputs alike on every CPU (``"auto"`` is bf16 on CPUs
        with native bf16, see `stlib.hardware`).
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


_FORMER = {
    **{f"stability_{name}": ("stability", name) for name in ("weight", "shift", "noise", "border")},
    **{name: ("objective", name) for name in ("style_layers", "content_weight", "style_weight", "tv_weight")},
    "content_layer": ("objective", "content_layers"),
    "vgg_weights": ("objective", "vgg_weights"),
}
"""An earlier TrainConfig's flat settings (the shipped models' metadata, older states, keywords): where they are now."""


def _nest_former_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """An earlier TrainConfig's keywords nested as now (`_FORMER`), with their former meaning: super-resolution had
    no style term, and its pixel loss no content term, whatever the flat weights said."""
    nested: dict[str, dict[str, Any]] = {"objective": {}, "stability": {}}
    for key, (group, name) in _FORMER.items():
        if key in settings and (value := settings.pop(key)) is not None:  # tv_weight None: the task's
            nested[group][name] = (value,) if key == "content_layer" else value
    if settings.get("task") == "superres":
        drop = {"style_layers", "style_weight", *(("content_weight",) if settings.get("loss") == "pixel" else ())}
        nested["objective"] = {k: v for k, v in nested["objective"].items() if k not in drop}
    for group, cls in (("objective", ObjectiveConfig), ("stability", StabilityConfig)):
        nest_settings(settings, group, cls, nested[group])
    if isinstance(settings.get("stability"), Mapping):
        settings["stability"] = StabilityConfig(**settings["stability"])
    return settings


accept_former_keywords(TrainConfig, _nest_former_settings)


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
    t = min(1.0, (step - warm) / max(1, total - warm))  # cosine (Loshchilov & Hutter, SGDR, 2017), to final_lr
    return config.final_lr + (base - config.final_lr) * (1 + math.cos(math.pi * t)) / 2


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
