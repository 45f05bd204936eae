"""Image optimisation through VGG: feature inversion, texture synthesis and style transfer (offline weights)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from stlib import color, gatys
from stlib.losses import content_loss, gram_matrix, style_loss, total_variation
from stlib.vgg import VGGFeatures

STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float((a - b).pow(2).mean()))


def test_content_reconstruction_conv2_2_is_close_to_the_photo(photo, offline_weights):
    result = gatys.reconstruct_content(photo, "conv2_2", iterations=300, vgg_weights=offline_weights)
    assert result.image.shape == photo.shape
    assert result.losses("content")[-1] < 0.02 * result.losses("content")[0]
    assert psnr(result.image, photo) >= 20.0


def test_deeper_layers_reconstruct_less_exactly(photo, offline_weights):
    shallow = gatys.reconstruct_content(photo, "conv1_2", iterations=60, vgg_weights=offline_weights)
    deep = gatys.reconstruct_content(photo, "conv5_2", iterations=60, vgg_weights=offline_weights)
    assert psnr(shallow.image, photo) > psnr(deep.image, photo) + 3.0


def test_style_reconstruction_lowers_the_style_loss_tenfold(painting, offline_weights):
    result = gatys.reconstruct_style(painting, STYLE_LAYERS, size=(64, 64), iterations=100, vgg_weights=offline_weights)
    assert result.image.shape == (1, 3, 64, 64)
    # Measured independently of the optimiser's own bookkeeping: plain Gram losses, noise vs result.
    with VGGFeatures(STYLE_LAYERS, weights=offline_weights) as vgg:
        targets = {k: gram_matrix(v) for k, v in vgg(painting).items()}
        noise = gatys.init_image("noise", size=(64, 64), seed=0)
        before = float(style_loss(vgg(noise), targets))
        after = float(style_loss(vgg(result.image), targets))
    assert after < before / 10


def test_optimizer_keeps_pixels_in_range_and_input_untouched():
    init = torch.rand(1, 3, 8, 8)
    copy = init.clone()

    def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        total = (x - 2.0).pow(2).mean()  # pulls every pixel above 1: clamping must hold them at 1
        return {"total": total}

    for optimizer in ("lbfgs", "adam"):
        result = gatys.optimize_image(loss_fn, init, iterations=5, optimizer=optimizer, lr=0.5)
        assert torch.equal(init, copy)
        assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0
        assert len(result.history) == 5 and all("time" in h for h in result.history)
        assert result.losses()[-1] < result.losses()[0]


def test_nan_loss_stops_with_a_clear_error():
    def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        total = x.sum() * float("nan")
        return {"total": total}

    with pytest.raises(gatys.OptimizationDiverged, match="iteration 1"):
        gatys.optimize_image(loss_fn, torch.rand(1, 3, 8, 8), iterations=3)


def test_init_kinds(photo):
    assert torch.equal(gatys.init_image("content", like=photo), photo)
    noise = gatys.init_image("noise", size=(10, 12), seed=3)
    assert noise.shape == (1, 3, 10, 12) and torch.equal(noise, gatys.init_image("noise", size=(10, 12), seed=3))
    blurred = gatys.init_image("blurred-noise", size=(32, 32))
    assert blurred.diff(dim=-1).abs().mean() < noise.diff(dim=-1).abs().mean()
    with pytest.raises(ValueError, match="Unknown init"):
        gatys.init_image("zeros", like=photo)


# ----------------------------------------------------------------------------------------------------------
# stylize: Gatys style transfer with its extensions
# ----------------------------------------------------------------------------------------------------------


def small(weights: str, objective: dict | None = None, **changes) -> gatys.GatysConfig:
    """The default configuration at test sizes: 64 px, few iterations, no progress bar; `objective`: its changes."""
    settings = {"size": 64, "iterations": 20, "progress": False} | changes
    return gatys.GatysConfig(objective={"vgg_weights": weights} | (objective or {}), **settings)


def test_stylize_lowers_the_loss_fivefold_and_keeps_pixels_valid(photo, painting, offline_weights):
    result = gatys.stylize(photo, painting, small(offline_weights, iterations=24, init="noise"))
    assert result.image.shape == (1, 3, 48, 64)  # the photo's aspect ratio, longest side `size`
    assert result.image.dtype == torch.float32
    assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0
    assert len(result.history) == 24
    assert set(result.history[0]) == {"content", "style", "tv", "total", "time"}
    totals = result.losses()
    assert totals[-1] < 0.2 * totals[0]
    quarters = [min(totals[: n + 1]) for n in (5, 11, 17, 23)]  # best so far after each quarter of the run
    assert all(b < a for a, b in zip(quarters, quarters[1:], strict=False))
    times = result.losses("time")
    assert all(b >= a for a, b in zip(times, times[1:], strict=False)) and result.seconds >= times[-1]


def test_stylize_from_the_photo_trades_content_for_style(photo, painting, offline_weights):
    result = gatys.stylize(photo, painting, small(offline_weights, iterations=15))
    assert result.losses("content")[0] == 0.0 < result.losses("content")[-1]  # starts at the photo, moves away
    assert result.losses("style")[-1] < 0.2 * result.losses("style")[0]
    assert result.losses()[-1] < 0.5 * result.losses()[0]


def test_loss_terms_are_the_normalised_losses_built_by_hand(photo, painting, offline_weights):
    config = small(offline_weights, {"style_layers": {"relu1_1": 1.0, "relu3_1": 3.0}, "tv_weight": 2.0})
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    style = gatys.resize_tensor(painting, 64)
    with gatys.GatysLoss(photo[..., :48, :64], style, config) as loss:
        terms = loss(x)
    with VGGFeatures(["relu1_1", "relu3_1", "relu4_2"], weights=offline_weights) as vgg:
        p, a, f = vgg(photo[..., :48, :64]), vgg(style), vgg(x)
        content = content_loss(f["relu4_2"], p["relu4_2"]) / p["relu4_2"].pow(2).mean()
        style_term = sum(
            w / 4.0 * (gram_matrix(f[k]) - gram_matrix(a[k])).pow(2).sum() / gram_matrix(a[k]).pow(2).sum()
            for k, w in (("relu1_1", 1.0), ("relu3_1", 3.0))
        )
        tv = total_variation(x)
    torch.testing.assert_close(terms["content"], content, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["style"], style_term, rtol=1e-4, atol=0)
    torch.testing.assert_close(
        terms["total"], content + config.objective.style_weight * style_term + 2.0 * tv, rtol=1e-4, atol=0
    )


def test_fast_path_gives_the_same_loss_as_the_plain_path(photo, painting, offline_weights):
    x = torch.rand(1, 3, 72, 96, generator=torch.Generator().manual_seed(2))  # the photo's size
    plain = small(offline_weights, channels_last=False, truncate=False)
    with (
        gatys.GatysLoss(photo, painting, small(offline_weights)) as fast,
        gatys.GatysLoss(photo, painting, plain) as slow,
    ):
        assert "pool5" in slow.vgg.layers and "pool5" not in fast.vgg.layers
        a, b = fast(x), slow(x)
    for key in ("content", "style", "tv", "total"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-7)


def test_normalised_losses_keep_their_balance_across_sizes(offline_weights):
    from stlib import assets, images

    photo = images.load_tensor(assets.content_image("tubingen"), size=128)
    art = images.load_tensor(assets.style_image("starry_night"), size=128)
    terms = {}
    for size in (64, 128):
        c, s = gatys.resize_tensor(photo, size), gatys.resize_tensor(art, size)
        with gatys.GatysLoss(c, s, small(offline_weights)) as loss:
            terms[size] = loss(gatys.resize_tensor(art, c.shape[-2:]))  # the painting judged against the photo
    for key in ("content", "style"):
        ratio = float(terms[128][key] / terms[64][key])
        assert 0.5 < ratio < 2.0, f"{key} changes {ratio:.2f}x between 64 and 128 px"


def test_blend_weights_one_zero_equal_the_single_style(photo, painting, offline_weights):
    other = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    single = gatys.stylize(photo, painting, small(offline_weights, iterations=5))
    blended = gatys.stylize(photo, [painting, other], small(offline_weights, iterations=5, style_blend=(1.0, 0.0)))
    torch.testing.assert_close(blended.image, single.image, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="2 style image.*3 blend weight"):
        gatys.stylize(photo, [painting, other], small(offline_weights, style_blend=(0.5, 0.3, 0.2)))


def test_blended_target_is_the_weighted_gram_mixture(photo, painting, offline_weights):
    other = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    config = small(offline_weights)
    with (
        gatys.GatysLoss(photo, [painting, other], config, blend=(0.7, 0.3)) as mixed,
        gatys.GatysLoss(photo, painting, config) as a,
        gatys.GatysLoss(photo, other, config) as b,
    ):
        for layer in mixed.style_targets:
            expected = 0.7 * a.style_targets[layer] + 0.3 * b.style_targets[layer]
            torch.testing.assert_close(mixed.style_targets[layer], expected)


def test_preserve_colors_keeps_the_contents_chroma_while_the_style_loss_falls(photo, painting, offline_weights):
    result = gatys.stylize(photo, painting, small(offline_weights, iterations=15, preserve_colors=True))
    plain = gatys.stylize(photo, painting, small(offline_weights, iterations=15))
    chroma = color.rgb_to_ycbcr(photo)[:, 1:].mean(dim=(2, 3))  # (1, 2) mean Cb, Cr
    kept = color.rgb_to_ycbcr(result.image)[:, 1:].mean(dim=(2, 3))
    changed = color.rgb_to_ycbcr(plain.image)[:, 1:].mean(dim=(2, 3))
    assert float((kept - chroma).abs().max()) < 0.01
    assert float((changed - chroma).abs().max()) > 2 * float((kept - chroma).abs().max())  # the plain run recolours
    assert result.losses("style")[-1] < 0.3 * result.losses("style")[0]
    assert float(color.luminance(result.image).std()) > 0.05  # a real picture, not a flat grey


def test_histogram_color_method_recolours_the_style_not_the_result(photo, painting, offline_weights):
    result = gatys.stylize(
        photo, painting, small(offline_weights, iterations=10, preserve_colors=True, color_method="histogram")
    )
    chroma = color.rgb_to_ycbcr(photo)[:, 1:].mean(dim=(2, 3))
    assert float((color.rgb_to_ycbcr(result.image)[:, 1:].mean(dim=(2, 3)) - chroma).abs().max()) < 0.03
    assert result.losses()[-1] < result.losses()[0]


def test_multiscale_returns_the_final_size_and_records_each_scale(photo, painting, offline_weights):
    snaps = []
    config = small(offline_weights, scales=(32, 64), iterations=(4, 3), snapshot_every=2)
    result = gatys.stylize(photo, painting, config, callback=lambda step, img, losses: snaps.append(img.shape))
    assert result.image.shape == (1, 3, 48, 64)
    assert [h["size"] for h in result.history] == [32.0] * 4 + [64.0] * 3
    assert snaps[0] == (1, 3, 24, 32) and snaps[-1] == (1, 3, 48, 64) and len(snaps) == 7
    # Snapshots: the start, steps 2, 4 (end of the coarse scale), 6, and the last step 7.
    assert len(result.snapshots) == 5
    times = result.losses("time")
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))


def test_callback_can_stop_early(photo, painting, offline_weights):
    result = gatys.stylize(photo, painting, small(offline_weights), callback=lambda step, img, losses: step >= 3)
    assert len(result.history) == 3


def test_snapshots_make_an_animated_gif(tmp_path, photo, painting, offline_weights):
    result = gatys.stylize(photo, painting, small(offline_weights, iterations=4, snapshot_every=2, init="noise"))
    assert len(result.snapshots) == 3  # start, step 2, step 4
    path = result.save_gif(tmp_path / "evolution.gif")
    with Image.open(path) as gif:
        assert gif.size == (64, 48) and gif.n_frames >= 2  # PIL merges frames that look identical
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == 2 * 120 + 1500  # two steps, then the final image held
    assert [p.name for p in tmp_path.iterdir()] == ["evolution.gif"]  # no temporary file left behind
    with pytest.raises(ValueError, match=r"\.gif"):
        result.save_gif(tmp_path / "evolution.png")
    with pytest.raises(ValueError, match="snapshot_every"):
        gatys.stylize(photo, painting, small(offline_weights, iterations=1)).save_gif(tmp_path / "x.gif")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "sgd"}, "optimizer must be one of lbfgs, adam"),
        ({"init": "zeros"}, "init must be one of content, noise"),
        ({"objective": {"style_layers": {"relu9_9": 1.0}}}, "Unknown vgg16 layer"),
        ({"scales": (128, 64)}, "increase"),
        ({"scales": (32, 64), "iterations": (5, 5, 5)}, "3 entries but there are 2 scales"),
        ({"objective": {"style_weight": float("nan")}}, "style_weight"),
        ({"color_method": "lab"}, "color_method"),
        ({"precision": "int8"}, "precision must be one of auto, fp32"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(photo, painting, changes, message):
    with pytest.raises(ValueError, match=message):
        gatys.stylize(
            photo, painting, gatys.GatysConfig(**({"objective": {"vgg_weights": None}, "progress": False} | changes))
        )


def test_bad_images_fail_with_a_clear_message(photo, painting):
    config = gatys.GatysConfig(objective={"vgg_weights": None}, size=32, iterations=1, progress=False)
    broken = photo.clone()
    broken[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="content image contains NaN"):
        gatys.stylize(broken, painting, config)
    with pytest.raises(ValueError, match=r"style image must have shape \(1, 3, H, W\)"):
        gatys.stylize(photo, painting[0], config)


def test_diverging_loss_stops_instead_of_returning_a_black_image(photo, painting, offline_weights):
    config = small(offline_weights, {"style_weight": 1e38}, iterations=3)  # finite weight, infinite loss
    with pytest.raises(gatys.OptimizationDiverged, match=r"became inf at iteration \d"):
        gatys.stylize(photo, painting, config)


def test_bf16_autocast_keeps_the_loss_and_the_image_in_float32(painting, offline_weights):
    content = gatys.resize_tensor(painting, 32)
    x = gatys.init_image("blurred-noise", like=content, seed=5).requires_grad_(True)
    with gatys.GatysLoss(content, content, small(offline_weights)) as fp32:
        reference = fp32(x)
    with gatys.GatysLoss(content, content, small(offline_weights, precision="bf16")) as bf16:
        terms = bf16(x)
        assert bf16.features(x)["relu4_2"].dtype == torch.bfloat16
    terms["total"].backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and terms["total"].dtype == torch.float32
    for key in ("content", "style", "total"):
        assert abs(float(terms[key].detach()) / float(reference[key].detach()) - 1) < 0.05, key


def test_optimize_image_returns_the_lowest_objective_seen():
    target = torch.full((1, 3, 8, 8), 0.3)

    def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": (x - target).pow(2).sum()}

    steps = []
    # A far too large Adam step jumps past the optimum and oscillates: the last image is not the best one.
    result = gatys.optimize_image(
        loss_fn, torch.full((1, 3, 8, 8), 0.5), 6, optimizer="adam", lr=0.5,
        callback=lambda step, image, losses: steps.append(image.clone()),
    )  # fmt: skip
    best_seen = min(h["total"] for h in result.history)
    assert float(loss_fn(steps[-1])["total"]) > best_seen  # the plain last step would be worse
    assert float(loss_fn(result.image)["total"]) == pytest.approx(best_seen)


def test_config_nests_the_objective_and_takes_an_earlier_versions_flat_keywords():
    from dataclasses import replace

    from stlib.perceptual import ObjectiveConfig

    config = gatys.GatysConfig(objective={"vgg_weights": "offline", "style_weight": 3.0}, size=64)
    assert config.objective == ObjectiveConfig(vgg_weights="offline", style_weight=3.0)  # the rest: Gatys et al.'s
    assert gatys.GatysConfig().objective == ObjectiveConfig() and gatys.GatysConfig(objective=config.objective) == (
        replace(config, size=512)
    )
    # an earlier version's flat keywords land in the nested objective, ``weights`` as ``vgg_weights``
    assert gatys.GatysConfig(weights="offline", style_weight=3.0, size=64) == config
    flat_over_given = gatys.GatysConfig(objective=ObjectiveConfig(tv_weight=1.0), weights="offline", size=64)
    assert (flat_over_given.objective.vgg_weights, flat_over_given.objective.tv_weight) == ("offline", 1.0)
    assert gatys.GatysConfig(autocast=None).precision == "fp32"
    with pytest.raises(TypeError, match="vgg_weights or its former name weights"):
        gatys.GatysConfig(weights="offline", vgg_weights="auto")
    with pytest.raises(TypeError, match="precision or its former name autocast"):
        gatys.GatysConfig(autocast="bf16", precision="fp32")
    with pytest.raises(ValueError, match="ObjectiveConfig.tv_weight must be a finite number >= 0"):
        gatys.GatysConfig(objective={"tv_weight": -1.0}).validate()
