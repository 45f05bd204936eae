"""The feed-forward image transformation network of Johnson et al. for real-time style transfer.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016, Sec. 3.1 ("Image Transformation Networks") and the supplementary material (Table 1: the
style-transfer architecture; Fig. 1: the residual block)::

    9x9 conv 32 -> 3x3 conv 64, stride 2 -> 3x3 conv 128, stride 2      (each + norm + ReLU)
    -> 5 residual blocks of 128 channels                                  (3x3 conv, norm, ReLU, 3x3 conv, norm, + x)
    -> upsample x2, 64 -> upsample x2, 32                                 (each + norm + ReLU)
    -> 9x9 conv 3                                                         (no norm; output activation)

The residual block follows Gross & Wilber (as in Johnson's supplementary Fig. 1): there is no ReLU after
the addition. Differences from the paper, each selectable in `TransformerConfig`:

- ``norm``: ``"instance"`` (default; Ulyanov, Vedaldi, Lempitsky, "Instance Normalization: The Missing
  Ingredient for Fast Stylization", 2016, with learnable affine parameters) or ``"batch"`` (the paper).
- ``upsample``: ``"nearest+conv"`` (default; nearest-neighbour x2 then a 3x3 convolution, which avoids the
  checkerboard artefacts of Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016)
  or ``"transposed"`` (the paper's stride-1/2 convolutions: ConvTranspose2d, kernel 3, stride 2, padding 1,
  output_padding 1).
- ``downsample``: ``"strided"`` (default, the paper's 3x3 stride-2 convolutions) or ``"antialiased"``: a
  [1, 3, 3, 1] binomial blur before each of them (R. Zhang, "Making Convolutional Networks Shift-Invariant
  Again", ICML 2019; `AntialiasedConv`). A plain stride-2 convolution samples pixels 0, 2, 4 ... of an even
  side: only its left and top edges read padding, and its samples sit half a pixel left of the two pixels that
  nearest-neighbour upsampling writes back, 1.5 pixels over both stages. Trained networks paint a band along the
  right edge from that asymmetry (`the_scream`: ~50 grey levels, on the network's right whichever way the photo
  is turned), and a subsampling without a low-pass filter aliases. The antialiased stage is centred,
  mirror-symmetric and low-pass, for 0.5 % more FLOPs; its weights have the same shapes, so strided networks'
  weights load into it. (The shipped networks' 4-pixel grid and flicker also need a training signal: `stlib.train`'s
  stability term; `stlib.artifacts` measures all three.)
- ``output``: ``"linear+clamp"`` (default) or ``"tanh"``, the paper's scaled tanh, here ``(tanh(x) + 1) / 2``
  so that the output lies in [0, 1] (the paper scales to [0, 255]).
  With ``"linear+clamp"`` the network returns its raw (linear) output in training mode, unclamped: the
  perceptual losses then see, and pull back, any out-of-range value with a full gradient, where a hard clamp
  would give saturated pixels a zero gradient (pytorch/examples' fast_neural_style does the same and clamps
  when saving). In eval mode the output is clamped to [0, 1].
- ``width`` multiplies every channel count (0.5 gives 16/32/64) and ``num_residual_blocks`` sets the depth,
  for slimmer, faster variants.
- ``subpixel_output`` (off by default; not in the paper): the last x2 stage and the 9x9 output convolution are
  replaced by one 5x5 convolution to 12 channels at half the output resolution (about the 9x9's field of view
  in output pixels) whose channels a pixel shuffle turns into 2x2 blocks of RGB pixels: the sub-pixel
  convolution of Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
  Convolutional Neural Network", CVPR 2016. Nothing but the shuffle then runs at the output resolution: for
  super-resolution, whose output has 16 or 64 times the input's pixels, 2.5x fewer FLOPs at x4 (24 instead
  of 60 GFLOPs for a 320x240 input at 32 channels) and 3x less time on a CPU. Odena et al. note that a
  sub-pixel convolution is a transposed one and can make checkerboards: with ``input_skip`` its weights start
  at zero, the four sub-kernels equal (the "ICNR" start of Aitken et al. 2017); `stlib.artifacts.grid_strength`
  measures what training makes of them (benchmarks/RESULTS.md).
- ``input_skip`` (off by default; not in the paper): a global residual connection, output = input + f(input),
  with the last convolution initialised to zero so that the untrained network is the identity. The paper's
  network must first learn to reproduce the photo from instance-normalised features, which takes thousands of
  steps; from the identity, a few hundred steps on a CPU already give a recognisable stylised photo (the CPU
  recipe of notebook 03). The style strength is unchanged in principle (f can move the pixels anywhere) but
  short runs keep more of the photo. The networks shipped in ``checkpoints/`` were trained on a GPU *without*
  it (their metadata says so).

Output units: with ``"linear+clamp"`` the last convolution works in pixel units, 0-255, as in the paper (and
in pytorch/examples), and the network divides by 255. This matters for training: Adam moves every weight by
about the learning rate per step whatever the loss scale, and the output convolution sums 32 x 9 x 9 = 2592
inputs: in [0, 1] units the first step of 1e-3 moved the output of the untrained default network by up to 3.5
(3.5 times the whole range), and short CPU training runs gave colour blobs; in 0-255 units the same step
moves it by at most 0.013.

Padding: the paper pads the input by 40 pixels of reflection once and uses unpadded convolutions (its
residual blocks crop their input). Here every convolution pads its own input by reflection ("same" size),
and the input is reflection-padded on the bottom/right to a multiple of 4 (and at least 8) so that the two
stride-2 stages divide it exactly; the output is cropped back, so any H x W comes out at exactly H x W.
Transposed convolutions can only zero-pad (a PyTorch limitation), so the ``"transposed"`` variant does.

Super-resolution (Sec. 4.2 and the supplementary's Table 2): the same family without downsampling: 9x9 conv 64 ->
4 residual blocks of 64 -> log2(f) upsampling stages of 64 (x2 each) -> 9x9 conv 3, for an upscaling factor f.
`TransformerConfig` expresses it with ``downsampling=0`` and ``upscale=f`` (`TransformerConfig.superres`): the
channel count doubles at each stride-2 stage (32 -> 64 -> 128 for style transfer, none for super-resolution,
hence width 2 for the paper's 64 channels) and the decoder has one x2 stage per stride-2 stage plus log2(f).
`TransformerConfig.superres` also turns on ``input_skip`` (bicubic + f(x)) and ``subpixel_output``, and turns off
the normalisation.

Cost (`TransformerNet.flops`, 2 FLOPs per multiply-accumulate, convolutions only): the default network has
1.68 M parameters and needs 20.2 GFLOPs at 256 x 256 and 94.5 GFLOPs per 640 x 480 frame; with the paper's
transposed convolutions (which work at the lower resolution) 16.5 and 77.5 GFLOPs; at width 0.5, 0.42 M
parameters and 5.5 / 26.0 GFLOPs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from itertools import chain, pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .options import option

__all__ = [
    "DOWNSAMPLES",
    "FoldedUpsample",
    "NORMS",
    "OUTPUTS",
    "AntialiasedConv",
    "InstanceNorm",
    "UPSAMPLINGS",
    "UPSCALES",
    "ResidualBlock",
    "RGBConv",
    "SpaceToDepthConv",
    "TransformerConfig",
    "TransformerNet",
    "fold_upsampling",
    "pad_to_multiple",
    "upscale_bicubic",
]

NORMS = ("instance", "batch", "none")
UPSAMPLINGS = ("nearest+conv", "transposed")
DOWNSAMPLES = ("strided", "antialiased")
OUTPUTS = ("linear+clamp", "tanh")

_BASE_CHANNELS = 32  # Johnson et al., supplementary Table 1: 32, then doubled by each stride-2 stage (64, 128)
UPSCALES = (1, 2, 4, 8)
_OUTPUT_SCALE = 1 / 255  # see "Output units" in the module docstring
_MIN_SIDE = 8  # smallest padded side: 9x9 reflection needs > 4 pixels, the residual stage needs >= 2


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture options of `TransformerNet`; the defaults are the improved (not the paper's) variant."""

    norm: str = option("instance", "normalisation: instance (Ulyanov et al.), batch (paper) or none", choices=NORMS)
    upsample: str = option(
        "nearest+conv", "upsampling: nearest+conv (Odena et al.) or transposed (paper)", choices=UPSAMPLINGS
    )
    downsample: str = option(
        "strided", "stride-2 stages: strided (paper: 3x3 conv, stride 2) or antialiased (binomial blur first: "
        "centred and shift-stable)", choices=DOWNSAMPLES,
    )  # fmt: skip
    output: str = option(
        "linear+clamp", "output layer: linear+clamp or tanh (paper's scaled tanh)", choices=OUTPUTS,
        flag="--output-activation",
    )  # fmt: skip
    width: float = option(1.0, "multiplies all channel counts (32, 64, 128), rounded, at least 1", check="positive")
    num_residual_blocks: int = option(5, "residual blocks", flag="--blocks", check="positive")
    downsampling: int = option(2, "stride-2 stages before the residual blocks (super-resolution: 0)")
    upscale: int = option(1, "output size / input size: 1 (style) or 2, 4, 8 (super-resolution)", choices=UPSCALES)
    input_skip: bool = option(
        False, "output = input + f(input), starting from the identity (not in the paper; converges fast on CPUs)"
    )
    subpixel_output: bool = option(
        False, "the last x2 stage and the 9x9 output conv as one 5x5 sub-pixel conv at half resolution (Shi et al.)"
    )

    def __post_init__(self) -> None:
        for name, allowed in (
            ("norm", NORMS),
            ("upsample", UPSAMPLINGS),
            ("downsample", DOWNSAMPLES),
            ("output", OUTPUTS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                choices = ", ".join(repr(a) for a in allowed)
                raise ValueError(f"TransformerConfig.{name} must be one of {choices}, got {value!r}.")
        width = self.width
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
            raise ValueError(f"TransformerConfig.width must be a positive finite number, got {width!r}.")
        blocks = self.num_residual_blocks
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"TransformerConfig.num_residual_blocks must be an integer >= 0, got {blocks!r}.")
        for name, value in (("downsampling", self.downsampling), ("upscale", self.upscale)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TransformerConfig.{name} must be an integer >= 0, got {value!r}.")
        if self.downsampling > 4:
            raise ValueError(f"TransformerConfig.downsampling must be at most 4, got {self.downsampling}.")
        if self.upscale not in UPSCALES:
            raise ValueError(f"TransformerConfig.upscale must be one of 1, 2, 4 or 8, got {self.upscale!r}.")
        for name in ("input_skip", "subpixel_output"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TransformerConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if self.input_skip and self.output != "linear+clamp":
            raise ValueError(
                "TransformerConfig.input_skip needs output='linear+clamp' (x + f(x) is not a tanh output)."
            )

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels at each resolution, full first (style: 32, 64, 128), times `width`, rounded half up, at least 1."""
        return tuple(max(1, int(_BASE_CHANNELS * 2**k * self.width + 0.5)) for k in range(self.downsampling + 1))

    @property
    def task(self) -> str:
        """ "superres" for a network that upscales, else "style"."""
        return "superres" if self.upscale > 1 else "style"

    @property
    def multiple(self) -> int:
        """The input's height and width must be multiples of this (2 ** downsampling) for `forward_padded`."""
        return 2**self.downsampling

    @property
    def upsampling(self) -> int:
        """The number of x2 upsampling stages: one per stride-2 stage, plus log2(upscale)."""
        return self.downsampling + self.upscale.bit_length() - 1

    @classmethod
    def paper(cls) -> TransformerConfig:
        """The configuration of Johnson et al.: batch norm, transposed convolutions, scaled tanh."""
        return cls(norm="batch", upsample="transposed", output="tanh")

    @classmethod
    def superres(cls, upscale: int = 4, **changes: Any) -> TransformerConfig:
        """Johnson et al.'s super-resolution network (Sec. 4.2): no downsampling, 64 channels, 4 residual blocks.

        log2(upscale) x2 upsampling stages of 64 channels, then the 9x9 output convolution. Defaults here
        differ from the paper's as the style network's do (nearest+conv, linear output), and add what suits the
        task (EDSR, Lim et al. 2017; VDSR, Kim et al. 2016): no normalisation (the output's range and contrast
        must follow the input's) and ``input_skip``: the output is the bicubic upscaling plus f(x), so the
        untrained network is bicubic interpolation, and ``subpixel_output`` (nothing but a pixel shuffle at the
        output resolution). `changes` override any field, e.g. ``norm="batch"``.
        """
        settings = {"width": 2.0, "num_residual_blocks": 4, "downsampling": 0, "upscale": upscale}
        return cls(**{**settings, "norm": "none", "input_skip": True, "subpixel_output": True, **changes})


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A convolution that reflection-pads its own input ("same" size at stride 1)."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, padding_mode="reflect"
    )


_BINOMIAL = (1.0, 3.0, 3.0, 1.0)  # Zhang 2019's 4-tap filter; even length: centred half a pixel right of its tap 1


class AntialiasedConv(nn.Conv2d):
    """A 3x3 stride-2 convolution behind a [1, 3, 3, 1] binomial blur: anti-aliased and centred (no shift).

    R. Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019: low-pass filter before
    subsampling. The even-length blur also moves the sample centres from 2i (where a plain stride-2 convolution
    samples, so that only the left/top edge ever reads padding) to 2i + 1/2, the centre of the two pixels that
    nearest-neighbour upsampling later writes: the encoder and decoder then agree, and a network whose kernels
    are mirror-symmetric commutes with a mirror flip of its input (tested). The padding keeps that: the input is
    reflected (1 before, 2 after) for the blur, whose samples lie between pixels, so the convolution's one
    padded sample before is the first blurred one repeated. The weights are those of a 3x3 stride-2
    `nn.Conv2d` (same names and shapes), so a strided network's weights load into this one.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, stride=2)
        taps = torch.tensor(_BINOMIAL)
        kernel = torch.outer(taps, taps) / taps.sum() ** 2  # (4, 4), sums to 1
        self.register_buffer("blur", kernel.expand(in_channels, 1, 4, 4).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) with even H, W -> (B, C_out, H/2, W/2)."""
        x = F.conv2d(F.pad(x, (1, 2, 1, 2), mode="reflect"), self.blur.to(x.dtype), groups=x.shape[1])  # (B, C, H, W)
        return super().forward(F.pad(x, (1, 0, 1, 0), mode="replicate"))  # 3x3, stride 2: (B, C_out, H/2, W/2)


def _downsample(kind: str, in_channels: int, out_channels: int) -> nn.Conv2d:
    """A stride-2 stage's convolution: plain (the paper) or behind a binomial blur (`AntialiasedConv`)."""
    return (
        _conv(in_channels, out_channels, 3, stride=2)
        if kind == "strided"
        else AntialiasedConv(in_channels, out_channels)
    )


class InstanceNorm(nn.InstanceNorm2d):
    """Instance normalisation (Ulyanov et al. 2016, Eq. 2) with learnable scale and shift, in one kernel.

    The same function and parameters as ``nn.InstanceNorm2d(C, affine=True)``, computed as a group norm with
    one channel per group: PyTorch's instance norm reshapes the batch to (1, B*C, H, W) and calls batch norm,
    which copies a channels_last input to the standard layout and back; ``group_norm`` normalises and applies
    the affine transform in one pass in either layout (about 25 % faster per frame on a CPU, channels_last).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), each channel of each image to zero mean, unit variance, then affine."""
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


def _norm(kind: str, channels: int) -> nn.Module:
    """Instance norm with learnable scale and shift, batch norm, or none (an identity)."""
    if kind == "instance":
        return InstanceNorm(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    return nn.BatchNorm2d(channels)


def _decoder_stages(cfg: TransformerConfig) -> list[tuple[int, int]]:
    """(in, out) channels of each x2 stage: back through the stride-2 stages, then log2(upscale) at full width."""
    channels = cfg.channels
    return list(pairwise(channels[::-1])) + [(channels[0], channels[0])] * (cfg.upsampling - cfg.downsampling)


def _upsample(kind: str, in_channels: int, out_channels: int) -> nn.Module:
    """A x2 upsampling layer: nearest neighbour + 3x3 conv, or a stride-2 transposed conv."""
    if kind == "nearest+conv":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(in_channels, out_channels, 3))
    return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)


# Which low-resolution pixel each tap of a 3x3 kernel reads after nearest-neighbour x2 upsampling, per output
# phase (even, odd) along one axis: (phase, offset of the 2-tap window, tap -1/0/+1). Even output 2j reads upsampled
# pixels 2j-1, 2j, 2j+1 = input j-1, j, j; odd output 2j+1 reads 2j, 2j+1, 2j+2 = input j, j, j+1.
_PHASE_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) phase of each of the four channel groups, in order


