"""Tests for stlib.prune: a narrower, shallower copy of a trained network that keeps its useful blocks and live
channels, with its output convolution refitted by least squares."""

from __future__ import annotations

import pytest
import torch

from stlib.prune import prune, slim_config
from stlib.transformer import TransformerConfig, TransformerNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("downsample", ["strided", "antialiased"])
@pytest.mark.parametrize("upsample", ["nearest+conv", "transposed"])
def test_pruning_keeps_the_useful_blocks_and_live_channels_and_so_computes_the_same(
    dead_channel_teacher, downsample, upsample
):
    teacher = dead_channel_teacher(downsample, upsample)
    photos = [torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    student = prune(teacher, slim_config(teacher.config, 0.25, 2), photos)
    assert student.config == slim_config(teacher.config, 0.25, 2) and student.config.channels == (8, 16, 32)
    x = torch.rand(1, 3, 28, 36)
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), atol=1e-5, rtol=0)
        assert float((TransformerNet(student.config).eval()(x) - teacher(x)).abs().max()) > 0.05  # not by chance


def test_pruning_to_the_teachers_own_shape_is_the_teacher():
    torch.manual_seed(5)
    teacher = TransformerNet(TransformerConfig(width=0.25, num_residual_blocks=2)).eval()
    torch.nn.init.normal_(teacher.decoder[-1].weight, std=0.05)
    student = prune(teacher, teacher.config, [torch.rand(1, 3, 16, 16)])
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("subpixel", [False, True])
def test_pruning_refits_the_output_convolution_by_least_squares(subpixel):
    torch.manual_seed(6)
    teacher = TransformerNet(TransformerConfig(width=0.5, num_residual_blocks=2)).eval()  # nothing dead: pruning loses
    torch.nn.init.normal_(teacher.decoder[-1].weight, std=1.0)
    photos = [torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    student = prune(teacher, slim_config(teacher.config, 0.25, 1, subpixel_output=subpixel), photos)
    assert student.config.subpixel_output is subpixel and len(student.decoder) == (4 if subpixel else 7)
    conv = student.decoder[-1]
    assert tuple(conv.weight.shape) == ((12, 16, 5, 5) if subpixel else (3, 8, 9, 9))

    def squared_error() -> torch.Tensor:  # over the photos, in the networks' own units (before scale and clamp)
        return sum(((student.raw_output(p) - teacher.raw_output(p)) ** 2).sum() for p in photos)

    fitted = squared_error()
    (grad,) = torch.autograd.grad(fitted, conv.weight)
    with torch.no_grad():
        conv.weight.zero_()
    (grad_at_zero,) = torch.autograd.grad(squared_error(), conv.weight)
    assert float(grad.norm()) < 1e-4 * float(grad_at_zero.norm())  # a stationary point: the least-squares fit
    with torch.no_grad():
        assert float(squared_error()) > 1.3 * float(fitted)  # and one that the output depends on


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (TransformerConfig(width=1.0, num_residual_blocks=1), "cannot widen or deepen"),
        (TransformerConfig(width=0.25, num_residual_blocks=5), "cannot widen or deepen"),
        (TransformerConfig(width=0.25, num_residual_blocks=1, norm="batch"), "narrower, shallower copy"),
        (TransformerConfig(width=0.25, num_residual_blocks=1, output="tanh"), "narrower, shallower copy"),
    ],
)
def test_pruning_refuses_what_is_not_a_smaller_copy(config, match):
    teacher = TransformerNet(TransformerConfig(width=0.5, num_residual_blocks=3)).eval()
    with pytest.raises(ValueError, match=match):
        prune(teacher, config, [torch.rand(1, 3, 16, 16)])
