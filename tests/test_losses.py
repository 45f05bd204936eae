"""Perceptual losses: Gram matrix, content, style, total variation and stability."""

from __future__ import annotations

import pytest
import torch

from stlib.losses import content_loss, gram_matrix, stability_loss, style_loss, total_variation


def test_gram_symmetric_shape_and_scale():
    f = torch.randn(2, 8, 5, 7)
    g = gram_matrix(f)
    assert g.shape == (2, 8, 8)
    torch.testing.assert_close(g, g.transpose(1, 2))
    # Hand-computed entry: <F_i, F_j> / (C*H*W).
    expected = (f[1, 3] * f[1, 5]).sum() / (8 * 5 * 7)
    torch.testing.assert_close(g[1, 3, 5], expected)
    # Positive semi-definite: eigenvalues >= 0 (up to rounding).
    assert torch.linalg.eigvalsh(g.double()).min() > -1e-9


def test_gram_scale_does_not_depend_on_image_size():
    small = torch.ones(1, 4, 8, 8)
    large = torch.ones(1, 4, 64, 64)
    torch.testing.assert_close(gram_matrix(small), gram_matrix(large))


def test_gram_of_low_precision_features_is_float32():
    f = torch.randn(1, 4, 6, 6)
    g = gram_matrix(f.bfloat16())
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, gram_matrix(f), rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram_matrix(torch.randn(4, 6, 6))


