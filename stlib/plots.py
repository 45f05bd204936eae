"""Figures for looking inside the loss network: feature maps, Gram matrices and loss curves.

Every function builds and returns a matplotlib `Figure` (nothing is shown), so a notebook can save it with
`stlib.images.save_figure` and display it; `show` does both and then closes the figure, like
`stlib.images.show_images`. Tensors may live on any device and may require grad: they are detached and
copied to the CPU first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from .images import save_figure

__all__ = ["LiveLosses", "feature_maps", "gram_heatmaps", "loss_curves", "show", "strongest_channels"]


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
