"""Command line: ``python -m stlib gatys`` round trips and one-line errors for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from stlib import assets, cli, gatys, images
from stlib.checkpoint import read_metadata


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The bundled photo and two paintings saved at 64 px as PNG files."""
    folder = tmp_path_factory.mktemp("cli-inputs")
    paths = []
    for name, path in (
        ("photo", assets.content_image("tubingen")),
        ("starry", assets.style_image("starry_night")),
        ("wave", assets.style_image("wave")),
    ):
        paths.append(images.save_image(images.load_image(path, size=64), folder / f"{name}.png"))
    return tuple(paths)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_gatys_round_trip_writes_the_image_and_prints_losses_and_time(tmp_path, capsys, small_images, offline_weights):
    photo, starry, _ = small_images
    out = tmp_path / "result.jpg"
    code, stdout, stderr = run(
        capsys, "gatys", "--content", photo, "--style", starry, "--size", 48, "--iterations", 3,
        "--weights", offline_weights, "--quiet", "-o", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert "final losses: content" in stdout and "total" in stdout and "s/iteration" in stdout
    with Image.open(out) as img:
        assert img.size == (48, 36) and img.format == "JPEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.jpg"]  # atomic: no temporary file left


def test_gatys_blend_colours_scales_and_gif(tmp_path, capsys, small_images, offline_weights):
    photo, starry, wave = small_images
    out, gif = tmp_path / "out" / "blend.png", tmp_path / "evolution.gif"
    code, stdout, stderr = run(
        capsys, "gatys", "--content", photo, "--style", starry, "--style", wave, "--blend", 0.7, 0.3,
        "--scales", 32, 48, "--iterations", 2, 2, "--preserve-colors", "--init", "noise", "--gif", gif,
        "--gif-every", 1, "--weights", offline_weights, "--quiet", "-o", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert out.is_file() and gif.is_file()
    assert "4 iterations" in stdout and "frames" in stdout
    with Image.open(out) as img:
        assert img.size == (48, 36)


def _assert_one_line_error(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2
    assert stderr.startswith("error: ") and stderr.strip().count("\n") == 0, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_gatys_bad_inputs_give_one_clear_line(tmp_path, capsys, small_images, offline_weights):
    photo, starry, wave = small_images
    out = tmp_path / "out.jpg"
    common = ("--size", 32, "--iterations", 1, "--weights", offline_weights, "--quiet")

    missing = tmp_path / "nowhere.jpg"
    code, _, err = run(capsys, "gatys", "--content", missing, "--style", starry, *common, "-o", out)
    _assert_one_line_error(code, err, str(missing), "does not exist")

    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    code, _, err = run(capsys, "gatys", "--content", photo, "--style", text, *common, "-o", out)
    _assert_one_line_error(code, err, str(text), "not an image")

    code, _, err = run(
        capsys, "gatys", "--content", photo, "--style", starry, "--style", wave, "--blend", 0.5, 0.3, 0.2,
        *common, "-o", out,
    )  # fmt: skip
    _assert_one_line_error(code, err, "2 style image(s) but 3 blend weight(s)")

    code, _, err = run(capsys, "gatys", "--content", photo, "--style", starry, *common, "-o", tmp_path / "out.xyz")
    _assert_one_line_error(code, err, "out.xyz", "suffix")

    code, _, err = run(
        capsys, "gatys", "--content", photo, "--style", starry, *common, "--gif", tmp_path / "a.png", "-o", out
    )
    _assert_one_line_error(code, err, "a.png", ".gif")

    code, _, err = run(
        capsys, "gatys", "--content", photo, "--style", starry, *common, "--style-layers", "relu9_1", "-o", out
    )
    _assert_one_line_error(code, err, "relu9_1")

    code, _, err = run(capsys, "gatys", "--content", photo, "--style", starry, *common, "--scales", 64, 32, "-o", out)
    _assert_one_line_error(code, err, "increase")
    assert not out.exists()  # nothing written on failure


def test_gatys_diverging_run_is_one_line_not_a_black_image(tmp_path, capsys, small_images, offline_weights):
    photo, starry, _ = small_images
    out = tmp_path / "out.png"
    code, _, err = run(
        capsys, "gatys", "--content", photo, "--style", starry, "--size", 32, "--iterations", 4,
        "--style-weight", 1e38, "--weights", offline_weights, "--quiet", "-o", out,
    )  # fmt: skip
    _assert_one_line_error(code, err, "diverged")
    assert not out.exists()


def test_argparse_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["gatys", "--content", "a.jpg", "--style", "b.jpg", "--size", "-5", "-o", "c.jpg"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_gatys_help_documents_every_option():
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "stlib", "gatys", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    parser = cli.build_parser()
    gatys_parser = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "gatys")[1]
    for action in gatys_parser._actions:
        for option in action.option_strings:
            assert option in proc.stdout, option
        assert action.help, f"{action.option_strings} has no help text"
    assert "Gatys" in proc.stdout and "example:" in proc.stdout


def test_top_level_help_is_fast_and_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stlib", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "gatys" in proc.stdout and "download-coco" in proc.stdout, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "stlib" in imported and not imported & {"torch", "matplotlib", "numpy", "PIL"}, sorted(imported)


def test_every_config_field_is_on_the_command_line_unless_internal():
    from dataclasses import fields

    from stlib.distill import DistillConfig
    from stlib.losses import StabilityConfig
    from stlib.options import is_option
    from stlib.perceptual import ObjectiveConfig
    from stlib.train import TrainConfig
    from stlib.transformer import TransformerConfig

    internal = {
        # --gif sets the first; speed options; the nested objective (its own fields are options)
        gatys.GatysConfig: {"snapshot_every", "channels_last", "truncate", "objective"},
        ObjectiveConfig: {"pixel_weight"},  # super-resolution's term (train --task superres --loss pixel)
        TrainConfig: {"transformer", "objective", "stability"},  # nested configs: their own fields are options
        TransformerConfig: set(),
        StabilityConfig: set(),
        DistillConfig: set(),
    }
    for cls, hidden in internal.items():
        assert {f.name for f in fields(cls) if not is_option(f)} == hidden, cls.__name__


# --------------------------------------------------------------------------------------------------------
# train / stylize / export (Johnson et al.)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Four 64x48 crops of the bundled photo, as a training folder."""
    folder = tmp_path_factory.mktemp("cli-photos")
    image = images.load_image(assets.content_image("tubingen"), size=256)
    for i in range(4):
        image.crop((40 * i, 10 * i, 40 * i + 64, 10 * i + 48)).save(folder / f"photo_{i}.png")
    return folder


def test_train_stylize_export_round_trip(tmp_path, capsys, photo_folder, small_images, offline_weights):
    photo, starry, _ = small_images
    model = tmp_path / "starry.safetensors"
    code, stdout, stderr = run(
        capsys, "train", "--style", starry, "--data", photo_folder, "-o", model, "--size", 32, "--style-size", 64,
        "--batch-size", 2, "--steps", 3, "--checkpoint-every", 2, "--val-every", 0, "--log-every", 1,
        "--width", 0.25, "--blocks", 1, "--input-skip", "--weights", offline_weights, "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    assert "step 3: content" in stdout and "images/s" in stdout and str(model) in stdout
    assert (tmp_path / "starry.run" / "state.pt").is_file() and (tmp_path / "starry.run" / "train.csv").is_file()

    code, stdout, stderr = run(capsys, "stylize", "--model", model, photo, photo_folder, "-o", tmp_path / "styled")
    assert code == 0, stderr
    written = sorted(p.name for p in (tmp_path / "styled").iterdir())
    assert written == ["photo.png", "photo_0.png", "photo_1.png", "photo_2.png", "photo_3.png"]
    with Image.open(tmp_path / "styled" / "photo.png") as img, Image.open(photo) as src:
        assert img.size == src.size

    small = tmp_path / "starry_fp16.safetensors"
    code, stdout, stderr = run(capsys, "export", model, "-o", small, "--info", "dataset=BSDS500 train (200 photos)")
    assert code == 0, stderr
    assert small.stat().st_size < model.stat().st_size and "fp16" in stdout
    info = read_metadata(small)["info"]
    assert info["dataset"] == "BSDS500 train (200 photos)" and info["exported_from"] == "starry.safetensors"
    with pytest.raises(SystemExit) as exited:  # argparse's own one-line usage error
        cli.main(["export", str(model), "-o", str(tmp_path / "x.safetensors"), "--info", "no-equals-sign"])
    assert exited.value.code == 2 and "expected KEY=VALUE, got 'no-equals-sign'" in capsys.readouterr().err


def test_the_training_flags_of_the_style_jobs_reach_the_config_and_the_loss(tmp_path, offline_weights):
    """The flags the Makefile's styles recipe and the GPU job script pass; --style-weight reaches the loss's weights."""
    from stlib.options import config_from
    from stlib.train import TrainConfig

    argv = [
        "train", "--style", "s.jpg", "--data", str(tmp_path), "--steps", "9", "--size", "64", "--batch-size", "2",
        "--style-size", "128", "--style-weight", "7.5", "--downsample", "antialiased", "--stability-weight", "50",
        "--weights", offline_weights, "--channels-last", "--num-workers", "1", "--checkpoint-every", "3",
        "--val-every", "3", "--quiet", "-o", str(tmp_path / "m.safetensors"), "--init", "a.safetensors", "--resume",
        "--run-dir", str(tmp_path / "run"), "--val", str(tmp_path), "--precision", "fp32",
    ]  # fmt: skip
    config = config_from(TrainConfig, cli.build_parser("train").parse_args(argv), data=str(tmp_path))
    config.validate()
    assert (config.steps, config.size, config.batch_size, config.style_size) == (9, 64, 2, 128)
    assert config.transformer.downsample == "antialiased" and config.stability.weight == 50 and config.channels_last
    assert (config.num_workers, config.checkpoint_every, config.val_every, config.progress) == (1, 3, 3, False)
    assert config.init == "a.safetensors" and config.resume and config.precision == "fp32"
    assert config.objective.style_weight == 7.5 and config.objective.tv_weight == 10.0  # the rest: Johnson's
    assert config.objective.vgg_weights == offline_weights
    with config.perceptual_loss(torch.rand(1, 3, 32, 32)) as loss:
        assert loss.weights["style"] == 7.5
    parse = cli.build_parser("train").parse_args
    assert config_from(TrainConfig, parse([*argv, "--content-layer", "relu3_3"])).objective.content_layers == (
        "relu3_3",
    )  # the former flag of a single content layer
    with pytest.raises(SystemExit):
        parse([*argv, "--style-weight", "-1"])  # the limit declared on the option, on the command line ...
    with pytest.raises(ValueError, match=r"ObjectiveConfig\.style_weight must be a finite number >= 0, got -1"):
        TrainConfig(style="s.jpg", data="d", objective={"style_weight": -1}).validate()  # ... and in Python


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_stops_training_after_the_current_step_with_a_checkpoint(tmp_path, photo_folder, small_images, workers):
    """With data workers the signal goes to the whole process group, as `timeout` and a terminal send it."""
    _, starry, _ = small_images
    model = tmp_path / "m.safetensors"
    argv = [
        sys.executable, "-m", "stlib", "train", "--style", starry, "--data", photo_folder, "-o", model,
        "--size", "32", "--style-size", "32", "--batch-size", "1", "--steps", "100000", "--checkpoint-every",
        "100000", "--val-every", "0", "--log-every", "1", "--width", "0.25", "--blocks", "1", "--weights",
        "offline", "--quiet", "--num-workers", workers,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    log = tmp_path / "m.run" / "train.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 4):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping after this step" in stderr and "continue with --resume" in stdout
    step = torch.load(tmp_path / "m.run" / "state.pt", weights_only=True)["step"]
    assert step >= 3 and f"stopped at step {step} of 100000" in stdout  # nothing lost: no checkpoint was due
    assert read_metadata(model)["info"]["step"] == step


def test_train_and_stylize_bad_inputs_give_one_clear_line(tmp_path, capsys, photo_folder, small_images):
    photo, starry, _ = small_images
    not_a_model = tmp_path / "model.safetensors"
    not_a_model.write_bytes(b"this is not a safetensors file")
    cases = [
        (("train", "--style", tmp_path / "missing.jpg", "--data", photo_folder), "missing.jpg"),
        (("train", "--style", starry, "--data", tmp_path / "nodata"), "download-coco"),
        (("train", "--style", starry, "--data", photo_folder, "-o", tmp_path / "m.pt"), ".safetensors"),
        (("stylize", "--model", not_a_model, photo, "-o", tmp_path / "o.png"), "model.safetensors"),
        (("stylize", "--model", tmp_path / "absent.safetensors", photo, "-o", tmp_path / "o.png"), "absent"),
        (("export", not_a_model, "-o", tmp_path / "x.safetensors"), "model.safetensors"),
    ]
    for argv, needle in cases:
        code, stdout, stderr = run(capsys, *argv)
        assert code == 2, argv
        assert stderr.startswith("error: ") and stderr.count("\n") == 1 and needle in stderr, stderr
        assert "Traceback" not in stderr
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "x.safetensors").exists()


def test_every_command_has_help():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"gatys", "train", "stylize", "export", "distill", "download-coco"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help text"


# --------------------------------------------------------------------------------------------------------
# Super-resolution: train --task superres and upscale
# --------------------------------------------------------------------------------------------------------


def test_train_superres_then_upscale(tmp_path, capsys, small_images, offline_weights):
    photo, _, _ = small_images
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(2):
        images.save_image(images.load_tensor(photo)[..., :, 8 * i : 8 * i + 48], data / f"p{i}.png")
    model = tmp_path / "x4.safetensors"
    code, stdout, stderr = run(
        capsys, "train", "--task", "superres", "--loss", "pixel", "--data", data, "--size", 32, "--batch-size", 2,
        "--steps", 2, "--width", 0.25, "--blocks", 1, "--val-every", 0, "--weights", offline_weights, "--quiet",
        "-o", model,
    )  # fmt: skip
    assert code == 0, stderr
    assert read_metadata(model)["transformer"]["upscale"] == 4 and "pixel" in stdout
    out = tmp_path / "big.png"
    code, stdout, stderr = run(capsys, "upscale", "--model", model, photo, "-o", out, "--match-histogram")
    assert code == 0, stderr
    with Image.open(out) as img, Image.open(photo) as small:
        assert img.size == (4 * small.width, 4 * small.height)
    code, _, stderr = run(capsys, "stylize", "--model", model, photo, "-o", tmp_path / "styled.jpg")
    assert code == 2 and "super-resolution network, not a style network" in stderr and "\n" not in stderr.strip()


def test_upscale_refuses_a_style_network_and_train_asks_for_a_style(tmp_path, capsys, small_images):
    photo, _, _ = small_images
    style_net = tmp_path / "style.safetensors"
    from stlib.checkpoint import save_model
    from tests.networks import tiny_net

    save_model(tiny_net(), style_net)
    code, _, stderr = run(capsys, "upscale", "--model", style_net, photo, "-o", tmp_path / "x.png")
    assert code == 2 and "holds a style network, not a super-resolution network" in stderr
    code, _, stderr = run(capsys, "train", "--data", tmp_path)
    assert code == 2 and "needs a style image (TrainConfig.style; --style IMAGE)" in stderr
