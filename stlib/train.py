"""Training feed-forward networks with perceptual losses (Johnson et al.): one loop for every task.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016. An image transformation network f_W (`stlib.transformer`) is trained so that y = f_W(x) minimises a
weighted sum of perceptual losses computed by a fixed loss network, VGG16 (Sec. 3, Eq. 1; the normalised terms and
their weights: `stlib.perceptual`, `ObjectiveConfig.johnson`). Training details (Sec. 4.1): 256 x 256 crops of the
80k COCO training images, batch size 4, 40,000 iterations, Adam with learning rate 1e-3; `TrainConfig`'s defaults.

`_step` below is the paper's algorithm, one step: y = f_W(x) for a batch of inputs, the objective's terms of
(targets, y), backward, one Adam step. What varies between tasks is a parameter, not another loop:

- the objective (`TrainConfig.perceptual_loss` by default; a distilled student's: `stlib.distill`);
- the (inputs, targets) pairs: style transfer uses the photo twice (`same_photo`), super-resolution (Sec. 4.2)
  a degraded photo and the photo (`TrainConfig.pairs`), a student a photo and its teacher's picture.

Around the step, the engineering: resume (``resume=True`` continues exactly where the training state ``state.pt``
stopped: weights, Adam, schedule, every RNG and the data order, so a CPU run's loss curve is identical step for step
to an uninterrupted one; a killed process loses at most ``checkpoint_every`` steps), several processes
(``torchrun --nproc_per_node=N -m stlib train``: DistributedDataParallel, one shared data order, rank 0 writes),
mixed precision (``precision="auto"``: bf16 where the hardware has it, see `stlib.hardware`), an optional moving
average of the weights (``average``, Polyak & Juditsky 1992), the log and validation grids (`stlib.runlog`) and
the checkpoints (the model file, `stlib.checkpoint`, and the state, each written atomically). A NaN or infinite loss
stops the run with `TrainingDiverged` before the weights change, keeping the last good checkpoint.

Stability (not in the paper; ``stability_weight`` > 0): each step also runs the network on the inputs moved by up
to ``stability_shift`` pixels plus camera noise and asks the output to move the same way (Gupta et al., ICCV 2017,
`stlib.losses.stability_loss`): less flicker on video, no patterns locked to the pixel grid, no bands at the borders.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from stlib import __version__

from .assets import file_sha256
from .checkpoint import CheckpointError, load_model, read_state, rng_state, save_model, set_rng_state, write_state
from .data import ImageFolderDataset, PhotoBatches, square_crop
from .hardware import (
    PRECISIONS,
    autocast,
    init_distributed,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
    stop_on_signal,
)  # fmt: skip
from .images import load_image, load_tensor
from .losses import stability_loss
from .options import accept_former_keywords, check_options, option, require
from .perceptual import VGG_PASSES, ObjectiveConfig, PerceptualLoss
from .runlog import RunLog, ValidationGrids
from .superres import degrade
from .transformer import TransformerConfig, TransformerNet

__all__ = [
    "SCHEDULES",
    "SR_LOSSES",
    "TASKS",
    "PairSource",
    "Pairs",
    "PhotoPairs",
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
TASKS = ("style", "superres", "distill")
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
Pairs = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]
"""A batch of photos (B, 3, S, S) -> (the network's inputs, the objective's targets)."""


def same_photo(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Style transfer's pairs: the network stylises the photo, whose content is also the target."""
    return batch, batch


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class ResumeError(ValueError):
    """A training run cannot be resumed; the message is one sentence naming the state file."""


