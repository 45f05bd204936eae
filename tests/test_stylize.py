"""Tests for stlib.stylize: model files, fp16 export, tiled stylisation, video frames, files and folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from stlib import assets, images
from stlib.images import ImageError
from stlib.stylize import (
    CheckpointError,
    export_weights,
    load_model,
    read_metadata,
    save_model,
    stylize_files,
    stylize_frame,
    stylize_image,
    tile_count,
)
from stlib.transformer import TransformerConfig, TransformerNet

SLIM = TransformerConfig(width=0.25, num_residual_blocks=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def net(config: TransformerConfig = SLIM, seed: int = 0) -> TransformerNet:
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
# Model files
# --------------------------------------------------------------------------------------------------------


def test_load_model_rebuilds_the_architecture_from_the_metadata(tmp_path):
    config = TransformerConfig(norm="batch", upsample="transposed", output="tanh", width=0.25, num_residual_blocks=2)
    original = net(config)
    path = save_model(original, tmp_path / "paper.safetensors", info={"step": 3})
    loaded = load_model(path)
    assert loaded.config == config and not loaded.training
    x = torch.rand(1, 3, 20, 28)
    assert torch.equal(loaded(x), original(x))
    meta = read_metadata(path)
    assert meta["format"] == "stlib.transformer" and meta["info"] == {"step": 3} and meta["stlib_version"]


def test_bad_model_files_raise_one_clear_sentence_naming_the_file(tmp_path, model_file):
    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint")
    vgg_like = tmp_path / "vgg.safetensors"
    save_file({"conv1_1.weight": torch.zeros(64, 3, 3, 3)}, str(vgg_like))
    other = tmp_path / "other.safetensors"  # weights of the slim net, metadata claiming the default one
    with open(model_file, "rb"):
        tensors = load_file(model_file)
    meta = read_metadata(model_file)
    raw = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    raw["transformer"] = json.dumps(TransformerNet().config_dict())
    save_file(tensors, str(other), metadata=raw)
    cases = [
        (tmp_path / "missing.safetensors", "does not exist"),
        (tmp_path, "is a directory"),
        (text, "cannot be read as a safetensors file"),
        (vgg_like, "not a stlib style network"),
        (other, "another architecture"),
    ]
    for path, reason in cases:
        with pytest.raises(CheckpointError, match=reason) as info:
            load_model(path)
        message = str(info.value)
        assert str(path) in message and message.count(". ") == 0 and message.endswith(".")


def test_fp16_export_is_small_and_loads_as_float32(tmp_path):
    full = save_model(net(TransformerConfig()), tmp_path / "full.safetensors", info={"step": 1})
    small = export_weights(full, tmp_path / "small.safetensors")
    assert small.stat().st_size <= 4 * 1024 * 1024 < full.stat().st_size
    assert {v.dtype for v in load_file(small).values()} == {torch.float16}
    original, restored = load_model(full), load_model(small)
    assert all(p.dtype == torch.float32 for p in restored.parameters())
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(restored(x), original(x), atol=2e-2)
    assert read_metadata(small)["info"]["exported_from"] == "full.safetensors"


def test_save_model_refuses_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_model(net(), tmp_path / "model.pt")


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


# --------------------------------------------------------------------------------------------------------
# The networks shipped in checkpoints/
# --------------------------------------------------------------------------------------------------------

SHIPPED = sorted((assets.repo_root() / "checkpoints").glob("*.safetensors"))
SHIPPED_FULL = [p for p in SHIPPED if read_metadata(p)["info"].get("kind") != "distilled"]


def test_at_least_four_small_fp16_styles_are_shipped_and_say_what_they_were_trained_on():
    assert len(SHIPPED_FULL) >= 4, [p.name for p in SHIPPED]
    for path in SHIPPED:
        assert path.stat().st_size <= 4_000_000, path.name
        assert {t.dtype for t in load_file(path).values()} == {torch.float16}, path.name
        info = read_metadata(path)["info"]
        if path in SHIPPED_FULL:
            assert "BSDS500" in info["dataset"] and info["step"] > 0, path.name
            painting = assets.style_image(path.stem).read_bytes()  # the bundled painting is the one trained on
            assert info["style_sha256"] == hashlib.sha256(painting).hexdigest(), path.name
        else:
            assert Path(info["distilled_from"]).stem == path.stem.removesuffix("_slim"), path.name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_networks_carry_the_photo_towards_their_painting(path, offline_weights):
    """The output's style term (the training objective's) is a fraction of the photo's own, content kept."""
    from stlib.train import PerceptualLoss, TrainConfig

    config = TrainConfig.from_dict(read_metadata(path)["info"]["train_config"])
    style = images.load_tensor(assets.style_image(Path(config.style).stem), size=config.style_size)
    objective = PerceptualLoss.from_config(style, config)
    photo = images.load_tensor(assets.content_image("tubingen"), size=256)
    with torch.no_grad():
        out = stylize_image(load_model(path), photo)
        before, after = objective(photo, photo), objective(photo, out)
    assert float(after["style"]) < 0.1 * float(before["style"]), (before, after)
    assert float(after["total"]) < 0.25 * float(before["total"])
