"""Tests for stlib.backends: every engine computes the network's function, auto picks only what runs here, ONNX."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from stlib import assets, backends
from stlib.assets import content_image
from stlib.backends import TOLERANCE, Backend, BackendError, choose_backend, export_onnx, make_backend
from stlib.images import load_tensor
from stlib.stylize import load_model, stylize_frame
from stlib.transformer import FoldedUpsample, TransformerConfig, TransformerNet
from tests.networks import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnxscript") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime/onnxscript not installed (pip install 'stlib[fast]')")


@pytest.fixture(scope="module", params=["strided", "antialiased"])
def net(request) -> TransformerNet:
    """A small network that really changes the picture (its last layer is not the zero of a fresh input_skip)."""
    torch.manual_seed(0)
    config = TransformerConfig(width=0.25, num_residual_blocks=2, input_skip=True, downsample=request.param)
    model = TransformerNet(config)
    torch.nn.init.normal_(model.decoder[-1].weight, std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return load_tensor(content_image("tubingen"), size=(171, 127))  # (1, 3, 127, 171): odd sizes


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STLIB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # shared by this module


def test_the_test_network_changes_the_photo(net, photo):
    with torch.inference_mode():
        assert (net(photo) - photo).abs().mean() > 0.01  # so agreement below is not agreement on the identity


@pytest.mark.parametrize("name", ["eager", "channels_last", "bf16", pytest.param("onnx", marks=needs_ort)])
def test_backend_agrees_with_fp32_eager_within_its_tolerance_on_a_photo(net, photo, name):
    backend = make_backend(net, name, probe=(32, 48))
    assert backend.name == name
    with torch.inference_mode():
        out = backend(photo)
        reference = net(photo)
    assert out.shape == photo.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    difference = float((out - reference).abs().max())
    assert difference <= TOLERANCE[name]
    if name == "bf16":
        assert difference > 0  # really computed in bf16, not silently in fp32


@pytest.mark.parametrize("config", [TINY,
                                    TransformerConfig.superres(4, width=0.25, num_residual_blocks=1)])  # fmt: skip
def test_bf16_engine_converts_the_weights_once_and_runs_without_autocast(config, monkeypatch):
    torch.manual_seed(0)
    model = TransformerNet(config).eval()
    torch.nn.init.normal_(model.decoder[-1].weight, std=0.05)  # not the bicubic start
    backend = make_backend(model, "bf16", probe=(16, 24))  # within its tolerance of fp32 eager
    assert {p.dtype for p in backend.run.net.parameters()} == {torch.bfloat16}  # converted once, in a copy ...
    assert all(p.dtype == torch.float32 for p in model.parameters())  # ... not in the caller's network
    folded = [m for m in backend.run.net.modules() if isinstance(m, FoldedUpsample)]  # upsampling at low resolution
    assert folded and all(m.weight.dtype == torch.bfloat16 for m in folded)

    def no_autocast(*args, **kwargs):
        raise AssertionError("the bf16 engine must not use autocast")

    monkeypatch.setattr(torch, "autocast", no_autocast)
    x = torch.rand(1, 3, 12, 16)
    with torch.inference_mode():
        out = backend(x)
        reference = model(x)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert 0 < float((out - reference).abs().max()) <= TOLERANCE["bf16"]


def test_backends_take_batches_and_keep_the_callers_device(net, photo):
    batch = torch.cat([photo, photo.flip(-1)])  # (2, 3, H, W)
    out = make_backend(net, "channels_last")(batch)
    assert out.shape == batch.shape and out.device == batch.device
    torch.testing.assert_close(out[1:], make_backend(net, "channels_last")(batch[1:]))


def test_auto_never_tries_what_this_machine_lacks(net, fast_bf16):
    backend, timings = choose_backend(net, probe=(32, 48), repeats=1)
    tried = {t.name: t for t in timings}
    assert "fp16" not in tried  # CPU: no fp16 inference
    assert "compile" not in tried  # only when asked for
    if fast_bf16:  # a CPU with native bf16 (or forced to behave as one): bf16 is timed and within its tolerance
        assert tried["bf16"].ms is not None and 0 < tried["bf16"].difference <= TOLERANCE["bf16"]
        assert backends.available_backends()["bf16"] == "ok"
    else:
        assert "bf16" not in tried  # emulated: 10-25x slower than fp32 here
        assert backends.available_backends()["bf16"].startswith("slow here")
    if not HAS_ORT:
        assert "onnx" not in tried
    assert backend.name in {t.name for t in timings if t.ms is not None}
    assert backends.unavailable_reason(backend.name, "cpu") is None
    fastest = min((t for t in timings if t.ms is not None), key=lambda t: t.ms)
    assert backend.name == fastest.name


def test_auto_reports_unavailable_candidates_without_running_them(net):
    _, timings = choose_backend(net, candidates=["fp16", "eager"], probe=(16, 16), repeats=1)
    by_name = {t.name: t for t in timings}
    assert by_name["fp16"].ms is None and "CUDA" in by_name["fp16"].note
    assert by_name["eager"].ms is not None and by_name["eager"].difference == 0


def test_a_backend_outside_its_tolerance_is_refused(net, monkeypatch):
    monkeypatch.setitem(TOLERANCE, "bf16", 1e-7)  # bf16 rounding is far larger than this
    with pytest.raises(BackendError, match="differs from fp32 eager"):
        make_backend(net, "bf16", probe=(16, 24))
    _, timings = choose_backend(net, candidates=["bf16", "eager"], probe=(16, 24), repeats=1)
    assert {t.name: t.ms for t in timings}["bf16"] is None


def test_unknown_or_unavailable_backends_are_one_clear_error(net):
    with pytest.raises(ValueError, match="Unknown backend 'tpu'"):
        make_backend(net, "tpu")
    with pytest.raises(BackendError, match="fp16 inference needs a CUDA GPU"):
        make_backend(net, "fp16")
    with pytest.raises(ValueError, match="eval mode"):
        make_backend(TransformerNet(TransformerConfig(width=0.25, num_residual_blocks=0)).train(), "eager")


def test_stylize_frame_takes_a_backend_and_gives_the_networks_frame(net, photo):
    frame = (photo[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # (H, W, 3)
    direct = stylize_frame(net, frame)
    via_backend = stylize_frame(make_backend(net, "channels_last"), frame)
    assert via_backend.shape == frame.shape and via_backend.dtype == np.uint8
    assert np.abs(direct.astype(int) - via_backend.astype(int)).max() <= 1


@needs_ort
def test_onnx_export_round_trip_with_symbolic_height_and_width(net, tmp_path):
    import onnxruntime as ort

    path = export_onnx(net, tmp_path / "net.onnx")
    assert path.is_file() and not list(tmp_path.glob(".net-*"))  # atomic: no temp left behind
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and isinstance(image.shape[2], str) and isinstance(image.shape[3], str)
    for height, width in ((8, 8), (60, 84), (124, 36)):
        x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        (y,) = session.run(None, {"image": x.numpy()})
        with torch.inference_mode():
            expected = net(x).numpy()
        assert y.shape == (1, 3, height, width)
        assert np.abs(y - expected).max() <= TOLERANCE["onnx"]


@needs_ort
def test_onnx_backend_handles_sizes_that_are_not_multiples_of_four(net):
    backend = make_backend(net, "onnx", probe=(30, 45))  # the probe itself is odd-sized
    x = torch.rand(1, 3, 37, 50)
    with torch.inference_mode():
        assert float((backend(x) - net(x)).abs().max()) <= TOLERANCE["onnx"]


@needs_ort
def test_onnx_backend_runs_a_superres_network_at_any_size():
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig.superres(4, width=0.25))
    torch.nn.init.normal_(net.decoder[-1].weight, std=0.5)  # not the bicubic start
    net.eval()
    backend = make_backend(net, "onnx", probe=(12, 15))
    x = torch.rand(1, 3, 13, 19)  # no multiple needed: no stride-2 stages
    with torch.inference_mode():
        out, expected = backend(x), net(x)
    assert out.shape == (1, 3, 52, 76) and float((out - expected).abs().max()) <= TOLERANCE["onnx"]


def test_export_onnx_checks_its_arguments(net, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        export_onnx(net, tmp_path / "net.safetensors")
    with pytest.raises(ValueError, match="eval mode"):
        export_onnx(TransformerNet(TransformerConfig(width=0.25, num_residual_blocks=0)).train(), tmp_path / "x.onnx")


def test_backend_rejects_a_wrong_shape(net):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        Backend("eager", net, net)(torch.rand(3, 8, 8))


@needs_ort
def test_cli_export_onnx_reports_parity_and_refuses_other_suffixes(net, tmp_path, capsys):
    from stlib import cli
    from stlib.checkpoint import save_model

    model_file = save_model(net, tmp_path / "net.safetensors")
    out = tmp_path / "net.onnx"
    assert cli.main(["export", str(model_file), "--onnx", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max abs difference" in printed and "(ok)" in printed
    assert cli.main(["export", str(model_file), "--onnx", "-o", str(tmp_path / "net.safetensors2")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


def test_the_probe_is_the_sample_photo_or_a_synthetic_frame_without_it(monkeypatch):
    frame = backends._probe_frame((48, 64), torch.device("cpu"))
    photo = load_tensor(content_image("tubingen"), size=(64, 48))
    assert frame.shape == (1, 3, 48, 64) and torch.equal(frame, photo)

    def missing(name="tubingen"):
        raise KeyError(name)

    monkeypatch.setattr(backends, "content_image", missing)
    synthetic = backends._probe_frame((48, 64), torch.device("cpu"))
    assert synthetic.shape == (1, 3, 48, 64) and not torch.equal(synthetic, photo)
    assert float(synthetic.min()) >= 0 and float(synthetic.max()) <= 1


def test_a_shipped_network_passes_the_bf16_check_on_the_default_probe():
    # On a CPU with native bf16, the synthetic probe frame put the shipped `wave` 0.15 from fp32 (its flat gradients
    # amplified by the instance norms), so `auto` dropped bf16 there; on a photo it stays within 0.03.
    model = load_model(assets.repo_root() / "checkpoints" / "wave.safetensors")
    backend = make_backend(model, "bf16")  # checks against fp32 eager on the default (240, 320) probe
    frame = backends._probe_frame((240, 320), torch.device("cpu"))
    difference = backends.max_difference(backend, Backend("eager", model, model, torch.device("cpu")), frame)
    assert 0 < difference <= TOLERANCE["bf16"]  # computed in bf16, and within the tolerance that `auto` applies
