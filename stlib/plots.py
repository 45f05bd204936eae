"""Figures of the course: image grids, feature maps, Gram matrices and loss curves, and saving them.

Every function builds and returns a matplotlib `Figure` (nothing is shown), so a notebook can save it with
`save_figure` and display it; `show` does both and then closes the figure, like `show_images` for a grid of
images. The rest of the package never imports matplotlib (training, inference and the command line run without it).
Tensors may live on any device and may require grad: they are detached and copied to the CPU first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .images import ImageError, as_rgb, atomic_write

__all__ = [
    "QUICK_MARK",
    "LiveLosses",
    "feature_maps",
    "gram_heatmaps",
    "image_grid",
    "loss_curves",
    "mark_quick",
    "save_figure",
    "show",
    "show_images",
    "strongest_channels",
]


QUICK_MARK = "QUICK mode (STLIB_QUICK=1): tiny sizes, few steps - not representative"
"""The label that `save_figure` puts on figures made in the course's QUICK mode."""


def mark_quick(fig: matplotlib.figure.Figure) -> bool:
    """Label `fig` as made in QUICK mode when ``STLIB_QUICK=1`` (once); returns whether it carries the label."""
    if os.environ.get("STLIB_QUICK") != "1":
        return False
    if not any(text.get_text() == QUICK_MARK for text in fig.texts):
        fig.text(0.01, 0.005, QUICK_MARK, ha="left", va="bottom", fontsize=7, color="white",
                 bbox={"facecolor": "crimson", "alpha": 0.85, "pad": 2, "edgecolor": "none"})  # fmt: skip
    return True


