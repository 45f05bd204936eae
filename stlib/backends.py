"""Inference backends: one trained style network, run by the fastest engine on the machine that stays correct.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016: the networks are "real-time" on a GPU (Sec. 4.1, Table 3: 15 ms for a 512 x 512 image on a Titan
X). On a laptop CPU the same network (94.5 GFLOPs per 640 x 480 frame, `TransformerNet.flops`) takes
seconds per frame in plain fp32 PyTorch, so the webcam widget, the video command and `stylize --backend`
run it through a `Backend`, a callable with the network's exact interface:
(B, 3, H, W) float RGB in [0, 1] -> (B, 3, H, W) float32 in [0, 1].

========================  =================================================  ===================================
name                      engine                                             where
========================  =================================================  ===================================
``"eager"``               the PyTorch module, fp32, standard (NCHW) layout    everywhere (the reference)
``"channels_last"``       fp32 in the channels_last (NHWC) layout that        everywhere
                          oneDNN's CPU convolutions prefer
``"bf16"``                the network converted to bfloat16 once (weights     CUDA GPUs with bf16; CPUs with
                          and activations; no per-op autocast casts) +        native bf16 (AVX512-BF16 / AMX)
                          channels_last
``"fp16"``                float16 autocast + channels_last                    CUDA GPUs
``"compile"``             ``torch.compile`` of the channels_last module       where inductor works (first call
                                                                              compiles: tens of seconds)
``"onnx"``                onnxruntime on the network exported to ONNX         where onnxruntime is installed
                          (`export_onnx`; cached per network)                 (CPU)
========================  =================================================  ===================================

Every engine but ``"eager"`` runs a copy of the network whose nearest+conv upsampling stages are folded into
sub-pixel convolutions at the lower resolution (`stlib.transformer.fold_upsampling`: the same function, 13 % fewer
FLOPs for the style network, 2.25x fewer in its two upsampling stages, and no upsampled copies of the activations),
and whose 9x9 RGB output layer reads 2x2 blocks of pixels (`SpaceToDepthConv`: 3 output channels leave most of a
CPU kernel's lanes idle, 12 fill them; that layer 2.3x faster in bf16, 1.6x in fp32).

Each backend computes the same function as ``"eager"`` within `TOLERANCE` (the largest absolute difference
of output pixels in [0, 1]; fp32 engines only sum in another order, reduced precision engines round every
activation). ``backend="auto"`` (`choose_backend`) times every backend that is *fast on this machine* on a
probe frame, the bundled sample photo (median of a few runs after a warm-up), drops any whose output differs from
``"eager"`` by more than its tolerance, and keeps the fastest. It never tries what the machine lacks: bf16 on a
CPU without native bf16 (PyTorch emulates it there, 10-25x slower than fp32), fp16 on a CPU, onnx without onnxruntime;
``"compile"`` only when asked for, since its first call takes long and each new frame size recompiles.
Asked for by name, a backend the machine can run slowly (emulated bf16) still runs, for comparisons.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .assets import cache_dir, content_image
from .hardware import cpu_has_fast_bf16, keep_freed_memory
from .images import load_tensor
from .transformer import TransformerNet, fold_upsampling, pad_to_multiple

__all__ = [
    "BACKENDS",
    "TOLERANCE",
    "Backend",
    "BackendError",
    "BackendTiming",
    "available_backends",
    "check_onnx_export",
    "choose_backend",
    "export_onnx",
    "make_backend",
    "max_difference",
    "onnx_cache_path",
    "unavailable_reason",
]

BACKENDS = ("eager", "channels_last", "bf16", "fp16", "compile", "onnx")
"""Every backend name; ``"auto"`` chooses among them."""

TOLERANCE = {
    "eager": 0.0,
    "channels_last": 1e-3,
    "compile": 1e-3,
    "onnx": 1e-3,
    "bf16": 0.08,  # ~8 significant bits per activation through 16 layers: about 20 of 255 levels at worst
    "fp16": 0.02,
}
"""Largest absolute difference from ``"eager"`` (output pixels in [0, 1]) that a backend may show."""

_ONNX_OPSET = 18


class BackendError(RuntimeError):
    """A backend that cannot run here, or that computes something else than the network; one sentence."""


@dataclass
class Backend:
    """A network bound to an engine: call it like the network on (B, 3, H, W) RGB in [0, 1] (no gradients)."""

    name: str
    model: TransformerNet  # the fp32 reference network (eval mode)
    run: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    timings: list[BackendTiming] = field(default_factory=list, repr=False)  # the race `choose_backend` ran
    probe: tuple[int, int] | None = None  # the (height, width) it was timed at

    @property
    def tolerance(self) -> float:
        """The largest output difference from fp32 eager this backend may show (pixels in [0, 1])."""
        return TOLERANCE[self.name]

    def summary(self) -> str:
        """'backend: onnx (fastest here at 320x240: eager 410 ms, onnx 280 ms)', or 'backend: eager' when not raced."""
        timed = ", ".join(f"{t.name} {t.ms:.0f} ms" for t in self.timings if t.ms is not None)
        if not timed or self.probe is None:
            return f"backend: {self.name}"
        return f"backend: {self.name} (fastest here at {self.probe[1]}x{self.probe[0]}: {timed})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a (B, 3, H, W) batch in [0, 1]; returns float32 (B, 3, H, W) in [0, 1] on x's device."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Backend {self.name!r} expects a (B, 3, H, W) batch of RGB images, got {tuple(x.shape)}.")
        with torch.inference_mode():
            y = self.run(x.to(self.device, torch.float32))  # (B, 3, H, W)
            return y.float().clamp(0, 1).to(x.device)


@dataclass(frozen=True)
class BackendTiming:
    """One backend's result in `choose_backend`: median ms per probe frame and its difference from eager."""

    name: str
    ms: float | None  # None: not timed (unavailable, failed, or outside its tolerance)
    difference: float | None
    note: str = ""


