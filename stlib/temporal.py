"""Temporal consistency of stylised video: the warping error, and flow-guided smoothing at run time.

A feed-forward network stylises every frame on its own, so the same wall is repainted a little differently in
every frame: the texture *flickers* even where nothing moves.

**The metric** (W.-S. Lai, J.-B. Huang, O. Wang, E. Shechtman, E. Yumer, M.-H. Yang, "Learning Blind Video
Temporal Consistency", ECCV 2018, Sec. 5.1, "warping error"). With the optical flow of the *input* frames,
output frame t-1 is warped to frame t and compared with output frame t over the pixels visible in both::

    E_warp = 1/(T-1) * sum_{t=1}^{T-1}  sum_i M_t(i) * ||O_t(i) - warp(O_{t-1})(i)||^2 / (3 * sum_i M_t(i))

(pixels in [0, 1], the mean over visible pixels and the 3 channels). M_t is the non-occlusion mask of a
forward-backward consistency check (N. Sundaram, T. Brox, K. Keutzer, ECCV 2010; used by M. Ruder et al. 2016
and by Lai et al.): a pixel is visible when following the flow from t to t-1 and back lands where it started,
|w_b + w_f(x + w_b)|^2 <= 0.01 (|w_b|^2 + |w_f(x + w_b)|^2) + 0.5, and the flow stays inside the frame. The input
clip's own E_warp is the floor (flow errors, lighting, noise); a blurred or unstyled output would also score low,
so a report pairs it with the output's style term. Flow: OpenCV's DIS (T. Kroeger et al., ECCV 2016) or
Farnebäck (SCIA 2003), nothing to download.

**The smoothing** (`TemporalSmoother`; after N. Bonneel, J. Tompkin, K. Sunkavalli, D. Sun, S. Paris,
H. Pfister, "Blind Video Temporal Consistency", SIGGRAPH Asia 2015, which warps the previous *output* by the
flow of the *inputs* and keeps it where the flow is reliable). For any per-frame filter P (a network, a
colour grade)::

    O_t = P_t + w_t * (warp(O_{t-1}) - P_t),    w_t = s * M_t * exp(-(e_t / sigma)^2)

with s the user's strength in [0, 1], M_t the consistency mask above and e_t the colour error of the inputs,
max over channels of |I_t - warp(I_{t-1})| (a wrong flow, an occlusion or a lighting change makes it large, so the
pixel follows its own frame); the weight is eroded by a pixel so it cannot leak across a motion edge. Along a
motion path O_t is an exponential moving average of the per-frame outputs with factor w <= s, so an error fades
within a few frames instead of accumulating; a frame where few pixels are visible (a scene cut, a camera jump)
starts again (`SmoothConfig`). Averaging two textures lowers their contrast, so `contrast_blend` raises the local
contrast of the mix back to that of P_t, in three bands (finer than 3 px, which the bilinear warp blurs a little
more at every frame, 3-7 px and the rest), and takes 30 % of the finest band from P_t as it is: the exact shape
of a fine swirl, which a gain cannot give back. Measured on real clips (benchmarks/temporal.py, benchmarks/RESULTS.md):
the style term is worst at middle strengths (around 0.5, two different paintings of the wall are mixed half and
half) and back near the per-frame value at 0.8 (one texture, carried along the motion and refreshed by a fifth
each frame), so 0.8 is the default strength; the previous output is warped bilinearly (bicubic's overshoot builds
up frame after frame into texture of its own). For speed (the whole step costs a fraction of a slim network's
frame): the flow is DIS "fast" at half the frame size, the state is uint8 with a fourth channel (OpenCV's remap
is twice as fast on four channels as on three), the local contrast is measured on a grid 4 times coarser, the
full-size arrays are reused from frame to frame (a fresh 640x480 array costs page faults, more than the arithmetic
on it), and the steps that do not wait for each other run at once on two helper threads (the two flows, the new
output's statistics, the previous output's warp beside the weight, the two halves of the pointwise sums; OpenCV
lets go of Python's lock), with the same frames as one thread would make. Bonneel et al. solve a gradient-domain
problem per frame (the gradients of P_t, the values of the warped output); this is a cheaper, zero-order relative
of it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FLOW_METHODS",
    "Motion",
    "SmoothConfig",
    "TemporalSmoother",
    "check_smooth",
    "clip_motion",
    "contrast_blend",
    "motion",
    "optical_flow",
    "smooth_frames",
    "visible_mask",
    "warp",
    "warping_error",
]

FLOW_METHODS = ("dis-ultrafast", "dis-fast", "dis-medium", "farneback")
"""Optical flow methods of OpenCV: DIS at three presets (fastest first), and Farnebäck's polynomial expansion."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("Optical flow needs OpenCV: pip install opencv-python-headless.") from None
    return cv2


