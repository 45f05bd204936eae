"""Pruning a trained style network into a narrower, shallower one: the start of a distilled student.

Structured pruning (H. Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017) of the image transformation
network of Johnson et al. (ECCV 2016, Sec. 3.1): `prune` keeps the residual blocks whose removal changes the picture
most (a residual network still works with blocks removed: A. Veit et al., NeurIPS 2016) and, in each channel space,
the most active channels, then refits the output convolution by least squares (Y. He, X. Zhang, J. Sun, "Channel
Pruning for Accelerating Very Deep Neural Networks", ICCV 2017). `slim_config` is a student's architecture.
`stlib.distill` trains the pruned network on to reproduce its teacher.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import TransformerConfig, TransformerNet, pad_to_multiple

__all__ = ["prune", "slim_config"]


def slim_config(
    teacher: TransformerConfig, width: float = 0.25, num_residual_blocks: int = 3, subpixel_output: bool = False
) -> TransformerConfig:
    """The student architecture for `teacher`: its options, with the width, blocks and sub-pixel output changed."""
    changes = {"width": width, "num_residual_blocks": num_residual_blocks, "subpixel_output": subpixel_output}
    return TransformerConfig(**{**asdict(teacher), **changes})


def prune(teacher: TransformerNet, config: TransformerConfig, photos: list[torch.Tensor]) -> TransformerNet:
    """A student of architecture `config` made of `teacher`'s most useful residual blocks and most active channels.

    Structured pruning (H. Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017), as a start for
    distillation: the residual blocks whose removal changes the teacher's picture of `photos` most are kept, in
    order (a residual network still works with blocks removed: A. Veit et al., NeurIPS 2016), and in each channel
    space (a stage's output, which the next convolution reads; the residual stream; each block's inner space) the
    channels with the largest mean activation x norm of the weights that read them. Every convolution but the last is
    followed by an instance norm, which renormalises what the lost channels took from its sum, so the pruned network
    already paints a rough version of the teacher's picture. Last, the output convolution, which is linear in the
    features it reads, is refitted to the teacher's output on `photos` by least squares (Y. He, X. Zhang, J. Sun,
    "Channel Pruning for Accelerating Very Deep Neural Networks", ICCV 2017): what the dropped channels drew is
    redrawn from the kept ones as well as a linear layer can (about half the copied layer's error on photos). A
    student with ``subpixel_output`` has no last x2 stage and gets its 5x5 sub-pixel output convolution from that
    fit alone. `config` must be `teacher`'s architecture with a smaller or equal width and number of residual
    blocks, and may add ``subpixel_output``.
    """
    cfg = teacher.config
    same = {
        **asdict(config),
        "width": cfg.width,
        "num_residual_blocks": cfg.num_residual_blocks,
        "subpixel_output": cfg.subpixel_output,
    }
    if same != asdict(cfg) or cfg.upscale != 1 or cfg.subpixel_output or cfg.norm != "instance":
        raise ValueError(
            f"prune makes a narrower, shallower copy of a style network with instance norm; got {config} "
            f"for a teacher {cfg}."
        )
    if config.num_residual_blocks > cfg.num_residual_blocks or any(
        a > b for a, b in zip(config.channels, cfg.channels, strict=True)
    ):
        raise ValueError(f"prune cannot widen or deepen: {config} is larger than the teacher's {cfg}.")
    if not photos:
        raise ValueError("prune needs at least one photo to measure the teacher's activations on.")
    teacher = teacher.eval()
    depth = cfg.downsampling
    blocks = [b.block for b in teacher.residuals]
    kept_blocks = _useful_blocks(teacher, config.num_residual_blocks, photos)
    # Where each channel space is produced (the module whose output holds its activations) and who reads it.
    encoder_out = [teacher.encoder[3 * k + 2] for k in range(depth + 1)]  # ReLUs after each encoder stage
    decoder_out = [teacher.decoder[3 * j + 2] for j in range(depth)]  # ReLUs after each x2 stage
    spaces: dict[str, list[nn.Module]] = {f"enc{k}": [encoder_out[k]] for k in range(depth)}
    spaces["stream"] = [encoder_out[depth], *(teacher.residuals[i] for i in range(len(blocks)))]
    spaces.update({f"inner{i}": [blocks[i][2]] for i in range(len(blocks))})
    spaces.update({f"dec{j}": [decoder_out[j]] for j in range(depth)})
    activity = _mean_activity(teacher, spaces, photos)  # name -> (C,) mean |activation|
    readers: dict[str, list[torch.Tensor]] = {  # the weights that read each space, as (C_out, C_in, k, k)
        **{f"enc{k}": [_conv_of(teacher.encoder[3 * (k + 1)]).weight] for k in range(depth)},
        "stream": [blocks[i][0].weight for i in kept_blocks] + [_in_weight(teacher.decoder[0])],
        **{f"inner{i}": [blocks[i][3].weight] for i in range(len(blocks))},
        **{f"dec{j}": [_in_weight(teacher.decoder[3 * (j + 1)])] for j in range(depth)},
    }
    widths = {f"enc{k}": config.channels[k] for k in range(depth)}
    widths.update({"stream": config.channels[depth], **{f"inner{i}": config.channels[depth] for i in kept_blocks}})
    widths.update({f"dec{j}": config.channels[depth - 1 - j] for j in range(depth)})
    keep = {}
    for name, width in widths.items():
        reach = sum(w.detach().transpose(0, 1).flatten(1).norm(dim=1) for w in readers[name])  # (C,)
        keep[name] = torch.topk(activity[name] * reach, width).indices.sort().values
    student = TransformerNet(config).eval()
    with torch.no_grad():
        for k in range(depth + 1):  # encoder: stage k reads enc{k-1} (or RGB) and writes enc{k} (the stream at the end)
            rows = keep["stream"] if k == depth else keep[f"enc{k}"]
            cols = keep[f"enc{k - 1}"] if k else None
            _copy_stage(teacher.encoder, student.encoder, 3 * k, rows, cols)
        for new, old in enumerate(kept_blocks):
            inner = keep[f"inner{old}"]
            _copy_stage(blocks[old], student.residuals[new].block, 0, inner, keep["stream"])
            _copy_stage(blocks[old], student.residuals[new].block, 3, keep["stream"], inner)
        stages = depth - 1 if config.subpixel_output else depth  # sub-pixel: the last x2 stage is in the output
        for j in range(stages):
            cols = keep["stream"] if j == 0 else keep[f"dec{j - 1}"]
            _copy_stage(teacher.decoder, student.decoder, 3 * j, keep[f"dec{j}"], cols)
        if not config.subpixel_output:
            _copy_stage(teacher.decoder, student.decoder, 3 * depth, None, keep[f"dec{depth - 1}"])
    _fit_output(student, teacher, photos)
    return student


def _fit_output(student: TransformerNet, teacher: TransformerNet, photos: list[torch.Tensor]) -> None:
    """Refit `student`'s output convolution to `teacher`'s output on `photos` by least squares (ridge to its weights).

    Minimises sum ||conv(f) - y||^2 + ridge * ||w - w_0||^2 over the convolution's weights and bias w, for the
    student's features f before it and the teacher's output y before the output scaling (its own units), starting
    weights w_0: where the photos say nothing (fewer pixels than weights, dead features) the weights stay w_0.
    """
    conv = student.decoder[-1]
    weights = torch.cat([conv.weight.detach().flatten(1), conv.bias.detach()[:, None]], 1).T.double()  # (K+1, C_out)
    gram = torch.zeros(len(weights), len(weights), dtype=torch.float64)  # (K+1, K+1): sum of x x^T over pixels
    moment = torch.zeros_like(weights)  # (K+1, C_out): sum of x y^T over pixels
    pad = conv.padding[0]
    with torch.no_grad():
        for photo in photos:
            x = pad_to_multiple(photo, teacher.config.multiple)
            features = student.decoder[:-1](student.residuals(student.encoder(x)))  # (1, C_in, h, w)
            target = teacher.raw_output(x)  # (1, 3, H, W)
            if student.config.subpixel_output:
                target = F.pixel_unshuffle(target, 2)  # (1, 12, H/2, W/2): each 2x2 block of RGB pixels
            patches = F.unfold(F.pad(features, (pad,) * 4, mode=conv.padding_mode), conv.kernel_size)[0]  # (K, h*w)
            patches = torch.cat([patches, torch.ones_like(patches[:1])]).double()  # (K+1, h*w)
            gram += patches @ patches.T  # in float64: the ridge below is far smaller than float32's rounding
            moment += patches @ target[0].flatten(1).T.double()
        ridge = 1e-6 * float(gram.diagonal().mean()) + 1e-12
        eye = torch.eye(len(gram), dtype=torch.float64)
        solution = torch.linalg.solve(gram + ridge * eye, moment + ridge * weights)  # (K+1, C_out)
        conv.weight.copy_(solution[:-1].T.reshape_as(conv.weight))
        conv.bias.copy_(solution[-1])


def _conv_of(module: nn.Module) -> nn.Module:
    """The convolution of a stage: itself, or the one after a nearest-neighbour upsampling."""
    return module[-1] if isinstance(module, nn.Sequential) else module


def _in_weight(module: nn.Module) -> torch.Tensor:
    """A stage's weights as (C_out, C_in, k, k), also for a transposed convolution (stored (C_in, C_out, k, k))."""
    conv = _conv_of(module)
    return conv.weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else conv.weight


def _copy_stage(
    source: nn.Sequential, target: nn.Sequential, index: int, rows: torch.Tensor | None, cols: torch.Tensor | None
) -> None:
    """Copy the convolution at `index` (output channels `rows`, input channels `cols`; None: all) and its norm."""
    conv, into = _conv_of(source[index]), _conv_of(target[index])
    weight = conv.weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else conv.weight  # (out, in, k, k)
    weight = weight if rows is None else weight[rows]
    weight = weight if cols is None else weight[:, cols]
    into.weight.copy_(weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose2d) else weight)
    into.bias.copy_(conv.bias if rows is None else conv.bias[rows])
    if rows is not None and index + 1 < len(source) and isinstance(source[index + 1], nn.InstanceNorm2d):
        target[index + 1].weight.copy_(source[index + 1].weight[rows])
        target[index + 1].bias.copy_(source[index + 1].bias[rows])


