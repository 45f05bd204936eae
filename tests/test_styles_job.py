"""The GPU window's styles job (tools/styles_job.py), rehearsed end to end on the CPU with a tiny budget.

The rehearsal is the GPU command itself (``run --budget ... --out ...``) on a pack made here, with small crops so
that the four runs take a few steps each on a CPU: if the job rots, this test fails before a GPU window is wasted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from stlib import assets, images
from stlib.checkpoint import read_metadata
from stlib.train import TrainConfig
from stlib.vgg import VGGFeatures

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tools" / "styles_job.py"
STYLES = ("starry_night", "the_scream", "wave", "composition_vii")


def job(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run tools/styles_job.py as a command, one torch thread per process (the test machine has two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(JOB), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def pack(tmp_path_factory, offline_weights) -> Path:
    """A pack of eight training crops and two validation crops of the bundled photo (no wheels: no registry)."""
    tmp = tmp_path_factory.mktemp("styles_job")
    photo = images.load_image(assets.content_image("tubingen"))
    for folder, count in (("train", 8), ("val", 2)):
        (tmp / folder).mkdir()
        for i in range(count):
            photo.crop((40 * i, 20 * i, 40 * i + 300, 20 * i + 240)).save(tmp / folder / f"{folder}{i}.jpg")
    result = job("pack", "--data", str(tmp / "train"), "--val", str(tmp / "val"), "--dest", str(tmp / "pack"),
                 "--no-wheels")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tmp / "pack"


def test_the_pack_carries_the_loss_network_in_half_precision(pack, photo):
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["photos"] == {"train": 8, "val": 2}
    vgg_file = pack / "vgg16_to_conv4_3_fp16.safetensors"
    with safe_open(str(vgg_file), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("conv4_3.weight").dtype == torch.float16
    assert "conv4_3.weight" in keys and not any(k.startswith("conv5") for k in keys)
    assert vgg_file.stat().st_size < 16e6  # the 59 MB Keras file cut to the objective's layers
    layers = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    carried, offline = VGGFeatures(layers, weights=str(vgg_file)), VGGFeatures(layers, weights="offline")
    a, b = carried(photo), offline(photo)
    for name in layers:
        assert a[name].dtype == torch.float32
        assert (a[name] - b[name]).abs().max() <= 1e-2 * b[name].abs().max()  # float16 rounding of the weights


def test_a_damaged_pack_is_refused_in_one_sentence(pack, tmp_path):
    copy = tmp_path / "pack"
    subprocess.run(["cp", "-r", str(pack), str(copy)], check=True)
    photo = next((copy / "photos" / "train").iterdir())
    photo.write_bytes(photo.read_bytes()[:-10])
    result = job("run", "--pack", str(copy), "--out", str(tmp_path / "out"), "--budget", "30")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the pack file '{photo}' is missing or differs from its manifest; pack again."
    )
    assert not (tmp_path / "out").exists()


def test_a_pack_over_the_transfer_limit_is_refused(tmp_path, offline_weights):
    result = job("pack", "--data", str(ROOT / "data" / "samples"), "--val", "", "--dest", str(tmp_path / "pack"),
                 "--no-wheels", "--limit-mib", "20")  # fmt: skip
    assert result.returncode != 0
    assert "over the 20 MiB that may travel" in result.stderr
    assert not (tmp_path / "pack").exists() and not (tmp_path / "pack.tmp").exists()


def test_the_gpu_command_rehearsed_on_the_cpu(pack, tmp_path):
    budget, reserve = 80, 24
    out = tmp_path / "out"
    start = time.monotonic()
    result = job("run", "--pack", str(pack), "--out", str(out), "--runs", str(tmp_path / "runs"),
                 "--budget", str(budget), "--reserve", str(reserve), "--size", "32", "--batch-size", "1",
                 "--style-size", "64", "--num-workers", "1", "--log-every", "1")  # fmt: skip
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert seconds < budget + 10  # returned inside its limit (plus the interpreter's start and exit)
    assert "deadline: SIGTERM sent" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [r["style"] for r in summary["runs"]] == list(STYLES)
    for row in summary["runs"]:
        style = row["style"]
        assert row["returncode"] == 0 and row["rate"] > 0 and row["steps"] >= 1, row
        exported = out / "export" / f"{style}.safetensors"
        with safe_open(str(exported), framework="pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
        info = read_metadata(exported)["info"]
        shipped = read_metadata(ROOT / "checkpoints" / f"{style}.safetensors")["info"]
        assert info["steps_in_all"] == shipped["step"] + info["step"] and info["step"] == row["steps"]
        recipe = TrainConfig.from_dict(info["train_config"])
        assert recipe.objective.vgg_weights == "offline" and info["vgg_weights"] == "offline"
        assert recipe.transformer.downsample == "antialiased" and recipe.stability.weight == 200
        assert info["style_sha256"] == shipped["style_sha256"]
        assert "from the shipped weights" in info["trained"] and info["dataset"].endswith("(8 files)")
        for name in (f"{style}.log", f"{style}.csv", f"{style}_originals.jpg"):
            assert (out / "logs" / name).is_file(), name
    assert (out / "loss_curves.png").is_file() and (out / "summary.md").is_file()
    assert "steps/s" in result.stdout


def test_make_styles_path_trains_to_a_step_count_and_resumes(tmp_path, offline_weights):
    common = ["--data", str(ROOT / "data" / "samples"), "--weights", "offline", "--styles", "wave", "--size", "32",
              "--batch-size", "1", "--style-size", "64", "--num-workers", "0", "--out", str(tmp_path / "styles"),
              "--export-dir", str(tmp_path / "ship")]  # fmt: skip
    first = job("run", *common, "--steps", "2")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "no deadline" in first.stdout and read_metadata(tmp_path / "ship" / "wave.safetensors")["info"]["step"] == 2
    again = job("run", *common, "--steps", "3", "--resume")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    info = read_metadata(tmp_path / "ship" / "wave.safetensors")["info"]
    assert info["step"] == 3 and TrainConfig.from_dict(info["train_config"]).objective.vgg_weights == "offline"
    assert info["trained"].startswith("3 steps of tools/styles_job.py from a resumed run")
    assert "--resume" in (tmp_path / "styles" / "wave.log").read_text().splitlines()[0]


def test_the_gpu_command_with_students_exports_teachers_and_slim_companions(pack, tmp_path):
    budget, reserve, students = 76, 16, 34  # teachers get SIGTERM at 26 s (room under load), the students at 60 s
    out = tmp_path / "out"
    start = time.monotonic()
    result = job("run", "--pack", str(pack), "--out", str(out), "--runs", str(tmp_path / "runs"), "--styles", "wave",
                 "--budget", str(budget), "--reserve", str(reserve), "--students", str(students),
                 "--students-scale", "0.002", "--students-args=--size 32", "--size", "32", "--batch-size", "1",
                 "--style-size", "64", "--num-workers", "1", "--log-every", "1")  # fmt: skip
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert seconds < budget + 10
    summary = json.loads((out / "summary.json").read_text())
    assert [r["style"] for r in summary["runs"]] == ["wave"] and summary["runs"][0][
        "export"
    ] == "export/wave.safetensors"
    stages = [r for r in summary["students"] if r["stage"] != "export"]
    assert stages[0]["stage"] == "1-four-terms" and stages[0]["steps"] >= 1, stages  # at least one stage wrote a file
    assert summary["students"][-1]["status"] == "exported"
    teacher = read_metadata(out / "export" / "wave.safetensors")["info"]
    student = read_metadata(out / "export" / "wave_slim.safetensors")["info"]
    assert student["kind"] == "distilled" and student["distilled_from"] == "wave.safetensors"
    assert student["teacher_sha256"] == assets.file_sha256(tmp_path / "runs" / "wave.safetensors")  # the fp32 run file
    assert student["train_config"] == teacher["train_config"]  # the teacher's objective, its VGG16 named offline
    assert student["vgg_weights"] == teacher["vgg_weights"] == "offline"
    assert "| student | stage |" in (out / "summary.md").read_text()
