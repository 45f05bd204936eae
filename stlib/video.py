"""Video frames in and out: read a video file or a synthetic moving scene, stylise every frame, write a clip.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016: the feed-forward network stylises a frame in one forward pass, so a video is stylised frame by
frame with `stlib.stylize.stylize_frame` (uint8 RGB in, uint8 RGB out), the same function the webcam widget
uses. Each frame is stylised on its own, so textures may flicker from frame to frame; M. Ruder, A. Dosovitskiy,
T. Brox, "Artistic Style Transfer for Videos", GCPR 2016, add a temporal loss against that. At run time,
``smooth`` (`stylize_video`, `process_frame`) blends each stylised frame with the previous one warped along the
optical flow of the input frames (`stlib.temporal.TemporalSmoother`, after Bonneel et al. 2015).

Files are read and written with OpenCV (``opencv-python-headless``, the ``webcam`` extra), which handles
video only: the original audio track is not copied, so stylised clips are silent. Outputs are written to a
temporary file beside the target and moved into place when complete (an interrupted run leaves no half file).

`SyntheticScene` is a moving test scene (a slow pan and zoom over the bundled Tübingen photo with a bouncing
ball) for machines without a camera or a video file: the webcam widget's ``file`` source and the tests use it.
Live sources for the webcam widget (`stlib.webcam`) and the desktop app (`stlib.desktop`): `CameraReader` (an
OpenCV camera read by a thread that keeps only the newest frame, so buffered frames never add lag) and
`FileReader` (a video file, looped, or the scene, paced to play in real time); `process_frame` is what every
live source does to a frame (mirror, stylise, blend).
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .temporal import TemporalSmoother, check_smooth

if TYPE_CHECKING:
    from .backends import Backend
    from .transformer import TransformerNet

__all__ = [
    "VIDEO_SUFFIXES",
    "CameraError",
    "CameraReader",
    "FileReader",
    "SyntheticScene",
    "VideoError",
    "VideoInfo",
    "VideoResult",
    "blend",
    "fit_frame",
    "parse_resolution",
    "probe",
    "process_frame",
    "read_frames",
    "stylize_video",
    "write_video",
]

VIDEO_SUFFIXES = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
"""Output file suffixes and the FourCC codec OpenCV writes them with (available in every OpenCV wheel)."""


class VideoError(ValueError):
    """A video file that cannot be read or written; the message is one sentence naming the file."""


class CameraError(RuntimeError):
    """A camera or window that cannot be used; the message is one sentence saying why and what to do."""


def _cv2():
    """OpenCV, or a VideoError saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise VideoError(
            "Video files need OpenCV: pip install opencv-python-headless (or pip install -e '.[webcam]')."
        ) from None
    return cv2


# ----------------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------------


def _check_frame(frame: np.ndarray, what: str = "frame") -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"{what} must be a uint8 (H, W, 3) RGB array, got a {got}.")


