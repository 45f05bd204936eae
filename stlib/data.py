"""Training data for the feed-forward networks: an image-folder dataset, a resumable sampler, COCO download.

Johnson et al. (ECCV 2016, Sec. 4.1, "Style Transfer", training details) train their style transfer networks
on the 80k images of the Microsoft COCO training set (Lin et al., "Microsoft COCO: Common Objects in
Context", ECCV 2014), each resized to 256 x 256, for two epochs at batch size 4. Today's COCO 2017 train
split has 118,287 images (``train2017.zip``, 19,336,861,798 bytes).

- `ImageFolderDataset` reads any tree of images (COCO's ``train2017/`` or your own photos), resizes the
  shorter side to ``size`` and crops a ``size`` x ``size`` square (random crops reproducible per
  (seed, epoch, index)); unreadable files are skipped, counted and reported once.
- `ShuffleSampler` shuffles deterministically per (seed, epoch) and saves its position within the epoch,
  so a run resumed from a checkpoint sees exactly the images it had not seen yet; `make_loader` wires both
  into a DataLoader; `PhotoPairs` is a training loop's source of (input, target) batches built on them
  (`PairSource`: what `stlib.train`'s loop draws from), and its validation photos come from the same reader.
- `download_coco` downloads the COCO zip with resume (HTTP Range), verifies it (size, md5, zip CRCs) and
  extracts it atomically, optionally only the first N images for a quick run.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import signal
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, list_images, load_image, resize, to_tensor

__all__ = [
    "COCO_SPLITS",
    "COCO_TRAIN_BYTES",
    "COCO_TRAIN_MD5",
    "COCO_TRAIN_URL",
    "IMAGE_EXTENSIONS",
    "SR_BENCHMARK_MD5",
    "SR_BENCHMARK_URL",
    "DatasetError",
    "DownloadError",
    "ImageFolderDataset",
    "PairSource",
    "Pairs",
    "PhotoPairs",
    "ShuffleSampler",
    "download_coco",
    "download_sr_benchmark",
    "make_loader",
    "square_crop",
    "square_photo",
]

COCO_TRAIN_URL = "http://images.cocodataset.org/zips/train2017.zip"
COCO_TRAIN_BYTES = 19_336_861_798  # size of train2017.zip
COCO_TRAIN_MD5 = "cced6f7f71b7629ddf16f17bbcfab6b2"  # as published by COCO
COCO_SPLITS = {  # split: (url, bytes, md5); val2017 is 5,000 photos, a quick start that downloads in minutes
    "train2017": (COCO_TRAIN_URL, COCO_TRAIN_BYTES, COCO_TRAIN_MD5),
    "val2017": ("http://images.cocodataset.org/zips/val2017.zip", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
}
# EDSR's test sets (Set5, Set14, B100 = BSD100, Urban100), the archive that torchSR and others fetch
SR_BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
SR_BENCHMARK_MD5 = "4ace41d33c2384b97e6b320cd0afd6ba"
_KNOWN_ARCHIVES: dict[str, tuple[int, str]] = {
    url.replace("http://", scheme): (size, md5)
    for url, size, md5 in COCO_SPLITS.values()
    for scheme in ("http://", "https://")
}

_CHUNK = 1 << 20  # 1 MiB per read while downloading and hashing


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message is one sentence naming the folder."""


class DownloadError(RuntimeError):
    """A download or archive that failed; the message is one sentence naming the URL or file."""


# ----------------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------------


