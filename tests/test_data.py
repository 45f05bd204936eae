"""Tests for stlib.data: the image-folder dataset, the resumable sampler and the resumable COCO download.

Downloads are served by a local HTTP server on 127.0.0.1 (no internet): it supports Range requests and can
cut the connection part-way through its first answer, to simulate an interrupted download.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import socket
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stlib import data
from stlib.data import (
    COCO_SPLITS,
    SR_BENCHMARK_MD5,
    SR_BENCHMARK_URL,
    DatasetError,
    DownloadError,
    ImageFolderDataset,
    ShuffleSampler,
    download_coco,
    download_sr_benchmark,
    make_loader,
    square_crop,
)
from stlib.images import load_image, resize, to_tensor


def _noise_image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


# --------------------------------------------------------------------------------------------------------
# ImageFolderDataset
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small tree: images of several sizes and modes in nested folders, plus a file that is no image."""
    root = tmp_path / "photos"
    (root / "b" / "deep").mkdir(parents=True)
    _noise_image(64, 16, 0).save(root / "a_wide.jpg", quality=95)
    _noise_image(16, 40, 1).save(root / "b" / "tall.png")
    _noise_image(30, 30, 2, "L").save(root / "b" / "deep" / "grey.PNG")
    _noise_image(20, 50, 3, "RGBA").save(root / "c_rgba.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_dataset_lists_images_recursively_in_sorted_order(folder):
    ds = ImageFolderDataset(folder, size=16)
    assert [p.relative_to(folder).as_posix() for p in ds.files] == [
        "a_wide.jpg",
        "b/deep/grey.PNG",
        "b/tall.png",
        "c_rgba.png",
    ]
    assert len(ds) == 4
    assert len(ImageFolderDataset(folder, size=16, limit=2)) == 2
    assert ImageFolderDataset(folder, size=16, limit=2).files == ds.files[:2]
    assert len(ImageFolderDataset(folder, extensions=["png"])) == 3  # case-insensitive, dot optional


def test_dataset_returns_square_rgb_tensors_in_unit_range(folder):
    ds = ImageFolderDataset(folder, size=16)
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
    assert ds.skipped == 0


def test_center_crop_is_the_middle_of_the_resized_image(folder):
    ds = ImageFolderDataset(folder, size=16, crop="center")
    image = load_image(folder / "a_wide.jpg")  # 64 x 16: shorter side already 16
    expected = to_tensor(resize(image, (64, 16)).crop((24, 0, 40, 16)))[0]
    torch.testing.assert_close(ds[0], expected)
    tall = to_tensor(resize(load_image(folder / "b" / "tall.png"), (16, 40)).crop((0, 12, 16, 28)))[0]
    torch.testing.assert_close(ds[2], tall)


def test_shorter_side_is_resized_to_size_before_cropping(folder):
    ds = ImageFolderDataset(folder, size=12, crop="center")
    grey = to_tensor(resize(load_image(folder / "b" / "deep" / "grey.PNG"), (12, 12)))[0]  # 30x30 -> 12x12
    torch.testing.assert_close(ds[1], grey)


def test_random_crops_are_reproducible_per_seed_epoch_and_index(folder):
    a, b = ImageFolderDataset(folder, size=16, seed=3), ImageFolderDataset(folder, size=16, seed=3)
    torch.testing.assert_close(a[0], b[0])  # same (seed, epoch, index): same crop, in any instance
    crops = []
    for epoch in range(6):
        a.set_epoch(epoch)
        crops.append(a[0])
    b.set_epoch(4)
    torch.testing.assert_close(b[0], crops[4])
    assert len({tuple(c.flatten().tolist()) for c in crops}) > 1  # the crop moves between epochs
    other_seed = ImageFolderDataset(folder, size=16, seed=4)
    other_crops = []
    for epoch in range(6):
        other_seed.set_epoch(epoch)
        other_crops.append(other_seed[0])
    assert any(not torch.equal(c, o) for c, o in zip(crops, other_crops, strict=True))  # another seed, other crops
    full = to_tensor(load_image(folder / "a_wide.jpg"))[0]  # (3, 16, 64): every crop is a window of it
    windows = [full[:, :, left : left + 16] for left in range(64 - 16 + 1)]
    assert all(any(torch.equal(c, w) for w in windows) for c in crops)


def test_unreadable_files_are_skipped_counted_and_reported_once(folder):
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "zz_empty.png").write_bytes(b"")  # the last file: skipping wraps around to the first
    ds = ImageFolderDataset(folder, size=16, crop="center")
    names = [p.name for p in ds.files]
    assert names == ["a_wide.jpg", "broken.jpg", "grey.PNG", "tall.png", "c_rgba.png", "zz_empty.png"]
    with pytest.warns(RuntimeWarning, match=r"Skipping unreadable image in '.*photos'.*broken\.jpg") as record:
        x = ds[1]
        assert ds[5].shape == (3, 16, 16)
        ds[1]  # a known bad file is not reported again
    assert len(record) == 1
    assert ds.skipped == 2
    torch.testing.assert_close(x, ds[2])  # moved on to the next readable file
    torch.testing.assert_close(ds[5], ds[0])  # wrapped around


