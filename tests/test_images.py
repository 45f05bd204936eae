"""Tests for stlib.images: loading any image mode, clear errors for bad files, conversions, atomic saves."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: no windows during tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stlib import images  # noqa: E402
from stlib.images import (  # noqa: E402
    MAX_PIXELS,
    ImageError,
    load_image,
    load_tensor,
    resize,
    save_image,
    to_pil,
    to_tensor,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _saved(tmp_path: Path, img: Image.Image, name: str, **options) -> Path:
    """Save `img` to tmp_path/name with plain PIL and return the path."""
    path = tmp_path / name
    img.save(path, **options)
    return path


def _rgb(path: Path) -> np.ndarray:
    """Load through load_image and return the pixels as a (H, W, 3) uint8 array."""
    img = load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def _random_rgb(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """Write a PNG whose header claims width x height but which holds no pixel data (a cheap 'giant')."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------------------------------
# Every colour mode becomes RGB
# ----------------------------------------------------------------------------------------------------


def test_rgb_png_round_trips_exactly(tmp_path):
    img = _random_rgb(5, 7)
    path = _saved(tmp_path, img, "rgb.png")
    loaded = load_image(path)
    assert loaded.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(img))


def test_mode_L_becomes_grey_rgb(tmp_path):
    grey = np.array([[0, 100, 255], [30, 60, 90]], dtype=np.uint8)
    pixels = _rgb(_saved(tmp_path, Image.fromarray(grey), "l.png"))
    assert pixels.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], grey)


def test_mode_1_becomes_black_and_white(tmp_path):
    img = Image.new("1", (4, 3), 0)
    img.putpixel((1, 1), 1)
    pixels = _rgb(_saved(tmp_path, img, "bits.png"))
    assert pixels.shape == (3, 4, 3)
    assert pixels[1, 1].tolist() == [255, 255, 255]
    assert pixels[0, 0].tolist() == [0, 0, 0]


def test_mode_LA_composites_on_white(tmp_path):
    img = Image.new("LA", (3, 2), (50, 255))
    img.putpixel((0, 0), (50, 0))  # fully transparent
    pixels = _rgb(_saved(tmp_path, img, "la.png"))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[1, 2].tolist() == [50, 50, 50]


