"""Tests for stlib.train: normalised losses, schedules, exact resume, SIGKILL safety, divergence, two-process DDP.

Everything runs on the CPU at 32 px with a slim network (width 0.25, one residual block) and the offline VGG16.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stlib import assets, images, superres, train
from stlib.checkpoint import load_model, read_metadata
from stlib.perceptual import PerceptualLoss
from stlib.train import ResumeError, TrainConfig, TrainingDiverged, lr_at
from stlib.transformer import AntialiasedConv, TransformerConfig, TransformerNet
from tests.networks import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six 64x48 crops of the bundled photo, as a training folder."""
    folder = tmp_path_factory.mktemp("photos")
    image = images.load_image(assets.content_image("tubingen"), size=256)  # 256 x 192
    for i in range(6):
        left, top = 30 * i, 20 * (i % 3)
        image.crop((left, top, left + 64, top + 48)).save(folder / f"photo_{i}.png")
    return folder


def small_config(photos: Path, run: Path, offline: str, **overrides) -> TrainConfig:
    settings = dict(
        style=str(assets.style_image("starry_night")),
        data=str(photos),
        out=str(run / "model.safetensors"),
        run_dir=str(run / "run"),
        size=32,
        style_size=64,
        batch_size=2,
        steps=6,
        lr=1e-2,  # a tiny network and six steps: a large rate so that the loss visibly falls
        log_every=1,
        val_every=3,
        checkpoint_every=3,
        val_count=2,
        val_size=32,
        objective={"vgg_weights": offline},
        transformer=TINY,
        progress=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


# --------------------------------------------------------------------------------------------------------
# Configuration, schedules, precision
# --------------------------------------------------------------------------------------------------------


def test_defaults_follow_the_paper():
    cfg = TrainConfig()
    assert (cfg.size, cfg.batch_size, cfg.steps, cfg.lr) == (256, 4, 40_000, 1e-3)
    assert cfg.objective.content_layers == ("relu2_2",)
    assert cfg.objective.style_layers == dict.fromkeys(("relu1_2", "relu2_2", "relu3_3", "relu4_3"), 1.0)
    assert (cfg.objective.content_weight, cfg.objective.style_weight, cfg.objective.tv_weight) == (1.0, 10.0, 10.0)
    assert cfg.objective.vgg_weights == "auto" and cfg.schedule == "constant"


def test_config_round_trips_through_json_and_rejects_bad_values():
    cfg = TrainConfig(style="s.jpg", data="d", transformer=TINY, schedule="cosine")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.transformer == TINY
    with pytest.raises(ValueError, match="needs a style image"):
        TrainConfig(data="d").validate()
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(style="s", data="d", schedule="linear").validate()
    with pytest.raises(ValueError, match="style_weight"):
        TrainConfig(style="s", data="d", style_weight=float("nan")).validate()
    with pytest.raises(ValueError, match="relu9_9"):
        TrainConfig(style="s", data="d", content_layer="relu9_9").validate()


def test_learning_rate_schedules():
    base = TrainConfig(lr=1e-3, steps=1000)
    assert all(lr_at(base, s) == 1e-3 for s in (0, 500, 999))
    stepped = replace(base, schedule="step", lr_step_every=300, lr_gamma=0.5)
    assert [lr_at(stepped, s) for s in (0, 299, 300, 900)] == pytest.approx([1e-3, 1e-3, 5e-4, 1.25e-4])
    cosine = replace(base, schedule="cosine", warmup_steps=100)
    assert lr_at(cosine, 0) == pytest.approx(1e-5) and lr_at(cosine, 99) == pytest.approx(1e-3)
    assert lr_at(cosine, 550) == pytest.approx(5e-4) and lr_at(cosine, 1000) == pytest.approx(0.0, abs=1e-12)
    cycle = replace(base, schedule="onecycle")
    lrs = [lr_at(cycle, s) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-3 / 25) and max(lrs) == pytest.approx(1e-3)
    assert lrs.index(max(lrs)) == 300 and lrs[-1] < 1e-3 / 1e3


# --------------------------------------------------------------------------------------------------------
# Training, checkpoints and exact resume
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight(photos, tmp_path_factory, offline_weights):
    """Six uninterrupted steps."""
    run = tmp_path_factory.mktemp("straight")
    return train.train(small_config(photos, run, offline_weights))


def test_training_writes_checkpoint_logs_grids_and_gif(straight):
    assert straight.step == 6 and [h["step"] for h in straight.history] == [1, 2, 3, 4, 5, 6]
    assert straight.losses()[-1] < straight.losses()[0]
    meta = read_metadata(straight.checkpoint)
    assert meta["format"] == "stlib.transformer" and meta["transformer"] == TINY.__dict__
    info = meta["info"]
    assert info["step"] == 6 and info["stlib_version"] and set(info["losses"]) >= {"content", "style", "tv"}
    assert info["style_sha256"] == assets.file_sha256(assets.style_image("starry_night"))
    assert TrainConfig.from_dict(info["train_config"]).transformer == TINY
    model = load_model(straight.checkpoint)  # rebuilt from the metadata alone
    x = torch.rand(1, 3, 24, 40)
    assert torch.equal(model(x), straight.model(x))
    with open(straight.log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"total", "content", "style", "tv", "lr", "images_per_s"} <= set(rows[0])
    assert float(rows[0]["images_per_s"]) > 0
    grids = sorted(p.name for p in (straight.run_dir / "val").glob("step_*.jpg"))
    assert grids == ["step_000000.jpg", "step_000003.jpg", "step_000006.jpg"]
    assert images.load_image(straight.run_dir / "val" / "step_000006.jpg").size == (64, 32)  # 2 photos of 32 px
    assert straight.gif is not None and straight.gif.stat().st_size > 0
    state = torch.load(straight.state, weights_only=True)  # no pickle code execution needed
    assert state["step"] == 6 and state["epoch"] == 1 and state["sampler"]["position"] == 6  # 2nd epoch, done


def test_an_unreadable_photo_among_the_first_is_skipped_for_validation_and_training(photos, tmp_path, offline_weights):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate("abdefg"):
        (folder / f"{name}.png").write_bytes((photos / f"photo_{i}.png").read_bytes())
    (folder / "c.jpg").write_bytes(b"not a jpeg")  # the third file: inside the validation grid's first four
    cfg = small_config(folder, tmp_path, offline_weights, steps=2, val_count=4, checkpoint_every=2)
    with pytest.warns(RuntimeWarning, match=r"c\.jpg") as record:
        result = train.train(cfg)
    assert len([w for w in record if "c.jpg" in str(w.message)]) == 1  # reported once, for the grid and the batches
    assert result.step == 2
    grid = images.load_image(result.run_dir / "val" / "step_000000.jpg")
    assert grid.size == (4 * 32, 32)  # four readable photos: a, b, d, e
    expected = train.square_photo(folder / "d.png", 32)
    originals = images.to_tensor(images.load_image(result.run_dir / "val" / "originals.jpg"))
    assert float((originals[..., 64:96] - expected).abs().mean()) < 0.02  # d in the third place (JPEG-close)
    for child in folder.iterdir():
        child.write_bytes(b"broken")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=r"None of the 7 image files in '.*photos'"):
        train.train(replace(cfg, out=str(tmp_path / "none.safetensors"), run_dir=str(tmp_path / "none")))