# ----------------------------------------------------------------------------------------------------------
# What the machine has
# ----------------------------------------------------------------------------------------------------------


def _onnxruntime_missing() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'stlib[fast]')"
    return None


def unavailable_reason(name: str, device: torch.device | str = "cpu") -> str | None:
    """Why backend `name` cannot run on `device` here, or None when it can (possibly slowly: see `auto`)."""
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend {name!r}; choose one of {', '.join(BACKENDS)} or 'auto'.")
    device = torch.device(device)
    if name == "fp16" and device.type != "cuda":
        return "fp16 inference needs a CUDA GPU"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "this GPU has no bf16"
    if name == "onnx":
        if device.type != "cpu":
            return "the onnx backend runs on the CPU"
        return _onnxruntime_missing()
    return None


def _fast_here(name: str, device: torch.device) -> bool:
    """Whether `auto` should consider `name` on `device` (available, and not an emulated slow path)."""
    if unavailable_reason(name, device) is not None or name == "compile":
        return False
    return not (name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16())


def available_backends(device: torch.device | str = "cpu") -> dict[str, str]:
    """Every backend with a short note for `device`: "ok", "slow here: ...", or "unavailable: ..."."""
    device = torch.device(device)
    notes = {}
    for name in BACKENDS:
        reason = unavailable_reason(name, device)
        if reason is not None:
            notes[name] = f"unavailable: {reason}"
        elif name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
            notes[name] = "slow here: this CPU has no native bf16 (no AVX512-BF16/AMX), PyTorch emulates it"
        elif name == "compile":
            notes[name] = "ok (not tried by auto: the first call per frame size compiles)"
        else:
            notes[name] = "ok"
    return notes


# ----------------------------------------------------------------------------------------------------------
# ONNX export
# ----------------------------------------------------------------------------------------------------------


