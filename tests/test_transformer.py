"""Tests for stlib.transformer: shapes at any size, output range, options, FLOPs, config round trip, training."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stlib.transformer import (
    AntialiasedConv,
    FoldedUpsample,
    InstanceNorm,
    ResidualBlock,
    RGBConv,
    SpaceToDepthConv,
    TransformerConfig,
    TransformerNet,
    fold_upsampling,
    upscale_bicubic,
)
from tests.networks import TINY


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine spinning OpenMP threads cost a lot."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _net(config: TransformerConfig = TINY, train: bool = False, seed: int = 0) -> TransformerNet:
    torch.manual_seed(seed)
    return TransformerNet(config).train(train)


def _hook_flops(net: TransformerNet, height: int, width: int) -> int:
    """FLOPs (2 x MACs) of every conv / transposed conv, measured with forward hooks on a real forward pass."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):
            x = inputs[0]  # (1, C_in, H_in, W_in): each input pixel scatters a C_out x k x k kernel
            total += 2 * x[0].numel() * module.out_channels * k // module.groups
        else:
            total += 2 * output[0].numel() * module.in_channels * k // module.groups  # (C_out, H_out, W_out)
        if isinstance(module, AntialiasedConv):  # its depthwise 4x4 blur runs on the whole input first
            total += 2 * inputs[0][0].numel() * 16

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            net(torch.rand(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


# --------------------------------------------------------------------------------------------------------
# Shapes and range
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 17, 23), (1, 3, 33, 65), (2, 3, 256, 256), (2, 3, 20, 24), (1, 3, 5, 9), (1, 3, 2, 3), (1, 3, 1, 1)],
)
def test_output_size_equals_input_size(shape):
    with torch.no_grad():
        y = _net()(torch.rand(shape))
    assert y.shape == shape


@pytest.mark.parametrize("upsample", ["nearest+conv", "transposed"])
@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (2, 3, 33, 65)])
def test_default_width_and_both_upsamplings_keep_the_size(upsample, shape):
    with torch.no_grad():
        y = _net(TransformerConfig(upsample=upsample))(torch.rand(shape))
    assert y.shape == shape


@pytest.mark.parametrize("output", ["linear+clamp", "tanh"])
def test_eval_output_is_in_unit_range(output):
    net = _net(replace(TINY, output=output))
    with torch.no_grad():
        # push the pre-activation far outside [0, 1] (the linear output's last conv works in 0-255 units)
        nn.init.constant_(net.decoder[-1].bias, 3.0 * (255 if output == "linear+clamp" else 1))
        y = net(torch.rand(2, 3, 19, 21))
    assert y.min() >= 0 and y.max() <= 1
    if output == "linear+clamp":
        assert (y == 1).any()  # clamped, not squashed


def test_linear_output_is_unclamped_in_training_and_clamped_in_eval():
    net = _net(TINY)
    with torch.no_grad():
        nn.init.constant_(net.decoder[-1].bias, 3.0 * 255)  # pixel units
        x = torch.rand(1, 3, 16, 16)
        raw = net.train()(x)
        clamped = net.eval()(x)
    assert raw.max() > 1.5  # the losses see the raw values during training
    assert clamped.max() == 1


def test_input_must_be_a_batch_of_rgb_images():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        _net()(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="got shape"):
        _net()(torch.rand(1, 4, 16, 16))


