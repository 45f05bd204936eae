"""Slim style networks distilled from a trained one: same style, a fraction of the computation per frame.

Knowledge distillation (G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network", 2015)
applied to the image transformation network of Johnson et al. (ECCV 2016, Sec. 3.1): a small student
`TransformerNet` (`stlib.prune.slim_config`; by default width 0.25, 5 residual blocks and a sub-pixel output, 7 % of
the teacher's FLOPs) learns to reproduce the trained teacher's picture y_t = teacher(x) of photos x. For the
student's output y_s,

    L = l1_weight * ||y_s - y_t||_1                                         (pixels in [0, 1], mean)
      + feature_weight * mean_l ||F_l(y_s) - F_l(y_t)||^2 / ||F_l(y_t)||^2   (Johnson Eq. 2, target y_t)
      + gram_weight * sum_l w_l ||G_l(y_s) - G_l(y_t)||_F^2 / ||G_l(y_t)||_F^2  (Johnson Eq. 4, target y_t)
      + objective_weight * J(x, y_s)                                         (Johnson Eq. 1: the teacher's own)

with F_l the activations of the teacher's own loss network (from its training metadata), G_l their Gram matrices
and J the teacher's objective (`teacher_objective`), also the score `benchmarks/quality.py` compares by. L1 alone
regresses a narrow student to a blurred mean of the teacher's strokes; the feature and Gram terms ask for the
statistics of the teacher's picture, which a small network can meet, and J keeps it honest to the photo and the
painting (`benchmarks/RESULTS.md`, "Perceptual distillation"). The first ``l1_steps`` use L1 alone (no VGG, ~10x
cheaper a step). The student starts from the teacher pruned (`stlib.prune`; 1.31x the teacher's objective after
4,000 steps against 1.43x after 5,641 from a random start, "Pruned start"), or from ``init``.

Whole photos (shorter side ``size``), not crops, so that the teacher's instance-norm statistics are those of the
image the student sees; the teacher's pictures are computed once and kept as 8-bit images, their VGG features after
first use up to ``feature_cache_gb``. With one photo a step the weights stay noisy; ``average`` writes a moving
average of them (Polyak & Juditsky 1992; "The teacher's objective alone, a moving average of the weights").

The student is trained by `stlib.train`'s loop like any network: the teacher's pictures are one more source of
(input, target) pairs (`TeacherPictures`) and the loss above one more objective (`StudentObjective`, the L1 warm-up
inside it); resume, the moving average, the schedule (cosine to lr / 20), checkpoints and log (``<OUT>.run/``) are
training's. The result is a normal model file whose metadata names the teacher and carries its training settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .assets import file_sha256, style_image
from .checkpoint import load_model, read_metadata
from .data import ImageFolderDataset
from .hardware import resolve_device, resolve_precision
from .images import load_tensor, to_tensor
from .options import accept_former_keywords, check_options, option, option_of
from .perceptual import ContentTargets, PerceptualLoss, feature_distance, gram_distance
from .prune import prune, slim_config
from .train import TrainConfig, train
from .transformer import TransformerConfig, TransformerNet

__all__ = ["DistillConfig", "DistillResult", "StudentObjective", "TeacherPictures", "distill", "teacher_objective"]

_PRUNE_PHOTOS = 16  # photos the teacher's activations are measured on for `prune`
_INHERITED = ("style", "style_sha256", "train_config", "vgg_weights", "dataset")  # teacher metadata kept


def distill(config: DistillConfig, callback: Callable[[int, float], Any] | None = None) -> DistillResult:
    """Train a slim student to reproduce a trained network's output (see the module docstring); resumable.

    `callback(step, loss)` runs after every step (and after that step's checkpoint); returning True stops.
    """
    config.validate()
    _refuse_a_former_state(config)
    teacher = load_model(config.teacher, task="style")
    teacher_info = read_metadata(config.teacher)["info"]
    device = resolve_device("auto")
    student_config = slim_config(teacher.config, config.width, config.num_residual_blocks, config.subpixel_output)
    photos = _photos(config)  # float (1, 3, H, W) each
    student = _starting_student(config, teacher, student_config, photos)
    objective = StudentObjective(config, teacher_info, resolve_precision(config.precision, device), device)
    source, info = TeacherPictures(teacher.to(device), photos, device, config.progress), _student_info(config, teacher)
    each_step = None if callback is None else lambda step, losses: callback(step, losses["total"])
    try:
        result = train(
            config.train_config(student_config), each_step, objective=objective, source=source, model=student, info=info
        )
    finally:
        objective.close()
    recent = result.history[-config.log_every :]
    flops = result.model.flops(480, 640) / teacher.flops(480, 640)
    return DistillResult(
        Path(config.out), result.step, _mean(recent, "l1"), _mean(recent, "total"), result.seconds,
        result.model.describe(), flops,
    )  # fmt: skip


class Picture(NamedTuple):
    """A student's target: the photo (1, 3, H, W), the teacher's picture of it, and the photo's index."""

    photo: torch.Tensor
    picture: torch.Tensor
    index: int


class TeacherPictures:
    """The distillation photos and the teacher's picture of each (computed once, kept as 8-bit images): one random
    photo a step (the global generator: a resumed run draws on), as the training loop's (input, `Picture`)."""

    epoch = 0

    def __init__(
        self, teacher: TransformerNet, photos: list[torch.Tensor], device: torch.device, progress: bool = True
    ) -> None:
        from tqdm.auto import tqdm

        self.device, self.photos, self.pictures = device, [], []
        with torch.inference_mode():
            for photo in tqdm(photos, disable=not progress, desc="teacher", unit="photo"):
                self.photos.append(_to_uint8(photo))
                self.pictures.append(_to_uint8(teacher(photo.to(device)).cpu()))

    def next(self) -> tuple[torch.Tensor, Picture]:
        """A random photo (1, 3, H, W) on the device, and its `Picture`."""
        index = int(torch.randint(len(self.photos), (1,)))
        photo = self.photos[index].to(self.device).float().div(255)
        return photo, Picture(photo, self.pictures[index].to(self.device).float().div(255), index)

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the draws come from the global generator, which the training state holds."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore (see `state_dict`)."""

    def validation(self) -> None:
        """No validation grid: the photos differ in size."""
        return None


class StudentObjective(nn.Module):
    """The student's loss (module docstring): L1 to the teacher's picture, the VGG feature and Gram terms against it
    and the teacher's own objective (`teacher_objective`), weighted; the first ``l1_steps`` steps L1 alone (no VGG).

    With a VGG term, the teacher picture's features and the photo's content targets are kept after a photo's first use
    while ``feature_cache_gb`` has room (`targets`).
    """

    def __init__(
        self, config: DistillConfig, teacher_info: Mapping[str, Any], precision: str, device: torch.device | str
    ) -> None:
        super().__init__()
        names = ("l1_weight", "feature_weight", "gram_weight", "objective_weight", "l1_steps")
        self.settings = {name: getattr(config, name) for name in names}  # a resumed run must keep them
        self.settings["teacher_sha256"] = file_sha256(config.teacher)
        self.weights = {name.removesuffix("_weight"): getattr(config, name) for name in names[:4]}
        self.imitation = config.feature_weight > 0 or config.gram_weight > 0  # a VGG pass of the teacher's picture
        self.judge = config.objective_weight > 0  # the content targets: a (truncated) VGG pass of the photo
        self.terms = ("l1", *(("feature", "gram") if self.imitation else ()), *(("objective",) * self.judge))
        self.l1_steps, self.step = config.l1_steps, 0
        self.loss = teacher_objective(config.teacher, teacher_info, precision, device) if self.terms[1:] else None
        self.source = None if self.loss is None else self.loss.source
        self.style_layers = {} if self.loss is None else dict(self.loss.style_layers)
        self.layers = [] if self.loss is None else list(dict.fromkeys([*self.loss.content_layers, *self.style_layers]))
        self.cache: dict[int, tuple[dict[str, torch.Tensor], ContentTargets]] = {}  # photo index -> its targets
        self.cache_bytes, self.cached_bytes = int(config.feature_cache_gb * 1e9), 0

    def at_step(self, step: int) -> None:
        """The L1 warm-up: no VGG term before `l1_steps`."""
        self.step = step

    def forward(self, target: Picture, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms of the student's `output` (1, 3, H, W) for `target`; the VGG terms 0 while warming up."""
        terms = {"l1": F.l1_loss(output.float(), target.picture)}
        if self.loss is not None and self.step >= self.l1_steps:
            terms |= self.vgg_terms(target.index, target.photo, output, target.picture)
        zero = torch.zeros((), device=output.device)
        terms = {name: terms.get(name, zero) for name in self.terms}
        return {**terms, "total": sum(self.weights[name] * value for name, value in terms.items())}

    def targets(
        self, index: int, photo: torch.Tensor, picture: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], ContentTargets]:
        """The teacher's picture's VGG features and the photo's content targets, kept while the cache has room."""
        if index in self.cache:
            return self.cache[index]
        wanted = {}
        if self.imitation:
            with torch.no_grad():
                wanted = {name: value for name, value in self.loss.features(picture).items() if name in self.layers}
        content = self.loss.content_targets(photo) if self.judge else {}
        tensors = [*wanted.values(), *(features for features, _scale in content.values())]
        size = sum(t.numel() * t.element_size() for t in tensors)
        if self.cached_bytes + size <= self.cache_bytes:
            self.cache[index] = wanted, content
            self.cached_bytes += size
        return self.cache.get(index, (wanted, content))

    def vgg_terms(
        self, index: int, photo: torch.Tensor, output: torch.Tensor, picture: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The VGG terms: ["feature" and "gram" against the teacher's picture,] ["objective": the teacher's total]."""
        wanted, content = self.targets(index, photo, picture)
        got = self.loss.features(output)
        terms = {}
        if self.imitation:
            terms["feature"] = feature_distance(got, wanted, self.layers)
            terms["gram"] = gram_distance(got, wanted, self.style_layers)
        if self.judge:
            terms["objective"] = self.loss.judge(output, content, feats=got)["total"]
        return terms

    def close(self) -> None:
        """Remove the loss network's hooks."""
        if self.loss is not None:
            self.loss.close()


def teacher_objective(
    teacher: str, info: Mapping[str, Any], precision: str, device: torch.device | str = "cpu"
) -> PerceptualLoss:
    """The objective the `teacher` file was trained with, from its metadata `info` (its VGG, layers, painting)."""
    alone = "distil it with L1 alone (--feature-weight 0 --gram-weight 0 --objective-weight 0)"
    if not isinstance(info.get("train_config"), Mapping):
        raise ValueError(f"'{teacher}' has no training settings in its metadata: its loss network is unknown; {alone}.")
    config = TrainConfig.from_dict(info["train_config"])
    try:
        painting = style_image(Path(config.style or "").stem)
    except KeyError:
        raise ValueError(
            f"'{teacher}' was trained on '{config.style}', which is not a painting in style_images/; {alone}."
        ) from None
    style = load_tensor(painting, size=config.style_size, device=device)  # (1, 3, H, W), as the teacher was trained
    return config.perceptual_loss(style, precision=precision)


_student = partial(option, group="student")  # the distillation's own options, in their help group


_loop = partial(option_of, TrainConfig)  # the training loop's options, with the distillation recipe's defaults


@dataclass
class DistillConfig:
    """Settings of `distill`; the defaults are the first stage of the shipped slim network's recipe.

    The training loop's settings (``data``, ``out``, ``steps``, ``lr`` ...) are `TrainConfig`'s options, declared
    there once (their limits and flags) and given the distillation recipe's defaults here.
    """

    teacher: str = option(help="the trained network (.safetensors)", positional=True, metavar="FILE")
    data: str = _loop("data", help="a folder of photos (any tree)")
    out: str = _loop("out", help="the student's model file (.safetensors)", flag=("-o", "--out", "--output"))
    width: float = _student(0.25, "student channel multiplier: 8/16/32 channels at 0.25", check="positive")
    num_residual_blocks: int = _student(5, "student residual blocks", flag="--blocks")
    subpixel_output: bool = _student(True, "student: a 5x5 sub-pixel output conv at half resolution (faster)")
    size: int = _loop("size", 192, help="shorter photo side")
    limit: int | None = _loop("limit", 1000, help="use at most N photos (~0.3 MB each in memory at 192 px)")
    l1_weight: float = _student(1.0, "weight of the pixel term |student - teacher|", check="non_negative")
    feature_weight: float = _student(
        1.0, "weight of the VGG feature term (all VGG weights 0: no VGG)", check="non_negative"
    )
    gram_weight: float = _student(10.0, "weight of the Gram-matrix (texture) term", check="non_negative")
    objective_weight: float = _student(1.0, "weight of the teacher's own objective", check="non_negative")
    start: str = _student(
        "pruned", "the student's first weights: pruned from the teacher", choices=("pruned", "random")
    )
    init: str | None = _loop("init", None, help="start the student from this model file (instead of --start)")
    l1_steps: int = _student(
        500, "first N steps with L1 alone (no VGG: ~10x cheaper)", check="non_negative", metavar="N"
    )
    average: float = _loop("average", 0.0)
    feature_cache_gb: float = _student(
        4.0, "memory (GB) for the teacher pictures' VGG features, kept after first use (0: recompute each step)",
        check="non_negative", metavar="GB",
    )  # fmt: skip
    precision: str = _loop("precision", "auto")
    steps: int = _loop("steps", 2600, help="optimiser steps")
    lr: float = _loop("lr", 2e-3, help="Adam's learning rate (cosine decay to lr / 20)")
    seed: int = _loop("seed", 0, help="student initialisation and photo order")
    checkpoint_every: int = _loop("checkpoint_every", 250)
    log_every: int = _loop("log_every", 50)
    resume: bool = _loop("resume", False, help="continue from OUT's saved state (NAME.run/state.pt)")
    progress: bool = _loop("progress", True)

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
        if Path(self.out).suffix != ".safetensors":
            raise ValueError(f"Cannot write the student to '{self.out}': the file name must end in .safetensors.")
        if Path(self.out).resolve() == Path(self.teacher).resolve():
            raise ValueError(f"The student would overwrite its teacher '{self.teacher}'; choose another output.")

    def state_path(self) -> Path:
        """Where the resumable training state is kept: ``NAME.run/state.pt`` beside the output (as `stlib.train`)."""
        out = Path(self.out)
        return out.with_name(f"{out.stem}.run") / "state.pt"

    def train_config(self, student: TransformerConfig) -> TrainConfig:
        """The training loop's settings for a `student` of this architecture: one photo a step, cosine to lr / 20."""
        return TrainConfig(
            task="distill", data=self.data, out=self.out, size=self.size, limit=self.limit, batch_size=1,
            steps=self.steps, lr=self.lr, schedule="cosine", final_lr=self.lr / 20, seed=self.seed,
            average=self.average, precision=self.precision, checkpoint_every=self.checkpoint_every,
            log_every=self.log_every, val_every=0, resume=self.resume, progress=self.progress, transformer=student,
        )  # fmt: skip


accept_former_keywords(DistillConfig, {"output": "out"})  # as before the student's file was named as in TrainConfig


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
    """(1, 3, H, W) in [0, 1] -> uint8, the form photos and pictures are kept in (a quarter of float32)."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def _starting_student(
    config: DistillConfig, teacher: TransformerNet, student_config: TransformerConfig, photos: list[torch.Tensor]
) -> TransformerNet:
    """The student before its first step: pruned from the teacher, loaded from --init, or random (seeded)."""
    torch.manual_seed(config.seed)
    student = TransformerNet(student_config)
    if config.resume:
        return student  # the saved state replaces the weights
    if config.init is not None:
        start = load_model(config.init, task="style")
        if start.config != student.config:
            raise ValueError(
                f"Cannot start the student from '{config.init}': it is {start.describe()}, the student "
                f"{student.describe()}."
            )
        student.load_state_dict(start.state_dict())
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


def _student_info(config: DistillConfig, teacher: TransformerNet) -> dict[str, Any]:
    """The student file's metadata beside training's: its teacher, and the teacher's training settings (the objective
    the student is scored with, benchmarks/quality.py)."""
    teacher_info = read_metadata(config.teacher)["info"]
    return {
        "kind": "distilled",
        "distilled_from": os.path.basename(config.teacher),
        "teacher_sha256": file_sha256(config.teacher),
        "teacher_transformer": teacher.config_dict(),
        "distill_config": asdict(config),
        **{key: teacher_info[key] for key in _INHERITED if key in teacher_info},
    }


def _refuse_a_former_state(config: DistillConfig) -> None:
    """With ``resume``: one sentence when only an earlier stlib's state (``NAME.distill.pt``) is there."""
    out = Path(config.out)
    former = out.with_name(out.stem + ".distill.pt")
    if config.resume and not config.state_path().exists() and former.exists():
        raise ValueError(
            f"Cannot resume from '{former}': it is an earlier stlib's distillation state, which this version does "
            f"not read; start again without --resume (--init {out} starts from its weights)."
        )


def _mean(history: list[dict[str, float]], key: str) -> float:
    """The mean of one logged term over `history` (NaN when empty)."""
    return sum(h[key] for h in history) / len(history) if history else float("nan")