def _check_frame(frame: np.ndarray, what: str = "frame") -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"The {what} must be an (H, W, 3) RGB array, got a{'n' if got[0] == 'a' else ''} {got}.")


def _small(frame: np.ndarray, scale: float) -> np.ndarray:
    """A uint8 RGB frame resized by `scale` (area averaging)."""
    cv2 = _cv2()
    image = frame if frame.dtype == np.uint8 else np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)


def _gray(frame: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """uint8 (h, w) luminance of an RGB frame, resized by `scale`."""
    return _cv2().cvtColor(_small(frame, scale), _cv2().COLOR_RGB2GRAY)


_LOCAL = threading.local()  # one DIS object per thread and method: an OpenCV flow object is not thread-safe


def _flow_small(a: np.ndarray, b: np.ndarray, method: str, solvers: dict | None = None) -> np.ndarray:
    """Flow (h, w, 2) of grey images with a(x) ~ b(x + flow(x)); `solvers` keeps the caller's own DIS objects."""
    cv2 = _cv2()
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    if solvers is None:
        solvers = _LOCAL.__dict__.setdefault("dis", {})
    if method not in solvers:
        preset = {"dis-ultrafast": 0, "dis-fast": 1, "dis-medium": 2}[method]
        solvers[method] = cv2.DISOpticalFlow_create(preset)
    return solvers[method].calc(a, b, None)


def _check_method(method: str, scale: float) -> None:
    if method not in FLOW_METHODS:
        raise ValueError(f"The flow method must be one of {', '.join(FLOW_METHODS)}, got {method!r}.")
    if not (isinstance(scale, (int, float)) and 0.05 <= scale <= 1.0):
        raise ValueError(f"The flow scale must be a number between 0.05 and 1, got {scale!r}.")


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "dis-medium", scale: float = 1.0) -> np.ndarray:
    """Flow (H, W, 2) in pixels, (dx, dy), with a(x) ~ b(x + flow(x)); computed at `scale` of the size."""
    _check_method(method, scale)
    _check_frame(a, "first frame")
    _check_frame(b, "second frame")
    if a.shape != b.shape:
        raise ValueError(f"optical_flow needs frames of one shape, got {a.shape} and {b.shape}.")
    flow = _flow_small(_gray(a, scale), _gray(b, scale), method)  # (h, w, 2)
    return _resize_flow(flow, a.shape[:2])


def _resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow field resized to (H, W), its vectors scaled with it."""
    h, w = flow.shape[:2]
    if (h, w) == tuple(size):
        return flow
    cv2 = _cv2()
    out = cv2.resize(flow, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)  # (H, W, 2)
    out[..., 0] *= size[1] / w
    out[..., 1] *= size[0] / h
    return out


@functools.lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only pixel coordinates (x, y), each (h, w) float32."""
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    xx.flags.writeable = yy.flags.writeable = False
    return xx, yy


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sampling positions (x + flow_x, y + flow_y), each (H, W) float32."""
    xx, yy = _pixel_grid(*flow.shape[:2])
    return xx + flow[..., 0], yy + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray, cubic: bool = False) -> np.ndarray:
    """`image` sampled at x + flow(x) (bilinear or bicubic, edges repeated): the (H, W, C) frame moved onto flow's."""
    if image.shape[:2] != flow.shape[:2] or flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"warp needs a flow of shape (H, W, 2) for an image of {image.shape}, got {flow.shape}.")
    cv2 = _cv2()
    map_x, map_y = _sample_grid(flow.astype(np.float32, copy=False))
    mode = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    return cv2.remap(image, map_x, map_y, interpolation=mode, borderMode=cv2.BORDER_REPLICATE)


