"""Tests for stlib.video: blending, fitting, the synthetic scene, video files and `python -m stlib video`."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from stlib import cli
from stlib.checkpoint import save_model
from stlib.stylize import stylize_frame
from stlib.transformer import TransformerNet
from stlib.video import (
    FileReader,
    SyntheticScene,
    VideoError,
    blend,
    fit_frame,
    parse_resolution,
    probe,
    process_frame,
    read_frames,
    stylize_video,
    write_video,
)
from tests.networks import tiny_net

pytest.importorskip("cv2", reason="video files need OpenCV (the webcam extra)")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    return tiny_net()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple:
    """Eight 64 x 48 frames of the synthetic scene and the same frames written as an .avi (MJPG) file."""
    scene = SyntheticScene(64, 48, fps=10)
    frames = list(scene.frames(8))
    path = write_video(frames, tmp_path_factory.mktemp("clip") / "scene.avi", fps=10)
    return frames, path


def test_blend_mixes_the_original_and_the_stylised_frame():
    a = np.zeros((4, 6, 3), np.uint8)
    b = np.full((4, 6, 3), 200, np.uint8)
    assert blend(a, b, 0.0) is a and blend(a, b, 1.0) is b
    assert (blend(a, b, 0.25) == 50).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        blend(a, b, 1.5)
    with pytest.raises(ValueError, match="one shape"):
        blend(a, b[:2], 0.5)
    with pytest.raises(ValueError, match="uint8"):
        blend(a.astype(np.float32), b, 0.5)


def test_fit_frame_scales_to_cover_and_crops_the_centre():
    frame = np.zeros((100, 200, 3), np.uint8)  # 2:1
    frame[:, 90:110] = 255  # a white bar in the middle
    fitted = fit_frame(frame, 40, 40)  # scaled to 40 x 80, centre 40 x 40 kept
    assert fitted.shape == (40, 40, 3) and fitted.dtype == np.uint8
    assert fitted[:, 18:22].mean() > 200 and fitted[:, :10].mean() < 10  # the bar stays in the centre
    assert fit_frame(frame, 200, 100) is frame


def test_synthetic_scene_is_deterministic_and_moves():
    scene = SyntheticScene(80, 60, fps=10)
    first, again, later = scene.frame(0), scene.frame(0), scene.frame(15)
    assert first.shape == (60, 80, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - later).mean() > 5  # 1.5 s later the view and the ball have moved
    assert first.std() > 20  # a photo, not a flat colour
    with pytest.raises(ValueError, match="at least 16"):
        SyntheticScene(8, 8)


def test_write_and_read_a_video_round_trip(clip):
    frames, path = clip
    info = probe(path)
    assert (info.width, info.height, info.fps) == (64, 48, 10)
    back = list(read_frames(path))
    assert len(back) == len(frames)
    errors = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, back, strict=True)]
    assert max(errors) < 12  # MJPG is lossy, but the pictures are the same
    assert [p.name for p in path.parent.iterdir()] == ["scene.avi"]  # atomic: no temporary file left
    fitted = next(read_frames(path, size=(32, 32)))
    assert fitted.shape == (32, 32, 3)


def test_video_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        probe(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4"):
        list(read_frames(text))
    with pytest.raises(VideoError, match="must end in"):
        write_video([np.zeros((8, 8, 3), np.uint8)], tmp_path / "out.gif")
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match="Frame 1"):
        write_video([np.zeros((8, 8, 3), np.uint8), np.zeros((16, 8, 3), np.uint8)], tmp_path / "sizes.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]  # failed writes leave nothing behind


def test_stylize_video_applies_stylize_frame_to_every_frame(tmp_path, clip, model):
    frames, path = clip
    seen = []
    result = stylize_video(model, path, tmp_path / "styled.avi", progress=lambda done, total: seen.append(done))
    assert (result.frames, result.width, result.height, result.fps) == (8, 64, 48, 10)
    assert seen == list(range(1, 9))
    out = list(read_frames(result.path))
    inputs = list(read_frames(path))
    expected = [stylize_frame(model, f) for f in inputs]
    to_expected = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(out, expected, strict=True)])
    to_input = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(out, inputs, strict=True)])
    assert to_expected < 12 and to_input > 3 * to_expected
    half = stylize_video(model, iter(frames), tmp_path / "half.avi", strength=0.0, max_frames=3)
    assert half.frames == 3
    with pytest.raises(VideoError, match="Refusing to overwrite"):
        stylize_video(model, path, path)


def test_cli_video_round_trip_and_one_line_errors(tmp_path, clip, model, capsys):
    _, path = clip
    model_file = save_model(model, tmp_path / "slim.safetensors")
    out = tmp_path / "out.mp4"
    code = cli.main(["video", str(path), "-o", str(out), "--model", str(model_file), "--size", "32x24", "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "wrote" in stdout and "8 frames" in stdout and "no audio" in stdout
    assert (probe(out).width, probe(out).height) == (32, 24)

    code = cli.main(["video", str(tmp_path / "missing.mp4"), "-o", str(out), "--model", str(model_file)])
    _, stderr = capsys.readouterr()
    assert code == 2 and stderr.startswith("error: ") and "missing.mp4" in stderr and stderr.count("\n") == 1
    code = cli.main(["video", str(path), "-o", str(tmp_path / "out.txt"), "--model", str(model_file)])
    _, stderr = capsys.readouterr()
    assert code == 2 and "out.txt" in stderr and stderr.count("\n") == 1


def test_parse_resolution():
    assert parse_resolution("320x240") == (320, 240) == parse_resolution("320×240") == parse_resolution((320, 240))
    for bad in ("320", "axb", "8x8", "100000x10"):
        with pytest.raises(ValueError):
            parse_resolution(bad)


def test_process_frame_mirrors_stylises_and_blends(model):
    frame = SyntheticScene(64, 48).frame(3)
    original = frame.copy()
    flipped = np.ascontiguousarray(frame[:, ::-1])
    assert np.array_equal(process_frame(model, frame), stylize_frame(model, frame))
    assert np.array_equal(process_frame(model, frame, mirror=True), stylize_frame(model, flipped))
    assert np.array_equal(process_frame(model, frame, strength=0.0, mirror=True), flipped)
    half = process_frame(model, frame, strength=0.5).astype(int)
    full = stylize_frame(model, frame).astype(int)
    assert np.abs(half - (full + frame.astype(int)) / 2).max() <= 1
    assert np.array_equal(frame, original)  # pure: the input is untouched


def test_file_reader_plays_the_scene_or_a_file_in_real_time(clip):
    frames, path = clip
    scene = FileReader(None, 64, 48)
    first, second = scene.read(), scene.read()
    assert first.shape == second.shape == (48, 64, 3) and not np.array_equal(first, second)  # a new frame each time
    scene.close()
    looped = FileReader(str(path), 64, 48)
    start = time.perf_counter()
    read = [looped.read() for _ in range(12)]  # 8 frames at 10 fps, then the start again
    assert all(f is not None and f.shape == (48, 64, 3) for f in read)
    assert time.perf_counter() - start >= 1.0  # paced: 12 frames at 10 fps take about 1.1 s
    looped.close()


class Flicker(torch.nn.Module):
    """A per-frame filter that flickers: the frame plus a new coarse random texture at every call."""

    def __init__(self) -> None:
        super().__init__()
        self.amount = torch.nn.Parameter(torch.tensor(0.12), requires_grad=False)
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        grain = torch.randn(1, 1, h // 4 + 1, w // 4 + 1, generator=self.generator) * self.amount  # (1, 1, h', w')
        return (x + grain.repeat_interleave(4, 2).repeat_interleave(4, 3)[..., :h, :w]).clamp(0, 1)


def test_stylize_video_smooths_along_the_motion(tmp_path, clip):
    from stlib.temporal import warping_error

    frames, path = clip
    frames = list(SyntheticScene(160, 120, fps=10).frames(8))
    plain = stylize_video(Flicker().eval(), iter(frames), tmp_path / "plain.avi", fps=10)
    smooth = stylize_video(Flicker().eval(), iter(frames), tmp_path / "smooth.avi", fps=10, smooth=0.8)
    assert smooth.frames == plain.frames == 8
    before = warping_error(list(read_frames(plain.path)), inputs=frames)
    assert warping_error(list(read_frames(smooth.path)), inputs=frames) < 0.5 * before
    with pytest.raises(ValueError, match=r"^The smoothing strength must be a number from 0 \(off\) to 1, got 1\.5\.$"):
        stylize_video(Flicker().eval(), path, tmp_path / "bad.avi", smooth=1.5)


def test_cli_video_smooth_option(tmp_path, clip, model, capsys):
    _, path = clip
    model_file = save_model(model, tmp_path / "slim.safetensors")
    out = tmp_path / "smooth.mp4"
    code = cli.main(["video", str(path), "-o", str(out), "--model", str(model_file), "--smooth", "0.5", "--quiet"])
    assert code == 0 and probe(out).frames >= 7
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["video", str(path), "-o", str(out), "--model", str(model_file), "--smooth", "2"])
    _, stderr = capsys.readouterr()
    assert "--smooth" in stderr and "between 0 and 1" in stderr
