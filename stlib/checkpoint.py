"""Model files and training states: safetensors networks with JSON metadata, atomic writes, no pickle.

A trained feed-forward network (Johnson, Alahi & Fei-Fei, ECCV 2016, Sec. 3.1: the image transformation network,
`stlib.transformer`) is stored as a ``.safetensors`` file, read without executing any pickle code: the weights,
and in the header's metadata the ``format`` (``"stlib.transformer"``), the `TransformerConfig` as JSON (so
`load_model` rebuilds the architecture) and an ``info`` JSON (training step, loss terms, style image and its
sha256, training configuration, stlib version). `export_weights` writes the same file with float16 weights
(3.4 MB for the default network); `load_model` casts every file back to float32.

Resumable training states (`stlib.train`, `stlib.distill`) are ``torch.save`` files holding only tensors and
plain types: `write_state` writes them atomically and `read_state` loads them with ``weights_only=True``;
`rng_state` and `set_rng_state` put every random generator into that form and back (exact resume).
Every file here is written to a temporary file beside the target and moved into place (`stlib.images.atomic_write`),
so a killed process never leaves a half-written one.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stlib import __version__

from .images import atomic_write
from .transformer import TransformerNet

__all__ = [
    "MODEL_FORMAT",
    "TRAINING_STATE",
    "CheckpointError",
    "ResumeError",
    "export_weights",
    "load_model",
    "load_weights",
    "read_metadata",
    "read_state",
    "read_training_state",
    "rng_state",
    "save_model",
    "set_rng_state",
    "write_state",
]

MODEL_FORMAT = "stlib.transformer"
"""The ``format`` entry of a model file's metadata."""

_FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A model file that cannot be used; the message is one sentence naming the file."""


class ResumeError(ValueError):
    """A training run cannot be resumed; the message is one sentence naming the state file."""


def save_model(
    model: TransformerNet,
    path: str | os.PathLike,
    info: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Atomically write a network's weights (optionally cast to `dtype`) and metadata as safetensors."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Cannot save a model as '{path}': the file name must end in .safetensors.")
    if not isinstance(model, TransformerNet):
        raise TypeError(f"save_model expects a TransformerNet, got {type(model).__name__}")
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[name] = value.contiguous()  # channels_last weights become standard contiguous tensors
    bad = [name for name, value in tensors.items() if value.is_floating_point() and not bool(value.isfinite().all())]
    if bad:
        raise ValueError(
            f"Cannot save '{path}': weight {bad[0]} holds NaN or infinite values"
            + (f" after the cast to {dtype}" if dtype is not None else "")
            + "."
        )
    float_dtypes = {str(v.dtype).removeprefix("torch.") for v in tensors.values() if v.is_floating_point()}
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": _FORMAT_VERSION,
        "stlib_version": __version__,
        "transformer": json.dumps(model.config_dict()),
        "dtype": ",".join(sorted(float_dtypes)),
        "info": json.dumps(dict(info or {}), default=str),
    }
    data = save(tensors, metadata=metadata)
    return atomic_write(path, lambda file: file.write(data))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and raw metadata of a safetensors file; any failure is a CheckpointError naming the file."""
    from safetensors import safe_open

    if not path.exists():
        raise CheckpointError(f"Model file '{path}' does not exist.")
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a directory, not a model file.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(
            f"'{path}' is not a style network checkpoint (it cannot be read as a safetensors file)."
        ) from None
    if metadata.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"'{path}' is a safetensors file but not a stlib style network (its metadata lacks "
            f"format={MODEL_FORMAT!r}); train one with `python -m stlib train`."
        )
    return tensors, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a model file: format, versions, ``transformer`` config and ``info`` as parsed JSON."""
    path = Path(path)
    _, metadata = _read(path)
    out: dict[str, Any] = dict(metadata)
    for key in ("transformer", "info"):
        try:
            out[key] = json.loads(metadata.get(key, "{}"))
        except json.JSONDecodeError:
            raise CheckpointError(f"Model file '{path}' has a damaged '{key}' entry in its metadata.") from None
    return out


_TASK_NAMES = {"style": "a style network", "superres": "a super-resolution network"}
_TASK_COMMANDS = {"style": "python -m stlib stylize", "superres": "python -m stlib upscale"}


def load_model(
    path: str | os.PathLike, device: torch.device | str | None = None, task: str | None = None
) -> TransformerNet:
    """Rebuild a `TransformerNet` from a model file (float32, eval mode), optionally on `device`.

    With `task` ("style" or "superres"), a network of the other task is a `CheckpointError` naming the file.
    """
    path = Path(path)
    tensors, _ = _read(path)
    meta = read_metadata(path)
    try:
        model = TransformerNet.from_config(meta["transformer"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"Model file '{path}' describes an unknown architecture ({err}).") from None
    found = model.config.task
    if task is not None and found != task:
        kind = f"a x{model.config.upscale} super-resolution network" if found == "superres" else _TASK_NAMES[found]
        raise CheckpointError(
            f"Model file '{path}' holds {kind}, not {_TASK_NAMES[task]}: use it with {_TASK_COMMANDS[found]}."
        )
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    if any(v.is_floating_point() and not bool(v.isfinite().all()) for v in tensors.values()):
        raise CheckpointError(f"Model file '{path}' holds NaN or infinite weights (a diverged training run?).")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CheckpointError(
            f"Model file '{path}' holds weights of another architecture than {model.describe().split(':')[0]} "
            f"({detail.rstrip('.')})."
        ) from None
    model.requires_grad_(False)
    return model.to(device).eval()


def load_weights(model: TransformerNet, path: str | os.PathLike) -> None:
    """Copy a model file's weights into `model`: the same architecture, or a variant whose weights have the same
    shapes (e.g. ``downsample="antialiased"`` from a strided network), named in one printed line."""
    source = load_model(path)  # a CheckpointError names the file when it is not a model file
    weights = source.state_dict()
    if source.config != model.config:
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        if {name: tuple(t.shape) for name, t in weights.items()} != shapes:
            raise ValueError(
                f"Model file '{path}' holds a {source.describe().split(':')[0]}, but the training settings ask for a "
                f"{model.describe().split(':')[0]}: set the network options to match it."
            )
        old, new = source.config_dict(), model.config_dict()
        changes = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in new if old[k] != new[k])
        print(f"Starting from the weights of '{path}' in a network variant: {changes}.", flush=True)
    model.load_state_dict(weights)  # copies into the existing tensors: device and layout kept


def export_weights(
    checkpoint: str | os.PathLike,
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float16,
    extra_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a compact copy of a model file with its weights in `dtype` (float16: 3.4 MB for the default net).

    `extra_info` entries are added to the copy's ``info`` metadata (e.g. ``{"dataset": "BSDS500 train"}``).
    """
    checkpoint = Path(checkpoint)
    model = load_model(checkpoint)
    info = read_metadata(checkpoint)["info"]
    info = {**info, "exported_from": checkpoint.name, **dict(extra_info or {})}
    return save_model(model, path, info=info, dtype=dtype)


def write_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Atomically ``torch.save`` a training state (tensors and plain types only, so it loads without pickle)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getvalue()
    return atomic_write(path, lambda file: file.write(data))


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """A state written by `write_state`, loaded on the CPU with ``weights_only=True``.

    Raises FileNotFoundError when there is no file, and CheckpointError (naming the file and the reason) when it
    cannot be read or holds no dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"There is no state file '{path}'.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds of errors for a damaged or foreign file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"'{path}' is not a readable state ({reason}).") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' holds a {type(state).__name__}, not a state dict.")
    return state


def rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Every RNG state (torch, CUDA on a GPU `device`, Python, NumPy) as tensors and plain types, for a state file."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global legacy RNG is what we save)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),  # (version, tuple of ints, gauss_next)
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
    """Restore the RNG states `rng_state` saved (CUDA's only on a GPU `device`): a resumed run draws the same."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np_state["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))  # noqa: NPY002
    if torch.device(device).type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


TRAINING_STATE = "stlib.train-state"
"""The ``format`` entry of a training state (`stlib.train`)."""


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The training state at `path` to resume from; a `ResumeError` (one sentence) when it is missing or foreign."""
    try:
        state = read_state(path)
    except FileNotFoundError:
        raise ResumeError(f"Cannot resume: there is no training state '{path}' (start without --resume).") from None
    except CheckpointError as err:
        raise ResumeError(f"Cannot resume: {err}") from None
    if state.get("format") != TRAINING_STATE:
        raise ResumeError(f"Cannot resume from '{path}': it is not an stlib training state.")
    return state
