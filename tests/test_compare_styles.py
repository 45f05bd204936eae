"""tools/compare_styles.py: candidates scored against the shipped networks, and only better ones shipped.

Real networks throughout, at tiny sizes (64 px, two photos): a byte copy of a shipped file, a shipped file with noise
added to one layer, a one-step export of the styles job (`tools/styles_job.py`, the `make styles` path), a file that
is not a network and one without a shipped namesake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stlib import assets, images
from stlib.checkpoint import load_model, read_metadata, save_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import compare_styles  # noqa: E402  (tools/compare_styles.py)

pytestmark = pytest.mark.usefixtures("one_thread")
STYLES = ("starry_night", "the_scream", "wave", "composition_vii")
TINY = ["--photos", "2", "--size", "64"]


def noisy_copy(style: str, path: Path, layer: str = "residuals.2.block.0.weight", seed: int = 0) -> Path:
    """The shipped network of `style` with Gaussian noise (as strong as the weights themselves) added to one layer."""
    source = ROOT / "checkpoints" / f"{style}.safetensors"
    model = load_model(source)
    weight = model.state_dict()[layer]
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed)) * weight.std()
    weight.add_(noise)  # the state dict shares the parameter's storage
    return save_model(model, path, info=read_metadata(source)["info"])


@pytest.fixture(scope="module")
def candidates(tmp_path_factory, offline_weights) -> Path:
    """A folder of candidates: copy, noisy, one job step, not a network, no namesake."""
    folder = tmp_path_factory.mktemp("candidates")
    shutil.copy2(ROOT / "checkpoints" / "the_scream.safetensors", folder / "the_scream.safetensors")
    noisy_copy("starry_night", folder / "starry_night.safetensors")
    (folder / "composition_vii.safetensors").write_bytes(b"not a network\n" * 100)
    shutil.copy2(ROOT / "checkpoints" / "the_scream.safetensors", folder / "munch.safetensors")
    runs = tmp_path_factory.mktemp("job")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    job = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "styles_job.py"), "run", "--data", str(ROOT / "data" / "samples"),
         "--weights", "offline", "--styles", "wave", "--size", "32", "--batch-size", "1", "--style-size", "64",
         "--num-workers", "0", "--steps", "1", "--out", str(runs), "--export-dir", str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    return folder


@pytest.fixture()
def checkpoints(tmp_path) -> Path:
    """A copy of the four shipped style networks, to ship into."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for style in STYLES:
        shutil.copy2(ROOT / "checkpoints" / f"{style}.safetensors", folder / f"{style}.safetensors")
    return folder


def digests(folder: Path) -> dict[str, str]:
    return {p.name: assets.file_sha256(p) for p in sorted(folder.iterdir())}