def test_channels_last_input_gives_the_same_result():
    net = _net()
    x = torch.rand(2, 3, 18, 22)
    with torch.no_grad():
        expected = net(x)
        got = net(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_output_does_not_depend_on_the_rest_of_the_batch():
    net = _net()  # instance norm: each image is normalised on its own
    x = torch.rand(2, 3, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[:1], net(x[:1]), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------
# Architecture options
# --------------------------------------------------------------------------------------------------------


def _count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def test_paper_architecture_layers():
    net = TransformerNet(TransformerConfig.paper())
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    transposed = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    # 3 encoder convs + 5 blocks x 2 + the output conv; two stride-1/2 convs.
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs[:3]] == [
        (3, 32, (9, 9), (1, 1)),
        (32, 64, (3, 3), (2, 2)),
        (64, 128, (3, 3), (2, 2)),
    ]
    assert (convs[-1].in_channels, convs[-1].out_channels, convs[-1].kernel_size) == (32, 3, (9, 9))
    assert len(convs) == 3 + 10 + 1
    assert all(m.padding_mode == "reflect" for m in convs)
    assert [(m.in_channels, m.out_channels, m.stride, m.output_padding) for m in transposed] == [
        (128, 64, (2, 2), (1, 1)),
        (64, 32, (2, 2), (1, 1)),
    ]
    assert _count(net, nn.BatchNorm2d) == 3 + 10 + 2
    assert _count(net, nn.InstanceNorm2d) == 0


def test_default_uses_affine_instance_norm_and_nearest_upsampling():
    net = TransformerNet()
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 15 and all(m.affine for m in norms)
    assert _count(net, nn.BatchNorm2d) == 0
    assert _count(net, nn.ConvTranspose2d) == 0
    ups = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 2 and all(m.mode == "nearest" and m.scale_factor == 2 for m in ups)


@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_equals_torch_instance_norm_in_values_and_gradients(channels_last):
    torch.manual_seed(0)
    ours, theirs = InstanceNorm(6, affine=True), nn.InstanceNorm2d(6, affine=True)
    with torch.no_grad():
        for module in (ours, theirs):
            module.weight.copy_(torch.linspace(0.5, 2.0, 6))
            module.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    x = torch.randn(2, 6, 13, 17) * 3 + 1  # (B, C, H, W), odd sizes, not already normalised
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    assert y1.mean(dim=(2, 3)).sub(ours.bias).abs().max() < 1e-5  # per image and channel: mean = shift
    weights = torch.randn_like(y1)
    (y1 * weights).sum().backward()
    (y2 * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, atol=1e-4, rtol=1e-4)
    assert ours.state_dict().keys() == theirs.state_dict().keys()  # checkpoints stay interchangeable


def test_forward_padded_is_forward_on_sizes_divisible_by_four():
    net = _net(replace(TINY, input_skip=True)).eval()
    nn.init.normal_(net.decoder[-1].weight, std=0.05)
    x = torch.rand(1, 3, 24, 36)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_padded(x), net(x))
        odd = torch.rand(1, 3, 22, 35)
        padded = net.forward_padded(torch.nn.functional.pad(odd, (0, 1, 0, 2), mode="reflect"))
        torch.testing.assert_close(padded[..., :22, :35], net(odd))


def test_residual_block_has_no_relu_after_the_addition():
    block = ResidualBlock(4, "instance").eval()
    with torch.no_grad():
        nn.init.zeros_(block.block[3].weight)  # second conv outputs its bias only ...
        nn.init.zeros_(block.block[3].bias)
        nn.init.zeros_(block.block[4].bias)  # ... and the norm's shift is zero: the residual branch is 0
        x = torch.randn(1, 4, 8, 8)
        torch.testing.assert_close(block(x), x)  # negative values survive: identity, no ReLU


@pytest.mark.parametrize("blocks", [0, 1, 3, 5])
def test_number_of_residual_blocks(blocks):
    net = TransformerNet(TransformerConfig(num_residual_blocks=blocks))
    assert _count(net, ResidualBlock) == blocks
    assert net(torch.rand(1, 3, 12, 12)).shape == (1, 3, 12, 12)


def test_width_multiplier_scales_channels_and_parameters():
    full, half = TransformerNet(), TransformerNet(TransformerConfig(width=0.5))
    assert TransformerConfig(width=0.5).channels == (16, 32, 64)
    assert TransformerConfig(width=0.01).channels == (1, 1, 1)
    assert 0.22 < half.num_parameters() / full.num_parameters() < 0.28  # about a quarter
    assert 1.6e6 < full.num_parameters() < 1.7e6  # the well-known ~1.68 M of Johnson's network


