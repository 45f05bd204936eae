"""Tests for stlib.temporal: the warping error on motions with known answers, and the flow-guided smoothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from stlib import assets, images
from stlib.temporal import (
    SmoothConfig,
    TemporalSmoother,
    check_smooth,
    clip_motion,
    contrast_blend,
    optical_flow,
    smooth_frames,
    visible_mask,
    warp,
    warping_error,
)
from stlib.video import SyntheticScene, VideoError, read_frames, stylize_video

cv2 = pytest.importorskip("cv2", reason="optical flow needs OpenCV (the webcam extra)")

SIZE = (120, 160)  # (H, W) of the synthetic clips


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """The bundled photo, 240 x 320 uint8 RGB: a textured scene to move a window over."""
    return np.asarray(images.load_image(assets.content_image("tubingen"), size=(320, 240)))


def shifted_clip(photo: np.ndarray, count: int = 6, step: tuple[int, int] = (2, 3)) -> list[np.ndarray]:
    """`count` crops of the photo whose window moves by `step` = (dy, dx) px per frame: a pure shift."""
    h, w = SIZE
    tops, lefts = [20 + t * step[0] for t in range(count)], [30 + t * step[1] for t in range(count)]
    return [np.ascontiguousarray(photo[y : y + h, x : x + w]) for y, x in zip(tops, lefts, strict=True)]


def colour_map(frame: np.ndarray) -> np.ndarray:
    """A shift-equivariant filter: each pixel's colour through a fixed curve (a stand-in for a style)."""
    x = frame.astype(np.float32) / 255
    return np.clip(255 * (1 - x) ** 1.5 + 0.5, 0, 255).astype(np.uint8)[..., ::-1].copy()


def test_optical_flow_recovers_a_shift_and_warp_undoes_it(photo):
    a, b = shifted_clip(photo, 2)
    flow = optical_flow(b, a)  # b(x) ~ a(x + flow): the content moved by -step, so flow ~ +step
    inner = (slice(10, -10), slice(10, -10))
    assert np.allclose(np.median(flow[inner].reshape(-1, 2), axis=0), (3, 2), atol=0.1)
    moved = warp(a.astype(np.float32), flow)
    assert np.abs(moved[inner] - b[inner]).mean() < 3  # grey levels


def test_visible_mask_hides_the_pixels_that_came_into_view(photo):
    a, b = shifted_clip(photo, 2, step=(0, 6))
    visible = visible_mask(optical_flow(b, a), optical_flow(a, b))
    # b's right edge shows 6 columns a did not have; its left part was all in a.
    assert visible[:, -4:].mean() < 0.1
    assert visible[:, :100].mean() > 0.95


def test_warping_error_is_zero_for_a_shift_equivariant_filter(photo):
    frames = shifted_clip(photo)
    motions = clip_motion(frames)
    floor = warping_error(frames, motions=motions)
    styled = warping_error([colour_map(f) for f in frames], motions=motions)
    assert floor < 2e-4 and styled < 2e-4  # both follow the motion (bilinear resampling is all that is left)


def test_warping_error_of_a_random_colour_per_frame_is_its_known_size(photo):
    frames = shifted_clip(photo)
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-40, 40, size=(len(frames), 3)).round()  # grey levels per frame and channel
    base = [np.clip(f.astype(np.float32), 45, 210) for f in frames]  # room for the offsets: no clipping
    outputs = [(b + o).astype(np.uint8) for b, o in zip(base, offsets, strict=True)]
    expected = np.mean([((offsets[t] - offsets[t - 1]) / 255) ** 2 for t in range(1, len(frames))])
    got = warping_error(outputs, inputs=frames)
    assert got == pytest.approx(expected, rel=0.1)
    assert got > 50 * warping_error(frames, inputs=frames)


def test_warping_error_explains_wrong_inputs():
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="single image"):
        warping_error(frame, inputs=[frame])
    with pytest.raises(ValueError, match="2 input frames but 3 output frames"):
        warping_error([frame] * 3, inputs=[frame] * 2)


