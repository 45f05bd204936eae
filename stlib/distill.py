"""Slim style networks distilled from a trained one: same style, a fraction of the computation per frame.

Knowledge distillation (G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
2015) applied to the image transformation network of Johnson et al. (ECCV 2016, Sec. 3.1): a small student
`TransformerNet` (`slim_config`: width 0.25 and 3 residual blocks, 7 % of the teacher's FLOPs) learns to
reproduce the trained teacher's output pixel by pixel,

    L(student) = mean over photos x of  || student(x) - teacher(x) ||_1            (outputs in [0, 1])

No loss network (VGG) is needed: the teacher already encodes the perceptual objective, and one L1 step costs
the student's forward and backward pass only, because the teacher's outputs are computed once per photo and
cached in memory as 8-bit images, like the photos (`DistillConfig.size` sets the photo size, whole photos
rather than crops, so that the teacher's instance-norm statistics are those of the image the student sees;
`DistillConfig.limit` caps the number of photos, 1000 by default, about 1.3 GB at 384 px). The student copies
the teacher's normalisation, upsampling, output and ``input_skip`` options (with ``input_skip`` it starts as the
identity).
The result is a normal model file: `stlib.checkpoint.load_model`, the ``stylize`` / ``video`` commands and the
webcam widget use it like any other; its metadata names the teacher and carries the teacher's training
configuration, so `benchmarks/quality.py` can score it with the teacher's own perceptual objective.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stlib import __version__

from .assets import file_sha256
from .checkpoint import CheckpointError, load_model, read_metadata, read_state, save_model, write_state
from .images import ImageError, list_images, load_image, to_tensor
from .options import option
from .transformer import TransformerConfig, TransformerNet

__all__ = ["DistillConfig", "DistillResult", "distill", "slim_config"]

_INHERITED = ("style", "style_sha256", "train_config", "vgg_weights", "dataset")  # teacher metadata kept


def slim_config(teacher: TransformerConfig, width: float = 0.25, num_residual_blocks: int = 3) -> TransformerConfig:
    """The student architecture for `teacher`: its options, with `width` and `num_residual_blocks` changed."""
    return TransformerConfig(**{**asdict(teacher), "width": width, "num_residual_blocks": num_residual_blocks})


@dataclass
class DistillConfig:
    """Settings of `distill`; the defaults make the slim networks shipped in ``checkpoints/``."""

    teacher: str = option(help="the trained network (.safetensors)", positional=True, metavar="FILE")
    data: str = option(help="a folder of photos (any tree)", metavar="DIR")
    output: str = option(help="the student's model file (.safetensors)", flag=("-o", "--output"), metavar="OUT")
    width: float = option(0.25, "student channel multiplier: 8/16/32 channels at 0.25", check="positive")
    num_residual_blocks: int = option(3, "student residual blocks", flag="--blocks")
    size: int = option(384, "shorter photo side", check="positive")
    limit: int | None = option(
        1000, "use at most N photos (cached in memory as uint8: ~1.3 MB each at 384 px)", check="positive", metavar="N"
    )
    steps: int = option(3000, "optimiser steps", check="positive")
    lr: float = option(2e-3, "Adam learning rate (cosine decay to lr / 20)", check="positive")
    seed: int = option(0, "student initialisation and photo order")
    checkpoint_every: int = option(250, "model file + state every N steps", check="positive")
    log_every: int = option(50, "progress-bar update every N steps", check="positive")
    resume: bool = option(False, "continue from OUT's saved state (NAME.distill.pt)")
    progress: bool = option(True, "no progress bar", flag="--quiet")

    def validate(self) -> None:
        """Raise ValueError (one sentence naming the setting) for settings that cannot work."""
        for name in ("size", "steps", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DistillConfig.{name} must be a positive integer, got {value!r}.")
        if self.size < 16:
            raise ValueError(f"DistillConfig.size must be at least 16 pixels, got {self.size}.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"DistillConfig.lr must be a positive number, got {self.lr!r}.")
        if Path(self.output).suffix != ".safetensors":
            raise ValueError(f"Cannot write the student to '{self.output}': the file name must end in .safetensors.")
        if Path(self.output).resolve() == Path(self.teacher).resolve():
            raise ValueError(f"The student would overwrite its teacher '{self.teacher}'; choose another output.")

    def state_path(self) -> Path:
        """Where the resumable training state is kept: beside the output, ``NAME.distill.pt``."""
        out = Path(self.output)
        return out.with_name(out.stem + ".distill.pt")


@dataclass(frozen=True)
class DistillResult:
    """What `distill` did: the student file, its size and cost relative to the teacher, the final L1 loss."""

    path: Path
    steps: int
    l1: float  # mean absolute difference from the teacher over the last `log_every` steps, in [0, 1] units
    seconds: float
    student: str  # TransformerNet.describe() of the student
    flops_ratio: float  # student / teacher FLOPs at 640 x 480


def _photos(config: DistillConfig) -> list[torch.Tensor]:
    """The distillation photos, each (1, 3, H, W) float with the shorter side `size`; unreadable files skipped."""
    files = list_images(config.data)[: config.limit]
    photos = []
    for path in files:
        try:
            image = load_image(path)
        except ImageError:
            continue
        scale = config.size / min(image.size)
        photos.append(to_tensor(image.resize((round(image.width * scale), round(image.height * scale)))))
    if not photos:
        raise ValueError(f"None of the image files in '{config.data}' could be read.")
    return photos


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> uint8, the form photos and targets are cached in (a quarter of float32)."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def _from_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255)


def _lr(config: DistillConfig, step: int) -> float:
    """Cosine decay from `lr` to `lr / 20` over the run."""
    floor = config.lr / 20
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))


_NOT_SHAPING = ("resume", "progress", "checkpoint_every", "log_every")  # may change when a run is resumed


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

    `callback(step, l1)` runs after every step (and after that step's checkpoint); returning True stops.
    """
    from tqdm.auto import tqdm

    config.validate()
    teacher = load_model(config.teacher, task="style")
    teacher_info = read_metadata(config.teacher)["info"]
    teacher_sha256 = file_sha256(config.teacher)  # once: the file the photos' targets come from
    student_config = slim_config(teacher.config, config.width, config.num_residual_blocks)
    torch.manual_seed(config.seed)
    student = TransformerNet(student_config)
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    step, state_path = 0, config.state_path()
    if config.resume:
        state = _load_state(state_path)
        if _shaping(state["config"]) != _shaping(asdict(config)):
            raise ValueError(f"Cannot resume from '{state_path}': it was made with other distillation settings.")
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["rng"])

    photos, targets = [], []  # uint8 (1, 3, H, W) each: the photo and the teacher's answer, computed once
    with torch.inference_mode():
        for photo in tqdm(_photos(config), disable=not config.progress, desc="teacher", unit="photo"):
            photos.append(_to_uint8(photo))
            targets.append(_to_uint8(teacher(photo)))

    student.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, disable=not config.progress, desc="distil", unit="step")
    while step < config.steps:
        index = int(torch.randint(len(photos), (1,)))
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        loss = F.l1_loss(student(_from_uint8(photos[index])), _from_uint8(targets[index]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses = (losses + [loss.item()])[-config.log_every :]
        bar.update(1)
        if step % config.log_every == 0:
            bar.set_postfix(l1_levels=f"{255 * sum(losses) / len(losses):.2f}")
        saved = step % config.checkpoint_every == 0 or step == config.steps
        if saved:
            _checkpoint(student, optimizer, config, teacher, teacher_info, teacher_sha256, step, losses)
        if callback is not None and callback(step, losses[-1]):  # after the checkpoint; True stops the run
            if not saved:
                _checkpoint(student, optimizer, config, teacher, teacher_info, teacher_sha256, step, losses)
            break
    bar.close()
    student.eval()
    return DistillResult(
        Path(config.output),
        step,
        sum(losses) / max(1, len(losses)),
        time.perf_counter() - start,
        student.describe(),
        student.flops(480, 640) / teacher.flops(480, 640),
    )


def _checkpoint(
    student: TransformerNet,
    optimizer: torch.optim.Optimizer,
    config: DistillConfig,
    teacher: TransformerNet,
    teacher_info: dict[str, Any],
    teacher_sha256: str,
    step: int,
    losses: list[float],
) -> None:
    """Write the student's model file (metadata naming its teacher) and the resumable state, each atomically."""
    was_training = student.training
    student.eval()
    info = {
        "kind": "distilled",
        "distilled_from": os.path.basename(config.teacher),
        "teacher_sha256": teacher_sha256,
        "teacher_transformer": teacher.config_dict(),
        "distill_config": asdict(config),
        "step": step,
        "l1": sum(losses) / max(1, len(losses)),
        "stlib_version": __version__,
        # the teacher's training settings: the objective the student is scored with (benchmarks/quality.py)
        **{key: teacher_info[key] for key in _INHERITED if key in teacher_info},
    }
    save_model(student, config.output, info=info)
    student.train(was_training)
    state = {"model": student.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    write_state(config.state_path(), {**state, "rng": torch.get_rng_state(), "config": asdict(config)})