class FoldedUpsample(nn.Module):
    """Nearest-neighbour x2 upsampling + a 3x3 reflection-padded convolution, computed at the low resolution.

    The same function as ``nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv)`` (up to the order of
    the float sums), for inference engines. Each output pixel of a resize-convolution reads only 2x2 distinct input
    pixels, so it is a sub-pixel convolution with four tied 2x2 kernels (Odena, Dumoulin, Olah, "Deconvolution and
    Checkerboard Artifacts", Distill 2016; Shi et al. 2016): one 2x2 convolution to 4 x C_out channels on the
    low-resolution input, whose four channel groups are the four pixels of each 2x2 output block. That is 4/9 of
    the multiply-adds, and the 4x larger upsampled tensor and its padded copy are never made. Reflection padding of
    the upsampled picture by one pixel is replication padding of the input (both repeat the edge pixel), so the
    borders agree too. The folded weights are buffers computed once from `conv`'s; train the unfolded network.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if (conv.kernel_size, conv.stride, conv.padding, conv.padding_mode, conv.groups) != (
            (3, 3),
            (1, 1),
            (1, 1),
            "reflect",
            1,
        ):
            raise ValueError("FoldedUpsample folds a 3x3, stride-1, reflection-padded convolution only.")
        taps = torch.tensor(_PHASE_TAPS, dtype=conv.weight.dtype, device=conv.weight.device)  # (2, 2, 3)
        with torch.no_grad():
            # weight[p, q, o, i, dy, dx] = sum over ty, tx of taps[p, dy, ty] taps[q, dx, tx] w[o, i, ty, tx]
            weight = torch.einsum("pys,qxt,oist->pqoiyx", taps, taps, conv.weight)  # (2, 2, C_out, C_in, 2, 2)
            bias = torch.zeros(conv.out_channels) if conv.bias is None else conv.bias.detach()
        self.out_channels = conv.out_channels
        self.register_buffer("weight", weight.flatten(0, 2).contiguous())  # (4 C_out, C_in, 2, 2), phase-major
        self.register_buffer("bias", bias.repeat(4).to(weight))  # (4 C_out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, 2H, 2W), in x's memory format."""
        batch, _, height, width = x.shape
        channels_last = _is_channels_last(x)
        weight = self.weight.to(memory_format=torch.channels_last) if channels_last else self.weight
        z = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, self.bias)  # (B, 4 C_out, H+1, W+1)
        # Output pixel (2j + p, 2k + q) is z's phase-(p, q) channel group at (j + p, k + q).
        phases = [g[:, :, p : p + height, q : q + width] for g, (p, q) in zip(z.chunk(4, 1), _PHASES, strict=True)]
        if torch.onnx.is_in_onnx_export():  # onnxruntime: one DepthToSpace (a scatter into a view is slow there)
            return F.pixel_shuffle(torch.stack(phases, 2).flatten(1, 2), 2)  # (B, C_out, 2H, 2W)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        size = (batch, self.out_channels, 2 * height, 2 * width)
        out = torch.empty(size, dtype=z.dtype, device=z.device, memory_format=layout)  # (B, C_out, 2H, 2W)
        blocks = out.unflatten(2, (height, 2)).unflatten(4, (width, 2))  # (B, C_out, H, 2, W, 2): a view of out
        for phase, (p, q) in zip(phases, _PHASES, strict=True):
            blocks[:, :, :, p, :, q] = phase  # (B, C_out, H, W)
        return out


