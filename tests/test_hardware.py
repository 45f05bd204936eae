"""Tests for stlib.hardware: the STLIB_FAST_BF16 switch, precision resolution and autocast under both answers."""

from __future__ import annotations

import pytest
import torch

from stlib import hardware
from stlib.hardware import FAST_BF16_ENV, autocast, cpu_has_fast_bf16, detect_fast_bf16, resolve_precision
from tests.networks import tiny_net


@pytest.mark.parametrize(
    ("value", "answer"), [("1", True), ("yes", True), ("On", True), ("0", False), ("false", False)]
)
def test_the_switch_forces_the_answer_on_any_cpu(monkeypatch, value, answer):
    monkeypatch.setenv(FAST_BF16_ENV, value)
    assert cpu_has_fast_bf16() is answer


@pytest.mark.parametrize("value", [None, "", "  "])
def test_without_the_switch_the_cpu_is_detected(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(FAST_BF16_ENV, raising=False)
    else:
        monkeypatch.setenv(FAST_BF16_ENV, value)
    assert cpu_has_fast_bf16() is detect_fast_bf16()
    assert isinstance(detect_fast_bf16(), bool)


def test_a_bad_switch_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(FAST_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match=r"STLIB_FAST_BF16 must be 1 or 0 .*'maybe'"):
        cpu_has_fast_bf16()


def test_auto_precision_follows_the_answer_and_explicit_ones_do_not(fast_bf16):
    assert resolve_precision("auto", "cpu") == ("bf16" if fast_bf16 else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for by name: runs, emulated or not
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")


def test_autocast_computes_convolutions_in_the_resolved_precision(fast_bf16):
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad(), autocast("cpu", resolve_precision("auto", "cpu")):
        y = conv(x)
    assert y.dtype == (torch.bfloat16 if fast_bf16 else torch.float32)
    torch.testing.assert_close(y.float(), conv(x), rtol=0, atol=2e-2 if fast_bf16 else 0)  # bf16: ~3 digits
    with pytest.raises(ValueError, match="resolved precision"):
        autocast("cpu", "auto")


def test_default_device_is_a_device_this_machine_has():
    device = hardware.default_device()
    assert device in ("cpu", "cuda")
    torch.empty(1, device=device)  # usable, not just named


def test_the_machine_line_names_the_cpu_and_the_bf16_answer(fast_bf16):
    line = hardware.describe_machine()
    assert f"hardware bf16: {'yes' if fast_bf16 else 'no'} (forced by STLIB_FAST_BF16)" in line
    assert f"torch {torch.__version__}" in line and "threads" in line


def test_usable_device_checks_the_device_and_names_it():
    assert hardware.usable_device("cpu") == "cpu" and hardware.usable_device() == hardware.default_device()
    with pytest.raises(ValueError, match="Cannot use the device 'nowhere'"):
        hardware.usable_device("nowhere")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="Cannot use the device 'cuda'"):
            hardware.usable_device("cuda")


def _glibc() -> bool:
    import platform

    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="keep_freed_memory tunes glibc's malloc: this is not glibc Linux")
@pytest.mark.usefixtures("one_thread")  # one malloc arena: worker threads' arenas fault in on their first use
def test_kept_memory_serves_the_next_frame_without_page_faults():
    import resource

    assert hardware.keep_freed_memory()
    net = tiny_net()
    frame = torch.rand(1, 3, 240, 320)  # activations of 0.6-2.5 MB: above glibc's default mmap threshold
    faults = []
    with torch.inference_mode():
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            net(frame)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # Given back to the kernel after each frame, the ~20 MB of activations would fault in again: ~6,600 faults.
    assert min(faults[1:]) < 500, faults  # kept: most frames fault nothing (a few hundred now and then: Python's own)


def test_keeping_memory_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(hardware.KEEP_MEMORY_ENV, "0")
    hardware.keep_freed_memory.cache_clear()
    try:
        assert hardware.keep_freed_memory() is False
    finally:
        hardware.keep_freed_memory.cache_clear()
