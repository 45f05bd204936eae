"""Image optimisation through VGG: feature inversion and texture synthesis with real (offline) weights."""

from __future__ import annotations

import math

import pytest
import torch

from stlib import gatys
from stlib.losses import gram_matrix, style_loss
from stlib.vgg import VGGFeatures

STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float((a - b).pow(2).mean()))


def test_content_reconstruction_conv2_2_is_close_to_the_photo(photo, offline_weights):
    result = gatys.reconstruct_content(photo, "conv2_2", iterations=300, weights=offline_weights)
    assert result.image.shape == photo.shape
    assert result.losses("content")[-1] < 0.02 * result.losses("content")[0]
    assert psnr(result.image, photo) >= 20.0


def test_deeper_layers_reconstruct_less_exactly(photo, offline_weights):
    shallow = gatys.reconstruct_content(photo, "conv1_2", iterations=60, weights=offline_weights)
    deep = gatys.reconstruct_content(photo, "conv5_2", iterations=60, weights=offline_weights)
    assert psnr(shallow.image, photo) > psnr(deep.image, photo) + 3.0


def test_style_reconstruction_lowers_the_style_loss_tenfold(painting, offline_weights):
    result = gatys.reconstruct_style(painting, STYLE_LAYERS, size=(64, 64), iterations=100, weights=offline_weights)
    assert result.image.shape == (1, 3, 64, 64)
    # Measured independently of the optimiser's own bookkeeping: plain Gram losses, noise vs result.
    with VGGFeatures(STYLE_LAYERS, weights=offline_weights) as vgg:
        targets = {k: gram_matrix(v) for k, v in vgg(painting).items()}
        noise = gatys.init_image("noise", size=(64, 64), seed=0)
        before = float(style_loss(vgg(noise), targets))
        after = float(style_loss(vgg(result.image), targets))
    assert after < before / 10


def test_optimizer_keeps_pixels_in_range_and_input_untouched():
    init = torch.rand(1, 3, 8, 8)
    copy = init.clone()

    def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        total = (x - 2.0).pow(2).mean()  # pulls every pixel above 1: clamping must hold them at 1
        return {"total": total}

    for optimizer in ("lbfgs", "adam"):
        result = gatys.optimize_image(loss_fn, init, iterations=5, optimizer=optimizer, lr=0.5)
        assert torch.equal(init, copy)
        assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0
        assert len(result.history) == 5 and all("time" in h for h in result.history)
        assert result.losses()[-1] < result.losses()[0]


def test_nan_loss_stops_with_a_clear_error():
    def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        total = x.sum() * float("nan")
        return {"total": total}

    with pytest.raises(gatys.OptimizationDiverged, match="iteration 1"):
        gatys.optimize_image(loss_fn, torch.rand(1, 3, 8, 8), iterations=3)


def test_init_kinds(photo):
    assert torch.equal(gatys.init_image("content", like=photo), photo)
    noise = gatys.init_image("noise", size=(10, 12), seed=3)
    assert noise.shape == (1, 3, 10, 12) and torch.equal(noise, gatys.init_image("noise", size=(10, 12), seed=3))
    blurred = gatys.init_image("blurred-noise", size=(32, 32))
    assert blurred.diff(dim=-1).abs().mean() < noise.diff(dim=-1).abs().mean()
    with pytest.raises(ValueError, match="Unknown init"):
        gatys.init_image("zeros", like=photo)
