"""Tests for stlib.upscale: super-resolution networks applied to images and files, tiled or whole."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from stlib import assets, images, upscale
from stlib.checkpoint import save_model
from stlib.images import ImageError
from stlib.transformer import TransformerConfig, TransformerNet

pytestmark = pytest.mark.usefixtures("one_thread")


def sr_net(scale: int = 4, seed: int = 0) -> TransformerNet:
    """A small random super-resolution network in eval mode whose output differs from bicubic."""
    torch.manual_seed(seed)
    net = TransformerNet(TransformerConfig.superres(scale, width=0.25))
    torch.nn.init.normal_(net.decoder[-1].weight, std=0.5)  # not the bicubic start
    return net.eval()


@pytest.fixture(scope="module")
def small_photo() -> torch.Tensor:
    return images.load_tensor(assets.content_image("tubingen"), size=40)  # (1, 3, 30, 40)


def test_upscale_image_is_the_network_times_its_factor(small_photo):
    net = sr_net()
    out = upscale.upscale_image(net, small_photo)
    assert out.shape == (1, 3, 120, 160) and float(out.min()) >= 0 and float(out.max()) <= 1
    with torch.no_grad():
        torch.testing.assert_close(out, net(small_photo).clamp(0, 1))
    assert upscale.upscale_image(net, small_photo[0]).shape == (3, 120, 160)


def test_tiles_give_the_untiled_result_away_from_the_seams(small_photo):
    net = sr_net()
    photo = images.load_tensor(assets.content_image("tubingen"), size=96)  # (1, 3, 72, 96)
    whole = upscale.upscale_image(net, photo)
    tiled = upscale.upscale_image(net, photo, tile=48, overlap=16)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().mean()) < 2e-3  # no norm layers: tiles only differ near their borders


def test_histogram_matching_takes_the_inputs_colours(small_photo):
    net = sr_net()
    out = upscale.upscale_image(net, small_photo, histogram=True)
    for c in range(3):  # the output's channel means follow the input's
        assert abs(float(out[0, c].mean() - small_photo[0, c].mean())) < 0.02


def test_bad_inputs_are_one_sentence(small_photo, monkeypatch):
    net = sr_net()
    with pytest.raises(ValueError, match="too small to upscale"):
        upscale.upscale_image(net, torch.rand(1, 3, 5, 40))
    monkeypatch.setattr(upscale, "MAX_UNTILED_BYTES", 1000)
    with pytest.raises(ValueError, match="too large to upscale x4 in one piece .* tile size"):
        upscale.upscale_image(net, small_photo)
    assert upscale.upscale_image(net, small_photo, tile=24, overlap=4).shape == (1, 3, 120, 160)
    with pytest.raises(ValueError, match="needs a super-resolution network"):
        upscale.upscale_image(TransformerNet(TransformerConfig(width=0.25)).eval(), small_photo)


def test_upscale_files_writes_pngs_and_names_a_bad_file(tmp_path, small_photo):
    net = sr_net(scale=2)
    folder = tmp_path / "in"
    folder.mkdir()
    images.save_image(small_photo, folder / "a.jpg")
    images.save_image(small_photo[..., :16, :16], folder / "b.png")
    written = upscale.upscale_files(net, folder, tmp_path / "out")
    assert [p.name for p in written] == ["a.png", "b.png"]
    with Image.open(written[0]) as img:
        assert img.size == (80, 60)
    (folder / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.jpg"):
        upscale.upscale_files(net, folder, tmp_path / "out2")
    with pytest.raises(ValueError, match="file name but there are"):
        upscale.upscale_files(net, [folder / "a.jpg", folder / "b.png"], tmp_path / "one.png")
    tiny = tmp_path / "tiny.png"
    images.save_image(torch.rand(1, 3, 4, 4), tiny)
    with pytest.raises(ImageError, match="Cannot upscale '.*tiny.png': an image of 4x4 pixels is too small"):
        upscale.upscale_files(net, tiny, tmp_path / "tiny_out.png")


def test_a_saved_network_round_trips_through_the_files(tmp_path, small_photo):
    path = save_model(sr_net(), tmp_path / "x4.safetensors")
    from stlib.checkpoint import load_model

    again = load_model(path, task="superres")
    torch.testing.assert_close(upscale.upscale_image(again, small_photo), upscale.upscale_image(sr_net(), small_photo))