def blend(original: np.ndarray, stylised: np.ndarray, strength: float) -> np.ndarray:
    """Mix two uint8 (H, W, 3) frames: 0 gives the original, 1 the stylised frame (the style strength)."""
    _check_frame(original, "original")
    _check_frame(stylised, "stylised")
    if original.shape != stylised.shape:
        raise ValueError(f"blend needs frames of one shape, got {original.shape} and {stylised.shape}.")
    if not (isinstance(strength, (int, float)) and 0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be a number between 0 and 1, got {strength!r}.")
    if strength >= 1.0:
        return stylised
    if strength <= 0.0:
        return original
    mixed = original.astype(np.float32) * (1.0 - strength) + stylised.astype(np.float32) * strength
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def process_frame(
    model: TransformerNet | Backend,
    frame: np.ndarray,
    strength: float = 1.0,
    mirror: bool = False,
    smoother: TemporalSmoother | None = None,
) -> np.ndarray:
    """The per-frame function of every live source: mirror, stylise, smooth over time, blend; uint8 RGB in and out.

    `smoother` (one per stream of frames, `stlib.temporal.TemporalSmoother`) keeps the previous stylised frame.
    """
    from .stylize import stylize_frame

    if mirror:
        frame = np.ascontiguousarray(frame[:, ::-1])
    if strength <= 0.0:
        return frame
    styled = stylize_frame(model, frame)
    if smoother is not None:
        styled = smoother(frame, styled)
    return blend(frame, styled, strength)


def parse_resolution(text: str | tuple[int, int]) -> tuple[int, int]:
    """'320x240' (or a (width, height) tuple) -> (320, 240); a ValueError for anything else."""
    if isinstance(text, tuple) and len(text) == 2 and all(isinstance(v, int) for v in text):
        width, height = text
    else:
        try:
            width, height = (int(part) for part in str(text).lower().replace("×", "x").split("x"))
        except ValueError:
            raise ValueError(f"A resolution is WIDTHxHEIGHT such as 320x240, got {text!r}.") from None
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise ValueError(f"Resolution {width}x{height} is out of range (16 to 4096 pixels per side).")
    return width, height


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale and centre-crop a uint8 (H, W, 3) frame to exactly (height, width, 3) ("cover", no bars)."""
    _check_frame(frame)
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


class SyntheticScene:
    """A moving test scene: a slow pan and zoom over a photo, with a bouncing ball (frame(i) is deterministic)."""

    def __init__(self, width: int = 320, height: int = 240, fps: float = 15.0, photo: str | os.PathLike | None = None):
        from .assets import content_image
        from .images import load_image

        if width < 16 or height < 16:
            raise ValueError(f"SyntheticScene needs at least 16 x 16 pixels, got {width} x {height}.")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        source = load_image(photo if photo is not None else content_image("tubingen"))
        # The photo at 1.4x the frame's cover size, so the moving window always lies inside it.
        scale = 1.4 * max(self.width / source.width, self.height / source.height)
        self._photo = np.asarray(
            source.resize((round(source.width * scale), round(source.height * scale)), Image.Resampling.LANCZOS)
        )  # (H', W', 3)
        yy, xx = np.mgrid[0 : self.height, 0 : self.width]
        self._yy, self._xx = yy.astype(np.float32), xx.astype(np.float32)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as uint8 (height, width, 3) RGB."""
        t = index / self.fps
        ph, pw = self._photo.shape[:2]
        zoom = 1.0 + 0.15 * (1 + math.sin(2 * math.pi * t / 9.0)) / 2  # 1.0 .. 1.15
        win_w, win_h = min(pw, round(self.width * 1.2 / zoom)), min(ph, round(self.height * 1.2 / zoom))
        left = round((pw - win_w) * (1 + math.sin(2 * math.pi * t / 12.0)) / 2)
        top = round((ph - win_h) * (1 + math.cos(2 * math.pi * t / 15.0)) / 2)
        crop = self._photo[top : top + win_h, left : left + win_w]
        out = np.array(Image.fromarray(crop).resize((self.width, self.height), Image.Resampling.BILINEAR))
        radius = max(4.0, 0.08 * min(self.width, self.height))
        span_x, span_y = self.width - 2 * radius, self.height - 2 * radius
        cx = radius + span_x * abs(((t * 0.35) % 2.0) - 1.0)  # a triangle wave: bounces off the sides
        cy = radius + span_y * abs(((t * 0.5) % 2.0) - 1.0)
        inside = (self._xx - cx) ** 2 + (self._yy - cy) ** 2 <= radius**2  # (height, width)
        out[inside] = (230, 40, 40)
        return out

    def frames(self, count: int | None = None) -> Iterator[np.ndarray]:
        """Frames 0, 1, 2, ... (endless when `count` is None)."""
        index = 0
        while count is None or index < count:
            yield self.frame(index)
            index += 1


# ----------------------------------------------------------------------------------------------------
# Reading and writing files
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What OpenCV reports about a video file (``frames`` is an estimate; 0 when unknown)."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int


def _open(path: Path):
    cv2 = _cv2()
    if not path.exists():
        raise VideoError(f"Video file '{path}' does not exist.")
    if path.is_dir():
        raise VideoError(f"'{path}' is a directory, not a video file.")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"'{path}' is not a video file OpenCV can read (unknown format or damaged).")
    return capture


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate and (estimated) frame count of a video file."""
    cv2 = _cv2()
    path = Path(path)
    capture = _open(path)
    try:
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise VideoError(f"'{path}' holds no video stream OpenCV can decode.")
    return VideoInfo(path, width, height, fps if 0 < fps < 1000 else 25.0, frames)


def read_frames(
    path: str | os.PathLike, size: tuple[int, int] | None = None, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """The frames of a video file as uint8 (H, W, 3) RGB, optionally fitted to `size` = (width, height)."""
    cv2 = _cv2()
    path = Path(path)
    capture = _open(path)
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3)
            yield fit_frame(frame, *size) if size is not None else frame
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise VideoError(f"Video file '{path}' holds no frame OpenCV can decode.")


def _check_video_output(path: Path) -> str:
    """The FourCC for `path`, after checking its suffix; a VideoError otherwise."""
    codec = VIDEO_SUFFIXES.get(path.suffix.lower())
    if codec is None:
        raise VideoError(f"Cannot write video '{path}': its name must end in {', '.join(VIDEO_SUFFIXES)}.")
    if path.is_dir():
        raise VideoError(f"Cannot write video '{path}': it is a directory.")
    return codec


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 25.0) -> Path:
    """Atomically write uint8 (H, W, 3) RGB frames (all of one size) as a video file; return its path."""
    cv2 = _cv2()
    path = Path(path)
    codec = _check_video_output(path)
    if not (isinstance(fps, (int, float)) and 0 < fps <= 1000):
        raise ValueError(f"fps must be a number in (0, 1000], got {fps!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(handle)
    tmp = Path(tmp_name)
    writer = None
    count = 0
    try:
        for frame in frames:
            _check_frame(frame)
            h, w = frame.shape[:2]
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), float(fps), (w, h))
                if not writer.isOpened():
                    raise VideoError(f"Cannot write video '{path}': OpenCV has no {codec} encoder for it.")
                size = (h, w)
            elif (h, w) != size:
                raise ValueError(f"Frame {count} of '{path}' is {w} x {h}, but the video is {size[1]} x {size[0]}.")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            count += 1
        if writer is None:
            raise ValueError(f"Cannot write video '{path}': there are no frames.")
        writer.release()
        writer = None
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------------------------------
# Stylising a video
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoResult:
    """What `stylize_video` did: the output file, frame count, size, frame rate and time spent."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    seconds: float

    @property
    def frames_per_second(self) -> float:
        """Processing speed (frames stylised per second of wall time)."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def stylize_video(
    model: TransformerNet | Backend,
    source: str | os.PathLike | Iterable[np.ndarray],
    out: str | os.PathLike,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    strength: float = 1.0,
    progress: bool | Callable[[int, int], None] = False,
    smooth: float = 0.0,
) -> VideoResult:
    """Stylise every frame of a video file (or an iterable of RGB frames) into `out` (silent: no audio).

    `size` = (width, height) fits each frame first (scale + centre crop); `fps` defaults to the input's
    (25 for an iterable); `progress` is True for a tqdm bar or a callback(done, total); `smooth` in [0, 1]
    blends each stylised frame with the previous one moved along the video's motion (`stlib.temporal`; 0: off).
    """
    smoother = _video_smoother(source, smooth)
    out = Path(out)
    _check_video_output(out)
    total = 0
    if isinstance(source, (str, os.PathLike)):
        source_path = Path(source)
        info = probe(source_path)
        if source_path.resolve() == out.resolve():
            raise VideoError(f"Refusing to overwrite the input video '{source_path}' with its stylised version.")
        frames: Iterable[np.ndarray] = read_frames(source_path, size=size, max_frames=max_frames)
        fps = fps or info.fps
        total = min(info.frames, max_frames) if max_frames else info.frames
    else:
        frames = (fit_frame(f, *size) if size is not None else f for f in source)
        fps = fps or 25.0
        total = max_frames or 0
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total or None, unit="frame", desc=f"stylising {out.name}")
    callback = progress if callable(progress) else None
    shape: list[int] = []
    count = 0
    start = time.perf_counter()

    def stylised() -> Iterator[np.ndarray]:
        nonlocal count
        for frame in frames:
            if max_frames is not None and count >= max_frames:
                break
            result = process_frame(model, frame, strength, smoother=smoother) if strength > 0 else frame
            shape[:] = result.shape[:2]
            count += 1
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(count, total)
            yield result

    try:
        path = write_video(stylised(), out, fps=fps)
    finally:
        if bar is not None:
            bar.close()
    return VideoResult(path, count, shape[1], shape[0], float(fps), time.perf_counter() - start)


def _video_smoother(source: object, smooth: float) -> TemporalSmoother | None:
    """The smoother for `smooth` (None when 0); one sentence when it is out of range or the source is one image."""
    from .images import is_image_name

    smooth = check_smooth(smooth)
    single = isinstance(source, np.ndarray) and source.ndim == 3
    if single or (isinstance(source, (str, os.PathLike)) and is_image_name(source)):
        name = "a single image" if single else f"'{source}', a single image"
        raise VideoError(
            f"stylize_video needs video frames, but got {name}: stylise an image with stlib.stylize instead"
            + (" (smoothing works across frames)." if smooth > 0 else ".")
        )
    return TemporalSmoother(smooth) if smooth > 0 else None


# ----------------------------------------------------------------------------------------------------
# Live sources: a camera, or a file / the scene played in real time
# ----------------------------------------------------------------------------------------------------


class CameraReader:
    """An OpenCV camera read by a thread that keeps only the newest frame (no lag from buffered frames)."""

    def __init__(self, index: int) -> None:
        try:
            import cv2
        except ImportError:
            raise CameraError("The opencv source needs OpenCV: pip install opencv-python-headless.") from None
        self._cv2 = cv2
        self._capture = cv2.VideoCapture(index)
        if not self._capture.isOpened():
            self._capture.release()
            raise CameraError(
                f"No camera {index} on the kernel's machine (OpenCV cannot open it); on Colab or a remote "
                "kernel use the browser source, or the file source without a camera."
            )
        self._latest: np.ndarray | None = None
        self._fresh = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._grab, name="stlib-camera", daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        failures = 0
        while not self._stop.is_set():
            ok, bgr = self._capture.read()
            if not ok:
                failures += 1
                if failures > 50:
                    break
                time.sleep(0.02)
                continue
            failures = 0
            self._latest = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
            self._fresh.set()

    def read(self, timeout: float = 2.0) -> np.ndarray | None:
        """The newest frame not yet returned (waits for one), or None when the camera stopped delivering."""
        if not self._fresh.wait(timeout):
            return None
        self._fresh.clear()
        return self._latest

    def close(self) -> None:
        """Stop the grabbing thread and release the camera."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._capture.release()


