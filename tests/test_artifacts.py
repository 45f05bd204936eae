"""Tests for stlib.artifacts: the grid, border and flicker statistics find what they are meant to find."""

from __future__ import annotations

import pytest
import torch

from stlib import artifacts, assets, images
from stlib.checkpoint import load_model, read_metadata
from stlib.stylize import stylize_image
from tests.networks import tiny_net


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return images.load_tensor(assets.content_image("tubingen"), size=(192, 144))  # (1, 3, 144, 192)


def with_grid(image: torch.Tensor, period: int, levels: float) -> torch.Tensor:
    """`image` plus a +-levels pattern on one pixel phase of every period x period cell."""
    pattern = torch.full((period, period), -levels / (period * period - 1))
    pattern[0, 0] = levels
    h, w = image.shape[-2:]
    tiled = pattern.repeat(h // period + 1, w // period + 1)[:h, :w] / 255
    return (image + tiled).clamp(0, 1)


@pytest.mark.parametrize("period", [2, 4])
def test_a_periodic_grid_is_found_at_its_period_and_a_photo_has_none(photo, period):
    clean = artifacts.grid_strength(photo, period)
    gridded = artifacts.grid_strength(with_grid(photo, period, 6.0), period)
    assert clean < 0.5  # grey levels: a photo has no pattern locked to the pixel grid
    assert gridded > 5 * clean and gridded > 1.0


def test_grid_strength_rejects_bad_input(photo):
    with pytest.raises(ValueError, match="period must be at least 2"):
        artifacts.grid_strength(photo, 1)
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        artifacts.grid_strength(photo[0], 4)


def test_a_coloured_band_along_one_edge_is_found_on_that_side(photo):
    plain = artifacts.border_bands(photo)
    striped = photo.clone()
    striped[..., -5:] = torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1)  # a red stripe 5 px wide on the right
    bands = artifacts.border_bands(striped)
    assert set(bands) == set(artifacts.SIDES)
    assert bands["right"] > plain["right"] + 20
    assert bands["left"] == pytest.approx(plain["left"]) and bands["top"] == pytest.approx(plain["top"], abs=1.0)


def test_flicker_of_the_identity_a_constant_and_an_unstable_network(photo):
    identity = lambda x: x  # noqa: E731
    constant = lambda x: torch.full_like(x, 0.5)  # noqa: E731
    generator = torch.Generator().manual_seed(1)

    def unstable(x: torch.Tensor) -> torch.Tensor:  # fresh noise every frame: the worst flicker
        return (x + 0.15 * torch.randn(x.shape, generator=generator)).clamp(0, 1)

    assert artifacts.noise_flicker(identity, photo) == pytest.approx(1.0)
    assert artifacts.noise_flicker(constant, photo) == 0.0
    assert artifacts.noise_flicker(unstable, photo) > 5
    assert artifacts.warp_error(identity, photo) == pytest.approx(0.0, abs=1e-7)
    assert artifacts.warp_error(constant, photo) == 0.0
    assert artifacts.warp_error(unstable, photo) > 1
    with pytest.raises(ValueError, match="non-zero shift"):
        artifacts.warp_error(identity, photo, shift=(0, 0))


def test_a_convolutional_network_nearly_follows_motion(photo):
    # Convolutions commute with shifts; only the borders and instance norm's global statistics differ.
    torch.manual_seed(0)
    net = tiny_net()
    assert artifacts.warp_error(net, photo, shift=(4, 4)) < 0.5


# --------------------------------------------------------------------------------------------------------
# The shipped styles: no band along the edges, no pixel-locked grid, no flicker
# --------------------------------------------------------------------------------------------------------

# Limits on the bundled photo (192 px square; benchmarks/RESULTS.md, "Artefact statistics", has the statistics on
# held-out photos): what the network adds along an edge (grey levels), its period-4 grid (grey levels), its output
# change under camera noise relative to the input's (the identity: 1) and after a 3 px move. The networks trained
# before the artefact fixes (strided downsampling, no stability term) measure 10.5-27.4, 1.64-6.01, 1.65-2.87 and
# 0.60-0.96 here; `the_scream` retrained with the fixes on a CPU (not shipped: its objective rose 2.7 %) 1.1, 1.40,
# 1.18 and 0.24.
MAX_BORDER, MAX_GRID_P4, MAX_NOISE_FLICKER, MAX_WARP_ERROR = 10.0, 1.5, 1.2, 0.35


def _shipped_styles() -> list:
    params = []
    for path in sorted((assets.repo_root() / "checkpoints").glob("*.safetensors")):
        meta = read_metadata(path)
        if meta["transformer"].get("upscale", 1) != 1:
            continue  # super-resolution networks are judged in benchmarks/superres.py
        before_fix = meta["transformer"].get("downsample", "strided") == "strided"
        reason = "trained before the artefact fixes (strided downsampling, no stability term): retrain with make styles"
        marks = pytest.mark.xfail(strict=True, reason=reason) if before_fix else ()
        params.append(pytest.param(path, marks=marks, id=path.stem))
    return params


@pytest.fixture(scope="module")
def square_photo() -> torch.Tensor:
    return images.load_tensor(assets.content_image("tubingen"), size=(256, 192))[..., :, 32:224]  # (1, 3, 192, 192)


@pytest.mark.parametrize("path", _shipped_styles())
def test_a_shipped_style_paints_no_edge_band_grid_or_flicker(path, square_photo):
    model = load_model(path).eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        return stylize_image(model, x)

    out = run(square_photo)
    before, after = artifacts.border_bands(square_photo), artifacts.border_bands(out)
    added = {side: after[side] - before[side] for side in artifacts.SIDES}
    assert max(added.values()) < MAX_BORDER, f"a band along an edge: {added}"
    assert artifacts.grid_strength(out, 4) < MAX_GRID_P4
    assert artifacts.noise_flicker(run, square_photo) < MAX_NOISE_FLICKER
    assert artifacts.warp_error(run, square_photo) < MAX_WARP_ERROR
