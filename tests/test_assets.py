"""Bundled files: sample photos and style paintings, with their credits."""

from __future__ import annotations

import hashlib

import pytest

from stlib import assets, images


def test_bundled_styles_and_photo_load():
    styles = assets.list_styles()
    assert {"starry_night", "the_scream", "wave", "composition_vii"} <= set(styles)
    for name in styles:
        img = images.load_image(assets.style_image(name))
        assert img.mode == "RGB" and min(img.size) >= 256
    assert "tubingen" in assets.list_content_images()
    assert images.load_image(assets.content_image()).size == (1024, 768)


def test_every_bundled_painting_is_credited_with_its_hash():
    credits = (assets.repo_root() / "style_images" / "CREDITS.md").read_text()
    for name in assets.list_styles():
        digest = hashlib.sha256(assets.style_image(name).read_bytes()).hexdigest()
        assert f"{name}.jpg" in credits and digest in credits, name
    data_readme = (assets.repo_root() / "data" / "README.md").read_text()
    digest = hashlib.sha256(assets.content_image("tubingen").read_bytes()).hexdigest()
    assert "Andreas Praefcke" in data_readme and digest in data_readme


def test_unknown_names_list_the_choices():
    with pytest.raises(KeyError, match="starry_night"):
        assets.style_image("mona_lisa")
    with pytest.raises(KeyError, match="tubingen"):
        assets.content_image("nowhere")


def test_outputs_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("STLIB_OUTPUTS", str(tmp_path / "out"))
    assert assets.outputs_dir() == tmp_path / "out" and (tmp_path / "out").is_dir()


def test_repo_root_error_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("STLIB_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="STLIB_HOME"):
        assets.repo_root()