def test_resume_continues_exactly(straight, photos, tmp_path, offline_weights):
    cfg = small_config(photos, tmp_path, offline_weights, steps=3)
    first = train.train(cfg)
    calls = []
    second = train.train(replace(cfg, steps=6, resume=True), callback=lambda step, losses: calls.append(step))
    assert calls == [4, 5, 6]
    resumed = first.history + second.history
    for key in ("total", "content", "style", "tv", "lr"):
        assert [h[key] for h in resumed] == [h[key] for h in straight.history]  # identical, not just close
    for name, value in straight.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value)
    with open(second.log, newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_a_state_of_an_earlier_stlib_with_the_objective_flat_resumes(photos, tmp_path, offline_weights):
    from stlib.checkpoint import read_state, write_state

    cfg = small_config(photos, tmp_path, offline_weights, steps=1, val_every=0, objective={"style_weight": 3.0})
    train.train(cfg)
    state_path = Path(cfg.run_dir) / "state.pt"
    state = read_state(state_path)
    objective = state["config"].pop("objective")  # as written before the objective was nested
    flat = {"content_layer": objective["content_layers"][0], "style_layers": list(objective["style_layers"])}
    flat |= {k: objective[k] for k in ("content_weight", "style_weight", "tv_weight", "vgg_weights")}
    write_state(state_path, {**state, "config": {**state["config"], **flat}})
    assert train.train(replace(cfg, steps=2, resume=True)).step == 2
    write_state(state_path, {**state, "config": {**state["config"], **flat, "style_weight": 4.0}})
    with pytest.raises(ResumeError, match=r"different settings \(objective.style_weight was 4.0, now 3.0\)"):
        train.train(replace(cfg, steps=3, resume=True))


@pytest.mark.parametrize("path", sorted((assets.repo_root() / "checkpoints").glob("**/*.safetensors")), ids=str)
def test_the_shipped_models_training_settings_load_with_the_objective_they_trained_with(path):
    config = TrainConfig.from_dict(read_metadata(path)["info"]["train_config"])
    objective = config.objective
    assert objective.content_layers == ("relu2_2",) and objective.vgg_weights == "offline"
    if config.task == "style":
        assert objective.style_layers == dict.fromkeys(("relu1_2", "relu2_2", "relu3_3", "relu4_3"), 1.0)
        assert (objective.content_weight, objective.style_weight, objective.tv_weight) == (1.0, 10.0, 10.0)
    else:  # super-resolution had no style term, and l_pixel no content term, whatever the flat weights said
        pixel = config.loss == "pixel"
        assert (objective.style_layers, objective.style_weight, objective.pixel_weight) == ({}, 0.0, float(pixel))
        assert objective.content_weight == (0.0 if pixel else 1.0)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_resume_refuses_other_settings_or_a_missing_state(photos, tmp_path, offline_weights):
    cfg = small_config(photos, tmp_path, offline_weights, steps=1, val_every=0)
    with pytest.raises(ResumeError, match="no training state"):
        train.train(replace(cfg, resume=True))
    train.train(cfg)
    with pytest.raises(ResumeError, match="batch_size"):
        train.train(replace(cfg, steps=2, batch_size=3, resume=True))


def test_init_starts_from_a_model_file_and_refuses_another_architecture(straight, photos, tmp_path, offline_weights):
    cfg = small_config(photos, tmp_path, offline_weights, steps=1, val_every=0, lr=1e-12, init=str(straight.checkpoint))
    tuned = train.train(cfg)  # one step at a negligible rate
    for name, value in straight.model.state_dict().items():
        assert torch.allclose(tuned.model.state_dict()[name], value, atol=1e-6), name
    assert read_metadata(tuned.checkpoint)["info"]["train_config"]["init"] == str(straight.checkpoint)
    wider = replace(cfg, transformer=replace(TINY, width=TINY.width * 2), out=str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="model.safetensors.*set the network options to match"):
        train.train(wider)


def test_init_loads_the_weights_into_an_antialiased_variant_and_says_so(
    straight, photos, tmp_path, offline_weights, capsys
):
    variant = replace(TINY, downsample="antialiased")
    cfg = small_config(
        photos, tmp_path, offline_weights, steps=1, val_every=0, lr=1e-12, init=str(straight.checkpoint),
        transformer=variant,
    )  # fmt: skip
    tuned = train.train(cfg)
    assert "in a network variant: downsample 'strided' -> 'antialiased'" in capsys.readouterr().out
    assert tuned.model.config == variant and isinstance(tuned.model.encoder[3], AntialiasedConv)
    for name, value in straight.model.state_dict().items():
        assert torch.allclose(tuned.model.state_dict()[name], value, atol=1e-6), name


def test_stability_term_is_logged_added_to_the_total_and_resumes_exactly(photos, tmp_path, offline_weights):
    cfg = small_config(photos, tmp_path / "a", offline_weights, steps=4, val_every=0, stability_weight=50.0)
    whole = train.train(cfg)
    for h in whole.history:
        assert h["stability"] > 0
        expected = (
            h["content"]
            + cfg.objective.style_weight * h["style"]
            + cfg.objective.tv_weight * h["tv"]
            + 50.0 * h["stability"]
        )
        assert h["total"] == pytest.approx(expected, rel=1e-5)
    with open(whole.log, newline="") as f:
        assert "stability" in next(csv.DictReader(f))
    halves = replace(cfg, out=str(tmp_path / "b.safetensors"), run_dir=str(tmp_path / "b"))
    first = train.train(replace(halves, steps=2))
    second = train.train(replace(halves, resume=True))  # the moves and the noise continue where they stopped
    assert [h["stability"] for h in first.history + second.history] == [h["stability"] for h in whole.history]
    assert read_metadata(whole.checkpoint)["info"]["train_config"]["stability"]["weight"] == 50.0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"stability_weight": -1.0}, r"StabilityConfig\.weight must be a finite number >= 0"),
        ({"stability_weight": 1.0, "stability_shift": -2}, r"StabilityConfig\.shift must be an integer >= 0"),
        ({"stability_weight": 1.0, "stability_noise": float("inf")}, r"StabilityConfig\.noise must be a finite"),
        ({"stability_weight": 1.0, "size": 32, "stability_shift": 5, "stability_border": 8}, "size 32 is too small"),
        ({"stability": {"weight": 1.0, "border": -1}}, r"StabilityConfig\.border must be an integer >= 0"),
        ({"stability_weight": 1.0, "task": "superres", "style": None}, r"stability\.weight is for style networks"),
    ],
)
def test_stability_settings_are_checked(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"style": "s.jpg", "data": "d", **overrides}).validate()