def _crop_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one sample: depends only on (seed, epoch, index), not on worker or order."""
    return np.random.default_rng([seed, epoch, index])


def square_crop(
    image: Image.Image, size: int, rng: np.random.Generator | None = None, resize_to_fit: bool = True
) -> torch.Tensor:
    """A size x size square of `image`, (1, 3, size, size): the shorter side resized to `size`, then a random crop
    (`rng`) or the centre one (None). Without `resize_to_fit` the image keeps its own pixels (a smaller one is scaled
    up to fit the square, aspect kept)."""
    width, height = image.size
    scale = size / min(width, height) if resize_to_fit else max(1.0, size / min(width, height))
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = resize(image, (new_w, new_h))
    if rng is not None:
        left, top = int(rng.integers(0, new_w - size + 1)), int(rng.integers(0, new_h - size + 1))
    else:
        left, top = (new_w - size) // 2, (new_h - size) // 2
    return to_tensor(image.crop((left, top, left + size, top + size)))


class ImageFolderDataset(Dataset):
    """Every image under `root` (recursive, sorted), as (3, size, size) float tensors in [0, 1].

    Each image is resized so that its shorter side is `size` (aspect kept), then cropped to a square:
    at a random position (``crop="random"``, reproducible per (seed, epoch, index); call `set_epoch` at the
    start of each epoch) or in the centre (``crop="center"``). ``resize=False`` crops at the file's own
    resolution instead (super-resolution trains on native pixels; a smaller image is scaled up to fit the
    square, aspect kept). A file that cannot be read is skipped:
    `__getitem__` returns the next readable file instead (wrapping around at the end), the first such file
    is reported once with `warnings.warn`, and `skipped` counts them. With DataLoader worker processes each
    worker counts (and warns) on its own copy of the dataset.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 256,
        crop: str = "random",
        seed: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        limit: int | None = None,
        max_pixels: int = MAX_PIXELS,
        resize: bool = True,
    ) -> None:
        self.root = Path(root)
        self.resize = resize
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ImageFolderDataset: size must be a positive integer, got {size!r}.")
        if crop not in ("random", "center"):
            raise ValueError(f"ImageFolderDataset: crop must be 'random' or 'center', got {crop!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"ImageFolderDataset: seed must be an integer >= 0, got {seed!r}.")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"ImageFolderDataset: limit must be a positive integer or None, got {limit!r}.")
        if isinstance(extensions, str):
            raise TypeError("extensions must be a sequence of suffixes such as ('.jpg', '.png'), not one string")
        self.size, self.crop, self.seed, self.max_pixels = size, crop, seed, max_pixels
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.epoch = 0
        try:
            self.files = list_images(self.root, self.extensions)[:limit]
        except ImageError as err:
            raise DatasetError(str(err)) from None
        self._bad: set[int] = set()
        self._warned = False

    def __len__(self) -> int:
        return len(self.files)

    @property
    def skipped(self) -> int:
        """How many distinct unreadable files this process has met (and skipped) so far."""
        return len(self._bad)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: random crops depend on (seed, epoch, index)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}.")
        self.epoch = epoch

    def __getitem__(self, index: int) -> torch.Tensor:
        """The image at `index` (or the next readable one) as a (3, size, size) tensor in [0, 1]."""
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} images")
        index %= n
        _, image = next(self._readable(index, wrap=True))
        # Crop randomness follows the requested index, so it does not depend on which files are broken.
        return self._square(image, _crop_rng(self.seed, self.epoch, index))

    def first(self, count: int | None = None) -> list[Image.Image]:
        """The first `count` readable images (None: all) in file order, as read (RGB).

        Unreadable files are skipped and reported once, as in training; none readable is a `DatasetError`.
        """
        found = []
        for _, image in self._readable(0, wrap=False):
            found.append(image)
            if len(found) == count:
                break
        return found

    def first_squares(self, count: int, size: int | None = None) -> torch.Tensor:
        """The first `count` readable images' centre squares (N, 3, S, S), S = `size` or the dataset's (validation)."""
        return torch.cat([square_crop(image, size or self.size) for image in self.first(count)])

    def _readable(self, start: int, wrap: bool) -> Iterator[tuple[int, Image.Image]]:
        """(index, image) of the readable files from `start` on; a DatasetError when none at all is readable."""
        n, first_error, found = len(self.files), None, False
        for offset in range(n if wrap else n - start):
            i = (start + offset) % n
            if i in self._bad:
                continue
            try:
                image = load_image(self.files[i], max_pixels=self.max_pixels)
            except ImageError as err:
                self._skip(i, err)
                first_error = first_error or str(err)
                continue
            found = True
            yield i, image
        if not found and len(self._bad) == n:
            raise DatasetError(
                f"None of the {n} image files in '{self.root}' could be read"
                + (f" (for example: {first_error.rstrip('.')})." if first_error else ".")
            )

    def _skip(self, i: int, err: ImageError) -> None:
        self._bad.add(i)
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"Skipping unreadable image in '{self.root}': {str(err).rstrip('.')}; further unreadable files "
                "are skipped without a warning and counted in the dataset's `skipped` property.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _square(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """A size x size square of `image` (random or centre crop, `square_crop`), (3, size, size)."""
        return square_crop(image, self.size, rng if self.crop == "random" else None, self.resize)[0]

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset('{self.root}', {len(self)} images, size={self.size}, crop={self.crop!r}, "
            f"seed={self.seed}, epoch={self.epoch}, skipped={self.skipped})"
        )


# ----------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------


class ShuffleSampler(Sampler[int]):
    """A new random order of range(n) each epoch, reproducible from (seed, epoch), resumable mid-epoch.

    With ``world`` > 1 processes (distributed training) all share the epoch's order and process ``rank`` takes
    positions rank, rank + world, ...; every rank yields the same number of indices (the remainder of the
    epoch that does not divide by `world` is skipped), so all ranks run the same number of steps.
    `state_dict()` records (seed, epoch, position), position being how many indices of the epoch were handed
    out (by all ranks together); a sampler given that state with `load_state_dict` yields exactly the
    remaining indices of that epoch.
    A DataLoader with worker processes asks for indices ahead of the training loop (prefetching), so there,
    pass what the loop really consumed: ``state_dict(consumed=batches_done * batch_size)``.
    Call `set_epoch` before each epoch: iterating again without it repeats the epoch's order.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"ShuffleSampler: n must be a positive integer, got {n!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"ShuffleSampler: seed must be an integer >= 0, got {seed!r}.")
        if isinstance(world, bool) or not isinstance(world, int) or world < 1 or not 0 <= rank < world:
            raise ValueError(f"ShuffleSampler: need 0 <= rank < world, got rank={rank!r}, world={world!r}.")
        super().__init__()
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch = 0
        self._position = 0  # indices of this epoch handed out so far
        self._start = 0  # where the next iteration starts (set by load_state_dict)

    def order(self, epoch: int) -> np.ndarray:
        """The permutation (n,) of range(n) used in `epoch`."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}.")
        self.epoch, self._position, self._start = epoch, 0, 0

    def __len__(self) -> int:
        return (self.n - self._start) // self.world

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        start, self._start = self._start, 0
        self._position = start
        usable = start + (self.n - start) // self.world * self.world  # the same count for every rank
        for position in range(start + self.rank, usable, self.world):
            self._position = position + 1
            yield int(order[position])

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """{"n", "seed", "epoch", "position"}; `consumed` overrides the position (samples really used)."""
        position = self._position if consumed is None else consumed
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= self.n:
            raise ValueError(f"ShuffleSampler: consumed must be an integer in [0, {self.n}], got {position!r}.")
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "position": position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume from `state_dict()`: the next iteration yields the rest of the saved epoch."""
        missing = [k for k in ("n", "seed", "epoch", "position") if k not in state]
        if missing:
            raise ValueError(f"ShuffleSampler state is missing {', '.join(missing)}.")
        if state["n"] != self.n:
            raise ValueError(
                f"ShuffleSampler state was saved for {state['n']} samples but this dataset has {self.n}; "
                "resume with the same dataset (and limit)."
            )
        if not 0 <= state["position"] <= self.n:
            raise ValueError(f"ShuffleSampler state position {state['position']} is outside [0, {self.n}].")
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]))
        self._position = self._start = int(state["position"])


