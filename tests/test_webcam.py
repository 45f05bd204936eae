"""Tests for stlib.webcam: the per-frame pipeline, the widget's message protocol and sources, without a browser.

The widget's front end runs in tests/test_webcam_e2e.py (JupyterLab + Chromium); here the browser's messages
are sent by hand and the widget's replies are captured.
"""

from __future__ import annotations

import base64
import threading
import time

import numpy as np
import pytest
from PIL import Image

from stlib import webcam
from stlib.checkpoint import save_model
from stlib.stylize import stylize_frame
from stlib.transformer import TransformerNet
from stlib.video import SyntheticScene
from stlib.webcam import WebcamConfig, decode_jpeg, encode_jpeg, list_models, measure_pipeline
from tests.networks import tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    return tiny_net()


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return SyntheticScene(64, 48).frame(3)


# --------------------------------------------------------------------------------------------------------
# The per-frame pipeline
# --------------------------------------------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValueError, match="source"):
        WebcamConfig(source="phone")
    with pytest.raises(ValueError, match="strength"):
        WebcamConfig(strength=2)
    with pytest.raises(ValueError, match="transport"):
        WebcamConfig(transport="carrier pigeon")
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        WebcamConfig(resolution="320")


def test_jpeg_round_trip_and_bad_bytes(frame):
    data = encode_jpeg(frame, quality=90)
    assert data[:2] == b"\xff\xd8"
    back = decode_jpeg(memoryview(data))
    assert back.shape == frame.shape and np.abs(back.astype(int) - frame).mean() < 6
    with pytest.raises(ValueError, match="could not be decoded"):
        decode_jpeg(b"not a jpeg")


def test_measure_pipeline_times_every_step(model):
    rows = measure_pipeline(model, ("64x48", "128x96"), frames=2, warmup=0)
    assert [r.resolution for r in rows] == ["64x48", "128x96"]
    for r in rows:
        assert r.frames == 2 and r.fps > 0
        assert min(r.encode_ms, r.decode_ms, r.network_ms, r.reply_ms) > 0
        assert r.fps == pytest.approx(1000 / (r.encode_ms + r.decode_ms + r.network_ms + r.reply_ms), rel=1e-6)


def test_list_models_finds_safetensors_files_only(tmp_path, model):
    save_model(model, tmp_path / "b.safetensors")
    save_model(model, tmp_path / "a.safetensors")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".a-partial.safetensors").write_bytes(b"")  # an atomic write in progress
    assert [p.name for p in list_models(tmp_path)] == ["a.safetensors", "b.safetensors"]
    assert list_models(tmp_path / "missing") == []
    assert all(p.suffix == ".safetensors" for p in list_models())  # the repository's checkpoints/


# --------------------------------------------------------------------------------------------------------
# The widget, driven by hand
# --------------------------------------------------------------------------------------------------------

pytest.importorskip("anywidget", reason="the widget needs anywidget (the webcam extra)")


