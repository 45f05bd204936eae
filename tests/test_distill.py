"""Tests for stlib.distill: a slim student learns its teacher's output (pixels, VGG features and Gram matrices),
keeps its metadata, resumes exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from stlib import assets, cli, images
from stlib.assets import content_image
from stlib.checkpoint import load_model, read_metadata, save_model
from stlib.distill import DistillConfig, StudentObjective, _photos, distill
from stlib.perceptual import feature_distance, gram_distance
from stlib.prune import slim_config
from stlib.transformer import TransformerConfig, TransformerNet
from stlib.vgg import VGGFeatures
from tests.networks import tiny_net

# The teacher's objective, as `train` writes it into the metadata: small layers keep the tests fast.
TEACHER_OBJECTIVE = {"vgg_weights": "offline", "content_layer": "relu2_2", "style_layers": ["relu1_2", "relu2_2"]}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """A small 'trained' network (its last layer really changes the picture) with training metadata."""
    torch.manual_seed(1)
    net = TransformerNet(TransformerConfig(width=0.5, num_residual_blocks=1, input_skip=True))
    torch.nn.init.normal_(net.decoder[-1].weight, std=0.6)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    train_config = {"style": "style_images/wave.jpg", **TEACHER_OBJECTIVE}
    info = {"style": "wave.jpg", "style_sha256": "ab" * 32, "train_config": train_config}
    return save_model(net.eval(), path, info=info)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four small photos cut from the sample photo, in a folder tree with one unreadable file."""
    folder = tmp_path_factory.mktemp("photos")
    image = Image.open(content_image("tubingen")).convert("RGB").resize((160, 120))
    for i, (left, top) in enumerate(((0, 0), (60, 20), (100, 50), (30, 60))):
        (folder / f"set{i % 2}").mkdir(exist_ok=True)
        image.crop((left, top, left + 60, top + 48)).save(folder / f"set{i % 2}" / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def _config(teacher_file: Path, photos: Path, out: Path, **changes) -> DistillConfig:
    settings = dict(
        size=32, steps=60, log_every=10, checkpoint_every=20, lr=3e-3, progress=False, width=0.25, l1_steps=0
    )
    settings.update(num_residual_blocks=3, subpixel_output=False)  # cheaper than the default shape; same code
    settings.update(start="random")  # the tests below compare training runs; pruned starts have their own tests
    settings.update(feature_weight=0, gram_weight=0, objective_weight=0)  # L1 alone (no VGG) unless a test asks
    return DistillConfig(teacher=str(teacher_file), data=str(photos), out=str(out), **{**settings, **changes})


def _l1(model: TransformerNet, teacher: TransformerNet, photo: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(photo) - teacher(photo)).abs().mean())


def test_student_learns_to_reproduce_the_teacher(teacher_file, photos, tmp_path):
    config = _config(teacher_file, photos, tmp_path / "student.safetensors", steps=300)  # 200: 0.76-0.78 on AVX-512
    result = distill(config)
    teacher, student = load_model(teacher_file), load_model(result.path)
    identity = TransformerNet(slim_config(teacher.config, 0.25, 3)).eval()  # the student before training
    training_photos = _photos(config)  # four tiny photos: the test checks fitting, not generalisation
    start = sum(_l1(identity, teacher, p) for p in training_photos) / len(training_photos)
    end = sum(_l1(student, teacher, p) for p in training_photos) / len(training_photos)
    assert start > 0.02
    assert end < 0.75 * start
    assert result.l1 < 0.75 * start  # the loss it reports agrees
    assert result.flops_ratio == pytest.approx(student.flops(480, 640) / teacher.flops(480, 640))
    assert result.steps == 300