# ----------------------------------------------------------------------------------------------------------
# The loop: one step of the paper's algorithm, and the run around it
# ----------------------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    callback: Callback | None = None,
    *,
    objective: nn.Module | None = None,
    pairs: Pairs | None = None,
    source: PairSource | None = None,
    model: TransformerNet | None = None,
    info: Mapping[str, Any] | None = None,
) -> TrainResult:
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
        run = _setup(config, requested, rank, world, objective, source or pairs, model, dict(info or {}))
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
    if config.stability_weight:
        terms["stability"] = _stability(run, inputs, outputs)
        terms["total"] = terms["total"] + config.stability_weight * terms["stability"]
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
    terms = (*run.terms, "lr")
    log_path = config.run_path() / "train.csv" if run.main else None
    resumed = run.step if config.resume else None
    log = RunLog(
        log_path, terms, config.log_every, config.steps, run.step, run.global_batch, resumed,
        progress=config.progress and run.main,
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
    kept = (
        f"the last good checkpoint '{run.config.out_path()}' (step {run.saved_step})"
        if run.saved_step is not None
        else "no checkpoint was written yet"
    )
    detail = ", ".join(f"{k} {entry[k]}" for k in run.terms)
    raise TrainingDiverged(
        f"Training diverged at step {run.step + 1}: the loss is {entry['total']} ({detail}); {kept} is kept. "
        "Lower the learning rate or the loss weights."
    )


# ----------------------------------------------------------------------------------------------------------
# Where the (inputs, targets) come from
# ----------------------------------------------------------------------------------------------------------


class PairSource(Protocol):
    """The loop's (inputs, targets), one step after another, resumable."""

    epoch: int  # logged with each row of train.csv

    def next(self) -> tuple[torch.Tensor, Any]:
        """The next step's inputs (B, 3, H, W) on the device and the objective's targets."""

    def state_dict(self) -> dict[str, Any]:
        """Where the source stands (stored in the training state)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a training state."""

    def validation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fixed validation photos (N, 3, S, S) and the network's inputs for them, or None."""


class PhotoPairs:
    """Batches of training photos (square crops, `stlib.data.PhotoBatches`) and the task's `pairs` of each."""

    def __init__(self, config: TrainConfig, pairs: Pairs, device: torch.device, rank: int, world: int) -> None:
        self.config, self.pairs, self.device = config, pairs, device
        self.dataset = ImageFolderDataset(
            config.data, size=config.size, crop="random", seed=config.seed, limit=config.limit,
            resize=config.task == "style",  # super-resolution: crops of the photos' own pixels
        )  # fmt: skip
        cuda, workers = device.type == "cuda", config.num_workers
        if workers is None:
            workers = min(8, (os.cpu_count() or 2) // 2) if cuda else 0
        self.batches = PhotoBatches(
            self.dataset, config.batch_size, config.seed, workers, pin_memory=cuda, rank=rank, world=world
        )

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self.batches.epoch

    def next(self) -> tuple[torch.Tensor, Any]:
        """The task's (inputs, targets) of the next batch of photos (B, 3, S, S)."""
        photos = next(self.batches).to(self.device, non_blocking=True)
        if self.config.channels_last:
            photos = photos.contiguous(memory_format=torch.channels_last)
        return self.pairs(photos)

    def state_dict(self) -> dict[str, Any]:
        """The data order's position (`PhotoBatches.state_dict`)."""
        return self.batches.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue after the photos the state says were consumed."""
        self.batches.load_state_dict(state)

    def validation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The first readable photos of ``val`` (or of the training set), centre squares, and their inputs."""
        config = self.config
        source = ImageFolderDataset(config.val, size=config.val_size) if config.val else self.dataset
        photos = source.first_squares(config.val_count, config.val_size)  # the training set's reader
        return photos, self.pairs(photos)[0]


def square_photo(path: str | os.PathLike, size: int) -> torch.Tensor:
    """A validation photo: shorter side resized to `size`, centre square crop, (1, 3, size, size)."""
    return square_crop(load_image(path), size)


# ----------------------------------------------------------------------------------------------------------
# Setting up, resuming, distributing
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything one training run holds; `step` moves on with each optimiser step."""

    config: TrainConfig
    device: torch.device
    rank: int
    world: int
    precision: str
    model: TransformerNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    average: AveragedModel | None  # the moving average of the weights, or None
    objective: nn.Module
    source: PairSource
    style_sha256: str | None
    info: dict[str, Any]  # the caller's additions to the model file's metadata
    train_model: nn.Module | None = None  # the model as trained: wrapped for DDP and compiled
    step: int = 0
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

    @property
    def written_model(self) -> TransformerNet:
        """The network the model file holds: the moving average of the weights when there is one."""
        return self.model if self.average is None else self.average.module


def _setup(
    config: TrainConfig, device: torch.device, rank: int, world: int, objective: nn.Module | None,
    source: PairSource | Pairs | None, model: TransformerNet | None, info: dict[str, Any],
) -> _Run:  # fmt: skip
    """Data, the starting network, optimiser, schedule, moving average and the objective."""
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
    if source is None or callable(source):
        source = PhotoPairs(config, source or config.pairs(), device, rank, world)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    if model is None:
        model = TransformerNet(config.transformer)
        if config.init and not config.resume:
            _load_initial_weights(model, Path(config.init))
    model = model.to(device).train()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(config, s) / config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    decay = config.average
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None
    # The task's objective (no style image: super-resolution), or the one given.
    objective = config.perceptual_loss(style, device=device) if objective is None else objective.to(device)
    return _Run(
        config, device, rank, world, precision, model, optimizer, scheduler, scaler, average, objective, source,
        style_sha256, info,
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
    if run.average is not None:
        run.average.load_state_dict(saved["average"])
    set_rng_state(saved["rng"], run.device)
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
    """`stlib.losses.stability_loss` for a random move of up to `stability_shift` px in each direction."""
    config = run.config
    shift = config.stability_shift
    dy, dx = torch.randint(-shift, shift + 1, (2,)).tolist()  # the global generator: resumes exactly
    with autocast(run.device, run.precision):
        return stability_loss(
            run.train_model, inputs, outputs, (dy, dx), config.stability_noise / 255, config.stability_margin,
            config.stability_border,
        )  # fmt: skip


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
    return TrainResult(
        model=model,
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


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: the model file and the training state, from one record of the run
# ----------------------------------------------------------------------------------------------------------


def _records(run: _Run, losses: Mapping[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model file's ``info`` and the training state: what both say about the run, and what each adds."""
    config, source = run.config.to_dict(), getattr(run.objective, "source", None)
    shared = {"step": run.step, "style_sha256": run.style_sha256, "world_size": run.world, "precision": run.precision}
    info = {
        **shared,
        "stlib_version": __version__,
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
        "stlib_version": __version__,
        "format": _STATE_FORMAT,
        "version": 1,
        **run.source.state_dict(),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rng_state(run.device),
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
        save_model(run.written_model, run.config.out_path(), info=info)
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

    task: str = option(
        "style", "style: a style network (Johnson et al. Sec. 4.1); superres: super-resolution (Sec. 4.2); distill: "
        "a student of a trained network (the distill command)", choices=TASKS, group=_TASK,
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
    final_lr: float = option(0.0, "cosine schedule: the rate it decays to", check="non_negative", group=_OPT)
    average: float = option(
        0.0, "decay of a moving average of the weights, written as the model (e.g. 0.998; 0: none)", check="fraction",
        metavar="DECAY", group=_OPT,
    )  # fmt: skip
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
        if self.average == 1:
            raise ValueError("TrainConfig.average must be a number in [0, 1), got 1 (the weights would never change).")
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
