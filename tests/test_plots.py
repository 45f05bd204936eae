"""Figures of feature maps, Gram matrices and loss curves: layout, values shown, saving and closing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: no windows during tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from stlib import plots  # noqa: E402
from stlib.images import ImageError  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_strongest_channels_orders_by_mean_activation():
    fmap = torch.zeros(1, 4, 3, 3)
    fmap[0, 2] = 5.0
    fmap[0, 0] = 1.0
    fmap[0, 3] = 2.0
    assert plots.strongest_channels(fmap, 3) == [2, 3, 0]
    assert plots.strongest_channels(fmap[0], 10) == [2, 3, 0, 1]  # (C, H, W) works; n is capped at C
    with pytest.raises(ValueError, match="at least 1"):
        plots.strongest_channels(fmap, 0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        plots.strongest_channels(torch.zeros(3, 3), 1)


def test_feature_maps_one_row_per_layer():
    feats = {"relu1_2": torch.rand(2, 8, 16, 20), "relu2_2": torch.rand(2, 16, 8, 10, requires_grad=True)}
    fig = plots.feature_maps(feats, n_channels=6, suptitle="maps")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 6
    assert "relu1_2" in fig.axes[0].get_ylabel() and "8×16×20" in fig.axes[0].get_ylabel()
    assert "relu2_2" in fig.axes[6].get_ylabel()
    shown = np.asarray(fig.axes[0].get_images()[0].get_array())
    assert shown.shape == (16, 20)  # the first image of the batch, one channel


def test_feature_maps_shows_the_strongest_channel_first_and_handles_flat_channels():
    fmap = torch.zeros(1, 3, 4, 4)
    fmap[0, 1] = torch.arange(16.0).view(4, 4)
    fig = plots.feature_maps({"conv1_1": fmap}, n_channels=8)
    assert len(fig.axes) == 3  # columns capped at the number of channels
    assert fig.axes[0].get_title() == "#1"
    np.testing.assert_allclose(np.asarray(fig.axes[0].get_images()[0].get_array()), fmap[0, 1].numpy())
    assert len(fig.axes[2].get_images()) == 1  # an all-zero channel is still drawn, without a division by zero


def test_feature_maps_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one layer"):
        plots.feature_maps({})
    with pytest.raises(ValueError, match="relu1_1"):
        plots.feature_maps({"relu1_1": torch.rand(4, 4)})


def test_gram_heatmaps_share_one_colour_scale():
    a, b = torch.rand(1, 5, 5), 3 * torch.rand(5, 5)
    fig = plots.gram_heatmaps({"painting": a, "photo": b})
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert [im.axes.get_title() for im in images] == ["painting", "photo"]
    assert images[0].get_clim() == images[1].get_clim()
    assert images[0].get_clim() == pytest.approx((float(min(a.min(), b.min())), float(max(a.max(), b.max()))))
    own = plots.gram_heatmaps({"painting": a, "photo": b}, shared_scale=False)
    clims = [ax.get_images()[0].get_clim() for ax in own.axes if ax.get_images()]
    assert clims[1] == pytest.approx((float(b.min()), float(b.max())))


def test_gram_heatmaps_rejects_non_square():
    with pytest.raises(ValueError, match="Gram"):
        plots.gram_heatmaps({"x": torch.rand(3, 4)})
    with pytest.raises(ValueError, match="at least one"):
        plots.gram_heatmaps({})


def test_loss_curves_plot_every_series_on_a_log_scale():
    fig = plots.loss_curves({"conv1_2": [1.0, 0.1, 0.01], "conv5_2": [1.0, 0.5]}, title="content")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["conv1_2", "conv5_2"]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [1, 2, 3])
    narrow = plots.loss_curves({"x": [0.6, 0.5, 0.45]})  # within a decade: a linear axis with readable ticks
    assert narrow.axes[0].get_yscale() == "linear"
    linear = plots.loss_curves({"x": [1.0, 0.0, -1.0]})  # non-positive values cannot go on a log axis
    assert linear.axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="at least one"):
        plots.loss_curves({})


def test_show_saves_then_closes(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(plots.plt, "show", lambda: shown.append(True))
    fig = plots.loss_curves({"x": [1.0, 0.5]})
    assert plots.show(fig, save=tmp_path / "curve.png") is None
    assert shown == [True]
    assert (tmp_path / "curve.png").is_file()
    assert not plt.fignum_exists(fig.number)


def test_live_losses_keeps_every_step_and_redraws_on_its_schedule():
    live = plots.LiveLosses(("content", "total"), every=3, last=4, title="run")
    draws = []
    live.redraw = lambda: draws.append(len(live.values["total"]))  # record when it would redraw
    for step in range(1, 5):
        assert live(step, {"content": 1.0 / step, "style": 9.0, "total": 2.0 / step}) is None  # never stops
    assert live.values == {"content": [1.0, 0.5, 1 / 3, 0.25], "total": [2.0, 1.0, 2 / 3, 0.5]}
    assert draws == [3, 4]  # step 3 (every 3) and the last step
    del live.redraw
    live.redraw()  # outside a notebook: draws the figure, nothing to update
    assert [line.get_label() for line in live.ax.get_lines()] == ["content", "total"]
    assert live.ax.get_yscale() == "log" and live.ax.get_title() == "run"


# ----------------------------------------------------------------------------------------------------
# image_grid / show_images / save_figure
# ----------------------------------------------------------------------------------------------------


def test_save_figure_writes_a_readable_image(tmp_path):
    fig = plots.image_grid([torch.rand(3, 8, 8)], titles=["noise"])
    path = plots.save_figure(fig, tmp_path / "figs" / "grid.png", dpi=50)
    assert path == tmp_path / "figs" / "grid.png"
    with Image.open(path) as reopened:
        assert reopened.format == "PNG"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
    assert plots.save_figure(fig, tmp_path / "grid.pdf").read_bytes().startswith(b"%PDF")


def test_quick_mode_figures_are_labelled_once_and_others_not(tmp_path, monkeypatch):
    monkeypatch.delenv("STLIB_QUICK", raising=False)
    fig = plots.image_grid([torch.rand(3, 8, 8)])
    plots.save_figure(fig, tmp_path / "full.png")
    assert not any(t.get_text() == plots.QUICK_MARK for t in fig.texts)
    monkeypatch.setenv("STLIB_QUICK", "1")
    plots.save_figure(fig, tmp_path / "quick.png")
    plots.save_figure(fig, tmp_path / "quick_again.png")
    assert [t.get_text() for t in fig.texts].count(plots.QUICK_MARK) == 1
    assert (tmp_path / "quick.png").read_bytes() != (tmp_path / "full.png").read_bytes()  # the label is drawn


def test_save_figure_unknown_suffix_raises(tmp_path):
    fig = plots.image_grid([torch.rand(3, 8, 8)])
    with pytest.raises(ImageError, match="grid.xyz"):
        plots.save_figure(fig, tmp_path / "grid.xyz")


def test_failed_figure_save_leaves_existing_file_untouched(tmp_path, monkeypatch):
    fig = plots.image_grid([torch.rand(3, 8, 8)])
    path = plots.save_figure(fig, tmp_path / "fig.png")
    before = path.read_bytes()

    def failing_savefig(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(fig, "savefig", failing_savefig)
    with pytest.raises(RuntimeError):
        plots.save_figure(fig, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_image_grid_layout_and_titles():
    pictures = [
        torch.rand(3, 8, 8),
        torch.rand(1, 3, 8, 6),
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 5, 3), dtype=np.uint8)),
        Image.new("L", (4, 4)),
        torch.rand(3, 6, 6),
    ]
    titles = ["a", "b", "c", "d", "e"]
    fig = plots.image_grid(pictures, titles=titles, suptitle="five")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # 2 rows x 4 columns, the 3 empty cells removed
    assert [ax.get_title() for ax in fig.axes] == titles
    assert all(not ax.axison for ax in fig.axes)
    assert fig.get_suptitle() == "five"
    width, height = fig.get_size_inches()
    assert (width, height) == (12.0, 6.0)  # 4 columns x 3 inches, 2 rows x 3 inches


def test_image_grid_ncols_and_no_titles():
    fig = plots.image_grid([torch.rand(3, 4, 4)] * 3, ncols=1, cell_size=2.0)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["", "", ""]
    assert tuple(fig.get_size_inches()) == (2.0, 6.0)


def test_image_grid_shows_tensor_pixels():
    t = torch.zeros(3, 2, 2)
    t[0] = 1.0  # pure red
    fig = plots.image_grid([t])
    shown = fig.axes[0].get_images()[0].get_array()
    assert np.asarray(shown)[0, 0].tolist() == [255, 0, 0]


def test_image_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        plots.image_grid([])
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid([torch.rand(3, 4, 4)], titles=["a", "b"])
    with pytest.raises(ValueError, match="ncols"):
        plots.image_grid([torch.rand(3, 4, 4)], ncols=0)
    with pytest.raises(ValueError, match="shape"):
        plots.image_grid([torch.rand(2, 3, 4, 4)])
    assert plt.get_fignums() == []  # no half-built figures left open


def test_show_images_saves_and_shows(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(plots.plt, "show", lambda: shown.append(True))
    assert plots.show_images([torch.rand(3, 4, 4)], titles=["x"], save=tmp_path / "shown.png") is None
    assert shown == [True]
    assert (tmp_path / "shown.png").is_file()
    assert plt.get_fignums() == []  # closed once shown, so long runs do not pile up figures