def test_student_file_names_its_teacher_and_carries_the_teachers_objective(teacher_file, photos, tmp_path):
    result = distill(_config(teacher_file, photos, tmp_path / "student.safetensors", steps=20))
    meta = read_metadata(result.path)
    teacher_config = load_model(teacher_file).config
    assert meta["transformer"] == {**teacher_config.__dict__, "width": 0.25, "num_residual_blocks": 3}
    info = meta["info"]
    assert info["kind"] == "distilled" and info["distilled_from"] == "teacher.safetensors"
    assert (
        info["train_config"] == {"style": "style_images/wave.jpg", **TEACHER_OBJECTIVE} and info["style"] == "wave.jpg"
    )
    assert {"total", "l1"} <= set(info["losses"]) and "feature" not in info["losses"]  # L1 alone: no VGG term
    assert info["step"] == 20 and len(info["teacher_sha256"]) == 64 and info["task"] == "distill"


def test_resume_continues_exactly(teacher_file, photos, tmp_path):
    whole = distill(_config(teacher_file, photos, tmp_path / "a.safetensors", steps=40))
    first = _config(teacher_file, photos, tmp_path / "b.safetensors", steps=40)
    calls = []

    def stop_at_20(step: int, loss: float) -> None:
        calls.append(step)
        if step == 20:
            raise KeyboardInterrupt  # a run stopped right after its step-20 checkpoint

    with pytest.raises(KeyboardInterrupt):
        distill(first, callback=stop_at_20)
    assert (tmp_path / "b.run" / "state.pt").is_file() and calls[-1] == 20
    resumed = distill(_config(teacher_file, photos, tmp_path / "b.safetensors", steps=40, resume=True))
    a, b = load_model(whole.path).state_dict(), load_model(resumed.path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_average_is_the_exponential_moving_average_of_the_students_weights(teacher_file, photos, tmp_path):
    from stlib.checkpoint import read_state

    config = _config(teacher_file, photos, tmp_path / "a.safetensors", steps=6, checkpoint_every=1, average=0.75)
    raw = []  # the student's own weights after each step, from the state file written before the callback

    def record(step: int, loss: float) -> None:
        raw.append(read_state(config.state_path())["model"])

    distill(config, callback=record)
    expected = dict(raw[0])  # the first update copies the weights
    for weights in raw[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * weights[k] for k in expected}
    written = load_model(config.out).state_dict()
    assert all(torch.allclose(written[k], expected[k], rtol=1e-5, atol=1e-6) for k in written)
    assert not all(torch.equal(written[k], raw[-1][k]) for k in written)  # not the last weights
    with pytest.raises(ValueError, match=r"average must be a number in \[0, 1\), got 1"):
        distill(_config(teacher_file, photos, tmp_path / "b.safetensors", average=1))


def test_resume_with_an_average_continues_exactly(teacher_file, photos, tmp_path):
    whole = distill(_config(teacher_file, photos, tmp_path / "a.safetensors", steps=40, average=0.9))
    first = _config(teacher_file, photos, tmp_path / "b.safetensors", steps=40, average=0.9)
    distill(first, callback=lambda step, loss: step == 20)  # True stops the run after step 20
    resumed = distill(_config(teacher_file, photos, tmp_path / "b.safetensors", steps=40, average=0.9, resume=True))
    a, b = load_model(whole.path).state_dict(), load_model(resumed.path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_state_saved_before_a_setting_existed_resumes_with_its_default(teacher_file, photos, tmp_path):
    from stlib.checkpoint import read_state, write_state

    config = _config(teacher_file, photos, tmp_path / "s.safetensors", steps=20)
    distill(config, callback=lambda step, loss: step == 10)
    state = read_state(config.state_path())
    del state["config"]["average"]  # as an earlier stlib wrote it
    write_state(config.state_path(), state)
    assert distill(_config(teacher_file, photos, tmp_path / "s.safetensors", steps=20, resume=True)).steps == 20


def test_resume_with_other_settings_is_refused(teacher_file, photos, tmp_path):
    distill(_config(teacher_file, photos, tmp_path / "s.safetensors", steps=20))
    with pytest.raises(ValueError, match=r"different settings \(lr was 0.003, now 0.001"):
        distill(_config(teacher_file, photos, tmp_path / "s.safetensors", steps=20, lr=1e-3, resume=True))
    with pytest.raises(ValueError, match=r"different settings \(l1_weight was 1.0, now 2"):
        distill(_config(teacher_file, photos, tmp_path / "s.safetensors", steps=20, l1_weight=2, resume=True))
    # settings that do not shape the student may change: progress display, log and checkpoint intervals
    distill(_config(teacher_file, photos, tmp_path / "t.safetensors", steps=40), callback=lambda step, l1: step == 20)
    resumed = distill(_config(teacher_file, photos, tmp_path / "t.safetensors", steps=40, log_every=5, resume=True))
    assert resumed.steps == 40


def test_resume_without_a_usable_state_is_one_clear_sentence(teacher_file, photos, tmp_path):
    with pytest.raises(ValueError, match=r"there is no training state .*new\.run.*start without --resume"):
        distill(_config(teacher_file, photos, tmp_path / "new.safetensors", resume=True))
    (tmp_path / "bad.run").mkdir()
    (tmp_path / "bad.run" / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"bad\.run.state\.pt' is not a readable state"):
        distill(_config(teacher_file, photos, tmp_path / "bad.safetensors", resume=True))


def test_a_state_of_an_earlier_distill_is_refused_in_one_sentence(teacher_file, photos, tmp_path):
    from stlib.checkpoint import write_state

    # What distill wrote before it ran on the training loop: NAME.distill.pt beside the model file.
    old = {"model": {}, "optimizer": {}, "step": 10, "rng": torch.get_rng_state(), "config": {"steps": 20}}
    write_state(tmp_path / "s.distill.pt", old)
    with pytest.raises(ValueError) as error:
        distill(_config(teacher_file, photos, tmp_path / "s.safetensors", steps=20, resume=True))
    message = str(error.value)
    assert "s.distill.pt': it is an earlier stlib's distillation state" in message and "--init" in message
    assert message.count(". ") == 0 and message.endswith(").")  # one sentence
    assert distill(_config(teacher_file, photos, tmp_path / "s.safetensors", steps=2)).steps == 2  # a new run starts


def test_bad_settings_are_one_clear_sentence(teacher_file, photos, tmp_path):
    with pytest.raises(ValueError, match="overwrite its teacher"):
        distill(_config(teacher_file, photos, teacher_file))
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        distill(_config(teacher_file, photos, tmp_path / "s.pt"))
    with pytest.raises(ValueError, match="size must be at least 16"):
        distill(_config(teacher_file, photos, tmp_path / "s.safetensors", size=8))
    with pytest.raises(ValueError, match="feature_cache_gb must be a finite number >= 0"):
        distill(_config(teacher_file, photos, tmp_path / "s.safetensors", feature_cache_gb=-1))


def test_the_default_student_has_the_shipped_slim_networks_shape():
    folder = assets.repo_root() / "checkpoints"
    shipped, teacher = (load_model(folder / f"the_scream{s}.safetensors") for s in ("_slim", ""))
    assert read_metadata(folder / "the_scream_slim.safetensors")["info"]["kind"] == "distilled"
    defaults = DistillConfig(teacher="t.safetensors", data="photos", out="s.safetensors")
    made = slim_config(teacher.config, defaults.width, defaults.num_residual_blocks, defaults.subpixel_output)
    assert made == shipped.config and (made.num_residual_blocks, made.subpixel_output) == (5, True)


def test_cli_distill_then_stylize_with_the_student(teacher_file, photos, tmp_path, capsys, offline_weights):
    student = tmp_path / "slim.safetensors"
    argv = ["distill", str(teacher_file), "--data", str(photos), "-o", str(student), "--size", "32"]
    assert cli.main([*argv, "--steps", "10", "--l1-steps", "5", "--quiet"]) == 2  # 5 blocks from a 1-block teacher
    err = capsys.readouterr().err
    assert "Cannot prune" in err and "--start random" in err and len(err.strip().splitlines()) == 1
    assert cli.main([*argv, "--steps", "10", "--l1-steps", "5", "--quiet", "--blocks", "1"]) == 0  # pruned start
    assert "of the teacher's FLOPs" in capsys.readouterr().out
    assert load_model(student, task="style").config.subpixel_output  # the default shape
    plain = tmp_path / "plain.safetensors"
    assert cli.main([*argv[:-4], "-o", str(plain), "--steps", "2", "--l1-steps", "1", "--quiet", "--blocks", "1",
                     "--no-subpixel-output", "--size", "32"]) == 0  # fmt: skip
    assert not load_model(plain, task="style").config.subpixel_output
    out = tmp_path / "styled.png"
    assert cli.main(["stylize", "--model", str(student), str(content_image("tubingen")), "-o", str(out)]) == 0
    assert Image.open(out).size == Image.open(content_image("tubingen")).size
    assert cli.main(["distill", str(tmp_path / "none.safetensors"), "--data", str(photos), "-o", str(student)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _vgg_features(image: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    with VGGFeatures(layers, weights="offline") as vgg, torch.no_grad():
        return vgg(image)


def test_perceptual_distillation_brings_the_students_texture_closer_to_the_teachers_than_l1(
    teacher_file, photos, tmp_path, offline_weights
):
    perceptual = dict(feature_weight=1.0, gram_weight=10.0)  # the teacher's picture only: no objective term here
    # fp32 on every CPU: a check of what the terms do, not of bf16 (whose rounding decides whether 120 steps at 32 px
    # move the feature distance at all: 0.418-0.430 against 0.429 untrained, depending on the VGG's layout).
    config = _config(teacher_file, photos, tmp_path / "p.safetensors", steps=120, precision="fp32", **perceptual)
    result = distill(config)
    l1_only = distill(_config(teacher_file, photos, tmp_path / "l1.safetensors", steps=120, precision="fp32"))
    teacher = load_model(teacher_file)
    before = TransformerNet(slim_config(teacher.config, 0.25, 3)).eval()
    layers = TEACHER_OBJECTIVE["style_layers"]

    def distances(model: TransformerNet) -> tuple[float, float]:
        feature = gram = 0.0
        for p in _photos(config):
            with torch.inference_mode():
                got, wanted = _vgg_features(model(p), layers), _vgg_features(teacher(p), layers)
            feature += float(feature_distance(got, wanted, layers))
            gram += float(gram_distance(got, wanted, dict.fromkeys(layers, 1.0)))
        return feature, gram

    (f0, g0), (f1, g1), (_, g_l1) = (distances(m) for m in (before, load_model(result.path), load_model(l1_only.path)))
    assert f1 < f0 and g1 < 0.5 * g0
    assert g1 < 0.5 * g_l1  # the texture statistics: what L1 alone leaves far off
    terms = read_metadata(result.path)["info"]["losses"]  # the last step's
    assert {"total", "l1", "feature", "gram"} <= set(terms) and "objective" not in terms
    assert terms["total"] == pytest.approx(terms["l1"] + terms["feature"] + 10 * terms["gram"], rel=1e-5)
    with open(tmp_path / "p.run" / "train.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]  # the means of the last log_every steps
    assert result.loss == pytest.approx(float(last["total"])) and result.l1 == pytest.approx(float(last["l1"]))


def test_perceptual_terms_need_the_teachers_objective_and_some_weight(photos, tmp_path):
    bare = save_model(tiny_net(), tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match=r"bare\.safetensors' has no training settings.*--objective-weight 0"):
        distill(_config(bare, photos, tmp_path / "s.safetensors", objective_weight=1.0))
    unknown_painting = {"style": "elsewhere/mona_lisa.jpg", **TEACHER_OBJECTIVE}
    odd = save_model(
        TransformerNet(TransformerConfig(width=0.25)),
        tmp_path / "odd.safetensors",
        info={"train_config": unknown_painting},
    )
    with pytest.raises(
        ValueError, match=r"trained on 'elsewhere/mona_lisa.jpg', which is not a painting in style_images"
    ):
        distill(_config(odd, photos, tmp_path / "s.safetensors", gram_weight=1.0))
    with pytest.raises(ValueError, match="has no loss"):
        distill(_config(bare, photos, tmp_path / "s.safetensors", l1_weight=0))
    with pytest.raises(ValueError, match=r"gram_weight must be a finite number >= 0, got -1"):
        distill(_config(bare, photos, tmp_path / "s.safetensors", gram_weight=-1))


def test_the_first_l1_steps_are_an_l1_run_then_the_vgg_terms_join(teacher_file, photos, tmp_path, offline_weights):
    l1 = distill(_config(teacher_file, photos, tmp_path / "l1.safetensors", steps=20))
    perceptual = dict(feature_weight=1.0, gram_weight=10.0, objective_weight=1.0)
    warm = distill(_config(teacher_file, photos, tmp_path / "w.safetensors", steps=20, l1_steps=20, **perceptual))
    a, b = load_model(l1.path).state_dict(), load_model(warm.path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same steps: the VGG was not run
    warm_terms = read_metadata(warm.path)["info"]["losses"]
    assert warm_terms["feature"] == warm_terms["gram"] == warm_terms["objective"] == 0  # logged, not computed
    both = distill(_config(teacher_file, photos, tmp_path / "b.safetensors", steps=30, l1_steps=20, **perceptual))
    both_terms = read_metadata(both.path)["info"]["losses"]
    assert all(both_terms[k] > 0 for k in ("feature", "gram", "objective"))
    alone = dict(l1_weight=0, feature_weight=0, gram_weight=0, objective_weight=1.0)  # the teacher's objective only
    judged = distill(_config(teacher_file, photos, tmp_path / "j.safetensors", steps=10, **alone))
    judged_terms = read_metadata(judged.path)["info"]["losses"]
    assert {"l1", "objective"} <= set(judged_terms) and "gram" not in judged_terms  # L1 logged, weight 0
    assert judged_terms["total"] == pytest.approx(judged_terms["objective"])
    with pytest.raises(ValueError, match="l1_steps needs l1_weight > 0"):
        distill(_config(teacher_file, photos, tmp_path / "x.safetensors", l1_steps=5, l1_weight=0, **perceptual))


def test_the_objective_term_is_the_teachers_training_objective(teacher_file, photos, tmp_path, offline_weights):
    from stlib.train import TrainConfig

    info = read_metadata(teacher_file)["info"]
    vgg = dict(feature_weight=1.0, gram_weight=1.0, objective_weight=1.0)
    network = StudentObjective(_config(teacher_file, photos, tmp_path / "s.safetensors", **vgg), info, "fp32", "cpu")
    config = TrainConfig.from_dict(info["train_config"])
    painting = images.load_tensor(assets.style_image("wave"), size=config.style_size)
    photo = _photos(_config(teacher_file, photos, tmp_path / "s.safetensors"))[0]
    output = load_model(teacher_file)(photo).detach()
    with config.perceptual_loss(painting, precision="fp32") as objective, torch.no_grad():
        expected = objective(photo, output)["total"]
        terms = network.vgg_terms(0, photo, output, output)
    assert float(terms["objective"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(terms["feature"]) == 0 and float(terms["gram"]) == 0  # the teacher's own picture


def test_the_feature_cache_changes_the_speed_not_the_student(teacher_file, photos, tmp_path, offline_weights):
    perceptual = dict(feature_weight=1.0, gram_weight=10.0, objective_weight=1.0, steps=12)
    runs = {}
    for name, gigabytes in (("none", 0.0), ("some", 0.0007), ("all", 1.0)):
        config = _config(
            teacher_file, photos, tmp_path / f"{name}.safetensors", feature_cache_gb=gigabytes, **perceptual
        )
        runs[name] = load_model(distill(config).path).state_dict()
    for name in ("some", "all"):  # "some" keeps one photo's targets (~0.66 MB each at 32 px) and recomputes the others
        assert all(torch.equal(runs["none"][k], runs[name][k]) for k in runs["none"])


def test_the_feature_cache_keeps_each_photos_targets_within_its_memory(teacher_file, photos, tmp_path, offline_weights):
    info = read_metadata(teacher_file)["info"]
    pictures = _photos(_config(teacher_file, photos, tmp_path / "s.safetensors"))

    def objective(gigabytes: float, imitation: float = 1.0) -> StudentObjective:
        weights = dict(feature_weight=imitation, gram_weight=imitation, objective_weight=1.0)
        config = _config(teacher_file, photos, tmp_path / "s.safetensors", feature_cache_gb=gigabytes, **weights)
        return StudentObjective(config, info, "fp32", "cpu")

    network = objective(1.0)
    first = network.targets(0, pictures[0], pictures[0])
    assert network.targets(0, pictures[1], pictures[1]) is first  # photo 0's targets, not recomputed
    wanted, content = first
    assert set(wanted) == set(network.layers) and set(content) == {"relu2_2"}
    one_photo = network.cached_bytes
    assert one_photo == sum(t.numel() * 4 for t in [*wanted.values(), content["relu2_2"][0]])
    small = objective(one_photo / 1e9)
    for index, picture in enumerate(pictures):
        small.targets(index, picture, picture)
    assert list(small.cache) == [0] and small.cached_bytes == one_photo  # the others did not fit
    judge = objective(1.0, imitation=0.0)
    assert judge.targets(0, pictures[0], pictures[0])[0] == {}  # no VGG pass of the teacher's picture
    assert set(judge.vgg_terms(0, pictures[0], pictures[0], pictures[0])) == {"objective"}


def test_init_starts_the_student_from_a_model_file_of_its_shape(teacher_file, photos, tmp_path):
    trained = distill(_config(teacher_file, photos, tmp_path / "a.safetensors", steps=150))
    first: dict[str, float] = {}

    def record(step: int, loss: float) -> bool:
        first.setdefault("loss", loss)
        return True  # one step is enough

    distill(_config(teacher_file, photos, tmp_path / "scratch.safetensors"), callback=record)
    scratch, first = first["loss"], {}
    distill(_config(teacher_file, photos, tmp_path / "b.safetensors", init=str(trained.path)), callback=record)
    assert first["loss"] < 0.75 * scratch
    other = save_model(TransformerNet(TransformerConfig(width=0.5, num_residual_blocks=3)), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match=r"Cannot start the student from '.*w\.safetensors': it is TransformerNet"):
        distill(_config(teacher_file, photos, tmp_path / "c.safetensors", init=str(other)))


def test_a_pruned_start_is_closer_to_the_teacher_than_a_random_one(photos, tmp_path, dead_channel_teacher):
    teacher = dead_channel_teacher()
    path = save_model(teacher, tmp_path / "teacher.safetensors")
    first: dict[str, float] = {}

    def record(step: int, loss: float) -> bool:
        first.setdefault("loss", loss)
        return True

    kinds = {}
    for start in ("random", "pruned"):
        out = tmp_path / f"{start}.safetensors"
        # "the same network" is a check of equality: fp32 on every CPU (bf16 rounding alone leaves ~0.006 of L1)
        config = _config(path, photos, out, start=start, width=0.25, num_residual_blocks=2, precision="fp32")
        distill(config, callback=record)
        kinds[start], first = first.pop("loss"), {}
    assert kinds["pruned"] < 0.01 * kinds["random"]  # the live channels are the teacher: nothing left to learn
    with pytest.raises(ValueError, match="DistillConfig.start must be one of pruned, random, got .teacher."):
        distill(_config(path, photos, tmp_path / "x.safetensors", start="teacher"))