def test_norm_options_change_only_the_norm_layers():
    inst = TransformerNet(TransformerConfig(norm="instance"))
    batch = TransformerNet(TransformerConfig(norm="batch"))
    assert inst.num_parameters() == batch.num_parameters()  # both have a learnable scale and shift
    assert _count(batch, nn.BatchNorm2d) == 15 and _count(batch, nn.InstanceNorm2d) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "group"}, "norm must be one of 'instance', 'batch'"),
        ({"upsample": "bilinear"}, "upsample must be one of"),
        ({"downsample": "maxpool"}, "downsample must be one of 'strided', 'antialiased'"),
        ({"output": "sigmoid"}, "output must be one of"),
        ({"width": 0}, "width must be a positive finite number"),
        ({"width": -1.0}, "width must be a positive"),
        ({"width": float("nan")}, "width must be a positive"),
        ({"width": "1"}, "width must be a positive"),
        ({"num_residual_blocks": -1}, "num_residual_blocks must be an integer >= 0"),
        ({"num_residual_blocks": 2.5}, "num_residual_blocks must be an integer"),
    ],
)
def test_bad_config_values_raise_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        TransformerConfig(**kwargs)
    message = str(info.value)
    assert message.endswith(".") and message.count(". ") == 0  # one sentence


# --------------------------------------------------------------------------------------------------------
# Antialiased downsampling: centred and mirror-symmetric
# --------------------------------------------------------------------------------------------------------


