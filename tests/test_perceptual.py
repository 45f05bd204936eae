"""Tests for stlib.perceptual: the normalised objective, its config, and the formulas it is defined by."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from stlib import assets, images, vgg
from stlib.losses import content_loss, gram_matrix, style_loss, total_variation
from stlib.perceptual import (
    JOHNSON_CONTENT_LAYER,
    JOHNSON_STYLE_LAYERS,
    FeatureError,
    ObjectiveConfig,
    PerceptualLoss,
    blend_weights,
    content_scale,
    feature_distance,
    gram_distance,
    relative_style_weights,
    style_size_curve,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def johnson(weights: str, **changes) -> ObjectiveConfig:
    """Johnson et al.'s layers, weights content 1, style 5, TV 10 (a style weight other than the default's 10)."""
    settings = dict(
        vgg_weights=weights,
        content_layers=JOHNSON_CONTENT_LAYER,
        style_layers=JOHNSON_STYLE_LAYERS,
        style_weight=5.0,
    )
    return ObjectiveConfig(**{**settings, **changes})


# --------------------------------------------------------------------------------------------------------
# The normalisation, defined once
# --------------------------------------------------------------------------------------------------------


def test_content_scale_is_the_mean_square_and_never_zero():
    target = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])  # (1, 1, 2, 2)
    assert float(content_scale(target)) == pytest.approx((1 + 4 + 9) / 4)
    assert float(content_scale(torch.zeros(2, 3, 4, 4))) == 1.0  # an all-zero target: the plain squared error


def test_relative_style_weights_divide_by_each_target_and_sum_the_layer_weights_to_one():
    grams = {"a": torch.full((1, 2, 2), 2.0), "b": torch.full((1, 3, 3), 1.0)}  # ||A||^2 = 16 and 9
    weights = relative_style_weights({"a": 1.0, "b": 3.0}, grams)
    assert weights == pytest.approx({"a": 1 / (4 * 16), "b": 3 / (4 * 9)})
    # Each layer's weighted error of the zero Gram is its share w_l / sum w of the whole: 1/4 and 3/4.
    zero = {k: torch.zeros_like(g) for k, g in grams.items()}
    assert float(weights["a"] * grams["a"].pow(2).sum()) == pytest.approx(0.25)
    assert sum(w * float((zero[k] - grams[k]).pow(2).sum()) for k, w in weights.items()) == pytest.approx(1.0)


def test_blend_weights_sum_to_one_and_refuse_bad_input():
    assert blend_weights(None, 4) == [0.25] * 4
    assert blend_weights((3.0, 1.0), 2) == [0.75, 0.25]
    with pytest.raises(ValueError, match="2 style image.*3 blend weight"):
        blend_weights((1.0, 1.0, 1.0), 2)
    with pytest.raises(ValueError, match="positive sum"):
        blend_weights((0.0, 0.0), 2)


def test_config_normalises_layer_lists_and_names_the_first_bad_setting():
    config = ObjectiveConfig(content_layers="relu2_2", style_layers=["relu1_2", "relu3_3"])
    assert config.content_layers == ("relu2_2",) and config.style_layers == {"relu1_2": 1.0, "relu3_3": 1.0}
    for bad, message in [
        ({"arch": "resnet"}, "arch must be one of vgg16, vgg19"),
        ({"pool": "min"}, "pool must be one of max, avg"),
        ({"style_weight": float("nan")}, "style_weight must be a finite number"),
        ({"content_layers": ()}, "content_layers is empty"),
        ({"style_layers": {"relu1_1": 0.0}}, "positive sum"),
        ({"content_layers": ("relu9_9",)}, "Unknown vgg16 layer.*relu9_9"),
    ]:
        with pytest.raises(ValueError, match=message):
            ObjectiveConfig(**bad).validate()
    ObjectiveConfig(content_layers=(), content_weight=0.0).validate()  # a style-only objective is fine
    active = ObjectiveConfig(style_layers={"relu1_1": 1.0, "relu2_1": 0.0}, content_weight=0.0).active()
    assert active.content_layers == () and active.style_layers == {"relu1_1": 1.0}


# --------------------------------------------------------------------------------------------------------
# The loss module
# --------------------------------------------------------------------------------------------------------


def test_terms_are_the_normalised_formulas_built_by_hand(offline_weights, photo, painting):
    config = johnson(offline_weights, style_layers={"relu1_2": 1.0, "relu3_3": 3.0}, tv_weight=2.0)
    x = photo[..., :48, :64]
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with PerceptualLoss(painting, config) as loss, torch.no_grad():
        terms = loss(x, y)
    with vgg.VGGFeatures(["relu1_2", "relu2_2", "relu3_3"], weights=offline_weights) as net, torch.no_grad():
        p, a, f = net(x), net(painting), net(y)
        content = content_loss(f["relu2_2"], p["relu2_2"]) / p["relu2_2"].pow(2).mean()
        grams = {k: gram_matrix(a[k]) for k in ("relu1_2", "relu3_3")}
        style = sum(
            w / 4 * (gram_matrix(f[k]) - grams[k]).pow(2).sum() / grams[k].pow(2).sum()
            for k, w in (("relu1_2", 1.0), ("relu3_3", 3.0))
        )
        tv = total_variation(y)
    assert set(terms) == {"content", "style", "tv", "total"} and PerceptualLoss.terms == ("content", "style", "tv")
    torch.testing.assert_close(terms["content"], content, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["style"], style, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["total"], content + 5.0 * style + 2.0 * tv, rtol=1e-4, atol=0)
    assert float(style_loss(f, grams, loss.layer_weights)) == pytest.approx(float(terms["style"]), rel=1e-4)


def test_loss_terms_do_not_depend_on_the_vgg_feature_scale(tmp_path, offline_weights, photo, painting):
    # Scaling every convolution's bias by k and the first one's weights by k scales every ReLU feature by k
    # (ReLU and max pooling are positively homogeneous): the normalised terms must not change.
    state, _ = vgg.load_vgg_weights(offline_weights)
    k = 1 / 60  # about the Caffe-to-ImageNet feature ratio
    scaled = {
        name: value * k if name.endswith("bias") or name == "conv1_1.weight" else value for name, value in state.items()
    }
    path = tmp_path / "scaled_vgg.safetensors"
    save_file(scaled, str(path), metadata={"normalization": "caffe"})
    x = photo[..., :64, :64]  # (1, 3, 64, 64)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    terms = [PerceptualLoss(painting, johnson(w))(x, y) for w in (offline_weights, str(path))]
    for key in ("content", "style", "tv", "total"):
        assert float(terms[1][key]) == pytest.approx(float(terms[0][key]), rel=1e-3)
    assert 0 < float(terms[0]["content"]) < 1 and float(terms[0]["style"]) > 0


def test_split_fused_and_shared_vgg_passes_agree(offline_weights, photo, painting):
    x = photo[..., :32, :48]
    y = x.flip(-1)
    passes = {p: PerceptualLoss(painting, johnson(offline_weights), vgg_pass=p) for p in ("split", "fused", "shared")}
    assert passes["split"].content_vgg is not None and passes["shared"].content_vgg is None
    terms = {p: loss(x, y) for p, loss in passes.items()}
    for key in terms["split"]:
        for other in ("fused", "shared"):
            assert float(terms[other][key]) == pytest.approx(float(terms["split"][key]), rel=1e-4)
    assert float(passes["split"](x, x)["content"]) == 0.0  # the photo reproduces itself exactly
    with pytest.raises(ValueError, match="vgg_pass must be one of split, fused, shared"):
        PerceptualLoss(painting, johnson(offline_weights), vgg_pass="twice")


def test_bf16_runs_the_vgg_channels_last_with_the_same_terms(offline_weights, photo, painting):
    x = photo[..., :32, :48]
    y = x.flip(-1)
    nchw = PerceptualLoss(painting, johnson(offline_weights), precision="bf16")
    assert nchw.channels_last and not PerceptualLoss(painting, johnson(offline_weights)).channels_last
    assert nchw.vgg.body.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
    nchw.channels_last = False  # the same module fed NCHW images: only the layout differs
    nhwc = PerceptualLoss(painting, johnson(offline_weights), precision="bf16")
    for key, value in nhwc(x, y).items():
        assert float(value) == pytest.approx(float(nchw(x, y)[key]), rel=2e-2)


def test_fixed_targets_judge_like_the_call_and_blends_mix_the_grams(offline_weights, photo, painting):
    x, y = photo[..., :32, :32], photo[..., 8:40, 8:40]
    other = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    with (
        PerceptualLoss(painting, johnson(offline_weights)) as a,
        PerceptualLoss(other, johnson(offline_weights)) as b,
        PerceptualLoss([painting, other], johnson(offline_weights), blend=(0.7, 0.3)) as mixed,
    ):
        for layer in JOHNSON_STYLE_LAYERS:
            expected = 0.7 * a.style_grams[layer] + 0.3 * b.style_grams[layer]
            torch.testing.assert_close(mixed.style_grams[layer], expected)
        targets = a.content_targets(x)
        assert list(targets) == [JOHNSON_CONTENT_LAYER] and not targets[JOHNSON_CONTENT_LAYER][0].requires_grad
        judged, called = a.judge(y, targets), a(x, y)
        for key in ("content", "style", "tv", "total"):
            assert torch.equal(judged[key], called[key]), key


def test_a_luminance_image_is_judged_as_grey_rgb_and_bad_styles_are_refused(offline_weights, photo, painting):
    grey = photo.mean(dim=1, keepdim=True)  # (1, 1, H, W)
    with PerceptualLoss(painting, johnson(offline_weights)) as loss, torch.no_grad():
        assert loss(grey, grey)["content"] == 0.0
        torch.testing.assert_close(
            loss(grey, grey)["style"], loss(grey.expand(-1, 3, -1, -1), grey.expand(-1, 3, -1, -1))["style"]
        )
    with pytest.raises(ValueError, match=r"style image must be a \(1, 3, H, W\) tensor"):
        PerceptualLoss(painting[0], johnson(offline_weights))
    with pytest.raises(ValueError, match="no style image"):
        PerceptualLoss((), johnson(offline_weights))


# --------------------------------------------------------------------------------------------------------
# The pixel term (super-resolution's l_pixel)
# --------------------------------------------------------------------------------------------------------


def test_pixel_term_is_the_mean_squared_error_and_needs_no_vgg_pass(offline_weights, photo):
    config = ObjectiveConfig(vgg_weights=offline_weights, style_layers={}, content_weight=0.0, style_weight=0.0,
                             tv_weight=0.5, pixel_weight=2.0)  # fmt: skip
    target = photo[..., :32, :32]
    y = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    with PerceptualLoss((), config) as loss:
        calls = []
        handle = loss.vgg.register_forward_pre_hook(lambda module, args: calls.append(1))
        terms = loss(target, y)
        handle.remove()
        assert loss.terms == ("content", "style", "tv", "pixel") and PerceptualLoss.terms == ("content", "style", "tv")
        with pytest.raises(ValueError, match="needs the target images"):
            loss.judge(y, {})
    assert not calls  # l_pixel alone: the VGG never runs
    torch.testing.assert_close(terms["pixel"], ((y - target) ** 2).mean())
    torch.testing.assert_close(terms["total"], 2.0 * terms["pixel"] + 0.5 * total_variation(y))
    assert float(terms["content"]) == 0.0


def test_pixel_and_feature_terms_add_up(offline_weights, photo):
    feat = ObjectiveConfig(vgg_weights=offline_weights, content_layers="relu2_2", style_layers={}, style_weight=0.0,
                           tv_weight=0.0)  # fmt: skip
    both = ObjectiveConfig(**{**vars(feat), "pixel_weight": 1.0})
    target = photo[..., :32, :32]
    y = target.flip(-1)
    with PerceptualLoss((), feat) as f, PerceptualLoss((), both) as b:
        only_feat, summed = f(target, y), b(target, y)
    torch.testing.assert_close(summed["content"], only_feat["content"])
    torch.testing.assert_close(summed["total"], only_feat["total"] + ((y - target) ** 2).mean())


def test_feature_error_is_zero_for_the_target_and_grows_with_blur(offline_weights, photo):
    from PIL import ImageFilter

    from stlib.images import to_pil

    target = to_pil(photo)
    metric = FeatureError("relu2_2", vgg_weights=offline_weights)
    try:
        assert metric.source == "offline"
        assert metric(target, target) == pytest.approx(0.0, abs=1e-7)
        errors = [metric(target.filter(ImageFilter.GaussianBlur(radius)), target) for radius in (0.7, 1.5, 3.0)]
    finally:
        metric.close()
    assert 0 < errors[0] < errors[1] < errors[2]  # l_feat's view: a blurrier picture is further from the photo


def test_style_size_curve_finds_the_size_at_which_an_image_shows_the_painting(offline_weights):
    painting = assets.style_image("starry_night")
    config = johnson(offline_weights)
    at_96 = images.load_tensor(painting, size=96)  # the painting itself, at 96 px
    sizes = (48, 72, 96, 144, 192)
    curve = style_size_curve(at_96, painting, config, sizes)
    assert min(range(len(sizes)), key=curve.__getitem__) == sizes.index(96)
    assert curve[sizes.index(96)] < 1e-6 < min(curve[:2] + curve[3:])  # the same image; other sizes differ
    assert curve[0] > curve[1] and curve[4] > curve[3]  # further from 96 px, further from its texture


# Distances to a per-image target (stlib.distill: the teacher's picture of the same photo)


def _vgg_features(image: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    with vgg.VGGFeatures(layers, weights="offline") as network, torch.no_grad():
        return network(image)


def test_distances_are_zero_for_the_teachers_picture_and_ignore_its_scale(photo, offline_weights):
    layers = ["relu1_2", "relu2_2", "relu3_3"]
    teacher = _vgg_features(photo, layers)
    other = _vgg_features(photo.flip(-1).roll(5, -2), layers)
    assert float(feature_distance(teacher, teacher, layers)) == 0.0
    assert float(gram_distance(teacher, teacher, dict.fromkeys(layers, 1.0))) == 0.0
    assert float(feature_distance(other, teacher, layers)) > 0.05
    assert float(gram_distance(other, teacher, dict.fromkeys(layers, 1.0))) > 0
    # relative errors: scaling both feature maps by 3 (e.g. another VGG's activation scale) changes nothing
    scaled = ({k: 3 * v for k, v in d.items()} for d in (other, teacher))
    a, b = next(scaled), next(scaled)
    assert float(feature_distance(a, b, layers)) == pytest.approx(float(feature_distance(other, teacher, layers)))
    assert float(gram_distance(a, b, {"relu1_2": 1.0})) == pytest.approx(
        float(gram_distance(other, teacher, {"relu1_2": 1.0}))
    )


def test_gram_distance_is_the_objectives_style_term_with_the_teachers_picture_as_painting(
    photo, painting, offline_weights
):
    weights = {"relu1_2": 2.0, "relu2_2": 1.0, "relu3_3": 1.0}
    config = ObjectiveConfig(vgg_weights="offline", content_layers=(), content_weight=0, style_layers=weights)
    with PerceptualLoss(painting, config) as objective:
        expected = objective.judge(photo, {})["style"]
    picture, judged = _vgg_features(painting, list(weights)), _vgg_features(photo, list(weights))
    assert float(gram_distance(judged, picture, weights)) == pytest.approx(float(expected), rel=1e-4)
    grams = {name: objective.style_grams[name] for name in weights}
    assert float(style_loss(judged, grams, relative_style_weights(weights, grams))) == pytest.approx(
        float(expected), rel=1e-4
    )