def make_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    position: int = 0,
    num_workers: int = 0,
    drop_last: bool = True,
    pin_memory: bool = False,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """A DataLoader over `dataset` in `ShuffleSampler` order for `epoch`, starting `position` samples in.

    The sampler is ``loader.sampler``; the dataset's `set_epoch` (if any) is called too. For the next epoch
    call ``loader.sampler.set_epoch(e)`` and ``dataset.set_epoch(e)`` (workers are not persistent, so they
    see the new epoch). `rank` and `world` split each epoch between distributed processes (`ShuffleSampler`).
    The loader's own random generator is seeded from `seed`, so it leaves the global RNG alone.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"make_loader: batch_size must be a positive integer, got {batch_size!r}.")
    sampler = ShuffleSampler(len(dataset), seed=seed, rank=rank, world=world)
    sampler.load_state_dict({"n": len(dataset), "seed": seed, "epoch": epoch, "position": position})
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    return _Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_leave_stop_signals_to_main if num_workers > 0 else None,
    )


Pairs = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]
"""A batch of photos (B, 3, S, S) -> (a network's inputs, the objective's targets)."""


class PairSource(Protocol):
    """A training loop's (inputs, targets), one step after another, resumable (`stlib.train`)."""

    epoch: int  # logged with each row of train.csv

    def next(self) -> tuple[torch.Tensor, Any]:
        """The next step's inputs (B, 3, H, W) on the device and the objective's targets."""

    def state_dict(self) -> dict[str, Any]:
        """Where the source stands (stored in the training state)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a training state."""

    def validation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fixed validation photos (N, 3, S, S) and the network's inputs for them, or None."""