def _mean_activity(
    net: TransformerNet, spaces: dict[str, list[nn.Module]], photos: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each space's mean absolute activation per channel (C,) over `photos`, at the outputs of its modules."""
    sums: dict[str, torch.Tensor] = {}
    handles = []
    for name, modules in spaces.items():
        for module in modules:

            def hook(_module, _inputs, output, name=name):  # output (1, C, H, W)
                sums[name] = sums.get(name, 0) + output.detach().abs().mean(dim=(0, 2, 3))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for photo in photos:
                net(photo)
    finally:
        for handle in handles:
            handle.remove()
    return sums


def _useful_blocks(net: TransformerNet, count: int, photos: list[torch.Tensor]) -> list[int]:
    """The indices of the `count` residual blocks whose removal changes `net`'s pictures most, in order."""
    blocks = list(net.residuals)
    harm = []
    try:
        with torch.no_grad():
            full = [net(photo) for photo in photos]
            for i in range(len(blocks)):
                net.residuals = nn.Sequential(*blocks[:i], *blocks[i + 1 :])
                harm.append(sum(float((net(p) - f).abs().mean()) for p, f in zip(photos, full, strict=True)))
    finally:
        net.residuals = nn.Sequential(*blocks)
    return sorted(sorted(range(len(blocks)), key=lambda i: -harm[i])[:count])