class Sent:
    """Collects what the widget sends to the browser (content, buffers) and waits for it."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict, list]] = []
        self.lock = threading.Lock()

    def __call__(self, content: dict, buffers: list | None = None) -> None:
        with self.lock:
            self.messages.append((content, list(buffers or [])))

    def of_type(self, kind: str) -> list[tuple[dict, list]]:
        with self.lock:
            return [m for m in self.messages if m[0].get("type") == kind]

    def wait(self, kind: str, count: int, timeout: float = 20.0) -> list[tuple[dict, list]]:
        deadline = time.monotonic() + timeout
        while len(self.of_type(kind)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.of_type(kind)


@pytest.fixture
def model_file(tmp_path, model):
    return save_model(model, tmp_path / "slim.safetensors")


@pytest.fixture
def widget(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("STLIB_OUTPUTS", str(tmp_path / "outputs"))
    w = webcam.WebcamStylizer(model=model_file, resolution="64x48", device="cpu")
    w.sent = Sent()
    w.send = w.sent  # capture instead of sending over a comm
    yield w
    w.close()


def browser_frame(widget, frame_id: int, frame: np.ndarray, t: float = 0.0, base64_text: bool = False) -> None:
    data = encode_jpeg(frame, 90)
    content = {"type": "frame", "id": frame_id, "t": t, "w": frame.shape[1], "h": frame.shape[0]}
    if base64_text:
        widget._on_message(widget, {**content, "b64": base64.b64encode(data).decode(), "reply": "base64"}, [])
    else:
        widget._on_message(widget, content, [memoryview(data)])


def test_widget_lists_models_and_reports_a_missing_network(model_file, model, monkeypatch):
    w = webcam.WebcamStylizer(model=model_file)
    assert [str(model_file.resolve())] == [key for _, key in w.models if key == w.model_key]
    assert w.model is not None and not w.model.training and not w.error
    given = webcam.WebcamStylizer(model=model)
    assert given.models[0] == ["(given network)", "memory:0"] and given.model is model
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        webcam.WebcamStylizer(model=model_file.parent / "missing.safetensors")
    monkeypatch.setattr(webcam, "list_models", lambda folder=None: [])
    empty = webcam.WebcamStylizer()
    assert empty.models == [] and "No style network" in empty.error
    empty.send = Sent()
    empty.running = True
    browser_frame(empty, 1, SyntheticScene(32, 32).frame(0))  # a frame arrives anyway: stop, say why
    assert not empty.running and "No style network" in empty.error
    assert empty.send.of_type("dropped")[0][0]["id"] == 1
    for w_ in (w, given, empty):
        w_.close()


def test_widget_runs_its_network_on_the_configured_backend(model_file, model, fast_bf16):
    forced = webcam.WebcamStylizer(model=model_file, resolution="64x48", backend="channels_last")
    assert forced.backend.name == "channels_last" and forced.backend.model is forced.model
    assert forced.status == "backend: channels_last"
    auto = webcam.WebcamStylizer(model=model, resolution="64x48")  # "auto": timed here (bf16 too on a bf16 CPU)
    assert auto.backend.model is model and auto.status.startswith(f"backend: {auto.backend.name} (fastest here")
    with pytest.raises(ValueError, match="backend must be"):
        WebcamConfig(backend="tpu")
    for w in (forced, auto):
        w.close()


def test_a_damaged_model_file_shows_an_error_in_the_widget(widget, tmp_path):
    bad = tmp_path / "damaged.safetensors"
    bad.write_bytes(b"garbage")
    widget.model_key = str(bad)
    assert "damaged.safetensors" in widget.error


def test_browser_frames_get_the_stylised_frame_back_as_binary(widget, model, frame):
    browser_frame(widget, 1, frame)
    (content, buffers) = widget.sent.of_type("result")[0]
    assert content["id"] == 1 and content["source"] == "browser" and (content["w"], content["h"]) == (64, 48)
    assert "b64" not in content and len(buffers) == 1
    shown = decode_jpeg(buffers[0])
    received = decode_jpeg(encode_jpeg(frame, 90))  # what the kernel decoded
    expected = stylize_frame(model, np.ascontiguousarray(received[:, ::-1]))  # mirrored by default
    assert np.abs(shown.astype(int) - expected).mean() < 6
    assert np.abs(shown.astype(int) - received[:, ::-1]).mean() > 15  # stylised, not echoed
    last_in, last_out = widget.last_frames()
    assert np.array_equal(last_out, expected)
    stats = widget.stats()
    assert stats["processed"] == 1 and stats["network_ms"] > 0 and stats["decode_ms"] > 0


def test_base64_fallback_both_ways(widget, frame):
    browser_frame(widget, 1, frame, base64_text=True)
    content, buffers = widget.sent.of_type("result")[0]
    assert buffers == [] and decode_jpeg(base64.b64decode(content["b64"])).shape == (48, 64, 3)
    # A frame whose binary buffer was lost: the kernel asks for base64 and releases the frame.
    widget._on_message(widget, {"type": "frame", "id": 2, "t": 1.0}, [])
    assert widget.sent.of_type("transport")[-1][0] == {"type": "transport", "mode": "base64"}
    assert widget.sent.of_type("dropped")[-1][0]["id"] == 2
    # Forced from Python (cam.transport = "base64"): binary requests get base64 replies too.
    widget.transport = "base64"
    browser_frame(widget, 3, frame)
    content, buffers = widget.sent.of_type("result")[-1]
    assert content["id"] == 3 and buffers == [] and "b64" in content


def test_frames_that_waited_too_long_are_dropped(widget, frame):
    now = 1000 * time.perf_counter()
    browser_frame(widget, 1, frame, t=now)  # sets the browser-kernel clock offset
    browser_frame(widget, 2, frame, t=now - 5000)  # captured 5 s before: it waited in a queue
    assert [c["id"] for c, _ in widget.sent.of_type("result")] == [1]
    assert [c["id"] for c, _ in widget.sent.of_type("dropped")] == [2]
    assert widget.dropped == 1


def test_strength_and_mirror_apply_to_the_next_frame(widget, frame):
    widget.strength = 0.0
    widget.mirror = False
    browser_frame(widget, 1, frame)
    shown = decode_jpeg(widget.sent.of_type("result")[0][1][0])
    received = decode_jpeg(encode_jpeg(frame, 90))
    assert np.array_equal(shown, decode_jpeg(encode_jpeg(received, widget.quality)))  # the camera frame itself


def test_snapshot_saves_the_last_stylised_frame(widget, frame, tmp_path):
    widget._on_message(widget, {"type": "snapshot"}, [])
    assert "No stylised frame yet" in widget.status
    browser_frame(widget, 1, frame)
    widget._on_message(widget, {"type": "snapshot"}, [])
    path = widget.sent.of_type("snapshot")[0][0]["path"]
    assert path.startswith(str(tmp_path / "outputs" / "webcam_")) and path.endswith(".jpg")
    with Image.open(path) as img:
        assert img.size == (64, 48)
    custom = widget.snapshot(tmp_path / "mine.png")
    assert np.array_equal(np.asarray(Image.open(custom)), widget.last_frames()[1])


def test_file_source_pushes_frames_with_back_pressure(widget):
    widget.source = "file"  # the synthetic scene
    widget.start()
    results = widget.sent.wait("result", 2)
    time.sleep(0.5)  # no acknowledgements: the kernel must stop at two frames in flight
    results = widget.sent.of_type("result")
    assert len(results) == 2 and all(c["source"] == "file" and c["age_ms"] >= 0 for c, _ in results)
    assert decode_jpeg(results[0][1][0]).shape == (48, 64, 3)
    for content, _ in results:
        widget._on_message(widget, {"type": "ack", "id": content["id"]}, [])
    assert len(widget.sent.wait("result", 3)) >= 3  # acknowledged: frames flow again
    widget.stop()
    assert widget._thread is None and not widget.running
    assert "synthetic scene" in widget.status


def test_file_source_plays_a_video_file(model_file, tmp_path):
    from stlib.video import write_video

    clip = write_video(SyntheticScene(80, 60).frames(5), tmp_path / "clip.avi", fps=10)
    w = webcam.WebcamStylizer(model=model_file, source="file", video=str(clip), resolution="64x48")
    w.sent = w.send = Sent()
    w.start()
    content, buffers = w.sent.wait("result", 1)[0]
    assert decode_jpeg(buffers[0]).shape == (48, 64, 3) and "clip.avi" in w.status
    w.close()


def test_missing_kernel_camera_gives_a_clear_error(model_file):
    pytest.importorskip("cv2")
    w = webcam.WebcamStylizer(model=model_file, source="opencv", camera=97)
    w.sent = w.send = Sent()
    w.start()
    deadline = time.monotonic() + 20
    while w.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not w.running and "No camera 97" in w.error
    w.close()


def test_smoothing_keeps_one_stream_per_source_and_restarts_on_a_new_style(widget, frame, model_file, tmp_path):
    with pytest.raises(ValueError, match="smoothing strength"):
        WebcamConfig(smooth=1.5)
    widget.mirror = False
    browser_frame(widget, 1, frame)
    assert widget._smoothers == {}  # off by default: no state kept
    widget.smooth = 0.8
    scene = SyntheticScene(64, 48)
    for frame_id in range(2, 5):
        browser_frame(widget, frame_id, scene.frame(frame_id))
    smoother = widget._smoothers["browser"]
    assert smoother.strength == 0.8 and smoother.last_weight is not None and smoother.last_weight.max() > 0
    # A new style (another network file) is a new stream: the previous frame is forgotten.
    other = model_file.with_name("other.safetensors")
    other.write_bytes(model_file.read_bytes())
    widget.models = [*widget.models, ["other", str(other)]]
    widget.model_key = str(other)
    assert widget._smoothers == {}
    browser_frame(widget, 5, scene.frame(5))
    assert float(widget._smoothers["browser"].last_weight.max()) == 0.0  # the first frame of the new stream
    widget.smooth = 0.0
    browser_frame(widget, 6, scene.frame(6))
    assert "browser" not in widget._smoothers


def test_measure_pipeline_with_smoothing(model):
    (row,) = measure_pipeline(model, ("64x48",), frames=3, smooth=0.5)
    assert row.network_ms > 0 and row.fps > 0