class PhotoPairs:
    """A training loop's (inputs, targets): `pairs` of batches of `dataset` (B, 3, S, S) on `device`, epoch after
    epoch of one shared random order (`ShuffleSampler`, split between `world` processes), resumable at the batch.

    `state_dict` says where the stream stands ({"epoch", "sampler"}: the photos really consumed, whatever the
    loader's workers prefetched). `validation` is (a dataset, count, size): its first readable photos' centre squares.
    """

    def __init__(
        self, dataset: ImageFolderDataset, batch_size: int, pairs: Pairs, device: torch.device | str = "cpu", *,
        seed: int = 0, num_workers: int = 0, rank: int = 0, world: int = 1, channels_last: bool = False,
        validation: tuple[ImageFolderDataset, int, int] | None = None,
    ) -> None:  # fmt: skip
        if len(dataset) < batch_size * world:
            raise DatasetError(
                f"Training folder '{dataset.root}' has {len(dataset)} images, fewer than one batch of "
                f"{batch_size * world}."
            )
        self.dataset, self.batch_size, self.pairs, self.device = dataset, batch_size, pairs, torch.device(device)
        self.seed, self.world, self.channels_last, self.validation_set = seed, world, channels_last, validation
        cuda = self.device.type == "cuda"
        self.loader_options = {"num_workers": num_workers, "pin_memory": cuda, "rank": rank, "world": world}
        self.epoch = self.batches = 0  # batches consumed in this epoch, by every process
        self._iterator: Iterator[torch.Tensor] | None = None

    def next(self) -> tuple[torch.Tensor, Any]:
        """`pairs` of the next batch of photos (B, 3, S, S), moved to the device."""
        while True:
            if self._iterator is None:
                position = self.batches * self.batch_size * self.world
                loader = make_loader(
                    self.dataset, self.batch_size, seed=self.seed, epoch=self.epoch, position=position,
                    **self.loader_options,
                )  # fmt: skip
                self._iterator = iter(loader)
            try:
                photos = next(self._iterator).to(self.device, non_blocking=True)
                break
            except StopIteration:
                self.epoch, self.batches, self._iterator = self.epoch + 1, 0, None
        self.batches += 1
        if self.channels_last:
            photos = photos.contiguous(memory_format=torch.channels_last)
        return self.pairs(photos)

    def state_dict(self) -> dict[str, Any]:
        """{"epoch", "sampler": `ShuffleSampler.state_dict` of the photos consumed}."""
        consumed = self.batches * self.batch_size * self.world
        sampler = {"n": len(self.dataset), "seed": self.seed, "epoch": self.epoch, "position": consumed}
        return {"epoch": self.epoch, "sampler": sampler}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue after the photos that `state` (from `state_dict`) says were consumed."""
        self.epoch = int(state["epoch"])
        self.batches = int(state["sampler"]["position"]) // (self.batch_size * self.world)
        self._iterator = None

    def validation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The validation photos (N, 3, S, S), read as the training set is, and their inputs; None without."""
        if self.validation_set is None:
            return None
        dataset, count, size = self.validation_set
        photos = dataset.first_squares(count, size)
        return photos, self.pairs(photos)[0]