def test_the_first_readable_images_skip_unreadable_ones_as_training_does(folder):
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    ds = ImageFolderDataset(folder, size=16)
    with pytest.warns(RuntimeWarning, match=r"broken\.jpg") as record:
        squares = ds.first_squares(3, size=12)  # a_wide, [broken], grey, tall
        ds[1]  # training meets the same file: not reported again
    assert len(record) == 1 and ds.skipped == 1
    assert squares.shape == (3, 3, 12, 12)
    expected = square_crop(load_image(folder / "b" / "deep" / "grey.PNG"), 12)[0]
    torch.testing.assert_close(squares[1], expected)  # the file after the broken one
    assert [image.size for image in ds.first()] == [(64, 16), (30, 30), (16, 40), (20, 50)]  # all readable, as read


def test_a_folder_without_readable_images_is_a_clear_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"junk")
    (root / "b.png").write_bytes(b"")
    ds = ImageFolderDataset(root, size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match=r"None of the 2 image files in '.*bad' could be read"):
            ds[0]
        with pytest.raises(DatasetError, match=r"None of the 2 image files in '.*bad' could be read"):
            ImageFolderDataset(root, size=8).first_squares(4)


def test_missing_or_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"Image folder '.*nowhere' does not exist\."):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"Image folder '.*empty' contains no files ending in \.jpg"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="is not a folder"):
        ImageFolderDataset(tmp_path / "empty" / "readme.txt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"crop": "corner"}, "crop must be"), ({"size": 0}, "size must be"), ({"limit": 0}, "limit must be")],
)
def test_bad_dataset_arguments(folder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageFolderDataset(folder, **kwargs)


# --------------------------------------------------------------------------------------------------------
# ShuffleSampler and make_loader
# --------------------------------------------------------------------------------------------------------


def test_sampler_is_a_reproducible_permutation_per_epoch():
    s = ShuffleSampler(50, seed=7)
    first = list(s)
    assert sorted(first) == list(range(50))
    assert list(ShuffleSampler(50, seed=7)) == first
    assert list(ShuffleSampler(50, seed=8)) != first
    s.set_epoch(1)
    second = list(s)
    assert sorted(second) == list(range(50)) and second != first
    s.set_epoch(0)
    assert list(s) == first


@pytest.mark.parametrize("k", [0, 1, 17, 49, 50])
def test_sampler_resumed_at_step_k_yields_exactly_the_remaining_indices(k):
    reference = ShuffleSampler(50, seed=3)
    reference.set_epoch(2)
    full = list(reference)

    interrupted = ShuffleSampler(50, seed=3)
    interrupted.set_epoch(2)
    it = iter(interrupted)
    seen = [next(it) for _ in range(k)]
    state = json.loads(json.dumps(interrupted.state_dict()))  # as saved in a checkpoint
    assert state == {"n": 50, "seed": 3, "epoch": 2, "position": k}

    resumed = ShuffleSampler(50, seed=0)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert len(resumed) == 50 - k
    rest = list(resumed)
    assert seen + rest == full
    resumed.set_epoch(3)
    assert len(resumed) == 50 and list(resumed) != full


def test_sampler_state_errors_and_consumed_override():
    s = ShuffleSampler(10)
    assert s.state_dict(consumed=4)["position"] == 4
    with pytest.raises(ValueError, match="consumed must be an integer in"):
        s.state_dict(consumed=11)
    with pytest.raises(ValueError, match="saved for 12 samples but this dataset has 10"):
        s.load_state_dict({"n": 12, "seed": 0, "epoch": 0, "position": 0})
    with pytest.raises(ValueError, match="missing position"):
        s.load_state_dict({"n": 10, "seed": 0, "epoch": 0})


def test_loader_resumed_mid_epoch_gives_the_remaining_batches():
    dataset = torch.arange(100, 111)  # 11 samples: 3 batches of 3, the last 2 samples dropped
    loader = make_loader(dataset, batch_size=3, seed=5, epoch=1)
    batches = [b.tolist() for b in loader]
    assert len(batches) == 3 and all(len(b) == 3 for b in batches)

    loader = make_loader(dataset, batch_size=3, seed=5, epoch=1)
    it = iter(loader)
    first = next(it).tolist()
    state = loader.sampler.state_dict()  # single process: the sampler has handed out exactly one batch
    assert first == batches[0] and state["position"] == 3

    resumed = make_loader(dataset, batch_size=3, seed=state["seed"], epoch=state["epoch"], position=state["position"])
    assert len(resumed) == 2
    assert [b.tolist() for b in resumed] == batches[1:]


def test_ranks_split_each_epoch_into_disjoint_equal_shares():
    single = list(ShuffleSampler(11, seed=3))
    shares = [list(ShuffleSampler(11, seed=3, rank=r, world=3)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]  # 11 // 3 each: every rank runs the same number of steps
    assert sorted(sum(shares, [])) == sorted(single[:9])  # the epoch's first 9 positions, each used once
    assert shares[1] == single[1:9:3]
    resumed = ShuffleSampler(11, seed=3, rank=1, world=3)
    resumed.load_state_dict({"n": 11, "seed": 3, "epoch": 0, "position": 3})  # one global step of 3 done
    assert list(resumed) == single[4:9:3]
    loaders = [make_loader(torch.arange(11), batch_size=2, seed=3, rank=r, world=3) for r in range(3)]
    assert [len(loader) for loader in loaders] == [1, 1, 1]
    with pytest.raises(ValueError, match="0 <= rank < world"):
        ShuffleSampler(11, rank=3, world=3)


def test_loader_sets_the_dataset_epoch(folder):
    ds = ImageFolderDataset(folder, size=8)
    loader = make_loader(ds, batch_size=2, epoch=3)
    assert ds.epoch == 3
    batch = next(iter(loader))
    assert batch.shape == (2, 3, 8, 8)


# --------------------------------------------------------------------------------------------------------
# download_coco against a local HTTP server
# --------------------------------------------------------------------------------------------------------


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    _noise_image(12, 10, seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def coco_zip() -> tuple[bytes, dict[str, bytes]]:
    """A tiny train2017.zip: 10 JPEGs under train2017/ (stored, not deflated) and a non-image file."""
    images = {f"{i:012d}.jpg": _jpeg(i) for i in range(10, 0, -1)}  # written in reverse name order
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("train2017/", b"")
        for name, payload in images.items():
            zf.writestr(f"train2017/{name}", payload)
        zf.writestr("train2017/LICENSE.txt", b"not an image")
    return buffer.getvalue(), images


class _ServerState:
    """What the test server serves and what it saw."""

    def __init__(self) -> None:
        self.payload = b""
        self.status: int | None = None  # force an error status
        self.cut_after: int | None = None  # close the connection after this many body bytes, once
        self.ignore_range = False
        self.range_headers: list[str | None] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state: _ServerState = self.server.state  # type: ignore[attr-defined]
        header = self.headers.get("Range")
        state.range_headers.append(header)
        if state.status is not None:
            self.send_error(state.status)
            return
        data, start, size = state.payload, 0, len(state.payload)
        if header and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", header).group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:
            body, state.cut_after = body[: state.cut_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # keep test output quiet


@pytest.fixture
def server(coco_zip):
    """A local server for http://127.0.0.1:PORT/train2017.zip; yields (url, state); always shut down."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = _ServerState()
    state.payload = coco_zip[0]
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/train2017.zip", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith(".train2017-extracting-"))


def test_interrupted_download_fails_clearly_and_the_next_call_resumes(server, coco_zip, tmp_path):
    url, state = server
    payload, images = coco_zip
    state.cut_after = 3000
    with pytest.raises(DownloadError, match=rf"'{re.escape(url)}' was interrupted after 3,000 of [\d,]+ bytes") as e:
        download_coco(tmp_path, url=url, progress=False, timeout=10)
    assert "run again to resume" in str(e.value)
    part = tmp_path / "train2017.zip.part"
    assert part.stat().st_size == 3000
    assert not (tmp_path / "train2017").exists()

    out = download_coco(tmp_path, url=url, progress=False, timeout=10)
    assert state.range_headers == [None, "bytes=3000-"]
    assert out == tmp_path / "train2017"
    assert sorted(p.name for p in out.iterdir()) == sorted(images)  # images only, no LICENSE.txt
    assert all((out / name).read_bytes() == payload for name, payload in images.items())
    assert (tmp_path / "train2017.zip").read_bytes() == payload and not part.exists()
    assert _leftovers(tmp_path) == []
    assert len(ImageFolderDataset(out, size=8)) == 10

    assert download_coco(tmp_path, url=url, progress=False) == out  # already there: no new request
    assert len(state.range_headers) == 2


def test_keep_extracts_only_the_first_images(server, tmp_path):
    url, _ = server
    out = download_coco(tmp_path, url=url, keep=3, progress=False, timeout=10)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:012d}.jpg" for i in (1, 2, 3)]


def test_a_server_ignoring_range_restarts_the_download(server, coco_zip, tmp_path):
    url, state = server
    state.ignore_range = True
    (tmp_path / "train2017.zip.part").write_bytes(b"stale bytes from somewhere else")
    out = download_coco(tmp_path, url=url, progress=False, timeout=10)
    assert state.range_headers == ["bytes=31-"]
    assert (tmp_path / "train2017.zip").read_bytes() == coco_zip[0]
    assert len(list(out.iterdir())) == 10


def test_a_complete_part_file_is_used_after_416(server, coco_zip, tmp_path):
    url, state = server
    (tmp_path / "train2017.zip.part").write_bytes(coco_zip[0])
    out = download_coco(tmp_path, url=url, progress=False, md5=hashlib.md5(coco_zip[0]).hexdigest(), timeout=10)
    assert state.range_headers == [f"bytes={len(coco_zip[0])}-"]
    assert len(list(out.iterdir())) == 10


def test_known_size_and_md5_are_verified(server, coco_zip, tmp_path, monkeypatch):
    url, _ = server
    payload = coco_zip[0]
    monkeypatch.setitem(data._KNOWN_ARCHIVES, url, (len(payload), "0" * 32))  # as for the official URL
    with pytest.raises(DownloadError, match=r"'.*train2017\.zip' has md5 [0-9a-f]{32} instead of 0{32}"):
        download_coco(tmp_path, url=url, progress=False, timeout=10)
    assert not (tmp_path / "train2017").exists()
    monkeypatch.setitem(data._KNOWN_ARCHIVES, url, (len(payload), hashlib.md5(payload).hexdigest()))
    assert len(list(download_coco(tmp_path, url=url, progress=False).iterdir())) == 10


def test_a_server_size_different_from_the_known_size_is_refused(server, coco_zip, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setitem(data._KNOWN_ARCHIVES, url, (len(coco_zip[0]) + 1, "0" * 32))
    with pytest.raises(DownloadError, match="reports [\\d,]+ bytes but the archive is known to have"):
        download_coco(tmp_path, url=url, progress=False, timeout=10)


def test_a_file_that_is_not_a_zip_is_detected(server, tmp_path):
    url, state = server
    state.payload = b"<html>a captive portal, not a zip</html>" * 10
    with pytest.raises(DownloadError, match=r"Archive '.*train2017\.zip' is not a valid zip file"):
        download_coco(tmp_path, url=url, progress=False, timeout=10)
    assert not (tmp_path / "train2017").exists() and _leftovers(tmp_path) == []


def test_a_corrupt_member_leaves_nothing_half_extracted(server, coco_zip, tmp_path):
    url, state = server
    payload, images = coco_zip
    last = images[f"{10:012d}.jpg"]  # sorted last: extracted after nine good ones
    at = payload.index(last) + len(last) // 2
    state.payload = payload[:at] + bytes([payload[at] ^ 0xFF]) + payload[at + 1 :]
    with pytest.raises(DownloadError, match=r"Archive '.*train2017\.zip' is corrupt \(Bad CRC-32"):
        download_coco(tmp_path, url=url, progress=False, timeout=10)
    assert not (tmp_path / "train2017").exists() and _leftovers(tmp_path) == []


def test_http_errors_and_unreachable_servers_name_the_url(server, tmp_path):
    url, state = server
    state.status = 404
    with pytest.raises(DownloadError, match=rf"Download of '{re.escape(url)}' failed: HTTP 404"):
        download_coco(tmp_path, url=url, progress=False, timeout=10)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/train2017.zip"
    with pytest.raises(DownloadError, match=rf"Cannot download '{re.escape(closed)}' \(.*refused"):
        download_coco(tmp_path, url=closed, progress=False, timeout=10)
    with pytest.raises(DownloadError, match="only http:// and https:// URLs are supported"):
        download_coco(tmp_path, url="ftp://example.org/train2017.zip", progress=False)
    with pytest.raises(ValueError, match="keep must be a positive integer"):
        download_coco(tmp_path, url=url, keep=0)


def test_the_val2017_split_downloads_into_its_own_folder(server, tmp_path):
    url, state = server
    images = {f"{i:012d}.jpg": _jpeg(i) for i in range(3)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in images.items():
            zf.writestr(f"val2017/{name}", payload)
    state.payload = buffer.getvalue()
    out = download_coco(tmp_path, url=url, split="val2017", progress=False, timeout=10)
    assert out == tmp_path / "val2017" and sorted(p.name for p in out.iterdir()) == sorted(images)
    assert (tmp_path / "val2017.zip").is_file() and not (tmp_path / "train2017").exists()
    assert COCO_SPLITS["val2017"][0].endswith("/zips/val2017.zip") and COCO_SPLITS["val2017"][1] == 815_585_330
    with pytest.raises(ValueError, match="split must be one of train2017, val2017, got 'test2017'"):
        download_coco(tmp_path, split="test2017")


def _benchmark_tar(names: dict[str, list[str]]) -> bytes:
    """A tiny benchmark.tar in EDSR's layout: benchmark/<set>/HR/<name>.png and a bicubic input beside it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, files in names.items():
            for i, name in enumerate(files):
                for sub in ("HR", "LR_bicubic/X4"):
                    payload = _jpeg(i)
                    info = tarfile.TarInfo(f"benchmark/{folder}/{sub}/{name}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_the_sr_benchmark_download_verifies_and_extracts_set5_and_bsd100(server, tmp_path):
    url, state = server
    state.payload = _benchmark_tar({"Set5": ["baby.png", "bird.png"], "B100": ["3096.png"], "Set14": ["lenna.png"]})
    md5 = hashlib.md5(state.payload).hexdigest()
    out = download_sr_benchmark(tmp_path, url=url, md5=md5, progress=False, timeout=10)
    assert sorted(p.name for p in (out / "Set5").iterdir()) == ["baby.png", "bird.png"]
    assert [p.name for p in (out / "BSD100").iterdir()] == ["3096.png"] and not (out / "Set14").exists()
    assert not list(tmp_path.glob(".benchmark-extracting-*"))
    assert download_sr_benchmark(tmp_path, url=url, md5=md5, progress=False) == out  # there: no new request
    assert len(state.range_headers) == 1


def test_a_corrupt_sr_benchmark_is_refused_in_one_sentence(server, tmp_path):
    url, state = server
    state.payload = _benchmark_tar({"Set5": ["baby.png"], "B100": ["3096.png"]})
    with pytest.raises(DownloadError, match=r"has md5 [0-9a-f]{32} instead of 0{32} \(corrupt download\)"):
        download_sr_benchmark(tmp_path, url=url, md5="0" * 32, progress=False, timeout=10)
    assert not (tmp_path / "Set5").exists()
    (tmp_path / "benchmark.tar").write_bytes(_benchmark_tar({"Set5": ["baby.png"]}))  # no B100 in it
    with pytest.raises(DownloadError, match="has no B100 high-resolution images"):
        download_sr_benchmark(tmp_path, url=url, md5=None, progress=False)
    assert SR_BENCHMARK_URL.endswith("/benchmark.tar") and len(SR_BENCHMARK_MD5) == 32
