"""Live webcam stylisation inside Jupyter: a widget (anywidget) for the browser's camera.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016: one forward pass of a trained image transformation network stylises a frame, fast enough for
video. Every source below goes through the same pure per-frame function, `stlib.video.process_frame` (mirror,
then `stlib.stylize.stylize_frame` under ``torch.inference_mode()``, then a blend with the original frame for
the style strength), as does the desktop app (`stlib.desktop`).

The loop of `WebcamStylizer` (the kernel may be remote, e.g. on Colab, so the camera is read by the browser)::

    browser: getUserMedia -> <video> -> canvas (downsized) -> JPEG --custom message--> kernel
    kernel:  JPEG decode -> process_frame -> JPEG encode --custom message--> browser: draw on a canvas

At most two frames are in flight (`WebcamConfig.max_in_flight`): the browser captures a new frame only when
fewer are waiting, so a slow network or model lowers the frame rate instead of building up lag, and the
kernel drops frames that waited in its queue for more than `WebcamConfig.max_age_ms`. JPEG bytes travel as
binary buffers of the widget's custom messages; when a front end drops buffers, both ends switch to base64
text automatically. Sources: ``browser`` (the default; JupyterLab, Notebook 7, Colab), ``opencv`` (a camera
on the kernel's own machine, `stlib.video.CameraReader`) and ``file`` (a video file, or
`stlib.video.SyntheticScene` when none is given: what runs when there is no camera; `stlib.video.FileReader`);
with the last two the kernel pushes frames and the browser acknowledges each one it has drawn. Each network runs
on the backend `stlib.backends.make_backend` chooses (``"auto"``: the fastest correct one here).
"""

from __future__ import annotations

import base64
import io
import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import traitlets as t
from PIL import Image

from .temporal import TemporalSmoother, check_smooth
from .video import (
    CameraError,
    CameraReader,
    FileReader,
    SyntheticScene,
    VideoError,
    fit_frame,
    parse_resolution,
    process_frame,
)

if TYPE_CHECKING:
    from .backends import Backend
    from .transformer import TransformerNet

__all__ = [
    "RESOLUTIONS",
    "SOURCES",
    "PipelineTiming",
    "WebcamConfig",
    "WebcamStylizer",
    "decode_jpeg",
    "encode_jpeg",
    "list_models",
    "measure_pipeline",
]

SOURCES = ("browser", "opencv", "file")
"""Where frames come from: the browser's camera, a camera on the kernel's machine, or a video file / scene."""

RESOLUTIONS = ("160x120", "320x240", "480x360", "640x480")
"""The resolutions offered by the widget (width x height of the frames the network sees)."""


@dataclass
class WebcamConfig:
    """Settings of the webcam widget and the desktop app; `WebcamStylizer(**fields)` takes the same names."""

    source: str = "browser"  # "browser", "opencv" or "file" (see SOURCES)
    resolution: str = "320x240"  # frames are captured (browser) or fitted (kernel sources) to this size
    mirror: bool = True  # flip left-right, like a mirror (a selfie camera)
    strength: float = 1.0  # 0: the original frame, 1: fully stylised
    smooth: float = 0.0  # less flicker: blend with the previous frame moved along the motion (stlib.temporal); 0: off
    quality: int = 80  # JPEG quality of the frames in both directions
    max_in_flight: int = 2  # frames sent but not yet answered (back-pressure)
    max_age_ms: float = 1500.0  # the kernel drops frames that waited longer than this before processing
    video: str | None = None  # "file" source: a video file; None: a synthetic moving scene
    camera: int = 0  # "opencv" source: the camera index on the kernel's machine
    transport: str = "auto"  # "auto" (binary buffers, base64 when they do not arrive), "binary" or "base64"
    device: str | None = None  # torch device; None: CUDA when available, else the CPU
    backend: str = "auto"  # how to run the network (stlib.backends): "auto" picks the fastest correct one here

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}.")
        parse_resolution(self.resolution)
        if not (isinstance(self.strength, (int, float)) and 0.0 <= self.strength <= 1.0):
            raise ValueError(f"strength must be a number between 0 and 1, got {self.strength!r}.")
        check_smooth(self.smooth)
        if not (isinstance(self.quality, int) and 10 <= self.quality <= 100):
            raise ValueError(f"quality must be an integer between 10 and 100, got {self.quality!r}.")
        if not (isinstance(self.max_in_flight, int) and 1 <= self.max_in_flight <= 8):
            raise ValueError(f"max_in_flight must be an integer between 1 and 8, got {self.max_in_flight!r}.")
        if self.transport not in ("auto", "binary", "base64"):
            raise ValueError(f"transport must be 'auto', 'binary' or 'base64', got {self.transport!r}.")
        from .backends import BACKENDS

        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {', '.join(BACKENDS)}, got {self.backend!r}.")