class SpaceToDepthConv(nn.Module):
    """A reflection-padded k x k convolution to a few channels, computed on 2x2 blocks of pixels: same output, faster.

    The output layer of the style network (32 -> 3 channels, 9 x 9) is the slowest convolution of a frame on a CPU
    although it holds 6 % of the multiply-adds: oneDNN's kernels compute output channels in blocks of 8 or 16 (AMX
    tiles: 16), so 3 of them leave most lanes idle (about 170 GFLOP/s in bf16 on a CPU that does 900 elsewhere).
    Read on 2x2 blocks of pixels (space to depth, Shi et al. 2016's sub-pixel layout used in reverse) it is one
    convolution from 4 C_in to 4 C_out channels (the four output pixels of each block) with a (k + 2) // 2-tap
    kernel at half the resolution: 25/20.25 of the multiply-adds in a layout the kernels fill, 2.3x faster in bf16
    and 1.6x in fp32 with the rearrangement. The folded weights are buffers computed once from `conv`'s (for inference
    engines); `RGBConv` trains through the same computation.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        k = _check_blockable(conv, "SpaceToDepthConv folds")
        with torch.no_grad():
            weight = _block_kernel(conv.weight)  # (4 C_out, 4 C_in, taps, taps)
            bias = torch.zeros(conv.out_channels) if conv.bias is None else conv.bias.detach()
        self.half = k // 2
        self.register_buffer("weight", weight)  # in: (r, s, i); out: (o, p, q)
        self.register_buffer("bias", bias.repeat_interleave(4).to(weight))  # (4 C_out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W), in x's memory format."""
        return _space_to_depth_conv(x, self.weight, self.bias, self.half)