def visible_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels of frame t whose flow to t-1 (`backward`) and back (`forward`, t-1 -> t) agree."""
    return _visible(backward, forward, _sample_grid(backward))


def _inside(where: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """bool (H, W): the sampling positions (map_x, map_y) that lie inside the frame."""
    map_x, map_y = where
    h, w = map_x.shape
    return (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)


def _visible(backward: np.ndarray, forward: np.ndarray, where: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`visible_mask` with the sampling positions x + backward(x) already computed (`_sample_grid`)."""
    cv2, (h, w) = _cv2(), backward.shape[:2]
    back_again = cv2.remap(forward, *where, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    b, a = backward.reshape(-1, 2), back_again.reshape(-1, 2)  # (h*w, 2): the forward flow at x + backward(x)
    total = b + a  # (h*w, 2) added to the backward flow
    pair = np.ones(2, np.float32)  # |f|^2 as (f * f) @ (1, 1): numpy's strided f[..., 0] is 3x slower
    limit = 0.01 * ((b * b + a * a) @ pair) + 0.5
    return ((total * total) @ pair <= limit).reshape(h, w) & _inside(where)


@dataclass(frozen=True)
class Motion:
    """How frame t follows frame t-1: the flow from t to t-1 (H, W, 2) and the visible pixels (H, W) bool."""

    flow: np.ndarray
    visible: np.ndarray


def motion(previous: np.ndarray, current: np.ndarray, method: str = "dis-medium", scale: float = 1.0) -> Motion:
    """The flow from `current` to `previous` and its forward-backward visibility mask."""
    backward = optical_flow(current, previous, method, scale)
    forward = optical_flow(previous, current, method, scale)
    return Motion(backward, visible_mask(backward, forward))


def clip_motion(frames: Sequence[np.ndarray], method: str = "dis-medium", scale: float = 1.0) -> list[Motion]:
    """`motion` of every consecutive pair of input frames (T-1 entries): compute once, score many outputs."""
    return [motion(frames[t - 1], frames[t], method, scale) for t in range(1, len(frames))]


def _float(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) / 255 if frame.dtype == np.uint8 else frame.astype(np.float32, copy=False)


def warping_error(
    outputs: Sequence[np.ndarray],
    inputs: Sequence[np.ndarray] | None = None,
    motions: Sequence[Motion] | None = None,
) -> float:
    """Lai et al.'s E_warp of `outputs` (uint8 or [0, 1] frames) along the motion of `inputs` (or given `motions`)."""
    if isinstance(outputs, np.ndarray) and outputs.ndim == 3:
        raise ValueError("warping_error needs a sequence of frames, got a single image.")
    if motions is None:
        if inputs is None:
            raise ValueError("warping_error needs the input frames (or their motions) to follow the motion.")
        if len(inputs) != len(outputs):
            raise ValueError(f"warping_error got {len(inputs)} input frames but {len(outputs)} output frames.")
        motions = clip_motion(inputs)
    if len(outputs) < 2 or len(motions) != len(outputs) - 1:
        raise ValueError(f"warping_error needs at least 2 output frames and one motion per pair, got {len(outputs)}.")
    errors = []
    for t, move in enumerate(motions, 1):
        current, warped = _float(outputs[t]), warp(_float(outputs[t - 1]), move.flow)  # (H, W, 3)
        visible = move.visible
        if visible.any():
            errors.append(float(((current - warped) ** 2)[visible].mean()))
    return float(np.mean(errors)) if errors else 0.0


# ----------------------------------------------------------------------------------------------------
# Smoothing at run time
# ----------------------------------------------------------------------------------------------------


def check_smooth(strength: object) -> float:
    """`strength` as a float when it is a number in [0, 1]; a ValueError in one sentence otherwise."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"The smoothing strength must be a number from 0 (off) to 1, got {strength!r}.")
    return float(strength)


@dataclass(frozen=True)
class SmoothConfig:
    """How `TemporalSmoother` follows the motion; the defaults were chosen on real clips (benchmarks/temporal.py)."""

    method: str = "dis-fast"  # optical flow (FLOW_METHODS)
    scale: float = 0.5  # the flow is computed at this fraction of the frame size
    sigma: float = 0.10  # colour error of the moved input (largest channel, in [0, 1]) where the weight falls to 1/e
    min_visible: float = 0.7  # fewer visible pixels than this fraction: a scene cut or a camera jump, start again
    check: bool = True  # the forward-backward check (a second flow); off: the pixels whose moved input matches in
    # colour (error < sigma) count as visible, which textured scenes lower more (about 0.85 suits min_visible then)
    contrast: bool = True  # give back the local contrast that averaging two textures removes (`contrast_blend`)
    window: int = 15  # side (px) of the window of local means and variances of `contrast_blend`
    keep: float = 0.3  # fraction of the current frame's finest band (3x3) taken as it is (`contrast_blend`)
    cubic: bool = False  # warp the previous output bicubically (its overshoot builds up over the frames) not bilinearly
    parallel: bool = True  # the steps that do not wait for each other on two helper threads (same frames, sooner)

    def __post_init__(self) -> None:
        _check_method(self.method, self.scale)
        if not (isinstance(self.sigma, (int, float)) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {self.sigma!r}.")
        if not (isinstance(self.min_visible, (int, float)) and 0.0 <= self.min_visible < 1.0):
            raise ValueError(f"min_visible must be a number in [0, 1), got {self.min_visible!r}.")
        if isinstance(self.keep, bool) or not (isinstance(self.keep, (int, float)) and 0.0 <= self.keep <= 1.0):
            raise ValueError(f"keep must be a number in [0, 1], got {self.keep!r}.")
        if not (isinstance(self.window, int) and self.window >= 3):
            raise ValueError(f"window must be a whole number of pixels >= 3, got {self.window!r}.")


class TemporalSmoother:
    """Flow-guided smoothing of one stream of stylised frames (keeps the previous frame; `reset` forgets it).

    ``smoother(input_frame, output_frame)`` takes the frame the filter saw and what it made of it (uint8
    (H, W, 3) RGB, one size per stream) and returns the output blended with the previous output warped along
    the inputs' motion (uint8 RGB; the caller may keep or change it). Strength 0 returns the output unchanged.
    """

    def __init__(self, strength: float = 0.8, config: SmoothConfig | None = None) -> None:
        self.strength = check_smooth(strength)
        self.config = config or SmoothConfig()
        self.resets = 0  # scene cuts (and size changes) detected since creation
        self.blended = 0  # frames blended with the previous one since creation
        self._work: dict[str, np.ndarray] = {}  # full-size arrays reused from frame to frame (see `_buffer`)
        self._solvers: dict[str, dict] = {"backward": {}, "forward": {}}  # own DIS objects: the two flows run at once
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (a new stream, a new style, another size)."""
        # Colour frames are kept with a fourth channel: OpenCV's remap is twice as fast on four channels as on three.
        self._small: np.ndarray | None = None  # (h, w, 4) uint8 RGBA, the previous input at the flow's scale
        self._gray: np.ndarray | None = None  # (h, w) uint8, its luminance
        self._output: np.ndarray | None = None  # (H, W, 4) uint8 RGBA, the previous smoothed output
        self.last_weight: np.ndarray | None = None  # (H, W) the blend weight of the last frame, for inspection

    def _weight(self, small: np.ndarray, gray: np.ndarray, backward: np.ndarray, forward: Future | None):
        """The blend weight (h, w) at the flow's scale, or None at a scene cut; `backward` is the flow from now to
        the previous frame, `forward` brings the flow back (for the consistency check)."""
        cv2, config = _cv2(), self.config
        where = _sample_grid(backward)  # x + backward(x), computed once for the three uses
        visible = _visible(backward, forward.result(), where) if forward is not None else _inside(where)  # (h, w)
        moved = cv2.remap(self._small, *where, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = cv2.split(cv2.absdiff(small, moved))  # 4 x (h, w) uint8 (RGBA): colour, not only luminance
        error = cv2.max(cv2.max(error[0], error[1]), error[2])  # (h, w) uint8: the largest colour error
        scaled = np.arange(256, dtype=np.float32) * (1 / (255 * config.sigma))  # each error in units of sigma
        matched = visible if config.check else visible & (scaled < 1)[error]  # without the second flow: the colours
        if matched.mean() < config.min_visible:  # the inputs do not follow each other: a cut, a camera jump
            return None
        weight = cv2.LUT(error, np.exp(-(scaled * scaled)) * np.float32(self.strength))  # (h, w) float32
        weight *= visible
        return cv2.erode(weight, np.ones((3, 3), np.uint8))  # no leak across motion edges

    def _moved_output(self, flow: np.ndarray) -> np.ndarray:
        """The previous output, (H, W, 3) uint8 RGB, moved along `flow` (h, w, 2), the flow from now to it."""
        cv2, (h, w), work = _cv2(), self._output.shape[:2], self._work
        grid = work.get("grid")
        if grid is None or grid.shape[:2] != (h, w):  # (H, W, 2) pixel coordinates
            grid = work["grid"] = np.stack(_pixel_grid(h, w), -1)
        where = cv2.resize(flow, (w, h), dst=_buffer(work, "where", (h, w, 2)), interpolation=cv2.INTER_LINEAR)
        cv2.multiply(where, (w / flow.shape[1], h / flow.shape[0], 0, 0), dst=where)  # the flow in full-size px
        cv2.add(where, grid, dst=where)  # (H, W, 2): x + flow(x)
        mode = cv2.INTER_CUBIC if self.config.cubic else cv2.INTER_LINEAR
        moved = cv2.remap(self._output, where, None, mode, dst=_buffer(work, "moved", (h, w, 4), np.uint8),
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        return cv2.cvtColor(moved, cv2.COLOR_RGBA2RGB, dst=_buffer(work, "previous", (h, w, 3), np.uint8))

    def _smoothed(self, small: np.ndarray, gray: np.ndarray, output: np.ndarray) -> np.ndarray | None:
        """`output` blended with the previous output, or None at a scene cut.

        The steps that do not wait for each other run at once with `parallel` (OpenCV lets go of Python's lock, and
        most of its steps use one core): the two flows; the new output's statistics meanwhile; the previous output's
        warp beside the weight; then in `_contrast_blend` the mix's statistics beside its bands and mean, its three
        gains at full size, and the pointwise sums in two halves. Same frames either way.
        """
        cv2, config = _cv2(), self.config
        run = _pool().submit if config.parallel else _now
        jobs = []  # everything started here is finished before this returns: it works on this smoother's arrays
        try:
            forward = (
                run(_flow_small, self._gray, gray, config.method, self._solvers["forward"]) if config.check else None
            )
            own = run(_own_statistics, output, config.window, self._work, config.keep) if config.contrast else None
            jobs += [job for job in (forward, own) if job is not None]
            backward = _flow_small(gray, self._gray, config.method, self._solvers["backward"])  # (h, w, 2)
            jobs.append(previous := run(self._moved_output, backward))
            weight = self._weight(small, gray, backward, forward)
            if weight is None:
                return None
            weight = self.last_weight = cv2.resize(weight, output.shape[1::-1], interpolation=cv2.INTER_LINEAR)
            if own is None:
                return cv2.blendLinear(previous.result(), output, weight, 1 - weight)  # uint8, rounded
            return _contrast_blend(output, previous.result(), weight, config.window, np.uint8, self._work,
                                   config.keep, own.result(), run)  # fmt: skip
        finally:
            wait(jobs)

    def __call__(self, frame: np.ndarray, output: np.ndarray) -> np.ndarray:
        """The smoothed version of `output`, the filter's result for input `frame` (uint8 RGB in and out)."""
        _check_frame(frame, "input frame")
        _check_frame(output, "output frame")
        if frame.shape != output.shape:
            raise ValueError(f"The input frame is {frame.shape} but the output frame is {output.shape}.")
        output = np.ascontiguousarray(output if output.dtype == np.uint8 else _small(output, 1.0))
        cv2 = _cv2()
        small = cv2.cvtColor(_small(frame, self.config.scale), cv2.COLOR_RGB2RGBA)  # (h, w, 4)
        gray = cv2.cvtColor(small, cv2.COLOR_RGBA2GRAY)
        result = None
        if self._output is not None and self._output.shape[:2] == output.shape[:2] and self.strength > 0:
            result = self._smoothed(small, gray, output)
            if result is None:
                self.resets += 1
        if result is None:
            result, self.last_weight = output.copy(), np.zeros(output.shape[:2], np.float32)
        else:
            self.blended += 1
        self._small, self._gray = small, gray
        self._output = cv2.cvtColor(
            result, cv2.COLOR_RGB2RGBA, dst=_buffer(self._work, "state", (*result.shape[:2], 4), np.uint8)
        )
        return result  # the caller's: a new array every frame


_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The smoothers' two helper threads (`TemporalSmoother._smoothed`), made once and shared by every smoother."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(2, thread_name_prefix="stlib-smooth"))
    return _POOL[0]


def _now(function: Callable[..., object], *args: object) -> Future:
    """`function(*args)` run here, as a finished Future (the smoother's order of work without `parallel`)."""
    future: Future = Future()
    try:
        future.set_result(function(*args))
    except Exception as error:  # raised again by .result(), where the threaded run would raise it
        future.set_exception(error)
    return future


def _buffer(work: dict | None, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An array of `work`, reused from call to call (a new one without `work`): a fresh 640x480 array costs page
    faults, more than the arithmetic on it."""
    if work is None:
        return np.empty(shape, dtype)
    array = work.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
        array = work[name] = np.empty(shape, dtype)
    return array


def _coarse_mean(x: np.ndarray, window: int, step: int) -> np.ndarray:
    """Mean of `x` over a `window` box around each pixel, on a grid `step` times coarser: (H/step, W/step, ...)."""
    cv2, (h, w) = _cv2(), x.shape[:2]
    x = x.astype(np.float32, copy=False)
    if step > 1:  # exact block means (whole blocks: INTER_AREA's fast path)
        x = cv2.resize(x, (max(1, w // step), max(1, h // step)), interpolation=cv2.INTER_AREA)
    side = max(1, round(window / step))
    return cv2.blur(x, (side, side))


def _bands(image: np.ndarray, name: str, work: dict | None, middle: bool = True) -> list[np.ndarray]:
    """The finest bands of an image (H, W, C): [x - box3(x), box3(x) - box7(x)] (the second when `middle`), float32."""
    cv2, shape = _cv2(), image.shape
    box3 = cv2.blur(image, (3, 3), dst=_buffer(work, name + "3", shape, image.dtype))  # uint8 boxes: fast
    bands = [cv2.subtract(image, box3, dst=_buffer(work, name + "_fine", shape), dtype=cv2.CV_32F)]
    if middle:
        box7 = cv2.blur(image, (7, 7), dst=_buffer(work, name + "7", shape, image.dtype))
        bands.append(cv2.subtract(box3, box7, dst=_buffer(work, name + "_mid", shape), dtype=cv2.CV_32F))
    return bands


def _band_variances(image: np.ndarray, window: int, step: int, work: dict | None, name: str) -> list[np.ndarray]:
    """Local variances of the luminance over a `window` box, on a grid `step` times coarser, in three bands:
    coarser than 7 px, 3-7 px and finest (`_bands`); three (H/step, W/step) arrays (`name` names the buffers)."""
    cv2, (h, w) = _cv2(), image.shape[:2]
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # (H, W)
    fine, mid = _bands(luma, name + "_luma", work)  # (H, W) each
    if luma.dtype != np.float32:
        luma_f = _buffer(work, name + "_luma", (h, w))
        np.copyto(luma_f, luma)
        luma = luma_f
    mean = _coarse_mean(luma, window, step)
    total = _coarse_mean(cv2.multiply(luma, luma, dst=luma), window, step) - mean * mean
    fine, mid = (_coarse_mean(cv2.multiply(band, band, dst=band), window, step) for band in (fine, mid))
    return [np.maximum(total - fine - mid, 0), mid, fine]


def _grid_step(window: int, h: int, w: int) -> int:
    """How much coarser than the frame the local statistics are computed (640 x 480 -> 160 x 120 for 15 px)."""
    return 4 if window >= 8 and min(h, w) >= 32 else 1  # whole blocks: INTER_AREA's fast path


def _own_statistics(current: np.ndarray, window: int, work: dict | None, keep: float) -> tuple:
    """What `contrast_blend` needs of the current frame alone: its band variances, and its finest band if `keep`."""
    variances = _band_variances(current, window, _grid_step(window, *current.shape[:2]), work, "current")
    return variances, _bands(current, "current", work, middle=False)[0] if keep > 0 else None


def _gains(current: list[np.ndarray], mixed: list[np.ndarray], keep: float) -> list[np.ndarray]:
    """The multipliers of the mix's bands (coarse, middle, finest; `_band_variances`): sqrt(v_current / v_mix)
    in [1, 2], the finest one times (1 - keep), each but the coarse one less the coarse gain (it is in the sum)."""
    gains = [np.sqrt(np.clip(c / np.maximum(m, 1e-3), 1.0, 4.0)) for c, m in zip(current, mixed, strict=True)]
    gains[2] *= 1 - keep
    return [gains[0], gains[1] - gains[0], gains[2] - gains[0]]


def contrast_blend(
    current: np.ndarray,
    previous: np.ndarray,
    weight: np.ndarray,
    window: int = 15,
    dtype: type = np.float32,
    work: dict | None = None,
    keep: float = 0.3,
) -> np.ndarray:
    """current + weight * (previous - current), its local contrast raised back to that of `current`.

    Averaging two textures that differ lowers their contrast (the variance of the mean of two uncorrelated halves
    is half of theirs), which a viewer and the style loss see as a duller painting, and the warp that brings the
    previous frame over blurs its finest detail a little more at every frame. With local means m and variances
    of the luminance over a `window` box, in three bands (the finest F = x - box3(x), the middle
    B = box3(x) - box7(x) and the rest R, down to m), the mix M = m + R + B + F becomes
    m + g_R R + g_B B + (1 - keep) g_F F + keep * F_current, each g = sqrt(v_current / v_M) of its band in [1, 2]:
    1 where the two agree, so only the texture's contrast changes, band by band (one gain for all bands raised the
    coarse ones too much). A fraction `keep` of the finest band is the current frame's own: its exact shape, which
    neither the warp nor a gain can give back. The means and variances are smooth, so they are computed on a grid
    4 times coarser (from exact block means) and interpolated back. `dtype` uint8 rounds and clips the result;
    `work` (a dict) keeps the full-size arrays from one call to the next.
    """
    if current.dtype != previous.dtype or current.dtype not in (np.uint8, np.float32):
        current, previous = current.astype(np.float32), previous.astype(np.float32)  # (H, W, 3), same values
    own = _own_statistics(current, window, work, keep)
    return _contrast_blend(current, previous, weight, window, dtype, work, keep, own)


def _contrast_blend(
    current: np.ndarray,
    previous: np.ndarray,
    weight: np.ndarray,
    window: int,
    dtype: type,
    work: dict | None,
    keep: float,
    own: tuple,
    run: Callable[..., Future] | None = None,
) -> np.ndarray:
    """`contrast_blend` with the current frame's `_own_statistics` computed ahead; `run` (the smoother's helper
    threads) starts the mix's bands while its statistics are computed here."""
    cv2, (h, w) = _cv2(), current.shape[:2]
    weight = weight.astype(np.float32, copy=False)
    run, halves = run or _now, (slice(0, h // 2), slice(h // 2, h))  # pointwise steps: two halves at once
    if current.dtype == np.uint8:  # one pass, rounded (blendLinear's 1e-5 in the denominator is invisible here)
        rest = cv2.subtract(1.0, weight, dst=_buffer(work, "rest", (h, w)))
        mixed = _buffer(work, "mixed", (h, w, 3), np.uint8)

        def mix(rows: slice) -> None:
            cv2.blendLinear(previous[rows], current[rows], weight[rows], rest[rows], dst=mixed[rows])

        _halves(run, mix, halves)
    else:
        mixed = current + weight[..., None] * (previous - current)  # (H, W, 3)
    step = _grid_step(window, h, w)
    jobs = [run(_bands, mixed, "mixed", work), run(_mix_mean, mixed, window, step, work)]
    try:
        variances, current_fine = own
        gains = _gains(variances, _band_variances(mixed, window, step, work, "mixed"), keep)
        jobs += [run(_full_gain, gain, (h, w), step, work, f"gain{index}") for index, gain in enumerate(gains[1:], 1)]
        gains = [_full_gain(gains[0], (h, w), step, work, "gain0")] + [job.result() for job in jobs[2:]]
        (fine, mid), (mean, detail) = jobs[0].result(), jobs[1].result()
    finally:
        wait(jobs)
    result = np.empty((h, w, 3), np.uint8 if dtype == np.uint8 else np.float32)

    def finish(rows: slice) -> None:  # mean + g_R R + g_B B + g_F F (+ keep F_current), on some rows
        part = detail[rows]
        cv2.multiply(part, gains[0][rows], dst=part)
        cv2.accumulateProduct(mid[rows], gains[1][rows], part)
        cv2.accumulateProduct(fine[rows], gains[2][rows], part)
        if keep > 0:  # a fraction of the current frame's own finest band
            cv2.scaleAdd(current_fine[rows], keep, part, dst=part)
        cv2.add(mean[rows], part, dst=result[rows], dtype=cv2.CV_8U if dtype == np.uint8 else cv2.CV_32F)

    _halves(run, finish, halves)
    return result


def _halves(run: Callable[..., Future], step: Callable[[slice], None], halves: tuple[slice, slice]) -> None:
    """`step(rows)` for the first half of the rows through `run` and for the second here."""
    job = run(step, halves[0])
    try:
        step(halves[1])
    finally:
        job.result()


def _full_gain(gain: np.ndarray, size: tuple[int, int], step: int, work: dict | None, name: str) -> np.ndarray:
    """A gain of the coarse grid (h', w') at full size, once per colour channel: (H, W, 3); numpy's broadcast of
    an (H, W) gain over the channels is 10x slower than OpenCV's multiply of two (H, W, 3) arrays."""
    cv2, (h, w) = _cv2(), size
    gain = cv2.merge([gain] * 3)  # (h', w', 3)
    if step == 1:
        return gain
    return cv2.resize(gain, (w, h), dst=_buffer(work, name, (h, w, 3)), interpolation=cv2.INTER_LINEAR)


def _mix_mean(mixed: np.ndarray, window: int, step: int, work: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The local mean m of the mix (H, W, 3) at full size, and M - m (float32)."""
    cv2, (h, w) = _cv2(), mixed.shape[:2]
    mean = _coarse_mean(mixed, window, step)  # (h', w', 3)
    if step > 1:
        mean = cv2.resize(mean, (w, h), dst=_buffer(work, "mean", (h, w, 3)), interpolation=cv2.INTER_LINEAR)
    return mean, cv2.subtract(mixed, mean, dst=_buffer(work, "detail", (h, w, 3)), dtype=cv2.CV_32F)


def smooth_frames(
    inputs: Iterable[np.ndarray],
    outputs: Iterable[np.ndarray],
    strength: float = 0.8,
    config: SmoothConfig | None = None,
) -> Iterator[np.ndarray]:
    """`TemporalSmoother` over a clip: the smoothed outputs, one per (input, output) pair of frames."""
    for name, frames in (("input frames", inputs), ("outputs", outputs)):
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            raise ValueError(f"Smoothing needs a sequence of video frames, but the {name} are a single image.")
    smoother = TemporalSmoother(strength, config)
    for frame, output in zip(inputs, outputs, strict=True):
        yield smoother(frame, output)
