"""Colour preservation: YCbCr conversions, luminance matching and colour-histogram matching."""

from __future__ import annotations

import pytest
import torch

from stlib import color


def _cov(image: torch.Tensor) -> torch.Tensor:
    pixels = image[0].reshape(3, -1).double()  # (3, H*W)
    return torch.cov(pixels)


def test_ycbcr_round_trip_and_known_values():
    x = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(color.ycbcr_to_rgb(color.rgb_to_ycbcr(x)), x, atol=1e-5, rtol=0)
    white, black, red = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1), torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)
    torch.testing.assert_close(color.rgb_to_ycbcr(white).flatten(), torch.tensor([1.0, 0.5, 0.5]))
    torch.testing.assert_close(color.rgb_to_ycbcr(black).flatten(), torch.tensor([0.0, 0.5, 0.5]))
    torch.testing.assert_close(color.rgb_to_ycbcr(red).flatten(), torch.tensor([0.299, 0.331264, 1.0]))
    grey = torch.full((1, 3, 2, 2), 0.3)  # greys have neutral chroma
    torch.testing.assert_close(color.rgb_to_ycbcr(grey)[:, 1:], torch.full((1, 2, 2, 2), 0.5))
    assert color.luminance(x).shape == (2, 1, 5, 7)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        color.luminance(torch.rand(1, 1, 4, 4))


def test_match_luminance_takes_the_contents_mean_and_std():
    style = 0.2 + 0.6 * torch.rand(1, 3, 16, 16)
    content = 0.4 + 0.2 * torch.rand(1, 3, 20, 12)  # another size: only statistics are matched
    matched = color.match_luminance(style, content)
    target = color.luminance(content)
    assert matched.shape == (1, 1, 16, 16)
    assert abs(float(matched.mean() - target.mean())) < 1e-4
    assert abs(float(matched.std() - target.std())) < 1e-4


def test_combine_luminance_keeps_the_chroma_of_the_colours():
    colors = 0.25 + 0.5 * torch.rand(1, 3, 8, 8)  # mid-range: recombination needs no clamping
    luma = 0.4 + 0.2 * torch.rand(1, 1, 8, 8)
    out = color.combine_luminance(luma, colors)
    torch.testing.assert_close(color.luminance(out), luma, atol=1e-5, rtol=0)
    torch.testing.assert_close(color.rgb_to_ycbcr(out)[:, 1:], color.rgb_to_ycbcr(colors)[:, 1:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="luma"):
        color.combine_luminance(torch.rand(1, 1, 4, 4), colors)


@pytest.mark.parametrize("method", ["sqrt", "cholesky"])
def test_color_histogram_match_takes_the_references_mean_and_covariance(method):
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 32, 32, generator=gen)
    mix = torch.tensor([[0.5, 0.2, 0.1], [0.1, 0.3, 0.1], [0.0, 0.1, 0.2]])
    source = 0.3 + torch.einsum("ij,bjhw->bihw", mix, base)  # correlated channels, inside [0, 1]
    reference = 0.45 + 0.1 * torch.rand(1, 3, 24, 40, generator=gen)  # small spread: no clamping needed
    out = color.color_histogram_match(source, reference, method=method)
    assert out.shape == source.shape
    torch.testing.assert_close(out.mean(dim=(2, 3)), reference.mean(dim=(2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(_cov(out), _cov(reference), atol=2e-5, rtol=0)


def test_color_histogram_match_errors():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="Unknown colour matching method"):
        color.color_histogram_match(x, x, method="lab")
    with pytest.raises(ValueError, match="one image at a time"):
        color.color_histogram_match(torch.rand(2, 3, 8, 8), x)
    grey = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)  # singular covariance: still finite
    assert torch.isfinite(color.color_histogram_match(grey, x)).all()