def test_mode_RGBA_composites_on_white(tmp_path):
    img = Image.new("RGBA", (3, 2), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black -> white, not black
    img.putpixel((1, 0), (255, 0, 0, 128))  # half-transparent red -> pink
    pixels = _rgb(_saved(tmp_path, img, "rgba.png"))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[1, 1].tolist() == [255, 0, 0]
    red, green, blue = pixels[0, 1].tolist()
    assert red == 255 and abs(green - 127) <= 1 and abs(blue - 127) <= 1


def test_mode_P_uses_the_palette(tmp_path):
    img = Image.new("P", (3, 2), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    img.putpixel((1, 0), 1)
    pixels = _rgb(_saved(tmp_path, img, "p.png"))
    assert pixels[0, 0].tolist() == [255, 0, 0]
    assert pixels[0, 1].tolist() == [0, 0, 255]


def test_mode_P_with_transparency_composites_on_white(tmp_path):
    img = Image.new("P", (3, 2), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    img.putpixel((1, 0), 1)
    path = _saved(tmp_path, img, "p_transparent.png", transparency=0)  # palette index 0 is transparent
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and "transparency" in reopened.info
    pixels = _rgb(path)
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [0, 0, 255]


@pytest.mark.parametrize("name", ["cmyk.tif", "cmyk.jpg"])
def test_mode_CMYK_becomes_rgb(tmp_path, name):
    img = Image.new("CMYK", (4, 4), (0, 0, 0, 0))  # no ink: white
    img.paste((255, 0, 0, 0), (0, 0, 2, 4))  # full cyan on the left half
    path = _saved(tmp_path, img, name)
    with Image.open(path) as reopened:
        assert reopened.mode == "CMYK"
    pixels = _rgb(path).astype(int)
    assert pixels.shape == (4, 4, 3)
    tolerance = 0 if name.endswith(".tif") else 8
    assert np.abs(pixels[:, 3] - [255, 255, 255]).max() <= tolerance
    assert np.abs(pixels[:, 0] - [0, 255, 255]).max() <= tolerance


def test_mode_I16_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535], [257, 1000, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    pixels = _rgb(_saved(tmp_path, img, "sixteen.png"))
    assert pixels.shape == (2, 3, 3)
    grey = pixels[..., 0].astype(int)
    assert grey[0, 0] == 0 and grey[0, 2] == 255 and grey[1, 0] == 1
    assert abs(grey[0, 1] - 128) <= 1
    assert abs(grey[1, 1] - 4) <= 1  # 1000 / 257 ~ 3.9: dark, not white


def test_mode_I_16_bit_data_is_scaled(tmp_path):
    img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32).repeat(2, axis=0))
    assert img.mode == "I"
    grey = _rgb(_saved(tmp_path, img, "int32.tif"))[..., 0].astype(int)
    assert grey[0, 0] == 0 and grey[0, 2] == 255 and abs(grey[0, 1] - 128) <= 1


def test_mode_I_out_of_range_data_is_stretched(tmp_path):
    img = Image.fromarray(np.array([[-1000, 0, 99000]], dtype=np.int32).repeat(2, axis=0))
    grey = _rgb(_saved(tmp_path, img, "int32_wide.tif"))[..., 0].astype(int)
    assert grey[0, 0] == 0 and grey[0, 2] == 255
    assert 0 < grey[0, 1] < 10


def test_mode_F_unit_range_is_scaled(tmp_path):
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32).repeat(2, axis=0))
    assert img.mode == "F"
    grey = _rgb(_saved(tmp_path, img, "float.tif"))[..., 0].astype(int)
    assert grey[0].tolist() == [0, 128, 255]


def test_mode_F_other_range_is_stretched_not_white(tmp_path):
    img = Image.fromarray(np.array([[10.0, 505.0, 1000.0]], dtype=np.float32).repeat(2, axis=0))
    grey = _rgb(_saved(tmp_path, img, "float_wide.tif"))[..., 0].astype(int)
    assert grey[0].tolist() == [0, 128, 255]


def test_rgb_with_colour_key_transparency_composites_on_white(tmp_path):
    img = Image.new("RGB", (3, 2), (10, 20, 30))
    img.putpixel((0, 0), (1, 2, 3))
    pixels = _rgb(_saved(tmp_path, img, "keyed.png", transparency=(1, 2, 3)))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[1, 2].tolist() == [10, 20, 30]


def test_to_tensor_converts_other_modes_like_load_image():
    img = Image.new("LA", (3, 2), (10, 0))
    t = to_tensor(img)
    assert t.shape == (1, 3, 2, 3)
    assert torch.all(t == 1.0)  # transparent -> white


# ----------------------------------------------------------------------------------------------------
# EXIF orientation
# ----------------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red marker in the top-left corner of the stored pixels
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = _saved(tmp_path, img, "rotated.jpg", exif=exif, quality=95)

    loaded = load_image(path)
    assert loaded.size == (40, 60)  # width and height swapped
    red, green, blue = loaded.getpixel((35, 5))  # the marker is now top-right
    assert red > 200 and blue < 60
    assert load_tensor(path).shape == (1, 3, 60, 40)


# ----------------------------------------------------------------------------------------------------
# resize
# ----------------------------------------------------------------------------------------------------


def test_resize_int_sets_longest_side_and_keeps_aspect():
    assert resize(Image.new("RGB", (200, 100)), 50).size == (50, 25)
    assert resize(Image.new("RGB", (100, 200)), 50).size == (25, 50)
    assert resize(Image.new("RGB", (30, 20)), 60).size == (60, 40)  # enlarging works too
    assert resize(Image.new("RGB", (301, 200)), 100).size == (100, 66)  # 66.4 rounds to 66
    assert resize(Image.new("RGB", (3, 1000)), 10).size == (1, 10)  # never 0 pixels wide