def square_photo(path: str | os.PathLike, size: int) -> torch.Tensor:
    """A photo's centre square: shorter side resized to `size`, (1, 3, size, size) (e.g. a validation photo)."""
    return square_crop(load_image(path), size)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class _Loader(DataLoader):
    """A DataLoader whose workers leave Ctrl-C and SIGTERM to the main process.

    Those signals often go to the whole process group (a terminal, `timeout`, `kill -- -PGID`). The main
    process decides how to stop (train's CLI: after the current step, with a checkpoint) and then shuts its
    workers down; a worker killed by the signal would instead make the DataLoader raise at once. The signals
    are blocked while the workers start, so none arrives between a worker's fork and its `worker_init_fn`.
    """

    def __iter__(self):  # noqa: ANN204 (DataLoader's own iterator type is private)
        if self.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):  # Windows has no signal masks
            return super().__iter__()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a signal that came meanwhile is delivered now


def _leave_stop_signals_to_main(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by _Loader while the workers started


# ----------------------------------------------------------------------------------------------------------
# COCO download
# ----------------------------------------------------------------------------------------------------------


def download_coco(
    dest: str | os.PathLike,
    url: str | None = None,
    keep: int | None = None,
    progress: bool = True,
    md5: str | None = None,
    timeout: float = 60.0,
    split: str = "train2017",
) -> Path:
    """Download (resumably), verify and atomically extract a COCO 2017 split into ``dest/<split>``; return it.

    `split` is ``"train2017"`` (118,287 photos, 19 GB) or ``"val2017"`` (5,000 photos, 0.8 GB); `url` defaults
    to the split's official archive. The archive goes to ``dest/<split>.zip`` through ``dest/<split>.zip.part``:
    an interrupted download is resumed with an HTTP Range request on the next call. It is checked against its
    known size and md5 (the official URL's, or `md5=` for other URLs) and the CRC of every extracted member.
    Extraction goes to a temporary folder in `dest` that is renamed to ``dest/<split>`` only when complete.
    ``keep=N`` extracts only the first N images (sorted by name). If ``dest/<split>`` exists it is returned as
    is (delete it to extract again). The zip is kept (delete it yourself to free its space).
    """
    if split not in COCO_SPLITS:
        raise ValueError(f"download_coco: split must be one of {', '.join(COCO_SPLITS)}, got {split!r}.")
    dest, url = Path(dest), url or COCO_SPLITS[split][0]
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"Cannot download '{url}': only http:// and https:// URLs are supported.")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"download_coco: keep must be a positive integer or None, got {keep!r}.")
    known_size, known_md5 = _KNOWN_ARCHIVES.get(url, (None, None))
    md5 = (md5 or known_md5 or "").lower() or None
    if md5 is not None and not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ValueError(f"download_coco: md5 must be 32 hexadecimal digits, got {md5!r}.")

    final = dest / split
    if final.is_dir():
        return final
    if final.exists():
        raise DownloadError(f"Cannot extract COCO to '{final}': a file of that name is in the way.")
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{split}.zip"
    if not archive.is_file():
        _download(url, archive, known_size, timeout, progress)
    _verify_archive(archive, known_size, md5, progress)
    _extract(archive, final, keep, progress)
    return final