def test_style_warmup_ramps_the_style_weight(photos, tmp_path, offline_weights):
    cfg = small_config(photos, tmp_path, offline_weights, steps=2, style_warmup=4, val_every=0)
    first, second = train.train(cfg).history
    tv = cfg.objective.tv_weight
    assert first["total"] == pytest.approx(first["content"] + tv * first["tv"])  # style weight 0 at step 1
    expected = second["content"] + cfg.objective.style_weight / 4 * second["style"] + tv * second["tv"]
    assert second["total"] == pytest.approx(expected)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(photos, tmp_path, offline_weights, monkeypatch):
    forward = PerceptualLoss.forward
    calls = []

    def poisoned(self, x, y):  # the third step's loss is NaN, as after an overflow
        terms = forward(self, x, y)
        calls.append(1)
        if len(calls) == 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(PerceptualLoss, "forward", poisoned)
    cfg = small_config(photos, tmp_path, offline_weights, steps=10, checkpoint_every=2, val_every=0)
    with pytest.raises(TrainingDiverged, match=r"step 3: the loss is nan.*checkpoint .*model.safetensors' \(step 2\)"):
        train.train(cfg)
    assert read_metadata(cfg.out)["info"]["step"] == 2
    model = load_model(cfg.out)
    assert torch.isfinite(model(torch.rand(1, 3, 16, 16))).all()
    assert torch.load(Path(cfg.run_dir) / "state.pt", weights_only=True)["step"] == 2


