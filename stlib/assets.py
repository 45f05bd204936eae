"""Where the course's files live (sample photos, style paintings, checkpoints, outputs, caches) and their digests.

The repository root is found from the installed package (an editable install or a clone on Colab); set
``STLIB_HOME`` to point elsewhere. Outputs go to ``<root>/outputs`` unless ``STLIB_OUTPUTS`` is set.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = [
    "cache_dir",
    "content_image",
    "file_sha256",
    "list_content_images",
    "list_styles",
    "outputs_dir",
    "repo_root",
    "style_image",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def repo_root() -> Path:
    """The course repository's root folder (the one holding ``style_images/`` and ``data/``)."""
    env = os.environ.get("STLIB_HOME")
    candidates = [Path(env)] if env else [Path(__file__).resolve().parent.parent, Path.cwd(), Path.cwd().parent]
    for root in candidates:
        if (root / "style_images").is_dir() and (root / "data").is_dir():
            return root
    where = env or "the installed package, the working directory or its parent"
    raise FileNotFoundError(
        f"Cannot find the course files (style_images/ and data/) from {where}: "
        "clone the repository and install it with `pip install -e .`, or set STLIB_HOME to the clone."
    )


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}


def list_styles() -> list[str]:
    """Names of the bundled style paintings (``starry_night``, ``wave`` ...)."""
    return list(_images_in(repo_root() / "style_images"))


def list_content_images() -> list[str]:
    """Names of the bundled sample photos (``tubingen`` ...)."""
    return list(_images_in(repo_root() / "data" / "samples"))


def style_image(name: str) -> Path:
    """Path of a bundled style painting by name, e.g. ``style_image("starry_night")``."""
    images = _images_in(repo_root() / "style_images")
    if name not in images:
        raise KeyError(f"No bundled style named {name!r}; choose one of {', '.join(images)}.")
    return images[name]


def content_image(name: str = "tubingen") -> Path:
    """Path of a bundled sample photo by name."""
    images = _images_in(repo_root() / "data" / "samples")
    if name not in images:
        raise KeyError(f"No bundled photo named {name!r}; choose one of {', '.join(images)}.")
    return images[name]


def outputs_dir() -> Path:
    """Folder for figures and results (created if needed): ``$STLIB_OUTPUTS`` or ``<root>/outputs``."""
    env = os.environ.get("STLIB_OUTPUTS")
    out = Path(env) if env else repo_root() / "outputs"
    out.mkdir(parents=True, exist_ok=True)
    return out


def cache_dir() -> Path:
    """Where stlib caches derived files (converted VGG weights, ONNX exports): $STLIB_CACHE or ~/.cache/stlib."""
    root = os.environ.get("STLIB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stlib"
    )
    return Path(root)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's content, as 64 hex digits (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
