"""Perceptual losses: Gram matrix, content, style and total variation."""

from __future__ import annotations

import pytest
import torch

from stlib.losses import content_loss, gram_matrix, style_loss, total_variation


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