def _child(config: dict, env: dict[str, str], save_to: str | None) -> None:
    """A child process: train with `config` under environment `env` (torchrun's variables)."""
    os.environ.update(env)
    torch.set_num_threads(1)
    result = train.train(TrainConfig.from_dict(config))
    if save_to:
        torch.save(result.model.state_dict(), save_to)


def _fork(config: TrainConfig, env: dict[str, str] | None = None, save_to: Path | None = None):
    """Start `_child` in a new interpreter ("spawn": as torchrun does; a forked copy of this test process would
    inherit whatever threads earlier tests started, e.g. autograd's after a torch.export, and fail)."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_child, args=(config.to_dict(), env or {}, save_to and str(save_to)))
    process.start()
    return process


def test_sigkill_loses_at_most_one_checkpoint_interval(photos, tmp_path, offline_weights):
    cfg = small_config(photos, tmp_path, offline_weights, steps=10_000, checkpoint_every=2, val_every=0)
    state_path = Path(cfg.run_dir) / "state.pt"
    child = _fork(cfg)
    try:
        deadline = time.monotonic() + 60
        while not state_path.exists():
            assert child.is_alive(), "the training process died"
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.05)
        time.sleep(0.3)  # let it train on past the checkpoint
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    assert child.exitcode == -signal.SIGKILL
    saved = torch.load(state_path, weights_only=True)["step"]
    with open(Path(cfg.run_dir) / "train.csv", newline="") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r.get("seconds")]
    assert saved >= 2 and max(logged) - saved <= cfg.checkpoint_every  # lost at most one interval
    resumed = train.train(replace(cfg, steps=saved + 2, resume=True))
    assert [h["step"] for h in resumed.history] == [saved + 1, saved + 2]
    assert read_metadata(cfg.out)["info"]["step"] == saved + 2
    with open(resumed.log, newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, saved + 3))


# --------------------------------------------------------------------------------------------------------
# Two processes (DistributedDataParallel over Gloo), as under torchrun
# --------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stability_weight", [0.0, 50.0])  # with it, two forward passes before one backward
def test_two_process_ddp_keeps_the_ranks_in_sync(photos, tmp_path, offline_weights, stability_weight):
    cfg = small_config(
        photos, tmp_path, offline_weights, steps=3, batch_size=1, val_every=0, device="cpu",
        stability_weight=stability_weight,
    )  # fmt: skip
    port = _free_port()
    children = []
    for rank in range(2):
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank)}
        env["WORLD_SIZE"] = "2"
        children.append(_fork(cfg, env, tmp_path / f"rank{rank}.pt"))
    for child in children:
        child.join(timeout=120)
        if child.is_alive():
            child.kill()
    assert [child.exitcode for child in children] == [0, 0]
    weights = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    torch.manual_seed(cfg.seed)
    initial = TransformerNet(TINY).state_dict()
    assert any(not torch.equal(weights[0][k], initial[k]) for k in initial)  # it trained
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name  # and the ranks agree exactly
    state = torch.load(Path(cfg.run_dir) / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["sampler"]["position"] == 6  # 3 global batches of 2: one epoch
    assert not math.isnan(read_metadata(cfg.out)["info"]["losses"]["total"])


def test_loading_the_state_needs_no_pickle(straight):
    # weights_only=True refuses arbitrary objects: the state holds only tensors and plain types.
    state = torch.load(straight.state, weights_only=True)
    assert isinstance(state["rng"]["torch"], torch.Tensor) and isinstance(state["rng"]["python"], tuple)
    assert set(load_file(straight.checkpoint)) == set(straight.model.state_dict())


def _objective_pair(config: TrainConfig, photo: torch.Tensor, painting: torch.Tensor, gatys_config=None):
    """Training's objective (pinned to fp32) and Gatys' objective of the same noisy photo, term by term."""
    from stlib import gatys

    style = torch.nn.functional.interpolate(painting, size=(36, 48), mode="bilinear", antialias=True)
    photo = photo[..., :64, :64]
    y = (photo + 0.1 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        # "The same formula": compare in fp32 whatever `auto` picks on this CPU (bf16 where it has native bf16).
        ours = config.perceptual_loss(style, precision="fp32")(photo, y)
        settings = gatys_config or gatys.GatysConfig(objective=config.objective, size=64)
        with gatys.GatysLoss(photo, style, settings) as theirs:
            reference = theirs(y)
    return ours, reference


def test_gatys_optimises_the_same_objective_as_training(fast_bf16, offline_weights, photo, painting):
    config = TrainConfig(style="s.jpg", data="d", vgg_weights=offline_weights, style_size=48, style_weight=7.0)
    ours, reference = _objective_pair(config, photo, painting)
    for key in ("content", "style", "tv", "total"):
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-4, atol=1e-7)
    from stlib.gatys import GatysConfig

    gc = GatysConfig(objective=config.objective, size=512, iterations=100, init="noise")
    assert gc.objective == config.objective and (gc.size, gc.iterations, gc.init) == (512, 100, "noise")
    assert gc.objective.content_layers == ("relu2_2",) and gc.objective.style_layers == config.objective.style_layers


@pytest.mark.parametrize("change", ["one layer's weight", "tv weight"])
def test_the_same_objective_check_fails_when_the_formula_differs(offline_weights, photo, painting, change):
    from stlib import gatys

    # The tolerance above is tight enough to catch a 1 % change of one term: the check keeps its teeth.
    config = TrainConfig(style="s.jpg", data="d", vgg_weights=offline_weights, style_size=48, style_weight=7.0)
    objective = config.objective
    if change == "tv weight":
        objective = replace(objective, tv_weight=objective.tv_weight * 1.01)
    else:
        objective = replace(objective, style_layers={**objective.style_layers, "relu3_3": 1.01})
    wrong = gatys.GatysConfig(objective=objective, size=64)
    ours, reference = _objective_pair(config, photo, painting, wrong)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(ours["total"], reference["total"], rtol=1e-4, atol=1e-7)


def test_auto_precision_scores_close_to_fp32(fast_bf16, offline_weights, photo, painting):
    # "Close enough": under bf16 (a CPU with native bf16, or forced) the VGG activations carry ~3 significant
    # digits; the normalised terms, summed over many activations, stay within 2 % of fp32 (measured: < 0.5 %).
    config = TrainConfig(style="s.jpg", data="d", vgg_weights=offline_weights, style_size=48)
    style = painting[..., :48, :48]
    x = photo[..., :32, :32]
    y = x.flip(-1)
    with torch.no_grad():
        auto = config.perceptual_loss(style)
        exact = config.perceptual_loss(style, precision="fp32")
        got, expected = auto(x, y), exact(x, y)
    assert auto.precision == ("bf16" if fast_bf16 else "fp32") and exact.precision == "fp32"
    for key in ("content", "style", "total"):
        assert got[key].dtype == torch.float32
        if fast_bf16:
            assert float(got[key]) == pytest.approx(float(expected[key]), rel=2e-2)
            assert float(got[key]) != float(expected[key])  # really computed in bf16, not silently in fp32
        else:
            assert float(got[key]) == float(expected[key])


def test_training_uses_the_precision_auto_picks_and_resume_refuses_another(
    fast_bf16, photos, tmp_path, offline_weights, monkeypatch
):
    cfg = small_config(photos, tmp_path, offline_weights, steps=2, val_every=0, checkpoint_every=1)
    result = train.train(cfg)
    assert result.precision == ("bf16" if fast_bf16 else "fp32")
    assert all(math.isfinite(h["total"]) for h in result.history)
    monkeypatch.setenv("STLIB_FAST_BF16", "0" if fast_bf16 else "1")  # the same run on the other kind of CPU
    with pytest.raises(ResumeError, match="precision"):
        train.train(replace(cfg, steps=3, resume=True))


class _PixelLoss(torch.nn.Module):
    """A stand-in for another task's objective: L1 between the outputs and the targets (no VGG)."""

    terms = ("pixel",)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, targets: torch.Tensor, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append((targets.detach().clone(), outputs.detach().clone()))
        pixel = (outputs.float() - targets).abs().mean()
        return {"pixel": pixel, "total": pixel}