def download_sr_benchmark(
    dest: str | os.PathLike,
    url: str = SR_BENCHMARK_URL,
    md5: str | None = SR_BENCHMARK_MD5,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download (resumably) and verify EDSR's test-set archive; extract Set5 and BSD100 into ``dest``; return it.

    The archive (Set5, Set14, B100 and Urban100 with their bicubic inputs) goes to ``dest/benchmark.tar`` through a
    ``.part`` file, is checked against its published md5, and only the high-resolution images of Set5 and B100 are
    extracted, to ``dest/Set5/*.png`` and ``dest/BSD100/*.png`` (the layout `stlib.superres` and notebook 05 read;
    B100 is BSD100). Extraction goes to a temporary folder renamed when complete; existing folders are kept.
    """
    dest = Path(dest)
    targets = {"Set5": dest / "Set5", "B100": dest / "BSD100"}
    if all(folder.is_dir() for folder in targets.values()):
        return dest
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"Cannot download '{url}': only http:// and https:// URLs are supported.")
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "benchmark.tar"
    if not archive.is_file():
        _download(url, archive, None, timeout, progress)
    if md5 is not None:
        _verify_md5(archive, md5, progress)
    tmp = Path(tempfile.mkdtemp(prefix=".benchmark-extracting-", dir=dest))
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts  # benchmark/Set5/HR/baby.png
                if (
                    member.isfile()
                    and len(parts) == 4
                    and parts[1] in targets
                    and parts[2] == "HR"
                    and parts[3] != ".."
                ):
                    (tmp / parts[1]).mkdir(exist_ok=True)
                    with tar.extractfile(member) as source, open(tmp / parts[1] / parts[3], "wb") as out:
                        shutil.copyfileobj(source, out)
        for name, folder in targets.items():
            if not (tmp / name).is_dir():
                raise DownloadError(
                    f"Archive '{archive}' has no {name} high-resolution images; delete it and run again."
                )
            if not folder.is_dir():
                os.replace(tmp / name, folder)
    except tarfile.TarError as err:
        raise DownloadError(
            f"Archive '{archive}' is not a valid tar file ({_reason(err)}); delete it and run again."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _download(url: str, archive: Path, expected_size: int | None, timeout: float, progress: bool) -> None:
    """Download `url` to `archive` via `archive`.part, resuming a partial file with an HTTP Range request."""
    part = archive.with_name(archive.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "stlib", "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")

    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # Range Not Satisfiable: the part file already holds everything
            total = _content_range_total(err.headers.get("Content-Range", ""))
            err.close()
            if total is not None and total != offset:
                raise DownloadError(
                    f"Server for '{url}' refused to resume at byte {offset:,} of a {total:,}-byte file; "
                    f"delete '{part}' and run again."
                ) from None
            _finish_part(part, archive)
            return
        err.close()
        raise DownloadError(f"Download of '{url}' failed: HTTP {err.code} {err.reason}.") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(f"Cannot download '{url}' ({_reason(err)}).") from None

    with response:
        status = response.status
        if status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                raise DownloadError(
                    f"Server for '{url}' answered a resume request at byte {offset:,} with data from byte "
                    f"{start}; delete '{part}' and run again."
                )
            total = _content_range_total(response.headers.get("Content-Range", ""))
            mode = "ab"
        elif status == 200:  # the server ignored the Range header (or there was none): start from scratch
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"Download of '{url}' failed: unexpected HTTP status {status}.")
        total = total if total is not None else expected_size
        if expected_size is not None and total != expected_size:
            raise DownloadError(
                f"Server for '{url}' reports {total:,} bytes but the archive is known to have {expected_size:,}."
            )
        if total is not None:
            free = shutil.disk_usage(archive.parent).free
            if free < total - offset:
                raise DownloadError(
                    f"Not enough disk space in '{archive.parent}' for '{url}': {(total - offset) / 1e9:.1f} GB "
                    f"still to download, {free / 1e9:.1f} GB free."
                )

        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=archive.name, disable=not progress)
        try:
            with bar, open(part, mode) as file:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    file.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                file.flush()
                os.fsync(file.fileno())
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(
                f"Download of '{url}' was interrupted after {received:,} bytes ({_reason(err)}); "
                f"run again to resume from '{part}'."
            ) from None
    if total is not None and received != total:
        raise DownloadError(
            f"Download of '{url}' was interrupted after {received:,} of {total:,} bytes; "
            f"run again to resume from '{part}'."
        )
    _finish_part(part, archive)


def _finish_part(part: Path, archive: Path) -> None:
    """Move the complete part file into place (atomic rename in the same folder)."""
    os.replace(part, archive)
    _fsync_dir(archive.parent)


def _content_range_start(header: str) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``, or None."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", header)
    return int(match.group(1)) if match else None


def _content_range_total(header: str) -> int | None:
    """The total size of ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``), or None."""
    match = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*", header)
    return int(match.group(1)) if match else None


def _verify_md5(archive: Path, md5: str, progress: bool) -> None:
    """Check the archive's md5 (one clear sentence when it differs)."""
    digest = hashlib.md5(usedforsecurity=False)
    with (
        open(archive, "rb") as file,
        tqdm(total=archive.stat().st_size, unit="B", unit_scale=True, desc="md5", disable=not progress) as bar,
    ):
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    if digest.hexdigest() != md5:
        raise DownloadError(
            f"Archive '{archive}' has md5 {digest.hexdigest()} instead of {md5} (corrupt download); "
            "delete it and run again."
        )


def _verify_archive(archive: Path, expected_size: int | None, md5: str | None, progress: bool) -> None:
    """Check the archive's size and md5 when known, and that it opens as a zip file."""
    size = archive.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            f"Archive '{archive}' has {size:,} bytes instead of {expected_size:,}; delete it and run again."
        )
    if md5 is not None:
        _verify_md5(archive, md5, progress)
    try:
        with zipfile.ZipFile(archive):
            pass
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(
            f"Archive '{archive}' is not a valid zip file ({_reason(err)}); delete it and run again."
        ) from None


def _extract(archive: Path, final: Path, keep: int | None, progress: bool) -> None:
    """Extract the images of `archive` (the first `keep`) into a temp folder, then rename it to `final`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-extracting-", dir=final.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            members = sorted(
                (m for m in zf.infolist() if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_EXTENSIONS),
                key=lambda m: m.filename,
            )
            if not members:
                raise DownloadError(f"Archive '{archive}' contains no images.")
            members = members[:keep]
            prefix = f"{final.name}/"  # COCO's zip holds train2017/xxx.jpg: strip it, we extract into final
            for member in tqdm(members, desc=f"extracting {final.name}", unit="img", disable=not progress):
                name = member.filename.replace("\\", "/")
                name = name[len(prefix) :] if name.startswith(prefix) else name
                relative = Path(name)
                if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                    raise DownloadError(f"Archive '{archive}' has an unsafe member name '{member.filename}'.")
                target = tmp / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)  # zipfile checks the CRC at the end of each member
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DownloadError(
            f"Archive '{archive}' is corrupt ({_reason(err)}); nothing was extracted, delete it and run again."
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    """A short description of an exception for use inside a sentence."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    text = str(exc).strip().splitlines()
    return (text[0].rstrip(".") if text and text[0] else type(exc).__name__) or type(exc).__name__