def test_no_candidate_that_is_not_better_ships(candidates, checkpoints, tmp_path, capsys):
    before = digests(checkpoints)
    report = tmp_path / "compare.json"
    code = compare_styles.main([str(candidates), *TINY, "--frames", "0", "--checkpoints", str(checkpoints),
                                "--json", str(report), "--ship", "--look", str(tmp_path / "look")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert digests(checkpoints) == before  # nothing shipped, nothing touched
    assert "Nothing shipped" in out
    # the two files that cannot be candidates: one sentence each, and skipped
    assert f"'{candidates / 'munch.safetensors'}' has no shipped counterpart" in out
    damaged = [line for line in out.splitlines() if "composition_vii.safetensors" in line]
    assert len(damaged) == 1 and damaged[0].startswith("Skipped: ") and "not a style network" in damaged[0]
    data = json.loads(report.read_text())
    rows = {row["style"]: row for row in data["rows"]}
    assert set(rows) == {"starry_night", "the_scream", "wave"}
    same = rows["the_scream"]
    assert same["verdict"] == "keep" and same["reason"].startswith("objective not lower")
    assert all(old == new for old, new in same["stats"].values() if old is not None)  # the same network
    noisy = rows["starry_night"]
    old, new = noisy["stats"]["objective"]
    assert noisy["verdict"] == "keep" and noisy["reason"].startswith("objective not lower") and new > old
    assert rows["wave"]["verdict"] == "keep"  # whatever it wins: no clip flicker measured (--frames 0)
    assert rows["wave"]["stats"]["clip flicker"] == [None, None]
    assert "style_size 256 → 64" in rows["wave"]["note"] and rows["wave"]["note"] in out
    assert rows["the_scream"]["note"] is None
    # the printed table: a header with the machine, one row per style, each statistic shipped → candidate
    table = out[out.index("# Shipped → candidate") :]
    assert "cores" in table.splitlines()[0] and "64x64" in table.splitlines()[0]
    assert "| the_scream | " in table and "keep: objective not lower" in table and " → " in table
    # the pictures to look at: photo | shipped | candidate, under it the centre thirds at 3x
    looks = sorted(p.name for p in (tmp_path / "look").iterdir())
    assert looks == [f"{style}_photo{i}.png" for style in ("starry_night", "the_scream", "wave") for i in (0, 1)]
    for style, same_network in (("the_scream", True), ("starry_night", False)):
        sheet = images.load_tensor(tmp_path / "look" / f"{style}_photo0.png")
        assert sheet.shape == (1, 3, 128, 192)
        shipped, candidate = sheet[..., :64, 64:128], sheet[..., :64, 128:]
        assert torch.equal(shipped, candidate) == same_network


def test_the_decision_needs_every_statistic_lower():
    lower = {key: (2.0, 1.0) for key in compare_styles.DECIDING}
    assert compare_styles.decide(lower)[0] == "ship"
    for key in compare_styles.DECIDING:
        assert compare_styles.decide({**lower, key: (1.0, 1.0)}) == ("keep", f"{key} not lower (1 → 1)")
        assert compare_styles.decide({**lower, key: (1.0, float("nan"))})[0] == "keep"
        assert compare_styles.decide({**lower, key: (1.0, None)}) == ("keep", f"{key} not measured")
    assert compare_styles.decide({**lower, "border": (1.0, 3.0), "warp error": (1.0, 3.0)})[1].startswith("border")


def test_ship_copies_only_the_winners_and_they_load(candidates, checkpoints, tmp_path, capsys):
    winner = noisy_copy("the_scream", tmp_path / "the_scream.safetensors", seed=1)
    changed = noisy_copy("wave", tmp_path / "wave.safetensors", seed=2)
    before = digests(checkpoints)
    decisions = [
        {"style": "the_scream", "candidate": str(winner), "candidate_sha256": assets.file_sha256(winner),
         "verdict": "ship"},
        {"style": "starry_night", "candidate": str(candidates / "starry_night.safetensors"),
         "candidate_sha256": assets.file_sha256(candidates / "starry_night.safetensors"), "verdict": "keep"},
        {"style": "composition_vii", "candidate": str(candidates / "composition_vii.safetensors"),
         "candidate_sha256": "0" * 64, "verdict": "ship"},
        {"style": "wave", "candidate": str(changed), "candidate_sha256": "f" * 64, "verdict": "ship"},
    ]  # fmt: skip
    shipped = compare_styles.ship(decisions, checkpoints)
    out = capsys.readouterr().out.splitlines()
    assert shipped == [checkpoints / "the_scream.safetensors"]
    after = digests(checkpoints)
    assert set(after) == set(before)  # no temporary file left beside them
    assert after["the_scream.safetensors"] == assets.file_sha256(winner)
    assert {k: v for k, v in after.items() if k != "the_scream.safetensors"} == {
        k: v for k, v in before.items() if k != "the_scream.safetensors"
    }
    assert load_model(checkpoints / "the_scream.safetensors", task="style").training is False
    not_shipped = [line for line in out if line.startswith("Not shipped: ")]
    assert len(not_shipped) == 2
    assert "composition_vii.safetensors" in not_shipped[0] and "not a style network" in not_shipped[0]
    assert not_shipped[1] == f"Not shipped: '{changed}' changed since it was scored; compare again."


def test_gatys_results_are_cached_and_reused(candidates, tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy2(candidates / "the_scream.safetensors", folder / "the_scream.safetensors")
    cache, report = tmp_path / "gatys.json", tmp_path / "compare.json"
    args = [str(folder), "--photos", "1", "--size", "64", "--frames", "0", "--gatys-iterations", "2",
            "--cache", str(cache), "--json", str(report)]  # fmt: skip
    compare_styles.main(args)
    first = json.loads(report.read_text())["rows"][0]["stats"]
    entries = json.loads(cache.read_text())
    assert len(entries) == 1 and next(iter(entries.values()))["style"] == "the_scream"
    ratio = first["ratio to Gatys-2"][0]
    assert ratio == pytest.approx(first["objective"][0] / next(iter(entries.values()))["objective"])
    for entry in entries.values():  # a second run reads the cache instead of running L-BFGS again
        entry["objective"] *= 2
    cache.write_text(json.dumps(entries))
    compare_styles.main(args)
    again = json.loads(report.read_text())["rows"][0]["stats"]
    assert again["ratio to Gatys-2"][0] == pytest.approx(ratio / 2)
    assert "ratio to Gatys-2" in capsys.readouterr().out


def test_flicker_on_a_real_clip(candidates, tmp_path, shared_dir, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    noisy = noisy_copy("the_scream", folder / "the_scream.safetensors", seed=3)
    assert noisy.is_file()
    report = tmp_path / "compare.json"
    compare_styles.main([str(folder), *TINY, "--frames", "3", "--clips", "book.mkv", "--video",
                         str(shared_dir / "video"), "--json", str(report)])  # fmt: skip
    row = json.loads(report.read_text())["rows"][0]
    old, new = row["stats"]["clip flicker"]
    assert old > 0 and new > 0 and old != new
    assert "mean over book (3 frames)" in capsys.readouterr().out


def test_a_missing_folder_or_no_usable_candidate_is_one_sentence(tmp_path, capsys):
    with pytest.raises(SystemExit, match="does not exist"):
        compare_styles.main([str(tmp_path / "absent")])
    (tmp_path / "notes.safetensors").write_bytes(b"x")
    save_model(load_model(ROOT / "checkpoints" / "wave.safetensors"), tmp_path / "wave.safetensors", info={})
    with pytest.raises(SystemExit, match="no file in .* is a style network named as one in"):
        compare_styles.main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"'{tmp_path / 'notes.safetensors'}' has no shipped counterpart ({ROOT / 'checkpoints' / 'notes.safetensors'} "
        "does not exist): skipped.",
        f"'{tmp_path / 'wave.safetensors'}' carries no usable training settings (train_config) in its metadata: "
        "skipped.",
    ]