def _blurred(photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Super-resolution-like pairs: the photo at half size, upsampled back, as the input; the photo as the target."""
    small = torch.nn.functional.interpolate(photos, scale_factor=0.5, mode="bilinear", antialias=True)
    return torch.nn.functional.interpolate(small, size=photos.shape[-2:], mode="bilinear"), photos


def test_the_loop_trains_any_objective_on_any_input_target_pairs(photos, tmp_path):
    objective = _PixelLoss()
    cfg = small_config(photos, tmp_path, "offline", steps=4, val_every=2, precision="fp32")
    result = train.train(cfg, objective=objective, pairs=_blurred)
    assert [sorted(h) for h in result.history][0] == ["lr", "pixel", "step", "time", "total"]
    assert result.losses("pixel")[-1] < result.losses("pixel")[0]  # it learns to undo the blur
    targets, _ = objective.seen[0]
    inputs, expected = _blurred(targets)
    assert torch.equal(expected, targets) and not torch.equal(inputs, targets)
    with open(result.log, newline="") as f:
        assert set(csv.DictReader(f).fieldnames) == {"step", "epoch", "total", "pixel", "lr", "images_per_s", "seconds"}
    info = read_metadata(result.checkpoint)["info"]
    assert info["vgg_weights"] is None and set(info["losses"]) >= {"pixel", "total"}  # no loss network recorded
    assert torch.load(result.state, weights_only=True)["vgg_source"] is None


# --------------------------------------------------------------------------------------------------------
# The second task: super-resolution through the same loop
# --------------------------------------------------------------------------------------------------------


def sr_config(photos: Path, run: Path, offline: str, **overrides) -> TrainConfig:
    settings = dict(
        task="superres",
        data=str(photos),
        out=str(run / "sr.safetensors"),
        run_dir=str(run / "run"),
        size=32,
        batch_size=2,
        steps=4,
        log_every=1,
        val_every=2,
        checkpoint_every=2,
        val_count=2,
        val_size=32,
        objective={"vgg_weights": offline},
        transformer={"width": 0.25, "num_residual_blocks": 1},
        progress=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_each_task_has_its_own_defaults():
    style, sr = TrainConfig(), TrainConfig(task="superres")
    assert style.transformer == TransformerConfig() and style.objective.tv_weight == 10.0 and style.scale == 1
    assert sr.transformer == TransformerConfig.superres(4) and sr.objective.tv_weight == 0.0 and sr.scale == 4
    assert TrainConfig(task="superres", transformer={"upscale": 8, "width": 1.0}).transformer == (
        TransformerConfig.superres(8, width=1.0)
    )
    assert TrainConfig(task="superres", objective={"tv_weight": 2.0}).objective.tv_weight == 2.0  # a given weight
    assert sr.out_path() == Path("checkpoints/superres/x4_feat.safetensors")
    objective = TrainConfig(task="superres", loss="pixel").objective
    assert (objective.pixel_weight, objective.content_weight, objective.style_weight) == (1.0, 0.0, 0.0)
    assert sr.objective.content_layers == ("relu2_2",) and sr.objective.pixel_weight == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"style": "painting.jpg"}, "no style"),
        ({"transformer": TransformerConfig()}, "needs a network that upscales"),
        ({"size": 30}, "multiples of the upscaling factor 4"),
        ({"loss": "gan"}, "loss must be one of feat, pixel"),
    ],
)
def test_superres_settings_are_checked_in_one_sentence(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        replace(TrainConfig(task="superres", data=str(tmp_path)), **changes).validate()


def test_the_loop_trains_a_superres_network_on_degraded_photos(photos, tmp_path, offline_weights):
    cfg = sr_config(photos, tmp_path, offline_weights, loss="pixel", lr=1e-2)
    seen = []
    result = train.train(cfg, callback=lambda step, losses: seen.append(losses["pixel"]) and None)
    assert result.model.config.upscale == 4 and len(result.history) == 4
    assert set(result.history[0]) >= {"pixel", "total"} and result.history[0]["content"] == 0.0
    info = read_metadata(result.checkpoint)["info"]
    assert info["task"] == "superres" and info["style"] is None and info["train_config"]["loss"] == "pixel"
    model = load_model(result.checkpoint, task="superres")
    assert model(torch.rand(1, 3, 10, 12)).shape == (1, 3, 40, 48)
    with Image.open(result.run_dir / "val" / "step_000002.jpg") as grid:
        assert grid.size == (2 * 32, 32)  # the validation photos, upscaled back to their size
    resumed = train.train(replace(cfg, steps=6, resume=True))  # resumable like style training
    assert resumed.step == 6


def test_superres_pairs_are_the_degraded_photo_and_the_photo():
    pairs = TrainConfig(task="superres", blur_sigma=1.0).pairs()
    photos = torch.rand(2, 3, 32, 32)
    inputs, targets = pairs(photos)
    assert inputs.shape == (2, 3, 8, 8) and targets is photos
    assert torch.equal(inputs, superres.degrade(photos, 4, 1.0))
    assert TrainConfig().pairs()(photos) == (photos, photos)


def test_superres_feature_loss_trains_from_pixel_weights(photos, tmp_path, offline_weights):
    first = train.train(sr_config(photos, tmp_path / "pixel", offline_weights, loss="pixel", steps=2, val_every=0))
    cfg = sr_config(photos, tmp_path / "feat", offline_weights, steps=2, val_every=0, init=str(first.checkpoint))
    result = train.train(cfg)
    assert result.history[0]["content"] > 0 and "pixel" not in result.history[0]