# ----------------------------------------------------------------------------------------------------
# The per-frame pipeline
# ----------------------------------------------------------------------------------------------------


def encode_jpeg(frame: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a uint8 (H, W, 3) RGB frame."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes | bytearray | memoryview) -> np.ndarray:
    """A uint8 (H, W, 3) RGB frame from JPEG (or PNG) bytes; ValueError if they are not an image."""
    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:  # PIL raises several types for damaged data
        raise ValueError(f"A frame could not be decoded ({type(err).__name__}: {err}).") from None


@dataclass(frozen=True)
class PipelineTiming:
    """Kernel-side cost of one resolution in `measure_pipeline` (milliseconds per frame, and frames/s)."""

    width: int
    height: int
    frames: int
    encode_ms: float  # the browser's JPEG encode, done here with PIL
    decode_ms: float  # kernel: JPEG -> array
    network_ms: float  # kernel: process_frame (the network)
    reply_ms: float  # kernel: array -> JPEG
    fps: float  # frames / total time of the four steps

    @property
    def resolution(self) -> str:
        """'320x240'."""
        return f"{self.width}x{self.height}"


def measure_pipeline(
    model: TransformerNet | Backend,
    resolutions: tuple[str, ...] = ("320x240", "640x480"),
    frames: int = 10,
    quality: int = 80,
    strength: float = 1.0,
    warmup: int = 1,
    smooth: float = 0.0,
) -> list[PipelineTiming]:
    """Run the widget's frame pipeline (encode, decode, network, encode) over synthetic frames; time each step.

    This is the loop without the browser and the transport, so its fps is an upper bound of the widget's;
    `smooth` > 0 adds the temporal smoothing to the network step.
    """
    rows = []
    for resolution in resolutions:
        width, height = parse_resolution(resolution)
        scene = SyntheticScene(width, height)
        smoother = TemporalSmoother(smooth) if check_smooth(smooth) > 0 else None
        totals = {"encode": 0.0, "decode": 0.0, "network": 0.0, "reply": 0.0}
        for index in range(warmup + frames):
            frame = scene.frame(index)
            t0 = time.perf_counter()
            sent = encode_jpeg(frame, quality)
            t1 = time.perf_counter()
            received = decode_jpeg(sent)
            t2 = time.perf_counter()
            styled = process_frame(model, received, strength=strength, smoother=smoother)
            t3 = time.perf_counter()
            encode_jpeg(styled, quality)
            t4 = time.perf_counter()
            if index >= warmup:
                for key, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    totals[key] += seconds
        ms = {key: 1000 * value / frames for key, value in totals.items()}
        rows.append(
            PipelineTiming(
                width,
                height,
                frames,
                ms["encode"],
                ms["decode"],
                ms["network"],
                ms["reply"],
                frames / sum(totals.values()) if sum(totals.values()) > 0 else float("inf"),
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------


def list_models(folder: str | os.PathLike | None = None) -> list[Path]:
    """The model files (``*.safetensors``) in `folder` (default: the repository's ``checkpoints/``), sorted."""
    if folder is None:
        from .assets import repo_root

        try:
            folder = repo_root() / "checkpoints"
        except FileNotFoundError:
            return []
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file() and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------------
# The widget
# ----------------------------------------------------------------------------------------------------


try:
    from anywidget import AnyWidget as _WidgetBase
except ImportError:  # the webcam extra is not installed: the widget says so when it is created

    class _WidgetBase:  # type: ignore[no-redef]
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise ImportError("WebcamStylizer needs anywidget: pip install anywidget (or pip install -e '.[webcam]').")


_ASSETS = Path(__file__).resolve().parent


class WebcamStylizer(_WidgetBase):
    """Live style transfer of the browser's camera (or a kernel-side camera / video) inside a notebook.

    ``WebcamStylizer(model=...)`` takes a model file, a loaded `TransformerNet` or None (the first file in
    ``checkpoints/``), plus any `WebcamConfig` field. Display it, press Start. ``start()``, ``stop()``,
    ``snapshot()`` and ``stats()`` do the same from Python. Each network runs on the backend of
    ``WebcamConfig.backend`` (`stlib.backends`; "auto" times the candidates once per network when it is loaded,
    and the first use of a network includes its ONNX export, cached afterwards).
    """

    _esm = _ASSETS / "webcam.js"
    _css = _ASSETS / "webcam.css"

    models = t.List(t.List(t.Unicode())).tag(sync=True)  # [[label, key], ...] for the picker
    model_key = t.Unicode("").tag(sync=True)  # the chosen entry of `models`
    source = t.Unicode("browser").tag(sync=True)
    resolution = t.Unicode("320x240").tag(sync=True)
    resolutions = t.List(t.Unicode(), default_value=list(RESOLUTIONS)).tag(sync=True)
    mirror = t.Bool(True).tag(sync=True)
    strength = t.Float(1.0, min=0.0, max=1.0).tag(sync=True)
    smooth = t.Float(0.0, min=0.0, max=1.0).tag(sync=True)  # temporal smoothing (0: off)
    quality = t.Int(80).tag(sync=True)
    max_in_flight = t.Int(2).tag(sync=True)
    transport = t.Unicode("auto").tag(sync=True)
    running = t.Bool(False).tag(sync=True)
    status = t.Unicode("").tag(sync=True)  # an information line (kernel -> browser)
    error = t.Unicode("").tag(sync=True)  # a problem to show, with a switch to the file source
    # Reported by the browser about once a second:
    frames = t.Int(0).tag(sync=True)  # stylised frames drawn since the widget was shown
    fps = t.Float(0.0).tag(sync=True)  # frames drawn per second (last few seconds)
    latency_ms = t.Float(0.0).tag(sync=True)  # capture to display of the last frame

    def __init__(self, model: str | os.PathLike | TransformerNet | None = None, **settings: Any) -> None:
        config = WebcamConfig(**settings)
        super().__init__()
        self.config = config
        from .hardware import default_device

        self._device = config.device or default_device()
        self._loaded: dict[str, Any] = {}  # key -> TransformerNet
        self._backends: dict[str, Backend] = {}  # key -> the same network on its backend
        self._lock = threading.Lock()
        self._last_input: np.ndarray | None = None
        self._last_output: np.ndarray | None = None
        self._smoothers: dict[str, TemporalSmoother] = {}  # per stream ("browser", "kernel"): the previous frame
        self._ids = itertools.count(1)
        self._pending: dict[int, float] = {}  # kernel sources: frame id -> send time (perf_counter)
        self._pending_lock = threading.Condition()
        self._clock_offset = float("inf")  # min(kernel ms - browser ms) over received frames
        self._reply_base64 = config.transport == "base64"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.processed = 0  # frames stylised by the kernel
        self.dropped = 0  # frames the kernel dropped as too old
        self.timings: deque[dict[str, float]] = deque(maxlen=50)  # per frame: decode/network/encode ms
        self._set_models(model)
        with self.hold_trait_notifications():
            names = ("source", "resolution", "mirror", "strength", "smooth", "quality", "max_in_flight", "transport")
            for name in names:
                setattr(self, name, getattr(config, name))
        self.observe(self._on_model_key, names="model_key")
        self.observe(self._on_transport, names="transport")
        self.observe(self._on_running_or_source, names=["running", "source", "resolution"])
        self.observe(self._reset_smoothing, names=["model_key", "source", "resolution", "mirror", "running"])
        self.on_msg(self._on_message)
        self._on_model_key({"new": self.model_key})

    # -- models ----------------------------------------------------------------------------------

    def _set_models(self, model) -> None:
        from .transformer import TransformerNet

        entries = [[p.stem, str(p)] for p in list_models()]
        chosen = ""
        if isinstance(model, TransformerNet):
            key = "memory:0"
            self._loaded[key] = model.eval().to(self._device)
            self._bind_backend(key)
            entries.insert(0, ["(given network)", key])
            chosen = key
        elif model is not None:
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"Model file '{path}' does not exist.")
            key = str(path.resolve())
            known = {str(Path(k).resolve()): k for _, k in entries}
            if key in known:
                chosen = known[key]
            else:
                entries.insert(0, [path.stem, key])
                chosen = key
        elif entries:
            chosen = entries[0][1]
        self.models = entries
        self.model_key = chosen
        if not entries:
            self.error = (
                "No style network: checkpoints/ holds no .safetensors file. Train one (notebook 03, or "
                "python -m stlib train) or pass WebcamStylizer(model=PATH)."
            )

    def _on_model_key(self, change: dict) -> None:
        key = change["new"]
        if not key or key in self._loaded:
            return
        from .checkpoint import load_model

        try:
            self._loaded[key] = load_model(key, device=self._device, task="style")
        except (OSError, ValueError) as err:
            self.error = str(err)
            return
        self._bind_backend(key)

    def _bind_backend(self, key: str) -> None:
        """Run network `key` through the configured backend ("auto": the fastest correct one, timed here)."""
        from .backends import BackendError, make_backend

        width, height = parse_resolution(self.config.resolution)
        try:
            self._backends[key] = backend = make_backend(self._loaded[key], self.config.backend, probe=(height, width))
        except BackendError as err:
            self.error = str(err)
            return
        self.status = backend.summary()

    def _on_transport(self, change: dict) -> None:
        self._reply_base64 = change["new"] == "base64"

    @property
    def model(self) -> TransformerNet | None:
        """The network in use (a TransformerNet in eval mode), or None."""
        return self._loaded.get(self.model_key)

    # -- the per-frame step (every source) -------------------------------------------------------

    @property
    def backend(self) -> Backend | None:
        """The network in use bound to its backend (`stlib.backends.Backend`), or None."""
        return self._backends.get(self.model_key)

    def _reset_smoothing(self, change: dict | None = None) -> None:
        """Forget the previous frames (a new style, source, size or mirror image is a new stream)."""
        self._smoothers = {}  # a new dict: a frame being processed keeps its own smoother

    def _smoother(self, stream: str) -> TemporalSmoother | None:
        """The temporal smoother of `stream` at the current `smooth` (None when off)."""
        if self.smooth <= 0:
            self._smoothers.pop(stream, None)
            return None
        smoother = self._smoothers.setdefault(stream, TemporalSmoother(self.smooth))
        smoother.strength = check_smooth(self.smooth)
        return smoother

    def _process(self, frame: np.ndarray, stream: str = "browser") -> tuple[bytes, dict[str, float]]:
        model = self.backend
        if model is None:
            raise CameraError(self.error or "No style network is loaded.")
        t0 = time.perf_counter()
        smoother = self._smoother(stream)
        styled = process_frame(model, frame, strength=self.strength, mirror=self.mirror, smoother=smoother)
        t1 = time.perf_counter()
        data = encode_jpeg(styled, self.quality)
        t2 = time.perf_counter()
        with self._lock:
            self._last_input, self._last_output = frame, styled
        self.processed += 1
        return data, {"network_ms": 1000 * (t1 - t0), "encode_ms": 1000 * (t2 - t1)}

    def _send_frame(self, content: dict, data: bytes) -> None:
        if self._reply_base64:
            self.send({**content, "b64": base64.b64encode(data).decode("ascii")})
        else:
            self.send(content, buffers=[data])

    # -- messages from the browser ---------------------------------------------------------------

    def _on_message(self, _widget, content: dict, buffers: list) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "frame":
            self._on_frame(content, buffers)
        elif kind == "ack":
            with self._pending_lock:
                self._pending.pop(content.get("id"), None)
                self._pending_lock.notify_all()
        elif kind == "transport":
            self._reply_base64 = content.get("mode") == "base64"
        elif kind == "snapshot":
            try:
                path = self.snapshot()
                self.send({"type": "snapshot", "path": str(path)})
                self.status = f"saved {path}"
            except (CameraError, OSError) as err:
                self.status = str(err)

    def _on_frame(self, content: dict, buffers: list) -> None:
        """A camera frame from the browser: decode, stylise, reply (the `result` for the same id)."""
        frame_id = content.get("id")
        now_ms = 1000 * time.perf_counter()
        sent_ms = content.get("t")
        if isinstance(sent_ms, (int, float)):
            self._clock_offset = min(self._clock_offset, now_ms - sent_ms)
            age = now_ms - sent_ms - self._clock_offset  # time spent waiting (clock offset removed)
            if age > self.config.max_age_ms:
                self.dropped += 1
                self.send({"type": "dropped", "id": frame_id})
                return
        if buffers:
            data = buffers[0]
        elif isinstance(content.get("b64"), str):
            data = base64.b64decode(content["b64"])
        else:  # the buffers did not arrive: ask the browser for base64
            self.send({"type": "transport", "mode": "base64"})
            self.send({"type": "dropped", "id": frame_id})
            return
        self._reply_base64 = content.get("reply") == "base64" or self.transport == "base64"
        try:
            t0 = time.perf_counter()
            frame = decode_jpeg(data)
            decode_ms = 1000 * (time.perf_counter() - t0)
            reply, timing = self._process(frame)
        except (ValueError, CameraError) as err:
            self.send({"type": "dropped", "id": frame_id})
            self.error = str(err)
            if isinstance(err, CameraError):  # no network to run: stop instead of failing on every frame
                self.running = False
            return
        timing["decode_ms"] = decode_ms
        self.timings.append(timing)
        height, width = frame.shape[:2]
        self._send_frame(
            {"type": "result", "id": frame_id, "source": "browser", "w": width, "h": height, **timing}, reply
        )

    # -- kernel-side sources (opencv, file) ------------------------------------------------------

    def _on_running_or_source(self, change: dict) -> None:
        self._stop_thread()
        if self.running and self.source in ("opencv", "file"):
            self.error = ""
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._kernel_loop, args=(self._stop, self.source), name="stlib-webcam", daemon=True
            )
            self._thread.start()

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            with self._pending_lock:
                self._pending_lock.notify_all()
            if thread is not threading.current_thread():  # the loop itself may stop the widget (running = False)
                thread.join(timeout=5.0)

    def _kernel_loop(self, stop: threading.Event, source: str) -> None:
        width, height = parse_resolution(self.resolution)
        try:
            reader = CameraReader(self.config.camera) if source == "opencv" else None
            if reader is None:
                reader = FileReader(self.config.video, width, height)
        except (CameraError, VideoError) as err:
            self.error = str(err)
            self.running = False
            return
        name = "the synthetic scene" if source == "file" and not self.config.video else (self.config.video or "")
        self.status = f"source: {source} ({name or f'camera {self.config.camera}'})"
        try:
            with self._pending_lock:
                self._pending.clear()
            while not stop.is_set():
                with self._pending_lock:  # back-pressure: wait for the browser's acknowledgements
                    now = time.perf_counter()
                    for frame_id, sent in list(self._pending.items()):
                        if now - sent > 5.0:  # lost (e.g. no browser view): forget it
                            del self._pending[frame_id]
                    if len(self._pending) >= self.max_in_flight:
                        self._pending_lock.wait(0.05)
                        continue
                frame = reader.read()
                captured = time.perf_counter()
                if frame is None:
                    self.error = f"The {source} source stopped delivering frames."
                    break
                frame = fit_frame(frame, width, height)
                reply, timing = self._process(frame, "kernel")
                frame_id = next(self._ids)
                with self._pending_lock:
                    self._pending[frame_id] = time.perf_counter()
                self.timings.append(timing)
                age_ms = 1000 * (time.perf_counter() - captured)
                content = {"type": "result", "id": frame_id, "source": source, "w": width, "h": height}
                self._send_frame({**content, "age_ms": age_ms, **timing}, reply)
        except CameraError as err:
            self.error = str(err)
        finally:
            reader.close()
            if not stop.is_set():
                self.running = False

    # -- Python API ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start capturing (the browser asks for camera permission with the browser source)."""
        self.error = ""
        self.running = True

    def stop(self) -> None:
        """Stop capturing and release the camera."""
        self.running = False
        self._stop_thread()

    def snapshot(self, path: str | os.PathLike | None = None) -> Path:
        """Save the last stylised frame (default: ``outputs/webcam_<time>.jpg``, atomically); return the path."""
        from .assets import outputs_dir
        from .images import save_image

        with self._lock:
            frame = self._last_output
        if frame is None:
            raise CameraError("No stylised frame yet: press Start first.")
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
            path = outputs_dir() / f"webcam_{stamp}.jpg"
        return save_image(Image.fromarray(frame), path)

    def last_frames(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The last frame the network received and its stylised result (uint8 RGB), or Nones."""
        with self._lock:
            return self._last_input, self._last_output

    def stats(self) -> dict[str, float]:
        """Frames, fps and latency (from the browser) and the kernel's mean milliseconds per step."""
        out: dict[str, float] = {
            "frames": self.frames,
            "fps": self.fps,
            "latency_ms": self.latency_ms,
            "processed": self.processed,
            "dropped": self.dropped,
        }
        recent = list(self.timings)
        for key in ("decode_ms", "network_ms", "encode_ms"):
            values = [t[key] for t in recent if key in t]
            if values:
                out[key] = sum(values) / len(values)
        return out

    def close(self) -> None:
        """Stop any kernel-side source and close the widget."""
        self._stop_thread()
        super().close()