class _Padded(torch.nn.Module):
    """`TransformerNet.forward_padded` as a module: what the ONNX file computes (H, W multiples of 4)."""

    def __init__(self, net: TransformerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_padded(x)


def export_onnx(model: TransformerNet, path: str | os.PathLike) -> Path:
    """Write `model` (eval mode) as an ONNX file with symbolic height and width (multiples of 4, >= 8).

    The file takes ``image`` (1, 3, H, W) float32 RGB in [0, 1] and returns ``stylized`` of the same shape
    (super-resolution networks: `upscale` times larger); pad other sizes to a multiple of 4 first
    (`TransformerConfig.multiple`; the ``"onnx"`` backend does, by reflection, like the network).
    Needs the ``onnx`` and ``onnxscript`` packages (``pip install 'stlib[fast]'``); written atomically.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"Cannot export to '{path}': the file name must end in .onnx.")
    if model.training:
        raise ValueError("export_onnx needs a model in eval mode: call model.eval() first (load_model returns one).")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise BackendError("ONNX export needs the onnx and onnxscript packages: pip install 'stlib[fast]'.") from None
    module = _Padded(fold_upsampling(model).float().cpu()).eval()
    multiple = model.config.multiple
    low = max(2, -(-8 // multiple))  # at least 8 pixels
    quarter_h = torch.export.Dim("quarter_height", min=low, max=4096)
    quarter_w = torch.export.Dim("quarter_width", min=low, max=4096)
    example = torch.rand(1, 3, 64, 96)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as tmp:
        tmp_file = Path(tmp) / path.name
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its progress prints
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp_file),
                input_names=["image"],
                output_names=["stylized"],
                dynamic_shapes={"x": {2: multiple * quarter_h, 3: multiple * quarter_w}},
                opset_version=_ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        os.replace(tmp_file, path)
    return path


def check_onnx_export(model: TransformerNet, path: str | os.PathLike, image: torch.Tensor) -> tuple[Path, float]:
    """Export `model` to `path` (`export_onnx`); return it and its largest output difference from PyTorch on `image`.

    `image` is (1, 3, H, W) with H and W multiples of 4 (what the file takes); compare with ``TOLERANCE["onnx"]``.
    """
    missing = _onnxruntime_missing()
    if missing is not None:
        raise BackendError(f"Cannot check an ONNX export: {missing}.")
    import onnxruntime as ort

    path = export_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = torch.from_numpy(session.run(None, {"image": image.float().numpy()})[0])  # (1, 3, H, W)
    with torch.inference_mode():
        return path, float((ours - model(image.float())).abs().max())


def _fingerprint(model: TransformerNet) -> str:
    """A hash of the architecture and weights (and the torch version that exports them)."""
    digest = hashlib.sha256(json.dumps(model.config_dict(), sort_keys=True).encode())
    digest.update(f"{torch.__version__}-opset{_ONNX_OPSET}-folded".encode())
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def onnx_cache_path(model: TransformerNet) -> Path:
    """Where the ``"onnx"`` backend keeps `model`'s export (it exists once the backend was made for it)."""
    return cache_dir() / "onnx" / f"transformer-{_fingerprint(model)}.onnx"


def _onnx_runner(model: TransformerNet) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort

    cached = onnx_cache_path(model)
    if not cached.is_file():
        print("Exporting the network to ONNX (first use only, up to half a minute)...", flush=True)
        export_onnx(model, cached)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(cached), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # a damaged cache file: export again once
        cached.unlink(missing_ok=True)
        try:
            session = ort.InferenceSession(str(export_onnx(model, cached)), options, providers=["CPUExecutionProvider"])
        except Exception:
            raise BackendError(f"onnxruntime cannot load the exported network '{cached}' ({err}).") from None

    def run(x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) float32 on the CPU
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x.float().contiguous(), model.config.multiple)  # (B, 3, H', W')
        outputs = [session.run(None, {"image": item[None].numpy()})[0] for item in padded]  # B x (1, 3, sH', sW')
        scale = model.config.upscale
        return torch.from_numpy(np.concatenate(outputs))[..., : scale * height, : scale * width]  # (B, 3, sH, sW)

    return run


# ----------------------------------------------------------------------------------------------------------
# Making backends
# ----------------------------------------------------------------------------------------------------------


def _model_device(model: TransformerNet) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _channels_last_runner(model: TransformerNet, dtype: torch.dtype | None, compiled: bool):
    """A channels_last copy of `model`, upsampling folded; bf16: weights converted once, fp16: autocast (CUDA)."""
    net = fold_upsampling(model).to(memory_format=torch.channels_last)
    device = _model_device(model)
    native = dtype == torch.bfloat16  # bf16 has fp32's range: the whole network can run in it
    if native:
        net = net.to(dtype)  # once, not per call: autocast re-casts every weight at every convolution
    forward: Callable[[torch.Tensor], torch.Tensor] = net
    if compiled:
        forward = torch.compile(net, dynamic=False)

    def run(x: torch.Tensor) -> torch.Tensor:
        if native:
            x = x.to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        if dtype is None or native:
            return forward(x)  # `Backend.__call__` returns float32
        with torch.autocast(device.type, dtype=dtype):
            return forward(x)

    run.net = net  # the engine's own copy of the network (tests check its dtype and layout)
    return run


def make_backend(
    model: TransformerNet,
    name: str = "auto",
    probe: tuple[int, int] = (240, 320),
    check: bool = True,
) -> Backend:
    """Bind an eval-mode `model` to backend `name` ("auto": the fastest correct one here, see `choose_backend`).

    With ``check`` (default) the backend's output on a probe frame of `probe` (H, W) is compared with fp32
    eager, and a difference beyond `TOLERANCE` raises `BackendError`.
    """
    if not isinstance(model, TransformerNet):
        raise TypeError(f"make_backend expects a TransformerNet, got {type(model).__name__}.")
    if model.training:
        raise ValueError("make_backend needs a model in eval mode: call model.eval() first (load_model returns one).")
    if name == "auto":
        return choose_backend(model, probe=probe)[0]
    device = _model_device(model)
    if device.type == "cpu":
        keep_freed_memory()  # each frame reuses the last one's memory: no page faults (`stlib.hardware`)
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise BackendError(f"Backend {name!r} cannot run on {device.type}: {reason}.")
    if name == "eager":
        backend = Backend(name, model, model, device)
    elif name == "onnx":
        backend = Backend(name, model, _onnx_runner(model), device)
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        backend = Backend(name, model, _channels_last_runner(model, dtype, compiled=name == "compile"), device)
    if check and name != "eager":
        frame = _probe_frame(probe, device)
        difference = max_difference(backend, Backend("eager", model, model, device), frame)
        if difference > backend.tolerance:
            raise BackendError(
                f"Backend {name!r} differs from fp32 eager by {difference:.4f} on a probe frame "
                f"(tolerance {backend.tolerance}); use backend='eager'."
            )
    return backend


