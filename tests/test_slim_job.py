"""The slim companions' recipe runner (tools/slim_job.py), rehearsed on the CPU with a tiny teacher and steps.

The rehearsal is the command itself on a tiny teacher (`tests.networks`, five residual blocks so that the default
student is pruned from it) and four 48x40 photos at 32 px: a budget that ends mid-chain, then a second command that
skips the finished stages, resumes the interrupted one and runs the rest, each stage from the file of the one before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from stlib.assets import content_image, file_sha256
from stlib.checkpoint import load_model, read_metadata, save_model
from tests.networks import tiny_net

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tools" / "slim_job.py"
sys.path.insert(0, str(ROOT / "tools"))
from slim_job import RECIPE  # noqa: E402

# The teacher's objective as `train` writes it into the metadata: small layers keep the VGG stages fast.
OBJECTIVE = {"vgg_weights": "offline", "content_layer": "relu2_2", "style_layers": ["relu1_2", "relu2_2"]}
SMALL = ["--distill-args", "--size", "32", "--log-every", "1"]  # last: 32-px photos in every stage (320 too)


def job(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run tools/slim_job.py as a command, one torch thread per process (the test machine has two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(JOB), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny 'trained' wave network with training metadata (the objective the VGG stages read)."""
    info = {
        "style": "wave.jpg",
        "style_sha256": "ab" * 32,
        "train_config": {"style": "style_images/wave.jpg", **OBJECTIVE},
    }
    return save_model(
        tiny_net(num_residual_blocks=5), tmp_path_factory.mktemp("teacher") / "wave.safetensors", info=info
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four small photos cut from the sample photo."""
    folder = tmp_path_factory.mktemp("photos")
    image = Image.open(content_image("tubingen")).convert("RGB").resize((160, 120))
    for i, (left, top) in enumerate(((0, 0), (60, 20), (100, 50), (30, 60))):
        image.crop((left, top, left + 48, top + 40)).save(folder / f"p{i}.png")
    return folder


def rows_of(out: Path) -> list[dict]:
    """The summary rows of the stages (the export's row left out)."""
    return [r for r in json.loads((out / "slim_summary.json").read_text()) if r["stage"] != "export"]


def test_a_budget_stops_the_chain_and_a_second_run_skips_resumes_and_finishes_it(teacher, photos, tmp_path):
    out = tmp_path / "out"
    common = ["--teachers", str(teacher), "--data", str(photos), "--out", str(out)]
    first = job(*common, "--budget", "26", "--reserve", "16", "--steps-scale", "0.2", *SMALL)  # SIGTERM at 10 s
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    rows = rows_of(out)
    assert [r["stage"] for r in rows] == [f"{i + 1}-{s.name}" for i, s in enumerate(RECIPE)]
    stopped = next(i for i, r in enumerate(rows) if r["status"] != "finished")  # stage 1 (520 steps) in all likelihood
    assert rows[stopped]["status"].startswith("stopped by SIGTERM") or rows[stopped]["status"] == "not started"
    assert all(r["status"] == "finished" for r in rows[:stopped])
    assert all(r["status"] == "not started" and r["file"] is None for r in rows[stopped + 1 :])
    last = Path(rows[stopped]["file"] or rows[stopped - 1]["file"])  # checkpointed, else the last finished stage
    student = out / "wave_slim.safetensors"
    exported, written = load_model(student), load_model(last)  # loadable: a complete network either way
    assert all(torch.equal(exported.state_dict()[k], v.half().float()) for k, v in written.state_dict().items())
    assert read_metadata(student)["info"]["exported_from"] == last.name

    # Again, with steps such that the interrupted stage is not complete yet and the earlier ones are.
    reached = rows[stopped]["steps"]
    scale = (reached + 1) / RECIPE[stopped].steps if reached else 0.002
    again = job(*common, "--steps-scale", f"{scale:.6f}", *SMALL)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    rows = rows_of(out)
    assert all(r["status"] == "skipped (complete)" for r in rows[:stopped])
    assert rows[stopped]["status"] == ("resumed, finished" if reached else "finished")
    log = (out / "runs" / "wave" / f"{rows[stopped]['stage']}.log").read_text()
    assert (f"at step {reached}." in log) == bool(reached) and ("--resume" in log.splitlines()[0]) == bool(reached)
    assert all(r["status"] == "finished" for r in rows[stopped + 1 :])
    previous = None
    for row in rows:  # every stage from the file of the one before, distilled from this teacher, complete
        info = read_metadata(row["file"])["info"]
        assert info["distill_config"]["init"] == previous and info["step"] == row["steps"] == row["target"]
        assert info["teacher_sha256"] == file_sha256(teacher) and info["distilled_from"] == "wave.safetensors"
        previous = row["file"]
    info = read_metadata(student)["info"]
    assert info["exported_from"] == f"{len(RECIPE)}-{RECIPE[-1].name}.safetensors" and info["kind"] == "distilled"
    assert info["slim_recipe"].count("steps") == len(RECIPE) and info["train_config"]["style"].endswith("wave.jpg")
    assert {v.dtype for v in load_model(student).state_dict().values()} == {torch.float32}  # loaded as float


def test_sigterm_to_the_job_stops_the_running_stage_with_a_checkpoint(teacher, photos, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(JOB), "--teachers", str(teacher), "--data", str(photos), "--out", str(tmp_path),
               "--steps-scale", "1", *SMALL]  # fmt: skip  # stage 1: 2,600 steps, far more than the test waits for
    job_process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    csv_file = tmp_path / "runs" / "wave" / "1-four-terms.run" / "train.csv"
    deadline = time.monotonic() + 120
    while not (csv_file.is_file() and len(csv_file.read_text().splitlines()) > 2) and time.monotonic() < deadline:
        time.sleep(0.2)  # until the first stage has logged a step
    job_process.send_signal(signal.SIGTERM)  # as a background run is stopped
    output, _ = job_process.communicate(timeout=120)
    assert job_process.returncode == 0, output[-2000:]
    rows = rows_of(tmp_path)
    assert rows[0]["status"] == "stopped by SIGTERM (checkpointed)" and 1 <= rows[0]["steps"] < 2600, rows[0]
    assert all(r["status"] == "not started" for r in rows[1:])
    assert read_metadata(tmp_path / "wave_slim.safetensors")["info"]["step"] == rows[0]["steps"]


def test_a_teacher_that_is_missing_or_not_a_style_network_is_refused_in_one_sentence(tmp_path, photos):
    missing = job("--teachers", str(tmp_path / "nope.safetensors"), "--data", str(photos), "--out", str(tmp_path))
    assert missing.returncode != 0
    assert (
        missing.stderr.strip().splitlines()[-1]
        == f"error: Model file '{tmp_path / 'nope.safetensors'}' does not exist."
    )
    superres = ROOT / "checkpoints" / "superres" / "x4_pixel.safetensors"
    wrong = job("--teachers", str(superres), "--data", str(photos), "--out", str(tmp_path))
    assert wrong.returncode != 0 and "not a style network" in wrong.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "runs").exists()


def test_a_failing_stage_is_named_with_its_log(teacher, photos, tmp_path):
    result = job("--teachers", str(teacher), "--data", str(photos), "--out", str(tmp_path), "--steps-scale", "0.002",
                 "--distill-args", "--width", "0.5")  # fmt: skip  # wider than the teacher: it cannot be pruned
    assert result.returncode == 1
    log = tmp_path / "runs" / "wave" / "1-four-terms.log"
    assert f"wave: stage 1-four-terms failed (exit 2); see {log}." in result.stdout
    assert "Cannot prune" in log.read_text() and not (tmp_path / "wave_slim.safetensors").exists()
