"""Images in and out: load, convert between PIL and tensors, show and save.

Every image in the course travels the same road::

    file --load_image--> PIL RGB image --to_tensor--> (1, 3, H, W) float tensor in [0, 1]
         <--save_image--               <--to_pil----

`load_image` accepts any file PIL can read, in any colour mode, and always returns an RGB image (EXIF
rotation applied, transparency composited on white, 16-bit and float data rescaled to 8 bit). When a file
cannot be used it raises `ImageError` with one sentence that names the file and says what is wrong.

Saving is atomic: the image is written to a temporary file next to the target and then moved into place,
so an interrupted save never leaves a half-written file behind (or destroys the previous one).
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageError",
    "as_rgb",
    "atomic_write",
    "check_writable",
    "expand_inputs",
    "is_image_name",
    "list_images",
    "load_image",
    "load_tensor",
    "resize",
    "save_gif",
    "save_image",
    "to_pil",
    "to_tensor",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""The file suffixes taken for images when a folder is listed (`list_images`)."""

MAX_PIXELS: int = 89_478_485
"""Default limit on width * height (PIL's own default), a guard against decompression bombs."""

_MIN_SIDE = 2  # images smaller than this on either side are refused

# Modes whose pixels are not 8-bit: each maps to the largest value of its "natural" range.
# Data inside [0, natural max] is scaled linearly to [0, 255]; anything else is stretched min..max.
_HIGH_BIT_DEPTH_RANGE: dict[str, float] = {
    "I;16": 65535,
    "I;16L": 65535,
    "I;16B": 65535,
    "I;16N": 65535,
    "I": 65535,  # 32-bit integers, in practice 16-bit data (e.g. 16-bit PNGs in older Pillow versions)
    "F": 1.0,  # 32-bit floats, in practice values in [0, 1]
}

