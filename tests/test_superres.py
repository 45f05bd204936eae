"""Tests for stlib.superres: the evaluation protocol (pinned to the literature's bicubic scores), degradation and
histogram matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from stlib import assets, images
from stlib import superres as sr


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """The bundled photo at 200 px, cropped to 200x144 (a multiple of 8)."""
    return sr.crop_to_multiple(images.load_image(assets.content_image("tubingen"), size=200), 8)


@pytest.fixture(scope="module")
def set5(shared_dir):
    folder = shared_dir / "data" / "sr" / "Set5"
    if not folder.is_dir():
        pytest.skip(f"{folder} (colour Set5) is not present")
    return folder


@pytest.mark.parametrize(("scale", "psnr", "ssim"), [(4, 28.43, 0.811), (8, 24.40, 0.658)])
def test_bicubic_on_set5_scores_the_literatures_values(set5, scale, psnr, ssim):
    # The anchor of every number in the project: bicubic x4 / x8 on Set5 is 28.42 / 24.40 dB in the literature
    # (SRCNN, TPAMI 2016, Table 3; SSIM 0.8104 / 0.6580 with MATLAB's implementation).
    score = sr.evaluate(lambda low: sr.bicubic_upscale(low, scale), set5, scale)
    assert score.names == ["baby", "bird", "butterfly", "head", "woman"]
    assert score.mean_psnr == pytest.approx(psnr, abs=0.05)
    assert score.mean_ssim == pytest.approx(ssim, abs=0.005)


def test_luminance_is_matlabs_bt601():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], dtype=np.uint8)  # (1, 3, 3)
    np.testing.assert_allclose(sr.rgb_to_y(pixels)[0], [16.0, 235.0, 16 + 65.481], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        sr.rgb_to_y(np.zeros((4, 4)))


def test_psnr_of_a_known_error_and_the_border_crop():
    grey = Image.new("RGB", (32, 32), (100, 100, 100))
    lighter = Image.new("RGB", (32, 32), (110, 110, 110))  # Y differs by 10 * 219 / 255 everywhere
    assert sr.psnr_y(lighter, grey) == pytest.approx(20 * math.log10(255 / (10 * 219 / 255)))
    assert sr.psnr_y(grey, grey) == math.inf
    framed = grey.copy()
    framed.paste((0, 0, 0), (0, 0, 32, 3))  # a wrong strip 3 px high along the top
    assert sr.psnr_y(framed, grey) < 20 and sr.psnr_y(framed, grey, border=4) == math.inf
    with pytest.raises(ValueError, match="Cannot score"):
        sr.psnr_y(grey, grey.resize((16, 16)))


def test_ssim_is_one_for_identical_images_symmetric_and_lower_for_noise(photo):
    noisy_pixels = np.asarray(photo).astype(np.int16) + np.random.default_rng(0).integers(-40, 41, (144, 200, 3))
    noisy = Image.fromarray(noisy_pixels.clip(0, 255).astype(np.uint8))
    assert sr.ssim_y(photo, photo) == pytest.approx(1.0)
    assert sr.ssim_y(noisy, photo) == pytest.approx(sr.ssim_y(photo, noisy))
    assert 0 < sr.ssim_y(noisy, photo) < 0.8
    with pytest.raises(ValueError, match="11x11"):
        sr.ssim_y(photo.crop((0, 0, 20, 20)), photo.crop((0, 0, 20, 20)), border=5)


def test_downscale_sizes_blur_and_bad_input(photo):
    low = sr.downscale(photo, 4)
    assert low.size == (50, 36)
    blurred = sr.downscale(photo, 4, blur_sigma=1.0)
    assert blurred.size == low.size and np.asarray(blurred).std() < np.asarray(low).std()  # blur removes detail
    assert sr.bicubic_upscale(low, 4).size == photo.size
    with pytest.raises(ValueError, match="cannot be downscaled by exactly 3: crop it first"):
        sr.downscale(photo, 3)
    with pytest.raises(ValueError, match="smaller than the scale factor"):
        sr.crop_to_multiple(Image.new("RGB", (5, 40)), 8)
    assert sr.crop_to_multiple(Image.new("RGB", (37, 42)), 8).size == (32, 40)


def test_bicubic_beats_nearest_and_x4_beats_x8(photo):
    # Sanity of the whole protocol on a bundled photo: better interpolation and a smaller factor score higher.
    def score(up, scale):
        return sr.psnr_y(up(sr.downscale(photo, scale), scale), photo, border=scale)

    def nearest(low, scale):
        return low.resize((low.width * scale, low.height * scale), Image.Resampling.NEAREST)

    assert score(sr.bicubic_upscale, 4) > score(nearest, 4) + 0.5
    assert score(sr.bicubic_upscale, 4) > score(sr.bicubic_upscale, 8) + 1.0


def test_histogram_matching_takes_the_references_distribution(photo):
    dark = Image.fromarray((np.asarray(photo) * 0.5).astype(np.uint8))  # half the brightness and contrast
    matched = sr.match_histogram(dark, photo)
    assert matched.size == dark.size
    for c in range(3):
        ours, theirs = np.asarray(matched)[..., c].astype(float), np.asarray(photo)[..., c].astype(float)
        assert abs(ours.mean() - theirs.mean()) < 2 and abs(ours.std() - theirs.std()) < 2
    same = sr.match_histogram(photo, photo)
    assert np.array_equal(np.asarray(same), np.asarray(photo))  # a histogram matched to itself: unchanged
    smaller = sr.match_histogram(photo, sr.downscale(photo, 4))  # the paper matches to the low-res input
    assert smaller.size == photo.size


def test_evaluate_scores_every_image_and_refuses_a_wrong_size(photo, tmp_path):
    for i in range(2):
        photo.rotate(180 * i).save(tmp_path / f"p{i}.png")
    score = sr.evaluate(lambda low: sr.bicubic_upscale(low, 4), tmp_path, 4)
    assert score.names == ["p0", "p1"] and len(score.psnr) == len(score.ssim) == 2
    assert 15 < score.mean_psnr < 60 and 0 < score.mean_ssim < 1
    with pytest.raises(ValueError, match=r"p0\.png.*not 200x144 \(x4\)"):
        sr.evaluate(lambda low: low, tmp_path, 4)


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_the_training_degradation_is_the_benchmarks(photo, sigma):
    target = sr.crop_to_multiple(photo, 4)
    batch = images.to_tensor(target)  # (1, 3, H, W)
    low = sr.degrade(batch, 4, sigma)
    expected = np.asarray(sr.downscale(target, 4, sigma), dtype=np.float64)
    got = low[0].permute(1, 2, 0).numpy() * 255
    assert low.shape[-2:] == (target.height // 4, target.width // 4)
    assert np.allclose(got, np.round(got))  # 8-bit values, as the benchmark's inputs
    assert np.abs(got - expected).max() <= 2 and np.abs(got - expected).mean() < 0.3  # PIL's bicubic, antialiased
    with pytest.raises(ValueError, match="cannot be downscaled by exactly 4"):
        sr.degrade(batch[..., :30, :30], 4)


def test_evaluate_collects_an_extra_metric(photo, tmp_path):
    path = tmp_path / "a.png"
    sr.crop_to_multiple(photo, 4).save(path)
    score = sr.evaluate(lambda low: sr.bicubic_upscale(low, 4), [path], 4, extra=lambda out, target: 0.25)
    assert score.extra == [0.25] and score.mean_extra == 0.25
    assert math.isnan(sr.evaluate(lambda low: sr.bicubic_upscale(low, 4), [path], 4).mean_extra)