def _mirror_symmetric(net: TransformerNet) -> TransformerNet:
    """Make every kernel left-right symmetric, (w + flipped w) / 2: only the sampling can then break the symmetry."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
                if isinstance(m, nn.Conv2d):
                    m.weight.mul_(1.5)  # a stronger signal than the default initialisation's, far from the clamp
    return net


@pytest.mark.parametrize("shape", [(32, 48), (24, 40)])
def test_antialiased_network_commutes_with_a_mirror_flip_and_the_strided_one_does_not(shape):
    x = torch.rand(1, 3, *shape)

    def asymmetry(downsample: str) -> float:
        net = _mirror_symmetric(_net(TransformerConfig(width=0.5, downsample=downsample)))
        with torch.no_grad():
            return (net(x) - net(x.flip(-1)).flip(-1)).abs().max().item()

    assert asymmetry("antialiased") < 1e-5  # sampled at 2i + 1/2: the centre of what upsampling writes back
    assert asymmetry("strided") > 1e-3  # sampled at 2i: its right edge never reads padding


def test_antialiased_stage_is_a_blurred_strided_convolution_with_the_same_weights():
    torch.manual_seed(0)
    plain = nn.Conv2d(4, 6, 3, stride=2, padding=1, padding_mode="reflect")
    blurred = AntialiasedConv(4, 6)
    blurred.load_state_dict(plain.state_dict())  # the same names and shapes: strided weights load
    assert set(blurred.state_dict()) == {"weight", "bias"}  # the blur is not a weight
    flat = torch.full((1, 4, 16, 12), 0.3)
    assert torch.allclose(blurred(flat), plain(flat), atol=1e-6)  # the blur keeps a constant
    x = torch.rand(1, 4, 16, 12)
    assert blurred(x).shape == plain(x).shape == (1, 6, 8, 6)
    # A pattern at the Nyquist frequency (period 2) aliases into the plain stage's samples, not the blurred one's.
    stripes = torch.zeros(1, 4, 16, 12)
    stripes[..., ::2] = 1.0
    plain_out, blurred_out = plain(stripes), blurred(stripes)
    assert (plain_out - plain(torch.full_like(stripes, 0.5))).abs().max() > 0.1
    assert (blurred_out - blurred(torch.full_like(stripes, 0.5)))[..., 1:-1, 1:-1].abs().max() < 1e-5


# --------------------------------------------------------------------------------------------------------
# FLOPs and describe
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        TransformerConfig(),
        TransformerConfig.paper(),
        TransformerConfig(width=0.5, num_residual_blocks=2),
        TransformerConfig(width=0.3, upsample="transposed", num_residual_blocks=0),
        TransformerConfig.superres(4, width=0.25),
        TransformerConfig.superres(4, width=0.25, subpixel_output=False),
        TransformerConfig.superres(8, width=0.25, upsample="transposed"),
        TransformerConfig(width=0.25, downsampling=1, upscale=2),
        TransformerConfig(width=0.25, subpixel_output=True),
        TransformerConfig(width=0.25, downsample="antialiased"),
        TransformerConfig(width=0.25, downsampling=1, upscale=2, downsample="antialiased"),
    ],
)
@pytest.mark.parametrize("size", [(16, 16), (17, 23), (3, 5)])
def test_flops_formula_matches_a_hook_counter(config, size):
    net = TransformerNet(config).eval()
    assert net.flops(*size) == _hook_flops(net, *size)


def test_flops_of_the_paper_network():
    default, paper = TransformerNet(), TransformerNet(TransformerConfig.paper())
    assert default.flops(480, 640) == 94_489_804_800  # the 94.5 GFLOP per 640x480 frame quoted for this net
    assert paper.flops(480, 640) == 77_502_873_600  # transposed convs work at the lower resolution
    assert default.flops(256, 256) * 307200 == default.flops(480, 640) * 65536  # linear in the pixel count
    assert default.flops(255, 255) == default.flops(256, 256)  # padded to a multiple of 4
    with pytest.raises(ValueError, match="height must be a positive integer"):
        default.flops(0, 10)


def test_describe_is_one_line_with_params_and_gflops():
    text = TransformerNet().describe()
    assert "\n" not in text
    assert "1.68M parameters" in text
    assert "20.2 GFLOPs at 256x256" in text and "94.5 GFLOPs at 640x480" in text


# --------------------------------------------------------------------------------------------------------
# Config round trip
# --------------------------------------------------------------------------------------------------------


def test_config_round_trip_rebuilds_the_same_architecture():
    net = _net(TransformerConfig(norm="batch", upsample="transposed", output="tanh", width=0.5, num_residual_blocks=3))
    meta = json.loads(json.dumps(net.config_dict()))  # as stored in checkpoint metadata
    rebuilt = TransformerNet.from_config(meta)
    assert rebuilt.config == net.config
    rebuilt.load_state_dict(net.state_dict())  # strict: same parameter names and shapes
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x))


def test_from_config_rejects_unknown_keys_and_uses_defaults_for_missing_ones():
    with pytest.raises(ValueError, match="unknown key\\(s\\) depth; known keys are norm"):
        TransformerNet.from_config({"norm": "batch", "depth": 3})
    assert TransformerNet.from_config({"width": 0.5}).config == TransformerConfig(width=0.5)


# --------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [TINY, replace(TINY, norm="batch")])
def test_gradients_reach_every_parameter_in_train_mode(config):
    net = _net(config, train=True)
    y = net(torch.rand(2, 3, 17, 23))
    (y - 0.5).pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_network_overfits_one_image_pair():
    torch.manual_seed(0)
    x = nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(32, 32), mode="bilinear")  # smooth, photo-like
    target = (1 - x).roll(shifts=3, dims=-1)  # colour-inverted and shifted: needs spatial context
    net = TransformerNet(TINY).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(net(x), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_one_adam_step_moves_the_linear_output_by_under_two_percent():
    # The last convolution works in 0-255 pixel units (module docstring, "Output units"): with [0, 1] units one
    # Adam step of the paper's 1e-3 would move the image by about its whole range and training would oscillate.
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig()).train()
    x = torch.rand(2, 3, 32, 32)
    before = net(x).detach()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    (net(x) - 0.5).pow(2).mean().backward()
    optimiser.step()
    assert (net(x).detach() - before).abs().max() < 0.02


# --------------------------------------------------------------------------------------------------------
# Global input skip (not in the paper; helps short CPU training runs start from the identity)
# --------------------------------------------------------------------------------------------------------


def test_input_skip_network_starts_as_the_identity_and_learns():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 21, 30)
    net = TransformerNet(replace(TINY, input_skip=True)).train()
    assert torch.equal(net(x), x)  # last conv zero-initialised: output = input + 0
    (net(x) - 0.5).pow(2).mean().backward()
    last = net.decoder[-1]
    assert last.weight.grad.abs().sum() > 0  # the residual branch receives gradient, so it can learn
    with torch.no_grad():
        last.bias.fill_(2.0 * 255)  # pixel units
    assert net.eval()(x).max() == 1.0  # eval clamps x + f(x) to [0, 1]
    assert "input_skip" in net.describe()


def test_input_skip_needs_the_linear_output():
    with pytest.raises(ValueError, match="input_skip needs output='linear\\+clamp'"):
        TransformerConfig(input_skip=True, output="tanh")
    with pytest.raises(ValueError, match="input_skip must be True or False"):
        TransformerConfig(input_skip=1)


# --------------------------------------------------------------------------------------------------------
# Super-resolution (Johnson et al. Sec. 4.2): the same family, no downsampling, log2(f) upsampling stages
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_superres_network_is_the_papers_and_upscales_any_size(scale):
    net = TransformerNet(TransformerConfig.superres(scale, subpixel_output=False)).eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert net.config.channels == (64,) and len(net.residuals) == 4  # 9x9 conv 64, 4 residual blocks of 64
    assert sum(isinstance(m, nn.Upsample) for m in net.modules()) == scale.bit_length() - 1  # log2(f) x2 stages
    assert not any(c.stride != (1, 1) for c in convs)  # no downsampling
    assert convs[0].kernel_size == (9, 9) and convs[-1].kernel_size == (9, 9) and convs[-1].out_channels == 3
    with torch.no_grad():
        assert net(torch.rand(1, 3, 9, 13)).shape == (1, 3, 9 * scale, 13 * scale)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_subpixel_output_runs_nothing_but_a_shuffle_at_the_output_resolution(scale):
    net = TransformerNet(TransformerConfig.superres(scale, width=0.25)).eval()  # the task's default
    assert net.config.subpixel_output and isinstance(net.shuffle, nn.PixelShuffle)
    assert sum(isinstance(m, nn.Upsample) for m in net.modules()) == scale.bit_length() - 2  # one x2 stage fewer
    last = net.decoder[-1]
    assert last.kernel_size == (5, 5) and last.out_channels == 12  # a 2x2 block of RGB pixels per position
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1])) for m in net.modules() if m is not net]
    with torch.no_grad():
        assert net(torch.rand(1, 3, 9, 13)).shape == (1, 3, 9 * scale, 13 * scale)
    for h in hooks:
        h.remove()
    assert seen.count(13 * scale) == 1  # the shuffle's output; everything else runs at half that width or less
    full = TransformerNet(TransformerConfig.superres(4, width=1.0, subpixel_output=False))
    fast = TransformerNet(TransformerConfig.superres(4, width=1.0))
    assert fast.flops(240, 320) < 0.45 * full.flops(240, 320)  # 24.1 vs 59.9 GFLOPs for a 320x240 input


def test_subpixel_output_can_change_every_pixel_of_each_2x2_block_independently():
    net = _net(replace(TINY, subpixel_output=True))
    with torch.no_grad():
        net.decoder[-1].bias.copy_(torch.tensor([0.0, 0, 0, 255] + [0.0] * 8))  # red channel: only sub-pixel (1, 1)
        y = net.eval()(torch.zeros(1, 3, 8, 8))  # (1, 3, 8, 8) after the shuffle
    red = y[0, 0]
    assert torch.all(red[1::2, 1::2] > red[0::2, 0::2])  # one pixel of each 2x2 block differs: not nearest upsampling


def test_untrained_superres_network_is_bicubic_interpolation():
    x = torch.rand(2, 3, 12, 10)
    net = TransformerNet(TransformerConfig.superres(4)).eval()
    expected = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(net(x), expected)
    assert upscale_bicubic(x, 1) is x


def test_style_network_keeps_its_shape_and_names_its_task():
    default = TransformerConfig()
    assert default.channels == (32, 64, 128) and default.multiple == 4 and default.upsampling == 2
    assert default.task == "style" and TransformerConfig.superres(8).task == "superres"
    assert TransformerConfig.superres(8).upsampling == 3 and TransformerConfig.superres(8).multiple == 1
    assert "upscale=4" in TransformerNet(TransformerConfig.superres(4)).describe()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"upscale": 3}, "upscale must be one of 1, 2, 4 or 8"), ({"downsampling": -1}, "downsampling must be"),
     ({"downsampling": 5}, "at most 4"), ({"norm": "layer"}, "norm must be one of")],
)  # fmt: skip
def test_bad_shape_settings_raise_one_sentence(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Folded upsampling (inference engines)
# ----------------------------------------------------------------------------------------------------------


def _both(folded: nn.Module, reference: nn.Module, size: tuple[int, int], channels_last: bool):
    """(folded(x), reference(x)) for a random (2, 6, H, W) batch x in the standard or channels_last layout."""
    x = torch.randn(2, 6, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return folded(x), reference(x)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 5), (12, 16)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_upsampling_is_nearest_upsampling_then_the_reflection_padded_conv(size, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1, padding_mode="reflect")
    stage = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv)
    folded = FoldedUpsample(conv)
    y, expected = _both(folded, stage, size, channels_last)
    assert y.shape == (2, 5, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)  # borders included: reflect(up(x)) = up(replicate(x))
    assert y.is_contiguous(memory_format=torch.channels_last) == (channels_last and size != (1, 1))
    # 4 phases x a 2x2 kernel at the low resolution: 16 multiply-adds per input channel and low-res pixel, not 36
    assert folded.weight.shape == (4 * 5, 6, 2, 2)


def test_folding_refuses_a_convolution_it_does_not_compute():
    with pytest.raises(ValueError, match="3x3, stride-1, reflection-padded"):
        FoldedUpsample(nn.Conv2d(4, 4, 3, padding=1))  # zero padding: the borders would differ


@pytest.mark.parametrize(("kernel", "size"), [(9, (5, 5)), (9, (12, 16)), (9, (11, 14)), (5, (7, 6)), (3, (2, 3))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_depth_convolution_is_the_reflection_padded_convolution(kernel, size, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 3, kernel, padding=kernel // 2, padding_mode="reflect")
    folded = SpaceToDepthConv(conv)
    y, expected = _both(folded, conv, size, channels_last)
    assert y.shape == expected.shape == (2, 3, *size)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)  # odd sizes and reflected borders included
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    # 2x2 blocks: 4 x 3 output and 4 x 6 input channels, (k + 2) // 2 taps at half the resolution
    assert folded.weight.shape == (12, 24, (kernel + 2) // 2, (kernel + 2) // 2)


@pytest.mark.parametrize("size", [(8, 8), (11, 14)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_rgb_conv_trains_on_blocks_with_the_plain_convolutions_output_and_gradients(size, channels_last):
    torch.manual_seed(0)
    rgb = RGBConv(6, 3, 9).double()
    plain = nn.Conv2d(6, 3, 9, padding=4, padding_mode="reflect").double()
    plain.load_state_dict(rgb.state_dict())  # the same parameters under the same names
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 6, *size, dtype=torch.float64).contiguous(memory_format=layout)
    rgb.to(memory_format=layout)  # a channels_last network (TrainConfig.channels_last) has channels_last weights
    outputs, grads = [], []
    for module in (rgb.train(), plain):
        inp = x.clone().requires_grad_(True)
        y = module(inp)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        outputs.append(y)
        grads.append([inp.grad, module.weight.grad, module.bias.grad])
    torch.testing.assert_close(outputs[0], outputs[1])  # odd sizes and reflected borders included
    for ours, expected in zip(*grads, strict=True):
        torch.testing.assert_close(ours, expected)
    assert outputs[0].is_contiguous(memory_format=layout)
    # the blocks really ran in training (no convolution of 3 output channels), the plain convolution in eval mode
    assert "Convolution" not in type(outputs[0].grad_fn).__name__
    assert "Convolution" in type(rgb.eval()(x).grad_fn).__name__
    net = TransformerNet()
    assert type(net.decoder[-1]) is RGBConv and "decoder.6.weight" in net.state_dict()
    assert type(TransformerNet(TransformerConfig.superres(4)).decoder[-1]) is nn.Conv2d  # sub-pixel output: 12 channels


@pytest.mark.parametrize(
    "conv",
    [nn.Conv2d(4, 3, 9, padding=4), nn.Conv2d(4, 3, 4, padding=2, padding_mode="reflect"),
     nn.Conv2d(4, 3, 9, stride=2, padding=4, padding_mode="reflect")],
    ids=["zero-padded", "even-kernel", "strided"],
)  # fmt: skip
def test_space_to_depth_refuses_a_convolution_it_does_not_compute(conv):
    with pytest.raises(ValueError, match="odd k x k, stride-1"):
        SpaceToDepthConv(conv)
    with pytest.raises(ValueError, match=r"RGBConv must be an odd k x k.*not kernel \(4, 4\)"):
        RGBConv(4, 3, 4)  # an even kernel cannot be centred: no 'same' reflection padding to compute on blocks


@pytest.mark.parametrize(
    "config",
    [
        TransformerConfig(),
        TransformerConfig(width=0.25, num_residual_blocks=2, downsample="antialiased", input_skip=True),
        TransformerConfig.superres(4, width=0.25, num_residual_blocks=1),
        TransformerConfig.superres(2, width=0.25, num_residual_blocks=1, subpixel_output=False),
    ],
    ids=["default", "antialiased-slim", "superres-x4", "superres-x2-paper-output"],
)
def test_a_folded_network_computes_the_same_pictures_and_leaves_the_original_alone(config):
    torch.manual_seed(0)
    net = TransformerNet(config).eval()
    for module in net.modules():  # non-zero output convolutions (input_skip starts them at zero)
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.5 / (module.in_channels * module.kernel_size[0] ** 2) ** 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_upsampling(net)
    stages = sum(isinstance(m, FoldedUpsample) for m in folded.modules())
    assert stages == sum(isinstance(m, nn.Upsample) for m in net.modules()) > 0
    assert not any(isinstance(m, nn.Upsample) for m in folded.modules())
    # the 9x9 RGB layer on 2x2 blocks; a sub-pixel output layer (12 channels, 5x5) is efficient as it is
    assert isinstance(folded.decoder[-1], SpaceToDepthConv) != config.subpixel_output
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=2e-5, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # a copy: nothing folded in place


def test_folding_leaves_transposed_stages_as_they_are():
    net = TransformerNet(replace(TINY, upsample="transposed")).eval()
    torch.nn.init.normal_(net.decoder[-1].weight, std=0.05)
    folded = fold_upsampling(net)
    assert not any(isinstance(m, FoldedUpsample) for m in folded.modules())
    transposed = [type(m) for m in folded.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert transposed == [type(m) for m in net.modules() if isinstance(m, nn.ConvTranspose2d)] != []
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=2e-5, rtol=0)