def flickering(frames: list[np.ndarray], amount: float = 30.0, seed: int = 0) -> list[np.ndarray]:
    """The filter's output with a new random texture in every frame (what a network's flicker looks like)."""
    rng = np.random.default_rng(seed)
    noisy = []
    for frame in frames:
        grain = rng.normal(0, amount, size=(frame.shape[0] // 4, frame.shape[1] // 4, 1)).repeat(4, 0).repeat(4, 1)
        noisy.append(np.clip(colour_map(frame) + grain, 0, 255).astype(np.uint8))
    return noisy


def test_smoothing_halves_the_flicker_and_keeps_the_picture(photo):
    frames = shifted_clip(photo, count=10)
    outputs = flickering(frames)
    motions = clip_motion(frames)
    before = warping_error(outputs, motions=motions)
    after = warping_error(list(smooth_frames(frames, outputs, strength=0.7)), motions=motions)
    assert after < 0.5 * before
    steady = list(smooth_frames(frames, [colour_map(f) for f in frames], strength=0.8))
    # Without flicker the smoothing changes (nearly) nothing: no drift, no blur building up over the frames.
    assert np.abs(steady[-1].astype(np.float32) - colour_map(frames[-1]))[8:-8, 8:-8].mean() < 2


@pytest.mark.parametrize("changes", [{}, {"check": False}, {"contrast": False}])
def test_the_helper_threads_change_the_time_not_the_frames(photo, changes):
    """`parallel` runs the steps that do not wait for each other at once; the frames are the same, bit for bit,
    also with two smoothers working at the same time (each has its own flow objects and arrays)."""
    frames = shifted_clip(photo, count=6)
    streams = [flickering(frames), [colour_map(f) for f in frames]]
    alone = [list(smooth_frames(frames, o, 0.8, SmoothConfig(parallel=False, **changes))) for o in streams]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda o: list(smooth_frames(frames, o, 0.8, SmoothConfig(**changes))), streams))
    for want, got in zip(alone, together, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_strength_zero_returns_the_outputs_unchanged(photo):
    frames = shifted_clip(photo, count=3)
    outputs = flickering(frames)
    for got, want in zip(smooth_frames(frames, outputs, strength=0.0), outputs, strict=True):
        assert np.array_equal(got, want)


def test_a_scene_cut_resets_the_blend(photo):
    """Two clips joined: the first frame of the second shot is its own output, with no ghost of the first shot."""
    first = shifted_clip(photo, count=4)
    painting = np.asarray(images.load_image(assets.style_image("starry_night"), size=(320, 240)))
    second = shifted_clip(painting, count=3)
    frames, outputs = first + second, flickering(first + second)
    smoother = TemporalSmoother(0.9)
    result = [smoother(f, o) for f, o in zip(frames, outputs, strict=True)]
    assert smoother.resets == 1 and smoother.blended == len(frames) - 2  # every frame but the first and the cut
    assert np.array_equal(result[4], outputs[4])
    assert not np.array_equal(result[3], outputs[3])  # within a shot it did blend


@pytest.mark.parametrize("check", [True, False])
def test_no_ghost_trail_behind_a_moving_object(check):
    """A disc crosses a still scene: where it was, the output is the scene's, not a fading copy of the disc."""
    scene = SyntheticScene(160, 120, fps=30)
    background = scene.frame(0)
    frames, centres = [], []
    yy, xx = np.mgrid[0:120, 0:160]
    for t in range(8):
        frame, cx = background.copy(), 40 + 10 * t
        frame[(yy - 60) ** 2 + (xx - cx) ** 2 <= 15**2] = (20, 200, 40)
        frames.append(frame)
        centres.append(cx)
    outputs = [colour_map(f) for f in frames]
    smoother = TemporalSmoother(0.9, SmoothConfig(check=check))  # without the second flow the colours decide
    result = [smoother(f, o) for f, o in zip(frames, outputs, strict=True)]
    assert smoother.blended == len(frames) - 1
    # The pixels the disc covered two frames ago and no longer covers: the trail a ghost would leave.
    trail = ((yy - 60) ** 2 + (xx - centres[-3]) ** 2 <= 15**2) & ((yy - 60) ** 2 + (xx - centres[-1]) ** 2 > 17**2)
    error = np.abs(result[-1].astype(np.float32) - outputs[-1])[trail].mean()
    assert error < 6  # grey levels: the scene came back (the disc's colour is > 100 away)


def test_contrast_blend_keeps_the_contrast_of_two_different_textures():
    rng = np.random.default_rng(1)
    a = rng.normal(128, 30, size=(64, 64, 3)).astype(np.float32)
    b = rng.normal(128, 30, size=(64, 64, 3)).astype(np.float32)
    half = np.full((64, 64), 0.5, np.float32)
    plain = 0.5 * (a + b)
    kept = contrast_blend(a, b, half)
    assert plain.std() < 0.8 * a.std()  # plain averaging loses contrast (1/sqrt(2) of it)
    assert kept.std() == pytest.approx(a.std(), rel=0.1)
    assert np.allclose(contrast_blend(a, a, half), a, atol=1e-3)  # where the two agree, nothing changes


@pytest.mark.parametrize("keep", [0.0, 0.3, 1.0])
def test_contrast_blend_keeps_a_fraction_of_the_current_finest_band(keep):
    """Even where the blend takes all of the previous frame, `keep` of the current frame's finest band (its exact
    shape, which no gain can give back) is in the result: the regression of one on the other is `keep`."""
    rng = np.random.default_rng(3)
    a, b = (rng.normal(128, 30, size=(96, 128, 3)).astype(np.float32) for _ in range(2))
    result = contrast_blend(a, b, np.ones((96, 128), np.float32), keep=keep)

    def finest(x: np.ndarray) -> np.ndarray:
        return (x - cv2.blur(x, (3, 3)))[8:-8, 8:-8].ravel()  # x minus its 3x3 mean, away from the borders

    own, got = finest(a), finest(result)
    assert float(own @ got / (own @ own)) == pytest.approx(keep, abs=0.06)


def test_contrast_blend_on_uint8_frames_is_the_same_blend():
    """The smoother's path (uint8 in and out, statistics on a coarser grid) keeps the contrast as the float one."""
    rng = np.random.default_rng(2)
    a, b = (np.clip(rng.normal(128, 30, size=(96, 128, 3)), 0, 255).astype(np.uint8) for _ in range(2))
    weight = np.full((96, 128), 0.5, np.float32)
    kept = contrast_blend(a, b, weight, dtype=np.uint8)
    exact = contrast_blend(a.astype(np.float32), b.astype(np.float32), weight)
    assert kept.dtype == np.uint8 and kept.std() == pytest.approx(a.std(), rel=0.1)
    assert np.abs(kept - exact)[8:-8, 8:-8].mean() < 2  # grey levels
    assert np.array_equal(contrast_blend(a, a, weight, dtype=np.uint8), a)  # where the two agree, nothing changes


def test_the_returned_frame_is_the_callers(photo):
    """Writing into a returned frame (a caption, a blend with the input) does not change what the next frame sees."""
    frames = shifted_clip(photo, count=3)
    outputs = flickering(frames)
    kept, changed = TemporalSmoother(0.8), TemporalSmoother(0.8)
    for frame, output in zip(frames[:2], outputs[:2], strict=True):
        kept(frame, output)
        changed(frame, output)[:] = 0
    assert np.array_equal(kept(frames[2], outputs[2]), changed(frames[2], outputs[2]))


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", None, True, float("nan")])
def test_a_strength_out_of_range_is_one_sentence(bad):
    with pytest.raises(ValueError, match=r"^The smoothing strength must be a number from 0 \(off\) to 1, got .*\.$"):
        check_smooth(bad)
    with pytest.raises(ValueError, match="smoothing strength"):
        TemporalSmoother(bad)


def test_smoothing_a_single_image_is_one_sentence(tmp_path, photo):
    frame = shifted_clip(photo, 1)[0]
    with pytest.raises(ValueError, match=r"^Smoothing needs a sequence of video frames, but the input frames are a"):
        list(smooth_frames(frame, frame))
    image = images.save_image(Image.fromarray(frame), tmp_path / "photo.png")
    with pytest.raises(VideoError, match=r"photo.png', a single image: .*\(smoothing works across frames\)\.$"):
        stylize_video(colour_map, image, tmp_path / "out.avi", smooth=0.5)
    with pytest.raises(VideoError, match="single image"):
        stylize_video(colour_map, frame, tmp_path / "out.avi")


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="flow method must be one of"):
        SmoothConfig(method="lucas-kanade")
    with pytest.raises(ValueError, match="flow scale"):
        SmoothConfig(scale=2.0)
    with pytest.raises(ValueError, match="window must be a whole number of pixels >= 3, got 1"):
        SmoothConfig(window=1)
    with pytest.raises(ValueError, match="keep must be a number in \\[0, 1\\], got 1.5"):
        SmoothConfig(keep=1.5)


@pytest.mark.parametrize("check", [True, False])
def test_two_real_clips_joined_leave_no_ghost(shared_dir, check):
    """A webcam clip then the room clip (Intel IoT devkit sample videos, CC BY 4.0): the cut resets the blend."""
    video = shared_dir / "video"
    first = list(read_frames(video / "book.mkv", size=(320, 240), max_frames=5))
    second = list(read_frames(video / "one-by-one-person-detection.mp4", size=(320, 240), max_frames=3))
    frames = first + second
    outputs = flickering(frames)
    smoother = TemporalSmoother(0.9, SmoothConfig(check=check, min_visible=0.7 if check else 0.85))
    result = [smoother(f, o) for f, o in zip(frames, outputs, strict=True)]
    assert smoother.resets == 1
    assert np.array_equal(result[5], outputs[5])
    assert warping_error(result[:5], inputs=first) < 0.5 * warping_error(outputs[:5], inputs=first)
