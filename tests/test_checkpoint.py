"""Tests for stlib.checkpoint: model files (safetensors + metadata), fp16 export, training states, shipped networks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stlib import assets, images
from stlib.checkpoint import (
    CheckpointError,
    export_weights,
    load_model,
    read_metadata,
    read_state,
    save_model,
    write_state,
)
from stlib.stylize import stylize_image
from stlib.train import TrainConfig
from stlib.transformer import TransformerConfig, TransformerNet
from tests.networks import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def net(config: TransformerConfig = TINY, seed: int = 0) -> TransformerNet:
    """A random network in eval mode."""
    torch.manual_seed(seed)
    return TransformerNet(config).eval()


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
# Training states
# --------------------------------------------------------------------------------------------------------


def test_states_round_trip_without_pickle_and_bad_ones_name_the_file(tmp_path):
    state = {"step": 3, "model": {"w": torch.arange(4.0)}, "rng": torch.get_rng_state(), "python": (3, (1, 2), None)}
    path = write_state(tmp_path / "run" / "state.pt", state)
    again = read_state(path)
    assert (
        again["step"] == 3
        and torch.equal(again["model"]["w"], torch.arange(4.0))
        and again["python"] == state["python"]
    )
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_state(tmp_path / "missing.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="damaged.pt' is not a readable state"):
        read_state(damaged)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        read_state(tmp_path / "list.pt")


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
    config = TrainConfig.from_dict(read_metadata(path)["info"]["train_config"])
    style = images.load_tensor(assets.style_image(Path(config.style).stem), size=config.style_size)
    objective = config.perceptual_loss(style)
    photo = images.load_tensor(assets.content_image("tubingen"), size=256)
    with torch.no_grad():
        out = stylize_image(load_model(path), photo)
        before, after = objective(photo, photo), objective(photo, out)
    assert float(after["style"]) < 0.1 * float(before["style"]), (before, after)
    assert float(after["total"]) < 0.25 * float(before["total"])


def test_rng_states_survive_a_state_file_and_replay_the_same_draws(tmp_path):
    import random

    import numpy as np

    from stlib.checkpoint import rng_state, set_rng_state

    def draws() -> tuple:
        return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()  # noqa: NPY002 (the global RNGs)

    saved = read_state(write_state(tmp_path / "rng.pt", {"rng": rng_state()}))["rng"]  # no pickle on the way
    first = draws()
    assert draws() != first
    set_rng_state(saved)
    assert draws() == first


def test_style_tools_and_upscaling_refuse_each_others_networks(tmp_path, model_file):
    sr_file = save_model(net(TransformerConfig.superres(4, width=0.25)), tmp_path / "x4.safetensors")
    assert load_model(sr_file, task="superres").config.upscale == 4
    with pytest.raises(CheckpointError, match=r"x4\.safetensors' holds a x4 super-resolution network, not a style"):
        load_model(sr_file, task="style")
    with pytest.raises(CheckpointError, match=r"holds a style network, not a super-resolution network: .* stylize"):
        load_model(model_file, task="superres")
    with pytest.raises(ValueError, match="stylize_image needs a style network"):
        stylize_image(load_model(sr_file), torch.rand(1, 3, 16, 16))


SHIPPED_SR = sorted((assets.repo_root() / "checkpoints" / "superres").glob("*.safetensors"))


def test_four_fp16_superres_networks_are_shipped_and_beat_bicubic():
    """x4 and x8, l_pixel and l_feat; each says what it was trained on; each upscales the sample sharper than bicubic
    would in the l_pixel case (PSNR on a held-out photo: the bundled one, which no network was trained on)."""
    from stlib import superres
    from stlib.upscale import upscale_image

    assert sorted(p.stem for p in SHIPPED_SR) == ["x4_feat", "x4_pixel", "x8_feat", "x8_pixel"]
    photo = superres.crop_to_multiple(images.load_image(assets.content_image("tubingen"), size=256), 8)
    for path in SHIPPED_SR:
        assert {t.dtype for t in load_file(path).values()} == {torch.float16}, path.name
        info = read_metadata(path)["info"]
        config = TrainConfig.from_dict(info["train_config"])
        assert info["task"] == "superres" and "BSDS500" in info["dataset"] and info["step"] > 0, path.name
        model = load_model(path, task="superres")
        assert (model.config.upscale, config.loss) == (int(path.stem[1]), path.stem.split("_")[1])
        if config.loss == "pixel":
            low = superres.downscale(photo, model.config.upscale)
            ours = images.to_pil(upscale_image(model, images.to_tensor(low)))
            bicubic = superres.bicubic_upscale(low, model.config.upscale)
            gain = superres.psnr_y(ours, photo, 8) - superres.psnr_y(bicubic, photo, 8)
            assert gain > 0.3, (path.name, gain)
