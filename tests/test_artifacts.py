"""Tests for stlib.artifacts: the grid, border and flicker statistics find what they are meant to find."""

from __future__ import annotations

import pytest
import torch

from stlib import artifacts, assets, images
from stlib.transformer import TransformerConfig, TransformerNet


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
    net = TransformerNet(TransformerConfig(width=0.25, num_residual_blocks=1)).eval()
    assert artifacts.warp_error(net, photo, shift=(4, 4)) < 0.5
