"""The record of a training run: the progress bar, ``train.csv``, validation grids and their animation.

Training (`stlib.train`, Johnson et al. ECCV 2016, Sec. 4.1) runs for hours; what a learner looks at meanwhile is
written here, beside the loop rather than inside it: one CSV row of means every ``log_every`` steps (the loss terms,
the learning rate, images/s), a grid of the network's outputs on fixed validation photos every ``val_every`` steps
(``val/step_NNNNNN.jpg``) and ``evolution.gif`` of those grids. A resumed run keeps the rows up to the step it
resumed from (a killed process may have logged past its last checkpoint).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .images import atomic_write, save_gif, save_image

__all__ = ["RunLog", "ValidationGrids", "evolution_gif"]


class RunLog:
    """The progress bar and ``train.csv`` (None: no file): one row of means per `every` steps, times from the start.

    `terms` are the logged values of each step (the loss terms and "lr"); with `resume_step` the CSV keeps the rows
    up to that step, otherwise it starts empty.
    """

    def __init__(
        self, path: Path | None, terms: Sequence[str], every: int, steps: int, start: int, images_per_step: int,
        resume_step: int | None = None, progress: bool = True,
    ) -> None:  # fmt: skip
        from tqdm.auto import tqdm

        self.path, self.keys, self.every, self.steps = path, ("total", *terms), every, steps
        self.fields = ("step", "epoch", *self.keys, "images_per_s", "seconds")
        self.images_per_step = images_per_step
        if path is not None:
            self._rewrite(resume_step)
        self.bar = tqdm(total=steps, initial=start, disable=not progress, unit="step")
        self.started = self.interval_start = time.perf_counter()
        self.sums: dict[str, float] = {}
        self.count = 0

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
        """Seconds since the log started."""
        return time.perf_counter() - self.started

    def record(self, step: int, epoch: int, entry: Mapping[str, float], force: bool = False) -> None:
        """Add one step; write a row of means every `every` steps, at the last step, or when `force`."""
        for key in self.keys:
            self.sums[key] = self.sums.get(key, 0.0) + entry[key]
        self.count += 1
        self.bar.update(1)
        if not (step % self.every == 0 or step == self.steps or force):
            return
        now = time.perf_counter()
        row = {k: v / self.count for k, v in self.sums.items()}
        row |= {"step": step, "epoch": epoch, "seconds": round(now - self.started, 3)}
        row["images_per_s"] = round(self.count * self.images_per_step / max(now - self.interval_start, 1e-9), 3)
        if self.path is not None:
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow({k: row[k] for k in self.fields})
        self.bar.set_postfix(loss=f"{row['total']:.4g}", img_s=f"{row['images_per_s']:.1f}", refresh=False)
        self.sums, self.count, self.interval_start = {}, 0, now

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()


class ValidationGrids:
    """A grid of the network's outputs on fixed validation `inputs` (N, 3, s, s) every `every` steps, in `folder`.

    A new run (`step` 0) also writes the `photos` (N, 3, S, S) as ``originals.jpg`` and the untrained network's grid.
    """

    def __init__(
        self, model: nn.Module, folder: Path, every: int, photos: torch.Tensor, inputs: torch.Tensor, step: int
    ) -> None:
        self.model, self.folder, self.every, self.inputs = model, folder, every, inputs
        if step == 0:
            save_image(torch.cat(list(photos), dim=2), folder / "originals.jpg")
            self.maybe_save(0)

    def maybe_save(self, step: int) -> None:
        """Save ``step_NNNNNN.jpg`` when `step` is a validation step."""
        if step % self.every == 0:
            save_grid(self.model, self.inputs, self.folder / f"step_{step:06d}.jpg")

    def gif(self, path: Path) -> Path | None:
        """`evolution_gif` of the grids saved so far."""
        return evolution_gif(sorted(self.folder.glob("step_*.jpg")), path)


def save_grid(model: nn.Module, inputs: torch.Tensor, path: Path) -> Path:
    """The network's outputs for `inputs` (N, 3, s, s), one at a time in eval mode, side by side (3, S, N*S)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        outputs = torch.cat([model(x[None].to(device)).float().cpu() for x in inputs])  # (N, 3, S, S)
    model.train(was_training)
    return save_image(torch.cat(list(outputs), dim=2), path)  # (3, S, N*S)


def evolution_gif(frames: list[Path], path: Path, max_frames: int = 100) -> Path | None:
    """An animated GIF of image files (at most `max_frames`, evenly spaced, at most 1024 px wide, the last held);
    None for fewer than two."""
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
    return save_gif(images, path, duration_ms=150, hold_last_ms=1500)