def test_gram_gradient_is_the_gradient_of_f_f_transposed():
    f = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_matrix, (f,))  # the one-product backward, checked numerically
    weights = torch.randn(2, 3, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad((gram_matrix(f) * weights).sum(), f)
    flat = f.reshape(2, 3, 20)
    (expected,) = torch.autograd.grad(((flat @ flat.mT / 60) * weights).sum(), f)
    torch.testing.assert_close(grad, expected)


def test_gram_of_bf16_features_is_summed_in_float32_and_rounded_once():
    f = torch.randn(2, 16, 64, 64)
    low = f.bfloat16()
    exact = gram_matrix(low.float())  # the same (rounded) features, products summed and kept in float32
    g = gram_matrix(low)
    assert g.dtype == torch.float32
    assert float((g - exact).abs().max() / exact.abs().max()) < 2**-8  # one bf16 rounding of the result
    low.requires_grad_(True)
    gram_matrix(low).sum().backward()
    assert low.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_gram_of_channels_last_features_is_the_same_and_keeps_their_layout(dtype):
    torch.manual_seed(0)
    f = torch.randn(2, 8, 5, 7, dtype=dtype)
    plain = f.clone().requires_grad_(True)
    nhwc = f.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weights = torch.randn(2, 8, 8)
    (gram_matrix(plain) * weights).sum().backward()
    (gram_matrix(nhwc) * weights).sum().backward()
    # the same products summed perhaps in another order: bf16 results may differ by one rounding (2^-8)
    tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=1e-3, rtol=2**-7)
    torch.testing.assert_close(gram_matrix(nhwc), gram_matrix(plain), **tol)
    torch.testing.assert_close(nhwc.grad, plain.grad, **tol)
    assert nhwc.grad.is_contiguous(memory_format=torch.channels_last)  # no copy to NCHW and back
    leaf = torch.randn(2, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(gram_matrix, (leaf.requires_grad_(True),))


def test_content_loss_zero_on_identical_positive_otherwise():
    a = torch.randn(2, 3, 4, 4)
    assert float(content_loss(a, a.clone())) == 0.0
    b = a + 0.5
    torch.testing.assert_close(content_loss(b, a), torch.tensor(0.25))
    assert float(content_loss(a, a[:1])) > 0  # a batch-1 target broadcasts over the batch
    with pytest.raises(ValueError, match="differ in shape"):
        content_loss(a, torch.randn(2, 4, 4, 4))


def test_style_loss_zero_on_identical_positive_otherwise_and_weighted():
    feats = {"a": torch.randn(1, 4, 6, 6), "b": torch.randn(1, 8, 3, 3)}
    targets = {k: gram_matrix(v) for k, v in feats.items()}
    assert float(style_loss(feats, targets)) == 0.0
    # Gram matrices ignore where things are: a spatially shuffled map has the same style.
    shuffled = {k: v.flip(-1).flip(-2) for k, v in feats.items()}
    assert float(style_loss(shuffled, targets)) < 1e-10
    other = {k: v * 2 for k, v in feats.items()}
    la = float(style_loss(other, targets, {"a": 1.0}))
    lb = float(style_loss(other, targets, {"b": 1.0}))
    assert la > 0 and lb > 0
    torch.testing.assert_close(style_loss(other, targets, {"a": 2.0, "b": 3.0}), torch.tensor(2 * la + 3 * lb))
    # Hand-computed: ||G(2F) - G(F)||_F^2 = ||3 G(F)||_F^2.
    torch.testing.assert_close(torch.tensor(la), (3 * targets["a"]).pow(2).sum())
    with pytest.raises(KeyError, match="c"):
        style_loss(feats, targets, {"c": 1.0})


def test_total_variation():
    assert float(total_variation(torch.full((1, 3, 8, 8), 0.3))) == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0  # vertical stripes: every horizontal neighbour differs by 1
    torch.testing.assert_close(total_variation(stripes), torch.tensor(1.0))
    noisy = torch.rand(1, 3, 16, 16)
    smooth = torch.nn.functional.avg_pool2d(noisy, 3, 1, 1)
    assert total_variation(smooth) < total_variation(noisy)
    with pytest.raises(ValueError):
        total_variation(torch.rand(3, 8, 8))


def test_losses_are_differentiable():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    feats = {"x": x}
    target = {"x": gram_matrix(torch.rand(1, 3, 8, 8))}
    (style_loss(feats, target) + content_loss(x, torch.rand(1, 3, 8, 8)) + total_variation(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _lattice_pattern(x: torch.Tensor) -> torch.Tensor:
    """A 'network' that adds a pattern of period 4 fixed to the pixel grid, as the stride-2 stages can."""
    rows = torch.arange(x.shape[-2]) % 4 == 0
    return x + 0.2 * rows.view(-1, 1).to(x.dtype)


def test_stability_is_zero_for_a_network_that_moves_with_the_picture():
    x = torch.rand(2, 3, 48, 40)
    for shift in [(0, 0), (1, -2), (-4, 4)]:
        assert stability_loss(lambda t: t, x, x, shift, 0.0, margin=4) == 0  # the identity follows every move
        blur = torch.nn.AvgPool2d(3, stride=1, padding=1)  # convolutional: equivariant away from the borders
        assert stability_loss(blur, x, blur(x), shift, 0.0, margin=4, border=1) < 1e-12


def test_stability_measures_noise_and_a_pattern_locked_to_the_pixel_grid():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    noisy = stability_loss(lambda t: t, x, x, (0, 0), 0.05, margin=4)
    assert noisy.item() == pytest.approx(0.05**2, rel=0.05)  # the identity passes the camera noise through
    locked = _lattice_pattern
    assert stability_loss(locked, x, locked(x), (4, 0), 0.0, margin=4) < 1e-12  # a whole period: invisible
    moved = stability_loss(locked, x, locked(x), (1, 0), 0.0, margin=4)
    assert moved.item() == pytest.approx(2 * 0.2**2 / 4, rel=0.01)  # the grid stays while the picture moves


def test_stability_is_differentiable_and_rejects_a_move_beyond_the_margin():
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(1, 3, 40, 40)
    loss = stability_loss(net, x, _lattice_pattern(net(x)), (1, 2), 0.01, margin=4)
    loss.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shift \\(5, 0\\) needs"):
        stability_loss(net, x, x, (5, 0), 0.0, margin=4)
    with pytest.raises(ValueError, match="16x16 input"):
        stability_loss(net, x[..., :16, :16], x[..., :16, :16], (0, 0), 0.0, margin=4, border=4)


def test_stability_with_the_edges_punishes_a_band_along_the_frame_border():
    def banded(t: torch.Tensor) -> torch.Tensor:  # paints a stripe along its right edge, whatever the picture
        out = t.clone()
        out[..., -3:] += 0.3
        return out

    x = torch.rand(1, 3, 48, 48)
    with_edges = stability_loss(banded, x, banded(x), (1, 1), 0.0, margin=4)
    without_edges = stability_loss(banded, x, banded(x), (1, 1), 0.0, margin=4, border=4)
    assert with_edges > 1e-3  # the frame's edge is painted unlike the same place inside the larger frame
    assert without_edges == pytest.approx(stability_loss(lambda t: t, x, x, (1, 1), 0.0, margin=4, border=4))