def _check_blockable(conv: nn.Conv2d, what: str) -> int:
    """The kernel size k of an odd k x k, stride-1, 'same' reflection-padded convolution; ValueError for others."""
    k = conv.kernel_size[0]
    settings = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.padding_mode, conv.groups)
    if k % 2 == 0 or settings != ((k, k), (1, 1), (k // 2, k // 2), (1, 1), "reflect", 1):
        raise ValueError(
            f"{what} an odd k x k, stride-1, 'same' reflection-padded convolution, not kernel {conv.kernel_size}, "
            f"stride {conv.stride}, padding {conv.padding} ({conv.padding_mode}), dilation {conv.dilation}, "
            f"groups {conv.groups}."
        )
    return k


def _block_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The (o, i, k, k) kernel of a k x k convolution as a (4 o, 4 i, t, t) kernel on 2x2 blocks, t = (k + 2) // 2.

    Output channels (o, p, q), input channels (r, s, i): output phase (p, q) reads input phase (r, s) of block b at
    kernel tap 2 b + r - p (zero where that falls outside 0..k-1). Differentiable: `RGBConv` trains through it.
    """
    c_out, c_in, k, _ = weight.shape
    taps = (k + 2) // 2  # blocks of 2 pixels that a k-tap window starting at either phase touches
    phases = []
    for p, q in _PHASES:
        kernel = F.pad(weight, (q, 2 * taps - k - q, p, 2 * taps - k - p))  # (o, i, 2 taps, 2 taps)
        blocks = kernel.reshape(c_out, c_in, taps, 2, taps, 2)  # (o, i, by, r, bx, s): tap 2 by + r, 2 bx + s
        phases.append(blocks.permute(0, 3, 5, 1, 2, 4))  # (o, r, s, i, by, bx)
    return torch.stack(phases, 1).reshape(4 * c_out, 4 * c_in, taps, taps)  # (o, p q, r, s, i, ...) flattened


def _space_to_depth_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int) -> torch.Tensor:
    """A 'same' reflection-padded convolution of (B, C_in, H, W) with a `_block_kernel` weight: (B, C_out, H, W)."""
    height, width = x.shape[-2:]
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H + 2 pad, W + 2 pad)
    if height % 2 or width % 2:  # odd side: one more row or column (of zeros) that only cropped outputs read
        x = F.pad(x, (0, width % 2, 0, height % 2))
    batch, channels, rows, cols = x.shape
    if _is_channels_last(x):  # (B, H, W, C) in memory: 2x2 blocks of C-vectors, one cheap copy
        pixels = x.permute(0, 2, 3, 1).view(batch, rows // 2, 2, cols // 2, 2 * channels)  # (B, I, r, J, s C)
        blocks = pixels.transpose(2, 3).reshape(batch, rows // 2, cols // 2, 4 * channels).permute(0, 3, 1, 2)
        weight = weight.to(memory_format=torch.channels_last)
    else:
        pixels = x.view(batch, channels, rows // 2, 2, cols // 2, 2)  # (B, C, I, r, J, s)
        blocks = pixels.permute(0, 3, 5, 1, 2, 4).reshape(batch, 4 * channels, rows // 2, cols // 2)
    y = F.pixel_shuffle(F.conv2d(blocks, weight, bias), 2)  # (B, C_out, H (+1), W (+1))
    if height % 2 or width % 2:
        layout = torch.channels_last if _is_channels_last(y) else torch.contiguous_format
        y = y[..., :height, :width].contiguous(memory_format=layout)  # (B, C_out, H, W)
    return y


class RGBConv(nn.Conv2d):
    """The output convolution to RGB (9 x 9, reflection-padded); on a CPU it trains on `SpaceToDepthConv`'s blocks.

    Training on a CPU computes it from its live weights on 2x2 blocks (`_block_kernel`, differentiable): the same
    output and gradients, forward + backward 93 -> 56 ms in bf16 for a 256x256 batch of 4. Eval mode and GPUs run
    the plain convolution; inference engines fold it once (`fold_upsampling`).
    """

    def __init__(self, in_channels: int, out_channels: int = 3, kernel_size: int = 9) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode="reflect")
        _check_blockable(self, "RGBConv must be")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, 3, H, W)."""
        if not (self.training and x.device.type == "cpu"):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.repeat_interleave(4)  # (4 C_out,): (o, p, q)
        return _space_to_depth_conv(x, _block_kernel(self.weight), bias, self.padding[0])


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def fold_upsampling(model: TransformerNet) -> TransformerNet:
    """A copy of `model` (eval mode) with nearest+conv x2 stages `FoldedUpsample`, RGB layer `SpaceToDepthConv`.

    For inference engines (`stlib.backends`): the copy's state dict differs from the network's, so save and train
    the original. Transposed-convolution stages stay as they are.
    """
    folded = copy.deepcopy(model).eval()
    for index, stage in enumerate(folded.decoder):
        if isinstance(stage, nn.Sequential) and isinstance(stage[0], nn.Upsample) and stage[0].mode == "nearest":
            folded.decoder[index] = FoldedUpsample(stage[1])
    if isinstance(folded.decoder[-1], RGBConv):  # a sub-pixel output layer (12 channels, 5x5) stays as it is
        folded.decoder[-1] = SpaceToDepthConv(folded.decoder[-1])
    return folded


class ResidualBlock(nn.Module):
    """Johnson et al. supplementary Fig. 1: x + norm(conv(relu(norm(conv(x))))), no ReLU after the sum."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _conv(channels, channels, 3),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
            _conv(channels, channels, 3),
            _norm(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x + self.block(x)


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network: RGB (B, 3, H, W) in [0, 1] -> RGB (B, 3, H, W)."""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = TransformerConfig() if config is None else config
        if not isinstance(self.config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(self.config).__name__}")
        cfg = self.config
        channels = cfg.channels  # style: (32, 64, 128); super-resolution: (64,)
        down = [
            (_downsample(cfg.downsample, a, b), _norm(cfg.norm, b), nn.ReLU(inplace=True))
            for a, b in pairwise(channels)
        ]
        self.encoder = nn.Sequential(
            _conv(3, channels[0], 9), _norm(cfg.norm, channels[0]), nn.ReLU(inplace=True), *chain(*down)
        )
        inner = channels[-1]
        self.residuals = nn.Sequential(*(ResidualBlock(inner, cfg.norm) for _ in range(cfg.num_residual_blocks)))
        # Back through the stride-2 stages (128 -> 64 -> 32), then log2(upscale) more stages at full width.
        ups = _decoder_stages(cfg)
        into_output = ups.pop()[0] if cfg.subpixel_output else channels[0]  # channels into the output convolution
        self.decoder = nn.Sequential(
            *chain(*((_upsample(cfg.upsample, a, b), _norm(cfg.norm, b), nn.ReLU(inplace=True)) for a, b in ups)),
            _conv(into_output, 12, 5) if cfg.subpixel_output else RGBConv(into_output, 3, 9),
        )
        # (B, 12, H/2, W/2) -> (B, 3, H, W): each position's 12 channels are a 2x2 block of RGB pixels
        self.shuffle = nn.PixelShuffle(2) if cfg.subpixel_output else nn.Identity()
        if cfg.input_skip:  # start as the identity: output = input + 0
            last = self.decoder[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    # ------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a batch (B, 3, H, W) of RGB images in [0, 1]; the output has exactly the same size."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TransformerNet expects a (B, 3, H, W) batch of RGB images, got shape {tuple(x.shape)}.")
        height, width = x.shape[-2:]
        scale = self.config.upscale
        y = self.forward_padded(pad_to_multiple(x, self.config.multiple))  # (B, 3, s*H', s*W'), H', W' multiples
        return y[..., : scale * height, : scale * width]  # (B, 3, s*H, s*W)

    def raw_output(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's output for a padded (B, 3, H, W) batch, before the output activation, scale and skip."""
        y = self.encoder(x)  # (B, C, H/m, W/m), m = multiple (style: 4)
        y = self.residuals(y)  # (B, C, H/m, W/m)
        return self.shuffle(self.decoder(y))  # (B, 3, s*H, s*W), s = upscale (style: 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a (B, 3, H, W) batch whose H and W are multiples of `multiple` (at least 8), unpadded.

        `forward` pads to such a size and crops back; exported ONNX models (`stlib.backends.export_onnx`) are
        this function, so that their height and width stay symbolic.
        """
        y = self.raw_output(x)  # (B, 3, s*H, s*W), s = upscale (style: 1)
        if self.config.output == "tanh":
            return (torch.tanh(y) + 1) / 2
        y = y * _OUTPUT_SCALE  # linear output in pixel units (0-255, as the paper's) -> [0, 1]
        if self.config.input_skip:
            y = upscale_bicubic(x, self.config.upscale) + y
        return y if self.training else y.clamp(0, 1)

    # ------------------------------------------------------------------------------------------------
    # Size and cost
    # ------------------------------------------------------------------------------------------------

    def num_parameters(self) -> int:
        """Number of learnable parameters (norm running statistics are buffers, not counted)."""
        return sum(p.numel() for p in self.parameters())

    def flops(self, height: int, width: int) -> int:
        """FLOPs for one H x W image, counted as 2 x the multiply-accumulates (MACs) of all convolutions.

        Convolutions and transposed convolutions only, at the padded size the network really processes (a
        multiple of `TransformerConfig.multiple`); biases, norms, ReLUs, residual additions, padding and
        upsampling are left out (well under 1% of the total). Per convolution: MACs = C_in * C_out * k * k *
        H_out * W_out; per transposed convolution: MACs = C_in * C_out * k * k * H_in * W_in (each input pixel
        scatters a k x k kernel).
        """
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"flops: {name} must be a positive integer, got {value!r}.")
        cfg = self.config
        h0, w0 = (_padded_side(s, cfg.multiple) for s in (height, width))
        channels = cfg.channels

        def pixels(level: int) -> int:  # at 2**level times the padded input's resolution (level < 0: smaller)
            return (h0 << level) * (w0 << level) if level >= 0 else (h0 >> -level) * (w0 >> -level)

        def conv(c_in: int, c_out: int, k: int, px: int) -> int:
            return c_in * c_out * k * k * px

        macs = conv(3, channels[0], 9, pixels(0))
        macs += sum(conv(a, b, 3, pixels(-k - 1)) for k, (a, b) in enumerate(pairwise(channels)))
        if cfg.downsample == "antialiased":  # the depthwise 4x4 blur, at each stride-2 stage's input resolution
            macs += sum(a * 16 * pixels(-k) for k, a in enumerate(channels[:-1]))
        macs += 2 * cfg.num_residual_blocks * conv(channels[-1], channels[-1], 3, pixels(-cfg.downsampling))
        ups = _decoder_stages(cfg)
        into_output = ups.pop()[0] if cfg.subpixel_output else channels[0]
        for k, (a, b) in enumerate(ups):
            level = k + 1 - cfg.downsampling  # the stage's output resolution
            # nearest+conv: the convolution after the x2 upsampling; transposed: counted on its input
            macs += conv(a, b, 3, pixels(level if cfg.upsample == "nearest+conv" else level - 1))
        out_level = cfg.upscale.bit_length() - 1  # the output resolution; sub-pixel: the conv runs one level below
        if cfg.subpixel_output:
            macs += conv(into_output, 12, 5, pixels(out_level - 1))
        else:
            macs += conv(into_output, 3, 9, pixels(out_level))
        return 2 * macs

    def describe(self) -> str:
        """One line: the configuration, parameter count and GFLOPs at 256x256 and 640x480."""
        cfg = self.config
        skip = ", antialiased" if cfg.downsample == "antialiased" else ""
        skip += ", input_skip" if cfg.input_skip else ""
        skip += ", subpixel_output" if cfg.subpixel_output else ""
        shape = "" if (cfg.downsampling, cfg.upscale) == (2, 1) else f", downsampling={cfg.downsampling}"
        shape += f", upscale={cfg.upscale}" if cfg.upscale > 1 else ""
        if cfg.upscale > 1:  # super-resolution: the cost of a 320x240 input (a 1280x960 output at x4)
            sizes = f"{self.flops(240, 320) / 1e9:.1f} GFLOPs for a 320x240 input"
        else:
            sizes = f"{self.flops(256, 256) / 1e9:.1f} GFLOPs at 256x256, "
            sizes += f"{self.flops(480, 640) / 1e9:.1f} GFLOPs at 640x480"
        return (
            f"TransformerNet(norm={cfg.norm}, upsample={cfg.upsample}, output={cfg.output}, width={cfg.width:g}, "
            f"blocks={cfg.num_residual_blocks}{shape}{skip}): {self.num_parameters() / 1e6:.2f}M parameters, {sizes}"
        )

    # ------------------------------------------------------------------------------------------------
    # Configuration round trip (checkpoint metadata)
    # ------------------------------------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        """The configuration as a plain JSON-serialisable dict; `from_config` rebuilds the architecture."""
        return asdict(self.config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | TransformerConfig) -> TransformerNet:
        """A freshly initialised network from `config_dict()` output; missing keys take their defaults."""
        if isinstance(config, TransformerConfig):
            return cls(config)
        if not isinstance(config, Mapping):
            raise TypeError(f"from_config expects a dict (from config_dict()), got {type(config).__name__}")
        known = [f.name for f in fields(TransformerConfig)]
        unknown = sorted(str(k) for k in config if k not in known)
        if unknown:
            raise ValueError(
                f"TransformerNet config has unknown key(s) {', '.join(unknown)}; known keys are {', '.join(known)}."
            )
        return cls(TransformerConfig(**config))


def _padded_side(side: int, multiple: int = 4) -> int:
    """The side the network processes: `side` rounded up to a multiple of `multiple`, at least 8."""
    return max(_MIN_SIDE, -(-side // multiple) * multiple)


def pad_to_multiple(x: torch.Tensor, multiple: int = 4) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom and right to what `TransformerNet.forward_padded` takes (H, W multiples).

    `multiple` is `TransformerConfig.multiple` (4 for the style network). Reflection, or replication for inputs
    too small to reflect; `forward` pads so and crops the output back.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = _padded_side(height, multiple) - height, _padded_side(width, multiple) - width
    if pad_h == 0 and pad_w == 0:
        return x
    # Reflection needs the pad to be smaller than the side; only tiny (< 8 px) inputs fall back to replication.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def upscale_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, scale*H, scale*W) by bicubic interpolation (the identity for scale 1)."""
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
