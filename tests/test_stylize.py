"""Tests for stlib.stylize: tiled stylisation, video frames, files and folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stlib import assets, images
from stlib.checkpoint import load_model, save_model
from stlib.images import ImageError
from stlib.stylize import (
    stylize_files,
    stylize_frame,
    stylize_image,
    tile_count,
)
from stlib.transformer import TransformerConfig, TransformerNet
from tests.networks import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def net(config: TransformerConfig = TINY, seed: int = 0) -> TransformerNet:
    """A random network whose output varies across [0, 1], like a trained one's (not a near-black image)."""
    torch.manual_seed(seed)
    model = TransformerNet(config).eval()
    with torch.no_grad():  # the last conv works in 0-255 pixel units: scale its random weights to match
        model.decoder[-1].weight.mul_(255)
        model.decoder[-1].bias.mul_(255)
    return model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "style.safetensors"
    save_model(net(), path, info={"step": 7, "style": "starry_night.jpg"})
    return path


# --------------------------------------------------------------------------------------------------------
# Tiles
# --------------------------------------------------------------------------------------------------------


def _record_input_sizes(model: TransformerNet) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[-2:])))
    return sizes


def test_tiles_blend_without_seams(photo):
    # Batch norm in eval mode has no per-image statistics and no residual blocks means a small receptive
    # field: here tiling is exact up to the tiles' padded borders, which the feathered overlaps hide.
    model = net(TransformerConfig(norm="batch", width=0.25, num_residual_blocks=0))
    image = images.to_tensor(images.to_pil(photo).resize((300, 200)))  # (1, 3, 200, 300)
    sizes = _record_input_sizes(model)
    tiled = stylize_image(model, image, tile=128, overlap=48)
    assert max(max(s) for s in sizes) <= 128 and len(sizes) == tile_count(200, 300, 128, 48) == 2 * 4
    assert tiled.shape == image.shape
    assert float((tiled - stylize_image(model, image)).abs().mean()) < 3e-3


def test_tiled_instance_norm_stays_close_to_untiled():
    model = net()
    image = images.load_tensor(assets.content_image("tubingen"), size=(300, 200))  # (1, 3, 200, 300)
    untiled = stylize_image(model, image)
    sizes = _record_input_sizes(model)
    shared = stylize_image(model, image, tile=160, overlap=48)  # default: whole-image instance-norm statistics
    assert max(max(s) for s in sizes) <= 160  # memory stays bounded by the tile
    per_tile = stylize_image(model, image, tile=160, overlap=48, shared_stats=False)
    error, naive = float((shared - untiled).abs().mean()), float((per_tile - untiled).abs().mean())
    assert error < 0.035 and error < naive / 2
    assert float(shared.min()) >= 0 and float(shared.max()) <= 1
    small = image[..., :100, :120]
    assert torch.equal(stylize_image(model, small, tile=128), stylize_image(model, small))  # fits one tile


def test_stylize_image_checks_its_arguments(photo):
    model = net()
    with pytest.raises(ValueError, match="overlap"):
        stylize_image(model, photo, tile=64, overlap=32)
    with pytest.raises(ValueError, match="one image at a time"):
        stylize_image(model, photo.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="eval mode"):
        stylize_image(model.train(), photo)


# --------------------------------------------------------------------------------------------------------
# Frames and files
# --------------------------------------------------------------------------------------------------------


def test_stylize_frame_is_a_pure_uint8_function(photo):
    model = net()
    frame = np.ascontiguousarray(np.asarray(images.to_pil(photo)))  # (72, 96, 3) uint8
    before = frame.copy()
    out = stylize_frame(model, frame)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert np.array_equal(frame, before) and not model.training
    expected = np.asarray(images.to_pil(stylize_image(model, images.to_tensor(images.to_pil(photo)))))
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal(stylize_frame(model, frame), out)  # deterministic
    with pytest.raises(ValueError, match="uint8"):
        stylize_frame(model, frame.astype(np.float32))


def test_stylize_files_and_folders(tmp_path, photo, model_file):
    model = load_model(model_file)
    folder = tmp_path / "in"
    folder.mkdir()
    images.save_image(photo, folder / "a.png")
    images.save_image(photo[..., :40, :50], folder / "b.jpg")
    written = stylize_files(model, [folder], tmp_path / "out")
    assert [p.name for p in written] == ["a.png", "b.jpg"]
    assert Image.open(written[1]).size == (50, 40) and not list((tmp_path / "out").glob(".*"))  # no temp files
    single = stylize_files(model, folder / "a.png", tmp_path / "single.png", size=48, tile=32, overlap=8)
    assert Image.open(single[0]).size == (48, 36)
    with pytest.raises(ValueError, match="2 input images"):
        stylize_files(model, [folder], tmp_path / "one.png")
    with pytest.raises(ValueError, match="overwrite the input"):
        stylize_files(model, [folder / "a.png"], folder)
    (folder / "broken.png").write_bytes(b"no image")
    with pytest.raises(ImageError, match="broken.png"):
        stylize_files(model, [folder], tmp_path / "out2")
