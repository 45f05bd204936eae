"""Tests for stlib.desktop: the desktop app explains what it needs, as a function and as `python -m stlib webcam`."""

from __future__ import annotations

import pytest
import torch

from stlib import cli, desktop
from stlib.checkpoint import save_model
from stlib.video import CameraError
from tests.networks import tiny_net


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    return save_model(tiny_net(), tmp_path / "m.safetensors")


def test_desktop_app_explains_a_headless_opencv(model_file, capsys):
    cv2 = pytest.importorskip("cv2")
    if "NONE" not in next((line for line in cv2.getBuildInformation().splitlines() if "GUI:" in line), "NONE"):
        pytest.skip("this OpenCV has windows; the desktop app would open one")
    with pytest.raises(CameraError, match="no window support"):
        desktop.run_desktop(None)
    code = cli.main(["webcam", "--model", str(model_file)])
    _, stderr = capsys.readouterr()
    assert code == 2 and stderr.startswith("error: This OpenCV build has no window support")
    assert stderr.count("\n") == 1