class FileReader:
    """A video file (looped) or the synthetic scene, paced to play in real time (frames are skipped if slow)."""

    def __init__(self, video: str | None, width: int, height: int) -> None:
        self._start = time.perf_counter()
        self._scene: SyntheticScene | None = None
        self._capture = None
        self._index = -1
        if video:
            info = probe(video)  # a VideoError naming the file when it cannot be read
            import cv2

            self._cv2 = cv2
            self._capture = cv2.VideoCapture(str(info.path))
            self.fps = info.fps
        else:
            self._scene = SyntheticScene(width, height)
            self.fps = self._scene.fps

    def read(self, timeout: float = 2.0) -> np.ndarray | None:
        """The frame due now (waits until the next one is due)."""
        due = int((time.perf_counter() - self._start) * self.fps)
        if due <= self._index:  # faster than the video: wait for its next frame
            time.sleep(max(0.0, (self._index + 1) / self.fps - (time.perf_counter() - self._start)))
            due = self._index + 1
        if self._scene is not None:
            self._index = due
            return self._scene.frame(due)
        frame = None
        while self._index < due:  # skip the frames we are too slow to show
            ok = self._capture.grab()
            if not ok:  # the end: loop
                self._capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                if not self._capture.grab():
                    return None
            self._index += 1
        ok, bgr = self._capture.retrieve()
        if ok:
            frame = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        return frame

    def close(self) -> None:
        """Release the video file."""
        if self._capture is not None:
            self._capture.release()