# Exceptions PIL raises while parsing or decoding broken files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image file that cannot be used; the message is one sentence naming the file and the problem."""


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def load_image(
    path: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Load an image file as an RGB PIL image, upright, optionally resized (see `resize`)."""
    path = Path(path)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    _check_is_nonempty_file(path)

    try:
        with warnings.catch_warnings():
            # PIL warns (instead of failing) about some oversized images; we want a clear error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_header(path) as opened:
                _check_dimensions(path, opened.size, max_pixels)
                opened.load()  # decode everything now, so truncated or corrupt data fails here
                img = ImageOps.exif_transpose(opened)
    except ImageError:
        raise  # already one of ours, from _check_dimensions
    except UnidentifiedImageError:
        raise ImageError(f"'{path}' is not an image PIL can read (unknown or unsupported format).") from None
    except PermissionError:
        raise ImageError(f"Image file '{path}' cannot be read (permission denied).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"PIL refused to decode '{path}' as a possible decompression bomb ({_reason(exc)}).") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"Image file '{path}' is truncated or corrupt ({_reason(exc)}).") from None

    try:
        img = _to_rgb(img)
    except ValueError as exc:
        raise ImageError(f"Image '{path}' cannot be converted to RGB ({_reason(exc)}).") from None
    return img if size is None else resize(img, size)


def load_tensor(
    path: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    device: torch.device | str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> torch.Tensor:
    """Load an image file as a (1, 3, H, W) float tensor in [0, 1] (`load_image` then `to_tensor`)."""
    return to_tensor(load_image(path, size=size, max_pixels=max_pixels), device=device)


def expand_inputs(inputs: Iterable[str | os.PathLike] | str | os.PathLike, what: str = "this command") -> list[Path]:
    """Image files from one or several files and folders (a folder: its images, recursively, sorted)."""
    files: list[Path] = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        path = Path(item)
        if path.is_dir():
            files += list_images(path)  # recursively, sorted; an ImageError when the folder holds none
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"Input '{path}' does not exist.")
    if not files:
        raise ValueError(f"{what} needs at least one input image or folder.")
    return files


def is_image_name(path: str | os.PathLike) -> bool:
    """Whether `path`'s suffix names an image format that PIL can write (.png, .jpg, ...)."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    return fmt is not None and fmt in Image.SAVE


def list_images(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under `folder`, recursively, sorted by relative path; an `ImageError` names a bad folder."""
    root = Path(folder)
    if not root.exists():
        raise ImageError(f"Image folder '{root}' does not exist.")
    if not root.is_dir():
        raise ImageError(f"'{root}' is not a folder of images.")
    suffixes = tuple(e.lower() for e in extensions)
    files = [p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()]
    if not files:
        raise ImageError(f"Image folder '{root}' contains no files ending in {', '.join(suffixes)}.")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _check_is_nonempty_file(path: Path) -> None:
    """Raise ImageError unless `path` is an existing, non-empty regular file."""
    if not path.exists():
        raise ImageError(f"Image file '{path}' does not exist.")
    if path.is_dir():
        raise ImageError(f"'{path}' is a directory, not an image file.")
    if path.stat().st_size == 0:
        raise ImageError(f"Image file '{path}' is empty (0 bytes).")


def _open_header(path: Path) -> Image.Image:
    """Open `path` lazily (PIL reads only the header) without PIL's global decompression-bomb check.

    `Image.open` checks the size against the global `Image.MAX_IMAGE_PIXELS`, which would make the
    caller's `max_pixels` useless above PIL's limit. We switch the global off just for the header parse
    (never for decoding) and restore it at once; `_check_dimensions` then applies the caller's limit.
    """
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_dimensions(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """Raise ImageError if an image of `size` (from the header) is too small or has too many pixels."""
    width, height = size
    if min(width, height) < _MIN_SIDE:
        raise ImageError(
            f"Image '{path}' is too small ({width}x{height} pixels); both sides must be at least {_MIN_SIDE} pixels."
        )
    if width * height > max_pixels:
        raise ImageError(
            f"Image '{path}' is too large: {width * height:,} pixels ({width}x{height}) is more than the "
            f"limit of {max_pixels:,}; if you trust the file, pass a larger max_pixels to load it."
        )


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, without a final period, for use inside a sentence."""
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


# ----------------------------------------------------------------------------------------------------
# Colour modes
# ----------------------------------------------------------------------------------------------------


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to RGB (a new image unless it already is RGB)."""
    if img.mode in _HIGH_BIT_DEPTH_RANGE:
        return _high_bit_depth_to_rgb(img)
    if "A" in img.mode or "a" in img.mode or "transparency" in img.info:
        # Composite on white: fully transparent pixels become white, not black.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Rescale a 16-bit / 32-bit integer / float image to 8-bit grey, then RGB.

    Values inside the mode's natural range (0..65535 for integers, 0..1 for floats) are scaled linearly,
    so 65535 becomes 255 and 32768 becomes 128. Other data is stretched from its min..max to 0..255.
    """
    values = np.asarray(img, dtype=np.float64)  # (H, W)
    if not np.isfinite(values).all():
        raise ValueError(f"mode {img.mode} image contains NaN or infinite values")
    natural_max = _HIGH_BIT_DEPTH_RANGE[img.mode]
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= natural_max:
        scaled = values * (255 / natural_max)
    else:
        scaled = (values - low) * (255 / max(high - low, 1e-12))
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)  # (H, W)
    return Image.fromarray(grey).convert("RGB")


# ----------------------------------------------------------------------------------------------------
# Resizing and conversion
# ----------------------------------------------------------------------------------------------------


def resize(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Return a resized copy: an int sets the longest side (aspect kept), a (width, height) tuple is exact."""
    width, height = img.size
    new_width, new_height = _target_size(img.size, size)
    if (new_width, new_height) == (width, height):
        return img.copy()
    # LANCZOS antialiases when shrinking; BICUBIC is smooth (and cheaper) when enlarging.
    shrinking = new_width < width or new_height < height
    resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    return img.resize((new_width, new_height), resample=resample)


def _target_size(current: tuple[int, int], size: int | tuple[int, int]) -> tuple[int, int]:
    """The (width, height) that `resize` produces for an image of `current` size."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        width, height = current
        scale = size / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    if isinstance(size, tuple) and len(size) == 2 and all(isinstance(s, int) for s in size):
        if min(size) <= 0:
            raise ValueError(f"size (width, height) must be positive, got {size}")
        return size
    raise TypeError(f"size must be an int (longest side) or a (width, height) tuple of ints, got {size!r}")


def to_tensor(
    img: Image.Image,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Convert a PIL image (any mode; RGB is used as is) to a (1, 3, H, W) tensor in [0, 1]."""
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point type, got {dtype}")
    pixels = np.array(_to_rgb(img), dtype=np.uint8)  # (H, W, 3), a copy torch may own
    t = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) uint8
    # Move as uint8 (4x less data than float32), then convert and scale on the target device.
    return t.to(device=device).to(dtype).div(255).contiguous()


def to_pil(t: torch.Tensor) -> Image.Image:
    """Convert a (3, H, W) or (1, 3, H, W) float tensor in [0, 1] to an RGB PIL image (values are clamped)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"to_pil expects a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"to_pil expects a float tensor with values in [0, 1], got dtype {t.dtype}")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(
            f"to_pil expects a tensor of shape (3, H, W) or (1, 3, H, W), got {tuple(t.shape)}; "
            "for a batch, convert one image at a time: to_pil(batch[i])"
        )
    # detach + float32 + clamp all return new tensors: the caller's tensor is never modified.
    t = t.detach().to(device="cpu", dtype=torch.float32)  # (3, H, W)
    if torch.isnan(t).any():
        raise ValueError("to_pil got a tensor containing NaN values (did the optimisation diverge?)")
    pixels = t.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)  # (H, W, 3)
    return Image.fromarray(pixels.contiguous().numpy())


def as_rgb(image: torch.Tensor | Image.Image) -> Image.Image:
    """A tensor (3, H, W) / (1, 3, H, W) or a PIL image (any mode) as an RGB PIL image."""
    if isinstance(image, torch.Tensor):
        return to_pil(image)
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    raise TypeError(f"expected a torch.Tensor or a PIL image, got {type(image).__name__}")


# ----------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------


def save_image(image: torch.Tensor | Image.Image, path: str | os.PathLike, quality: int = 95) -> Path:
    """Atomically save a tensor (see `to_pil`) or PIL image; the format comes from the file suffix."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ImageError(f"Cannot save '{path}': unknown or unsupported image file suffix '{path.suffix}'.")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    pil = to_pil(image) if isinstance(image, torch.Tensor) else image
    options = {"quality": quality} if image_format in ("JPEG", "WEBP") else {}
    return atomic_write(path, lambda file: pil.save(file, format=image_format, **options))


def check_writable(path: str | os.PathLike, suffixes: Sequence[str] | None = None, what: str = "output image") -> None:
    """A ValueError (one sentence) unless `path` can be written as an image, or as a file with one of `suffixes`.

    Commands call it before any work, so a long run never ends in an unwritable output.
    """
    path = Path(path)
    if suffixes is not None:
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"Cannot write {what} '{path}': its name must end in {' or '.join(suffixes)}.")
    else:
        image_format = Image.registered_extensions().get(path.suffix.lower())
        if image_format is None or image_format not in Image.SAVE:
            raise ValueError(
                f"Cannot write {what} '{path}': unknown image file suffix '{path.suffix}' (use .jpg or .png)."
            )
    if path.is_dir():
        raise ValueError(f"Cannot write {what} '{path}': it is a directory.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"Cannot write {what} '{path}': the folder {parent} is not writable.")


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` via `write_fn(file)` into a temp file beside it, then move it into place in one step.

    If anything fails the temp file is removed and an existing file at `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            delete=False, dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix
        ) as tmp:
            tmp_path = Path(tmp.name)
            write_fn(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_path, 0o644)  # temp files are created private (0o600); make it an ordinary file
        os.replace(tmp_path, path)  # atomic on POSIX and Windows
    except BaseException:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise
    return path


def save_gif(
    frames: Sequence[torch.Tensor | Image.Image],
    path: str | os.PathLike,
    duration_ms: int = 120,
    hold_last_ms: int | None = 1500,
) -> Path:
    """Atomically write `frames` (RGB images or (1, 3, H, W) tensors of one size) as a looping animated GIF.

    Each frame shows `duration_ms`, the last one `hold_last_ms` (None: as long as the others). The one GIF writer
    of the package: an optimisation's snapshots, training's validation grids, the demo's clip.
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"Cannot save '{path}' as an animation: the file name must end in .gif.")
    if not frames:
        raise ValueError(f"Cannot save '{path}': an animation needs at least one frame.")
    images = [as_rgb(frame) for frame in frames]
    durations = [duration_ms] * (len(images) - 1) + [duration_ms if hold_last_ms is None else hold_last_ms]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return atomic_write(path, lambda file: file.write(buffer.getvalue()))  # never a half-written GIF