def save_figure(fig: matplotlib.figure.Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Atomically save a matplotlib figure; the format comes from the file suffix (.png, .pdf, .svg, ...).

    In the course's QUICK mode (``STLIB_QUICK=1``: tiny sizes, a few steps) the figure is labelled as such first
    (`mark_quick`), so that nobody takes a 64 px test run for a result.
    """
    path = Path(path)
    figure_format = path.suffix.lower().lstrip(".")
    if figure_format not in fig.canvas.get_supported_filetypes():
        raise ImageError(f"Cannot save figure '{path}': unknown or unsupported file suffix '{path.suffix}'.")
    mark_quick(fig)
    return atomic_write(path, lambda file: fig.savefig(file, format=figure_format, dpi=dpi, bbox_inches="tight"))


def image_grid(
    images: Sequence[torch.Tensor | Image.Image],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    cell_size: float = 3.0,
    suptitle: str | None = None,
) -> matplotlib.figure.Figure:
    """Lay out images (tensors (3, H, W) / (1, 3, H, W) or PIL images) in a titled grid; return the Figure."""
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    ncols = min(len(images), 4) if ncols is None else ncols
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    nrows = math.ceil(len(images) / ncols)
    pictures = [as_rgb(image) for image in images]  # convert first: bad inputs fail before plotting

    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_size * ncols, cell_size * nrows), squeeze=False)
    axes = axes.flatten()  # (nrows * ncols,)
    for i, picture in enumerate(pictures):
        axes[i].imshow(picture)
        axes[i].axis("off")
        if titles is not None:
            axes[i].set_title(titles[i])
    for ax in axes[len(pictures) :]:
        ax.remove()  # empty cells in the last row
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_images(
    images: Sequence[torch.Tensor | Image.Image],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    cell_size: float = 3.0,
    suptitle: str | None = None,
    save: str | os.PathLike | None = None,
) -> None:
    """Show images in a grid (see `image_grid`), optionally saving the figure to `save` first."""
    fig = image_grid(images, titles=titles, ncols=ncols, cell_size=cell_size, suptitle=suptitle)
    if save is not None:
        save_figure(fig, save)
    plt.show()
    plt.close(fig)  # shown once; closing keeps long notebook runs from piling up figures


def _first_image(features: torch.Tensor, name: str) -> torch.Tensor:
    """The (C, H, W) activations of the first image of a (B, C, H, W) or (C, H, W) tensor, as float32 on CPU."""
    if features.dim() == 4:
        features = features[0]
    if features.dim() != 3:
        raise ValueError(f"{name}: expected (B, C, H, W) or (C, H, W) features, got shape {tuple(features.shape)}.")
    return features.detach().to(device="cpu", dtype=torch.float32)


def strongest_channels(features: torch.Tensor, n: int) -> list[int]:
    """Indices of the `n` channels with the largest mean activation (first image of a batch), strongest first."""
    fmap = _first_image(features, "strongest_channels")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    order = fmap.mean(dim=(1, 2)).argsort(descending=True)  # (C,)
    return order[: min(n, fmap.shape[0])].tolist()


def feature_maps(
    features: Mapping[str, torch.Tensor],
    n_channels: int = 16,
    cell_size: float = 1.0,
    cmap: str = "viridis",
    suptitle: str | None = None,
) -> matplotlib.figure.Figure:
    """One row per layer showing its `n_channels` most active channels, each scaled to its own min..max."""
    if not features:
        raise ValueError("feature_maps needs at least one layer.")
    maps = {name: _first_image(f, name) for name, f in features.items()}  # {layer: (C, H, W)}
    ncols = min(n_channels, max(f.shape[0] for f in maps.values()))
    height, width = next(iter(maps.values())).shape[1:]
    aspect = height / width
    fig, axes = plt.subplots(
        len(maps), ncols, figsize=(cell_size * ncols, cell_size * aspect * len(maps) + 0.3), squeeze=False
    )
    for row, (name, fmap) in enumerate(maps.items()):
        channels = strongest_channels(fmap, ncols)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col >= len(channels):
                continue
            channel = fmap[channels[col]].numpy()  # (H, W)
            low, high = float(channel.min()), float(channel.max())
            ax.imshow(channel, cmap=cmap, vmin=low, vmax=high if high > low else low + 1.0)
            ax.set_title(f"#{channels[col]}", fontsize=6, pad=1)
        c, h, w = fmap.shape
        axes[row][0].set_ylabel(f"{name}\n{c}×{h}×{w}", fontsize=7, rotation=0, ha="right", va="center")
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout(pad=0.3, w_pad=0.1, h_pad=0.6)
    return fig


def gram_heatmaps(
    grams: Mapping[str, torch.Tensor],
    cell_size: float = 3.5,
    cmap: str = "magma",
    shared_scale: bool = True,
    suptitle: str | None = None,
) -> matplotlib.figure.Figure:
    """Heatmaps of (C, C) or (1, C, C) Gram matrices side by side, titled by key, on one colour scale by default."""
    if not grams:
        raise ValueError("gram_heatmaps needs at least one Gram matrix.")
    mats = {}
    for title, gram in grams.items():
        g = gram.detach().to(device="cpu", dtype=torch.float32)
        g = g[0] if g.dim() == 3 else g
        if g.dim() != 2 or g.shape[0] != g.shape[1]:
            raise ValueError(f"{title}: expected a (C, C) or (1, C, C) Gram matrix, got shape {tuple(gram.shape)}.")
        mats[title] = g.numpy()
    low = min(float(m.min()) for m in mats.values())
    high = max(float(m.max()) for m in mats.values())
    fig, axes = plt.subplots(1, len(mats), figsize=(cell_size * len(mats) + 0.8, cell_size), squeeze=False)
    for ax, (title, mat) in zip(axes[0], mats.items(), strict=True):
        vmin, vmax = (low, high) if shared_scale else (float(mat.min()), float(mat.max()))
        shown = ax.imshow(mat, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("channel")
        ax.set_ylabel("channel")
        if not shared_scale:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if shared_scale:
        fig.colorbar(shown, ax=list(axes[0]), fraction=0.046 / len(mats), pad=0.02)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def loss_curves(
    curves: Mapping[str, Sequence[float]],
    log: bool = True,
    xlabel: str = "iteration",
    ylabel: str = "loss",
    title: str | None = None,
    size: tuple[float, float] = (6.0, 3.5),
) -> matplotlib.figure.Figure:
    """Loss against iteration, one line per key (e.g. ``{layer: result.losses("content")}``).

    The y axis is logarithmic (``log=True``) when the values are positive and span a decade or more.
    """
    if not curves:
        raise ValueError("loss_curves needs at least one curve.")
    fig, ax = plt.subplots(figsize=size)
    for label, values in curves.items():
        ys = np.asarray(values, dtype=np.float64)
        ax.plot(np.arange(1, len(ys) + 1), ys, label=label)
    values = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in curves.values()])
    # Log scale only where it helps: positive values spanning at least a decade (within one decade matplotlib
    # labels only crowded minor ticks, and a linear axis reads better).
    if log and values.size and np.all(values > 0) and values.max() >= 10 * values.min():
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


class LiveLosses:
    """A training callback (``train(config, callback=LiveLosses(...))``) that redraws the loss curves as it goes.

    It keeps the values of `keys` for every step and redraws every `every` steps and at step `last`, in place,
    in a notebook output (outside a notebook it only keeps the values). It never asks training to stop.
    """

    def __init__(
        self,
        keys: Sequence[str] = ("content", "style", "total"),
        every: int = 50,
        last: int | None = None,
        title: str = "training",
        size: tuple[float, float] = (7.0, 3.2),
    ) -> None:
        from IPython.display import display

        self.values: dict[str, list[float]] = {key: [] for key in keys}
        self.every, self.last, self.title = max(1, every), last, title
        self.fig, self.ax = plt.subplots(figsize=size)
        self.handle = display(self.fig, display_id=True)  # None outside IPython
        plt.close(self.fig)

    def __call__(self, step: int, losses: Mapping[str, float]) -> None:
        """Record one step's losses; redraw every `every` steps and at the last one."""
        for key, values in self.values.items():
            values.append(losses[key])
        if step % self.every == 0 or step == self.last:
            self.redraw()

    def redraw(self) -> None:
        """Draw every curve so far (log scale) and update the notebook output."""
        self.ax.clear()
        for key, values in self.values.items():
            self.ax.plot(values, label=key)
        self.ax.set(xlabel="step (this session)", ylabel="loss", yscale="log", title=self.title)
        self.ax.legend()
        if self.handle is not None:
            self.handle.update(self.fig)


def show(fig: matplotlib.figure.Figure, save: str | os.PathLike | None = None) -> None:
    """Show a figure (inline in a notebook), saving it to `save` first if given, then close it."""
    if save is not None:
        save_figure(fig, save)
    plt.show()
    plt.close(fig)