def _probe_frame(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The bundled sample photo as a (1, 3, H, W) frame, or a synthetic one where the photo is not installed.

    A photo, because that is what the engines will see: bf16's differences from fp32 depend on the picture. On the
    bundled photo the shipped networks' bf16 outputs stay within 0.03 of fp32 (PSNR 55-57 dB); on the synthetic
    frame below, whose flat gradients the instance norms amplify, the same networks reached 0.15 (40 dB).
    """
    try:
        return load_tensor(content_image("tubingen"), size=(size[1], size[0]), device=device)  # (1, 3, H, W)
    except (KeyError, OSError):  # a copy of stlib without the course's data/ folder
        return _synthetic_frame(size, device)


def _synthetic_frame(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A deterministic photo-like (1, 3, H, W) frame: smooth gradients, edges and some texture."""
    height, width = size
    generator = torch.Generator().manual_seed(0)
    ys = torch.linspace(0, 1, height)[:, None]  # (H, 1)
    xs = torch.linspace(0, 1, width)[None, :]  # (1, W)
    base = torch.stack([ys * xs, (ys + (xs > 0.5)) / 2, 1 - ys.expand(height, width)])  # (3, H, W)
    noise = F.avg_pool2d(torch.rand(1, 3, height, width, generator=generator), 5, 1, 2)[0]  # (3, H, W)
    return (0.8 * base + 0.2 * noise).clamp(0, 1)[None].to(device)  # (1, 3, H, W)


def max_difference(backend: Callable[[torch.Tensor], torch.Tensor], reference: Callable, image: torch.Tensor) -> float:
    """Largest absolute difference between two backends' outputs on `image` (1, 3, H, W) in [0, 1]."""
    with torch.inference_mode():
        return float((backend(image).float() - reference(image).float().clamp(0, 1)).abs().max())


def choose_backend(
    model: TransformerNet,
    candidates: Iterable[str] | None = None,
    probe: tuple[int, int] = (240, 320),
    repeats: int = 3,
) -> tuple[Backend, list[BackendTiming]]:
    """The fastest backend within tolerance on a probe frame, and every candidate's timing (for a table).

    `candidates` defaults to every backend that is fast on this machine (see the module docstring);
    names the machine lacks are reported, not tried.
    """
    device = _model_device(model)
    names: Sequence[str] = (
        [n for n in BACKENDS if _fast_here(n, device)] if candidates is None else list(dict.fromkeys(candidates))
    )
    frame = _probe_frame(probe, device)
    eager = Backend("eager", model, model, device)
    with torch.inference_mode():
        reference = eager(frame)
    timings: list[BackendTiming] = []
    best: tuple[float, Backend] | None = None
    for name in names:
        reason = unavailable_reason(name, device)
        if reason is not None:
            timings.append(BackendTiming(name, None, None, f"unavailable: {reason}"))
            continue
        try:
            backend = make_backend(model, name, check=False)
            with torch.inference_mode():
                output = backend(frame)  # warm-up (and the first compile)
                difference = float((output - reference).abs().max())
                times = []
                for _ in range(max(1, repeats)):
                    start = time.perf_counter()
                    backend(frame)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(1000 * (time.perf_counter() - start))
        except Exception as err:  # an engine that fails here is skipped, with the reason in the table
            timings.append(BackendTiming(name, None, None, f"failed: {str(err).splitlines()[0][:120]}"))
            continue
        ms = statistics.median(times)
        if difference > backend.tolerance:
            timings.append(BackendTiming(name, None, difference, f"outside tolerance {backend.tolerance}"))
            continue
        timings.append(BackendTiming(name, ms, difference))
        if best is None or ms < best[0]:
            best = (ms, backend)
    chosen = eager if best is None else best[1]
    chosen.timings, chosen.probe = timings, tuple(probe)
    return chosen, timings