def test_resize_tuple_is_exact_width_height():
    assert resize(Image.new("RGB", (200, 100)), (64, 48)).size == (64, 48)


def test_resize_does_not_mutate_input():
    img = _random_rgb(20, 30)
    before = img.tobytes()
    out = resize(img, 10)
    assert img.size == (30, 20) and img.tobytes() == before
    assert out is not img
    same = resize(img, 30)  # already the right size: still a copy
    assert same is not img and same.tobytes() == before


def test_resize_uses_lanczos_to_shrink_and_bicubic_to_enlarge(monkeypatch):
    used = []
    original = Image.Image.resize

    def spy(self, size, resample=None, **kwargs):
        used.append(resample)
        return original(self, size, resample=resample, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    resize(Image.new("RGB", (40, 20)), 10)
    resize(Image.new("RGB", (40, 20)), 80)
    assert used == [Image.Resampling.LANCZOS, Image.Resampling.BICUBIC]


@pytest.mark.parametrize("size", [0, -5, (0, 10), (10, -1)])
def test_resize_rejects_non_positive_sizes(size):
    with pytest.raises(ValueError, match="positive"):
        resize(Image.new("RGB", (10, 10)), size)


@pytest.mark.parametrize("size", [2.5, "64", (10,), (10, 10, 3), True])
def test_resize_rejects_wrong_size_types(size):
    with pytest.raises(TypeError):
        resize(Image.new("RGB", (10, 10)), size)


def test_load_image_and_load_tensor_resize(tmp_path):
    path = _saved(tmp_path, _random_rgb(40, 80), "big.png")
    assert load_image(path, size=20).size == (20, 10)
    assert load_image(path, size=(16, 12)).size == (16, 12)
    assert load_tensor(path, size=20).shape == (1, 3, 10, 20)


# ----------------------------------------------------------------------------------------------------
# to_tensor / to_pil
# ----------------------------------------------------------------------------------------------------


def test_to_tensor_shape_range_and_dtype():
    t = to_tensor(_random_rgb(5, 7))
    assert t.shape == (1, 3, 5, 7)
    assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert t.is_contiguous()
    assert t.min() >= 0.0 and t.max() <= 1.0
    assert to_tensor(_random_rgb(5, 7), dtype=torch.float64).dtype == torch.float64
    assert to_tensor(_random_rgb(5, 7), device="cpu").device.type == "cpu"


def test_to_tensor_channel_order_is_rgb():
    t = to_tensor(Image.new("RGB", (2, 2), (255, 0, 0)))
    assert t[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_to_tensor_rejects_integer_dtype():
    with pytest.raises(ValueError, match="floating point"):
        to_tensor(_random_rgb(2, 2), dtype=torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_to_tensor_to_pil_round_trip_is_exact(dtype):
    img = _random_rgb(9, 11, seed=3)
    t = to_tensor(img, dtype=dtype)
    np.testing.assert_array_equal(np.asarray(to_pil(t)), np.asarray(img))  # (1, 3, H, W)
    np.testing.assert_array_equal(np.asarray(to_pil(t[0])), np.asarray(img))  # (3, H, W)
    assert to_pil(t).mode == "RGB" and to_pil(t).size == (11, 9)


def test_to_pil_clamps_a_copy_not_the_callers_tensor():
    t = torch.tensor([-0.5, 0.25, 1.5]).reshape(3, 1, 1).expand(3, 2, 2).contiguous()
    before = t.clone()
    pixels = np.asarray(to_pil(t))
    assert pixels[0, 0].tolist() == [0, 64, 255]
    assert torch.equal(t, before)


def test_to_pil_accepts_requires_grad_and_bf16():
    t = torch.rand(1, 3, 4, 5, requires_grad=True)
    assert to_pil(t).size == (5, 4)
    bf16 = to_pil(t.detach().to(torch.bfloat16))
    assert bf16.mode == "RGB" and bf16.size == (5, 4)
    assert np.abs(np.asarray(bf16).astype(int) - np.asarray(to_pil(t)).astype(int)).max() <= 2


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (4, 4), (1, 4, 4, 4), (1, 4, 4), (3, 4), (1, 1, 3, 4, 4)])
def test_to_pil_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        to_pil(torch.rand(shape))


def test_to_pil_rejects_integer_tensors_and_nan():
    with pytest.raises(ValueError, match="float"):
        to_pil(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_pil(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(TypeError):
        to_pil(np.zeros((3, 2, 2)))


# ----------------------------------------------------------------------------------------------------
# save_image / save_figure
# ----------------------------------------------------------------------------------------------------


def test_save_image_png_round_trip_and_returns_path(tmp_path):
    t = to_tensor(_random_rgb(6, 8, seed=1))
    out = save_image(t, tmp_path / "out.png")
    assert out == tmp_path / "out.png" and isinstance(out, Path)
    assert torch.equal(load_tensor(out), t)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp files left behind


@pytest.mark.parametrize("name, pil_format", [("a.jpg", "JPEG"), ("a.JPEG", "JPEG"), ("a.webp", "WEBP")])
def test_save_image_format_follows_suffix(tmp_path, name, pil_format):
    img = Image.new("RGB", (16, 16), (200, 30, 30))
    path = save_image(img, tmp_path / name, quality=90)
    with Image.open(path) as reopened:
        assert reopened.format == pil_format
    assert np.abs(np.asarray(load_image(path)).astype(int) - [200, 30, 30]).max() <= 10


def test_save_image_creates_parent_directories(tmp_path):
    path = save_image(torch.rand(3, 4, 4), tmp_path / "a" / "b" / "c.png")
    assert path.is_file()
    assert load_image(path).size == (4, 4)


def test_save_image_accepts_str_paths(tmp_path):
    path = save_image(Image.new("RGB", (4, 4)), str(tmp_path / "s.png"))
    assert path == tmp_path / "s.png" and path.is_file()


@pytest.mark.parametrize("name", ["out.xyz", "no_suffix"])
def test_save_image_unknown_suffix_raises(tmp_path, name):
    with pytest.raises(ImageError, match=name):
        save_image(torch.rand(3, 4, 4), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_save_image_rejects_bad_quality(tmp_path):
    with pytest.raises(ValueError, match="quality"):
        save_image(torch.rand(3, 4, 4), tmp_path / "q.jpg", quality=0)


def test_save_image_rejects_batches(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        save_image(torch.rand(2, 3, 4, 4), tmp_path / "batch.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_existing_file_untouched(tmp_path, monkeypatch):
    path = save_image(Image.new("RGB", (4, 4), (1, 2, 3)), tmp_path / "keep.png")
    before = path.read_bytes()

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"half an image")  # the write gets going, then fails
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.rand(3, 8, 8), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_failed_save_of_new_file_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(self, fp, *args, **kwargs):
        raise KeyboardInterrupt  # even an interrupt cleans up

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_image(torch.rand(3, 8, 8), tmp_path / "new.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_saved_file_has_ordinary_permissions(tmp_path):
    path = save_image(torch.rand(3, 4, 4), tmp_path / "perm.png")
    assert path.stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------------------------------
# Bad files: one clear sentence, through load_image and load_tensor
# ----------------------------------------------------------------------------------------------------


def _truncated_jpeg(tmp_path: Path) -> Path:
    path = _saved(tmp_path, _random_rgb(64, 64), "truncated.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_as_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.png"
    path.touch()
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


BAD_FILES = {
    "missing": (lambda tmp_path: tmp_path / "missing.png", "does not exist"),
    "directory": (_directory, "directory"),
    "empty": (_empty, "empty"),
    "not an image": (_text_as_jpeg, "not an image PIL can read"),
    "truncated": (_truncated_jpeg, "truncated or corrupt"),
    "1x1": (lambda tmp_path: _saved(tmp_path, Image.new("RGB", (1, 1)), "dot.png"), "too small"),
    "1x50": (lambda tmp_path: _saved(tmp_path, Image.new("L", (1, 50)), "line.png"), "too small"),
    "no pixel data": (lambda tmp_path: _png_header_only(tmp_path / "hollow.png", 16, 16), "corrupt"),
}


def _assert_one_sentence(error: ImageError, path: Path) -> None:
    message = str(error)
    assert path.name in message
    assert "\n" not in message
    assert message.endswith(".")
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None  # no chained deep traceback


@pytest.mark.parametrize("loader", [load_image, load_tensor])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_one_clear_sentence(tmp_path, loader, case):
    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ImageError, match=expected) as info:
        loader(path)
    _assert_one_sentence(info.value, path)


@pytest.mark.parametrize("loader", [load_image, load_tensor])
def test_image_over_the_pixel_limit_is_refused(tmp_path, loader):
    path = _saved(tmp_path, _random_rgb(10, 12), "small_but_over.png")
    with pytest.raises(ImageError, match="too large") as info:
        loader(path, max_pixels=100)
    message = str(info.value)
    assert "120" in message and "100" in message and "max_pixels" in message
    _assert_one_sentence(info.value, path)
    assert loader(path, max_pixels=120) is not None  # exactly at the limit is fine


@pytest.mark.parametrize("loader", [load_image, load_tensor])
def test_giant_header_is_refused_before_decoding(tmp_path, loader):
    path = _png_header_only(tmp_path / "giant.png", 100_000, 100_000)  # 10 billion pixels, 50 bytes on disk
    with pytest.raises(ImageError) as info:
        loader(path)
    message = str(info.value)
    assert "10,000,000,000" in message and f"{MAX_PIXELS:,}" in message and "max_pixels" in message
    _assert_one_sentence(info.value, path)
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS  # PIL's global limit is left as it was


def test_raising_max_pixels_lets_a_big_header_through(tmp_path):
    path = _png_header_only(tmp_path / "giant.png", 20_000, 20_000)  # above PIL's own hard limit
    with pytest.raises(ImageError, match="corrupt"):  # past the size check, then no pixel data
        load_image(path, max_pixels=500_000_000)
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS


def test_max_pixels_must_be_positive(tmp_path):
    path = _saved(tmp_path, _random_rgb(4, 4), "ok.png")
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(path, max_pixels=0)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_load_image_accepts_str_paths(tmp_path):
    path = _saved(tmp_path, _random_rgb(4, 6), "str.png")
    assert load_image(str(path)).size == (6, 4)


def test_expand_inputs_takes_files_and_folders_and_names_what_is_missing(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.png", "sub/c.webp", "notes.txt"):
        (folder / name).write_bytes(b"")
    single = tmp_path / "one.jpg"
    single.write_bytes(b"")
    found = images.expand_inputs([single, folder])
    assert found == [single, folder / "a.png", folder / "b.jpg", folder / "sub" / "c.webp"]  # sorted, recursive
    assert images.expand_inputs(str(single)) == [single]
    with pytest.raises(FileNotFoundError, match="missing.jpg' does not exist"):
        images.expand_inputs([tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match="upscale_files needs at least one input"):
        images.expand_inputs([], "upscale_files")


def test_is_image_name_knows_what_pil_can_write():
    assert images.is_image_name("x.PNG") and images.is_image_name("a/b.jpeg") and images.is_image_name("c.webp")
    assert not images.is_image_name("folder") and not images.is_image_name("model.safetensors")


def test_save_gif_writes_every_frame_holds_the_last_and_refuses_other_names(tmp_path):
    from stlib.images import save_gif

    frames = [torch.full((1, 3, 8, 12), v) for v in (0.0, 0.5, 1.0)]
    path = save_gif(frames, tmp_path / "a.gif", duration_ms=100, hold_last_ms=900)
    with Image.open(path) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
            assert gif.size == (12, 8) and gif.convert("RGB").getpixel((0, 0))[0] == round(255 * [0, 0.5, 1][i])
    assert durations == [100, 100, 900]
    with pytest.raises(ValueError, match=r"a\.png.*must end in \.gif"):
        save_gif(frames, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
